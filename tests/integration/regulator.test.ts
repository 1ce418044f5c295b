/**
 * The regulator tap end to end, each check made with the real keys: the escrow
 * key as exported over GET /api/regulator/escrow-key and the archive as
 * exported over GET /api/regulator/archive.jsonl, opened with openWithEscrow
 * exactly as an offline decryptor would.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import sodium from 'libsodium-wrappers';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ChatMessage, memoryStore } from '../../client/core/messenger.ts';
import { rawClient, type RawClient } from '../helpers/raw-client.ts';
import { describeReaders } from '../../client/core/readers.ts';
import { escrowKeyPairFromSecret, fromB64, toB64, type EscrowKeyPair, type Identity } from '../../shared/crypto.ts';
import { openEnvelope, openWithEscrow, sealEnvelope } from '../../shared/envelope.ts';
import { OpenFailure } from '../../shared/failures.ts';
import { Envelope, ErrorCode, keysOf, type AuditEntry, type Policy, type TapSettings } from '../../shared/protocol.ts';
import type { ArchiveLine, EscrowKeyFile } from '../../server/regulator.ts';
import { startTestRelay, until, user, type TestUser } from '../helpers/relay.ts';
import { dumpSqlite, findSecret } from '../helpers/scan.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const TOKEN = 'test-admin-token';

// ---------------------------------------------------------------------------
// The teacher's API, as a client of it would use it.

async function api(app: TestRelay, path: string, init: { method?: string; body?: unknown; token?: string | null } = {}): Promise<Response> {
  const token = init.token === undefined ? TOKEN : init.token;
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  return fetch(`${app.url}/api/regulator${path}`, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });
}

async function setTap(app: TestRelay, settings: Partial<TapSettings> & { tap: boolean }): Promise<Policy> {
  const res = await api(app, '/tap', { method: 'POST', body: settings });
  expect(res.status).toBe(200);
  return ((await res.json()) as { policy: Policy }).policy;
}

async function exportKey(app: TestRelay): Promise<{ file: EscrowKeyFile; key: EscrowKeyPair }> {
  const res = await api(app, '/escrow-key');
  expect(res.status).toBe(200);
  const file = (await res.json()) as EscrowKeyFile;
  const key = escrowKeyPairFromSecret(fromB64(file.sk));
  expect(key.kid).toBe(file.kid);
  return { file, key };
}

async function exportArchive(app: TestRelay): Promise<ArchiveLine[]> {
  const res = await api(app, '/archive.jsonl');
  expect(res.status).toBe(200);
  const text = await res.text();
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => {
      const parsed = JSON.parse(line) as ArchiveLine;
      return { ...parsed, env: Envelope.parse(parsed.env) };
    });
}

async function audit(app: TestRelay): Promise<AuditEntry[]> {
  const res = await api(app, '/audit');
  expect(res.status).toBe(200);
  return ((await res.json()) as { audit: AuditEntry[] }).audit;
}

const openLine = (line: ArchiveLine, key: EscrowKeyPair) => openWithEscrow(line.env, key, fromB64(line.senderPk));

// ---------------------------------------------------------------------------
// Clients

const cleanups: (() => unknown)[] = [];

const raw = (wsUrl: string, name: string): Promise<RawClient> => rawClient(wsUrl, { name, onCleanup: (fn) => cleanups.push(fn) });

async function policyReached(app: TestRelay, users: TestUser[]): Promise<void> {
  const epoch = app.relay.getPolicy().epoch;
  await until(() => users.every((u) => u.m.policy?.epoch === epoch), `every client has policy epoch ${epoch}`);
}

/**
 * Send through client/core and wait until the relay accepted it and every recipient has it. With a
 * group name, the sender first makes the group (its note is an envelope too: returned in `note`).
 */
