/**
 * Export-grade escrow keys (shared/export-grade.ts): the published derivation, checked against an
 * independent computation from its description and against fixed answers (docs/attacker.md); the
 * search the attacker console's worker runs finds a planted secret anywhere in the space, at both
 * ends, and nothing when no secret of the space derives the key.
 */
import { createHash } from 'node:crypto';
import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady, escrowKid, toB64 } from '../../shared/crypto.ts';
import { EXPORT_KDF, exportBitsProblem, exportKeyPair, exportSeed, randomExportSecret, searchExportKey, searchRange } from '../../shared/export-grade.ts';

beforeAll(cryptoReady);

describe('the export-grade derivation', () => {
  it('is what the docs say: BLAKE2b-256 of the secret as 4 big-endian bytes keyed with the derivation name, then a box seed (sk = SHA-512(seed)[0..32], pk = sk·G)', () => {
    for (const secret of [0, 1, 258, 524_287, 2 ** 32 - 1]) {
      const bytes = new Uint8Array([(secret >>> 24) & 255, (secret >>> 16) & 255, (secret >>> 8) & 255, secret & 255]);
      const seed = sodium.crypto_generichash(32, bytes, sodium.from_string(EXPORT_KDF));
      expect(toB64(exportSeed(secret))).toBe(toB64(seed));
      // SHA-512 from Node's own crypto, not libsodium's: an independent reading of the derivation.
      const sk = new Uint8Array(createHash('sha512').update(seed).digest().subarray(0, 32));
      const pk = sodium.crypto_scalarmult_base(sk);
      const kp = exportKeyPair(secret);
      expect(toB64(kp.pk)).toBe(toB64(pk));
      expect(kp.kid).toBe(escrowKid(pk));
      // A real box key pair: a message sealed to the public key opens with the secret key.
      const sealed = sodium.crypto_box_seal(sodium.from_string('k'), kp.pk);
      expect(sodium.to_string(sodium.crypto_box_seal_open(sealed, kp.pk, kp.sk))).toBe('k');
    }
  });

  it('gives the fixed answers of docs/attacker.md', () => {
    expect([0, 1, 524_287].map((s) => [exportKeyPair(s).kid, toB64(exportKeyPair(s).pk)])).toEqual([
      ['a446d937f927b50d', 'eXSrv4VHE5DKdMtFL6s+XlOQN+pxNrUX0kkqQqGp63M='],
      ['979e0ca43fbd9aaf', 'RxZoCIv9n86fLkpRuFwqYM6pah/hh0eNHeLzWaG4JW4='],
      ['89cd269a9376a5b3', 'kXmMznlFRYqitOSqq1DapHAB5w6ofsaXousAUhptsDQ='],
    ]);
  });

  it('a random secret stays within its bits, and bits outside 8-32 are refused', () => {
    for (let i = 0; i < 200; i++) {
      const s = randomExportSecret(9);
      expect(Number.isInteger(s) && s >= 0 && s < 512).toBe(true);
    }
    expect(exportBitsProblem(7)).toMatch(/from 8 to 32/);
    expect(exportBitsProblem(33)).toMatch(/from 8 to 32/);
    expect(exportBitsProblem(19.5)).toMatch(/whole number/);
    expect(exportBitsProblem(19)).toBeNull();
    expect(() => randomExportSecret(40)).toThrow(/from 8 to 32/);
    expect(() => searchExportKey(new Uint8Array(32), 4)).toThrow(/from 8 to 32/);
  });
});

describe('the search', () => {
  it('finds a planted secret at the start, in the middle and at the end of a 10-bit space, and reports its progress', () => {
    for (const secret of [0, 700, 1023]) {
      const seen: number[] = [];
      expect(searchExportKey(exportKeyPair(secret).pk, 10, { slice: 100, progress: (tried) => seen.push(tried) })).toBe(secret);
      expect(seen.at(-1)).toBe(secret + 1);
      expect(seen).toEqual([...seen].sort((a, b) => a - b));
    }
  });

  it('finds nothing when the secret is outside the space searched, and a range that skips the secret misses it', () => {
    expect(searchExportKey(exportKeyPair(1024).pk, 10)).toBeNull();
    expect(searchRange(exportKeyPair(50).pk, 0, 50)).toBeNull();
    expect(searchRange(exportKeyPair(50).pk, 50, 51)).toBe(50);
  });
});
