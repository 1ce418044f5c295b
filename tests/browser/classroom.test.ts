/**
 * Classroom mode in real Chromium: the join link's class code (taken out of the address bar into
 * storage), the code field on the name form and on the card a refused login shows, the tab of a
 * person the teacher removed (said plainly, no reconnect loop), and the teacher panel's join QR
 * code and class code (hidden on request; never the admin token). No page reports a CSP violation
 * or an error.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium, watchProblems, withContext as withBrowserContext, type PageProblems, type TestRelay } from '../helpers/browser.ts';
import { startTestRelay, until } from '../helpers/relay.ts';

const CODE = 'K7M2QX';
const TOKEN = 'test-admin-token';
let app: TestRelay;
let browser: Browser;

beforeAll(async () => {
  app = await startTestRelay({ classroom: { code: CODE } });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(browser, { viewport: { width: 1280, height: 800 } }, run);

async function post(path: string, body: unknown = {}): Promise<Record<string, unknown>> {
  const res = await fetch(`${app.url}/api/lab/${path}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(res.status, path).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

/** A page whose WebSocket connections to the relay are counted. */
async function page(ctx: BrowserContext): Promise<{ page: Page; problems: PageProblems; sockets: () => number }> {
  const p = await ctx.newPage();
  const problems = await watchProblems(p);
  let sockets = 0;
  p.on('websocket', (ws) => {
    if (ws.url().endsWith('/ws')) sockets += 1;
  });
  return { page: p, problems, sockets: () => sockets };
}

const personNamed = (name: string) => app.lab.people().find((p) => p.name === name);

