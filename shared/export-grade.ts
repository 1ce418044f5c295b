/**
 * Export-grade escrow (the lab's scene 13): an escrow key pair derived from a deliberately small
 * secret, as 1990s export rules and TETRA's TEA1 cut keys down to a size a search can cover.
 *
 * The derivation is public, as an export standard is; only the secret is not:
 *
 *   secret  an integer 0 <= s < 2^bits (bits from 8 to 32)
 *   seed    = BLAKE2b-256(message = s as 4 bytes big-endian, key = EXPORT_KDF in UTF-8)
 *   keys    = crypto_box_seed_keypair(seed)   (X25519: sk = SHA-512(seed)[0..32], pk = sk·G)
 *   kid     = BLAKE2b-64(pk), as for every escrow key (shared/crypto.ts)
 *
 * Whoever knows the public key and `bits` finds the secret by trying every s: the regulator's
 * module (server/regulator.ts) makes the key, the attacker console's Web Worker
 * (client/ui/brute-worker.ts) and the tests search for it, all with `searchRange` below.
 */
import sodium from 'libsodium-wrappers';
import { escrowKid, type EscrowKeyPair } from './crypto.ts';

/** The derivation's name and its BLAKE2b key: part of the published derivation. */
export const EXPORT_KDF = 'backdoor-lab export-grade escrow v1';
export const MIN_EXPORT_BITS = 8;
export const MAX_EXPORT_BITS = 32;

/** The public part of an export-grade key: what the attacker is given. */
export interface ExportGradeTarget {
  kid: string;
  /** X25519 public key, standard base64. */
  pk: string;
  bits: number;
  kdf: typeof EXPORT_KDF;
}

export function exportBitsProblem(bits: number): string | null {
  return Number.isInteger(bits) && bits >= MIN_EXPORT_BITS && bits <= MAX_EXPORT_BITS
    ? null
    : `export-grade bits must be a whole number from ${MIN_EXPORT_BITS} to ${MAX_EXPORT_BITS}, not ${bits}`;
}

let kdfKey: Uint8Array | null = null;
const seedInput = new Uint8Array(4);

/** The box seed for secret `s` (BLAKE2b-256 keyed with the derivation's name). */
export function exportSeed(secret: number): Uint8Array {
  kdfKey ??= sodium.from_string(EXPORT_KDF);
  seedInput[0] = (secret >>> 24) & 0xff;
  seedInput[1] = (secret >>> 16) & 0xff;
  seedInput[2] = (secret >>> 8) & 0xff;
  seedInput[3] = secret & 0xff;
  return sodium.crypto_generichash(32, seedInput, kdfKey);
}

/** The escrow key pair of secret `s`. */
export function exportKeyPair(secret: number): EscrowKeyPair {
  const kp = sodium.crypto_box_seed_keypair(exportSeed(secret));
  return { pk: kp.publicKey, sk: kp.privateKey, kid: escrowKid(kp.publicKey) };
}

/** A fresh random secret of `bits` bits (libsodium's CSPRNG). */
export function randomExportSecret(bits: number): number {
  const problem = exportBitsProblem(bits);
  if (problem) throw new Error(problem);
  return bits === 32 ? sodium.randombytes_random() : sodium.randombytes_uniform(2 ** bits);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * Try every secret from `from` (inclusive) to `to` (exclusive): the one whose derived public key
 * is `pk`, or null. The whole search is this loop; the worker runs it in slices to report progress.
 */
export function searchRange(pk: Uint8Array, from: number, to: number): number | null {
  for (let s = from; s < to; s++) {
    const kp = sodium.crypto_box_seed_keypair(exportSeed(s));
    if (sameBytes(kp.publicKey, pk)) return s;
  }
  return null;
}

/** The whole search, in slices of `slice` secrets, with a report after each: the secret, or null when none of the 2^bits derives `pk`. */
export function searchExportKey(pk: Uint8Array, bits: number, options: { slice?: number; progress?: (tried: number, total: number) => void } = {}): number | null {
  const problem = exportBitsProblem(bits);
  if (problem) throw new Error(problem);
  const total = 2 ** bits;
  const slice = options.slice ?? 4096;
  for (let from = 0; from < total; from += slice) {
    const to = Math.min(total, from + slice);
    const found = searchRange(pk, from, to);
    options.progress?.(found === null ? to : found + 1, total);
    if (found !== null) return found;
  }
  return null;
}
