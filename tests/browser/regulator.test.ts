/**
 * The regulator console in real Chromium (issue 3): the tap switched from the
 * console, the banner in announced and silent mode, the intercept feed, and a
 * check of every claim the console made against the exported bytes.
 */
import { readFileSync } from 'node:fs';
import { beforeEach, describe, expect, test } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { Envelope } from '../../shared/protocol.ts';
import { escrowKeyPairFromSecret, fromB64 } from '../../shared/crypto.ts';
import { openArchived, parseArchiveLine } from '../../shared/archive.ts';
import { OpenFailure } from '../../shared/failures.ts';
import { openWithEscrow } from '../../shared/envelope.ts';
import { knows, until, user } from '../helpers/relay.ts';
import { browserSuite, focusTab, messageWith, openChat, openDm, typeAndSend, watchProblems, withContext as withBrowserContext } from '../helpers/browser.ts';

const TOKEN = 'test-admin-token';
const suite = browserSuite();

const withContext = <T>(run: (ctx: BrowserContext) => Promise<T>): Promise<T> =>
  withBrowserContext(suite.browser, { viewport: { width: 1280, height: 800 }, acceptDownloads: true }, run);

/** Set the tap from the console's own controls, then wait until the console shows the new state. */
async function setTap(page: Page, tap: boolean, announced: boolean): Promise<void> {
  await focusTab(page);
  await page.getByTestId(tap ? 'tap-on' : 'tap-off').check();
  await page.getByTestId('scope-all').check();
  await page.getByTestId(announced ? 'announced' : 'silent').check();
  await page.getByTestId('apply-tap').click();
  await page.locator(`[data-testid="tap-state"][data-tap="${tap}"][data-announced="${announced}"]`).waitFor();
  expect(await page.getByTestId('tap-error').textContent()).toBe('');
}

const intercept = (page: Page, id: string) => page.locator(`[data-testid="intercept"][data-id="${id}"]`);
const idOf = async (page: Page, text: string) => (await messageWith(page, text).getAttribute('data-id'))!;
const readersOf = (page: Page, text: string) => messageWith(page, text).getByTestId('readers').textContent();

