/**
 * The chat page, the relay view and the console on a phone: 390×844, touch, mobile. One column
 * with a tab bar, each pane one tap away; a phone tab and a desktop tab talk; the message box stays
 * in view when the bottom of the screen goes to a keyboard; keyboard alone works; labels and roles
 * for screen readers; WCAG AA contrast, measured in the page.
 */
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { browserSuite, messageWith, openChat, openDm, typeAndSend, withContext } from '../helpers/browser.ts';
import { contrastFailures, scrollsSideways, textUnder } from '../helpers/page-checks.ts';

const suite = browserSuite();
const PHONE = { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true } as const;
const DESKTOP = { viewport: { width: 1280, height: 800 } } as const;
/** A phone keyboard takes about 40% of the screen's height. */
const KEYBOARD_PX = 336;

/** The element's box is inside the visible area (the visual viewport). */
function inView(page: Page, testid: string): Promise<{ top: number; bottom: number; visible: number; inside: boolean }> {
  return page.evaluate((id) => {
    const node = document.querySelector(`[data-testid="${id}"]`);
    const r = node?.getBoundingClientRect();
    const visible = window.visualViewport?.height ?? innerHeight;
    if (!r?.height) return { top: -1, bottom: -1, visible, inside: false };
    return { top: r.top, bottom: r.bottom, visible, inside: r.top >= 0 && r.bottom <= visible + 0.5 && r.left >= 0 && r.right <= innerWidth + 0.5 };
  }, testid);
}

/** WebSocket readyState values (Node 20 has no global WebSocket to read them from). */
const OPEN = 1;
const CLOSED = 3;

const shown = (page: Page, testid: string) => page.getByTestId(testid).isVisible();

