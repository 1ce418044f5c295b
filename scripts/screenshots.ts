/**
 * `npm run screenshots`: start a relay in memory, play a short scene with
 * Alice, Bob and Carol in Chromium, the relay view and the regulator console,
 * with the tap on, and write docs/screenshots/{chat,relay-view,regulator,group-apart}.png;
 * then reset the room from the teacher panel, walk the lesson's first five scenes with "Next"
 * and write docs/screenshots/teacher.png: the narration card and the metadata picture;
 * then the last two scenes and docs/screenshots/demand.png, the console's demand on the
 * operator; then a clean room, the tap and the breach (scenes 2 and 8) and
 * docs/screenshots/attacker.png, the attacker console (all 1280x800); then
 * docs/screenshots/projector.png, the projector opened from the teacher panel in its
 * sender | relay | recipient layout (1280x720), and docs/screenshots/phone.png, a chat on a
 * 390x844 touch screen. Needs Debian's Chromium (apt-get install -y chromium).
 */
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { startApp } from '../server/app.ts';
import { fromB64 } from '../shared/crypto.ts';
import { sealEnvelope } from '../shared/envelope.ts';
import { focusTab, launchChromium, messageWith, openChat, openDm, typeAndSend } from '../tests/helpers/browser.ts';
import { rawClient } from '../tests/helpers/raw-client.ts';

const outDir = fileURLToPath(new URL('../docs/screenshots/', import.meta.url));
const viewport = { width: 1280, height: 800 };

async function say(from: Page, to: Page, text: string): Promise<void> {
  await typeAndSend(from, text);
  await messageWith(to, text).waitFor();
}

async function shoot(page: Page, file: string): Promise<void> {
  await focusTab(page);
  await page.mouse.move(viewport.width - 5, viewport.height - 5);
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
  await page.screenshot({ path: `${outDir}${file}` });
  process.stdout.write(`wrote docs/screenshots/${file}\n`);
}

