/**
 * `npx tsx bench/brute-force.ts [--bits 17] [--runs 3]`: how fast the attacker console's brute
 * force tries export-grade keys, in the real worker (/assets/brute-worker.js) in Debian's Chromium
 * and with the same search code in Node, each over a key no secret of the space derives (so every
 * run tries all 2^bits). Prints keys/s per run and what that makes of a search at the relay's
 * default size (DEFAULT_EXPORT_GRADE_BITS): the figures in docs/attacker.md. Not part of npm test.
 */
import { parseArgs } from 'node:util';
import { cpus } from 'node:os';
import { startApp } from '../server/app.ts';
import { DEFAULT_EXPORT_GRADE_BITS } from '../server/regulator.ts';
import { cryptoReady, toB64 } from '../shared/crypto.ts';
import { exportKeyPair, searchExportKey } from '../shared/export-grade.ts';
import { launchChromium } from '../tests/helpers/browser.ts';

const { values } = parseArgs({ options: { bits: { type: 'string', default: '17' }, runs: { type: 'string', default: '3' } } });
const bits = Number(values.bits);
const runs = Number(values.runs);
await cryptoReady();
const stray = exportKeyPair(2 ** bits + 1); // outside the space: the search tries every secret
const token = 'bench-admin-token-0000';
const app = await startApp({ port: 0, host: '127.0.0.1', dataDir: null, adminToken: token });
const browser = await launchChromium();
const rates: { where: string; rate: number }[] = [];
try {
  const page = await browser.newPage();
  await page.goto(`${app.url}/attacker`);
  for (let i = 0; i < runs; i++) {
    const report = await page.evaluate(
      ({ pk, kid, bits }) =>
        new Promise<{ tried: number; ms: number }>((resolve, reject) => {
          const w = new Worker(document.body.dataset.worker ?? '', { type: 'module' });
          w.onerror = (e) => reject(new Error(e.message));
          w.onmessage = (ev: MessageEvent<{ type: string; tried: number; ms: number; message?: string }>) => {
            if (ev.data.type === 'progress') return;
            w.terminate();
            if (ev.data.type === 'error') reject(new Error(ev.data.message));
            else resolve({ tried: ev.data.tried, ms: ev.data.ms });
          };
          w.postMessage({ type: 'search', pk, kid, bits });
        }),
      { pk: toB64(stray.pk), kid: stray.kid, bits },
    );
    rates.push({ where: 'Chromium worker', rate: (report.tried / report.ms) * 1000 });
  }
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    searchExportKey(stray.pk, bits);
    rates.push({ where: 'Node', rate: (2 ** bits / (performance.now() - t)) * 1000 });
  }
} finally {
  await browser.close();
  await app.close();
}
const full = 2 ** DEFAULT_EXPORT_GRADE_BITS;
process.stdout.write(`${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}; 2^${bits} secrets per run\n`);
for (const { where, rate } of rates) {
  process.stdout.write(
    `${where.padEnd(16)} ${Math.round(rate).toLocaleString('en-US').padStart(7)} keys/s  → 2^${DEFAULT_EXPORT_GRADE_BITS}: all ${(full / rate).toFixed(1)} s, on average ${(full / 2 / rate).toFixed(1)} s\n`,
  );
}