describe('phone', () => {
  it('at 390x844 with touch the chat page is one column with contacts, chat and wire one tap each; it sends to and receives from a desktop tab; the message box stays in view above a keyboard', async () => {
    await withContext(suite.browser, PHONE, async (phoneCtx) => {
      await withContext(suite.browser, DESKTOP, async (deskCtx) => {
        const phone = await openChat(phoneCtx, suite.app.url, 'Pia');
        const desk = await openChat(deskCtx, suite.app.url, 'Dan');
        const page = phone.page;
        expect(await scrollsSideways(page), 'no sideways scroll').toBe(false);
        expect(await shown(page, 'phone-tabs')).toBe(true);
        expect(await shown(page, 'sidebar'), 'no chat open yet: the contacts').toBe(true);
        expect(await shown(page, 'conversation')).toBe(false);

        // One tap on a contact opens the conversation, full width, with the box at the bottom.
        await page.locator(`[data-testid="contact"][data-pin="${desk.pin}"]`).tap();
        expect(await shown(page, 'conversation')).toBe(true);
        expect(await shown(page, 'sidebar')).toBe(false);
        const width = await page.getByTestId('conversation').evaluate((n) => n.getBoundingClientRect().width);
        expect(width, "the conversation column has the screen's width").toBeGreaterThan(380);
        expect(await inView(page, 'composer')).toMatchObject({ inside: true });
        expect(await inView(page, 'send')).toMatchObject({ inside: true });

        await page.getByTestId('composer').tap();
        await page.getByTestId('composer').fill('Hello from the phone');
        await page.getByTestId('send').tap();
        await openDm(desk.page, phone.pin);
        await messageWith(desk.page, 'Hello from the phone').waitFor();
        await typeAndSend(desk.page, 'Hello back from the laptop');
        await messageWith(page, 'Hello back from the laptop').waitFor();
        expect(await messageWith(page, 'Hello back from the laptop').isVisible()).toBe(true);

        // The keyboard: Chromium has no on-screen keyboard, so the visible area is made shorter by a
        // keyboard's height, as a phone does when it opens one (interactive-widget=resizes-content).
        await page.getByTestId('composer').focus();
        await page.setViewportSize({ width: 390, height: 844 - KEYBOARD_PX });
        await expect.poll(() => page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--vvh'))).toBe(`${844 - KEYBOARD_PX}px`);
        const box = await inView(page, 'composer');
        expect(box, 'the message box is inside the area the keyboard leaves').toMatchObject({ inside: true });
        expect(box.bottom, 'and at its bottom').toBeGreaterThan(box.visible - 140);
        expect(await inView(page, 'send')).toMatchObject({ inside: true });
        expect(await messageWith(page, 'Hello back from the laptop').isVisible(), 'the newest message still shows').toBe(true);
        await page.getByTestId('composer').fill('Typed with the keyboard open');
        await page.getByTestId('send').tap();
        await messageWith(desk.page, 'Typed with the keyboard open').waitFor();
        await page.setViewportSize(PHONE.viewport);

        // Each pane one tap away.
        await page.getByTestId('tab-wire').tap();
        expect(await shown(page, 'wire')).toBe(true);
        expect(await shown(page, 'conversation')).toBe(false);
        expect(await page.locator('[data-testid="wire-record"]').count()).toBeGreaterThan(0);
        await page.getByTestId('tab-contacts').tap();
        expect(await shown(page, 'sidebar')).toBe(true);
        expect(await shown(page, 'wire')).toBe(false);
        await page.getByTestId('tab-chat').tap();
        expect(await shown(page, 'conversation')).toBe(true);
        expect(await scrollsSideways(page)).toBe(false);
        expect(phone.problems.errors).toEqual([]);

        // The desktop tab keeps its three columns and shows no tab bar.
        expect(await shown(desk.page, 'phone-tabs')).toBe(false);
        for (const id of ['sidebar', 'conversation', 'wire']) expect(await shown(desk.page, id), `desktop ${id}`).toBe(true);
      });
    });
  }, 90_000);

  it('by keyboard alone: the tabs are a tablist that arrows move through, focus is always visible, and a message is written and sent; every control has a name for a screen reader', async () => {
    await withContext(suite.browser, PHONE, async (ctx) => {
      const other = await openChat(ctx, suite.app.url, 'Kim');
      const me = await openChat(ctx, suite.app.url, 'Lee');
      await openDm(other.page, me.pin);
      const page = me.page;
      await page.bringToFront();
      await page.getByTestId('tab-contacts').focus();
      const roles = await page.evaluate(() => {
        const list = document.querySelector('[data-testid="phone-tabs"]');
        const tabs = [...document.querySelectorAll('[data-testid^="tab-"][role="tab"]')] as HTMLElement[];
        return {
          list: list?.getAttribute('role'),
          tabs: tabs.map((t) => ({ selected: t.getAttribute('aria-selected'), panel: document.getElementById(t.getAttribute('aria-controls') ?? '')?.getAttribute('role') })),
        };
      });
      expect(roles.list).toBe('tablist');
      expect(roles.tabs).toHaveLength(3);
      for (const t of roles.tabs) expect(t.panel).toBe('tabpanel');
      expect(roles.tabs.filter((t) => t.selected === 'true')).toHaveLength(1);

      await page.keyboard.press('ArrowRight');
      const focused = () => page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.testid ?? document.activeElement?.tagName);
      expect(await focused()).toBe('tab-chat');
      expect(await page.getByTestId('tab-chat').getAttribute('aria-selected')).toBe('true');
      await page.keyboard.press('ArrowLeft');
      expect(await focused()).toBe('tab-contacts');
      expect(await shown(page, 'sidebar')).toBe(true);

      // Tab into the contacts, Enter on Kim: the chat opens; Tab on to the box; Enter sends.
      const ring = () =>
        page.evaluate(() => {
          const s = getComputedStyle(document.activeElement as Element);
          return s.outlineStyle !== 'none' && Number.parseFloat(s.outlineWidth) >= 2;
        });
      const seen = new Set<string>();
      for (let i = 0; i < 30 && (await focused()) !== 'contact'; i++) {
        await page.keyboard.press('Tab');
        seen.add(String(await focused()));
        expect(await ring(), `a visible focus ring on ${await focused()}`).toBe(true);
      }
      expect(await focused()).toBe('contact');
      await page.keyboard.press('Enter');
      expect(await shown(page, 'conversation')).toBe(true);
      for (let i = 0; i < 30 && (await focused()) !== 'composer'; i++) {
        await page.keyboard.press('Tab');
        expect(await ring(), `a visible focus ring on ${await focused()}`).toBe(true);
      }
      expect(await focused()).toBe('composer');
      await page.keyboard.type('Sent without a mouse');
      await page.keyboard.press('Enter');
      await messageWith(other.page, 'Sent without a mouse').waitFor();

      const unnamed = await page.evaluate(() =>
        [...document.querySelectorAll('button, input, textarea, select, [role="tab"], [role="img"]')]
          .filter((n) => (n as HTMLElement).offsetParent !== null)
          .filter((n) => {
            const label = n.getAttribute('aria-label') || n.textContent?.trim() || (n as HTMLInputElement).labels?.[0]?.textContent?.trim() || n.getAttribute('title');
            return !label;
          })
          .map((n) => n.outerHTML.slice(0, 80)),
      );
      expect(unnamed, 'controls without a name').toEqual([]);
    });
  }, 60_000);

  it('every visible text meets WCAG AA contrast (4.5:1, large 3:1): chat page on a phone and a laptop with the tap on, the relay view, the console, the teacher panel and the projector', async () => {
    const admin = { Authorization: 'Bearer test-admin-token', 'Content-Type': 'application/json' };
    const res = await fetch(`${suite.app.url}/api/regulator/tap`, { method: 'POST', headers: admin, body: JSON.stringify({ tap: true, scope: 'all', announced: true }) });
    expect(res.status).toBe(200);
    await withContext(suite.browser, PHONE, async (phoneCtx) => {
      await withContext(suite.browser, DESKTOP, async (deskCtx) => {
        const a = await openChat(phoneCtx, suite.app.url, 'Ana');
        const b = await openChat(deskCtx, suite.app.url, 'Ben');
        await a.page.locator(`[data-testid="contact"][data-pin="${b.pin}"]`).tap();
        await a.page.getByTestId('composer').fill('Under the tap');
        await a.page.getByTestId('send').tap();
        await openDm(b.page, a.pin);
        await messageWith(b.page, 'Under the tap').waitFor();
        await typeAndSend(b.page, 'Seen it');
        await messageWith(a.page, 'Seen it').waitFor();
        await a.page.getByTestId('tap-banner').waitFor();
        const failures: Record<string, unknown[]> = {};
        const check = async (name: string, page: Page) => {
          const found = await contrastFailures(page);
          if (found.length) failures[name] = found;
        };
        await check('phone chat', a.page);
        await a.page.getByTestId('tab-wire').tap();
        await check('phone wire', a.page);
        await a.page.getByTestId('tab-contacts').tap();
        await check('phone contacts', a.page);
        await check('desktop chat', b.page);
        for (const [name, path] of [
          ['relay view', '/relay'],
          ['console', '/regulator#token=test-admin-token'],
          ['teacher panel', '/teacher#token=test-admin-token'],
          ['projector', '/projector#token=test-admin-token'],
        ] as const) {
          const page = await deskCtx.newPage();
          await page.goto(`${suite.app.url}${path}`);
          await page.locator('#status', { hasText: 'live' }).waitFor();
          await page.waitForTimeout(500);
          await check(name, page);
        }
        expect(failures).toEqual({});
      });
    });
    await fetch(`${suite.app.url}/api/regulator/tap`, { method: 'POST', headers: admin, body: JSON.stringify({ tap: false }) });
  }, 90_000);

  it('a phone that slept with a socket that looks open but is dead: when the screen comes on (visibilitychange) it pings, gives up the deaf socket, gets what was queued, and its own unacknowledged message reaches the other side once', async () => {
    await withContext(suite.browser, PHONE, async (phoneCtx) => {
      await withContext(suite.browser, DESKTOP, async (deskCtx) => {
        // Test instrument only: every WebSocket of the phone's page can be made deaf and mute, as a
        // phone's radio is while it sleeps: frames in both directions vanish, and the socket still
        // says it is open (the browser answers the relay's protocol pings by itself, so the relay
        // keeps it as online too).
        await phoneCtx.addInitScript(() => {
          const sockets: WebSocket[] = [];
          const deaf = new WeakSet<WebSocket>();
          class Watched extends WebSocket {
            constructor(url: string | URL, protocols?: string | string[]) {
              super(url, protocols);
              sockets.push(this);
              this.addEventListener('message', (ev) => {
                if (deaf.has(this)) ev.stopImmediatePropagation();
              });
            }
            override send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
              if (!deaf.has(this)) super.send(data);
            }
          }
          Object.assign(window, {
            WebSocket: Watched,
            __sockets: () => sockets.map((s) => s.readyState),
            __sleep: () => {
              for (const s of sockets) deaf.add(s);
            },
          });
        });
        type Watch = { __sockets: () => number[]; __sleep: () => void };
        const phone = await openChat(phoneCtx, suite.app.url, 'Sol');
        const desk = await openChat(deskCtx, suite.app.url, 'Tia');
        const page = phone.page;
        await page.locator(`[data-testid="contact"][data-pin="${desk.pin}"]`).tap();
        await openDm(desk.page, phone.pin);
        expect(await page.evaluate(() => (window as unknown as Watch).__sockets())).toEqual([OPEN]);

        await page.evaluate(() => (window as unknown as Watch).__sleep());
        await page.getByTestId('composer').fill('Written just before the screen went off');
        await page.getByTestId('send').tap();
        await typeAndSend(desk.page, 'Sent while your phone slept');
        await desk.page
          .locator('[data-testid="message"][data-state="delivered"], [data-testid="message"][data-state="sent"]', { hasText: 'Sent while your phone slept' })
          .waitFor();
        await desk.page.waitForTimeout(1000);
        expect(await messageWith(page, 'Sent while your phone slept').count(), 'asleep: nothing arrives').toBe(0);
        expect(await messageWith(desk.page, 'Written just before the screen went off').count(), 'asleep: nothing leaves').toBe(0);
        expect(await page.evaluate(() => (window as unknown as Watch).__sockets()), 'and the socket still looks open').toEqual([OPEN]);

        // The screen comes on: the browser fires visibilitychange with the page visible.
        await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
        await expect.poll(() => page.evaluate(() => (window as unknown as Watch).__sockets().length), { timeout: 15_000 }).toBe(2);
        await messageWith(page, 'Sent while your phone slept').waitFor({ timeout: 15_000 });
        await messageWith(desk.page, 'Written just before the screen went off').waitFor({ timeout: 15_000 });
        await desk.page.waitForTimeout(1000);
        expect(await messageWith(page, 'Sent while your phone slept').count(), 'shown once').toBe(1);
        expect(await messageWith(desk.page, 'Written just before the screen went off').count(), 'sent again, shown once').toBe(1);
        expect(await page.evaluate(() => (window as unknown as Watch).__sockets())).toEqual([CLOSED, OPEN]);
        expect(phone.problems.errors).toEqual([]);
      });
    });
  }, 60_000);

  it('the relay view and the regulator console fit a phone: no sideways scroll and no text under 14 px', async () => {
    await withContext(suite.browser, PHONE, async (ctx) => {
      const a = await openChat(ctx, suite.app.url, 'Uma');
      const b = await openChat(ctx, suite.app.url, 'Vic');
      await a.page.locator(`[data-testid="contact"][data-pin="${b.pin}"]`).tap();
      await a.page.getByTestId('composer').fill('A message for the relay view');
      await a.page.getByTestId('send').tap();
      await b.page.bringToFront();
      await b.page.locator(`[data-testid="contact"][data-pin="${a.pin}"]`).tap();
      await messageWith(b.page, 'A message for the relay view').waitFor();
      for (const [name, path, ready] of [
        ['relay view', '/relay', '[data-testid="traffic-row"]'],
        ['console', '/regulator#token=test-admin-token', '[data-testid="intercept"]'],
      ] as const) {
        const page = await ctx.newPage();
        await page.goto(`${suite.app.url}${path}`);
        await page.locator(ready).first().waitFor();
        expect(await scrollsSideways(page), `${name}: sideways scroll`).toBe(false);
        expect(await textUnder(page, 14, 'main'), `${name}: text under 14 px`).toEqual([]);
        await page.close();
      }
    });
  }, 60_000);
});
