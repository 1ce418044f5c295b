/**
 * A victim's chat page in real Chromium against other participants (ported from the attack
 * branch's tests/integration/attacks-browser.test.ts). Attackers are hand-driven raw clients in
 * Node within their own budgets; the relay is on 127.0.0.1 port 0. One browser context is one
 * browser: every person opened in it shares its localStorage (5,242,880 UTF-16 units in Chromium).
 */
import { describe, expect, test } from 'vitest';
import type { Page } from 'playwright-core';
import { sealEnvelope } from '../../shared/envelope.ts';
import type { Envelope } from '../../shared/protocol.ts';
import { browserSuite, focusTab, messageWith, openChat, openDm, waitReady, withContext } from '../helpers/browser.ts';
import { rawClient, type RawClient } from '../helpers/raw-client.ts';
import { startTestRelay, until, user } from '../helpers/relay.ts';

const suite = browserSuite();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Send DMs from `c` to `to` at about `perSecond`, resending any refused for rate, until all are accepted. */
async function flood(c: RawClient, to: { pin: string; signPk: Uint8Array }, n: number, perSecond: number, text: string): Promise<void> {
  const byId = new Map<string, Envelope>();
  const queue: Envelope[] = [];
  for (let i = 0; i < n; i++) {
    const { env } = sealEnvelope({ sender: c.identity, to: [to], conv: 'dm', body: { text } });
    byId.set(env.id, env);
    queue.push(env);
  }
  const accepted = new Set<string>();
  let read = 0;
  let credit = 0;
  const deadline = Date.now() + 90_000;
  while (accepted.size < n && Date.now() < deadline) {
    credit += perSecond / 10;
    for (; credit >= 1 && queue.length; credit--) c.send({ type: 'send', env: queue.shift()! });
    await sleep(100);
    for (; read < c.frames.length; read++) {
      const f = c.frames[read]!;
      if (f.type === 'accepted') accepted.add(f.id);
      if (f.type === 'error' && f.code === 'rate_limited' && f.ref && byId.has(f.ref)) queue.push(byId.get(f.ref)!);
    }
  }
  if (accepted.size < n) throw new Error(`only ${accepted.size} of ${n} accepted`);
}

const signPkOf = (pin: string) => Uint8Array.from(Buffer.from(suite.app.store.getUser(pin)!.pk, 'base64'));
const chatItem = (page: Page, chat: string) => page.locator(`[data-testid="chat-item"][data-chat="${chat}"]`);

/** Another person's data fills this browser's localStorage to the last few characters. */
async function fillStorage(page: Page): Promise<number> {
  return page.evaluate(() => {
    let size = 1 << 20;
    let n = 0;
    while (size >= 16) {
      try {
        localStorage.setItem(`someone-else/${n}`, 'f'.repeat(size));
        n += 1;
      } catch {
        size = Math.floor(size / 2);
      }
    }
    return Object.keys(localStorage).reduce((total, k) => total + k.length + (localStorage.getItem(k)?.length ?? 0), 0);
  });
}

