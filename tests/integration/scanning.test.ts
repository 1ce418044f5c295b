/**
 * Client-side scanning (lab part 2) with the real keys, a real relay and real clients on
 * client/core: the scanner reports exactly the messages whose words hold a listed phrase, the
 * envelope the relay stores is the same end-to-end envelope as without scanning, a report names
 * the real author whatever a participant forges, reports are bounded, and only the teacher's
 * token adds to the list or reads the reports.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sealEnvelope } from '../../shared/envelope.ts';
import { fromB64, toB64 } from '../../shared/crypto.ts';
import { ErrorCode, type Envelope, type TrafficEvent } from '../../shared/protocol.ts';
import { hashPhrase } from '../../shared/scan.ts';
import { SCAN_REPORTABLE_PER_SESSION } from '../../server/relay.ts';
import { dumpSqlite, findSecret } from '../helpers/scan.ts';
import { rawClient } from '../helpers/raw-client.ts';
import { knows, startTestRelay, until, user } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
async function relay(options: Parameters<typeof startTestRelay>[0] = {}): Promise<TestRelay> {
  const app = await startTestRelay(options);
  cleanups.push(() => app.close());
  return app;
}
const api = (app: TestRelay, path: string, init: { body?: unknown; token?: string | null } = {}) =>
  fetch(`${app.url}${path}`, {
    method: init.body === undefined ? 'GET' : 'POST',
    headers: { ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? app.adminToken}` }), 'content-type': 'application/json' },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });

/** The teacher adds a phrase and turns scanning on, through the API. */
async function scanFor(app: TestRelay, phrase: string, announced = true): Promise<void> {
  expect((await api(app, '/api/lab/scan/entries', { body: { phrase } })).status).toBe(200);
  expect((await api(app, '/api/lab/scan', { body: { on: true, announced } })).status).toBe(200);
}
const PHRASE = 'meet at the square';

