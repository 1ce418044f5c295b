/**
 * The attacker console in real Chromium (issue 12): the breach and export-grade scenes run from the
 * teacher panel, and their visible results on /attacker checked against the attacker API and the
 * bots' own messages — the counts, the opened texts, the end-to-end ones closed, the brute force's
 * progress, keys per second, time and outcome, and the messages the found key opens. The console
 * needs the token; a hostile display name stays text; the CSP lets the page start its own worker
 * and no other (another origin, blob:, data:). No page reports a CSP violation or an error.
 */
import { beforeEach, describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import type { AttackerView } from '../../server/lab/attacker.ts';
import { browserSuite, focusTab, watchProblems, withContext as withBrowserContext, type PageProblems } from '../helpers/browser.ts';
import { assetPath, knows, until, user } from '../helpers/relay.ts';
import { toB64 } from '../../shared/crypto.ts';
import { EXPORT_KDF, exportKeyPair } from '../../shared/export-grade.ts';

const TOKEN = 'test-admin-token';
/** 2^13 = 8,192 secrets: the real search in the real worker, done in about a second. */
const BITS = 13;
const suite = browserSuite({ exportGradeBits: BITS });

const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 800 } }, run);

async function lab<T>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${suite.app.url}/api/lab/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
}

async function open(ctx: BrowserContext, path: string): Promise<{ page: Page; problems: PageProblems }> {
  const page = await ctx.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${suite.app.url}${path}#token=${TOKEN}`);
  await page.locator('#status', { hasText: 'live' }).waitFor();
  return { page, problems };
}

async function runFromPanel(panel: Page, id: string): Promise<void> {
  await focusTab(panel);
  await panel.locator(`[data-testid="scenario"][data-id="${id}"] [data-testid="run"]:not([disabled])`).click();
  await panel.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
}

const count = (page: Page, key: string) => page.getByTestId(`count-${key}`).getAttribute('data-value');

