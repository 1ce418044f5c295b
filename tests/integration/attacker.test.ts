/**
 * The attacker (issue 12): the breach of the intercept system and export-grade escrow, run through
 * the real relay with real bots, and what the attacker's loot opens checked with the real keys
 * against what the bots sent; the brute force run in Node with the same search code the attacker
 * console's worker runs; the attacker API behind the admin token; a reset that forgets the loot.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openArchived } from '../../shared/archive.ts';
import { escrowKeyPairFromSecret, fromB64 } from '../../shared/crypto.ts';
import { exportKeyPair, searchExportKey } from '../../shared/export-grade.ts';
import { keysOf } from '../../shared/protocol.ts';
import type { AttackerView } from '../../server/lab/attacker.ts';
import type { RunRecord } from '../../server/lab/lab.ts';
import { knows, startTestRelay, until, user } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
/** Export-grade keys of 10 bits here: 1,024 secrets, a search of well under a second in Node. */
const BITS = 10;
async function relay(): Promise<TestRelay> {
  const app = await startTestRelay({ exportGradeBits: BITS });
  cleanups.push(() => app.close());
  return app;
}
const api = (app: TestRelay, path: string, init: { method?: string; body?: unknown; token?: string | null } = {}) =>
  fetch(`${app.url}/api/lab${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? app.adminToken}` }), 'content-type': 'application/json' },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
async function run(app: TestRelay, id: string): Promise<RunRecord> {
  const res = await api(app, `/scenarios/${id}/run`, { body: {} });
  expect(res.status, id).toBe(200);
  return (await res.json()) as RunRecord;
}
const view = async (app: TestRelay): Promise<AttackerView> => {
  const res = await api(app, '/attacker');
  expect(res.status).toBe(200);
  return (await res.json()) as AttackerView;
};