async function pair(app: TestRelay) {
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
const hasScan = (u: Awaited<ReturnType<typeof user>>, n: number) => () => (u.m.policy?.scan?.entries.length ?? 0) === n;

describe('client-side scanning', () => {
  it('is off by default: the policy carries no list and a client reports nothing', async () => {
    const app = await relay();
    const { alice, bob } = await pair(app);
    expect(app.relay.getPolicy().scan).toBeUndefined();
    expect(((await (await api(app, '/api/lab/scan')).json()) as { on: boolean }).on).toBe(false);
    const m = alice.m.sendText(bob.m.pin, 'Meet at the square.');
    await until(() => bob.m.messages.has(m.id), 'delivery');
    expect(app.lab.scanner.state().reports.total).toBe(0);
  });

  it('the scanner reports exactly the messages holding the listed phrase (any case, spacing, accents, punctuation) and none other, naming sender, recipient and entry, never the text', async () => {
    const app = await relay();
    const { alice, bob } = await pair(app);
    await scanFor(app, PHRASE);
    await until(hasScan(alice, 1), 'the list at Alice');
    const matching = ['Meet at the square', 'we MEET   at the Squáre, at six!', 'meet,at,the,square'];
    const other = ['meet at the squares', 'meet at a square', 'the square: meet at', 'see you at the square'];
    const ids = new Map<string, string>();
    for (const text of [...other, ...matching]) ids.set(alice.m.sendText(bob.m.pin, text).id, text);
    // A last matching message: reports come in order on Alice's connection, so once its report is
    // in, any report for an earlier message would be in too.
    const last = alice.m.sendText(bob.m.pin, 'meet at the square (last)');
    await until(() => app.lab.scanner.reports().some((r) => r.id === last.id), 'the last report');
    const reported = app.lab.scanner.reports().filter((r) => r.id !== last.id);
    expect(reported.map((r) => ids.get(r.id)).sort()).toEqual([...matching].sort());
    for (const r of reported) {
      expect(r.from).toEqual({ pin: alice.m.pin, name: 'Alice' });
      expect(r.to).toEqual([{ pin: bob.m.pin, name: 'Bob' }]);
      expect(r.entry).toBe(app.lab.scanner.state().entries[0]!.hash);
      expect(r.n).toBe(1);
      expect(r.model).toBe('e2e');
    }
    // The regulator console's route shows the same reports, and none carries the text.
    const res = (await (await api(app, '/api/regulator/scan-reports')).json()) as { reports: unknown[] };
    expect(res.reports).toHaveLength(matching.length + 1);
    expect(JSON.stringify(res).toLowerCase()).not.toContain('square');
    await until(() => [...ids.keys()].every((id) => bob.m.messages.has(id)), 'every message at Bob');
  });

  it('a reported message is the same end-to-end envelope as an unscanned one: same key model and fields, the recipient opens it, the regulator cannot, no plaintext stored', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-scan-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const app = await relay({ dataDir });
    const { alice, bob } = await pair(app);
    const seen = new Map<string, Envelope>();
    app.relay.observe('test: envelopes', (e: TrafficEvent) => e.kind === 'envelope' && void seen.set(e.env.id, e.env));
    const plain = alice.m.sendText(bob.m.pin, 'before scanning: meet at the square');
    await until(() => bob.m.messages.has(plain.id), 'the unscanned message');
    await scanFor(app, PHRASE);
    await until(hasScan(alice, 1), 'the list at Alice');
    const secret = 'Meet at the square, bring the leaflets 7f3a';
    const scanned = alice.m.sendText(bob.m.pin, secret);
    await until(() => app.lab.scanner.reports().some((r) => r.id === scanned.id), 'the report');
    await until(() => bob.m.messages.get(scanned.id)?.text === secret, 'Bob reads it');
    const a = seen.get(plain.id)!;
    const b = seen.get(scanned.id)!;
    expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
    expect(b.keys.model).toBe('e2e');
    expect(Object.keys(b.keys).sort()).toEqual(Object.keys(a.keys).sort());
    expect(b.keys.model === 'e2e' && b.keys.wraps.map((w) => w.to).sort()).toEqual([alice.m.pin, bob.m.pin].sort());
    // The regulator archived it and its key does not open it.
    const intercept = app.regulator.recent(50).find((i) => i.env.id === scanned.id);
    expect(intercept?.status).toBe('end-to-end');
    expect(intercept?.text).toBeNull();
    // Neither database holds the text or the phrase, in any encoding.
    const stored = dumpSqlite(join(dataDir, 'relay.db')).text + dumpSqlite(join(dataDir, 'regulator.db')).text;
    expect(findSecret(stored, secret)).toEqual([]);
    expect(findSecret(stored, 'leaflets 7f3a')).toEqual([]);
    expect(findSecret(stored, PHRASE)).toEqual([]);
  });

  it('a client without the scanner (a patched app) sends the same message and is never reported', async () => {
    const app = await relay();
    const { alice, bob } = await pair(app);
    bob.m.scanner.enabled = false;
    await scanFor(app, PHRASE);
    await until(hasScan(bob, 1), 'the list at Bob');
    const rogue = bob.m.sendText(alice.m.pin, 'MEET at the square');
    await until(() => alice.m.messages.has(rogue.id), 'delivery');
    const honest = alice.m.sendText(bob.m.pin, 'meet at the square');
    await until(() => app.lab.scanner.reports().some((r) => r.id === honest.id), 'the honest report');
    await new Promise((r) => setTimeout(r, 200));
    expect(app.lab.scanner.reports().map((r) => r.from.pin)).toEqual([alice.m.pin]);
  });

  it('a forged report is refused with a clear error: another author, a message the session did not send, twice, other recipients, a hash not on the list, another list; what is accepted names the session', async () => {
    const app = await relay();
    const { alice, bob } = await pair(app);
    await scanFor(app, PHRASE);
    await until(hasScan(alice, 1), 'the list at Alice');
    const scan = app.relay.getPolicy().scan!;
    const entry = scan.entries[0]!;
    const aliceMsg = alice.m.sendText(bob.m.pin, 'meet at the square');
    await until(() => app.lab.scanner.reports().some((r) => r.id === aliceMsg.id), "Alice's report");
    const eve = await rawClient(app.wsUrl, { name: 'Eve', onCleanup: (fn) => cleanups.push(fn) });
    const base = { type: 'report', list: scan.list, entry };
    const errors = () => eve.frames.filter((f) => f.type === 'error');
    const expectError = async (frame: unknown, code: string, message: RegExp) => {
      const n = errors().length;
      eve.send(frame);
      await until(() => errors().length > n, 'an error');
      const err = errors()[n]!;
      expect(err.type === 'error' && err.code, JSON.stringify(frame)).toBe(code);
      expect(err.type === 'error' && err.message, JSON.stringify(frame)).toMatch(message);
    };
    // An author field: there is none, the frame is refused by shape.
    await expectError({ ...base, id: aliceMsg.id, to: [bob.m.pin], from: alice.m.pin }, ErrorCode.BadFrame, /from|unrecognized/i);
    // Alice's message, reported by Eve: not hers.
    await expectError({ ...base, id: aliceMsg.id, to: [bob.m.pin] }, ErrorCode.ReportRefused, /not an envelope this connection sent/);
    // Eve's own envelope, then reports about it.
    const { env } = sealEnvelope({
      sender: eve.identity,
      to: [{ pin: bob.m.pin, signPk: fromB64(alice.m.directory.get(bob.m.pin)!.pk) }],
      conv: 'dm',
      body: { text: 'meet at the square' },
    });
    eve.send({ type: 'send', env });
    await eve.next('accepted', (f) => f.id === env.id);
    await expectError({ ...base, id: env.id, to: [alice.m.pin] }, ErrorCode.ReportRefused, /recipients are not those/);
    await expectError({ ...base, id: env.id, to: [bob.m.pin], entry: toB64(new Uint8Array(32)) }, ErrorCode.ReportRefused, /not on the list/);
    await expectError({ ...base, id: env.id, to: [bob.m.pin], list: 'ffffffffffffffff' }, ErrorCode.ReportRefused, /not the list in force/);
    const n = app.lab.scanner.state().reports.total;
    eve.send({ ...base, id: env.id, to: [bob.m.pin] });
    await until(() => app.lab.scanner.state().reports.total === n + 1, "Eve's report");
    await expectError({ ...base, id: env.id, to: [bob.m.pin] }, ErrorCode.ReportRefused, /reported already/);
    const reports = app.lab.scanner.reports();
    expect(reports.map((r) => [r.id, r.from.pin, r.from.name])).toEqual([
      [env.id, eve.identity.pin, 'Eve'],
      [aliceMsg.id, alice.m.pin, 'Alice'],
    ]);
    // Malformed report frames: a clear error naming the field, and the socket lives on.
    await expectError({ type: 'report', id: env.id, to: [], list: scan.list, entry }, ErrorCode.BadFrame, /^to:/);
    await expectError({ type: 'report', id: env.id, to: [bob.m.pin], list: scan.list, entry: 'short' }, ErrorCode.BadFrame, /^entry:/);
    await expectError('{"type":"report",', ErrorCode.BadJson, /not valid JSON/);
    eve.send({ type: 'ping', t: 7 });
    await eve.next('pong', (f) => f.t === 7);
    // Scanning off: reports are refused.
    expect((await api(app, '/api/lab/scan', { body: { on: false } })).status).toBe(200);
    await expectError({ ...base, id: env.id, to: [bob.m.pin] }, ErrorCode.ReportRefused, /scanning is off/);
  });

  it(`a flood of report frames is bounded: never more reports than envelopes sent, at most ${SCAN_REPORTABLE_PER_SESSION} reportable envelopes kept per connection, frames past the rate limit dropped`, async () => {
    const app = await relay();
    const { alice, bob } = await pair(app);
    await scanFor(app, PHRASE);
    const eve = await rawClient(app.wsUrl, { name: 'Eve', onCleanup: (fn) => cleanups.push(fn) });
    const scan = app.relay.getPolicy().scan!;
    const bobPkB64 = alice.m.directory.get(bob.m.pin)!.pk;
    // Eve sends 40 envelopes, then floods reports for them (each several times) and for ids she never sent.
    const envs = Array.from(
      { length: 40 },
      () => sealEnvelope({ sender: eve.identity, to: [{ pin: bob.m.pin, signPk: fromB64(bobPkB64) }], conv: 'dm', body: { text: 'meet at the square' } }).env,
    );
    for (const env of envs) {
      eve.send({ type: 'send', env });
      await eve.next('accepted', (f) => f.id === env.id);
    }
    for (let round = 0; round < 3; round++) for (const env of envs) eve.send({ type: 'report', id: env.id, to: [bob.m.pin], list: scan.list, entry: scan.entries[0] });
    for (let i = 0; i < 300; i++) eve.send({ type: 'report', id: i.toString(16).padStart(32, '0'), to: [bob.m.pin], list: scan.list, entry: scan.entries[0] });
    // Past the frame budget the relay drops frames (and may close the flooder): give it time to read them all.
    const frames = app.relay.stats.frames;
    await Promise.race([eve.closed, until(() => app.relay.stats.frames >= frames + 420 || app.relay.stats.rateLimited > 0, 'the flood read', 8000)]);
    await new Promise((r) => setTimeout(r, 300));
    const reports = app.lab.scanner.reports().filter((r) => r.from.pin === eve.identity.pin);
    expect(reports.length).toBeLessThanOrEqual(SCAN_REPORTABLE_PER_SESSION);
    expect(new Set(reports.map((r) => r.id)).size).toBe(reports.length);
    expect(reports.every((r) => envs.some((e) => e.id === r.id))).toBe(true);
    expect(app.relay.stats.rateLimited + app.relay.stats.errors).toBeGreaterThan(0);
  });

  it('only the teacher token adds to the list, switches scanning or reads reports; a phrase is kept only as its hash under the list salt', async () => {
    const app = await relay({ limits: { adminFreeFailures: 1000 } });
    for (const [path, body] of [
      ['/api/lab/scan/entries', { phrase: 'free the press' }],
      ['/api/lab/scan', { on: true }],
      ['/api/lab/scan', undefined],
      ['/api/lab/scan/reports', undefined],
      ['/api/regulator/scan-reports', undefined],
    ] as const) {
      expect((await api(app, path, { body, token: null })).status, path).toBe(401);
      expect((await api(app, path, { body, token: 'a-wrong-token-of-16+' })).status, path).toBe(403);
    }
    expect(app.lab.scanner.state().entries).toEqual([]);
    expect(app.lab.scanner.state().on).toBe(false);
    // Bad bodies: a clear 400, nothing added.
    for (const body of [{ phrase: '!!!' }, { phrase: 'one two three four five six seven eight nine' }, { hash: 'AAAA' }, { phrase: 'x', hash: 'y' }, {}]) {
      const res = await api(app, '/api/lab/scan/entries', { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(((await res.json()) as { message: string }).message.length).toBeGreaterThan(5);
    }
    expect(app.lab.scanner.state().entries).toEqual([]);
    // With the token: the entry is the hash, and the phrase is nowhere — not in the state, the policy or the audit log.
    await scanFor(app, 'Free the PRESS');
    const state = app.lab.scanner.state();
    expect(state.entries.map((e) => e.hash)).toEqual([hashPhrase(fromB64(state.salt!), 'free the press')]);
    const everywhere = JSON.stringify([state, app.relay.getPolicy(), app.regulator.auditLog()]).toLowerCase();
    expect(everywhere).not.toContain('press');
    expect(app.regulator.auditLog().map((a) => a.action)).toEqual(expect.arrayContaining(['scan list changed', 'scanning changed']));
    // A supplier may hand over a hash it computed with the list's salt; a repeat is refused.
    const hash = hashPhrase(fromB64(state.salt!), 'our source in the ministry');
    expect((await api(app, '/api/lab/scan/entries', { body: { hash } })).status).toBe(200);
    expect((await api(app, '/api/lab/scan/entries', { body: { hash } })).status).toBe(400);
    // The reset turns scanning off and forgets the list.
    expect((await api(app, '/api/lab/reset', { body: { confirm: 'reset' } })).status).toBe(200);
    expect(app.relay.getPolicy().scan).toBeUndefined();
    expect(app.lab.scanner.state()).toMatchObject({ on: false, entries: [], list: null });
  });

  it('the scenario runs through the real relay: the scanning bot is reported, the one without the scanner is not, and the messages stay end to end', async () => {
    const app = await relay();
    const res = await api(app, '/api/lab/scenarios/client-side-scanning/run', { body: {} });
    expect(res.status).toBe(200);
    const run = (await res.json()) as { result: { facts: Record<string, number | string | boolean> } };
    expect(run.result.facts).toMatchObject({ 'messages sent': 3, 'matching the list': 2, reported: 1, 'not reported (no scanner)': 1, 'reported, yet end to end': 1 });
    const [report] = app.lab.scanner.reports();
    expect(report?.from.name).toBe('Nadia');
    expect(app.relay.getPolicy().scan?.announced).toBe(true);
  });
});
