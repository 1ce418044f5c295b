/**
 * Key model "e2e": the message key is sealed (crypto_box_seal) to the sender's own X25519 key and
 * to each recipient's, and to nobody else. Only those PINs can read the message.
 */
import { boxKeyOf, toB64, unwrapKey, type Identity } from '../crypto.ts';
import { OpenFailure, fail, type Outcome } from '../failures.ts';
import type { E2eKeys, KeyWrap } from '../protocol.ts';
import sodium from 'libsodium-wrappers';
import type { Reader, Recipient, WhoCanRead } from './model.ts';

/** The wraps every end-to-end model has: the sender's own copy first, then each recipient's. */
export function sealWraps(key: Uint8Array, sender: Identity, to: readonly Recipient[]): KeyWrap[] {
  return [
    { to: sender.pin, key: toB64(sodium.crypto_box_seal(key, sender.boxPk)) },
    ...to.map((r) => ({ to: r.pin, key: toB64(sodium.crypto_box_seal(key, boxKeyOf(r.signPk))) })),
  ];
}

/** The signed line of the wraps: `wraps=PIN:key,PIN:key` in the envelope's order. */
export const wrapsLine = (wraps: readonly KeyWrap[]): string => `wraps=${wraps.map((w) => `${w.to}:${w.key}`).join(',')}`;

/** A participant's own wrap, opened with its X25519 key pair. */
export function openOwnWrap(wraps: readonly KeyWrap[], identity: Identity): Outcome<Uint8Array> {
  const wrap = wraps.find((w) => w.to === identity.pin);
  if (!wrap) return fail(OpenFailure.NotAddressedToMe, `no key wrap for ${identity.pin}`);
  const key = unwrapKey(wrap.key, identity.boxPk, identity.boxSk);
  return key.ok ? key : fail(OpenFailure.WrapDoesNotOpen, 'the key wrap for this reader does not open with its key');
}

export const e2e = {
  model: 'e2e',
  seal(key: Uint8Array, sender: Identity, to: readonly Recipient[]): E2eKeys {
    return { model: 'e2e', wraps: sealWraps(key, sender, to) };
  },
  signedLines(keys: E2eKeys): string[] {
    return [wrapsLine(keys.wraps)];
  },
  open(keys: E2eKeys, reader: Reader): Outcome<Uint8Array> {
    if (reader.kind === 'escrow') return fail(OpenFailure.NoEscrowField, 'no escrow field: end-to-end only');
    if (reader.kind !== 'member') return fail(OpenFailure.NotAddressedToMe, 'end to end: only the sender and the recipients hold a key');
    return openOwnWrap(keys.wraps, reader.identity);
  },
  whoCanRead(keys: E2eKeys): WhoCanRead {
    return { members: keys.wraps.map((w) => w.to), escrowKid: null, appKid: null, serverKid: null };
  },
} as const;
