/**
 * Client crypto cost per message with libsodium-wrappers in Node, through the
 * same functions the client uses: sealEnvelope (fresh key, body AEAD, one
 * crypto_box_seal wrap per recipient plus the sender's copy, Ed25519 signature)
 * and openEnvelope (signature check, unwrap of the reader's key, body AEAD).
 *
 * "Group of 30" is thirty people: the sender and 29 recipients, so 30 wraps.
 */
import sodium from 'libsodium-wrappers';
import { cryptoReady, newIdentity, type Identity } from '../shared/crypto.ts';
import { openEnvelope, sealEnvelope } from '../shared/envelope.ts';
import type { Envelope } from '../shared/protocol.ts';

export interface CryptoCase {
  recipients: number;
  sealUs: number;
  openUs: number;
  bytes: number;
  iterations: number;
}

export interface CryptoFigures {
  oneToOne: CryptoCase;
  group30: CryptoCase;
  /** The primitives behind those figures, µs per call. */
  primitivesUs: Record<string, number>;
}

const TEXT = 'Meet at the library steps after class, I have the notes from Tuesday.';

function timeUs(iterations: number, f: (i: number) => void): number {
  for (let i = 0; i < Math.min(20, iterations); i++) f(i); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) f(i);
  return ((performance.now() - t0) * 1000) / iterations;
}

function measureCase(sender: Identity, recipients: Identity[], iterations: number): CryptoCase {
  const to = recipients.map((r) => ({ pin: r.pin, signPk: r.signPk }));
  const conv = recipients.length === 1 ? 'dm' : 'g-0123456789abcdef';
  const body = recipients.length === 1 ? { text: TEXT } : { text: TEXT, group: 'Class of 30' };
  const sealed: Envelope[] = [];
  const sealUs = timeUs(iterations, () => {
    sealed.push(sealEnvelope({ sender, to, conv, body }).env);
  });
  const reader = recipients[recipients.length - 1]!;
  let failures = 0;
  const openUs = timeUs(iterations, (i) => {
    const env = sealed[i % sealed.length]!;
    if (!openEnvelope(env, reader, sender.signPk).ok) failures++;
  });
  if (failures) throw new Error(`crypto bench: ${failures} envelopes failed to open`);
  return { recipients: recipients.length, sealUs, openUs, bytes: JSON.stringify(sealed[0]).length, iterations };
}

export async function runCryptoBench(options: { oneToOne: number; group: number }): Promise<CryptoFigures> {
  await cryptoReady();
  const sender = newIdentity();
  const people = Array.from({ length: 29 }, () => newIdentity());
  const oneToOne = measureCase(sender, people.slice(0, 1), options.oneToOne);
  const group30 = measureCase(sender, people, options.group);

  const key = sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
  const box = sodium.crypto_box_keypair();
  const message = new Uint8Array(900);
  const sig = sodium.crypto_sign_detached(message, sender.signSk);
  const sealedKey = sodium.crypto_box_seal(key, box.publicKey);
  const n = options.oneToOne;
  const primitivesUs = {
    crypto_box_seal: timeUs(n, () => sodium.crypto_box_seal(key, box.publicKey)),
    crypto_box_seal_open: timeUs(n, () => sodium.crypto_box_seal_open(sealedKey, box.publicKey, box.privateKey)),
    crypto_sign_detached: timeUs(n, () => sodium.crypto_sign_detached(message, sender.signSk)),
    crypto_sign_verify_detached: timeUs(n, () => sodium.crypto_sign_verify_detached(sig, message, sender.signPk)),
    ed25519_pk_to_curve25519: timeUs(n, () => sodium.crypto_sign_ed25519_pk_to_curve25519(sender.signPk)),
    xchacha20poly1305_encrypt_900B: timeUs(n, () => sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(message, null, null, new Uint8Array(24), key)),
    randombytes_buf_24: timeUs(n, () => sodium.randombytes_buf(24)),
  };
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`  1:1          seal+sign ${oneToOne.sealUs.toFixed(0)} µs, verify+open ${oneToOne.openUs.toFixed(0)} µs`);
  log(`  group of 30  seal+sign ${group30.sealUs.toFixed(0)} µs, verify+open ${group30.openUs.toFixed(0)} µs`);
  return { oneToOne, group30, primitivesUs };
}
