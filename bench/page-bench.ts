/**
 * Page weight and a classroom loading the chat page at once, in Debian's Chromium, against a
 * relay in its own process:
 *
 * - bytes on the wire: each page opened in a fresh Chromium profile (a real on-disk HTTP cache,
 *   launchPersistentContext), then opened again in a new tab of the same profile. The bytes are
 *   Chromium's own count (DevTools Network.loadingFinished encodedDataLength: headers and the
 *   compressed body as received) over every HTTP response of the load; WebSocket frames are the
 *   conversation, not the page, and are not counted.
 * - a class at once, as the relay sees it: 30 clients, each its own device with its own HTTP
 *   connections, all start at the same moment. Each loads the chat page the way Chromium does
 *   (the HTML, then every script and style sheet the HTML names, asking for brotli, each answer
 *   decompressed and checked against its length) and then logs in with client/core's Messenger
 *   over a real WebSocket (a new identity: keys made, login signed, welcome received). The
 *   figure is from the start until the last of them is logged in. The 30 clients' own work (30
 *   key generations, 30 decompressions) runs in this one process on the relay's two cores.
 * - one phone's own start-up: the chat page's time to ready in a fresh Chromium context, alone
 *   (what each device adds on its own CPU once its bytes have arrived).
 * - 30 Chromium pages at once (a stress figure): 30 fresh contexts in one Chromium, all navigated
 *   at the same moment, with the CPU time Chromium's processes used. On two cores that is 30
 *   browsers' start-ups on one machine's CPU, which is not what a class of 30 devices is.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import WebSocket from 'ws';
import { Messenger, memoryStore, type SocketLike } from '../client/core/messenger.ts';
import { cryptoReady } from '../shared/crypto.ts';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { median } from './common.ts';
import { CHROMIUM } from './browser-bench.ts';

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export const PAGE_PATHS = [
  { name: 'chat', path: '/?name=Weigh', chat: true },
  { name: 'relay view', path: '/relay', chat: false },
  { name: 'regulator console', path: '/regulator', chat: false },
  { name: 'teacher panel', path: '/teacher', chat: false },
  { name: 'projector', path: '/projector', chat: false },
] as const;

export interface LoadBytes {
  bytes: number;
  requests: number;
  /** Responses served from Chromium's cache (no bytes on the wire). */
  fromCache: number;
  /** 304 answers (the page revalidated). */
  notModified: number;
}

export interface PageWeight {
  name: string;
  path: string;
  first: LoadBytes;
  repeat: LoadBytes;
}

export interface CrowdFigures {
  clients: number;
  runs: number;
  /** CPU seconds Chromium's processes (browser, renderers, network, GPU) used per run, start to all ready. */
  chromiumCpuS: number[];
  /** Per run: from the common start until the last of the clients was ready. */
  allReadyMs: number[];
  medianAllReadyMs: number;
  /** Runs in which a client failed to get ready, and why (they count as not met). */
  failures: string[];
  /** Per run: the median client's ready time. */
  medianClientMs: number[];
}

async function countedLoad(context: BrowserContext, url: string, chat: boolean): Promise<LoadBytes> {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const status = new Map<string, number>();
  const cached = new Set<string>();
  let bytes = 0;
  let requests = 0;
  cdp.on('Network.responseReceived', (ev: { requestId: string; type: string; response: { status: number; fromDiskCache?: boolean; fromPrefetchCache?: boolean } }) => {
    if (ev.type === 'WebSocket') return;
    status.set(ev.requestId, ev.response.status);
    if (ev.response.fromDiskCache || ev.response.fromPrefetchCache) cached.add(ev.requestId);
  });
  cdp.on('Network.requestServedFromCache', (ev: { requestId: string }) => cached.add(ev.requestId));
  cdp.on('Network.loadingFinished', (ev: { requestId: string; encodedDataLength: number }) => {
    if (!status.has(ev.requestId)) return;
    requests += 1;
    if (!cached.has(ev.requestId)) bytes += ev.encodedDataLength;
  });
  await page.goto(url, { waitUntil: 'load' });
  if (chat) await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
  // Whatever the page fetches right after load (the relay view's policy, a console's first API call).
  await page.waitForTimeout(500);
  const result = { bytes, requests, fromCache: cached.size, notModified: [...status.values()].filter((s) => s === 304).length };
  await page.close();
  return result;
}