describe('the intercept system is breached', () => {
  it('the key from the copied regulator.db opens N of N archived messages the tap covered, all sent before the breach, with the texts the bots sent, and 0 of the end-to-end ones', async () => {
    const app = await relay();
    const { result, at } = await run(app, 'intercept-breached');
    const v = await view(app);
    // What the archive held when it was copied (a bot's answer may be archived after the copy).
    const breach = v.loot.find((l) => l.kind === 'archive copy')!.at;
    const archive = app.regulator.archived(0, 1000).filter((l) => l.at <= breach);
    const escrowed = archive.filter((l) => keysOf(l.env).model === 'e2e-escrow');
    const e2e = archive.filter((l) => keysOf(l.env).model === 'e2e');
    expect(escrowed.length).toBeGreaterThanOrEqual(2);
    expect(e2e.length).toBeGreaterThanOrEqual(1);
    expect(result.facts).toMatchObject({
      'covered by the tap': escrowed.length,
      'opened by the attacker': escrowed.length,
      'end to end, closed': e2e.length,
      'end to end, opened': 0,
      'audit entries for the theft': 0,
    });

    expect(v.loot.map((l) => l.kind).sort()).toEqual(['archive copy', 'escrow key']);
    expect(v.loot.find((l) => l.kind === 'escrow key')?.kid).toBe(app.regulator.kid);
    expect(v.opened.map((m) => m.id).sort()).toEqual(escrowed.map((l) => l.env.id).sort());
    expect(v.counts).toMatchObject({ held: archive.length, opened: escrowed.length, closed: e2e.length, endToEnd: e2e.length });
    expect(v.closed.map((m) => m.id).sort()).toEqual(e2e.map((l) => l.env.id).sort());
    expect(v.closed.every((m) => m.status === 'end-to-end')).toBe(true);
    // Each opened text is what its sender's bot sent (the bots keep their own sent messages).
    const bots = await Promise.all(app.lab.botNames().map((name) => app.lab.bot(name)));
    for (const m of v.opened) {
      const sent = bots.map((b) => b.m.messages.get(m.id)).find((x) => x?.direction === 'out');
      expect(sent?.text, m.id).toBe(m.text);
    }
    // Sent before the breach: every opened message was archived before the copy was taken.
    expect(v.opened.every((m) => m.at <= breach)).toBe(true);
    expect(v.counts.earliest).toBe(Math.min(...escrowed.map((l) => l.at)));
    expect(v.counts.people).toBe(new Set(escrowed.flatMap((l) => [l.env.from, ...l.env.to])).size);
    expect(v.counts.conversations).toBeGreaterThanOrEqual(2);
    // The end-to-end ones: the stolen key, tried directly with the shared reader, opens none.
    const key = escrowKeyPairFromSecret(fromB64(app.regulator.exportKey('the test').sk));
    for (const line of e2e) expect(openArchived(line, key).status).toBe('end-to-end');
    expect(at).toBeGreaterThan(0);
  });

  it('the breach leaves no trace in the audit log (a copied file is not an export), unlike the audited key export', async () => {
    const app = await relay();
    await run(app, 'tap-on');
    const before = app.regulator.auditLog().length;
    await run(app, 'intercept-breached');
    const entries = app.regulator.auditLog().slice(0, app.regulator.auditLog().length - before);
    // The scenario's own set-up changes the tap (audited); the theft itself adds nothing.
    expect(entries.every((a) => a.action === 'tap changed')).toBe(true);
    expect(app.regulator.auditLog().some((a) => a.action === 'escrow key exported')).toBe(false);
    const n = app.regulator.auditLog().length;
    app.regulator.fileCopy();
    expect(app.regulator.auditLog().length).toBe(n);
  });

  it('a message sent after the breach is not in the stolen copy: the attacker holds what was copied, nothing more', async () => {
    const app = await relay();
    await run(app, 'intercept-breached');
    const before = await view(app);
    const bob = await app.lab.bot('Bob');
    const carol = await app.lab.bot('Carol');
    await until(() => bob.m.directory.has(carol.pin), 'Bob knows Carol');
    const sent = bob.m.sendText([carol.pin], 'After the break-in.');
    await until(() => carol.m.messages.has(sent.id), 'Carol got it');
    await until(() => app.regulator.archived(0, 1000).some((l) => l.env.id === sent.id), 'archived');
    const after = await view(app);
    expect(after.counts).toEqual(before.counts);
    expect(after.opened.some((m) => m.id === sent.id)).toBe(false);
  });
});

describe('the breach and the export-grade key with the databases on disk (as npm start keeps them)', () => {
  it('the breach reads a copy of a regulator.db on disk (WAL mode) and opens what the tap covered; the export-grade key in force survives a restart, and a second breach holds each key once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attacker-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    let app = await startTestRelay({ dataDir: dir, exportGradeBits: BITS });
    try {
      await run(app, 'export-grade');
      const kid = app.regulator.exportGradeTarget()!.kid;
      await app.close();
      app = await startTestRelay({ dataDir: dir, exportGradeBits: BITS });
      expect(app.regulator.exportGradeTarget()?.kid).toBe(kid);
      expect(app.relay.getPolicy().escrowKid).toBe(kid);
      const { result } = await run(app, 'intercept-breached');
      expect(result.facts).toMatchObject({ 'escrow keys in the copy': 2, 'end to end, opened': 0, 'audit entries for the theft': 0 });
      expect(result.facts['opened by the attacker']).toBe(result.facts['covered by the tap']);
      expect(Number(result.facts['covered by the tap'])).toBeGreaterThanOrEqual(4);
      await run(app, 'intercept-breached');
      expect(
        new Set(
          app.lab.attacker
            .view()
            .loot.filter((l) => l.kind === 'escrow key')
            .map((l) => l.kid),
        ).size,
      ).toBe(2);
      expect(app.lab.attacker.view().loot.filter((l) => l.kind === 'escrow key')).toHaveLength(2);
      // The second copy holds only the envelopes the first did not: each envelope is held once, and what opens is the same.
      const [first, second] = app.lab.attacker.view().loot.filter((l) => l.kind === 'archive copy');
      expect(first!.envelopes).toBeGreaterThanOrEqual(4);
      expect(second!.label).toMatch(/^the intercept archive again \(\d+ envelopes, \d+ not in an earlier copy\)/);
      expect(second!.envelopes).toBeLessThan(first!.envelopes!);
      expect(app.lab.attacker.view().counts.held).toBe(first!.envelopes! + second!.envelopes!);
    } finally {
      await app.close();
    }
  });
});