describe('the attacker console', () => {
  beforeEach(async () => {
    await lab('reset', { confirm: 'reset' });
  });

  test("run from the teacher panel: the breach's loot and counts on the console are the API's, the opened texts are what the bots sent, the end-to-end ones stay closed; then the export-grade key is brute-forced live in the worker (progress, keys/s, time) and the messages it opens appear", async () => {
    await withContext(async (ctx) => {
      const panel = await open(ctx, '/teacher');
      const console_ = await open(ctx, '/attacker');
      expect(await console_.page.getByTestId('loot-empty').textContent()).toBe('No loot yet.');
      expect(await count(console_.page, 'opened')).toBe('0');

      await runFromPanel(panel.page, 'intercept-breached');
      await focusTab(console_.page);
      const view = await lab<AttackerView>('attacker');
      expect(view.counts.opened).toBeGreaterThanOrEqual(2);
      await console_.page.locator(`[data-testid="count-opened"][data-value="${view.counts.opened}"]`).waitFor();
      expect(await count(console_.page, 'people')).toBe(String(view.counts.people));
      expect(await count(console_.page, 'conversations')).toBe(String(view.counts.conversations));
      expect(await count(console_.page, 'closed')).toBe(String(view.counts.closed));
      expect(await console_.page.getByTestId('count-earliest').locator('dd').textContent()).toMatch(/^\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d$/);
      expect(await console_.page.getByTestId('loot-item').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.kind))).toEqual(['escrow key', 'archive copy']);
      const texts = await console_.page.getByTestId('opened-text').allTextContents();
      expect(texts.sort()).toEqual(view.opened.map((m) => m.text).sort());
      expect(texts).toContain('The source is my cousin at the ministry. Keep her name out of it.');
      expect(texts).not.toContain('Before the tap: my new address is 14 Mill Lane.');
      const closed = console_.page.locator('[data-testid="closed-item"][data-status="end-to-end"]');
      expect(await closed.count()).toBe(view.counts.endToEnd);
      expect(await closed.first().getByTestId('closed-reason').textContent()).toContain('End to end: no escrow field');
      // The shared envelope view, as the attacker's copy holds it.
      await console_.page.getByTestId('opened-item').first().getByTestId('envelope-details').locator('summary').click();
      expect(await console_.page.getByTestId('opened-item').first().getByTestId('wire-model').textContent()).toBe('e2e-escrow');

      // Export-grade: the console holds a public key to break, and nothing opens with it yet.
      const regulator = await open(ctx, '/regulator');
      await runFromPanel(panel.page, 'export-grade');
      // The regulator console names the key now in force, without a reload.
      await regulator.page.locator('#kid', { hasText: suite.app.regulator.exportGradeTarget()!.kid }).waitFor();
      await regulator.page.locator('[data-testid="audit"] li', { hasText: 'export-grade escrow key' }).first().waitFor();
      expect(regulator.problems.errors).toEqual([]);
      // The teacher panel's "in force" says the key is export-grade, with its size.
      await focusTab(panel.page);
      await panel.page.locator(`[data-testid="in-force"][data-export-grade="${BITS}"]`, { hasText: `export-grade: a ${BITS}-bit secret` }).waitFor();
      await focusTab(console_.page);
      const target = console_.page.getByTestId('target');
      await target.waitFor();
      const { targets } = await lab<AttackerView>('attacker');
      expect(await target.getAttribute('data-kid')).toBe(targets[0]!.kid);
      expect(await target.getAttribute('data-state')).toBe('idle');
      expect(await console_.page.getByTestId('opened-text').allTextContents()).not.toContain('The shipment leaves from dock 7 on Thursday.');
      // Every progress value the page draws while a search runs, recorded as it draws them.
      await console_.page.evaluate(() => {
        const seen: number[] = [];
        (window as unknown as { __progress: number[] }).__progress = seen;
        new MutationObserver(() => {
          const bar = document.querySelector<HTMLProgressElement>('[data-testid="target"][data-state="running"] [data-testid="brute-progress"]');
          if (bar && seen.at(-1) !== bar.value) seen.push(bar.value);
        }).observe(document.getElementById('brute-card')!, { childList: true, subtree: true, attributes: true });
      });
      await console_.page.getByTestId('brute-start').click();
      await console_.page.locator('[data-testid="brute-outcome"][data-state="found"]').waitFor({ timeout: 30_000 });
      await console_.page.getByTestId('brute-outcome').filter({ hasText: 'now in the loot' }).waitFor();
      const figures = console_.page.getByTestId('brute-figures');
      const tried = Number(await figures.getAttribute('data-tried'));
      expect(tried).toBeGreaterThan(0);
      expect(tried).toBeLessThanOrEqual(2 ** BITS);
      expect(Number(await figures.getAttribute('data-rate'))).toBeGreaterThan(0);
      expect(Number(await figures.getAttribute('data-ms'))).toBeGreaterThan(0);
      expect(await figures.textContent()).toMatch(/^[\d,]+ of 8,192 tried \([\d.]+ %\) · [\d,]+ keys\/s · [\d.]+ s$/);
      const progress = (await console_.page.evaluate(() => (window as unknown as { __progress: number[] }).__progress)).filter((v) => v > 0);
      expect(progress.every((v) => v <= tried)).toBe(true);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
      // The found key went through the server's check into the loot, and the messages sealed to it open.
      await console_.page.locator('[data-testid="opened-text"]', { hasText: 'The shipment leaves from dock 7 on Thursday.' }).waitFor();
      await console_.page.locator('[data-testid="opened-text"]', { hasText: 'Understood. Use the side gate, the code is 4471.' }).waitFor();
      await console_.page.locator('[data-testid="loot-item"][data-kind="broken export key"]').waitFor();
      // A key no secret of the space derives: the search runs to the end, the bar moving all the way.
      const stray = exportKeyPair(2 ** BITS + 7);
      suite.app.lab.attacker.leak({
        kind: 'export-grade public key',
        label: 'a key outside the space',
        scenario: 'the test',
        target: { kid: stray.kid, pk: toB64(stray.pk), bits: BITS, kdf: EXPORT_KDF },
      });
      const strayBox = console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"]`);
      await strayBox.waitFor();
      await console_.page.evaluate(() => {
        (window as unknown as { __progress: number[] }).__progress.length = 0;
      });
      await strayBox.getByTestId('brute-start').click();
      await console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"] [data-testid="brute-outcome"][data-state="exhausted"]`).waitFor({ timeout: 30_000 });
      expect(await console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"] [data-testid="brute-outcome"]`).textContent()).toBe(
        'No secret of the 8,192 derives this key.',
      );
      expect(await console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"] [data-testid="brute-figures"]`).getAttribute('data-tried')).toBe(String(2 ** BITS));
      expect(await console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"] [data-testid="brute-progress"]`).getAttribute('value')).toBe(String(2 ** BITS));
      expect(await console_.page.locator(`[data-testid="target"][data-kid="${stray.kid}"]`).getAttribute('data-broken')).toBe('false');
      // At least every 1/64 of the space, and never backwards: the bar moved while the search ran.
      const moving = (await console_.page.evaluate(() => (window as unknown as { __progress: number[] }).__progress)).filter((v) => v > 0);
      expect(moving.length).toBeGreaterThanOrEqual(8);
      expect(new Set(moving).size).toBe(moving.length);
      expect(moving).toEqual([...moving].sort((a, b) => a - b));
      const after = await lab<AttackerView>('attacker');
      expect(after.targets.map((t) => t.broken)).toEqual([true, false]);
      await console_.page.locator(`[data-testid="count-opened"][data-value="${after.counts.opened}"]`).waitFor();
      expect(await console_.page.getByTestId('atk-error').textContent()).toBe('');
      expect(panel.problems.errors).toEqual([]);
      expect(console_.problems.errors).toEqual([]);
    });
  }, 90_000);

  test('without the token the console shows nothing and asks for it; a wrong token is refused in words', async () => {
    await lab('scenarios/intercept-breached/run', {});
    await withContext(async (ctx) => {
      const page = await ctx.newPage();
      const problems = await watchProblems(page);
      await page.goto(`${suite.app.url}/attacker`);
      await page.getByTestId('token-form').waitFor();
      expect(await page.locator('#counts-card').isHidden()).toBe(true);
      expect(await page.getByTestId('opened-text').count()).toBe(0);
      await page.getByTestId('token-input').fill('a-wrong-token-of-16+');
      await page.getByTestId('token-input').press('Enter');
      await page.getByTestId('auth-error').filter({ hasText: 'Wrong admin token' }).waitFor();
      expect(await page.getByTestId('opened-text').count()).toBe(0);
      expect(await page.content()).not.toContain('my cousin at the ministry');
      expect(problems.errors.filter((e) => !e.includes('403'))).toEqual([]);
    });
  });

  test('a hostile display name in the stolen archive is shown as text on the console, never as markup', async () => {
    const hostile = '<img src=x onerror=window.__xss=1>';
    const mallory = await user(suite.app.wsUrl, hostile);
    try {
      const bob = await suite.app.lab.bot('Bob');
      await lab('room', { model: 'e2e' });
      const tap = await fetch(`${suite.app.url}/api/regulator/tap`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ tap: true, scope: 'all', announced: true }),
      });
      expect(tap.status).toBe(200);
      await knows(mallory, bob.pin);
      await until(() => mallory.m.policy?.tap === true, 'the tap reached Mallory');
      const sent = mallory.m.sendText([bob.pin], '<b>bold</b> <script>window.__xss=1</script>');
      await until(() => bob.m.messages.has(sent.id), 'Bob got it');
      await lab('scenarios/intercept-breached/run', {});
      await withContext(async (ctx) => {
        const { page, problems } = await open(ctx, '/attacker');
        const item = page.locator(`[data-testid="opened-item"][data-id="${sent.id}"]`);
        await item.waitFor();
        expect(await item.getByTestId('opened-route').textContent()).toContain(`${hostile} (${mallory.m.pin})`);
        expect(await item.getByTestId('opened-text').textContent()).toBe('<b>bold</b> <script>window.__xss=1</script>');
        expect(await page.locator('#app img, #app b, #app script').count()).toBe(0);
        expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
        expect(problems.errors).toEqual([]);
      });
    } finally {
      mallory.m.stop();
    }
  });

  test("the CSP lets the console start its own worker and no other: another origin's script, a blob: and a data: worker are refused", async () => {
    const res = await fetch(`${suite.app.url}/attacker`);
    expect(res.headers.get('content-security-policy')).toContain("worker-src 'self'");
    expect((await fetch(`${suite.app.url}${await assetPath('brute-worker.js')}`)).headers.get('content-security-policy')).toContain("script-src 'self' 'wasm-unsafe-eval'");
    await withContext(async (ctx) => {
      const { page, problems } = await open(ctx, '/attacker');
      const other = suite.app.url.replace('127.0.0.1', 'localhost');
      const outcomes = await page.evaluate(
        async (urls) => {
          const tryWorker = (url: string) =>
            new Promise<string>((resolve) => {
              try {
                const w = new Worker(url, { type: 'module' });
                w.onerror = () => resolve('error event');
                w.onmessage = () => resolve('ran');
                setTimeout(() => resolve('no answer'), 1500);
              } catch (err) {
                resolve(`threw ${(err as Error).name}`);
              }
            });
          const blob = URL.createObjectURL(new Blob(['postMessage(1)'], { type: 'text/javascript' }));
          return { other: await tryWorker(`${urls.other}${urls.worker}`), blob: await tryWorker(blob), data: await tryWorker('data:text/javascript,postMessage(1)') };
        },
        { other, worker: await assetPath('brute-worker.js') },
      );
      expect(outcomes.other).not.toBe('ran');
      expect(outcomes.blob).not.toBe('ran');
      expect(outcomes.data).not.toBe('ran');
      // The blob: and data: workers were refused by the CSP (the other origin by the same-origin rule first).
      expect(problems.errors.some((e) => e.startsWith('csp: worker-src blocked blob'))).toBe(true);
      expect(problems.errors.some((e) => e.startsWith('csp: worker-src blocked data'))).toBe(true);
    });
  });
});
