/**
 * The browser figures, in Debian's Chromium through playwright-core, against a
 * relay in its own process with its default limits:
 *
 * - ready: from navigation start to the tab being ready (keys made and logged in), as
 *   the chat page itself records it (`body[data-ready-ms]`, its own performance.now()),
 *   for each tab opened; also the same span timed from outside (page.goto to ready).
 * - tab to tab: Alice and Bob, two tabs of one browser with the 1:1 chat open; one
 *   presses Enter in the composer, and the time runs until the text is in the other tab's
 *   DOM (a capture-phase keydown listener in the sender, a MutationObserver in the
 *   receiver, both on performance.timeOrigin + performance.now(), the same clock).
 *   Messages alternate direction; the first two are a warm-up and not counted.
 */
import { existsSync } from 'node:fs';
import { chromium, type Page } from 'playwright-core';
import { median, percentile } from './common.ts';

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export interface BrowserFigures {
  /** Median over the tabs opened, from navigation start to ready (page's own clock). */
  readyMs: number;
  readyMsPerTab: { name: string; readyMs: number; keysMs: number | null; outsideMs: number }[];
  tabToTabMedianMs: number;
  tabToTabP95Ms: number;
  tabToTabMinMs: number;
  tabToTabMaxMs: number;
  samples: number;
  visibility: string[];
  chromium: string;
}

async function openTab(page: Page, url: string, name: string): Promise<{ name: string; pin: string; readyMs: number; keysMs: number | null; outsideMs: number }> {
  const t0 = performance.now();
  await page.goto(`${url}/?name=${encodeURIComponent(name)}`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  const outsideMs = performance.now() - t0;
  const readyMs = Number(await page.getAttribute('body', 'data-ready-ms'));
  const keys = await page.getAttribute('body', 'data-keys-ms');
  const pin = ((await page.textContent('[data-testid="my-pin"]')) ?? '').trim();
  if (!/^[0-9A-F]{8}$/.test(pin)) throw new Error(`${name}'s tab shows no PIN (got "${pin}")`);
  return { name, pin, readyMs, keysMs: keys === null ? null : Number(keys), outsideMs };
}

/*
 * The in-page scripts are passed as strings: tsx compiles this file with esbuild's keepNames,
 * which would wrap the functions in the page in a `__name` helper the page does not have.
 */

/** Install the timing hooks: when Enter goes down in a tab, and when a given text shows up in it. */
const HOOKS = `(() => {
  window.__seen = {};
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) window.__enterAt = performance.timeOrigin + performance.now();
  }, true);
})()`;

/** In the receiving tab: a promise of the time `text` first shows up in the DOM. */
const watchFor = (text: string) => `(() => {
  const want = ${JSON.stringify(text)};
  window.__seen[want] = new Promise((resolve, reject) => {
    const observer = new MutationObserver(() => {
      if ([...document.querySelectorAll('[data-testid="message-text"]')].some((n) => n.textContent === want)) {
        observer.disconnect();
        resolve(performance.timeOrigin + performance.now());
      }
    });
    observer.observe(document.body, { childList: true, subtree: true, characterData: true });
    setTimeout(() => reject(new Error('message not shown within 10 s: ' + want)), 10000);
  });
})()`;

async function oneMessage(from: Page, to: Page, text: string): Promise<number> {
  await to.evaluate(watchFor(text));
  const composer = from.getByTestId('composer');
  await composer.fill(text);
  await composer.press('Enter');
  const seenAt = (await to.evaluate(`window.__seen[${JSON.stringify(text)}]`)) as number;
  const enterAt = (await from.evaluate('window.__enterAt')) as number;
  return seenAt - enterAt;
}

export async function runBrowserBench(options: { messages: number; startRelay: () => Promise<{ url: string; stop: () => Promise<void> }> }): Promise<BrowserFigures> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium), or run with --skip-browser`);
  const relay = await options.startRelay();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const context = await browser.newContext();
    context.setDefaultTimeout(15_000);
    const alicePage = await context.newPage();
    const bobPage = await context.newPage();
    const alice = await openTab(alicePage, relay.url, 'Alice');
    const bob = await openTab(bobPage, relay.url, 'Bob');
    // Two more fresh tabs, for a steadier "ready" figure (the first tab also pays for the first fetch of the bundle).
    const extra = [];
    for (const name of ['Carol', 'Dave']) {
      const page = await context.newPage();
      extra.push(await openTab(page, relay.url, name));
      await page.close();
    }
    const tabs = [alice, bob, ...extra];
    process.stdout.write(`  ready (navigation start → keys made and logged in): ${tabs.map((t) => `${t.name} ${t.readyMs} ms`).join(', ')}\n`);

    // Each opens the 1:1 chat with the other.
    await alicePage.locator(`[data-testid="contact"][data-pin="${bob.pin}"]`).click();
    await bobPage.locator(`[data-testid="contact"][data-pin="${alice.pin}"]`).click();
    await alicePage.evaluate(HOOKS);
    await bobPage.evaluate(HOOKS);

    const latencies: number[] = [];
    const warmup = 2;
    for (let i = 0; i < options.messages + warmup; i++) {
      const [from, to, who] = i % 2 ? [bobPage, alicePage, 'Bob'] : [alicePage, bobPage, 'Alice'];
      const ms = await oneMessage(from, to, `tab to tab ${i} from ${who}`);
      if (i >= warmup) latencies.push(ms);
    }
    const visibility = (await Promise.all([alicePage, bobPage].map((p) => p.evaluate('document.visibilityState')))) as string[];
    const sorted = [...latencies].sort((a, b) => a - b);
    const figures: BrowserFigures = {
      readyMs: median(tabs.map((t) => t.readyMs)),
      readyMsPerTab: tabs.map(({ name, readyMs, keysMs, outsideMs }) => ({ name, readyMs, keysMs, outsideMs })),
      tabToTabMedianMs: median(latencies),
      tabToTabP95Ms: percentile(sorted, 95),
      tabToTabMinMs: sorted[0] ?? Number.NaN,
      tabToTabMaxMs: sorted[sorted.length - 1] ?? Number.NaN,
      samples: latencies.length,
      visibility,
      chromium: browser.version(),
    };
    process.stdout.write(
      `  tab to tab (Enter → text in the other tab), ${latencies.length} messages: median ${figures.tabToTabMedianMs.toFixed(1)} ms, ` +
        `p95 ${figures.tabToTabP95Ms.toFixed(1)} ms, max ${figures.tabToTabMaxMs.toFixed(1)} ms (tabs ${visibility.join('/')})\n`,
    );
    await context.close();
    return figures;
  } finally {
    await browser.close();
    await relay.stop();
  }
}
