/**
 * People stay themselves: `/?name=Bob` in the same browser is the same Bob (keys, PIN, history)
 * after his tab was closed, two names are two people, and a second tab of Bob offers to take him
 * over and can be taken back. Real Chromium, one browser context = one browser's storage.
 */
import { describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { browserSuite, focusTab, messageWith, openChat, openDm, typeAndSend, waitReady, withContext as withBrowserContext } from '../helpers/browser.ts';

const suite = browserSuite();
const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 720 } }, run);

async function openRaw(ctx: BrowserContext, name: string): Promise<Page> {
  const page = await ctx.newPage();
  await page.goto(`${suite.app.url}/?name=${encodeURIComponent(name)}`);
  return page;
}

describe('people stay themselves', () => {
  test('closing Bob\'s tab and opening /?name=Bob again in the same browser brings back the same Bob, with his PIN and his history, while Alice is another person', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      expect(bob.pin).not.toBe(alice.pin);
      await openDm(alice.page, bob.pin);
      await typeAndSend(alice.page, 'see you at the station');
      await focusTab(bob.page);
      await bob.page.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
      await messageWith(bob.page, 'see you at the station').waitFor();
      await bob.page.close();

      const again = await openRaw(ctx, 'Bob');
      const { pin } = await waitReady(again);
      expect(pin).toBe(bob.pin);
      await again.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
      await messageWith(again, 'see you at the station').waitFor();
      // The relay still knows him as the same person: Alice's next message reaches this tab.
      await typeAndSend(alice.page, 'and bring the map');
      await messageWith(again, 'and bring the map').waitFor();
    });
  });

  test('a second tab of the same person says so and offers "use here"; using it moves Bob there, and the first tab can take him back with his history', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const first = await openChat(ctx, suite.app.url, 'Bob');
      const second = await openRaw(ctx, 'Bob');
      await second.getByTestId('elsewhere').waitFor();
      expect(await second.getByTestId('elsewhere').textContent()).toContain('Bob is already open in another tab');
      expect(await first.page.getAttribute('body', 'data-ready')).toBe('true');

      await focusTab(second);
      await second.getByTestId('use-here').click();
      const moved = await waitReady(second);
      expect(moved.pin).toBe(first.pin);
      await first.page.getByTestId('elsewhere').waitFor();
      expect(await first.page.getByTestId('elsewhere').textContent()).toContain('Bob is now open in another tab');

      // Messages now reach the second tab.
      await openDm(alice.page, first.pin);
      await typeAndSend(alice.page, 'are you there?');
      await focusTab(second);
      await second.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
      await messageWith(second, 'are you there?').waitFor();

      // The first tab takes Bob back, history included; the second steps aside.
      await focusTab(first.page);
      await first.page.getByTestId('use-here').click();
      const back = await waitReady(first.page);
      expect(back.pin).toBe(first.pin);
      await second.getByTestId('elsewhere').waitFor();
      await first.page.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
      await messageWith(first.page, 'are you there?').waitFor();
      await typeAndSend(alice.page, 'welcome back');
      await messageWith(first.page, 'welcome back').waitFor();
    });
  });
});
