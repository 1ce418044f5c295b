/**
 * Key model "app-key": consumer BBM's PIN messages. Every copy of the app ships the same
 * symmetric key, and each message key is encrypted (crypto_secretbox) with it — so every client,
 * and anyone who takes the key out of the app, opens every message: "scrambled, but not
 * encrypted" (BlackBerry KB 000010498). Canada's RCMP used BlackBerry's global key to read more
 * than a million PIN messages (Project Clemenza, 2010–12; Motherboard, April 2016).
 *
 * In this lab the app key is derived from a fixed text that every client ships (APP_KEY_TEXT): it
 * is meant to be known, as BlackBerry's was to every device.
 */
import sodium from 'libsodium-wrappers';
import { fromB64, toB64, toHex } from '../crypto.ts';
import { OpenFailure, fail, type Outcome } from '../failures.ts';
import type { AppKeys } from '../protocol.ts';
import type { Reader, WhoCanRead } from './model.ts';

/** What every client ships. The app key is BLAKE2b-256 of it. */
export const APP_KEY_TEXT = 'backdoor-lab global app key (BBM PIN messages): every copy of the app has it';

let cached: { key: Uint8Array; kid: string } | null = null;

/** The app key every client has, and its key id (BLAKE2b-64 of the key, hex). */
export function appKey(): { key: Uint8Array; kid: string } {
  if (!cached) {
    const key = sodium.crypto_generichash(32, sodium.from_string(APP_KEY_TEXT), null);
    cached = { key, kid: toHex(sodium.crypto_generichash(8, key, null)) };
  }
  return cached;
}

export const appKeyModel = {
  model: 'app-key',
  seal(key: Uint8Array, fixedNonce?: Uint8Array): AppKeys {
    const app = appKey();
    const nonce = fixedNonce ?? sodium.randombytes_buf(sodium.crypto_secretbox_NONCEBYTES);
    return { model: 'app-key', kid: app.kid, nonce: toB64(nonce), key: toB64(sodium.crypto_secretbox_easy(key, nonce, app.key)) };
  },
  signedLines(keys: AppKeys): string[] {
    return [`app=${keys.kid}:${keys.nonce}:${keys.key}`];
  },
  /** Anyone opens it with the app key: every participant (the app is on their device) and whoever has the app or its key. */
  open(keys: AppKeys, reader: Reader): Outcome<Uint8Array> {
    if (reader.kind === 'escrow') return fail(OpenFailure.NoEscrowField, 'no escrow field: the shared app key model');
    // A participant's device has the app, and so the key; a bare server key does not open it.
    if (reader.kind === 'server') return fail(OpenFailure.WrapDoesNotOpen, 'encrypted with the app key, not wrapped to a server');
    const app = reader.kind === 'app' ? { key: reader.key, kid: toHex(sodium.crypto_generichash(8, reader.key, null)) } : appKey();
    if (app.kid !== keys.kid) return fail(OpenFailure.WrapDoesNotOpen, 'encrypted with another app key');
    try {
      return { ok: true, value: sodium.crypto_secretbox_open_easy(fromB64(keys.key), fromB64(keys.nonce), app.key) };
    } catch {
      return fail(OpenFailure.WrapDoesNotOpen, 'the app-key field does not open with the app key');
    }
  },
  whoCanRead(keys: AppKeys): WhoCanRead {
    return { members: [], escrowKid: null, appKid: keys.kid, serverKid: null };
  },
} as const;
