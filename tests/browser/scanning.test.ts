/**
 * Lab part 2's insider and scanning scenes in real Chromium, run from the teacher panel: the
 * insider's hidden observer is missing from the panel's normal list and shown by the reveal (with
 * since when, how many envelopes and where it copies to), and the reveal is in the console's
 * audit log; client-side scanning announced on the chat page, a phrase added from the panel, a
 * person typing it in a chat tab reported on the regulator console — the message still end to end.
 */
import { beforeEach, describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { INSIDER_NAME } from '../../server/lab/insider.ts';
import { browserSuite, messageWith, openChat, openDm, typeAndSend, watchProblems, withContext as withBrowserContext } from '../helpers/browser.ts';
import { until } from '../helpers/relay.ts';

const TOKEN = 'test-admin-token';
const suite = browserSuite();
const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 900 } }, run);

async function openPanel(ctx: BrowserContext) {
  const page = await ctx.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${suite.app.url}/teacher#token=${TOKEN}`);
  await page.locator('#status', { hasText: 'live' }).waitFor();
  return { page, problems };
}
async function runScene(page: Page, id: string): Promise<void> {
  await page.locator(`[data-testid="scenario"][data-id="${id}"] [data-testid="run"]:not([disabled])`).click();
  await page.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
}
const fact = (page: Page, key: string) => page.locator(`[data-testid="fact"][data-key="${key}"]`).getAttribute('data-value');

