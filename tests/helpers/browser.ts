/**
 * Browser test helpers: Debian's Chromium through playwright-core, and small
 * helpers for opening chat tabs on a test relay.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';
import { startTestRelay } from './relay.ts';
import type { AppOptions } from '../../server/app.ts';

export const CHROMIUM = '/usr/bin/chromium';

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}. The browser tests need Debian's Chromium: apt-get install -y chromium`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** Problems a page reported: console errors (CSP violations show up there), uncaught exceptions, CSP events. */
export type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;

/** One test relay and one Chromium for a whole test file: started before its tests, closed after them. */
export function browserSuite(options: AppOptions = {}): { readonly app: TestRelay; readonly browser: Browser } {
  let app: TestRelay | undefined;
  let browser: Browser | undefined;
  beforeAll(async () => {
    app = await startTestRelay(options);
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await app?.close();
  });
  const started = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`${what} is used before the suite's beforeAll has run`);
    return value;
  };
  return {
    get app() {
      return started(app, 'the test relay');
    },
    get browser() {
      return started(browser, 'Chromium');
    },
  };
}

/** A fresh browser context for one test, closed after it. A missing element fails after 10 s (naming the locator), well before a test's own timeout. */
export async function withContext<T>(browser: Browser, options: BrowserContextOptions, run: (ctx: BrowserContext) => Promise<T>): Promise<T> {
  const ctx = await browser.newContext(options);
  ctx.setDefaultTimeout(10_000);
  try {
    return await run(ctx);
  } finally {
    await ctx.close();
  }
}

export interface PageProblems {
  errors: string[];
}

/** Record console errors, uncaught exceptions and `securitypolicyviolation` events of a page. */
export async function watchProblems(page: Page): Promise<PageProblems> {
  const problems: PageProblems = { errors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.errors.push(`pageerror: ${err.message}`));
  await page.exposeFunction('__reportCsp', (text: string) => problems.errors.push(`csp: ${text}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (ev) => {
      (window as unknown as { __reportCsp: (t: string) => void }).__reportCsp(`${ev.violatedDirective} blocked ${ev.blockedURI}`);
    });
  });
  return problems;
}

export interface ChatTab {
  page: Page;
  name: string;
  pin: string;
  /** From navigation start to keys made and logged in (the page's own performance.now()). */
  readyMs: number;
  problems: PageProblems;
}

/** Open `/?name=…` in a new tab of `context` and wait until it is logged in. */
export async function openChat(context: BrowserContext, baseUrl: string, name: string): Promise<ChatTab> {
  const page = await context.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${baseUrl}/?name=${encodeURIComponent(name)}`);
  return { page, name, problems, ...(await waitReady(page)) };
}

export async function waitReady(page: Page): Promise<{ pin: string; readyMs: number }> {
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  const pin = (await page.textContent('[data-testid="my-pin"]'))?.trim() ?? '';
  const readyMs = Number(await page.getAttribute('body', 'data-ready-ms'));
  return { pin, readyMs };
}

/**
 * Make `page` the foreground tab before acting in it, as a person would. Chromium throttles
 * animation frames in background tabs, and Playwright's "element is stable" check waits for them.
 */
export async function focusTab(page: Page): Promise<void> {
  await page.bringToFront();
}

/** Open the 1:1 chat with `pin` (waits for the contact to appear in the directory). */
export async function openDm(page: Page, pin: string): Promise<void> {
  await focusTab(page);
  await page.locator(`[data-testid="contact"][data-pin="${pin}"]`).click();
}

/** Type a message into the composer and press Enter. */
export async function typeAndSend(page: Page, text: string): Promise<void> {
  await focusTab(page);
  const composer = page.getByTestId('composer');
  await composer.fill(text);
  await composer.press('Enter');
}

/** The message element in this tab holding exactly `text`. */
export const messageWith = (page: Page, text: string) => page.locator('[data-testid="message"]', { has: page.locator('[data-testid="message-text"]', { hasText: text }) });

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
