/**
 * Client-side scanning, the hash side (docs/wire-format.md, section 10): how a phrase on the
 * authority's list and the words of an outgoing message are normalised and hashed, the same way on
 * both sides, so that the client compares hashes and never holds the list's phrases.
 *
 * A list entry is BLAKE2b-256, keyed with the list's 16-byte random salt, of a context string and
 * the normalised phrase. A client scans a message by hashing every run of 1 to MAX_PHRASE_WORDS
 * consecutive words of its normalised text the same way and looking each hash up in the list.
 * The salt makes a list's hashes useless for precomputed tables and for telling two lists' entries
 * apart; it does not stop a client from testing a guess (see `hashPhrase`): the list is opaque only
 * to someone who cannot guess what it targets.
 */
import sodium from 'libsodium-wrappers';
import { MAX_PHRASE_WORDS } from './protocol.ts';

export { MAX_PHRASE_WORDS, MAX_SCAN_ENTRIES } from './protocol.ts';
export const SCAN_SALT_BYTES = 16;
export const SCAN_HASH_BYTES = 32;
/** Bound into every hash, so a scan hash is never a hash of anything else in the project. */
export const SCAN_CONTEXT = 'backdoor-lab/v1 scan\n';

/**
 * The words of a text as the scanner sees them: compatibility-decomposed (NFKD: full-width letters,
 * ligatures and the like become plain ones), accents and other combining marks dropped, lower case,
 * and split at every run of characters that are neither letters nor digits (spaces, punctuation,
 * symbols, emoji, control characters). So "Meet  at the SQUARE!" and "meet at the square" have the
 * same words; "squares" is another word.
 */
export function scanWords(text: string): string[] {
  return text
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

/** A phrase as a list entry holds it: its words joined by single spaces; an error if it has none or too many. */
export function normalisePhrase(phrase: string): { ok: true; value: string } | { ok: false; reason: string } {
  const words = scanWords(phrase);
  if (!words.length) return { ok: false, reason: 'the phrase has no letters or digits' };
  if (words.length > MAX_PHRASE_WORDS) return { ok: false, reason: `a phrase on the list is at most ${MAX_PHRASE_WORDS} words (this one has ${words.length})` };
  return { ok: true, value: words.join(' ') };
}

/** The hash of an already normalised phrase under a list's salt (base64, as the policy carries it). */
function hashNormalised(salt: Uint8Array, normalised: string): string {
  const bytes = sodium.crypto_generichash(SCAN_HASH_BYTES, sodium.from_string(SCAN_CONTEXT + normalised), salt);
  return sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
}

/**
 * The list entry for a phrase: what the authority puts on the list, and what anyone holding the salt
 * can compute for a phrase they guess. Throws on a phrase with no words or too many (callers check
 * with `normalisePhrase` first when the phrase is user input).
 */
export function hashPhrase(salt: Uint8Array, phrase: string): string {
  const normalised = normalisePhrase(phrase);
  if (!normalised.ok) throw new Error(normalised.reason);
  return hashNormalised(salt, normalised.value);
}

/**
 * Scan a message's text against a list: the entries some run of 1 to MAX_PHRASE_WORDS consecutive
 * words of it hashes to, each once, in the order first found. Empty when nothing matches.
 */
export function scanText(salt: Uint8Array, entries: ReadonlySet<string>, text: string): string[] {
  if (!entries.size) return [];
  const words = scanWords(text);
  const found: string[] = [];
  for (let start = 0; start < words.length; start++) {
    for (let n = 1; n <= MAX_PHRASE_WORDS && start + n <= words.length; n++) {
      const hash = hashNormalised(salt, words.slice(start, start + n).join(' '));
      if (entries.has(hash) && !found.includes(hash)) found.push(hash);
    }
  }
  return found;
}