/** First and repeat load of each page, each page in a fresh profile. */
export async function measurePageWeight(url: string): Promise<PageWeight[]> {
  const out: PageWeight[] = [];
  for (const p of PAGE_PATHS) {
    const profile = mkdtempSync(join(tmpdir(), 'backdoor-lab-profile-'));
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    try {
      const first = await countedLoad(context, `${url}${p.path}`, p.chat);
      // A chat page is a person: the repeat load is the same person coming back (their tab let go first).
      const repeat = await countedLoad(context, `${url}${p.path}`, p.chat);
      out.push({ name: p.name, path: p.path, first, repeat });
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }
  return out;
}

/** CPU seconds used so far by process `root` and every live process below it (Linux /proc). */
function treeCpuSeconds(root: number): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Fields after the command name (which may hold spaces) start at ") ": state ppid ... utime(14) stime(15).
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(entry), Number(f[1]));
      ticks.set(Number(entry), Number(f[11]) + Number(f[12]));
    } catch {
      // The process ended while the table was read.
    }
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) if (p === root) return true;
    return false;
  };
  let sum = 0;
  for (const [pid, t] of ticks) if (inTree(pid)) sum += t;
  return sum / 100; // USER_HZ is 100 on Linux
}

/** The Chromium this process launched: its child whose command is chromium (the newest, if several). */
function chromiumChild(): number | undefined {
  let found: number | undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && /^chrom/.test(readFileSync(`/proc/${entry}/comm`, 'utf8')) && Number(entry) > (found ?? 0)) found = Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** `clients` fresh contexts load the chat page at once; `runs` times. */
export async function measureCrowd(url: string, clients: number, runs: number): Promise<CrowdFigures> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const browserPid = chromiumChild();
  const allReadyMs: number[] = [];
  const medianClientMs: number[] = [];
  const chromiumCpuS: number[] = [];
  const failures: string[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const contexts = await Promise.all(Array.from({ length: clients }, () => browser.newContext()));
      try {
        const pages: Page[] = await Promise.all(contexts.map((c) => c.newPage()));
        const cpu0 = browserPid ? treeCpuSeconds(browserPid) : Number.NaN;
        const t0 = performance.now();
        const readyAt = await Promise.all(
          pages.map(async (page, i) => {
            await page.goto(`${url}/?name=${encodeURIComponent(`Crowd${run}x${i}`)}`, { timeout: 60_000 });
            await page.waitForSelector('body[data-ready="true"]', { timeout: 60_000 });
            return performance.now() - t0;
          }),
        );
        allReadyMs.push(Math.max(...readyAt));
        medianClientMs.push(median(readyAt));
        chromiumCpuS.push(browserPid ? treeCpuSeconds(browserPid) - cpu0 : Number.NaN);
      } catch (err) {
        failures.push(`run ${run + 1}: ${(err as Error).message.split('\n')[0]}`);
      } finally {
        await Promise.all(contexts.map((c) => c.close()));
      }
    }
  } finally {
    await browser.close();
  }
  return { clients, runs, chromiumCpuS, allReadyMs, medianAllReadyMs: allReadyMs.length ? median(allReadyMs) : Number.NaN, medianClientMs, failures };
}

export interface ClassFigures {
  clients: number;
  runs: number;
  /** Per run: from the common start until the last client was logged in. */
  allReadyMs: number[];
  medianAllReadyMs: number;
  /** Per run: the median client's time to logged in. */
  medianClientMs: number[];
  /** Per run: the slowest client's time until its page's bytes had all arrived. */
  allLoadedMs: number[];
  /** Bytes on the wire for one client's page load (status lines, headers and compressed bodies). */
  bytesPerClient: number;
  failures: string[];
}

interface Fetched {
  status: number;
  body: Buffer;
  wireBytes: number;
}

