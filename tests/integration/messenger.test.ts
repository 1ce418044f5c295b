/**
 * The core messenger end to end: a real relay on 127.0.0.1 port 0, real
 * WebSocket clients built on client/core (and raw sockets where a test must
 * misbehave the way a hand-written client could).
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Messenger, memoryStore, newGroupId, type KeyValueStore, type SocketLike } from '../../client/core/messenger.ts';
import { newIdentity, signLogin, toB64, type Identity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { CloseCode, ErrorCode, MAX_FRAME_BYTES, PROTOCOL_VERSION, parseServerMessage, type Envelope, type ServerMessage, type TrafficEvent } from '../../shared/protocol.ts';
import { startTestRelay, until, type TestUser } from '../helpers/relay.ts';
import { dumpSqlite, findSecret } from '../helpers/scan.ts';
import { rawClient, type RawClient, type RawOptions } from '../helpers/raw-client.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;

// ---------------------------------------------------------------------------
// Harness: everything a test starts is stopped after it, whatever happens.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function relay(dataDir: string | null = null): Promise<TestRelay & { traffic: TrafficEvent[] }> {
  const app = await startTestRelay({ dataDir });
  const traffic: TrafficEvent[] = [];
  app.relay.observe('test: traffic log', (e) => traffic.push(e));
  cleanups.push(() => app.close());
  return Object.assign(app, { traffic });
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-messenger-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A messenger on client/core whose every incoming frame is also recorded, to count deliveries. */
interface SpiedUser extends TestUser {
  frames: ServerMessage[];
}

async function spied(wsUrl: string, name: string, storage: KeyValueStore = memoryStore()): Promise<SpiedUser> {
  const frames: ServerMessage[] = [];
  const m = new Messenger({
    name,
    storage,
    backoff: { minMs: 50, maxMs: 500 },
    connect: () => {
      const ws = new WebSocket(wsUrl);
      // Registered before the messenger's own handler, so a frame is recorded before it is handled.
      ws.on('message', (data) => {
        const parsed = parseServerMessage(data.toString());
        if (parsed.ok) frames.push(parsed.value);
      });
      return ws as unknown as SocketLike;
    },
  });
  const events: TestUser['events'] = [];
  m.on((e) => events.push(e));
  cleanups.push(() => m.stop());
  await m.start();
  return { m, events, storage, frames };
}

const envelopeFrames = (frames: ServerMessage[], id: string) => frames.filter((f) => f.type === 'envelope' && f.env.id === id);
const envelopeEvents = (traffic: TrafficEvent[], id: string) => traffic.filter((e) => e.kind === 'envelope' && e.env.id === id);

async function knowsAll(users: SpiedUser[]): Promise<void> {
  const pins = users.map((u) => u.m.pin);
  await until(() => users.every((u) => pins.every((p) => u.m.directory.has(p))), 'everyone knows everyone');
}

async function received(u: SpiedUser, id: string, what = `${u.m.name} has ${id}`): Promise<void> {
  await until(() => u.m.messages.get(id)?.direction === 'in', what);
}

type Raw = RawClient;
const raw = (wsUrl: string, opts: Omit<RawOptions, 'onCleanup'> = {}): Promise<Raw> => rawClient(wsUrl, { ...opts, onCleanup: (fn) => cleanups.push(fn) });

/** Round trip on one socket: every frame the relay sent before the pong has arrived. */
async function sync(client: Raw): Promise<void> {
  const t = Math.random();
  client.send({ type: 'ping', t });
  await client.next('pong', (f) => f.t === t);
}

const dm = (sender: Identity, to: Identity, text: string, over?: Partial<Identity>): Envelope =>
  sealEnvelope({ sender: { ...sender, ...over }, to: [{ pin: to.pin, signPk: to.signPk }], conv: 'dm', body: { text } }).env;

// ---------------------------------------------------------------------------

