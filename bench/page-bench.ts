/**
 * Page weight and a classroom loading the chat page at once, in Debian's Chromium, against a
 * relay in its own process:
 *
 * - bytes on the wire: each page opened in a fresh Chromium profile (a real on-disk HTTP cache,
 *   launchPersistentContext), then opened again in a new tab of the same profile. The bytes are
 *   Chromium's own count (DevTools Network.loadingFinished encodedDataLength: headers and the
 *   compressed body as received) over every HTTP response of the load; WebSocket frames are the
 *   conversation, not the page, and are not counted.
 * - 30 at once: 30 fresh browser contexts (each an empty cache: 30 first loads), all navigated to
 *   the chat page at the same moment; the figure is the time from that moment until the last of
 *   them is ready (keys made, logged in, `body[data-ready]`). All 30 run in one Chromium on this
 *   machine's cores, so the figure includes 30 libsodium start-ups and key generations competing
 *   for two cores — each phone in a classroom has its own.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

/** `clients` fresh contexts load the chat page at once; `runs` times. */
export async function measureCrowd(url: string, clients: number, runs: number): Promise<CrowdFigures> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const allReadyMs: number[] = [];
  const medianClientMs: number[] = [];
  const failures: string[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const contexts = await Promise.all(Array.from({ length: clients }, () => browser.newContext()));
      try {
        const pages: Page[] = await Promise.all(contexts.map((c) => c.newPage()));
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
      } catch (err) {
        failures.push(`run ${run + 1}: ${(err as Error).message.split('\n')[0]}`);
      } finally {
        await Promise.all(contexts.map((c) => c.close()));
      }
    }
  } finally {
    await browser.close();
  }
  return { clients, runs, allReadyMs, medianAllReadyMs: allReadyMs.length ? median(allReadyMs) : Number.NaN, medianClientMs, failures };
}
