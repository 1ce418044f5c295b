/**
 * The escrow key pin: the regulator key's fingerprint, which a person got out of band (the
 * teacher's board, the terminal, the README's instructions) and typed into the chat page, or which
 * a bot was started with. Before a message key is sealed to an escrow key, the client compares the
 * fingerprint of the key the relay's policy names — computed here from the key itself, never taken
 * from the relay's word — with the pinned one. A mismatch means whoever runs the relay's
 * configuration put another key in the policy (Juniper 2015; PGP's additional decryption keys,
 * 2000): the client does not send without the person's say-so, and a bot does not send at all.
 */
import { escrowFingerprint, normalizeFingerprint } from '../../shared/crypto.ts';

export type PinVerdict =
  /** Nothing pinned: the client seals to whatever key the policy names, without a word. */
  { status: 'not-pinned'; announced: string } | { status: 'matches'; announced: string } | { status: 'differs'; announced: string; pinned: string };

/** Compare the escrow key the policy names with the pin (null: nothing pinned). */
export function checkEscrowPin(pinned: string | null, announcedPk: Uint8Array): PinVerdict {
  const announced = escrowFingerprint(announcedPk);
  if (pinned === null) return { status: 'not-pinned', announced };
  const pin = normalizeFingerprint(pinned);
  return pin === announced ? { status: 'matches', announced } : { status: 'differs', announced, pinned: pin ?? pinned };
}

/** Thrown before anything is sealed or sent: the announced escrow key is not the pinned one. */
export class EscrowPinError extends Error {
  readonly code = 'escrow_key_not_pinned';
  constructor(
    readonly announced: string,
    readonly pinned: string,
  ) {
    super(
      `not sent: the relay asks to seal this message's key to an escrow key with fingerprint ${announced}, not the regulator's key you pinned (${pinned}). Whoever holds that key could read it, and the regulator could not.`,
    );
  }
}
