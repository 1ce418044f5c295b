/**
 * Client-side scanning's cost per outgoing message (shared/scan.ts), as a client pays it before
 * sealing: every run of 1 to 8 words hashed with keyed BLAKE2b and looked up in a full list (64
 * entries). Run on its own: `npx tsx bench/scan-bench.ts`. A lab bot scans in the relay's process,
 * so this is also what one bot message costs the relay's event loop.
 */
import { cryptoReady } from '../shared/crypto.ts';
import { MAX_SCAN_ENTRIES, MAX_TEXT_CHARS } from '../shared/protocol.ts';
import { hashPhrase, scanText } from '../shared/scan.ts';
import sodium from 'libsodium-wrappers';

async function main(): Promise<void> {
  await cryptoReady();
  const salt = sodium.randombytes_buf(16);
  const entries = new Set(Array.from({ length: MAX_SCAN_ENTRIES }, (_, i) => hashPhrase(salt, `phrase number ${i}`)));
  // The worst case: the most words a text of MAX_TEXT_CHARS can hold (one-letter words).
  const longest = 'a '.repeat(MAX_TEXT_CHARS / 2).slice(0, MAX_TEXT_CHARS);
  const cases: [string, string][] = [
    ['a 10-word message', 'Are you coming tonight? Meet at the square at six.'],
    [`${MAX_TEXT_CHARS} characters, ${MAX_TEXT_CHARS / 2} words (worst case)`, longest],
  ];
  for (const [label, text] of cases) {
    const runs: number[] = [];
    for (let i = 0; i < 21; i++) {
      const start = performance.now();
      scanText(salt, entries, text);
      runs.push(performance.now() - start);
    }
    runs.sort((a, b) => a - b);
    console.log(`${label}: median ${runs[10]!.toFixed(2)} ms, slowest ${runs[20]!.toFixed(2)} ms (21 runs)`);
  }
}

void main();