async function api(path: string): Promise<Response> {
  return fetch(`${suite.app.url}/api/regulator/${path}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
}

describe('regulator console', () => {
  // The tests share the suite's relay, in any order: each starts with the tap off, whatever the one before left.
  beforeEach(async () => {
    const res = await fetch(`${suite.app.url}/api/regulator/tap`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ tap: false }),
    });
    expect(res.status).toBe(200);
  });

  test('the console reads only messages sent under the tap, the banner shows only when announced, and every READ/unreadable claim matches the exported archive opened with the exported key', async () => {
    await withContext(async (ctx) => {
      const console_ = await ctx.newPage();
      const consoleProblems = await watchProblems(console_);
      await console_.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await console_.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
      expect(console_.url()).not.toContain(TOKEN);

      const alice = await openChat(ctx, suite.app.url, 'Alice');
      const bob = await openChat(ctx, suite.app.url, 'Bob');
      await openDm(alice.page, bob.pin);
      await bob.page.locator(`[data-testid="contact"][data-pin="${alice.pin}"]`).waitFor();
      await openDm(bob.page, alice.pin);

      // 1. Before the tap: end-to-end, and the console says so.
      const before = 'before the tap: only Bob reads this';
      await typeAndSend(alice.page, before);
      await messageWith(bob.page, before).waitFor();
      const beforeId = await idOf(alice.page, before);
      await intercept(console_, beforeId).waitFor();
      expect(await intercept(console_, beforeId).getAttribute('data-readable')).toBe('false');
      expect(await intercept(console_, beforeId).innerText()).toContain('unreadable — end-to-end encrypted: no escrow field');
      expect(await console_.getByTestId('intercepts').textContent()).not.toContain(before);
      expect(await alice.page.getByTestId('tap-banner').count()).toBe(0);

      // 2. Tap on, all traffic, announced: both tabs show the banner; the next message is read.
      await setTap(console_, true, true);
      for (const tab of [alice, bob]) {
        await tab.page.getByTestId('tap-banner').waitFor();
        expect(await tab.page.getByTestId('tap-banner').textContent()).toContain('The regulator can read new messages you send');
        expect(await tab.page.getByTestId('tap-banner').textContent()).toContain('all traffic');
      }
      const tapped = 'under the announced tap';
      await typeAndSend(alice.page, tapped);
      await messageWith(bob.page, tapped).waitFor();
      const tappedId = await idOf(alice.page, tapped);
      await intercept(console_, tappedId).waitFor();
      expect(await intercept(console_, tappedId).getAttribute('data-readable')).toBe('true');
      expect(await intercept(console_, tappedId).getByTestId('intercept-text').textContent()).toBe(tapped);

      // Who can read, from each envelope: the new message names the regulator, the earlier one is still end-to-end.
      for (const tab of [alice, bob]) {
        expect(await readersOf(tab.page, tapped)).toMatch(/the regulator \(escrow key [0-9a-f]{16}/);
        expect(await readersOf(tab.page, before)).toContain('(end-to-end)');
        expect(await readersOf(tab.page, before)).not.toContain('regulator');
      }

      // 3. Silent: the banner goes away in both tabs while the tap stays on and keeps reading.
      await setTap(console_, true, false);
      for (const tab of [alice, bob]) await tab.page.getByTestId('tap-banner').waitFor({ state: 'detached' });
      const silent = 'under the silent tap';
      await typeAndSend(bob.page, silent);
      await messageWith(alice.page, silent).waitFor();
      const silentId = await idOf(bob.page, silent);
      await intercept(console_, silentId).waitFor();
      expect(await intercept(console_, silentId).getAttribute('data-readable')).toBe('true');
      expect(await intercept(console_, silentId).getByTestId('intercept-text').textContent()).toBe(silent);
      expect(await alice.page.getByTestId('tap-banner').count()).toBe(0);

      // 4. Off: new messages are unreadable again; what was captured stays readable.
      await setTap(console_, false, true);
      const after = 'after the tap: closed again';
      await typeAndSend(alice.page, after);
      await messageWith(bob.page, after).waitFor();
      const afterId = await idOf(alice.page, after);
      await intercept(console_, afterId).waitFor();
      expect(await intercept(console_, afterId).getAttribute('data-readable')).toBe('false');
      expect(await readersOf(alice.page, after)).toContain('(end-to-end)');
      // The switch is off now, but the message sent under it still names the regulator: its envelope carries the escrow field.
      expect(await readersOf(alice.page, tapped)).toMatch(/the regulator \(escrow key [0-9a-f]{16}/);
      expect(await intercept(console_, tappedId).getAttribute('data-readable')).toBe('true');

      // 5. The console's claims against the bytes: export the archive and the key, open each envelope in Node.
      // (The suite's relay is shared by the tests of this file, in any order: only this test's four envelopes are checked.)
      const mine = new Set([beforeId, tappedId, silentId, afterId]);
      const shown = (
        await console_.locator('[data-testid="intercept"]').evaluateAll((nodes) =>
          nodes.map((n) => ({
            id: (n as HTMLElement).dataset.id!,
            readable: (n as HTMLElement).dataset.readable === 'true',
            text: n.querySelector('[data-testid="intercept-text"]')?.textContent ?? null,
          })),
        )
      ).filter((s) => mine.has(s.id));
      expect(shown.map((s) => s.id).sort()).toEqual([...mine].sort());
      expect(
        shown
          .filter((s) => s.readable)
          .map((s) => s.id)
          .sort(),
      ).toEqual([tappedId, silentId].sort());

      const archiveRes = await api('archive.jsonl');
      expect(archiveRes.status).toBe(200);
      const archive = (await archiveRes.text())
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { senderPk: string; env: unknown });
      const keyRes = await api('escrow-key');
      expect(keyRes.status).toBe(200);
      const keyFile = (await keyRes.json()) as { kid: string; sk: string };
      const escrow = escrowKeyPairFromSecret(fromB64(keyFile.sk));
      expect(escrow.kid).toBe(keyFile.kid);
      expect(await console_.getByTestId('kid').textContent()).toBe(keyFile.kid);

      expect(archive.filter((l) => mine.has(Envelope.parse(l.env).id))).toHaveLength(shown.length);
      for (const item of shown) {
        const line = archive.find((l) => Envelope.parse(l.env).id === item.id);
        expect(line, `archive holds ${item.id}`).toBeDefined();
        const opened = openWithEscrow(Envelope.parse(line!.env), escrow, fromB64(line!.senderPk));
        expect(opened.ok, `console said ${item.id} is ${item.readable ? 'READ' : 'unreadable'}`).toBe(item.readable);
        if (opened.ok) expect(opened.value.text).toBe(item.text);
      }

      // The key export is in the audit log the console shows.
      await console_.locator('[data-testid="audit-entry"][data-action="escrow key exported"]').first().waitFor();
      expect(consoleProblems.errors).toEqual([]);
      expect(alice.problems.errors).toEqual([]);
      expect(bob.problems.errors).toEqual([]);
    });
  });

  test('every page labels an envelope by what is true of its bytes: the console says opened, escrow field that does not open (a forger), or end-to-end; the relay view and a recipient say only "present, cannot check"; the sender says what it sealed', async () => {
    await withContext(async (ctx) => {
      const console_ = await ctx.newPage();
      await console_.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await console_.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
      const relayView = await ctx.newPage();
      await relayView.goto(`${suite.app.url}/relay`);
      const alice = await openChat(ctx, suite.app.url, 'Alma');
      const bob = await openChat(ctx, suite.app.url, 'Boris');
      // A rogue client on the real client code: it fills the escrow field with random bytes under the right key id.
      const forger = await user(suite.app.wsUrl, 'Forger', undefined, { escrow: 'forge' });
      await knows(forger, bob.pin);
      await setTap(console_, true, true);
      await until(() => forger.m.policy?.tap === true, 'the forger has the tap policy');

      await openDm(alice.page, bob.pin);
      await typeAndSend(alice.page, 'labels: sealed to the regulator too');
      const tappedId = await idOf(alice.page, 'labels: sealed to the regulator too');
      const forged = forger.m.sendText([bob.pin], 'labels: a forged escrow field');
      await until(() => forger.m.messages.get(forged.id)?.state !== 'sending', 'the relay answered the forged field');
      expect(forger.m.messages.get(forged.id)?.state, 'the relay accepted the forged field').toMatch(/^(sent|delivered|read)$/);
      await setTap(console_, false, true);
      await alice.page.getByTestId('tap-banner').waitFor({ state: 'detached' });
      await typeAndSend(alice.page, 'labels: end to end again');
      const plainId = await idOf(alice.page, 'labels: end to end again');

      // The console: three different truths, each with its own words.
      for (const [id, status, words] of [
        [tappedId, 'opened', 'labels: sealed to the regulator too'],
        [forged.id, 'not-opened', 'the escrow field is there but does not open'],
        [plainId, 'end-to-end', 'end-to-end encrypted: no escrow field'],
      ] as const) {
        await console_.locator(`[data-testid="intercept"][data-id="${id}"][data-status="${status}"]`).waitFor();
        expect(await intercept(console_, id).innerText(), status).toContain(words);
      }
      expect(await intercept(console_, forged.id).getAttribute('data-code')).toBe(OpenFailure.EscrowDoesNotOpen);
      expect(await intercept(console_, forged.id).innerText()).not.toContain('end-to-end');

      // The relay view cannot tell the genuine field from the forged one, and says so.
      const cell = (id: string) => relayView.locator(`[data-testid="traffic-row"][data-id="${id}"] [data-testid="escrow-cell"]`);
      await cell(plainId).waitFor();
      expect(await cell(tappedId).getAttribute('data-escrow')).toBe('present');
      expect(await cell(forged.id).getAttribute('data-escrow')).toBe('present');
      expect(await cell(tappedId).getAttribute('title')).toContain('cannot tell whether it opens');
      expect(await cell(plainId).getAttribute('data-escrow')).toBe('none');

      // The wire panels: Alice sealed hers; Bob, receiving, can only see a field is there.
      const wire = (page: Page, id: string, dir: string) => page.locator(`[data-testid="wire-record"][data-id="${id}"][data-direction="${dir}"] [data-testid="wire-escrow"]`);
      await focusTab(alice.page);
      expect(await wire(alice.page, tappedId, 'out').getAttribute('data-escrow')).toBe('sealed');
      expect(await wire(alice.page, plainId, 'out').getAttribute('data-escrow')).toBe('none');
      await focusTab(bob.page);
      await bob.page.getByTestId('wire-scope-all').click();
      await wire(bob.page, forged.id, 'in').waitFor();
      expect(await wire(bob.page, tappedId, 'in').getAttribute('data-escrow')).toBe('present');
      expect(await wire(bob.page, forged.id, 'in').getAttribute('data-escrow')).toBe('present');

      // And each console label is what the real escrow key does with the archived bytes.
      const keyFile = (await (await api('escrow-key')).json()) as { sk: string };
      const escrow = escrowKeyPairFromSecret(fromB64(keyFile.sk));
      const lines = (await (await api('archive.jsonl')).text())
        .split('\n')
        .filter(Boolean)
        .map((l) => parseArchiveLine(l));
      const verdict = (id: string) => {
        const line = lines.find((l) => l.ok && l.value.env.id === id);
        if (!line?.ok) throw new Error(`${id} not in the archive`);
        return openArchived(line.value, escrow);
      };
      expect(verdict(tappedId)).toMatchObject({ status: 'opened', text: 'labels: sealed to the regulator too' });
      expect(verdict(forged.id)).toMatchObject({ status: 'not-opened', code: OpenFailure.EscrowDoesNotOpen });
      expect(verdict(plainId)).toMatchObject({ status: 'end-to-end', code: OpenFailure.NoEscrowField });
      forger.m.stop();
    });
  });

  test("the console's export buttons download the archive and the escrow key through Blob URLs, and the key export is audited", async () => {
    // Something in the archive to export: two Node clients built on client/core exchange a message.
    const ivan = await user(suite.app.wsUrl, 'Ivan');
    const judy = await user(suite.app.wsUrl, 'Judy');
    await knows(ivan, judy.m.pin);
    const sent = ivan.m.sendText([judy.m.pin], 'for the export');
    await until(() => judy.m.messages.has(sent.id), 'Judy has the message');
    ivan.m.stop();
    judy.m.stop();

    await withContext(async (ctx) => {
      const page = await ctx.newPage();
      const problems = await watchProblems(page);
      await page.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await page.locator('[data-testid="tap-state"]').and(page.locator('[data-tap]')).waitFor();
      const kid = await page.getByTestId('kid').textContent();
      const exportsBefore = await page.locator('[data-testid="audit-entry"][data-action="escrow key exported"]').count();

      const [archive] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-archive').click()]);
      expect(archive.suggestedFilename()).toBe('archive.jsonl');
      const lines = readFileSync(await archive.path(), 'utf8')
        .split('\n')
        .filter(Boolean);
      expect(lines.length).toBe(suite.app.regulator.archiveSize());
      expect(lines.some((l) => l.includes(sent.id))).toBe(true);

      const [key] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-key').click()]);
      expect(key.suggestedFilename()).toBe('escrow-key.json');
      const file = JSON.parse(readFileSync(await key.path(), 'utf8')) as { kid: string; sk: string };
      expect(file.kid).toBe(kid);
      expect(escrowKeyPairFromSecret(fromB64(file.sk)).kid).toBe(kid);
      await expect.poll(() => page.locator('[data-testid="audit-entry"][data-action="escrow key exported"]').count()).toBe(exportsBefore + 1);
      expect(problems.errors).toEqual([]);
    });
  });

  test('a wrong token gets "wrong token", no feed and no tap controls, and changes nothing', async () => {
    await withContext(async (ctx) => {
      const policyBefore = suite.app.relay.getPolicy();
      const page = await ctx.newPage();
      await page.goto(`${suite.app.url}/regulator#token=not-the-token`);
      await page.getByTestId('auth-error').waitFor();
      expect(await page.getByTestId('auth-error').textContent()).toBe('wrong token');
      expect(await page.locator('#feed-card').isVisible()).toBe(false);
      expect(await page.locator('#controls').isVisible()).toBe(false);
      expect(await page.getByTestId('intercept').count()).toBe(0);
      expect(page.url()).not.toContain('not-the-token');
      expect(suite.app.relay.getPolicy()).toEqual(policyBefore);

      // The right token typed into the form opens the console.
      await page.getByTestId('token-input').fill(TOKEN);
      await page.getByRole('button', { name: 'Open console' }).click();
      await page.locator('#feed-card').waitFor({ state: 'visible' });
      expect(await page.getByTestId('auth-error').count()).toBe(0);
    });
  });

  test('a warrant set from the console names only the checked PINs: the named user is told "a warrant naming you", an empty warrant is refused and changes nothing', async () => {
    await withContext(async (ctx) => {
      const kim = await openChat(ctx, suite.app.url, 'Kim');
      const leo = await openChat(ctx, suite.app.url, 'Leo');
      const page = await ctx.newPage();
      await page.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await page.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
      await focusTab(page);

      // A warrant naming nobody: refused in the page, and the relay's policy does not move.
      const epoch = suite.app.relay.getPolicy().epoch;
      await page.getByTestId('tap-on').check();
      await page.getByTestId('scope-warrant').check();
      await page.getByTestId('apply-tap').click();
      expect(await page.getByTestId('tap-error').textContent()).toBe('A warrant must name at least one PIN.');
      await page.getByTestId('warrant-text').fill('not-a-pin');
      await page.getByTestId('apply-tap').click();
      expect(await page.getByTestId('tap-error').textContent()).toContain('is not a PIN');
      expect(suite.app.relay.getPolicy().epoch).toBe(epoch);

      // A warrant for Kim only.
      await page.getByTestId('warrant-text').fill('');
      await page.locator(`[data-testid="warrant-pin"][value="${kim.pin}"]`).check();
      await page.getByTestId('apply-tap').click();
      await page.locator('[data-testid="tap-state"][data-tap="true"][data-scope="warrant"]').waitFor();
      expect(await page.getByTestId('tap-state').textContent()).toContain(`Kim (${kim.pin})`);
      expect(suite.app.relay.getPolicy()).toMatchObject({ tap: true, scope: 'warrant', pins: [kim.pin] });
      await kim.page.getByTestId('tap-banner').waitFor();
      expect(await kim.page.getByTestId('tap-banner').textContent()).toContain('a warrant naming you');
      await leo.page.getByTestId('tap-banner').waitFor();
      expect(await leo.page.getByTestId('tap-banner').textContent()).toContain(`to or receive from Kim (${kim.pin})`);

      // Off again, as the other tests expect.
      await setTap(page, false, true);
      await kim.page.getByTestId('tap-banner').waitFor({ state: 'detached' });
    });
  });

  test('a tap change not applied yet is shown as pending until Apply, and after "off" the form keeps no stale warrant that the next "on" would reuse', async () => {
    await withContext(async (ctx) => {
      const kim = await openChat(ctx, suite.app.url, 'Kim');
      const page = await ctx.newPage();
      await page.goto(`${suite.app.url}/regulator#token=${TOKEN}`);
      await page.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
      await focusTab(page);
      expect(await page.getByTestId('tap-pending').isHidden()).toBe(true);

      // Choose "on" but do not apply: the page says it is not in force, and the relay's policy did not move.
      await page.getByTestId('tap-on').check();
      await page.getByTestId('scope-all').check();
      await page.getByTestId('tap-pending').waitFor();
      expect(await page.getByTestId('tap-pending').textContent()).toContain('Not applied yet: tap on, all traffic');
      expect(await page.getByTestId('tap-state').getAttribute('data-tap')).toBe('false');
      expect(suite.app.relay.getPolicy().tap).toBe(false);
      // Put back as it was: nothing pending any more.
      await page.getByTestId('tap-off').check();
      await page.getByTestId('tap-pending').waitFor({ state: 'hidden' });

      // A warrant for Kim, applied; then off.
      await page.getByTestId('tap-on').check();
      await page.getByTestId('scope-warrant').check();
      await page.locator(`[data-testid="warrant-pin"][value="${kim.pin}"]`).check();
      await page.getByTestId('apply-tap').click();
      await page.locator('[data-testid="tap-state"][data-tap="true"][data-scope="warrant"]').waitFor();
      await page.getByTestId('tap-pending').waitFor({ state: 'hidden' });
      await page.getByTestId('tap-off').check();
      await page.getByTestId('apply-tap').click();
      await page.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
      // The warrant is gone from the form and from the stored settings.
      expect(await page.getByTestId('scope-all').isChecked()).toBe(true);
      expect(await page.locator('[data-testid="warrant-pin"]:checked').count()).toBe(0);
      expect(suite.app.regulator.tapSettings()).toMatchObject({ tap: false, scope: 'all', pins: [] });
      // "On" again without naming a scope anew is all traffic, not the old warrant.
      await page.getByTestId('tap-on').check();
      expect(await page.getByTestId('tap-pending').textContent()).toContain('tap on, all traffic');
      await page.getByTestId('tap-off').check();
    });
  });
});
