/**
 * The chat page, the wire panel and the relay view in real Chromium, against a
 * real relay on 127.0.0.1, port 0. Each tab is a page of one browser context,
 * so they share one localStorage; each name is its own person (client/ui/person.ts).
 */
import { describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { MAX_TEXT_CHARS, type Envelope } from '../../shared/protocol.ts';
import { CSP } from '../../server/http.ts';
import { fromB64 } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { rawClient } from '../helpers/raw-client.ts';
import { until } from '../helpers/relay.ts';

import {
  browserSuite,
  focusTab,
  median,
  messageWith,
  openChat,
  openDm,
  typeAndSend,
  waitReady,
  watchProblems,
  type ChatTab,
  withContext as withBrowserContext,
} from '../helpers/browser.ts';

const suite = browserSuite();

const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 720 } }, run);

/** The envelopes the relay handles, captured in-process from its observer interface. */
function captureEnvelopes(): { envelopes: Envelope[]; stop: () => void } {
  const envelopes: Envelope[] = [];
  const stop = suite.app.relay.observe('test: envelope capture', (event) => {
    if (event.kind === 'envelope') envelopes.push(event.env);
  });
  return { envelopes, stop };
}

const hexOf = (b64: string) => Buffer.from(b64, 'base64').toString('hex');
const stateOf = (page: Page, text: string) => messageWith(page, text).getByTestId('message-state');

