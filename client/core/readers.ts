/**
 * Who can read a message, worked out from the envelope that was actually sent (its signed key
 * model, shared/envelope.ts `whoCanRead`): every PIN that has a key wrap, plus the holder of the
 * escrow key when the envelope's model is end to end with escrow. Never from the tap switch: a
 * message sent before the tap went on stays end-to-end, and one sent under it stays open to the
 * escrow key after the tap goes off.
 */
import { whoCanRead } from '../../shared/envelope.ts';
import { keysOf, type AnyEnvelope, type KeyModelName } from '../../shared/protocol.ts';

export interface Readers {
  /** The envelope's key model. */
  model: KeyModelName;
  /** PINs holding a wrap of the message key: the sender's own copy and each recipient. */
  participants: string[];
  /** The escrow key id the message key is also sealed to, or null for end-to-end only. */
  escrowKid: string | null;
  /** Set when the message key is encrypted with the app's shared key: anyone with the app reads it. */
  appKid?: string;
  /** Set when the message key is wrapped to the enterprise server: the server (and its operator) reads it. */
  serverKid?: string;
  /**
   * Set on a received message with an escrow field: someone else sealed it, and only the escrow
   * key's holder can check that it opens, so a sender may have forged it (the Clipper LEAF problem).
   */
  escrowUnverified?: true;
}

/** `received`: the envelope was sealed by another client, so its escrow field cannot be checked here. */
export function readersOf(env: AnyEnvelope, received = false): Readers {
  const who = whoCanRead(env);
  return {
    model: keysOf(env).model,
    participants: who.members,
    escrowKid: who.escrowKid,
    ...(who.appKid ? { appKid: who.appKid } : {}),
    ...(who.serverKid ? { serverKid: who.serverKid } : {}),
    ...(received && who.escrowKid !== null ? { escrowUnverified: true as const } : {}),
  };
}

/** One line for the chat: "only Alice and Bob (end-to-end)" or "Alice, Bob and the regulator (escrow key 3fa1…)". */
export function describeReaders(readers: Readers, nameOf: (pin: string) => string): string {
  if (readers.appKid) return 'anyone with the app: the key is the shared app key every copy ships (BBM PIN messages: "scrambled, not encrypted")';
  const names = readers.participants.map(nameOf);
  const people = names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : (names[0] ?? '');
  if (readers.serverKid) return `${names.join(', ')} and the enterprise server (key ${readers.serverKid}): it opens every message, and so can its operator`;
  if (readers.escrowKid && readers.escrowUnverified) {
    return `${names.join(', ')} and, if the sender's escrow field is genuine, the regulator (escrow key ${readers.escrowKid}; only the regulator can check)`;
  }
  return readers.escrowKid ? `${names.join(', ')} and the regulator (escrow key ${readers.escrowKid})` : `only ${people} (end-to-end)`;
}