async function send(from: TestUser, to: TestUser[], text: string, group?: string): Promise<{ id: string; note?: string }> {
  let note: string | undefined;
  let msg: ChatMessage;
  if (group !== undefined) {
    const made = from.m.createGroup(
      group,
      to.map((u) => u.m.pin),
    );
    note = made.message.id;
    for (const u of to) await until(() => u.m.messages.has(made.message.id), `${u.m.name} gets the group note`);
    msg = from.m.sendGroup(made.id, text);
  } else {
    msg = from.m.sendText(
      to.map((u) => u.m.pin),
      text,
    );
  }
  await until(() => from.m.messages.get(msg.id)?.state !== 'sending', `${text}: accepted`);
  expect(from.m.messages.get(msg.id)?.state, `${text}: ${from.m.messages.get(msg.id)?.error ?? ''}`).not.toBe('failed');
  for (const u of to) await until(() => u.m.messages.get(msg.id)?.text === text, `${u.m.name} reads "${text}"`);
  return note === undefined ? { id: msg.id } : { id: msg.id, note };
}

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

// ---------------------------------------------------------------------------

describe('the regulator tap, checked with the exported escrow key against the exported archive', () => {
  let dataDir: string;
  let app: TestRelay;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let all: TestUser[];
  /** Every envelope the relay accepted in this test, by id: its text and whether the escrow key must open it. */
  let ledger: Map<string, { text: string; opens: boolean }>;
  /** Every identity in play (messengers and raw clients), for the "who can read" check. */
  let identities: Map<string, Identity>;

  /** The archive holds every accepted envelope, and the real key opens exactly those the ledger says. */
  async function checkArchive(): Promise<{ key: EscrowKeyPair; lines: ArchiveLine[] }> {
    const { key } = await exportKey(app);
    const lines = await exportArchive(app);
    expect(new Set(lines.map((l) => l.env.id))).toEqual(new Set(ledger.keys()));
    for (const line of lines) {
      const want = ledger.get(line.env.id)!;
      const opened = openLine(line, key);
      expect(opened.ok, `"${want.text}" should ${want.opens ? '' : 'not '}open${opened.ok ? '' : `: ${opened.reason}`}`).toBe(want.opens);
      if (opened.ok) expect(opened.value.text).toBe(want.text);
    }
    return { key, lines };
  }

  async function sendAndLog(from: TestUser, to: TestUser[], text: string, opens: boolean, group?: string): Promise<void> {
    const sent = await send(from, to, text, group);
    ledger.set(sent.id, { text, opens });
    if (sent.note) ledger.set(sent.note, { text: '', opens });
  }

  /** A forger under the tap: a raw client whose escrow field is 80 random bytes under the right key id. */
  async function forge(text: string): Promise<string> {
    const kid = app.relay.getPolicy().escrowKid!;
    const mallory = await raw(app.wsUrl, 'Forger');
    identities.set(mallory.identity.pin, mallory.identity);
    await until(() => bob.m.directory.has(mallory.identity.pin), 'Bob knows the forger');
    const forged = sealEnvelope({
      sender: mallory.identity,
      to: [{ pin: bob.m.pin, signPk: bob.m.identity.signPk }],
      conv: 'dm',
      body: { text },
      plan: { model: 'e2e-escrow', forged: { kid } },
    }).env;
    mallory.send({ type: 'send', env: forged });
    await mallory.next('accepted', (f) => f.id === forged.id);
    ledger.set(forged.id, { text, opens: false });
    await until(() => bob.m.messages.get(forged.id)?.text === text, 'Bob reads the forged-escrow message');
    return forged.id;
  }

  /** Each test starts from a fresh relay, data folder and three people: no test depends on another's traffic or tap. */
  beforeEach(async () => {
    ledger = new Map();
    identities = new Map();
    dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-regulator-'));
    // One test below tries a wrong token on each of six routes in a row: the lockout after five
    // (tested in hostile-edges.test.ts) is pushed out of the way.
    app = await startTestRelay({ dataDir, limits: { adminFreeFailures: 1000 } });
    alice = await user(app.wsUrl, 'Alice');
    bob = await user(app.wsUrl, 'Bob');
    carol = await user(app.wsUrl, 'Carol');
    all = [alice, bob, carol];
    for (const u of all) identities.set(u.m.pin, u.m.identity);
    await until(() => all.every((u) => all.every((v) => u.m.directory.has(v.m.pin))), 'everyone knows everyone');
  });

  afterEach(async () => {
    for (const u of all ?? []) u.m.stop();
    await app?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('with the tap off the escrow key opens none of the archived messages (and there are some)', async () => {
    expect(app.relay.getPolicy()).toMatchObject({ tap: false, escrowPk: null, escrowKid: null });
    await sendAndLog(alice, [bob], 'off: dinner at eight?', false);
    await sendAndLog(bob, [alice], 'off: make it nine', false);
    await sendAndLog(alice, [carol], 'off: Bob is late again', false);
    const { key, lines } = await checkArchive();
    expect(lines).toHaveLength(3);
    expect(key.kid).toBe(app.regulator.kid);
    for (const line of lines) {
      expect(keysOf(line.env).model).toBe('e2e');
      expect(openLine(line, key)).toMatchObject({ ok: false, code: OpenFailure.NoEscrowField });
    }
  });

  it('with the tap on for all traffic the escrow key opens every new compliant message and exactly those; earlier ones stay closed', async () => {
    await sendAndLog(alice, [bob], 'before: the tap is not on yet', false);
    const policy = await setTap(app, { tap: true, scope: 'all', announced: true });
    expect(policy).toMatchObject({ tap: true, scope: 'all', escrowKid: app.regulator.kid, escrowPk: app.regulator.publicKey });
    await policyReached(app, all);
    const group = 'Book club';
    await sendAndLog(alice, [bob], 'all: the package is in the locker', true);
    await sendAndLog(carol, [alice], 'all: locker 42?', true);
    await sendAndLog(alice, [bob, carol], 'all: group chat is tapped too', true, group);
    await sendAndLog(bob, [carol], 'all: do not tell Alice', true);
    await checkArchive();
  });

  it('under a warrant for Bob only messages from or to Bob open; Alice and Carol stay closed', async () => {
    await setTap(app, { tap: true, scope: 'warrant', pins: [bob.m.pin], announced: false });
    expect(app.relay.getPolicy()).toMatchObject({ tap: true, scope: 'warrant', pins: [bob.m.pin], announced: false });
    await policyReached(app, all);
    await sendAndLog(alice, [bob], 'warrant: to Bob', true);
    await sendAndLog(bob, [carol], 'warrant: from Bob', true);
    await sendAndLog(alice, [carol], 'warrant: Alice to Carol, not covered', false);
    await sendAndLog(carol, [alice], 'warrant: Carol to Alice, not covered', false);
    await sendAndLog(carol, [alice, bob], 'warrant: a group with Bob in it', true, 'With Bob');
    await checkArchive();
  });

  it('with the tap off again new messages stay closed while those captured before still open', async () => {
    await setTap(app, { tap: true, scope: 'all', announced: true });
    await policyReached(app, all);
    await sendAndLog(alice, [bob], 'on: captured while the tap was on', true);
    await setTap(app, { tap: false });
    expect(app.relay.getPolicy()).toMatchObject({ tap: false, escrowPk: null, escrowKid: null });
    await policyReached(app, all);
    await sendAndLog(alice, [bob], 'off again: can we talk freely now?', false);
    await sendAndLog(bob, [alice, carol], 'off again: supposedly', false, 'After');
    const { lines, key } = await checkArchive();
    // Not vacuous: the archive holds both kinds.
    expect(lines.filter((l) => openLine(l, key).ok).length).toBeGreaterThan(0);
    expect(lines.filter((l) => !openLine(l, key).ok).length).toBeGreaterThan(0);
  });

  it('without the admin token the API answers 401, with a wrong one 403, and nothing changes (tap settings, policy, audit)', async () => {
    const settingsBefore = app.regulator.tapSettings();
    const policyBefore = app.relay.getPolicy();
    const auditBefore = await audit(app);
    const attempts: [string, string, unknown?][] = [
      ['POST', '/tap', { tap: true, scope: 'all', announced: false }],
      ['GET', '/tap'],
      ['GET', '/intercepts'],
      ['GET', '/audit'],
      ['GET', '/archive.jsonl'],
      ['GET', '/escrow-key'],
    ];
    for (const [method, path, body] of attempts) {
      const none = await api(app, path, { method, body, token: null });
      expect(none.status, `${method} ${path} without a token`).toBe(401);
      const wrong = await api(app, path, { method, body, token: 'not-the-admin-token' });
      expect(wrong.status, `${method} ${path} with a wrong token`).toBe(403);
      for (const text of [await none.text(), await wrong.text()]) {
        expect(text).not.toContain('"sk"');
        expect(text).not.toContain('"env"');
      }
    }
    expect(app.regulator.tapSettings()).toEqual(settingsBefore);
    expect(app.relay.getPolicy()).toEqual(policyBefore);
    expect(await audit(app)).toEqual(auditBefore);
  });

  it('in tap mode the relay refuses an envelope without an escrow field from a covered sender with escrow_required', async () => {
    await setTap(app, { tap: true, scope: 'all', announced: true });
    await policyReached(app, all);
    const kid = app.relay.getPolicy().escrowKid!;
    const mallory = await raw(app.wsUrl, 'Mallory');
    identities.set(mallory.identity.pin, mallory.identity);
    await until(() => bob.m.directory.has(mallory.identity.pin), 'Bob knows Mallory');
    const to = [{ pin: bob.m.pin, signPk: bob.m.identity.signPk }];

    const bare = sealEnvelope({ sender: mallory.identity, to, conv: 'dm', body: { text: 'no escrow for you' } }).env;
    mallory.send({ type: 'send', env: bare });
    const error = await mallory.next('error', (f) => f.ref === bare.id);
    expect(error.code).toBe(ErrorCode.EscrowRequired);
    expect(error.message).toContain(kid);

    // A well-formed field sealed to another key, under a made-up key id: refused the same way.
    const other = sodium.crypto_box_keypair();
    const wrongKid = sealEnvelope({
      sender: mallory.identity,
      to,
      conv: 'dm',
      body: { text: 'escrow for someone else' },
      escrow: { pk: other.publicKey, kid: '0123456789abcdef' },
    }).env;
    mallory.send({ type: 'send', env: wrongKid });
    expect((await mallory.next('error', (f) => f.ref === wrongKid.id)).code).toBe(ErrorCode.EscrowRequired);

    expect(mallory.frames.some((f) => f.type === 'accepted')).toBe(false);
    expect(app.store.envelopeJson(bare.id)).toBeUndefined();
    expect((await exportArchive(app)).some((l) => l.env.id === bare.id || l.env.id === wrongKid.id)).toBe(false);
    expect(bob.m.messages.has(bare.id)).toBe(false);
  });

  it('a forged escrow field is accepted by the relay but the regulator gets nothing', async () => {
    await setTap(app, { tap: true, scope: 'all', announced: true });
    await policyReached(app, all);
    const kid = app.relay.getPolicy().escrowKid!;
    expect(kid).not.toBeNull();
    const mallory = await raw(app.wsUrl, 'Forger');
    identities.set(mallory.identity.pin, mallory.identity);
    await until(() => bob.m.directory.has(mallory.identity.pin), 'Bob knows the forger');

    // Right kid, right length, 80 random bytes: well formed, signed by the sender, useless to the regulator.
    const forged = sealEnvelope({
      sender: mallory.identity,
      to: [{ pin: bob.m.pin, signPk: bob.m.identity.signPk }],
      conv: 'dm',
      body: { text: 'forged: the regulator cannot read this' },
      plan: { model: 'e2e-escrow', forged: { kid } },
    }).env;
    expect(Envelope.safeParse(forged).success).toBe(true);
    expect(forged.keys.model === 'e2e-escrow' && forged.keys.escrow.kid).toBe(kid);

    mallory.send({ type: 'send', env: forged });
    expect(await mallory.next('accepted', (f) => f.id === forged.id)).toMatchObject({ duplicate: false });
    ledger.set(forged.id, { text: 'forged: the regulator cannot read this', opens: false });
    // Bob reads it normally: the forgery costs the sender nothing.
    await until(() => bob.m.messages.get(forged.id)?.text === 'forged: the regulator cannot read this', 'Bob reads the forged-escrow message');

    const { key, lines } = await checkArchive();
    const line = lines.find((l) => l.env.id === forged.id)!;
    expect(openLine(line, key)).toMatchObject({ ok: false, code: OpenFailure.EscrowDoesNotOpen });
    // The console's item says what is true: an escrow field is there, and it does not open.
    expect(app.regulator.recent(1000).find((i) => i.env.id === forged.id)).toMatchObject({
      status: 'not-opened',
      code: OpenFailure.EscrowDoesNotOpen,
      readable: false,
      text: null,
    });
  });

  it('a client whose message is in flight when the tap turns on seals it again and it still gets through, escrowed', async () => {
    await setTap(app, { tap: false });
    await policyReached(app, all);
    const errorsBefore = alice.events.length;
    // Same tick: the relay's policy changes before Alice has heard of it, so she seals without escrow.
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    const msg = alice.m.sendText([bob.m.pin], 'in flight: sealed twice');
    expect(msg.readers.escrowKid).toBeNull();
    await until(() => bob.m.messages.get(msg.id)?.text === 'in flight: sealed twice', 'Bob reads the resealed message');
    ledger.set(msg.id, { text: 'in flight: sealed twice', opens: true });

    // The first attempt really was refused, so the reseal path was taken.
    expect(alice.events.slice(errorsBefore).some((e) => e.type === 'error' && e.code === ErrorCode.EscrowRequired && e.ref === msg.id)).toBe(true);
    expect(alice.m.messages.get(msg.id)).toMatchObject({ state: expect.stringMatching(/^(sent|delivered|read)$/), readers: { escrowKid: app.regulator.kid } });
    await checkArchive();
  });

  it('every "who can read" claim is true of the bytes: the escrow key opens exactly the messages claiming it, and exactly the listed participants open each', async () => {
    // A history with every kind: end to end, tapped (1:1 and a group), a forged field, end to end again.
    await sendAndLog(alice, [bob], 'history: end to end', false);
    await setTap(app, { tap: true, scope: 'all', announced: true });
    await policyReached(app, all);
    await sendAndLog(bob, [alice], 'history: tapped', true);
    await sendAndLog(carol, [alice, bob], 'history: a tapped group', true, 'Tapped');
    await forge('history: a forged field');
    await setTap(app, { tap: false });
    await policyReached(app, all);
    await sendAndLog(alice, [carol], 'history: end to end again', false);
    const { key, lines } = await checkArchive();
    const byId = new Map(lines.map((l) => [l.env.id, l]));
    let claimedEscrow = 0;
    let forgedSeen = 0;
    let checked = 0;
    for (const u of all) {
      for (const msg of u.m.messages.values()) {
        const line = byId.get(msg.id);
        expect(line, `${msg.id} is in the archive`).toBeDefined();
        const senderPk = fromB64(line!.senderPk);
        const escrowOpens = openWithEscrow(line!.env, key, senderPk).ok;
        if (msg.direction === 'out' || msg.readers.escrowKid === null) {
          // What this client sealed itself, or an envelope with no escrow field: the claim is a fact.
          expect(msg.readers.escrowKid !== null, `${u.m.name}: "${msg.text}"`).toBe(escrowOpens);
        } else {
          // A field someone else sealed: no recipient can check it, so the claim must say so.
          expect(msg.readers.escrowUnverified, `${u.m.name}: "${msg.text}" is marked unverifiable`).toBe(true);
          expect(describeReaders(msg.readers, (pin) => pin)).toMatch(/if the sender/i);
          // And the caution is warranted: it opens when a compliant client sealed it, and not when the forger did.
          expect(escrowOpens, `${u.m.name}: "${msg.text}"`).toBe(all.some((v) => v.m.pin === msg.from));
          if (!escrowOpens) forgedSeen++;
        }
        if (msg.readers.escrowKid !== null) claimedEscrow++;
        expect(new Set(msg.readers.participants)).toEqual(new Set([msg.from, ...msg.to]));
        for (const [pin, identity] of identities) {
          const opens = openEnvelope(line!.env, identity, senderPk).ok;
          expect(opens, `${pin} ${opens ? 'opens' : 'cannot open'} "${msg.text}"`).toBe(msg.readers.participants.includes(pin));
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(ledger.size);
    expect(claimedEscrow).toBeGreaterThan(0);
    expect(forgedSeen).toBe(1);
  });

  it('exporting the escrow key is recorded in the audit log', async () => {
    const before = await audit(app);
    const { file } = await exportKey(app);
    const after = await audit(app);
    expect(after).toHaveLength(before.length + 1);
    expect(after[0]).toMatchObject({ action: 'escrow key exported', detail: expect.stringContaining(file.kid) });
    expect(after[0]!.detail).not.toContain(file.sk);
  });

  it("the relay never holds the escrow private key: not in its database nor its policy, though the regulator's database has it", async () => {
    await setTap(app, { tap: true, scope: 'all', announced: true });
    await policyReached(app, all);
    for (const [i, [from, to]] of (
      [
        [alice, bob],
        [bob, carol],
        [carol, alice],
      ] as const
    ).entries())
      await sendAndLog(from, [to], `tapped ${i}`, true);
    expect(app.relay.getPolicy().tap).toBe(true);
    const { key } = await exportKey(app);
    const relayDump = dumpSqlite(join(dataDir, 'relay.db'));
    expect(findSecret(relayDump.text, key.sk)).toEqual([]);
    expect(findSecret(JSON.stringify(app.relay.getPolicy()), key.sk)).toEqual([]);
    expect(findSecret(JSON.stringify(app.relay.directory()), key.sk)).toEqual([]);
    // The scan can see the key where it is kept, and sees the public key the relay does hold.
    expect(findSecret(dumpSqlite(join(dataDir, 'regulator.db')).text, key.sk).length).toBeGreaterThan(0);
    expect(findSecret(JSON.stringify(app.relay.getPolicy()), key.pk).length).toBeGreaterThan(0);
    expect(findSecret(relayDump.text, key.kid).length).toBeGreaterThan(0);
  });
});

describe('the regulator across a restart', () => {
  it('the archive and the escrow key survive a restart: same key id, old messages still open, tap setting kept', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-regulator-restart-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const first = await startTestRelay({ dataDir });
    cleanups.push(() => first.close());
    const alice = await user(first.wsUrl, 'Alice', memoryStore());
    const bob = await user(first.wsUrl, 'Bob', memoryStore());
    cleanups.push(
      () => alice.m.stop(),
      () => bob.m.stop(),
    );
    await until(() => alice.m.directory.has(bob.m.pin) && bob.m.directory.has(alice.m.pin), 'they know each other');

    const closed = await send(alice, [bob], 'before the tap');
    await setTap(first, { tap: true, scope: 'all', announced: false });
    await policyReached(first, [alice, bob]);
    const open = await send(bob, [alice], 'harvest now, decrypt later');
    const before = await exportKey(first);
    expect((await exportArchive(first)).map((l) => l.env.id)).toEqual([closed.id, open.id]);
    alice.m.stop();
    bob.m.stop();
    await first.close();

    const second = await startTestRelay({ dataDir });
    cleanups.push(() => second.close());
    const after = await exportKey(second);
    expect(after.key.kid).toBe(before.key.kid);
    expect(toB64(after.key.sk)).toBe(toB64(before.key.sk));
    expect(second.relay.getPolicy()).toMatchObject({ tap: true, scope: 'all', announced: false, escrowKid: before.key.kid });
    const lines = await exportArchive(second);
    expect(lines.map((l) => l.env.id)).toEqual([closed.id, open.id]);
    const [l1, l2] = lines as [ArchiveLine, ArchiveLine];
    expect(openLine(l1, after.key).ok).toBe(false);
    const opened = openLine(l2, after.key);
    expect(opened.ok && opened.value.text).toBe('harvest now, decrypt later');
  });
});

describe('the tap policy', () => {
  it('the policy epoch moves only when the policy changes: applying the same settings again sends no policy frame and keeps the epoch', async () => {
    const app = await startTestRelay();
    cleanups.push(() => app.close());
    const alice = await user(app.wsUrl, 'Alice');
    cleanups.push(() => alice.m.stop());
    const on: TapSettings = { tap: true, scope: 'all', pins: [], announced: true };
    const first = await setTap(app, on);
    await until(() => alice.m.policy?.epoch === first.epoch, 'Alice has the policy');
    const frames = alice.events.filter((e) => e.type === 'policy').length;
    const again = await setTap(app, on);
    expect(again.epoch).toBe(first.epoch);
    const off = await setTap(app, { tap: false });
    expect(off.epoch).toBe(first.epoch + 1);
    await until(() => alice.m.policy?.epoch === off.epoch, 'Alice has the new policy');
    expect(alice.events.filter((e) => e.type === 'policy').length).toBe(frames + 1);
  });
});
