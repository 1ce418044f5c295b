/**
 * Key model "e2e-escrow" (the regulator tap): the end-to-end wraps, and the message key sealed to
 * the regulator's escrow public key as well — today's version of Clipper's LEAF. The participants
 * and whoever holds the escrow secret key can read the message. Nobody but that holder can tell a
 * genuine escrow field from a forged one: the relay sees only that it is well formed.
 */
import sodium from 'libsodium-wrappers';
import { toB64, unwrapKey, type Identity } from '../crypto.ts';
import { OpenFailure, fail, type Outcome } from '../failures.ts';
import type { EscrowKeys } from '../protocol.ts';
import { openOwnWrap, sealWraps, wrapsLine } from './e2e.ts';
import type { Reader, Recipient, WhoCanRead } from './model.ts';

export const escrow = {
  model: 'e2e-escrow',
  /** Comply: seal the message key to the escrow public key. */
  seal(key: Uint8Array, sender: Identity, to: readonly Recipient[], escrowKey: { pk: Uint8Array; kid: string }): EscrowKeys {
    return { model: 'e2e-escrow', wraps: sealWraps(key, sender, to), escrow: { kid: escrowKey.kid, key: toB64(sodium.crypto_box_seal(key, escrowKey.pk)) } };
  },
  /** Forge: a field of the right shape under the right key id, holding random bytes (Blaze's LEAF attack). */
  forge(key: Uint8Array, sender: Identity, to: readonly Recipient[], kid: string): EscrowKeys {
    return { model: 'e2e-escrow', wraps: sealWraps(key, sender, to), escrow: { kid, key: toB64(sodium.randombytes_buf(80)) } };
  },
  signedLines(keys: EscrowKeys): string[] {
    return [wrapsLine(keys.wraps), `escrow=${keys.escrow.kid}:${keys.escrow.key}`];
  },
  open(keys: EscrowKeys, reader: Reader): Outcome<Uint8Array> {
    if (reader.kind === 'member') return openOwnWrap(keys.wraps, reader.identity);
    if (reader.kind !== 'escrow') return fail(OpenFailure.NotAddressedToMe, 'end to end with escrow: only the participants and the escrow key hold a key');
    if (keys.escrow.kid !== reader.key.kid) return fail(OpenFailure.EscrowKidUnknown, `the escrow field is sealed to another key (${keys.escrow.kid})`);
    const key = unwrapKey(keys.escrow.key, reader.key.pk, reader.key.sk);
    return key.ok ? key : fail(OpenFailure.EscrowDoesNotOpen, 'the escrow field names this key but does not open with it: forged or corrupted');
  },
  whoCanRead(keys: EscrowKeys): WhoCanRead {
    return { members: keys.wraps.map((w) => w.to), escrowKid: keys.escrow.kid, appKid: null, serverKid: null };
  },
} as const;
