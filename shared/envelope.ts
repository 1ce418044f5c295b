/**
 * Envelopes (protocol version 2): the byte layouts, sealing, verifying and opening, and "who can
 * read" — all read from the envelope's signed key model (`keys`), dispatched exhaustively to one
 * module per model in shared/crypto/. Failures come back as stable codes (shared/failures.ts).
 * Version 1 envelopes (archives, old queues) verify and open through the same functions.
 * Byte layouts and a worked example: docs/wire-format.md.
 */
import sodium from 'libsodium-wrappers';
import { fromB64, pinOf, toB64, toHex, type EscrowKeyPair, type Identity } from './crypto.ts';
import { e2e } from './crypto/e2e.ts';
import { escrow } from './crypto/escrow.ts';
import { appKey, appKeyModel } from './crypto/app-key.ts';
import { serverKeyModel, type ServerKeyPair } from './crypto/server-key.ts';
import type { Reader, Recipient, WhoCanRead } from './crypto/model.ts';
import { headerBytesV1, signedBytesV1 } from './envelope-v1.ts';
import { OpenFailure, fail, type Outcome } from './failures.ts';
import { MessageBody, PROTOCOL_VERSION, assertNever, keysOf, type AnyEnvelope, type Envelope, type KeyModel } from './protocol.ts';

export type { Reader, Recipient, WhoCanRead };

const utf8 = (text: string): Uint8Array => sodium.from_string(text);

// ---------------------------------------------------------------------------
// Dispatch: one case per key model, no default that could hide a new one.

function keyLines(keys: KeyModel): string[] {
  switch (keys.model) {
    case 'e2e':
      return e2e.signedLines(keys);
    case 'e2e-escrow':
      return escrow.signedLines(keys);
    case 'app-key':
      return appKeyModel.signedLines(keys);
    case 'server-key':
      return serverKeyModel.signedLines(keys);
    default:
      return assertNever(keys);
  }
}

function openKeys(env: Pick<Envelope, 'delivery'>, keys: KeyModel, reader: Reader): Outcome<Uint8Array> {
  switch (keys.model) {
    case 'e2e':
      return e2e.open(keys, reader);
    case 'e2e-escrow':
      return escrow.open(keys, reader);
    case 'app-key':
      return appKeyModel.open(keys, reader);
    case 'server-key':
      return serverKeyModel.open(keys, env, reader);
    default:
      return assertNever(keys);
  }
}

function readersOfKeys(env: Pick<Envelope, 'delivery' | 'to'>, keys: KeyModel): WhoCanRead {
  switch (keys.model) {
    case 'e2e':
      return e2e.whoCanRead(keys);
    case 'e2e-escrow':
      return escrow.whoCanRead(keys);
    case 'app-key':
      return appKeyModel.whoCanRead(keys);
    case 'server-key':
      return serverKeyModel.whoCanRead(keys, env);
    default:
      return assertNever(keys);
  }
}

/** How the sender protects the message key. Bots choose these to comply, omit, forge or redirect. */
export type SealPlan =
  | { model: 'e2e' }
  | { model: 'e2e-escrow'; escrow: { pk: Uint8Array; kid: string } }
  | { model: 'e2e-escrow'; forged: { kid: string } }
  | { model: 'app-key' }
  | { model: 'server-key'; server: { pk: Uint8Array; kid: string } };

function sealKeys(plan: SealPlan, key: Uint8Array, sender: Identity, to: readonly Recipient[]): KeyModel {
  switch (plan.model) {
    case 'e2e':
      return e2e.seal(key, sender, to);
    case 'e2e-escrow':
      return 'forged' in plan ? escrow.forge(key, sender, to, plan.forged.kid) : escrow.seal(key, sender, to, plan.escrow);
    case 'app-key':
      return appKeyModel.seal(key);
    case 'server-key':
      return serverKeyModel.seal(key, sender, plan.server);
    default:
      return assertNever(plan);
  }
}

// ---------------------------------------------------------------------------
// Byte layouts (version 2)

/** The header, bound to the body as AEAD associated data: routing, time and the key model's name. */
export function headerBytes(env: Pick<Envelope, 'id' | 'from' | 'to' | 'conv' | 'ts'> & { keys: { model: string } }): Uint8Array {
  return utf8(
    [`backdoor-lab/v${PROTOCOL_VERSION}`, `id=${env.id}`, `from=${env.from}`, `to=${env.to.join(',')}`, `conv=${env.conv}`, `ts=${env.ts}`, `model=${env.keys.model}`].join('\n'),
  );
}

/** Everything the sender signs: the header text, the nonce, the body and the key model's own lines. */
export function signedBytes(env: Omit<Envelope, 'sig' | 'delivery'>): Uint8Array {
  const header = sodium.to_string(headerBytes(env));
  return utf8([`backdoor-lab/v${PROTOCOL_VERSION} signature`, header, `nonce=${env.nonce}`, `body=${env.body}`, ...keyLines(env.keys)].join('\n'));
}

/** The associated data of an envelope of either version. */
const adOf = (env: AnyEnvelope): Uint8Array => (env.v === PROTOCOL_VERSION ? headerBytes(env) : headerBytesV1(env));

// ---------------------------------------------------------------------------
// Sealing

export interface SealInput {
  sender: Identity;
  to: Recipient[];
  conv: string;
  body: MessageBody;
  /** How to protect the message key; default end to end (or with `escrow`, end to end with escrow). */
  plan?: SealPlan;
  /** Shorthand for plan e2e-escrow: the regulator's escrow key, when the policy covers this message. */
  escrow?: { pk: Uint8Array; kid: string } | null;
  /** Fixed values, for the worked example and tests only. */
  fixed?: { id?: string; ts?: number; nonce?: Uint8Array; key?: Uint8Array };
}