describe('chat page', () => {
  test('two tabs are two people: Alice to Bob and back, Bob sees it, Alice sees D then R, and a reload keeps her PIN', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      console.log(`[figures] tab ready (keys made + logged in), from navigation start: Alice ${alice.readyMs} ms, Bob ${bob.readyMs} ms`);
      expect(alice.pin).toMatch(/^[0-9A-F]{8}$/);
      expect(bob.pin).toMatch(/^[0-9A-F]{8}$/);
      expect(bob.pin).not.toBe(alice.pin);

      // Alice picks Bob from the directory, types, presses Enter.
      await openDm(alice.page, bob.pin);
      const first = 'Hi Bob, this is Alice';
      await typeAndSend(alice.page, first);
      await messageWith(alice.page, first).waitFor();

      // Bob's tab has the message (unread in his chat list) and Alice sees D: delivered, not yet read.
      await bob.page.locator('[data-testid="chat-item"]', { hasText: 'Alice' }).getByTestId('unread').waitFor();
      await stateOf(alice.page, first).and(alice.page.locator('[data-state="delivered"]')).waitFor();
      expect(await stateOf(alice.page, first).locator('b').textContent()).toBe('D');
      expect(await stateOf(alice.page, first).getAttribute('data-state')).toBe('delivered');

      // Bob opens the chat: his tab shows the text, and Alice's tick turns to R.
      await focusTab(bob.page);
      await bob.page.locator('[data-testid="chat-item"]', { hasText: 'Alice' }).click();
      await messageWith(bob.page, first).waitFor();
      await stateOf(alice.page, first).and(alice.page.locator('[data-state="read"]')).waitFor();
      expect(await stateOf(alice.page, first).locator('b').textContent()).toBe('R');

      // Bob replies; Alice has the chat open and sees it.
      await typeAndSend(bob.page, 'Hi Alice, got it');
      await messageWith(alice.page, 'Hi Alice, got it').waitFor();
      expect(await messageWith(alice.page, 'Hi Alice, got it').getAttribute('data-direction')).toBe('in');

      // Tab-to-tab latency: Enter in one tab to the text in the other tab's DOM, both on the same clock.
      for (const tab of [alice, bob]) {
        await tab.page.evaluate(() => {
          const w = window as unknown as { __enterAt?: number; __seen: Record<string, number> };
          w.__seen = {};
          document.addEventListener(
            'keydown',
            (ev) => {
              if (ev.key === 'Enter' && !ev.shiftKey) w.__enterAt = performance.timeOrigin + performance.now();
            },
            true,
          );
        });
      }
      const latencies: number[] = [];
      for (let i = 0; i < 10; i++) {
        const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
        const text = `latency probe ${i} from ${from.name}`;
        await to.page.evaluate((want) => {
          const w = window as unknown as { __seen: Record<string, number> };
          const found = () => [...document.querySelectorAll('[data-testid="message-text"]')].some((n) => n.textContent === want);
          const obs = new MutationObserver(() => {
            if (found()) {
              w.__seen[want] = performance.timeOrigin + performance.now();
              obs.disconnect();
            }
          });
          obs.observe(document.body, { childList: true, subtree: true, characterData: true });
        }, text);
        await typeAndSend(from.page, text);
        await to.page.waitForFunction((want) => (window as unknown as { __seen: Record<string, number> }).__seen[want] !== undefined, text);
        const enterAt = await from.page.evaluate(() => (window as unknown as { __enterAt: number }).__enterAt);
        const seenAt = await to.page.evaluate((want) => (window as unknown as { __seen: Record<string, number> }).__seen[want]!, text);
        latencies.push(seenAt - enterAt);
      }
      console.log(
        `[figures] tab-to-tab latency, Enter to text in the other tab, ${latencies.length} messages: median ${median(latencies).toFixed(1)} ms, ` +
          `min ${Math.min(...latencies).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`,
      );
      expect(latencies).toHaveLength(10);

      // A reload keeps the identity (localStorage, by name) and the conversation.
      await alice.page.reload();
      const again = await waitReady(alice.page);
      console.log(`[figures] Alice's tab ready again after a reload: ${again.readyMs} ms`);
      expect(again.pin).toBe(alice.pin);
      await messageWith(alice.page, first).waitFor();
      expect(alice.problems.errors).toEqual([]);
      expect(bob.problems.errors).toEqual([]);
    });
  });

  test("the wire panel and the relay view show the envelope id and its ciphertext, and never the plaintext, not even in the relay view's WebSocket frames", async () => {
    await withContext(async (ctx) => {
      const relayPage = await ctx.newPage();
      const frames: string[] = [];
      relayPage.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(typeof f.payload === 'string' ? f.payload : f.payload.toString('utf8'))));
      await relayPage.goto(`${suite.app.url}/relay`);
      await relayPage.locator('#status', { hasText: 'live' }).waitFor();

      const dana = await openChat(ctx, suite.app.url, 'Dana');
      const eve = await openChat(ctx, suite.app.url, 'Evan');
      const capture = captureEnvelopes();
      const secret = `meet at the old mill at ${Math.random().toString(36).slice(2, 10)}`;
      try {
        await openDm(dana.page, eve.pin);
        await typeAndSend(dana.page, secret);
        await focusTab(eve.page);
        await eve.page.locator('[data-testid="chat-item"]', { hasText: 'Dana' }).click();
        await messageWith(eve.page, secret).waitFor();
      } finally {
        capture.stop();
      }
      const env = capture.envelopes.find((e) => e.from === dana.pin);
      expect(env, "the relay handled Dana's envelope").toBeDefined();
      const cipherHex = hexOf(env!.body);
      const prefix = cipherHex.slice(0, 32);

      // The relay view: the row for this envelope, with its id and ciphertext, never the text.
      const row = relayPage.locator(`[data-testid="traffic-row"][data-id="${env!.id}"]`);
      await row.waitFor();
      const rowText = await row.innerText();
      expect(rowText).toContain(env!.id);
      expect(rowText).toContain(prefix);
      expect(rowText).toContain('Dana');
      await focusTab(relayPage);
      await row.getByRole('button', { name: /expand/ }).click();
      expect(await row.getByTestId('ciphertext').innerText()).toContain(cipherHex);
      expect(await relayPage.locator('body').textContent()).not.toContain(secret);
      expect(await relayPage.content()).not.toContain(secret);

      // The relay view's socket carried the envelope (its id) but never the plaintext.
      expect(frames.some((f) => f.includes(env!.id))).toBe(true);
      expect(frames.filter((f) => f.includes(secret))).toEqual([]);

      // Both tabs' wire panels: the envelope's header and ciphertext, never the text.
      for (const tab of [dana, eve]) {
        await tab.page.locator(`[data-testid="wire-record"][data-id="${env!.id}"]`).waitFor();
        const panel = tab.page.getByTestId('wire-panel');
        const text = await panel.innerText();
        expect(text).toContain(env!.id);
        expect(text).toContain(prefix);
        expect(text).toContain(hexOf(env!.nonce));
        expect(await panel.textContent()).not.toContain(secret);
        expect(await panel.innerHTML()).not.toContain(secret);
      }
      // The sender's record says it went out; the recipient's that it came in.
      expect(await dana.page.locator(`[data-testid="wire-record"][data-id="${env!.id}"]`).getAttribute('data-direction')).toBe('out');
      expect(await eve.page.locator(`[data-testid="wire-record"][data-id="${env!.id}"]`).getAttribute('data-direction')).toBe('in');
    });
  });

  test('a group of three: Alice makes a group with Bob and Carol, both get it under its name, and Alice sees R 2/2 once both read it', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      const carol = await openChat(ctx, suite.app.url, 'Carol');
      const group = 'Book club';

      await focusTab(alice.page);
      await alice.page.getByTestId('new-group').locator('summary').click();
      await alice.page.getByTestId('group-name').fill(group);
      for (const pin of [bob.pin, carol.pin]) await alice.page.locator(`[data-testid="group-member"][value="${pin}"]`).check();
      await alice.page.getByTestId('create-group').click();
      expect(await alice.page.getByTestId('conv-title').textContent()).toBe(group);
      const hello = 'Welcome to the book club';
      await typeAndSend(alice.page, hello);

      for (const tab of [bob, carol]) {
        const item = tab.page.locator('[data-testid="chat-item"]', { hasText: group });
        await item.waitFor();
        await focusTab(tab.page);
        await item.click();
        expect(await tab.page.getByTestId('conv-title').textContent()).toBe(group);
        const msg = messageWith(tab.page, hello);
        await msg.waitFor();
        // The sender line carries the PIN as well as the name: two people may pick the same name.
        expect(await msg.getByTestId('sender').textContent()).toBe(`Alice ${alice.pin}`);
        // The group note names who made the group and who is in it.
        expect(await tab.page.getByTestId('group-note').first().textContent()).toContain(`Alice (${alice.pin}) made the group "${group}"`);
        expect(await msg.getByTestId('readers').textContent()).toMatch(/Alice, Bob and Carol \(end-to-end\)|Alice, Carol and Bob \(end-to-end\)/);
      }
      await stateOf(alice.page, hello).and(alice.page.locator('[data-state="read"]')).waitFor();
      expect(await stateOf(alice.page, hello).textContent()).toContain('R 2/2');

      // Carol answers in the group: Alice and Bob both get it, in the same group.
      await typeAndSend(carol.page, 'Count me in');
      await messageWith(alice.page, 'Count me in').waitFor();
      await messageWith(bob.page, 'Count me in').waitFor();
      expect(await alice.page.getByTestId('conv-title').textContent()).toBe(group);
    });
  });

  test('a message from an outsider naming a group is shown apart, flagged in plain words with her PIN, never in the group thread, and cannot be answered there', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      await focusTab(alice.page);
      await alice.page.getByTestId('new-group').locator('summary').click();
      await alice.page.getByTestId('group-name').fill('Quiet room');
      await alice.page.locator(`[data-testid="group-member"][value="${bob.pin}"]`).check();
      await alice.page.getByTestId('create-group').click();
      const groupId = (await alice.page.locator('[data-testid="chat-item"].active').getAttribute('data-chat')) ?? '';
      expect(groupId).toMatch(/^g-[0-9a-f]{16}$/);

      // Mallory, who calls herself Alice, sends to Bob with the group's (public) conv id and name.
      const mallory = await rawClient(suite.app.wsUrl, { name: 'Alice' });
      try {
        const entries = () => mallory.frames.flatMap((f) => (f.type === 'welcome' ? f.directory : f.type === 'presence' ? f.users : []));
        await until(() => entries().some((d) => d.pin === bob.pin), 'Mallory sees Bob in the directory');
        const bobPk = entries().find((d) => d.pin === bob.pin)!.pk;
        const { env } = sealEnvelope({
          sender: mallory.identity,
          to: [{ pin: bob.pin, signPk: fromB64(bobPk) }],
          conv: groupId,
          body: { text: 'the meeting moved to my place', group: 'Quiet room' },
        });
        mallory.send({ type: 'send', env });
        await mallory.next('accepted', (f) => f.id === env.id);

        await focusTab(bob.page);
        const apart = bob.page.locator(`[data-testid="chat-item"][data-chat="apart:${groupId}:${mallory.identity.pin}"]`);
        await apart.waitFor();
        expect(await apart.textContent()).toContain('not verified');
        await apart.click();
        const msg = messageWith(bob.page, 'the meeting moved to my place');
        await msg.waitFor();
        expect(await msg.getByTestId('flag').textContent()).toContain('carries no signed member list');
        expect(await msg.getByTestId('sender').textContent()).toBe(`Alice ${mallory.identity.pin}`);
        expect(await bob.page.getByTestId('composer').isDisabled()).toBe(true);
        // The real group thread does not show it, and still lists only Alice and Bob.
        await bob.page.locator(`[data-testid="chat-item"][data-chat="${groupId}"]`).click();
        expect(await bob.page.locator('[data-testid="messages"]').textContent()).not.toContain('the meeting moved');
        expect(await bob.page.getByTestId('group-member-row').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.pin).sort())).toEqual([alice.pin, bob.pin].sort());
      } finally {
        mallory.ws.terminate();
      }
    });
  });
});

