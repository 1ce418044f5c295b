/**
 * The lab (issue 11): its JSON API behind the admin token, every scenario run through the real
 * relay with real bots on client/core, the visible result each claims checked against the relay's
 * and the regulator's own records with the real keys, the people list, forgetting offline people,
 * and a reset that leaves nothing behind in either database.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SCENARIOS } from '../../server/lab/scenarios/index.ts';
import { keysOf } from '../../shared/protocol.ts';
import { dumpSqlite, findSecret } from '../helpers/scan.ts';
import { startTestRelay, until, user } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
async function relay(dataDir: string | null = null): Promise<TestRelay> {
  const app = await startTestRelay({ dataDir });
  cleanups.push(() => app.close());
  return app;
}
const api = (app: TestRelay, path: string, init: { method?: string; body?: unknown; token?: string | null } = {}) =>
  fetch(`${app.url}/api/lab${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? app.adminToken}` }), 'content-type': 'application/json' },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });

describe('the lab API', () => {
  it('every route needs the admin token: without it 401, with a wrong one 403, and nothing changes (no bot, no room change, no reset)', async () => {
    // Sixteen wrong tokens in a row: the lockout after five (hostile-edges.test.ts) is pushed out of the way.
    const app = await startTestRelay({ limits: { adminFreeFailures: 1000 } });
    cleanups.push(() => app.close());
    const routes: [string, string, unknown?][] = [
      ['GET', '/scenarios'],
      ['POST', '/scenarios/end-to-end/run', {}],
      ['GET', '/people'],
      ['POST', '/bots', { name: 'Bob' }],
      ['POST', '/room', { model: 'app-key' }],
      ['GET', '/metadata'],
      ['POST', '/forget-offline', {}],
      ['POST', '/reset', { confirm: 'reset' }],
    ];
    for (const [method, path, body] of routes) {
      expect((await api(app, path, { method, body, token: null })).status, `${method} ${path}`).toBe(401);
      expect((await api(app, path, { method, body, token: 'a-wrong-token-of-16+' })).status, `${method} ${path}`).toBe(403);
    }
    expect(app.lab.botNames()).toEqual([]);
    expect(app.relay.getPolicy().room.model).toBe('e2e');
    expect(app.regulator.auditLog().some((a) => a.action === 'room reset')).toBe(false);
  });

  it('lists the scenarios in lesson order, each with its narration card: what happens, where to look, and the real event with a date and a link', async () => {
    const app = await relay();
    const { scenarios } = (await (await api(app, '/scenarios')).json()) as {
      scenarios: { id: string; scene: number; narration: { what: string; look: unknown[]; source: { date: string; link: string } } }[];
    };
    expect(scenarios.map((s) => s.id)).toEqual([...SCENARIOS].sort((a, b) => a.scene - b.scene).map((s) => s.id));
    for (const s of scenarios) {
      expect(s.narration.what.length, s.id).toBeGreaterThan(40);
      expect(s.narration.look.length, s.id).toBeGreaterThan(0);
      // A day when the source gives one; a year alone when it does not (Blaze's 1994 paper).
      expect(s.narration.source.date, s.id).toMatch(/^\d{4}(-\d{2}-\d{2})?$/);
      expect(s.narration.source.link, s.id).toMatch(/^https:\/\//);
    }
    expect((await api(app, '/scenarios/no-such/run', { body: {} })).status).toBe(404);
  });

  it('a bad body is a 400 naming the field, and changes nothing', async () => {
    const app = await relay();
    const res = await api(app, '/room', { body: { model: 'rot13' } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/^model:/);
    expect((await api(app, '/room', { body: { model: 'app-key', sealedSender: true } })).status).toBe(400);
    expect((await api(app, '/bots', { body: { name: 'Bob\u202e' } })).status).toBe(400);
    expect((await api(app, '/reset', { body: {} })).status).toBe(400);
    expect(app.relay.getPolicy().room).toMatchObject({ model: 'e2e', sealedSender: false });
    // The demand's body is checked the same way, and a refused one is not in the audit log.
    for (const body of ['{"limit":0}', '{"limit":"all"}', '{"limit":10,"pins":["FAFE7DFC"]}']) {
      const res = await fetch(`${app.url}/api/regulator/demand`, {
        method: 'POST',
        headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(((await res.json()) as { error: string }).error, body).toBe('bad_request');
    }
    expect(app.regulator.auditLog().some((e) => e.action === 'demand served on the operator')).toBe(false);
  });
});

describe('the scenarios, each from a fresh room, with what it claims checked against the records', () => {
  const run = async (app: TestRelay, id: string) => {
    const res = await api(app, `/scenarios/${id}/run`, { body: {} });
    expect(res.status, id).toBe(200);
    return (await res.json()) as { result: { summary: string; facts: Record<string, string | number | boolean> } };
  };

  it('end-to-end: two messages pass the relay, and the regulator opens neither', async () => {
    const app = await relay();
    const { result } = await run(app, 'end-to-end');
    expect(result.facts).toMatchObject({ messages: 2, 'opened by the regulator': 0 });
    expect(app.regulator.recent(10).map((i) => i.status)).toEqual(['end-to-end', 'end-to-end']);
  });

  it('tap-on: both new messages are read by the regulator, with the real escrow key', async () => {
    const app = await relay();
    const { result } = await run(app, 'tap-on');
    expect(result.facts).toMatchObject({ 'opened by the regulator': 2 });
    expect(app.regulator.recent(10).filter((i) => i.status === 'opened')).toHaveLength(2);
  });

  it('key-stolen: the stolen key opens exactly the tapped messages of the archive, end-to-end ones stay closed, and the export is in the audit log', async () => {
    const app = await relay();
    const { result } = await run(app, 'key-stolen');
    expect(result.facts).toMatchObject({ archived: 2, opened: 1, 'end to end, closed': 1 });
    expect(app.regulator.auditLog().some((a) => a.action === 'escrow key exported')).toBe(true);
  });

  it('metadata-only: the picture counts what the relay logged, with no key and no tap', async () => {
    const app = await relay();
    const { result } = await run(app, 'metadata-only');
    expect(result.facts).toMatchObject({ 'Bob → Carol': 3, 'Dave → Bob': 1 });
    const picture = (await (await api(app, '/metadata')).json()) as { envelopes: number; pairs: { from: string | null; count: number }[] };
    expect(picture.envelopes).toBeGreaterThanOrEqual(7);
    expect(app.regulator.recent(20).every((i) => i.status === 'end-to-end')).toBe(true);
  });

  it("sealed-sender: the relay's log has no sender for the message, and the picture shows it as unknown", async () => {
    const app = await relay();
    const { result } = await run(app, 'sealed-sender');
    expect(result.facts).toMatchObject({ "sender in the relay's log": 'none', 'Carol verified the sender': true });
    const picture = (await (await api(app, '/metadata')).json()) as { sealed: number; pairs: { from: string | null }[] };
    expect(picture.sealed).toBe(1);
    expect(picture.pairs.some((p) => p.from === null)).toBe(true);
  });

  it('shared-app-key: a bot that was never sent the message reads it with the app key', async () => {
    const app = await relay();
    const { result } = await run(app, 'shared-app-key');
    expect(result.facts).toMatchObject({ 'read by Dave': true, 'Dave was a recipient': false });
  });

  it('server-held-keys: the enterprise server read the message and a demand on the operator hands over its plaintext; an end-to-end one only as ciphertext', async () => {
    const app = await relay();
    await run(app, 'end-to-end');
    const { result } = await run(app, 'server-held-keys');
    expect(result.facts).toMatchObject({ 'Carol read it': true, 'operator hands over': 'plaintext' });
    const demand = (await (
      await fetch(`${app.url}/api/regulator/demand`, { method: 'POST', headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' }, body: '{}' })
    ).json()) as { items: { model: string; status: string; text?: string }[] };
    // At least the scene's message; the bots' echoes of the previous scene may land after the room
    // switched and be sealed under server-held keys too (they answer 300 ms after reading).
    const serverKey = demand.items.filter((i) => i.model === 'server-key').map((i) => i.status);
    expect(serverKey.length).toBeGreaterThanOrEqual(1);
    expect(serverKey.every((s) => s === 'plaintext')).toBe(true);
    expect(demand.items.filter((i) => i.model === 'e2e').every((i) => i.status === 'ciphertext only' && i.text === undefined)).toBe(true);
    expect(app.regulator.auditLog()[0]?.action).toBe('demand served on the operator');
  });

  it("a bot's answer to a person goes out under the key model it was read in, never the next scene's: a scene's mode change waits for the bots", async () => {
    const app = await relay();
    await run(app, 'shared-app-key');
    const models = new Map<string, string>();
    app.relay.observe('test: the key model of every envelope', (e) => {
      if (e.kind === 'envelope') models.set(e.env.id, keysOf(e.env).model);
    });
    const alice = await user(app.wsUrl, 'Alice');
    cleanups.push(() => alice.m.stop());
    const bob = app.lab.botNames().includes('Bob') ? await app.lab.bot('Bob') : null;
    expect(bob).not.toBeNull();
    await until(() => alice.m.directory.has(bob!.pin), 'Alice knows Bob');
    const sent = alice.m.sendText([bob!.pin], 'Hello Bob, this is a person.');
    await until(() => bob!.m.messages.has(sent.id), 'Bob got it');
    // The teacher clicks the next scene while Bob's answer (300 ms after reading) is still to come.
    await run(app, 'end-to-end');
    const answer = [...alice.m.messages.values()].find((m) => m.direction === 'in' && m.from === bob!.pin);
    expect(answer, "Bob's answer reached Alice").toBeDefined();
    expect(models.get(answer!.id)).toBe('app-key');
    expect(models.get(sent.id)).toBe('app-key');
  });

  it('lab bots answer people but not each other: a scene sends exactly its scripted lines', async () => {
    const app = await relay();
    const { result } = await run(app, 'end-to-end');
    expect(result.facts).toMatchObject({ messages: 2 });
    await new Promise((r) => setTimeout(r, 600));
    expect(app.regulator.recent(10)).toHaveLength(2);
  });

  it('scenarios run one after another in any order leave the room as each needs it', async () => {
    const app = await relay();
    for (const id of ['server-held-keys', 'sealed-sender', 'tap-on', 'shared-app-key', 'end-to-end']) await run(app, id);
    expect(app.relay.getPolicy().room).toMatchObject({ model: 'e2e', sealedSender: false });
    expect(app.relay.getPolicy().tap).toBe(false);
  });
});

describe('people, forgetting and resetting', () => {
  it('people lists every participant with online state and bots marked; forget-offline removes those who left', async () => {
    const app = await relay();
    const alice = await user(app.wsUrl, 'Alice');
    const leaver = await user(app.wsUrl, 'Leaver');
    expect((await api(app, '/bots', { body: { name: 'Bob' } })).status).toBe(200);
    leaver.m.stop();
    await until(() => app.relay.directory().find((d) => d.pin === leaver.m.pin)?.online === false, 'the leaver is offline');
    const { people } = (await (await api(app, '/people')).json()) as { people: { name: string; online: boolean; bot: boolean }[] };
    expect(people).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'Alice', online: true, bot: false }),
        expect.objectContaining({ name: 'Bob', online: true, bot: true }),
        expect.objectContaining({ name: 'Leaver', online: false }),
      ]),
    );
    expect(((await (await api(app, '/forget-offline', { body: {} })).json()) as { forgotten: number }).forgotten).toBe(1);
    expect(app.store.getUser(leaver.m.pin)).toBeUndefined();
    expect(app.store.getUser(alice.m.pin)).toBeDefined();
    alice.m.stop();
  });

  it('reset leaves nothing behind in either database — no user, queued item, envelope, metadata or intercept — stops the bots, disconnects everyone, and is in the audit log', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-reset-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const app = await relay(dataDir);
    const alice = await user(app.wsUrl, 'Alice');
    const closed: number[] = [];
    alice.m.on((e) => {
      if (e.type !== 'status' || e.status !== 'offline' || closed.length) return;
      closed.push(Date.now());
      // Alice's tab would come back as a new person at once (the room is open); here she leaves, so the scan sees only the reset.
      alice.m.stop();
    });
    for (const id of ['tap-on', 'metadata-only', 'sealed-sender']) expect((await api(app, `/scenarios/${id}/run`, { body: {} })).status).toBe(200);
    const texts = ['Bring the quarterly numbers', 'Meeting note 1', 'Who sent this'];
    const before = dumpSqlite(join(dataDir, 'relay.db')).text + dumpSqlite(join(dataDir, 'regulator.db')).text;
    for (const secret of ['Carol', 'Alice', 'Dave']) expect(findSecret(before, secret).length, secret).toBeGreaterThan(0); // not vacuous: the names are there before
    const res = await api(app, '/reset', { body: { confirm: 'reset' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ bots: 3 });
    await until(() => closed.length > 0, 'Alice is disconnected');
    alice.m.stop();
    await app.close();
    const relayDb = dumpSqlite(join(dataDir, 'relay.db'));
    const regulatorDb = dumpSqlite(join(dataDir, 'regulator.db'));
    for (const table of ['users', 'queue', 'envelopes', 'metadata']) expect(relayDb.tables[table] ?? [], table).toEqual([]);
    expect(regulatorDb.tables.archive ?? []).toEqual([]);
    for (const name of ['Alice', 'Carol', 'Dave', ...texts])
      expect(
        findSecret(relayDb.text + regulatorDb.text.replace(/room reset[^\n]*/g, ''), name).map((h) => JSON.stringify(h)),
        name,
      ).toEqual([]);
    expect(JSON.stringify(regulatorDb.tables.audit)).toContain('room reset');
  });
});
