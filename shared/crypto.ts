/**
 * Crypto primitives with libsodium, shared by the browser client, Node bots, the
 * regulator and the tests: identities, PINs, safety numbers, escrow key pairs,
 * the login signature and key unwrapping. Envelopes are in shared/envelope.ts,
 * one module per key model in shared/crypto/. Failures come back as values,
 * never as exceptions. Byte layouts and a worked example: docs/wire-format.md.
 */
import sodium from 'libsodium-wrappers';

export async function cryptoReady(): Promise<void> {
  await sodium.ready;
}

const B64 = () => sodium.base64_variants.ORIGINAL;
export const toB64 = (bytes: Uint8Array): string => sodium.to_base64(bytes, B64());
export const fromB64 = (text: string): Uint8Array => sodium.from_base64(text, B64());
export const toHex = (bytes: Uint8Array): string => sodium.to_hex(bytes);
export const fromHex = (hex: string): Uint8Array => sodium.from_hex(hex);
const utf8 = (text: string): Uint8Array => sodium.from_string(text);

export type Result<T> = { ok: true; value: T } | { ok: false; reason: string };

// ---------------------------------------------------------------------------
// Identities

/** A user's long-term keys. The X25519 pair is derived from the Ed25519 pair. */
export interface Identity {
  signPk: Uint8Array;
  signSk: Uint8Array;
  boxPk: Uint8Array;
  boxSk: Uint8Array;
  pin: string;
}

export function identityFromSigningKey(signSk: Uint8Array): Identity {
  if (signSk.length !== 64) throw new Error('an Ed25519 secret key is 64 bytes');
  // libsodium's Ed25519 secret key is seed (32 bytes) || public key (32 bytes).
  const signPk = signSk.slice(32);
  return {
    signPk,
    signSk,
    boxPk: sodium.crypto_sign_ed25519_pk_to_curve25519(signPk),
    boxSk: sodium.crypto_sign_ed25519_sk_to_curve25519(signSk),
    pin: pinOf(signPk),
  };
}

export function newIdentity(seed?: Uint8Array): Identity {
  const kp = seed ? sodium.crypto_sign_seed_keypair(seed) : sodium.crypto_sign_keypair();
  return identityFromSigningKey(kp.privateKey);
}

/** The box (X25519) public key that wraps are sealed to, from a directory signing key. */
export function boxKeyOf(signPk: Uint8Array): Uint8Array {
  // The conversion costs about 100 µs; a group message to 29 people would redo it 29 times per message.
  const id = toHex(signPk);
  let box = boxKeyCache.get(id);
  if (!box) {
    box = sodium.crypto_sign_ed25519_pk_to_curve25519(signPk);
    if (boxKeyCache.size >= 4096) boxKeyCache.delete(boxKeyCache.keys().next().value!);
    boxKeyCache.set(id, box);
  }
  return box;
}
const boxKeyCache = new Map<string, Uint8Array>();

/** PIN: BLAKE2b with a 4-byte output (not a truncated longer hash) over the Ed25519 public key, as 8 upper-case hex digits. */
export function pinOf(signPk: Uint8Array): string {
  return toHex(sodium.crypto_generichash(4, signPk, null)).toUpperCase();
}

/** 30 decimal digits from a public key: 6 groups of 5, each a 5-byte big-endian number mod 100000. */
function fingerprintDigits(signPk: Uint8Array): string {
  const h = sodium.crypto_generichash(30, signPk, null);
  let out = '';
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + (h[i + j] ?? 0);
    out += String(n % 100000).padStart(5, '0');
  }
  return out;
}

/**
 * Safety number for a pair of users: both 30-digit fingerprints, lower PIN's
 * first, as 12 groups of 5 digits. Both sides compute the same number; if the
 * relay swapped a key, the numbers the two people read out to each other differ.
 */
export function safetyNumber(a: Uint8Array, b: Uint8Array): string {
  // Ordered by PIN, then by key, so both sides agree even if two keys share a PIN.
  const [first, second] = pinOf(a) + toHex(a) <= pinOf(b) + toHex(b) ? [a, b] : [b, a];
  const digits = fingerprintDigits(first) + fingerprintDigits(second);
  return digits.match(/.{5}/g)!.join(' ');
}

// ---------------------------------------------------------------------------
// Escrow keys (the regulator's)

export interface EscrowKeyPair {
  pk: Uint8Array;
  sk: Uint8Array;
  kid: string;
}

/** Key id: BLAKE2b-64 of the X25519 public key, 16 hex digits. */
export const escrowKid = (pk: Uint8Array): string => toHex(sodium.crypto_generichash(8, pk, null));

/**
 * The escrow key's fingerprint, for people to compare out of band (read from the board, pinned in
 * the chat page): BLAKE2b with a 20-byte output over the X25519 public key, as 40 upper-case hex
 * digits in ten groups of four. Longer than the key id, so that no one can make a key to match it;
 * computed by each client from the key it is asked to seal to, never taken from the relay's word.
 */
export function escrowFingerprint(pk: Uint8Array): string {
  return toHex(sodium.crypto_generichash(20, pk, null))
    .toUpperCase()
    .match(/.{4}/g)!
    .join(' ');
}

/** A fingerprint as a person typed or pasted it (spaces, dashes, any case), or null if it is not 40 hex digits. */
export function normalizeFingerprint(text: string): string | null {
  const hex = text.replace(/[\s-]/g, '').toUpperCase();
  return /^[0-9A-F]{40}$/.test(hex) ? hex.match(/.{4}/g)!.join(' ') : null;
}

export function newEscrowKeyPair(): EscrowKeyPair {
  const kp = sodium.crypto_box_keypair();
  return { pk: kp.publicKey, sk: kp.privateKey, kid: escrowKid(kp.publicKey) };
}

export function escrowKeyPairFromSecret(sk: Uint8Array): EscrowKeyPair {
  const pk = sodium.crypto_scalarmult_base(sk);
  return { pk, sk, kid: escrowKid(pk) };
}

// ---------------------------------------------------------------------------
// Login

export const LOGIN_CONTEXT = 'backdoor-lab/v2 login';

/** What a client signs to log in: the context, the relay's fresh nonce and its own key. */
export function loginTranscript(nonceB64: string, signPkB64: string): Uint8Array {
  return utf8(`${LOGIN_CONTEXT}\nnonce=${nonceB64}\npk=${signPkB64}`);
}

export const signLogin = (nonceB64: string, id: Identity): string => toB64(sodium.crypto_sign_detached(loginTranscript(nonceB64, toB64(id.signPk)), id.signSk));

export function verifyLogin(nonceB64: string, signPkB64: string, sigB64: string): boolean {
  try {
    return sodium.crypto_sign_verify_detached(fromB64(sigB64), loginTranscript(nonceB64, signPkB64), fromB64(signPkB64));
  } catch {
    return false;
  }
}

/** Unwrap a sealed message key with an X25519 key pair (a user's or the regulator's). */
export function unwrapKey(sealedB64: string, boxPk: Uint8Array, boxSk: Uint8Array): Result<Uint8Array> {
  try {
    return { ok: true, value: sodium.crypto_box_seal_open(fromB64(sealedB64), boxPk, boxSk) };
  } catch {
    return { ok: false, reason: 'the key wrap does not open with this key' };
  }
}