describe('the composer', () => {
  test('a message longer than the limit is refused with a clear word and kept whole in the box, the counter says by how much, and the legend explains the ticks', async () => {
    await withContext(async (ctx) => {
      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      await openDm(alice.page, bob.pin);
      const long = `${'A sentence that goes on. '.repeat(170)}The end.`; // 4,258 characters
      expect(long.length).toBeGreaterThan(MAX_TEXT_CHARS);
      await alice.page.getByTestId('composer').fill(long);
      expect(await alice.page.getByTestId('composer-count').textContent()).toBe(`${long.length} / ${MAX_TEXT_CHARS} characters: ${long.length - MAX_TEXT_CHARS} too many`);
      await alice.page.getByTestId('composer').press('Enter');
      expect(await alice.page.getByTestId('notice').textContent()).toContain(`Not sent: this message has ${long.length} characters, and the limit is ${MAX_TEXT_CHARS}`);
      expect(await alice.page.getByTestId('composer').inputValue()).toBe(long); // nothing cut, nothing lost
      expect(await alice.page.locator('[data-testid="messages"] [data-testid="message"]').count()).toBe(0);
      // At the limit it goes, whole.
      const exact = long.slice(0, MAX_TEXT_CHARS);
      await alice.page.getByTestId('composer').fill(exact);
      expect(await alice.page.getByTestId('composer-count').textContent()).toBe(`${MAX_TEXT_CHARS} / ${MAX_TEXT_CHARS}`);
      await alice.page.getByTestId('composer').press('Enter');
      await focusTab(bob.page);
      await bob.page.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
      await messageWith(bob.page, exact.slice(-40)).waitFor();
      expect(await bob.page.locator('[data-testid="message-text"]').last().textContent()).toBe(exact);
      const legend = await alice.page.getByTestId('legend').textContent();
      for (const words of ['✓ the relay has it', 'D delivered to their device', 'R read']) expect(legend).toContain(words);
    });
  });
});