describe('messenger over a real relay', () => {
  it("Alice and Bob exchange 1:1 messages in both directions and each reads the other's text", async () => {
    const app = await relay();
    const alice = await spied(app.wsUrl, 'Alice');
    const bob = await spied(app.wsUrl, 'Bob');
    await knowsAll([alice, bob]);

    const hello = alice.m.sendText([bob.m.pin], 'Bob, the geese fly south at dawn');
    await received(bob, hello.id);
    expect(bob.m.messages.get(hello.id)).toMatchObject({ from: alice.m.pin, text: 'Bob, the geese fly south at dawn', state: 'received', chat: `dm:${alice.m.pin}` });

    const reply = bob.m.sendText([alice.m.pin], 'Alice, and return in spring');
    await received(alice, reply.id);
    expect(alice.m.messages.get(reply.id)).toMatchObject({ from: bob.m.pin, text: 'Alice, and return in spring', state: 'received', chat: `dm:${bob.m.pin}` });

    // Both ends show the same conversation, in order.
    expect(alice.m.messagesIn(`dm:${bob.m.pin}`).map((m) => m.text)).toEqual(['Bob, the geese fly south at dawn', 'Alice, and return in spring']);
    expect(bob.m.messagesIn(`dm:${alice.m.pin}`).map((m) => m.text)).toEqual(['Bob, the geese fly south at dawn', 'Alice, and return in spring']);
  });

  it('a group of three is one envelope with a wrap per member, fanned out so each member receives exactly one copy', async () => {
    const app = await relay();
    const alice = await spied(app.wsUrl, 'Alice');
    const bob = await spied(app.wsUrl, 'Bob');
    const carol = await spied(app.wsUrl, 'Carol');
    await knowsAll([alice, bob, carol]);
    const group = alice.m.createGroup('Night shift', [bob.m.pin, carol.m.pin]);
    await received(bob, group.message.id);
    await received(carol, group.message.id);

    const sent = alice.m.sendGroup(group.id, 'group: meet at the old mill');
    await received(bob, sent.id);
    await received(carol, sent.id);
    for (const member of [bob, carol]) {
      expect(member.m.messages.get(sent.id)).toMatchObject({ text: 'group: meet at the old mill', group: 'Night shift', chat: group.id, state: 'received' });
    }

    // The relay saw a single envelope naming both recipients, with a key wrap for each member.
    const events = envelopeEvents(app.traffic, sent.id);
    expect(events).toHaveLength(1);
    const env = (events[0] as Extract<TrafficEvent, { kind: 'envelope' }>).env;
    expect([...env.to].sort()).toEqual([bob.m.pin, carol.m.pin].sort());
    expect(('wraps' in env.keys ? env.keys.wraps : []).map((w) => w.to).sort()).toEqual([alice.m.pin, bob.m.pin, carol.m.pin].sort());

    // A later message on the same sockets proves no second copy was still on its way.
    const marker = alice.m.sendGroup(group.id, 'group: marker');
    await received(bob, marker.id);
    await received(carol, marker.id);
    expect(envelopeFrames(bob.frames, sent.id)).toHaveLength(1);
    expect(envelopeFrames(carol.frames, sent.id)).toHaveLength(1);
    expect(envelopeFrames(alice.frames, sent.id)).toHaveLength(0);

    // A member answers the group and everyone else gets it.
    const answer = carol.m.sendGroup(group.id, 'group: bring a lamp');
    await received(alice, answer.id);
    await received(bob, answer.id);
    expect(alice.m.messagesIn(group.id).map((m) => m.text)).toEqual(['', 'group: meet at the old mill', 'group: marker', 'group: bring a lamp']);
    expect(alice.m.messagesIn(group.id)[0]?.note).toMatchObject({ kind: 'group-created', version: 1 });
  });

  it('a message queued for an offline user survives a relay restart and is delivered exactly once, the queue emptying on his ack', async () => {
    const dataDir = tempDir();
    const first = await relay(dataDir);
    const aliceStorage = memoryStore();
    const bobStorage = memoryStore();
    const alice = await spied(first.wsUrl, 'Alice', aliceStorage);
    const bob = await spied(first.wsUrl, 'Bob', bobStorage);
    await knowsAll([alice, bob]);
    bob.m.stop();
    await until(() => alice.m.directory.get(bob.m.pin)?.online === false, 'Alice sees Bob offline');

    const sent = alice.m.sendText([bob.m.pin], 'while you were away the river rose');
    await until(() => alice.m.messages.get(sent.id)?.state === 'sent', 'the relay accepted the message');
    expect(first.store.pendingFor(bob.m.pin).map((r) => r.ref)).toEqual([sent.id]);
    alice.m.stop();
    await first.close();

    // A new relay process on the same data folder.
    const second = await relay(dataDir);
    expect(second.store.pendingFor(bob.m.pin).map((r) => r.ref)).toEqual([sent.id]);
    const bobAgain = await spied(second.wsUrl, 'Bob', bobStorage);
    expect(bobAgain.m.pin).toBe(bob.m.pin);
    await received(bobAgain, sent.id);
    expect(bobAgain.m.messages.get(sent.id)).toMatchObject({ text: 'while you were away the river rose', from: alice.m.pin });
    await until(() => second.store.pendingFor(bob.m.pin).length === 0, "Bob's queue is empty after his ack");

    // Alice comes back to the new relay: the delivered receipt made while she was away reaches her.
    const aliceAgain = await spied(second.wsUrl, 'Alice', aliceStorage);
    await until(() => aliceAgain.m.messages.get(sent.id)?.state === 'delivered', 'Alice sees D');
    // Exactly once: a later message on Bob's socket proves no second copy followed.
    const marker = aliceAgain.m.sendText([bob.m.pin], 'marker');
    await received(bobAgain, marker.id);
    expect(envelopeFrames(bobAgain.frames, sent.id)).toHaveLength(1);
    expect([...bobAgain.m.messages.values()].filter((m) => m.text === 'while you were away the river rose')).toHaveLength(1);
    await until(() => second.store.queueDepth() === 0, 'nothing left queued once everything was acknowledged');
  });

  it('delivered and read receipts reach the sender, also when the sender was offline when they were made', async () => {
    const app = await relay();
    const aliceStorage = memoryStore();
    const bobStorage = memoryStore();
    const alice = await spied(app.wsUrl, 'Alice', aliceStorage);
    const bob = await spied(app.wsUrl, 'Bob', bobStorage);
    await knowsAll([alice, bob]);

    // Both online: sent → delivered → read.
    const live = alice.m.sendText([bob.m.pin], 'are you there');
    await until(() => alice.m.messages.get(live.id)?.state === 'delivered', 'Alice sees D');
    expect(alice.m.messages.get(live.id)?.deliveredTo).toEqual([bob.m.pin]);
    bob.m.markRead([live.id]);
    await until(() => alice.m.messages.get(live.id)?.state === 'read', 'Alice sees R');
    expect(alice.m.messages.get(live.id)?.readBy).toEqual([bob.m.pin]);

    // Bob offline when Alice sends; Alice offline when Bob receives and reads.
    bob.m.stop();
    await until(() => alice.m.directory.get(bob.m.pin)?.online === false, 'Alice sees Bob offline');
    const later = alice.m.sendText([bob.m.pin], 'call me when you get this');
    await until(() => alice.m.messages.get(later.id)?.state === 'sent', 'accepted');
    alice.m.stop();
    const bobBack = await spied(app.wsUrl, 'Bob', bobStorage);
    await received(bobBack, later.id);
    bobBack.m.markRead([later.id]);
    // The read receipt replaces the delivered one still waiting (read implies delivered).
    await until(() => {
      const receipts = app.store.pendingFor(alice.m.pin).filter((r) => r.kind === 'receipt' && r.ref === later.id);
      return receipts.length === 1 && receipts[0]!.payload.includes('"state":"read"');
    }, 'the read receipt queued for the offline sender');
    expect(alice.m.messages.get(later.id)?.state).toBe('sent');

    const aliceBack = await spied(app.wsUrl, 'Alice', aliceStorage);
    await until(() => aliceBack.m.messages.get(later.id)?.state === 'read', 'Alice sees R on her return');
    expect(aliceBack.m.messages.get(later.id)).toMatchObject({ deliveredTo: [bob.m.pin], readBy: [bob.m.pin] });
    await until(() => app.store.pendingFor(alice.m.pin).length === 0, 'receipts deleted once Alice acknowledged them');
  });

  it('queued items are deleted only when acknowledged: a device that does not ack gets the same items again on reconnect', async () => {
    const app = await relay();
    const alice = await spied(app.wsUrl, 'Alice');
    const bobId = newIdentity();
    const bob1 = await raw(app.wsUrl, { identity: bobId, name: 'Bob' });
    await until(() => alice.m.directory.has(bobId.pin), 'Alice knows Bob');

    const one = alice.m.sendText([bobId.pin], 'first of two');
    const two = alice.m.sendText([bobId.pin], 'second of two');
    await bob1.next('envelope', (f) => f.env.id === two.id);
    const firstDelivery = bob1.frames.filter((f) => f.type === 'envelope').map((f) => ({ qid: f.qid, id: f.env.id }));
    expect(firstDelivery.map((d) => d.id)).toEqual([one.id, two.id]);
    bob1.ws.close();
    await bob1.closed;

    // Not acknowledged: still queued, and delivered again, with the same qids, on the next login.
    expect(app.store.pendingFor(bobId.pin).map((r) => r.qid)).toEqual(firstDelivery.map((d) => d.qid));
    const bob2 = await raw(app.wsUrl, { identity: bobId, name: 'Bob' });
    await bob2.next('envelope', (f) => f.env.id === two.id);
    expect(bob2.frames.filter((f) => f.type === 'envelope').map((f) => ({ qid: f.qid, id: f.env.id }))).toEqual(firstDelivery);
    expect(alice.m.messages.get(one.id)?.state).toBe('sent'); // no D without an ack

    // Acknowledge one: only that one goes, and Alice gets its D.
    bob2.send({ type: 'ack', qids: [firstDelivery[0]!.qid] });
    await until(() => alice.m.messages.get(one.id)?.state === 'delivered', 'D for the acknowledged one');
    expect(app.store.pendingFor(bobId.pin).map((r) => r.ref)).toEqual([two.id]);
    expect(alice.m.messages.get(two.id)?.state).toBe('sent');
    bob2.ws.close();
    await bob2.closed;

    const bob3 = await raw(app.wsUrl, { identity: bobId, name: 'Bob' });
    await sync(bob3);
    expect(bob3.frames.filter((f) => f.type === 'envelope').map((f) => f.env.id)).toEqual([two.id]);
    bob3.send({ type: 'ack', qids: [firstDelivery[1]!.qid] });
    await until(() => app.store.pendingFor(bobId.pin).length === 0, 'queue empty after the last ack');
    bob3.ws.close();
    await bob3.closed;

    const bob4 = await raw(app.wsUrl, { identity: bobId, name: 'Bob' });
    await sync(bob4);
    expect(bob4.frames.filter((f) => f.type === 'envelope')).toEqual([]);
  });

  it("the relay refuses an envelope claiming another user's PIN (impersonation) and delivers nothing of it", async () => {
    const app = await relay();
    const alice = await spied(app.wsUrl, 'Alice');
    const bob = await spied(app.wsUrl, 'Bob');
    const mallory = await raw(app.wsUrl, { name: 'Mallory' });
    await knowsAll([alice, bob]);

    // Well formed in every way, but `from` is Alice's PIN while the session is Mallory's.
    const forged = dm(mallory.identity, bob.m.identity, 'this is Alice, send me the keys', { pin: alice.m.pin });
    expect(forged.from).toBe(alice.m.pin);
    mallory.send({ type: 'send', env: forged });
    const error = await mallory.next('error', (f) => f.ref === forged.id);
    expect(error.code).toBe(ErrorCode.Impersonation);
    expect(error.message).toContain(mallory.identity.pin);
    expect(mallory.frames.some((f) => f.type === 'accepted' && f.id === forged.id)).toBe(false);

    expect(envelopeEvents(app.traffic, forged.id)).toHaveLength(0);
    expect(app.traffic.some((e) => e.kind === 'rejected' && e.code === ErrorCode.Impersonation && e.pin === mallory.identity.pin)).toBe(true);
    expect(app.store.envelopeJson(forged.id)).toBeUndefined();
    expect(app.store.pendingFor(bob.m.pin)).toEqual([]);
    // Anything sent to Bob's socket before this later message would already be there.
    const marker = alice.m.sendText([bob.m.pin], 'the real Alice');
    await received(bob, marker.id);
    expect(envelopeFrames(bob.frames, forged.id)).toHaveLength(0);
    expect(bob.m.messages.has(forged.id)).toBe(false);

    // The connection stays usable: Mallory can still send as herself.
    const honest = dm(mallory.identity, bob.m.identity, 'it was me, Mallory');
    mallory.send({ type: 'send', env: honest });
    await mallory.next('accepted', (f) => f.id === honest.id);
    await received(bob, honest.id);
    expect(bob.m.messages.get(honest.id)?.from).toBe(mallory.identity.pin);
  });

  it('a message to an unknown PIN gets unknown_recipient naming that PIN and is not stored', async () => {
    const app = await relay();
    const alice = await raw(app.wsUrl, { name: 'Alice' });
    const bob = await raw(app.wsUrl, { name: 'Bob' });
    const ghost = newIdentity(); // never logged in: not in the directory
    const env = sealEnvelope({
      sender: alice.identity,
      to: [
        { pin: bob.identity.pin, signPk: bob.identity.signPk },
        { pin: ghost.pin, signPk: ghost.signPk },
      ],
      conv: newGroupId(),
      body: { text: 'to the living and the dead', group: 'Mixed' },
    }).env;
    alice.send({ type: 'send', env });
    const error = await alice.next('error', (f) => f.ref === env.id);
    expect(error.code).toBe(ErrorCode.UnknownRecipient);
    expect(error.message).toContain(ghost.pin);
    expect(error.message).not.toContain(bob.identity.pin);
    expect(envelopeEvents(app.traffic, env.id)).toHaveLength(0);
    expect(app.store.pendingFor(bob.identity.pin)).toEqual([]);
    await sync(bob);
    expect(bob.frames.some((f) => f.type === 'envelope')).toBe(false);
  });

  it('a replayed envelope id is answered accepted with duplicate:true and reaches the recipient only once', async () => {
    const app = await relay();
    const alice = await raw(app.wsUrl, { name: 'Alice' });
    const bob = await spied(app.wsUrl, 'Bob');
    await until(() => bob.m.directory.has(alice.identity.pin), 'Bob knows Alice');

    const env = dm(alice.identity, bob.m.identity, 'say it once');
    alice.send({ type: 'send', env });
    expect((await alice.next('accepted', (f) => f.id === env.id)).duplicate).toBe(false);
    await received(bob, env.id);
    alice.frames.length = 0;
    alice.send({ type: 'send', env });
    expect((await alice.next('accepted', (f) => f.id === env.id)).duplicate).toBe(true);

    const marker = dm(alice.identity, bob.m.identity, 'marker');
    alice.send({ type: 'send', env: marker });
    await received(bob, marker.id);
    expect(envelopeFrames(bob.frames, env.id)).toHaveLength(1);
    expect(envelopeEvents(app.traffic, env.id)).toHaveLength(1);
    expect([...bob.m.messages.values()].filter((m) => m.text === 'say it once')).toHaveLength(1);
  });

  it('a second tab of the same identity replaces the first, and the first does not log back in to take over', async () => {
    const app = await relay();
    const storage = memoryStore();
    const alice = await spied(app.wsUrl, 'Alice');
    const tab1 = await spied(app.wsUrl, 'Bob', storage);
    const tab2 = await spied(app.wsUrl, 'Bob', storage);
    expect(tab2.m.pin).toBe(tab1.m.pin);
    await until(() => tab1.m.status === 'offline', 'the first tab is cut off');
    expect(tab1.events.some((e) => e.type === 'error' && /another tab|elsewhere/i.test(e.message))).toBe(true);

    // The second tab gets the traffic; the first stays out.
    await until(() => alice.m.directory.get(tab2.m.pin)?.online === true, 'Alice sees Bob online');
    const sent = alice.m.sendText([tab2.m.pin], 'which one of you is Bob');
    await received(tab2, sent.id);
    expect(tab1.m.messages.has(sent.id)).toBe(false);
    // Give a fighting first tab time to come back (its reconnect delay is at most 62 ms here).
    await new Promise((r) => setTimeout(r, 400));
    const logins = app.traffic.filter((e) => e.kind === 'login' && e.pin === tab1.m.pin);
    expect(logins).toHaveLength(2);
    expect(tab1.m.status).toBe('offline');
    expect(tab2.m.status).toBe('online');
  });

  it('the relay stores no plaintext of any message anywhere in its database (tables, file bytes, WAL), though it does store the envelope ids', async () => {
    const dataDir = tempDir();
    const app = await relay(dataDir);
    const alice = await spied(app.wsUrl, 'Alice');
    const bob = await spied(app.wsUrl, 'Bob');
    const carol = await spied(app.wsUrl, 'Carol');
    await knowsAll([alice, bob, carol]);
    const group = alice.m.createGroup('Secret society of owls', [bob.m.pin, carol.m.pin]);
    await received(carol, group.message.id);

    const texts = [
      'plaintext-one: the vault code is 4417',
      'plaintext-two: meet me under the clock tower',
      'plaintext-three: the owls are not what they seem',
      'plaintext-four: queued while Carol was away',
    ];
    const ids: string[] = [];
    const m1 = alice.m.sendText([bob.m.pin], texts[0]!);
    const m2 = bob.m.sendText([alice.m.pin], texts[1]!);
    const m3 = alice.m.sendGroup(group.id, texts[2]!);
    for (const [u, id] of [
      [bob, m1.id],
      [alice, m2.id],
      [bob, m3.id],
      [carol, m3.id],
    ] as const)
      await received(u, id);
    bob.m.markRead([m1.id, m3.id]);
    ids.push(m1.id, m2.id, m3.id);
    // One envelope stays queued (Carol offline), so the scan sees a stored envelope, not only deleted ones.
    carol.m.stop();
    await until(() => alice.m.directory.get(carol.m.pin)?.online === false, 'Carol offline');
    const m4 = alice.m.sendText([carol.m.pin], texts[3]!);
    await until(() => alice.m.messages.get(m4.id)?.state === 'sent', 'accepted');
    ids.push(m4.id);
    await until(() => alice.m.messages.get(m1.id)?.state === 'read', 'read receipt stored and delivered');

    const scan = (what: string) => {
      const dump = dumpSqlite(join(dataDir, 'relay.db'));
      for (const text of [...texts, 'Secret society of owls']) expect(findSecret(dump.text, text), `${what}: "${text}"`).toEqual([]);
      // Not vacuous: the scan does see what the relay legitimately keeps.
      for (const id of ids) expect(findSecret(dump.text, id).length, `${what}: envelope id ${id}`).toBeGreaterThan(0);
      expect(Object.keys(dump.tables).sort()).toEqual(expect.arrayContaining(['envelopes', 'metadata', 'queue', 'users']));
      expect(JSON.stringify(dump.tables.envelopes)).toContain(m4.id);
      return dump;
    };
    const live = scan('while running');
    expect(Object.keys(live.files).some((f) => f.endsWith('-wal'))).toBe(true);
    await app.close();
    scan('after shutdown');
  });

  it('a malformed, unknown or wrongly-typed frame gets an error naming the problem and the connection stays usable', async () => {
    const app = await relay();
    const client = await raw(app.wsUrl, { login: false });
    client.send('{"type": "ping", this is not json');
    expect(await client.next('error')).toMatchObject({ code: ErrorCode.BadJson, message: expect.stringMatching(/JSON/) });
    client.frames.length = 0;
    client.send({ type: 'launch', missiles: 3 });
    expect(await client.next('error')).toMatchObject({ code: ErrorCode.BadFrame, message: expect.stringMatching(/type/) });
    client.frames.length = 0;
    client.send({ type: 'ping', t: 'soon' });
    expect(await client.next('error')).toMatchObject({ code: ErrorCode.BadFrame, message: expect.stringMatching(/\bt\b/) });
    client.frames.length = 0;
    client.ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    expect(await client.next('error')).toMatchObject({ code: ErrorCode.BadFrame, message: expect.stringMatching(/binary/) });
    client.frames.length = 0;
    client.send({ type: 'send', env: { v: 1 } });
    expect(await client.next('error')).toMatchObject({ code: ErrorCode.BadFrame, message: expect.stringMatching(/env\./) });

    // Still usable: a valid ping gets its pong, and the login still works on this same connection.
    await sync(client);
    client.send({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(client.identity.signPk), name: 'Survivor', sig: signLogin(client.nonce, client.identity) });
    expect(await client.next('welcome')).toMatchObject({ pin: client.identity.pin, name: 'Survivor' });
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('a frame over MAX_FRAME_BYTES closes the connection with 1009 and the relay serves others on', async () => {
    const app = await relay();
    const big = await raw(app.wsUrl, { name: 'Bigmouth' });
    big.send('x'.repeat(MAX_FRAME_BYTES + 1));
    expect((await big.closed).code).toBe(CloseCode.TooBig);

    const other = await raw(app.wsUrl, { name: 'Other' });
    await sync(other);
    const health = (await (await fetch(`${app.url}/healthz`)).json()) as { ok: boolean };
    expect(health.ok).toBe(true);
  });

  it('GET /healthz answers JSON {"ok":true,...} with live counts', async () => {
    const app = await relay();
    await spied(app.wsUrl, 'Alice');
    const res = await fetch(`${app.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ ok: true, online: 1, tap: false });
  });
});