export function sealEnvelope(input: SealInput): { env: Envelope; key: Uint8Array } {
  const { sender, fixed } = input;
  const key = fixed?.key ?? sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
  const nonce = fixed?.nonce ?? sodium.randombytes_buf(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  const plan: SealPlan = input.plan ?? (input.escrow ? { model: 'e2e-escrow', escrow: input.escrow } : { model: 'e2e' });
  const keys = sealKeys(plan, key, sender, input.to);
  const head = {
    v: PROTOCOL_VERSION as typeof PROTOCOL_VERSION,
    id: fixed?.id ?? toHex(sodium.randombytes_buf(16)),
    from: sender.pin,
    to: input.to.map((r) => r.pin),
    conv: input.conv,
    ts: fixed?.ts ?? Date.now(),
  };
  const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(JSON.stringify(input.body), headerBytes({ ...head, keys }), null, nonce, key);
  const unsigned = { ...head, nonce: toB64(nonce), body: toB64(body), keys };
  const sig = toB64(sodium.crypto_sign_detached(signedBytes(unsigned), sender.signSk));
  // (A server-held key envelope leaves without `delivery`: the server adds it.)
  return { env: { ...unsigned, sig }, key };
}

// ---------------------------------------------------------------------------
// Verifying and opening

/** The sender's signature over the envelope, checked with the sender's directory key (whose PIN must be `from`). */
export function verifyEnvelope(env: AnyEnvelope, senderSignPk: Uint8Array): boolean {
  if (pinOf(senderSignPk) !== env.from) return false;
  try {
    const { sig, ...unsigned } = env;
    const bytes = unsigned.v === PROTOCOL_VERSION ? signedBytes(unsigned) : signedBytesV1(unsigned);
    // (`delivery`, a server-held key envelope's re-wraps, is the server's addition: not in the signed bytes.)
    return sodium.crypto_sign_verify_detached(fromB64(sig), bytes, senderSignPk);
  } catch {
    return false;
  }
}

/** Recover the message key as `reader`, by the envelope's key model. */
export function openKey(env: AnyEnvelope, reader: Reader): Outcome<Uint8Array> {
  return openKeys(env.v === PROTOCOL_VERSION ? env : {}, keysOf(env), reader);
}

/** Decrypt the body with a message key. Fails if any header field (the key model included) or body byte changed. */
export function decryptBody(env: AnyEnvelope, key: Uint8Array): Outcome<MessageBody> {
  let plain: string;
  try {
    plain = sodium.to_string(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, fromB64(env.body), adOf(env), fromB64(env.nonce), key));
  } catch {
    return fail(OpenFailure.BodyDoesNotDecrypt, 'the body does not decrypt with this key: a wrong or forged key, or the header or body altered');
  }
  let json: unknown;
  try {
    json = JSON.parse(plain);
  } catch {
    return fail(OpenFailure.BodyMalformed, 'the decrypted body is not JSON');
  }
  const parsed = MessageBody.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : fail(OpenFailure.BodyMalformed, 'the decrypted body is not a valid message body');
}

/**
 * Open an envelope as `reader`: the signature first when the sender's key is given (always, for a
 * participant), then the reader's key by the envelope's model, then the body.
 */
export function openAs(env: AnyEnvelope, reader: Reader, senderSignPk?: Uint8Array): Outcome<MessageBody> {
  if (senderSignPk && !verifyEnvelope(env, senderSignPk)) {
    return pinOf(senderSignPk) !== env.from
      ? fail(OpenFailure.SenderKeyMismatch, `the sender's key is not the one PIN ${env.from} is derived from`)
      : fail(OpenFailure.BadSignature, 'the signature does not verify: altered, or not from the claimed sender');
  }
  const key = openKey(env, reader);
  return key.ok ? decryptBody(env, key.value) : key;
}

/** A participant opens an envelope: signature, own wrap, body. */
export const openEnvelope = (env: AnyEnvelope, reader: Identity, senderSignPk: Uint8Array): Outcome<MessageBody> => openAs(env, { kind: 'member', identity: reader }, senderSignPk);

/** The escrow holder opens an envelope through its escrow field; the signature is checked when the sender's key is known. */
export const openWithEscrow = (env: AnyEnvelope, key: EscrowKeyPair, senderSignPk?: Uint8Array): Outcome<MessageBody> => openAs(env, { kind: 'escrow', key }, senderSignPk);

/** Who can read an envelope, from its key model alone. */
export const whoCanRead = (env: AnyEnvelope): WhoCanRead => readersOfKeys(env.v === PROTOCOL_VERSION ? env : { to: env.to }, keysOf(env));

/** Anyone with the app key opens an app-key envelope (and nothing else). */
export const openWithAppKey = (env: AnyEnvelope, key: Uint8Array = appKey().key, senderSignPk?: Uint8Array): Outcome<MessageBody> =>
  openAs(env, { kind: 'app', key }, senderSignPk);

/** The enterprise server opens a server-held key envelope with its key. */
export const openAsServer = (env: AnyEnvelope, key: ServerKeyPair, senderSignPk?: Uint8Array): Outcome<MessageBody> => openAs(env, { kind: 'server', key }, senderSignPk);

/** Length in bytes of the plaintext inside an envelope's body (ciphertext minus the 16-byte tag). */
export const bodyPlainLength = (env: AnyEnvelope): number => fromB64(env.body).length - sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES;