/** One GET as a browser asks for it (brotli or gzip), over the device's own keep-alive agent; the body decompressed and checked. */
function get(agent: http.Agent, url: string): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: { 'Accept-Encoding': 'br, gzip', 'User-Agent': 'Mozilla/5.0 (bench; a classroom device)' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const head = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n${res.rawHeaders.map((v, i) => (i % 2 ? `${v}\r\n` : `${v}: `)).join('')}\r\n`;
        const enc = res.headers['content-encoding'];
        try {
          const body = enc === 'br' ? brotliDecompressSync(raw) : enc === 'gzip' ? gunzipSync(raw) : raw;
          resolve({ status: res.statusCode ?? 0, body, wireBytes: Buffer.byteLength(head) + raw.length });
        } catch (err) {
          reject(new Error(`${url}: the ${String(enc)} body does not decompress: ${(err as Error).message}`));
        }
      });
    });
    req.on('error', reject);
  });
}

/** The scripts, module preloads and style sheets a page's HTML names (same-origin paths). */
export function subresources(html: string): string[] {
  const found = new Set<string>();
  for (const m of html.matchAll(/<(?:script|link)\b[^>]*?\b(?:src|href)="(\/[^"]+)"[^>]*>/g)) {
    const tag = m[0];
    if (tag.startsWith('<script') || /rel="(?:stylesheet|modulepreload|preload)"/.test(tag)) found.add(m[1] ?? '');
  }
  found.delete('');
  return [...found];
}

/**
 * `clients` devices load the chat page and log in at the same moment, as the relay sees a class do
 * it (see the file's head); `runs` times, with new people each run.
 */
export async function measureClassOnWire(url: string, clients: number, runs: number): Promise<ClassFigures> {
  await cryptoReady();
  const wsUrl = `${url.replace(/^http/, 'ws')}/ws`;
  const allReadyMs: number[] = [];
  const allLoadedMs: number[] = [];
  const medianClientMs: number[] = [];
  const failures: string[] = [];
  let bytesPerClient = 0;
  for (let run = 0; run < runs; run++) {
    const messengers: Messenger[] = [];
    const agents: http.Agent[] = [];
    try {
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from({ length: clients }, async (_, i) => {
          // A device: its own connections (a browser opens up to six to one host).
          const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
          agents.push(agent);
          const name = `Class${run}x${i}`;
          const page = await get(agent, `${url}/?name=${name}`);
          if (page.status !== 200) throw new Error(`the chat page answered ${page.status}`);
          const assets = subresources(page.body.toString('utf8'));
          if (!assets.length) throw new Error('the chat page names no script or style sheet');
          const loaded = await Promise.all(assets.map((a) => get(agent, `${url}${a}`)));
          for (const [k, r] of loaded.entries()) if (r.status !== 200) throw new Error(`${assets[k]} answered ${r.status}`);
          const loadedAt = performance.now() - t0;
          const m = new Messenger({ name, storage: memoryStore(), connect: () => new WebSocket(wsUrl) as unknown as SocketLike, device: 'phone' });
          messengers.push(m);
          await m.start();
          return { loadedAt, readyAt: performance.now() - t0, bytes: page.wireBytes + loaded.reduce((n, r) => n + r.wireBytes, 0) };
        }),
      );
      allReadyMs.push(Math.max(...results.map((r) => r.readyAt)));
      allLoadedMs.push(Math.max(...results.map((r) => r.loadedAt)));
      medianClientMs.push(median(results.map((r) => r.readyAt)));
      bytesPerClient = median(results.map((r) => r.bytes));
    } catch (err) {
      failures.push(`run ${run + 1}: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      for (const m of messengers) m.stop();
      for (const a of agents) a.destroy();
    }
  }
  return { clients, runs, allReadyMs, allLoadedMs, medianAllReadyMs: allReadyMs.length ? median(allReadyMs) : Number.NaN, medianClientMs, bytesPerClient, failures };
}

/** One chat page alone in a fresh context, `runs` times: the page's own time from navigation to ready. */
export async function measureOnePage(url: string, runs: number): Promise<number[]> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const out: number[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        await page.goto(`${url}/?name=Alone${run}`);
        await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
        out.push(Number(await page.getAttribute('body', 'data-ready-ms')));
      } finally {
        await context.close();
      }
    }
  } finally {
    await browser.close();
  }
  return out;
}