describe("a victim's chat page against other participants", () => {
  test('a stranger writing 20 messages a second into the open chat makes the page send fewer read frames than messages, within its read budget: they are batched, and every message is marked read', async () => {
    await withContext(suite.browser, { viewport: { width: 1280, height: 720 } }, async (ctx) => {
      const victim = await openChat(ctx, suite.app.url, 'Victim');
      const sent: string[] = [];
      victim.page.on('websocket', (ws) => ws.on('framesent', (f) => sent.push(typeof f.payload === 'string' ? f.payload : f.payload.toString())));
      await victim.page.reload(); // the page's socket opened before the listener: reload so it is seen from the start
      await waitReady(victim.page);
      const mallory = await rawClient(suite.app.wsUrl, { name: 'Mallory' });
      try {
        await openDm(victim.page, mallory.identity.pin);
        const reads = () => sent.filter((s) => s.startsWith('{"type":"read"'));
        const before = reads().length;
        const startedAt = Date.now();
        await flood(mallory, { pin: victim.pin, signPk: signPkOf(victim.pin) }, 60, 20, 'hello?');
        await until(() => mallory.frames.filter((f) => f.type === 'receipt' && f.state === 'read').length >= 60, 'a read receipt for each of the 60', 15_000);
        // Playwright reports a sent frame a moment after it left, so the last read frame may be seen
        // after Mallory already holds its receipt: wait for the page's frames too.
        const idsSent = () =>
          reads()
            .slice(before)
            .flatMap((s) => (JSON.parse(s) as { ids: string[] }).ids);
        await until(() => new Set(idsSent()).size >= 60, "the page's read frames seen for all 60", 5_000).catch(() => undefined);
        const frames = reads().slice(before);
        const elapsed = (Date.now() - startedAt) / 1000;
        const ids = frames.flatMap((s) => (JSON.parse(s) as { ids: string[] }).ids);
        console.log(
          `[figures] read frames sent by the page for 60 messages at 20/s in the open chat: ${frames.length} in ${elapsed.toFixed(1)} s (ids per frame: ${frames.map((s) => (JSON.parse(s) as { ids: string[] }).ids.length).join(',')})`,
        );
        expect(new Set(ids).size, 'every message read').toBe(60);
        expect(ids.length, 'each message read once').toBe(60);
        // The page's read budget (client/core: a burst of 4, then 4 a second), whatever the machine's
        // load; before, one frame per message.
        expect(frames.length, 'read frames for 60 incoming messages').toBeLessThanOrEqual(4 + 4 * elapsed + 1);
        expect(frames.length, 'fewer read frames than messages').toBeLessThan(60);
      } finally {
        mallory.ws.terminate();
      }
    });
  }, 90_000);

  test("strangers sending ~220 messages of 4,000 control characters (24,000 characters each once escaped) fill none of the browser's storage: a message received afterwards survives a reload, and a new person in the same browser keeps her keys", async () => {
    await withContext(suite.browser, { viewport: { width: 1280, height: 720 } }, async (ctx) => {
      const victim = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await user(suite.app.wsUrl, 'Bob');
      const strangers = await Promise.all([0, 1, 2, 3].map((i) => rawClient(suite.app.wsUrl, { name: `Stranger ${i}` })));
      try {
        await until(() => bob.m.directory.has(victim.pin), 'Bob knows Alice');
        bob.m.sendText(victim.pin, 'before the flood');
        await focusTab(victim.page);
        await chatItem(victim.page, `dm:${bob.m.pin}`).click();
        await messageWith(victim.page, 'before the flood').waitFor();

        // 4 × 57 messages of 32.6 KB each, at 6 a second per stranger: within each one's 256 KiB/s.
        const junk = '\u0001'.repeat(4000);
        await Promise.all(strangers.map((s) => flood(s, { pin: victim.pin, signPk: signPkOf(victim.pin) }, 57, 6, junk)));
        bob.m.sendText(victim.pin, 'after the flood: meet at five');
        await messageWith(victim.page, 'after the flood: meet at five').waitFor();
        await sleep(1000); // the page saves 200 ms after a change
        const used = await victim.page.evaluate(() => Object.keys(localStorage).reduce((n, k) => n + k.length + (localStorage.getItem(k)?.length ?? 0), 0));
        const trimmed = await victim.page.getByTestId('storage-trimmed').textContent();
        console.log(`[figures] localStorage in use after the flood: ${used} UTF-16 units (Chromium's quota 5,242,880); the page says: ${trimmed ?? ''}`);
        expect(used).toBeLessThan(500_000);
        expect(trimmed).toMatch(/Not saved in this browser/);

        await victim.page.reload();
        await waitReady(victim.page);
        await chatItem(victim.page, `dm:${bob.m.pin}`).click();
        await messageWith(victim.page, 'before the flood').waitFor();
        expect(await messageWith(victim.page, 'after the flood: meet at five').count(), 'the message received after the flood, after a reload').toBe(1);

        const carol = await openChat(ctx, suite.app.url, 'Carol');
        expect(await carol.page.evaluate(() => localStorage.getItem('backdoor-lab/person/Carol/backdoor-lab.identity') !== null), "Carol's keys are saved").toBe(true);
        expect([...victim.problems.errors, ...carol.problems.errors].filter((e) => /quota/i.test(e))).toEqual([]);
      } finally {
        bob.m.stop();
        for (const s of strangers) s.ws.terminate();
      }
    });
  }, 150_000);

  test("with the browser's localStorage full (another person's data), a new group and its messages still reach the victim, the page says plainly that storage is full and what is not kept, and a reload is still the same person", async () => {
    await withContext(suite.browser, { viewport: { width: 1280, height: 720 } }, async (ctx) => {
      const victim = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await user(suite.app.wsUrl, 'Bob');
      try {
        await until(() => bob.m.directory.has(victim.pin), 'Bob knows Alice');
        const used = await fillStorage(victim.page);
        console.log(`[figures] localStorage filled to ${used} UTF-16 units`);
        const made = bob.m.createGroup('Project team', [victim.pin]);
        bob.m.sendGroup(made.id, 'welcome to the project team');
        await focusTab(victim.page);
        await chatItem(victim.page, made.id).click();
        await messageWith(victim.page, 'welcome to the project team').waitFor();
        // The first write refused may be a small one (the key pinned for Bob); the history's follows within its save delay.
        await victim.page.waitForFunction(() => /your message history/.test(document.querySelector('[data-testid="storage-full"]')?.textContent ?? ''));
        const words = (await victim.page.getByTestId('storage-full').textContent()) ?? '';
        console.log(`[figures] the page says: ${words}`);
        expect(words).toMatch(/storage is full/);
        expect(words).toMatch(/your message history/);
        await until(() => suite.app.store.queueLoad(victim.pin).envelopes === 0, 'Alice acknowledged the note and the message');
        expect(victim.problems.errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);

        await victim.page.reload();
        const again = await waitReady(victim.page);
        expect(again.pin, 'the same person after a reload with the storage full').toBe(victim.pin);
      } finally {
        bob.m.stop();
      }
    });
  }, 120_000);

  test("a message stamped a day ahead is drawn where it arrived, with its date and a mark that the sender's clock is a day ahead; the preview is the message that came last", async () => {
    await withContext(suite.browser, { viewport: { width: 1280, height: 720 } }, async (ctx) => {
      const victim = await openChat(ctx, suite.app.url, 'Dora');
      const mallory = await rawClient(suite.app.wsUrl, { name: 'Mallory' });
      try {
        const to = [{ pin: victim.pin, signPk: signPkOf(victim.pin) }];
        const future = Date.now() + 24 * 3600_000;
        const ahead = sealEnvelope({ sender: mallory.identity, to, conv: 'dm', body: { text: 'pinned to the top' }, fixed: { ts: future } }).env;
        mallory.send({ type: 'send', env: ahead });
        await mallory.next('accepted', (f) => f.id === ahead.id);
        await focusTab(victim.page);
        await chatItem(victim.page, `dm:${mallory.identity.pin}`).click();
        await messageWith(victim.page, 'pinned to the top').waitFor();
        const later = sealEnvelope({ sender: mallory.identity, to, conv: 'dm', body: { text: 'sent after it' } }).env;
        mallory.send({ type: 'send', env: later });
        await messageWith(victim.page, 'sent after it').waitFor();
        const texts = await victim.page.getByTestId('message-text').allTextContents();
        expect(texts.slice(-2)).toEqual(['pinned to the top', 'sent after it']);
        const first = messageWith(victim.page, 'pinned to the top');
        const d = new Date(future);
        const date = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
        expect(await first.getByTestId('message-time').textContent()).toContain(date);
        expect(await first.getByTestId('clock-ahead').textContent()).toMatch(/sender's clock was (23 hours|1 day) ahead/);
        expect(await messageWith(victim.page, 'sent after it').getByTestId('clock-ahead').count()).toBe(0);
        expect(await chatItem(victim.page, `dm:${mallory.identity.pin}`).locator('.preview').textContent()).toBe('sent after it');
      } finally {
        mallory.ws.terminate();
      }
    });
  }, 60_000);

  test('identities logging in and out over and over, under a new name each time (a presence update to the victim each time), make her contact list redraw at most about once a second, and it ends showing exactly who is online, under their last names', async () => {
    // The login budget is per address: a few addresses give this rate; this relay gives it from one.
    const app = await startTestRelay({ limits: { loginBurst: 100_000, loginsPerSecond: 10_000 } });
    await withContext(suite.browser, {}, async (ctx) => {
      const alice = await openChat(ctx, app.url, 'Alice');
      const page = alice.page;
      const churners = await Promise.all(Array.from({ length: 40 }, (_, i) => rawClient(app.wsUrl, { name: `Churn ${i}` })));
      const stayer = await rawClient(app.wsUrl, { name: 'Stays' });
      const contacts = (online: boolean) => page.locator(`[data-testid="contact"][data-online="${online}"]`);
      await expect.poll(() => contacts(true).count(), { timeout: 15_000 }).toBe(41);
      const draws = async () => Number(await page.getByTestId('contacts').getAttribute('data-draws'));

      // Someone tabbing through the contacts keeps their place while the list is redrawn under them.
      const stayerPin = stayer.frames.find((f) => f.type === 'welcome')?.pin ?? '';
      await page.locator(`[data-testid="contact"][data-pin="${stayerPin}"]`).focus();
      // Each churner goes offline and comes back, again and again, for about 4 s.
      const before = await draws();
      const t0 = Date.now();
      let logins = 0;
      let round = 0;
      let sockets = churners;
      while (Date.now() - t0 < 4000) {
        for (const c of sockets) c.ws.terminate();
        await sleep(60);
        round += 1;
        sockets = await Promise.all(churners.map((c, i) => rawClient(app.wsUrl, { identity: c.identity, name: `Churn ${i} r${round}` })));
        logins += sockets.length;
        await sleep(60);
      }
      for (const c of sockets) c.ws.terminate();
      const after = await draws();
      const seconds = (Date.now() - t0) / 1000;
      reportFiguresLine(`presence churn: ${logins} logins in ${seconds.toFixed(1)} s; the victim's contact list redrew ${after - before} times`);
      expect(logins, 'not vacuous: the churn ran').toBeGreaterThan(100);
      expect(after - before, 'at most one redraw a second (plus the one in flight)').toBeLessThanOrEqual(Math.ceil(seconds) + 1);

      // When the churn stops, the list catches up: the churners are offline, the one who stayed is online.
      await expect.poll(() => contacts(true).count(), { timeout: 10_000 }).toBe(1);
      expect(await contacts(true).getAttribute('data-pin')).toBe(stayerPin);
      expect(await contacts(false).count()).toBe(40);
      await expect.poll(() => page.locator('[data-testid="contact"] .name', { hasText: `r${round}` }).count(), { timeout: 10_000 }).toBe(40);
      expect(await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.pin), 'the focus stayed on the same contact').toBe(stayerPin);
      stayer.ws.terminate();
      expect(alice.problems.errors).toEqual([]);
    }).finally(() => app.close());
  }, 90_000);
});

function reportFiguresLine(line: string): void {
  process.stdout.write(`[figures] ${line}\n`);
}
