/**
 * What every key-model module shares: who tries to open a message key, and who can read a message
 * according to its bytes. Each module (e2e.ts, escrow.ts, …) seals, opens and answers "who can read"
 * for one model; shared/envelope.ts dispatches over `keys.model` exhaustively.
 */
import type { EscrowKeyPair, Identity } from '../crypto.ts';
import type { ServerKeyPair } from './server-key.ts';

/**
 * Whoever tries to open a message key: a participant with their identity; the holder of an escrow
 * key (the regulator, or whoever stole it); anyone with the app's shared key; the enterprise
 * server with its key (or whoever compels or breaches it).
 */
export type Reader = { kind: 'member'; identity: Identity } | { kind: 'escrow'; key: EscrowKeyPair } | { kind: 'app'; key: Uint8Array } | { kind: 'server'; key: ServerKeyPair };

/** A recipient as the sender seals to it: its PIN and its directory (Ed25519) key. */
export interface Recipient {
  pin: string;
  signPk: Uint8Array;
}

/** Who holds a key that opens a message, read from the envelope alone (never from a switch). */
export interface WhoCanRead {
  /** PINs with a wrap of the message key: the sender's own copy and each recipient. */
  members: string[];
  /** The escrow key id the message key is also sealed to, or null. */
  escrowKid: string | null;
  /** The shared app key's id when the message key is encrypted with it: anyone with the app reads it. */
  appKid?: string | null;
  /** The enterprise server's key id when the message key is wrapped to it: the server reads it. */
  serverKid?: string | null;
}
