/**
 * The insider tap with the logs off (lab part 2), with the real relay, real clients and the real
 * keys: the hidden observer gets every envelope sent while it is attached, the audit log says
 * nothing of it until the reveal, the normal observer list leaves it out, the reveal lists it with
 * since when and how many envelopes, and what the copy opens is what its holder's keys open.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { escrowKeyPairFromSecret, fromB64 } from '../../shared/crypto.ts';
import type { TrafficEvent } from '../../shared/protocol.ts';
import { INSIDER_NAME } from '../../server/lab/insider.ts';
import type { ObserverInfo } from '../../server/relay.ts';
import { knows, startTestRelay, until, user } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
async function relay(): Promise<TestRelay> {
  const app = await startTestRelay({ limits: { adminFreeFailures: 1000 } });
  cleanups.push(() => app.close());
  return app;
}
const api = (app: TestRelay, path: string, init: { body?: unknown; token?: string | null } = {}) =>
  fetch(`${app.url}/api/lab${path}`, {
    method: init.body === undefined ? 'GET' : 'POST',
    headers: { ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? app.adminToken}` }), 'content-type': 'application/json' },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
const run = async (app: TestRelay) => {
  const res = await api(app, '/scenarios/insider-tap/run', { body: {} });
  expect(res.status).toBe(200);
  return (await res.json()) as { result: { summary: string; facts: Record<string, number | boolean | string> } };
};

async function people(app: TestRelay) {
  const alice = await user(app.wsUrl, 'Alice');
  const bob = await user(app.wsUrl, 'Bob');
  cleanups.push(
    () => alice.m.stop(),
    () => bob.m.stop(),
  );
  await knows(alice, bob.m.pin);
  await knows(bob, alice.m.pin);
  return { alice, bob };
}

describe('the insider tap', () => {
  it('the hidden observer receives every envelope sent while it is attached, none from before, and is detached by the reset', async () => {
    const app = await relay();
    const { alice, bob } = await people(app);
    const early = alice.m.sendText(bob.m.pin, 'before the insider');
    await until(() => bob.m.messages.has(early.id), 'delivery');
    const { result } = await run(app);
    expect(result.facts).toMatchObject({ 'messages sent': 3, 'copied by the hidden observer': 3, 'audit entries since it was attached': 0, 'in the normal observer list': false });
    // A listed observer attached now sees the same traffic the hidden one copies from here on.
    const witnessed: string[] = [];
    const stop = app.relay.observe('test: witness', (e: TrafficEvent) => e.kind === 'envelope' && void witnessed.push(e.env.id));
    const sent: { id: string; to: typeof alice }[] = [];
    for (let i = 0; i < 6; i++) {
      const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
      sent.push({ id: from.m.sendText(to.m.pin, `while attached ${i}`).id, to });
    }
    await until(() => sent.every((s) => s.to.m.messages.get(s.id)?.direction === 'in'), 'delivery');
    stop();
    const copy = new Set(app.lab.insider.ids());
    expect(witnessed.length).toBeGreaterThanOrEqual(sent.length);
    expect(witnessed.filter((id) => !copy.has(id))).toEqual([]);
    expect(sent.filter((s) => !copy.has(s.id))).toEqual([]);
    expect(copy.has(early.id)).toBe(false);
    // The attacker holds the copy as a 'feed copy'.
    expect(app.lab.attacker.view().loot.map((l) => l.kind)).toContain('feed copy');
    expect(app.lab.attacker.view().counts.held).toBe(copy.size);
    // Reset: detached, the copy and the loot gone, later traffic not copied.
    expect((await api(app, '/reset', { body: { confirm: 'reset' } })).status).toBe(200);
    expect(app.relay.observerList().some((o) => o.name === INSIDER_NAME)).toBe(false);
    expect(app.lab.insider.attached).toBe(false);
    expect(app.lab.attacker.view().loot).toEqual([]);
  });

  it('the audit log has no entry for the hidden observer until the reveal, and one after naming it, since when and how many envelopes', async () => {
    const app = await relay();
    const before = app.regulator.auditLog().length;
    await run(app);
    const { alice, bob } = await people(app);
    const m = alice.m.sendText(bob.m.pin, 'still copied');
    await until(() => bob.m.messages.has(m.id), 'delivery');
    expect(app.regulator.auditLog().length).toBe(before);
    expect(JSON.stringify(app.regulator.auditLog())).not.toContain(INSIDER_NAME);
    const res = await api(app, '/observers/reveal', { body: {} });
    expect(res.status).toBe(200);
    const hidden = app.relay.observerList().find((o) => o.name === INSIDER_NAME)!;
    const entry = app.regulator.auditLog()[0]!;
    expect(entry.action).toBe('observers revealed');
    expect(entry.detail).toContain(INSIDER_NAME);
    expect(entry.detail).toContain(new Date(hidden.since).toISOString());
    expect(entry.detail).toContain(`handed ${hidden.envelopes} envelopes`);
    expect(app.regulator.auditLog().length).toBe(before + 1);
  });

  it('the normal observer list omits it; the revealed one includes it, marked hidden, with its since, count and where it copies to', async () => {
    const app = await relay();
    const { alice, bob } = await people(app);
    await run(app);
    const m = alice.m.sendText(bob.m.pin, 'one more');
    await until(() => bob.m.messages.has(m.id), 'delivery');
    const normal = (await (await api(app, '/observers')).json()) as { observers: { name: string; since: number }[] };
    expect(normal.observers.map((o) => o.name)).not.toContain(INSIDER_NAME);
    expect(normal.observers.map((o) => o.name)).toEqual(expect.arrayContaining(['regulator tap (lawful-intercept handover)']));
    expect(JSON.stringify(normal)).not.toMatch(/hidden|attacker|unlisted/);
    const revealed = (await (await api(app, '/observers/reveal', { body: {} })).json()) as { observers: ObserverInfo[]; hidden: number };
    expect(revealed.hidden).toBe(1);
    const insider = revealed.observers.find((o) => o.name === INSIDER_NAME)!;
    expect(insider).toMatchObject({ hidden: true, sink: expect.stringMatching(/unlisted recipient/) });
    expect(insider.since).toBeLessThanOrEqual(Date.now());
    expect(insider.envelopes).toBe(app.lab.insider.copied);
    expect(insider.envelopes).toBeGreaterThanOrEqual(4);
  });

  it('the copy opens nothing end to end; with the tap on and the escrow key stolen too, it opens exactly the escrowed envelopes', async () => {
    const app = await relay();
    const { alice, bob } = await people(app);
    await run(app);
    expect(app.lab.attacker.view().counts.opened).toBe(0);
    expect(
      (
        await fetch(`${app.url}/api/regulator/tap`, {
          method: 'POST',
          headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ tap: true }),
        })
      ).status,
    ).toBe(200);
    await until(() => alice.m.policy?.tap === true, 'the tap at Alice');
    const tapped = alice.m.sendText(bob.m.pin, 'under the tap, copied by the insider');
    await until(() => bob.m.messages.has(tapped.id), 'delivery');
    const file = app.regulator.exportKey('test: a thief');
    const key = escrowKeyPairFromSecret(fromB64(file.sk));
    app.lab.attacker.leak({ kind: 'escrow key', label: 'stolen', scenario: 'test', key, kid: file.kid });
    const view = app.lab.attacker.view();
    const escrowed = app.lab.insider.lines().filter((l) => l.env.v === 2 && l.env.keys.model === 'e2e-escrow').length;
    expect(escrowed).toBeGreaterThanOrEqual(1);
    expect(view.counts.opened).toBe(escrowed);
    expect(view.opened.map((o) => o.text)).toContain('under the tap, copied by the insider');
  });

  it('without the admin token nobody lists or reveals observers, and a refused reveal is not audited', async () => {
    const app = await relay();
    await run(app);
    const before = app.regulator.auditLog().length;
    for (const [path, body] of [
      ['/observers', undefined],
      ['/observers/reveal', {}],
    ] as const) {
      expect((await api(app, path, { body, token: null })).status).toBe(401);
      expect((await api(app, path, { body, token: 'a-wrong-token-of-16+' })).status).toBe(403);
    }
    expect(app.regulator.auditLog().length).toBe(before);
  });
});
