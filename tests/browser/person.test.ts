/**
 * People stay themselves: `/?name=Bob` in the same browser is the same Bob (keys, PIN, history)
 * after his tab was closed, two names are two people, and a second tab of Bob offers to take him
 * over and can be taken back. Real Chromium, one browser context = one browser's storage.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { fromB64, fromHex, newIdentity, safetyNumber, toB64 } from '../../shared/crypto.ts';
import { rawClient } from '../helpers/raw-client.ts';
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
  test("closing Bob's tab and opening /?name=Bob again in the same browser brings back the same Bob, with his PIN and his history, while Alice is another person", async () => {
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

describe('directory entries are checked in the tab', () => {
  test('when the relay offers another key for a PIN the tab already knows (a real 32-bit PIN collision), the tab keeps the first key and the chat says so', async () => {
    await withContext(async (ctx) => {
      const collision = JSON.parse(readFileSync(new URL('../fixtures/pin-collision.json', import.meta.url), 'utf8')) as {
        pin: string;
        first: { seedHex: string };
        second: { seedHex: string };
      };
      const first = newIdentity(fromHex(collision.first.seedHex));
      const second = newIdentity(fromHex(collision.second.seedHex));
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const carol = await rawClient(suite.app.wsUrl, { identity: first, name: 'Carol' });
      try {
        await alice.page.locator(`[data-testid="contact"][data-pin="${collision.pin}"]`).waitFor();
        // A relay that lies: it swaps Carol's stored key for another with the same PIN, and announces it.
        suite.app.store.db.prepare('UPDATE users SET pk = ? WHERE pin = ?').run(toB64(second.signPk), collision.pin);
        suite.app.store.clearCaches();
        (suite.app.relay as unknown as { queuePresence(pin: string): void }).queuePresence(collision.pin);
        await openDm(alice.page, collision.pin);
        const warning = alice.page.getByTestId('key-warning');
        await warning.waitFor();
        expect(await warning.getAttribute('data-code')).toBe('key_changed');
        expect(await warning.textContent()).toContain('keeps the key it saw first');
        // The safety number shown is still the one of the key first seen.
        await alice.page.getByTestId('safety').locator('summary').click();
        const aliceKey = (await suite.app.relay.directory()).find((d) => d.pin === alice.pin)!.pk;
        expect(await alice.page.getByTestId('safety-number').textContent()).toBe(safetyNumber(fromB64(aliceKey), first.signPk));
      } finally {
        carol.ws.terminate();
      }
    });
  });
});