describe('classroom mode in the browser', () => {
  beforeEach(async () => {
    await post('reset', { confirm: 'reset' });
  });

  test('the join link puts the class code in the name form and takes it out of the address bar; the tab joins with it and says it is a laptop', async () => {
    await withContext(async (ctx) => {
      const { page: p, problems } = await page(ctx);
      await p.goto(`${app.url}/#code=${CODE}`);
      const code = p.getByTestId('class-code-input');
      await code.waitFor();
      expect(await code.inputValue()).toBe(CODE);
      expect(p.url()).not.toContain(CODE);
      await p.getByTestId('name-input').fill('Dana');
      await p.getByRole('button', { name: 'Open chat' }).click();
      await p.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      expect(p.url()).not.toContain(CODE);
      expect(personNamed('Dana')).toMatchObject({ online: true, device: 'laptop' });
      expect(problems.errors).toEqual([]);
    });
  });

  test('a tab without the code shows the code field with the refusal in words; a wrong code says so, the right one joins, and nothing is registered before', async () => {
    await withContext(async (ctx) => {
      const { page: p, problems } = await page(ctx);
      await p.goto(`${app.url}/?name=Eve`);
      await p.waitForSelector('body[data-ready="code"]', { timeout: 15_000 });
      await expect.poll(() => p.getByTestId('class-code-message').textContent()).toMatch(/needs the class code/);
      expect(await p.getByTestId('class-code-message').getAttribute('data-code')).toBe('class_code_required');
      expect(personNamed('Eve')).toBeUndefined();
      // A typo the page can tell (a 0 is never in a code) is caught before any login.
      await p.getByTestId('class-code-input').fill('K7M20X');
      await p.getByTestId('class-code-join').click();
      await expect.poll(() => p.getByTestId('class-code-message').textContent()).toMatch(/6 letters and digits/);
      await p.getByTestId('class-code-input').fill('aaaaaa');
      await p.getByTestId('class-code-join').click();
      await p.waitForSelector('body[data-ready="code"]', { timeout: 15_000 });
      await expect.poll(() => p.getByTestId('class-code-message').textContent()).toMatch(/not this room's class code/);
      expect(await p.getByTestId('class-code-message').getAttribute('data-code')).toBe('class_code_wrong');
      expect(personNamed('Eve')).toBeUndefined();
      await p.getByTestId('class-code-input').fill('k7m 2qx');
      await p.getByTestId('class-code-join').click();
      await p.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      expect(personNamed('Eve')?.online).toBe(true);
      expect(problems.errors.filter((e) => !/WebSocket/.test(e))).toEqual([]);
    });
  });

  test('a tab the teacher removed says "The teacher removed you from the room" and does not reconnect, not even after a reload', async () => {
    await withContext(async (ctx) => {
      const { page: p, sockets } = await page(ctx);
      await p.goto(`${app.url}/#code=${CODE}`);
      await p.getByTestId('name-input').fill('Fred');
      await p.getByRole('button', { name: 'Open chat' }).click();
      await p.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      const pin = personNamed('Fred')!.pin;
      expect(await post(`people/${pin}/kick`)).toMatchObject({ kicked: pin, sessions: 1 });
      await p.waitForSelector('body[data-ready="kicked"]');
      expect(await p.getByTestId('kicked-card').textContent()).toContain('The teacher removed you from the room');
      const before = sockets();
      await new Promise((r) => setTimeout(r, 1500));
      expect(sockets()).toBe(before);
      await p.reload();
      await p.waitForSelector('body[data-ready="kicked"]', { timeout: 15_000 });
      await new Promise((r) => setTimeout(r, 1500));
      expect(sockets()).toBe(before + 1);
      expect(app.relay.onlinePins()).not.toContain(pin);
    });
  });

  test('the teacher panel shows the join QR code large with the class code, hides both on request, and never shows the admin token', async () => {
    await withContext(async (ctx) => {
      const { page: p, problems } = await page(ctx);
      await p.goto(`${app.url}/teacher#token=${TOKEN}`);
      await p.locator('#status', { hasText: 'live' }).waitFor();
      const qr = p.getByTestId('join-qr');
      await qr.waitFor();
      expect(await qr.getAttribute('src')).toMatch(/^data:image\/svg\+xml;base64,/);
      const box = await qr.boundingBox();
      expect(box!.width).toBeGreaterThanOrEqual(300);
      // It is an image the browser decoded (not a broken one).
      expect(await qr.evaluate((img) => (img as HTMLImageElement).naturalWidth)).toBeGreaterThan(0);
      expect(await p.getByTestId('class-code').textContent()).toBe(CODE);
      expect(await p.getByTestId('join-links').textContent()).toContain(`/#code=${CODE}`);
      expect(await p.content()).not.toContain(TOKEN);
      await p.getByTestId('hide-code').click();
      await p.getByTestId('code-hidden').waitFor();
      expect(await p.getByTestId('join-qr').count()).toBe(0);
      expect(await p.content()).not.toContain(CODE);
      // Joining still works while it is hidden.
      expect(app.relay.getClassroom()?.hidden).toBe(true);
      await p.getByTestId('show-code').click();
      await p.getByTestId('join-qr').waitFor();
      expect(problems.errors).toEqual([]);
    });
  });

  test("the people list shows each participant's claimed device, and Remove then Let back in work from the panel", async () => {
    await withContext(async (ctx) => {
      const { page: chat } = await page(ctx);
      await chat.goto(`${app.url}/#code=${CODE}`);
      await chat.getByTestId('name-input').fill('Gina');
      await chat.getByRole('button', { name: 'Open chat' }).click();
      await chat.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      const pin = personNamed('Gina')!.pin;
      const { page: panel, problems } = await page(ctx);
      await panel.goto(`${app.url}/teacher#token=${TOKEN}`);
      const row = panel.locator(`[data-testid="person"][data-pin="${pin}"]`);
      await row.waitFor();
      expect(await row.getByTestId('person-device').textContent()).toBe('says: laptop');
      await row.getByTestId('kick').click();
      await chat.waitForSelector('body[data-ready="kicked"]');
      await row.getByTestId('readmit').waitFor();
      await row.getByTestId('readmit').click();
      await until(() => !app.relay.isKicked(pin), 'Gina let back in');
      await chat.reload();
      await chat.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      expect(problems.errors).toEqual([]);
    });
  });
});