describe('export-grade escrow', () => {
  it("the regulator's export-grade key is in the policy; the attacker holds only its public key and the archive, opens nothing, then the brute force (the worker's search code, in Node) finds the secret and the found key opens both messages", async () => {
    const app = await relay();
    const strong = app.regulator.kid;
    const { result } = await run(app, 'export-grade');
    const target = app.regulator.exportGradeTarget()!;
    expect(target.bits).toBe(BITS);
    expect(target.kid).not.toBe(strong);
    expect(app.relay.getPolicy()).toMatchObject({ tap: true, escrowKid: target.kid, escrowPk: target.pk });
    expect(result.facts).toMatchObject({
      'escrow key': target.kid,
      'secret bits': BITS,
      'sent under it': 2,
      'sealed to it in the copy': 2,
      'private key held by the attacker': false,
    });
    expect(app.regulator.auditLog().some((a) => a.action === 'escrow key weakened' && a.detail.includes(target.kid))).toBe(true);

    const before = await view(app);
    expect(before.targets).toEqual([expect.objectContaining({ kid: target.kid, pk: target.pk, bits: BITS, broken: false })]);
    expect(before.loot.map((l) => l.kind).sort()).toEqual(['archive copy', 'export-grade public key']);
    expect(before.counts.opened).toBe(0);

    // The search, as the worker runs it: every secret until one derives the public key.
    let reports = 0;
    const secret = searchExportKey(fromB64(target.pk), BITS, {
      slice: 128,
      progress: () => {
        reports += 1;
      },
    });
    expect(secret).not.toBeNull();
    expect(reports).toBeGreaterThan(0);
    expect(exportKeyPair(secret!).kid).toBe(target.kid);

    // A wrong guess is refused in words and changes nothing.
    const wrong = (secret! + 1) % 2 ** BITS;
    const refused = await api(app, '/attacker/found', { body: { kid: target.kid, secret: wrong } });
    expect(refused.status).toBe(400);
    const why = (await refused.json()) as { error: string; message: string };
    expect(why.error).toBe('wrong_key');
    expect(why.message).toContain(`derives key ${exportKeyPair(wrong).kid}, not the export-grade key ${target.kid}`);
    expect((await api(app, '/attacker/found', { body: { kid: target.kid, secret: 2 ** BITS } })).status).toBe(400);
    expect((await api(app, '/attacker/found', { body: { kid: 'ffffffffffffffff', secret } })).status).toBe(404);
    expect((await api(app, '/attacker/found', { body: { kid: target.kid, secret: 'x' } })).status).toBe(400);
    expect((await view(app)).counts.opened).toBe(0);

    const found = await api(app, '/attacker/found', { body: { kid: target.kid, secret } });
    expect(found.status).toBe(200);
    const after = await view(app);
    expect(after.targets[0]?.broken).toBe(true);
    const sealed = app.regulator.archived(0, 1000).filter((l) => {
      const k = keysOf(l.env);
      return k.model === 'e2e-escrow' && k.escrow.kid === target.kid;
    });
    // The copy was taken when the scene ended: the bots' answers, sealed to the same key later, are not in it.
    const sealedIds = new Set(sealed.map((l) => l.env.id));
    expect(after.opened).toHaveLength(2);
    expect(after.opened.every((m) => sealedIds.has(m.id))).toBe(true);
    expect(after.opened.map((m) => m.text)).toEqual(['The shipment leaves from dock 7 on Thursday.', 'Understood. Use the side gate, the code is 4471.']);
    // Posting it again leaks nothing more.
    expect((await api(app, '/attacker/found', { body: { kid: target.kid, secret } })).status).toBe(200);
    expect((await view(app)).loot.filter((l) => l.kind === 'broken export key')).toHaveLength(1);
  });

  it('a search for a key no secret of the space derives finds nothing', () => {
    const other = exportKeyPair(2 ** BITS + 5);
    expect(searchExportKey(other.pk, BITS)).toBeNull();
  });

  it('the regulator still opens what its export-grade key sealed after the full-strength key is back, and new messages are sealed to that one', async () => {
    const app = await relay();
    const strong = app.regulator.kid;
    await run(app, 'export-grade');
    const weak = app.regulator.exportGradeTarget()!.kid;
    app.regulator.useExportGrade(false);
    expect(app.relay.getPolicy().escrowKid).toBe(strong);
    expect(app.regulator.exportGradeTarget()).toBeNull();
    expect(app.regulator.recent(10).filter((i) => i.status === 'opened' && i.env.v === 2 && i.env.keys.model === 'e2e-escrow' && i.env.keys.escrow.kid === weak)).toHaveLength(2);
    const alice = await user(app.wsUrl, 'Alice');
    const bob = await app.lab.bot('Bob');
    await knows(alice, bob.pin);
    await until(() => alice.m.policy?.escrowKid === strong, 'Alice has the strong key');
    const sent = alice.m.sendText([bob.pin], 'Under the full-strength key again.');
    await until(() => bob.m.messages.has(sent.id), 'Bob got it');
    const line = app.regulator.recent(20).find((i) => i.env.id === sent.id)!;
    expect(line.status).toBe('opened');
    expect(line.env.v === 2 && line.env.keys.model === 'e2e-escrow' ? line.env.keys.escrow.kid : null).toBe(strong);
    alice.m.stop();
  });
});