async function main(): Promise<void> {
  mkdirSync(outDir, { recursive: true });
  const token = randomBytes(16).toString('hex');
  const app = await startApp({ port: 0, host: '127.0.0.1', dataDir: null, adminToken: token });
  const browser = await launchChromium();
  try {
    const ctx = await browser.newContext({ viewport });
    const relayView = await ctx.newPage();
    await relayView.goto(`${app.url}/relay`);
    const alice = await openChat(ctx, app.url, 'Alice');
    const bob = await openChat(ctx, app.url, 'Bob');
    const carol = await openChat(ctx, app.url, 'Carol');

    // Before the tap: end-to-end.
    await openDm(alice.page, bob.pin);
    await openDm(bob.page, alice.pin);
    await say(alice.page, bob.page, 'Are we still on for Friday?');
    await say(bob.page, alice.page, 'Yes, 7 pm at the usual place.');

    // The teacher turns the tap on from the console: all traffic, announced.
    const console_ = await ctx.newPage();
    await console_.goto(`${app.url}/regulator#token=${token}`);
    await console_.locator('[data-testid="tap-state"][data-tap="false"]').waitFor();
    await console_.getByTestId('tap-on').check();
    await console_.getByTestId('scope-all').check();
    await console_.getByTestId('announced').check();
    await console_.getByTestId('apply-tap').click();
    await console_.locator('[data-testid="tap-state"][data-tap="true"]').waitFor();
    await alice.page.getByTestId('tap-banner').waitFor();

    // Under the tap.
    await say(alice.page, bob.page, 'Bring the quarterly numbers. They are not public yet.');
    await say(bob.page, alice.page, "Will do. Please don't forward this.");

    // A group of three.
    await focusTab(alice.page);
    await alice.page.getByTestId('new-group').locator('summary').click();
    await alice.page.getByTestId('group-name').fill('Project Falcon');
    for (const pin of [bob.pin, carol.pin]) await alice.page.locator(`[data-testid="group-member"][value="${pin}"]`).check();
    await alice.page.getByTestId('create-group').click();
    await typeAndSend(alice.page, 'Kick-off moved to Monday 9:00.');
    for (const tab of [carol, bob]) {
      await focusTab(tab.page);
      await tab.page.locator('[data-testid="chat-item"]', { hasText: 'Project Falcon' }).click();
      await messageWith(tab.page, 'Kick-off moved to Monday 9:00.').waitFor();
    }
    await say(carol.page, alice.page, 'Works for me.');

    // An outsider, calling herself Carol, writes "to the group" with its public conv id: Bob's tab
    // keeps it apart and says why (signed membership, docs/wire-format.md section 8).
    const groupId = (await alice.page.locator('[data-testid="chat-item"].active').getAttribute('data-chat')) ?? '';
    const mallory = await rawClient(`${app.url.replace('http', 'ws')}/ws`, { name: 'Carol' });
    const bobKey = app.relay.directory().find((d) => d.pin === bob.pin)!.pk;
    const { env } = sealEnvelope({
      sender: mallory.identity,
      to: [{ pin: bob.pin, signPk: fromB64(bobKey) }],
      conv: groupId,
      body: { text: 'Change of plan: send the numbers to me directly.', group: 'Project Falcon' },
      escrow: { pk: fromB64(app.relay.getPolicy().escrowPk!), kid: app.relay.getPolicy().escrowKid! },
    });
    mallory.send({ type: 'send', env });
    await mallory.next('accepted', (f) => f.id === env.id);
    await focusTab(bob.page);
    await bob.page.locator(`[data-testid="chat-item"][data-chat="apart:${groupId}:${mallory.identity.pin}"]`).click();
    await messageWith(bob.page, 'Change of plan').waitFor();
    await bob.page.waitForTimeout(200);
    await shoot(bob.page, 'group-apart.png');
    mallory.ws.terminate();

    // Alice back in her chat with Bob: the banner, D/R, who can read each message, the wire panel.
    await focusTab(bob.page);
    await bob.page.locator(`[data-testid="chat-item"][data-chat="dm:${alice.pin}"]`).click();
    await openDm(alice.page, bob.pin);
    await alice.page.locator('[data-testid="message-state"][data-state="read"]').last().waitFor();
    await alice.page.waitForTimeout(300);
    await shoot(alice.page, 'chat.png');

    await relayView.locator('[data-testid="traffic-row"]').nth(5).waitFor();
    await shoot(relayView, 'relay-view.png');

    await console_.locator('[data-testid="intercept"][data-readable="true"]').nth(2).waitFor();
    await shoot(console_, 'regulator.png');

    // The teacher panel: a clean room, then the first five scenes, one "Next" each.
    const teacher = await ctx.newPage();
    await teacher.goto(`${app.url}/teacher#token=${token}`);
    await teacher.locator('#status', { hasText: 'live' }).waitFor();
    await teacher.getByTestId('reset').click();
    await teacher.getByTestId('reset-confirm').click();
    await teacher.getByTestId('people-empty').waitFor();
    for (const id of ['end-to-end', 'tap-on', 'key-stolen', 'metadata-only', 'sealed-sender']) {
      await teacher.locator(`[data-testid="next"][data-next="${id}"]:not([disabled])`).click();
      await teacher.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
    }
    // The bots' answers (300 ms after reading) reach the picture too.
    await teacher.waitForTimeout(3500);
    await teacher.locator('[data-testid="matrix-row"][data-from="hidden"]').waitFor();
    await shoot(teacher, 'teacher.png');

    // Scenes 6 and 7 (BBM's shared key, BES's server-held keys), then the demand on the operator.
    for (const id of ['shared-app-key', 'server-held-keys']) {
      await teacher.locator(`[data-testid="next"][data-next="${id}"]:not([disabled])`).click();
      await teacher.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
    }
    await teacher.waitForTimeout(800);
    await console_.reload();
    await console_.locator('#status', { hasText: 'live' }).waitFor();
    await console_.getByTestId('demand-button').click();
    await console_.locator('[data-testid="demand-item"][data-status="plaintext"]').first().waitFor();
    await shoot(console_, 'demand.png');

    // The projector, opened from the teacher panel's link (it gets the token without showing it),
    // following the two bots of scene 2 run again (end to end, the tap on): each one's own screen
    // around what the relay holds.
    const run = await fetch(`${app.url}/api/lab/scenarios/tap-on/run`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: '{}',
    });
    if (!run.ok) throw new Error(`running tap-on again: ${run.status}`);
    await teacher.setViewportSize({ width: 1280, height: 720 });
    const [projector] = await Promise.all([ctx.waitForEvent('page'), teacher.getByTestId('link-projector').click()]);
    await projector.setViewportSize({ width: 1280, height: 720 });
    await teacher.getByTestId('projector-layout').selectOption('three-panes');
    await projector.locator('#app[data-layout="three-panes"]').waitFor();
    await projector.locator('[data-testid="right-message"]').first().waitFor();
    await projector.locator('[data-testid="pane-middle"] [data-testid="relay-row"]').first().waitFor();
    await projector.waitForTimeout(1200);
    await projector.screenshot({ path: `${outDir}projector.png` });
    process.stdout.write('wrote docs/screenshots/projector.png\n');

    // A phone: 390x844, touch. Pia writes to the bot Bob, who answers (the tap is still on: the banner says so).
    const phoneCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true, deviceScaleFactor: 2 });
    const pia = await openChat(phoneCtx, app.url, 'Pia');
    const bobPin = app.relay.directory().find((d) => d.name === 'Bob' && d.online)?.pin ?? '';
    await pia.page.locator(`[data-testid="contact"][data-pin="${bobPin}"]`).tap();
    await pia.page.getByTestId('composer').fill('Is the 3 pm meeting still on?');
    await pia.page.getByTestId('send').tap();
    await messageWith(pia.page, 'Bob got it').waitFor();
    await pia.page.locator('[data-testid="message-state"][data-state="read"]').last().waitFor();
    await pia.page.waitForTimeout(300);
    await pia.page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await pia.page.screenshot({ path: `${outDir}phone.png` });
    process.stdout.write('wrote docs/screenshots/phone.png\n');
    await phoneCtx.close();

    // A clean room, the tap (scene 2), then the breach (scene 8) and the attacker console: the loot,
    // the counts, what opens and what stays closed.
    await focusTab(teacher);
    await teacher.getByTestId('reset').click();
    await teacher.getByTestId('reset-confirm').click();
    await teacher.getByTestId('people-empty').waitFor();
    for (const id of ['tap-on', 'intercept-breached']) {
      await teacher.locator(`[data-testid="scenario"][data-id="${id}"] [data-testid="run"]:not([disabled])`).click();
      await teacher.locator(`[data-testid="result"][data-id="${id}"]`).waitFor({ timeout: 20_000 });
    }
    const attacker = await ctx.newPage();
    await attacker.goto(`${app.url}/attacker#token=${token}`);
    await attacker.locator('#status', { hasText: 'live' }).waitFor();
    await attacker.locator('[data-testid="opened-item"]').first().waitFor();
    await attacker.waitForTimeout(300);
    await shoot(attacker, 'attacker.png');
  } finally {
    await browser.close();
    await app.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`screenshots failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
