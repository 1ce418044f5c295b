/**
 * Envelope crypto with libsodium, shared by the browser client, Node bots, the
 * regulator and the tests. One function per concern; failures come back as
 * values, never as exceptions. The byte layouts are documented, with a worked
 * example, in docs/wire-format.md.
 */
import sodium from 'libsodium-wrappers';
import { PROTOCOL_VERSION, type Envelope, type EscrowField, MessageBody } from './protocol.ts';

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

export const LOGIN_CONTEXT = 'backdoor-lab/v1 login';

/** What a client signs to log in: the context, the relay's fresh nonce and its own key. */
export function loginTranscript(nonceB64: string, signPkB64: string): Uint8Array {
  return utf8(`${LOGIN_CONTEXT}\nnonce=${nonceB64}\npk=${signPkB64}`);
}

export const signLogin = (nonceB64: string, id: Identity): string =>
  toB64(sodium.crypto_sign_detached(loginTranscript(nonceB64, toB64(id.signPk)), id.signSk));

export function verifyLogin(nonceB64: string, signPkB64: string, sigB64: string): boolean {
  try {
    return sodium.crypto_sign_verify_detached(fromB64(sigB64), loginTranscript(nonceB64, signPkB64), fromB64(signPkB64));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Envelope byte layouts

/** The header, bound to the body as AEAD associated data. */
export function headerBytes(env: Pick<Envelope, 'v' | 'id' | 'from' | 'to' | 'conv' | 'ts'>): Uint8Array {
  return utf8(
    [`backdoor-lab/v${env.v}`, `id=${env.id}`, `from=${env.from}`, `to=${env.to.join(',')}`, `conv=${env.conv}`, `ts=${env.ts}`].join('\n'),
  );
}

/** Everything the sender signs: the header text and every other field but the signature. */
export function signedBytes(env: Omit<Envelope, 'sig'>): Uint8Array {
  const header = sodium.to_string(headerBytes(env));
  const wraps = env.wraps.map((w) => `${w.to}:${w.key}`).join(',');
  const escrow = env.escrow ? `${env.escrow.kid}:${env.escrow.key}` : '-';
  return utf8(['backdoor-lab/v1 signature', header, `nonce=${env.nonce}`, `body=${env.body}`, `wraps=${wraps}`, `escrow=${escrow}`].join('\n'));
}

// ---------------------------------------------------------------------------
// Sealing

export interface Recipient {
  pin: string;
  signPk: Uint8Array;
}

export interface SealInput {
  sender: Identity;
  to: Recipient[];
  conv: string;
  body: MessageBody;
  /** The regulator's escrow key, when the policy covers this message. */
  escrow?: { pk: Uint8Array; kid: string } | null;
  /** Fixed values, for the worked example and tests only. */
  fixed?: { id?: string; ts?: number; nonce?: Uint8Array; key?: Uint8Array };
}

export function sealEnvelope(input: SealInput): { env: Envelope; key: Uint8Array } {
  const { sender, fixed } = input;
  const key = fixed?.key ?? sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
  const nonce = fixed?.nonce ?? sodium.randombytes_buf(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  const head = {
    v: PROTOCOL_VERSION as typeof PROTOCOL_VERSION,
    id: fixed?.id ?? toHex(sodium.randombytes_buf(16)),
    from: sender.pin,
    to: input.to.map((r) => r.pin),
    conv: input.conv,
    ts: fixed?.ts ?? Date.now(),
  };
  const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(JSON.stringify(input.body), headerBytes(head), null, nonce, key);
  const wraps = [
    { to: sender.pin, key: toB64(sodium.crypto_box_seal(key, sender.boxPk)) },
    ...input.to.map((r) => ({ to: r.pin, key: toB64(sodium.crypto_box_seal(key, boxKeyOf(r.signPk))) })),
  ];
  const escrow: EscrowField | null = input.escrow
    ? { kid: input.escrow.kid, key: toB64(sodium.crypto_box_seal(key, input.escrow.pk)) }
    : null;
  const unsigned = { ...head, nonce: toB64(nonce), body: toB64(body), wraps, escrow };
  const sig = toB64(sodium.crypto_sign_detached(signedBytes(unsigned), sender.signSk));
  return { env: { ...unsigned, sig }, key };
}

// ---------------------------------------------------------------------------
// Opening

export function verifyEnvelope(env: Envelope, senderSignPk: Uint8Array): boolean {
  if (pinOf(senderSignPk) !== env.from) return false;
  try {
    const { sig, ...unsigned } = env;
    return sodium.crypto_sign_verify_detached(fromB64(sig), signedBytes(unsigned), senderSignPk);
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

/** Decrypt the body with a message key. Fails if any header field or body byte changed. */
export function decryptBody(env: Envelope, key: Uint8Array): Result<MessageBody> {
  let plain: string;
  try {
    plain = sodium.to_string(
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, fromB64(env.body), headerBytes(env), fromB64(env.nonce), key),
    );
  } catch {
    return { ok: false, reason: 'the body does not decrypt: wrong key, or header or body altered' };
  }
  let json: unknown;
  try {
    json = JSON.parse(plain);
  } catch {
    return { ok: false, reason: 'the decrypted body is not JSON' };
  }
  const parsed = MessageBody.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, reason: 'the decrypted body is malformed' };
}

/** A participant opens an envelope: signature first, then its own wrap, then the body. */
export function openEnvelope(env: Envelope, reader: Identity, senderSignPk: Uint8Array): Result<MessageBody> {
  if (!verifyEnvelope(env, senderSignPk)) return { ok: false, reason: 'bad signature: not from the claimed sender, or altered' };
  const wrap = env.wraps.find((w) => w.to === reader.pin);
  if (!wrap) return { ok: false, reason: 'no key wrap for this reader' };
  const key = unwrapKey(wrap.key, reader.boxPk, reader.boxSk);
  return key.ok ? decryptBody(env, key.value) : key;
}

/**
 * The escrow holder opens an envelope through its escrow field. The signature
 * is checked when the sender's key is known; a forged field simply fails to open.
 */
export function openWithEscrow(env: Envelope, escrow: EscrowKeyPair, senderSignPk?: Uint8Array): Result<MessageBody> {
  if (senderSignPk && !verifyEnvelope(env, senderSignPk)) return { ok: false, reason: 'bad signature' };
  if (!env.escrow) return { ok: false, reason: 'no escrow field: end-to-end only' };
  if (env.escrow.kid !== escrow.kid) return { ok: false, reason: `escrow field is for another key (${env.escrow.kid})` };
  const key = unwrapKey(env.escrow.key, escrow.pk, escrow.sk);
  if (!key.ok) return { ok: false, reason: 'escrow field does not open: forged or corrupted' };
  return decryptBody(env, key.value);
}

/** Length in bytes of the plaintext inside an envelope's body (ciphertext minus the 16-byte tag). */
export const bodyPlainLength = (env: Envelope): number => fromB64(env.body).length - sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES;
