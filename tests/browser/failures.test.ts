/**
 * The ways a back door fails, in real Chromium (issue 12): the forged escrow field, pre-encryption
 * and the swapped escrow key, each run from the teacher panel, with the visible results checked —
 * the regulator console's honest labels, the panel's fingerprints, and a chat tab that pinned the
 * regulator key's fingerprint warning in plain words and sending only when the person chooses.
 */
import { beforeEach, describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { keysOf } from '../../shared/protocol.ts';
import { browserSuite, focusTab, messageWith, openChat, openDm, typeAndSend, watchProblems, withContext as withBrowserContext, type PageProblems } from '../helpers/browser.ts';
import { until } from '../helpers/relay.ts';

const TOKEN = 'test-admin-token';
const suite = browserSuite();
const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 800 } }, run);

async function openPanel(ctx: BrowserContext): Promise<{ page: Page; problems: PageProblems }> {
  const page = await ctx.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${suite.app.url}/teacher#token=${TOKEN}`);
  await page.locator('#status', { hasText: 'live' }).waitFor();
  return { page, problems };
}

/** Click a scene's Run button on the panel and wait for its result card. */
async function runScene(panel: Page, id: string): Promise<void> {
  await focusTab(panel);
  await panel.locator(`[data-testid="scenario"][data-id="${id}"] [data-testid="run"]:not([disabled])`).click();
  await panel.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
}

const fact = async (panel: Page, key: string) => panel.locator(`[data-testid="fact"][data-key="${key}"]`).getAttribute('data-value');

async function openConsole(ctx: BrowserContext): Promise<{ page: Page; problems: PageProblems }> {
  const page = await ctx.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
  await page.locator('#status', { hasText: 'live' }).waitFor();
  return { page, problems };
}

const pinOf = (name: string) => suite.app.lab.people().find((p) => p.name === name)?.pin ?? '';