describe('page security', () => {
  test('every page is served with the CSP, and a chat session, the wire panel, the relay view and the regulator console raise no CSP violation and no error', async () => {
    await withContext(async (ctx) => {
      for (const path of ['/', '/relay', '/regulator']) {
        const res = await ctx.request.get(`${suite.app.url}${path}`);
        const csp = res.headers()['content-security-policy'];
        expect(csp, path).toBe(CSP);
        expect(csp).not.toMatch(/unsafe-inline|'unsafe-eval'/);
      }

      const alice: ChatTab = await openChat(ctx, suite.app.url, 'Frank');
      const bob: ChatTab = await openChat(ctx, suite.app.url, 'Grace');
      await openDm(alice.page, bob.pin);
      await typeAndSend(alice.page, 'csp check <script>alert(1)</script>');
      await focusTab(bob.page);
      await bob.page.locator('[data-testid="chat-item"]', { hasText: 'Frank' }).click();
      await messageWith(bob.page, 'csp check <script>alert(1)</script>').waitFor();
      expect(await bob.page.locator('[data-testid="message-text"] script').count()).toBe(0);
      await typeAndSend(bob.page, 'reply');
      await messageWith(alice.page, 'reply').waitFor();
      await focusTab(alice.page);
      await alice.page
        .getByTestId('wire-record')
        .first()
        .getByRole('button', { name: /expand/ })
        .first()
        .click();
      await alice.page.getByTestId('wire-scope-all').click();
      await alice.page.getByTestId('safety').locator('summary').click();
      expect(await alice.page.getByTestId('safety-number').textContent()).toMatch(/^(\d{5} ){11}\d{5}$/);

      const relayPage = await ctx.newPage();
      const relayProblems = await watchProblems(relayPage);
      await relayPage.goto(`${suite.app.url}/relay`);
      await relayPage.locator('[data-testid="traffic-row"]').first().waitFor();
      const consolePage = await ctx.newPage();
      const consoleProblems = await watchProblems(consolePage);
      await consolePage.goto(`${suite.app.url}/regulator#token=test-admin-token`);
      await consolePage.locator('[data-testid="intercept"]').first().waitFor();

      expect(alice.problems.errors).toEqual([]);
      expect(bob.problems.errors).toEqual([]);
      expect(relayProblems.errors).toEqual([]);
      expect(consoleProblems.errors).toEqual([]);

      // The watcher does see a CSP violation when there is one: an inline script is refused on these pages.
      await alice.page.evaluate(() => {
        const script = document.createElement('script');
        script.textContent = 'window.__inlineRan = true';
        document.body.append(script);
      });
      expect(await alice.page.evaluate(() => (window as unknown as { __inlineRan?: boolean }).__inlineRan)).toBeUndefined();
      await expect.poll(() => alice.problems.errors.some((e) => e.startsWith('csp: script-src'))).toBe(true);
    });
  });

  test("without ?name the chat page asks for a name, and the name chosen becomes the tab's person", async () => {
    await withContext(async (ctx) => {
      const page = await ctx.newPage();
      await page.goto(`${suite.app.url}/`);
      await page.getByTestId('name-input').fill('Heidi');
      await page.getByRole('button', { name: 'Open chat' }).click();
      const { pin } = await waitReady(page);
      expect(new URL(page.url()).searchParams.get('name')).toBe('Heidi');
      expect(await page.getByTestId('my-name').textContent()).toBe('Heidi');
      expect(pin).toMatch(/^[0-9A-F]{8}$/);
      expect(suite.app.relay.directory().some((d) => d.pin === pin && d.name === 'Heidi')).toBe(true);
    });
  });
});
