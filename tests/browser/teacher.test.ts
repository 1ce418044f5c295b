/**
 * The teacher panel in real Chromium (issue 11): every scenario run from the panel, each one's
 * visible result checked against what the lab API returned; the narration card and its source;
 * people, bots, the room's model, forgetting and the reset behind its confirmation; the metadata
 * picture; and, on the regulator console, the demand on the operator and the verdicts' honest
 * labels. No page reports a CSP violation or an error.
 */
import { beforeEach, describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { SCENARIOS } from '../../server/lab/scenarios/index.ts';
import { keysOf, type InterceptItem } from '../../shared/protocol.ts';
import type { RunRecord } from '../../server/lab/lab.ts';
import { browserSuite, focusTab, watchProblems, withContext as withBrowserContext, type PageProblems } from '../helpers/browser.ts';
import { knows, until, user } from '../helpers/relay.ts';

const TOKEN = 'test-admin-token';
const suite = browserSuite();
const LESSON = [...SCENARIOS].sort((a, b) => a.scene - b.scene);

const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> => withBrowserContext(suite.browser, { viewport: { width: 1280, height: 800 } }, run);

async function lab<T>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${suite.app.url}/api/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
}

async function openPanel(ctx: BrowserContext): Promise<{ page: Page; problems: PageProblems }> {
  const page = await ctx.newPage();
  const problems = await watchProblems(page);
  await page.goto(`${suite.app.url}/teacher#token=${TOKEN}`);
  await page.locator('#status', { hasText: 'live' }).waitFor();
  return { page, problems };
}

const pinOf = (name: string) => suite.app.lab.people().find((p) => p.name === name)?.pin ?? '';

