/**
 * The projector (`/projector`) at 1280×720: every piece of text in its panes at least 24 px,
 * measured in the page; it follows the layout the teacher panel picks; it never shows the admin
 * token; without the token it shows no plaintext; user text is drawn as text, never as markup.
 */
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { browserSuite, openChat, openDm, typeAndSend, watchProblems, withContext } from '../helpers/browser.ts';

const suite = browserSuite();
const TOKEN = 'test-admin-token';
const viewport = { width: 1280, height: 720 };

async function api(path: string, body?: unknown, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${suite.app.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** Every non-blank text node in the projector's panes that is drawn, with its computed font size. */
function textSizes(page: Page): Promise<{ text: string; px: number }[]> {
  return page.evaluate(() => {
    const out: { text: string; px: number }[] = [];
    for (const pane of document.querySelectorAll('#app .pane')) {
      const walker = document.createTreeWalker(pane, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (!parent || !node.textContent?.trim() || !parent.getClientRects().length) continue;
        out.push({ text: node.textContent.trim().slice(0, 40), px: Number.parseFloat(getComputedStyle(parent).fontSize) });
      }
    }
    return out;
  });
}

/** The projector as the teacher opens it: the panel's link, a new tab with the panel's sessionStorage. */
async function openFromPanel(teacher: Page): Promise<Page> {
  await teacher.goto(`${suite.app.url}/teacher#token=${TOKEN}`);
  await teacher.locator('#status', { hasText: 'live' }).waitFor();
  const [projector] = await Promise.all([teacher.context().waitForEvent('page'), teacher.getByTestId('link-projector').click()]);
  await projector.waitForLoadState();
  await projector.setViewportSize(viewport);
  return projector;
}

describe('projector', () => {
  it('follows the layout picked on the teacher panel, and in every layout no text in its panes is under 24 px at 1280x720', async () => {
    expect((await api('/api/lab/scenarios/tap-on/run', {})).status).toBe(200);
    await withContext(suite.browser, { viewport }, async (ctx) => {
      const teacher = await ctx.newPage();
      const projector = await openFromPanel(teacher);
      const problems = await watchProblems(projector);
      const content: Record<string, string> = {
        'relay-console': '[data-testid="console-text"]',
        'three-panes': '[data-testid="left-text"]',
        metadata: '[data-testid="matrix-row"]',
        narration: '[data-testid="narration-title"]',
      };
      for (const layout of ['three-panes', 'metadata', 'narration', 'relay-console']) {
        await teacher.getByTestId('projector-layout').selectOption(layout);
        await projector.locator(`#app[data-layout="${layout}"]`).waitFor();
        await projector.locator(content[layout]!).first().waitFor();
        const sizes = await textSizes(projector);
        expect(sizes.length, `${layout}: text measured`).toBeGreaterThan(5);
        expect(
          sizes.filter((s) => s.px < 24),
          `${layout}: text under 24 px`,
        ).toEqual([]);
        expect(await projector.evaluate(() => document.documentElement.scrollWidth <= innerWidth), `${layout}: no horizontal scroll`).toBe(true);
      }
      // The console pane reads the tap's messages; the relay pane holds them as ciphertext only.
      await expect.poll(() => projector.getByTestId('pane-console').innerText()).toContain('Bring the quarterly numbers');
      expect(await projector.getByTestId('pane-relay').innerText()).not.toContain('Bring the quarterly numbers');
      // Receipts are hidden by default, and drawn when the teacher asks.
      expect(await projector.locator('[data-testid="relay-row"][data-kind="receipt"]').count()).toBe(0);
      await teacher.getByTestId('projector-receipts').check();
      await projector.locator('[data-testid="relay-row"][data-kind="receipt"]').first().waitFor();
      await teacher.getByTestId('projector-receipts').uncheck();
      await expect.poll(() => projector.locator('[data-testid="relay-row"][data-kind="receipt"]').count()).toBe(0);
      expect(problems.errors).toEqual([]);
    });
  }, 90_000);

  it("three panes: each outer pane is that bot's own decrypted view, the middle the relay's envelopes of the same messages, with no plaintext", async () => {
    expect((await api('/api/lab/projector', { layout: 'three-panes', pair: ['Carol', 'Bob'] })).status).toBe(200);
    await withContext(suite.browser, { viewport }, async (ctx) => {
      const projector = await openFromPanel(await ctx.newPage());
      await projector.locator('#app[data-layout="three-panes"]').waitFor();
      await projector.locator('[data-testid="left-message"]').first().waitFor();
      expect(await projector.locator('.pane-left h2').innerText()).toBe("Carol's screen");
      const leftIds = await projector.locator('[data-testid="left-message"]').evaluateAll((n) => n.map((x) => (x as HTMLElement).dataset.id));
      const rightIds = await projector.locator('[data-testid="right-message"]').evaluateAll((n) => n.map((x) => (x as HTMLElement).dataset.id));
      await expect.poll(() => projector.locator('[data-testid="pane-middle"] [data-testid="relay-row"][data-kind="envelope"]').count()).toBeGreaterThan(1);
      const middleIds = await projector.locator('[data-testid="pane-middle"] [data-testid="relay-row"]').evaluateAll((n) => n.map((x) => (x as HTMLElement).dataset.id));
      // The same conversation three ways: the relay's newest envelopes are messages both bots hold.
      for (const id of middleIds.slice(0, 2)) {
        expect(leftIds, `left pane holds ${id}`).toContain(id);
        expect(rightIds, `right pane holds ${id}`).toContain(id);
      }
      const texts = await projector.locator('[data-testid="left-text"]').allInnerTexts();
      expect(texts.length).toBeGreaterThan(0);
      const middle = await projector.getByTestId('pane-middle').innerText();
      for (const text of texts) expect(middle, 'the relay pane shows no plaintext').not.toContain(text.slice(0, 20));
      // And the panes' words come from the bots' own messengers: the server's answer matches Carol's client.
      const view = (await (await api('/api/lab/projector')).json()) as { conversation: { left: { name: string; messages: { id: string; text: string }[] } } };
      expect(view.conversation.left.name).toBe('Carol');
      expect(view.conversation.left.messages.map((m) => m.text)).toEqual(expect.arrayContaining([texts[0]]));
    });
    expect((await api('/api/lab/projector', { layout: 'three-panes', pair: ['Carol', 'Nobody'] })).status, 'a bot that is not running').toBe(400);
    expect((await api('/api/lab/projector', { layout: 'three-panes', pair: ['Bob', 'Bob'] })).status, 'the same bot twice').toBe(400);
    expect((await api('/api/lab/projector', { layout: 'fireworks' })).status, 'an unknown layout').toBe(400);
    expect((await api('/api/lab/projector', { layout: 'metadata', token: TOKEN })).status, 'an unknown field').toBe(400);
    expect((await api('/api/lab/projector', { pair: null, layout: 'relay-console' })).status).toBe(200);
  }, 60_000);

  it('never shows the admin token; without it the page and its API show nothing, and another origin cannot read the API', async () => {
    await withContext(suite.browser, { viewport }, async (ctx) => {
      const projector = await openFromPanel(await ctx.newPage());
      await projector.locator('#app[data-layout="relay-console"]').waitFor();
      await projector.locator('[data-testid="console-text"]').first().waitFor();
      const seen = await projector.evaluate(() =>
        [location.href, document.documentElement.outerHTML, document.body.innerText, ...[...document.querySelectorAll('input')].map((i) => i.value)].join('\n'),
      );
      expect(seen).not.toContain(TOKEN);
    });
    await withContext(suite.browser, { viewport }, async (ctx) => {
      // A participant who types the address: no token, a form, no data.
      const page = await ctx.newPage();
      await page.goto(`${suite.app.url}/projector`);
      await page.getByTestId('token-form').waitFor();
      expect(await page.locator('#app[data-layout="locked"]').count()).toBe(1);
      expect(await page.locator('.pane [data-testid="console-text"], [data-testid="relay-row"]').count()).toBe(0);
      // A wrong token: refused, the form again, and the wrong token is not left on screen.
      await page.getByTestId('token-input').fill('not-the-token');
      await page.getByTestId('token-input').press('Enter');
      await page.getByTestId('auth-error').waitFor();
      expect(await page.evaluate(() => document.body.innerText + [...document.querySelectorAll('input')].map((i) => i.value).join(''))).not.toContain('not-the-token');
    });
    expect((await api('/api/lab/projector', undefined, null)).status).toBe(401);
    expect((await api('/api/lab/projector', undefined, 'wrong')).status).toBe(403);
    // A page on another origin: no CORS grant, so even a guessed request's answer is unreadable to it.
    const foreign = await fetch(`${suite.app.url}/api/lab/projector`, { headers: { Origin: 'http://evil.example', Authorization: `Bearer ${TOKEN}` } });
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    const preflight = await fetch(`${suite.app.url}/api/lab/projector`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(preflight.headers.get('access-control-allow-headers')).toBeNull();
  }, 60_000);

  it("a participant's message with markup reaches the projector's console pane as text, never as elements", async () => {
    await withContext(suite.browser, { viewport }, async (ctx) => {
      const mallory = await openChat(ctx, suite.app.url, 'Mallory');
      const pins = (await (await api('/api/lab/people')).json()) as { people: { name: string; pin: string; online: boolean }[] };
      const bob = pins.people.find((p) => p.name === 'Bob' && p.online)!;
      await openDm(mallory.page, bob.pin);
      const payload = '<img src=x onerror="window.__xss=1"><b>bold</b>';
      await typeAndSend(mallory.page, payload);
      const projector = await openFromPanel(await ctx.newPage());
      await projector.locator('#app[data-layout="relay-console"]').waitFor();
      const line = projector.locator('[data-testid="console-text"]', { hasText: '<img src=x' }).first();
      await line.waitFor();
      expect(await line.innerText()).toContain(payload);
      expect(await projector.locator('#app img, #app b:text("bold")').count()).toBe(0);
      expect(await projector.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    });
  }, 60_000);
});
