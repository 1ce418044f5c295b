/**
 * Finds two Ed25519 keys that share a PIN, by a birthday search: a PIN is only 32 bits, so among
 * about 2^16 = 65,536 random keys two share one with good probability (seconds on a laptop). The
 * seeds are written to tests/fixtures/pin-collision.json, where the tests of trust on first use
 * (a relay that offers another key for a PIN a client already knows) read them.
 *
 *   npx tsx scripts/find-pin-collision.ts
 *
 * This is also why the relay refuses a second key for a PIN that is registered, and why a client
 * keeps the key it first saw for each PIN: the PIN alone names a person only as well as 32 bits can.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import sodium from 'libsodium-wrappers';
import { cryptoReady, pinOf, toB64, toHex } from '../shared/crypto.ts';

export const COLLISION_PATH = fileURLToPath(new URL('../tests/fixtures/pin-collision.json', import.meta.url));

async function main(): Promise<void> {
  await cryptoReady();
  const seen = new Map<string, Uint8Array>();
  const started = performance.now();
  for (let tries = 1; tries <= 2_000_000; tries++) {
    const seed = sodium.randombytes_buf(32);
    const pk = sodium.crypto_sign_seed_keypair(seed).publicKey;
    const pin = pinOf(pk);
    const before = seen.get(pin);
    if (before) {
      const other = sodium.crypto_sign_seed_keypair(before).publicKey;
      const out = {
        about: 'Two Ed25519 keys with the same PIN, found by scripts/find-pin-collision.ts (a birthday search over random seeds).',
        pin,
        tries,
        seconds: Math.round((performance.now() - started) / 100) / 10,
        first: { seedHex: toHex(before), pkB64: toB64(other) },
        second: { seedHex: toHex(seed), pkB64: toB64(pk) },
      };
      writeFileSync(COLLISION_PATH, `${JSON.stringify(out, null, 2)}\n`);
      process.stdout.write(`PIN ${pin} shared by two keys after ${tries} keys (${out.seconds} s); wrote ${COLLISION_PATH}\n`);
      return;
    }
    seen.set(pin, seed);
  }
  throw new Error('no collision in 2,000,000 keys (expected after about 65,536)');
}

await main();