describe('the teacher panel', () => {
  // The tests share the suite's relay, in any order: each starts from a reset room.
  beforeEach(async () => {
    await lab('lab/reset', { confirm: 'reset' });
  });

  test('"Next" runs every scenario in lesson order, and the panel shows each one\'s result summary and facts as the API returned them, its narration card with the pages to look at and the real event\'s date and source link', async () => {
    await withContext(async (ctx) => {
      const { page, problems } = await openPanel(ctx);
      expect(page.url()).not.toContain(TOKEN);
      expect(await page.content()).not.toContain(TOKEN);
      expect(await page.getByTestId('scenario').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.id))).toEqual(LESSON.map((s) => s.id));

      for (const scenario of LESSON) {
        const next = page.getByTestId('next');
        await page.locator(`[data-testid="next"][data-next="${scenario.id}"]:not([disabled])`).waitFor();
        await next.click();
        const result = page.locator(`[data-testid="result"][data-id="${scenario.id}"]`);
        await result.waitFor({ timeout: 20_000 });
        const { current } = await lab<{ current: RunRecord }>('lab/current');
        expect(current.id).toBe(scenario.id);
        expect(await result.getByTestId('result-summary').textContent()).toBe(current.result.summary);
        const facts = await result.getByTestId('fact').evaluateAll((els) => els.map((e) => [(e as HTMLElement).dataset.key, e.querySelector('dd')?.textContent]));
        expect(facts).toEqual(Object.entries(current.result.facts).map(([k, v]) => [k, typeof v === 'boolean' ? (v ? 'yes' : 'no') : String(v)]));

        const card = page.getByTestId('narration');
        expect(await card.getByTestId('narration-title').textContent()).toBe(scenario.title);
        expect(await card.getByTestId('narration-what').textContent()).toBe(scenario.narration.what);
        expect(await card.getByTestId('look').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.page))).toEqual(scenario.narration.look.map((l) => l.page));
        for (const link of await card.getByTestId('look-link').all())
          expect(await link.getAttribute('href')).toMatch(/^(\/|\/relay|\/regulator|\/attacker|\/projector|#metadata)$/);
        const source = card.getByTestId('source-link');
        expect(await source.getAttribute('href')).toBe(new URL(scenario.narration.source.link).href);
        expect(await source.getAttribute('rel')).toBe('noopener noreferrer');
        expect(await source.getAttribute('target')).toBe('_blank');
        expect(await card.getByTestId('source-date').getAttribute('datetime')).toBe(scenario.narration.source.date);
        expect(await card.getByTestId('source-date').textContent()).toMatch(/^(\d{1,2} [A-Z][a-z]+ )?\d{4}$/); // the year alone when the source gives no day
        expect(await page.locator(`[data-testid="scenario"][data-id="${scenario.id}"]`).getAttribute('data-state')).toBe('current');

        if (scenario.id === 'metadata-only') {
          // The picture, from the relay's log alone: Bob → Carol with the count the scenario reported.
          const cell = page.locator(`[data-testid="matrix-cell"][data-from="${pinOf('Bob')}"][data-to="${pinOf('Carol')}"]`);
          await expect.poll(async () => Number(await cell.getAttribute('data-count').catch(() => '0'))).toBeGreaterThanOrEqual(Number(current.result.facts['Bob → Carol']));
          expect(await cell.locator('.count').textContent()).toBe(await cell.getAttribute('data-count'));
          expect(await page.getByTestId('metadata-totals').textContent()).toMatch(/^\d+ messages · .* · first \d\d:\d\d:\d\d, last \d\d:\d\d:\d\d/);
        }
        if (scenario.id === 'sealed-sender') {
          await page.locator('[data-testid="matrix-row"][data-from="hidden"] [data-testid="matrix-cell"]').first().waitFor();
          expect(await page.locator('[data-testid="matrix-row"][data-from="hidden"] th').textContent()).toContain('hidden sender');
        }
      }
      // After the last scene "Next" starts again from the first.
      expect(await page.getByTestId('next').getAttribute('data-next')).toBe(LESSON[0]!.id);

      // The people list: the scenarios' bots, online and marked.
      for (const name of ['Bob', 'Carol', 'Dave']) {
        const person = page.locator(`[data-testid="person"][data-pin="${pinOf(name)}"]`);
        await person.waitFor();
        expect(await person.getAttribute('data-bot')).toBe('true');
        expect(await person.getAttribute('data-online')).toBe('true');
        expect(await person.getByTestId('person-name').textContent()).toBe(name);
      }
      expect(await page.getByTestId('panel-error').textContent()).toBe('');
      expect(problems.errors).toEqual([]);
    });
  }, 60_000);

  test('bots start and stop from the panel, offline people are forgotten, the room\'s key model switches, and "Reset the room" asks for confirmation before it empties the people list', async () => {
    await withContext(async (ctx) => {
      const { page, problems } = await openPanel(ctx);
      await page.getByTestId('people-empty').waitFor();

      await page.locator('[data-testid="bot-toggle"][data-name="Bob"]').click();
      await page.locator('[data-testid="bot-toggle"][data-name="Bob"][data-running="true"]').waitFor();
      await page.getByTestId('bot-name').fill('Eve Lab');
      await page.getByTestId('bot-start').click();
      const eve = page.locator('[data-testid="person"]', { hasText: 'Eve Lab' });
      await eve.locator('xpath=self::*[@data-online="true"][@data-bot="true"]').waitFor();
      await page.locator('[data-testid="bot-toggle"][data-name="Eve Lab"][data-running="true"]').click();
      await eve.locator('xpath=self::*[@data-online="false"]').waitFor();
      expect(await page.getByTestId('notice').textContent()).toContain('Eve Lab stopped');
      await page.getByTestId('forget-offline').click();
      await page.getByTestId('notice').filter({ hasText: 'Forgot 1 person' }).waitFor();
      await eve.waitFor({ state: 'detached' });

      // A bad bot name is refused by the API, and the panel says why.
      await page.getByTestId('bot-name').fill('<b>x</b>');
      await page.getByTestId('bot-start').click();
      await page.getByTestId('panel-error').filter({ hasText: 'a bot name is 1 to 20 letters' }).waitFor();

      // The room's key model.
      await page.getByTestId('model-app-key').check();
      expect(await page.getByTestId('sealed-sender').isDisabled()).toBe(true);
      await page.getByTestId('room-apply').click();
      await page.locator('[data-testid="in-force"][data-model="app-key"]').waitFor();
      expect(suite.app.relay.getPolicy().room.model).toBe('app-key');
      expect(await page.getByTestId('room-line').textContent()).toContain('shared app key');
      await page.getByTestId('model-e2e').check();
      await page.getByTestId('sealed-sender').check();
      await page.getByTestId('room-apply').click();
      await page.locator('[data-testid="in-force"][data-model="e2e"][data-sealed="true"]').waitFor();
      expect(suite.app.relay.getPolicy().room).toMatchObject({ model: 'e2e', sealedSender: true });

      // Reset: the first click only asks; cancel leaves everything; the second click resets.
      await page.getByTestId('reset').click();
      await page.getByTestId('reset-warning').waitFor();
      expect(await page.getByTestId('reset-warning').textContent()).toContain('Everyone is disconnected and forgotten');
      await page.waitForTimeout(300);
      expect(await page.getByTestId('person').count()).toBe(1);
      await page.getByTestId('reset-cancel').click();
      expect(await page.getByTestId('reset-warning').count()).toBe(0);
      expect(suite.app.lab.people()).toHaveLength(1);
      await page.getByTestId('reset').click();
      await page.getByTestId('reset-confirm').click();
      await page.getByTestId('people-empty').waitFor();
      expect(await page.getByTestId('notice').textContent()).toContain('The room is reset: 1 person forgotten');
      expect(suite.app.lab.people()).toEqual([]);
      await page.locator('[data-testid="in-force"][data-model="e2e"][data-sealed="false"][data-tap="false"]').waitFor();
      expect(suite.app.regulator.auditLog().some((a) => a.action === 'room reset')).toBe(true);
      // The refused bot name's 400 is the one console error the browser logs for it.
      expect(problems.errors.filter((e) => !/status of 400/.test(e))).toEqual([]);
    });
  }, 30_000);

  test('hostile display names reach the people list and the metadata picture as text only: no element is injected and no script runs', async () => {
    const names = ['<img src=x onerror=window.__xss=1>', '<script>window.__xss=1</script>'];
    const [a, b] = await Promise.all(names.map((n) => user(suite.app.wsUrl, n)));
    try {
      await knows(a!, b!.m.pin);
      const sent = a!.m.sendText([b!.m.pin], 'hello');
      await until(() => b!.m.messages.has(sent.id), 'the hostile-named message arrives');
      await withContext(async (ctx) => {
        const { page, problems } = await openPanel(ctx);
        for (const [i, name] of names.entries()) {
          const u = i === 0 ? a! : b!;
          await page.locator(`[data-testid="person"][data-pin="${u.m.pin}"]`).waitFor();
          expect(await page.locator(`[data-testid="person"][data-pin="${u.m.pin}"] [data-testid="person-name"]`).textContent()).toBe(name);
        }
        await page.locator(`[data-testid="matrix-cell"][data-from="${a!.m.pin}"][data-to="${b!.m.pin}"]`).waitFor();
        expect(await page.getByTestId('metadata-matrix').textContent()).toContain(names[1]);
        expect(await page.locator('#app img, #app script, #app svg, #app iframe').count()).toBe(0);
        expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
        expect(problems.errors).toEqual([]);
      });
    } finally {
      a!.m.stop();
      b!.m.stop();
    }
  });

  test('without a token or with a wrong one the panel asks for it and says why, shows nothing else, and a typed token opens it', async () => {
    await withContext(async (ctx) => {
      const page = await ctx.newPage();
      const problems = await watchProblems(page);
      await page.goto(`${suite.app.url}/teacher`);
      await page.getByTestId('token-form').waitFor();
      expect(await page.locator('#controls').isHidden()).toBe(true);
      await page.getByTestId('token-input').fill('a-wrong-token-of-16+');
      await page.getByRole('button', { name: 'Open the panel' }).click();
      await page.getByTestId('auth-error').filter({ hasText: 'Wrong admin token' }).waitFor();
      expect(await page.locator('#stage').isHidden()).toBe(true);
      await page.getByTestId('token-input').fill(TOKEN);
      await page.getByRole('button', { name: 'Open the panel' }).click();
      await page.locator('#status', { hasText: 'live' }).waitFor();
      expect(await page.content()).not.toContain(TOKEN);
      // The wrong token's 403 is the one console error the browser logs for it.
      expect(problems.errors.filter((e) => !e.includes('403'))).toEqual([]);
    });
  });

  test('on the console, "Serve a demand on the operator" shows plaintext for a server-held key message and metadata and ciphertext only for an end-to-end one; the verdicts say which key read an app-key message and that the server holds a BES one; the relay view says its server reads in that room', async () => {
    await lab('lab/scenarios/end-to-end/run', {});
    await lab('lab/scenarios/shared-app-key/run', {});
    await lab('lab/scenarios/server-held-keys/run', {});
    // The bots answer each message 300 ms after reading it: wait until the archive is quiet.
    for (let size = -1; size !== suite.app.regulator.archiveSize(); ) {
      size = suite.app.regulator.archiveSize();
      await new Promise((r) => setTimeout(r, 800));
    }
    const { intercepts } = await lab<{ intercepts: InterceptItem[] }>('regulator/intercepts');
    const byModel = (model: string) => intercepts.filter((i) => keysOf(i.env).model === model);
    const bes = byModel('server-key')[0]!;
    const bbm = byModel('app-key')[0]!;
    const e2e = byModel('e2e');
    expect(e2e.length).toBeGreaterThanOrEqual(2);

    await withContext(async (ctx) => {
      // The console opened from the panel's link gets the panel's token (the tab's session), never in a URL.
      const { page: panel, problems } = await openPanel(ctx);
      const [console_] = await Promise.all([ctx.waitForEvent('page'), panel.getByTestId('link-regulator').click()]);
      const consoleProblems = await watchProblems(console_);
      await console_.locator('#status', { hasText: 'live' }).waitFor();
      expect(console_.url()).toBe(`${suite.app.url}/regulator`);
      await focusTab(console_);

      // The verdicts' labels.
      const item = (id: string) => console_.locator(`[data-testid="intercept"][data-id="${id}"]`);
      await item(bes.env.id).waitFor();
      expect(await item(bbm.env.id).getAttribute('data-via')).toBe('app key');
      expect(await item(bbm.env.id).getByTestId('intercept-via').textContent()).toBe("— with the app's shared key (every copy of the app has it)");
      expect(await item(bes.env.id).getAttribute('data-code')).toBe('server_held');
      expect(await item(bes.env.id).getByTestId('intercept-unreadable').textContent()).toContain('the enterprise server holds the key');
      expect(await item(bes.env.id).getByTestId('intercept-reason').textContent()).toContain('Its key is held by the enterprise server');
      // The shared envelope view, as archived.
      await item(bes.env.id).getByTestId('envelope-details').locator('summary').click();
      expect(await item(bes.env.id).getByTestId('wire-model').textContent()).toBe('server-key');
      expect(await item(bes.env.id).getByTestId('wire-escrow').getAttribute('data-escrow')).toBe('none');

      // The demand.
      await console_.getByTestId('demand-button').click();
      const handed = (id: string) => console_.locator(`[data-testid="demand-item"][data-id="${id}"]`);
      await handed(bes.env.id).waitFor();
      for (const [model, by] of [
        ['server-key', 'server key'],
        ['app-key', 'app key'],
      ] as const) {
        for (const i of byModel(model)) {
          expect(await handed(i.env.id).getAttribute('data-status')).toBe('plaintext');
          expect(await handed(i.env.id).getAttribute('data-by')).toBe(by);
        }
      }
      const board = console_.getByTestId('demand-text').getByText('Board meeting moved to Tuesday. Confidential.', { exact: true });
      expect(await board.count()).toBe(1);
      expect(await console_.locator('[data-testid="demand-item"][data-model="server-key"]', { has: board }).count()).toBe(1);
      for (const i of e2e) {
        expect(await handed(i.env.id).getAttribute('data-status')).toBe('ciphertext only');
        expect(await handed(i.env.id).getByTestId('demand-why').textContent()).toMatch(/^metadata and ciphertext only — end to end/);
        expect(await handed(i.env.id).getByTestId('demand-text').count()).toBe(0);
      }
      const servers = byModel('server-key').length;
      const apps = byModel('app-key').length;
      expect(await console_.getByTestId('demand-summary').textContent()).toContain(
        `handed over ${servers + apps} of the ${intercepts.length} archived envelopes in plaintext (${servers} opened with the server's key, ${apps} with the app's shared key)`,
      );
      expect(await console_.locator('[data-testid="demand-model"][data-model="e2e"]').getAttribute('data-plaintext')).toBe('0');
      expect(suite.app.regulator.auditLog().some((a) => a.action === 'demand served on the operator')).toBe(true);

      // The relay view says the server reads in this room, and shows what it read.
      const view = await ctx.newPage();
      const viewProblems = await watchProblems(view);
      await view.goto(`${suite.app.url}/relay`);
      await view.locator('[data-testid="statement"][data-model="server-key"]').waitFor();
      expect(await view.getByTestId('statement').textContent()).toContain('It reads every message');
      expect(await view.locator(`[data-testid="traffic-row"][data-id="${bes.env.id}"] [data-testid="server-read"]`).count()).toBe(1);
      expect(await view.locator(`[data-testid="traffic-row"][data-id="${bes.env.id}"] [data-testid="escrow-cell"]`).textContent()).toBe('none: the server holds the key');
      // The words the app-key scenario's card tells the class to look for.
      expect(await view.locator(`[data-testid="traffic-row"][data-id="${bbm.env.id}"]`).textContent()).toContain('the shared app key: anyone with the app can read it');
      expect(await view.locator(`[data-testid="traffic-row"][data-id="${bbm.env.id}"] [data-testid="escrow-cell"]`).textContent()).toBe('none: the app key opens it');
      expect(problems.errors).toEqual([]);
      expect(consoleProblems.errors).toEqual([]);
      expect(viewProblems.errors).toEqual([]);
    });
  }, 30_000);
});