describe('the attacker API and the reset', () => {
  it('the attacker API needs the admin token: without it 401, with a wrong one 403, and a posted key leaks nothing', async () => {
    const app = await startTestRelay({ exportGradeBits: BITS, limits: { adminFreeFailures: 1000 } });
    cleanups.push(() => app.close());
    await run(app, 'export-grade');
    const target = app.regulator.exportGradeTarget()!;
    const secret = searchExportKey(fromB64(target.pk), BITS)!;
    for (const token of [null, 'a-wrong-token-of-16+']) {
      const expected = token === null ? 401 : 403;
      const get = await api(app, '/attacker', { token });
      expect(get.status).toBe(expected);
      expect(await get.text()).not.toContain('dock 7');
      expect((await api(app, '/attacker/found', { body: { kid: target.kid, secret }, token })).status).toBe(expected);
    }
    expect(app.lab.attacker.view().targets[0]?.broken).toBe(false);
    expect(app.lab.attacker.has('broken export key')).toBe(false);
  });

  it('a room reset forgets the loot and puts the full-strength escrow key back in force', async () => {
    const app = await relay();
    const strong = app.regulator.kid;
    await run(app, 'export-grade');
    const escrowKeys = async () => (await (await api(app, '/escrow')).json()) as { exportGradeBits: number | null };
    expect((await escrowKeys()).exportGradeBits, "the teacher panel's 'in force' learns the key is export-grade").toBe(app.regulator.exportGradeBits);
    await run(app, 'intercept-breached');
    expect((await view(app)).loot.length).toBeGreaterThan(0);
    expect((await api(app, '/reset', { body: { confirm: 'reset' } })).status).toBe(200);
    expect((await escrowKeys()).exportGradeBits).toBeNull();
    const v = await view(app);
    expect(v.loot).toEqual([]);
    expect(v.targets).toEqual([]);
    expect(v.counts).toEqual({ held: 0, opened: 0, closed: 0, endToEnd: 0, people: 0, conversations: 0, earliest: null });
    expect(app.relay.getPolicy().escrowKid).toBeNull();
    expect(app.regulator.kid).toBe(strong);
    expect(app.regulator.auditLog().some((a) => a.action === 'escrow key restored')).toBe(true);
  });
});