describe('the failures, from the teacher panel', () => {
  beforeEach(() => {
    suite.app.lab.reset('the failures browser test');
  });

  test('forged escrow field and pre-encryption: the panel shows 0 opened of what the relay accepted; the console labels the forged fields and shows the pre-encrypted text as noise', async () => {
    await withContext(async (ctx) => {
      const { page: panel, problems } = await openPanel(ctx);
      await runScene(panel, 'forged-escrow');
      expect(await fact(panel, 'accepted by the relay')).toBe('3');
      expect(await fact(panel, 'opened by the regulator')).toBe('0');
      expect(await fact(panel, 'read by Trudy')).toBe('3');
      await runScene(panel, 'pre-encryption');
      expect(await fact(panel, 'envelope opened by the regulator')).toBe('yes');
      expect(await fact(panel, 'regulator read the text')).toBe('no');
      expect(await fact(panel, 'Frank read the text')).toBe('yes');

      const { page: console_, problems: consoleProblems } = await openConsole(ctx);
      const archived = suite.app.regulator.archived(0, 1000);
      const forged = archived.filter((l) => l.env.from === pinOf('Mallory'));
      expect(forged).toHaveLength(3);
      for (const line of forged) {
        const item = console_.locator(`[data-testid="intercept"][data-id="${line.env.id}"]`);
        await item.waitFor();
        expect(await item.getAttribute('data-code')).toBe('escrow_does_not_open');
        expect(await item.getByTestId('intercept-reason').textContent()).toContain("names the regulator's key but does not open with it: forged or corrupted");
      }
      const pre = archived.find((l) => l.env.from === pinOf('Erin'))!;
      const preItem = console_.locator(`[data-testid="intercept"][data-id="${pre.env.id}"]`);
      await preItem.waitFor();
      const shown = (await preItem.getByTestId('intercept-text').textContent()) ?? '';
      expect(shown).toMatch(/^sbx1:/);
      expect(shown).not.toContain('north gate');
      expect(problems.errors).toEqual([]);
      expect(consoleProblems.errors).toEqual([]);
    });
  }, 90_000);

  test('swapped escrow key: the panel shows the regulator key\'s fingerprint and then the swapped one; the console says "sealed to another escrow key"; a chat tab that pinned the fingerprint warns in plain words and sends only when the person chooses', async () => {
    await withContext(async (ctx) => {
      const { page: panel, problems } = await openPanel(ctx);
      const fingerprint = (await panel.getByTestId('regulator-fingerprint').textContent()) ?? '';
      expect(fingerprint).toMatch(/^([0-9A-F]{4} ){9}[0-9A-F]{4}$/);
      expect(await panel.getByTestId('escrow-keys').getAttribute('data-swapped')).toBe('false');

      // Alice pins the fingerprint she read off the board (typed in lower case, without spaces).
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      await focusTab(alice.page);
      await alice.page.getByTestId('escrow-pin-summary').click();
      await alice.page.getByTestId('escrow-pin-input').fill(fingerprint.replace(/ /g, '').toLowerCase());
      await alice.page.getByTestId('escrow-pin-save').click();
      expect(await alice.page.getByTestId('escrow-pin-current').textContent()).toContain(fingerprint);
      expect(await alice.page.getByTestId('escrow-pin').getAttribute('data-pinned')).toBe('true');

      await runScene(panel, 'swapped-escrow-key');
      expect(await fact(panel, 'opened by the swapped key')).toBe('2');
      expect(await fact(panel, 'opened by the regulator')).toBe('0');
      expect(await fact(panel, 'Grace (pinned) refused to send')).toBe('yes');
      await panel.locator('[data-testid="escrow-keys"][data-swapped="true"]').waitFor();
      const announced = (await fact(panel, 'announced key fingerprint')) ?? '';
      expect(announced).not.toBe(fingerprint);
      expect(await panel.getByTestId('announced-key').textContent()).toContain(announced);
      expect(await panel.getByTestId('regulator-fingerprint').textContent()).toBe(fingerprint);

      // The console: what was sent under the swap is sealed to another key.
      const swappedKid = suite.app.relay.getPolicy().escrowKid!;
      const underSwap = suite.app.regulator.archived(0, 1000).filter((l) => {
        const keys = keysOf(l.env);
        return keys.model === 'e2e-escrow' && keys.escrow.kid === swappedKid;
      });
      expect(underSwap.length).toBeGreaterThanOrEqual(2);
      const { page: console_, problems: consoleProblems } = await openConsole(ctx);
      for (const line of underSwap) {
        const item = console_.locator(`[data-testid="intercept"][data-id="${line.env.id}"]`);
        await item.waitFor();
        expect(await item.getAttribute('data-code')).toBe('escrow_kid_unknown');
        expect(await item.getByTestId('intercept-reason').textContent()).toContain('sealed to another escrow key');
      }

      // Alice's tab: the banner says the key is not the pinned one; sending is held for her choice.
      await focusTab(alice.page);
      await alice.page.locator('[data-testid="escrow-pin-status"][data-status="differs"]').waitFor();
      expect(await alice.page.getByTestId('escrow-pin-status').textContent()).toContain(announced);
      await openDm(alice.page, pinOf('Bob'));
      const text = 'Is this still only for the regulator?';
      await typeAndSend(alice.page, text);
      const warning = alice.page.getByTestId('escrow-warning');
      await warning.waitFor();
      expect(await warning.getAttribute('role')).toBe('alert');
      expect(await warning.textContent()).toContain("Not sent: this is not the regulator's key.");
      expect(await warning.textContent()).toContain('whoever holds it could read this message, and the regulator could not');
      expect(await alice.page.getByTestId('escrow-announced').textContent()).toBe(announced);
      expect(await alice.page.getByTestId('escrow-pinned').textContent()).toBe(fingerprint);
      expect(await messageWith(alice.page, text).count()).toBe(0);
      expect(await alice.page.getByTestId('composer').inputValue()).toBe(text);
      expect(suite.app.regulator.archived(0, 1000).some((l) => l.env.from === alice.pin)).toBe(false);
      // Enter again does not slip it through while the choice is open.
      await alice.page.getByTestId('composer').press('Enter');
      expect(await messageWith(alice.page, text).count()).toBe(0);

      // "Don't send": nothing goes; the text stays in the box.
      await alice.page.getByTestId('escrow-dont-send').click();
      expect(await alice.page.getByTestId('escrow-warning').count()).toBe(0);
      expect(await alice.page.getByTestId('composer').inputValue()).toBe(text);
      expect(suite.app.regulator.archived(0, 1000).some((l) => l.env.from === alice.pin)).toBe(false);

      // She chooses to send it anyway: it goes, sealed to the announced key.
      await alice.page.getByTestId('composer').press('Enter');
      await alice.page.getByTestId('escrow-send-anyway').click();
      await messageWith(alice.page, text).waitFor();
      await until(() => suite.app.regulator.archived(0, 1000).some((l) => l.env.from === alice.pin), "Alice's message archived");
      const sent = suite.app.regulator.archived(0, 1000).find((l) => l.env.from === alice.pin)!;
      const keys = keysOf(sent.env);
      expect(keys.model === 'e2e-escrow' && keys.escrow.kid).toBe(swappedKid);

      // The next scene puts the regulator's key back: the panel and Alice's banner say so.
      await runScene(panel, 'tap-on');
      await panel.locator('[data-testid="escrow-keys"][data-swapped="false"]').waitFor();
      await focusTab(alice.page);
      await alice.page.locator('[data-testid="escrow-pin-status"][data-status="matches"]').waitFor();
      expect(problems.errors).toEqual([]);
      expect(consoleProblems.errors).toEqual([]);
      expect(alice.problems.errors).toEqual([]);
    });
  }, 90_000);
});
