/**
 * Pre-encryption: two people who share a key out of band (met in person, a note passed under the
 * table) encrypt their text themselves before the app ever sees it, with libsodium's secretbox
 * (XSalsa20-Poly1305, a fresh random nonce each time). The app then seals that text like any other —
 * compliantly, escrow field and all — so the regulator opens the envelope and finds only this
 * layer, which its key does not open. Escrow catches the compliant, not the determined.
 *
 * The text a bot sends: "sbx1:" and base64 of nonce (24 bytes) || secretbox(key, nonce, UTF-8 text).
 */
import sodium from 'libsodium-wrappers';

const PREFIX = 'sbx1:';

/** A fresh 32-byte key for the two to share out of band. */
export const newOuterKey = (): Uint8Array => sodium.crypto_secretbox_keygen();

export function preEncrypt(key: Uint8Array, text: string): string {
  const nonce = sodium.randombytes_buf(sodium.crypto_secretbox_NONCEBYTES);
  const box = sodium.crypto_secretbox_easy(sodium.from_string(text), nonce, key);
  const out = new Uint8Array(nonce.length + box.length);
  out.set(nonce);
  out.set(box, nonce.length);
  return PREFIX + sodium.to_base64(out, sodium.base64_variants.ORIGINAL);
}

/** The inner text, or null when this is not a pre-encrypted text or the key does not open it (failures are values). */
export function preDecrypt(key: Uint8Array, text: string): string | null {
  if (!text.startsWith(PREFIX)) return null;
  try {
    const bytes = sodium.from_base64(text.slice(PREFIX.length), sodium.base64_variants.ORIGINAL);
    const n = sodium.crypto_secretbox_NONCEBYTES;
    if (bytes.length < n + sodium.crypto_secretbox_MACBYTES) return null;
    return sodium.to_string(sodium.crypto_secretbox_open_easy(bytes.slice(n), bytes.slice(0, n), key));
  } catch {
    return null;
  }
}
