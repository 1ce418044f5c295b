/**
 * Protocol version 1 byte layouts (until 2026-12), kept so that envelopes in existing archives and
 * old offline queues still verify and open. Nothing new is sealed in this version.
 * docs/wire-format.md, "Version 1".
 */
import sodium from 'libsodium-wrappers';
import type { EnvelopeV1 } from './protocol.ts';

const utf8 = (text: string): Uint8Array => sodium.from_string(text);

/** The v1 header, bound to the body as AEAD associated data. */
export function headerBytesV1(env: Pick<EnvelopeV1, 'id' | 'from' | 'to' | 'conv' | 'ts'>): Uint8Array {
  return utf8(['backdoor-lab/v1', `id=${env.id}`, `from=${env.from}`, `to=${env.to.join(',')}`, `conv=${env.conv}`, `ts=${env.ts}`].join('\n'));
}

/** Everything a v1 sender signed: the header text, the nonce, body, wraps and escrow field ("-" when none). */
export function signedBytesV1(env: Omit<EnvelopeV1, 'sig'>): Uint8Array {
  const header = sodium.to_string(headerBytesV1(env));
  const wraps = env.wraps.map((w) => `${w.to}:${w.key}`).join(',');
  const escrow = env.escrow ? `${env.escrow.kid}:${env.escrow.key}` : '-';
  return utf8(['backdoor-lab/v1 signature', header, `nonce=${env.nonce}`, `body=${env.body}`, `wraps=${wraps}`, `escrow=${escrow}`].join('\n'));
}
