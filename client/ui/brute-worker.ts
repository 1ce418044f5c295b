/**
 * The attacker console's brute force (its own bundle, /assets/brute-worker.js, started as a module
 * Web Worker): given an export-grade escrow public key and its size in bits, try every secret with
 * the published derivation (shared/export-grade.ts, `searchRange`, the same code the tests run in
 * Node) until one derives that key. It reports progress about ten times a second, then the secret
 * it found or that none did: progress at least every 1/64 of the space and every 100 ms, so even a
 * fast search draws a moving bar. The page stops it with `terminate()`.
 *
 * It runs under the page's CSP (its own response carries the same header): libsodium's WebAssembly
 * needs 'wasm-unsafe-eval' and nothing more; it fetches nothing and imports nothing at run time.
 */
import sodium from 'libsodium-wrappers';
import { escrowKid, fromB64 } from '../../shared/crypto.ts';
import { exportBitsProblem, searchRange } from '../../shared/export-grade.ts';

/** Page → worker. */
export interface SearchRequest {
  type: 'search';
  pk: string;
  kid: string;
  bits: number;
}

/** Worker → page. */
export type SearchReport =
  | { type: 'progress'; tried: number; total: number; ms: number }
  | { type: 'found'; secret: number; kid: string; tried: number; total: number; ms: number }
  | { type: 'exhausted'; tried: number; total: number; ms: number }
  | { type: 'error'; message: string };

const scope = globalThis as unknown as { onmessage: ((ev: MessageEvent<unknown>) => void) | null; postMessage(msg: SearchReport): void };

/** The request, checked: a worker trusts no message it did not check either. */
function parseRequest(data: unknown): SearchRequest | string {
  if (!data || typeof data !== 'object') return 'not an object';
  const r = data as Record<string, unknown>;
  if (r.type !== 'search') return 'not a search request';
  if (typeof r.pk !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(r.pk)) return 'pk is not a 32-byte base64 key';
  if (typeof r.kid !== 'string' || !/^[0-9a-f]{16}$/.test(r.kid)) return 'kid is not 16 hex digits';
  if (typeof r.bits !== 'number') return 'bits is not a number';
  const problem = exportBitsProblem(r.bits);
  if (problem) return problem;
  return { type: 'search', pk: r.pk, kid: r.kid, bits: r.bits };
}

const SLICE = 512;
const REPORT_MS = 100;

async function search(request: SearchRequest): Promise<void> {
  await sodium.ready;
  const pk = fromB64(request.pk);
  if (escrowKid(pk) !== request.kid) return scope.postMessage({ type: 'error', message: `the key id ${request.kid} is not that of this public key` });
  const total = 2 ** request.bits;
  const started = performance.now();
  let reported = started;
  let reportedTried = 0;
  const step = Math.max(SLICE, total / 64);
  for (let from = 0; from < total; from += SLICE) {
    const to = Math.min(total, from + SLICE);
    const found = searchRange(pk, from, to);
    const now = performance.now();
    if (found !== null) return scope.postMessage({ type: 'found', secret: found, kid: request.kid, tried: found + 1, total, ms: now - started });
    if (now - reported >= REPORT_MS || to - reportedTried >= step) {
      reported = now;
      reportedTried = to;
      scope.postMessage({ type: 'progress', tried: to, total, ms: now - started });
    }
  }
  scope.postMessage({ type: 'exhausted', tried: total, total, ms: performance.now() - started });
}

let busy = false;
scope.onmessage = (ev) => {
  const request = parseRequest(ev.data);
  if (typeof request === 'string') return scope.postMessage({ type: 'error', message: `bad search request: ${request}` });
  if (busy) return scope.postMessage({ type: 'error', message: 'a search is already running in this worker' });
  busy = true;
  search(request)
    .catch((err: unknown) => scope.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) }))
    .finally(() => {
      busy = false;
    });
};