describe('lab part 2 on the teacher panel', () => {
  beforeEach(async () => {
    const res = await fetch(`${suite.app.url}/api/lab/reset`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: '{"confirm":"reset"}',
    });
    expect(res.status).toBe(200);
  });

  test("the insider scene: its observer is not in the panel's list, the reveal shows it hidden with since, envelopes and sink, and the console's audit log has the reveal only", async () => {
    await withContext(async (ctx) => {
      const { page, problems } = await openPanel(ctx);
      await runScene(page, 'insider-tap');
      expect(await fact(page, 'copied by the hidden observer')).toBe('3');
      expect(await fact(page, 'audit entries since it was attached')).toBe('0');
      await page.locator('[data-testid="observer"]').first().waitFor();
      const listed = await page.getByTestId('observer').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.name));
      expect(listed).toContain('regulator tap (lawful-intercept handover)');
      expect(listed).not.toContain(INSIDER_NAME);
      expect(await page.getByTestId('revealed').isHidden()).toBe(true);

      // The console before the reveal: nothing about the copy.
      const console = await ctx.newPage();
      const consoleProblems = await watchProblems(console);
      await console.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await console.locator('[data-testid="audit-entry"]').first().waitFor();
      expect(await console.getByTestId('audit').textContent()).not.toContain('observers revealed');

      await page.bringToFront();
      await page.getByTestId('reveal-observers').click();
      const hidden = page.locator(`[data-testid="revealed-observer"][data-hidden="true"]`);
      await hidden.waitFor();
      expect(await hidden.getAttribute('data-name')).toBe(INSIDER_NAME);
      const envelopes = Number(await hidden.getAttribute('data-envelopes'));
      const relayCount = suite.app.relay.observerList().find((o) => o.name === INSIDER_NAME)?.envelopes;
      expect(envelopes).toBe(relayCount);
      expect(envelopes).toBeGreaterThanOrEqual(3);
      expect(await hidden.getByTestId('revealed-since').textContent()).toMatch(/since \d\d:\d\d:\d\d, \d+ envelopes handed to it/);
      expect(await hidden.getByTestId('revealed-sink').textContent()).toContain('unlisted recipient');
      expect(await page.getByTestId('notice').textContent()).toMatch(/1 hidden observer found/);

      await console.bringToFront();
      await console.locator('[data-testid="audit-entry"][data-action="observers revealed"]').waitFor();
      expect(await console.locator('[data-testid="audit-entry"][data-action="observers revealed"]').textContent()).toContain(INSIDER_NAME);
      expect(problems.errors).toEqual([]);
      expect(consoleProblems.errors).toEqual([]);
    });
  });

  test('client-side scanning: the scene reports its scanning bot on the console; a phrase added on the panel is reported when a chat tab types it, the tab announces scanning, and the console says the message is end to end', async () => {
    await withContext(async (ctx) => {
      const { page, problems } = await openPanel(ctx);
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      await page.bringToFront();
      await runScene(page, 'client-side-scanning');
      expect(await fact(page, 'reported')).toBe('1');
      expect(await fact(page, 'not reported (no scanner)')).toBe('1');
      await page.locator('[data-testid="scan-state"][data-on="true"]').waitFor();

      // The teacher adds an ordinary phrase: the list shows a hash, with the note kept in this tab.
      await page.getByTestId('scan-phrase').fill('Free the Press');
      await page.getByTestId('scan-add-button').click();
      const entry = page.locator('[data-testid="scan-entry"][data-n="2"]');
      await entry.waitFor();
      expect(await entry.getByTestId('scan-note').textContent()).toContain('"Free the Press"');
      const hash = (await entry.getAttribute('data-hash')) ?? '';
      expect(hash).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(JSON.stringify(suite.app.relay.getPolicy()).toLowerCase()).not.toContain('press');

      // The chat tab says scanning is on, and its person types the phrase.
      await alice.page.bringToFront();
      await alice.page.locator('[data-testid="scan-banner"]').waitFor();
      await until(() => (suite.app.relay.getPolicy().scan?.entries.length ?? 0) === 2, 'the list of two');
      await alice.page.locator('[data-testid="scan-banner"]', { hasText: '2 hashes' }).waitFor();
      await openDm(alice.page, bob.pin);
      await typeAndSend(alice.page, 'They want us silent. FREE the  press!');
      await openDm(bob.page, alice.pin);
      await messageWith(bob.page, 'They want us silent.').waitFor();

      const console = await ctx.newPage();
      const consoleProblems = await watchProblems(console);
      await console.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      const report = console.locator(`[data-testid="scan-report"][data-from="${alice.pin}"]`);
      await report.waitFor();
      expect(await report.getAttribute('data-n')).toBe('2');
      expect(await report.getByTestId('scan-report-from').textContent()).toContain(`Alice (${alice.pin})`);
      expect(await report.getByTestId('scan-report-to').textContent()).toContain(`Bob (${bob.pin})`);
      expect(await report.getByTestId('scan-report-message').textContent()).toContain('end to end: this console cannot read it');
      expect(await console.getByTestId('scan-reports').textContent()).not.toMatch(/silent|press/i);
      // The scene's own report: Nadia, and not the bot without the scanner.
      await console.locator('[data-testid="scan-report"]', { hasText: 'Nadia' }).waitFor();
      expect(await console.locator('[data-testid="scan-report"]', { hasText: 'Rogue' }).count()).toBe(0);
      // The regulator's key does not open the message: its intercept is end to end.
      const intercept = suite.app.regulator.recent(50).find((i) => i.env.id === (suite.app.lab.scanner.reports().find((r) => r.from.pin === alice.pin)?.id ?? ''));
      expect(intercept?.status).toBe('end-to-end');

      // Not announced: the chat tab's notice goes (the list still comes, and the tab still scans).
      await page.bringToFront();
      await page.getByTestId('scan-toggle').click(); // off
      await page.locator('[data-testid="scan-state"][data-on="false"]').waitFor();
      await page.getByTestId('scan-announced').uncheck();
      await page.getByTestId('scan-toggle').click(); // on, silent
      await page.locator('[data-testid="scan-state"][data-on="true"]').waitFor();
      await alice.page.bringToFront();
      await alice.page.locator('[data-testid="scan-banner"]').waitFor({ state: 'detached' });
      expect(suite.app.relay.getPolicy().scan?.announced).toBe(false);
      for (const p of [problems, alice.problems, bob.problems, consoleProblems]) expect(p.errors).toEqual([]);
    });
  });
});
