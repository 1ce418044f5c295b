/**
 * client/core on an in-memory socket: the messenger's side of the protocol,
 * without a relay. The test plays the relay frame by frame.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Messenger, memoryStore, type KeyValueStore, type MessengerEvent, type SocketLike } from '../../client/core/messenger.ts';
import { GROUPS_KEY, OTHERS_HELD, OTHERS_SAVED } from '../../client/core/groups.ts';
import { changeGroup, createGroup, GroupFailure } from '../../shared/groups.ts';
import { DirectoryFailure, OpenFailure } from '../../shared/failures.ts';
import { readFileSync } from 'node:fs';
import { cryptoReady, fromHex, newEscrowKeyPair, newIdentity, toB64, verifyLogin, type Identity } from '../../shared/crypto.ts';
import { openEnvelope, openWithEscrow, sealEnvelope } from '../../shared/envelope.ts';
import { parseClientMessage, type ClientMessage, type Policy, type ServerMessage } from '../../shared/protocol.ts';

class FakeSocket implements SocketLike {
  readyState = 1;
  sent: ClientMessage[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  send(data: string): void {
    const parsed = parseClientMessage(data);
    if (!parsed.ok) throw new Error(`client sent an invalid frame: ${parsed.message}`);
    this.sent.push(parsed.value);
  }
  close(): void {
    this.readyState = 3;
  }
  deliver(msg: ServerMessage | string): void {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
  last<T extends ClientMessage['type']>(type: T): Extract<ClientMessage, { type: T }> {
    const found = [...this.sent].reverse().find((m) => m.type === type);
    if (!found) throw new Error(`no ${type} frame sent`);
    return found as Extract<ClientMessage, { type: T }>;
  }
}

const OFF: Policy = {
  tap: false,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: null,
  escrowKid: null,
  epoch: 1,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};
const NONCE = Buffer.alloc(32, 7).toString('base64');

let bob: Identity;
beforeAll(async () => {
  await cryptoReady();
  bob = newIdentity();
});

/** A messenger logged in to the fake relay, with Bob in its directory. */
function loggedIn(policy: Policy = OFF, storage: KeyValueStore = memoryStore()) {
  const socket = new FakeSocket();
  const m = new Messenger({ name: 'Alice', connect: () => socket, storage });
  const ready = m.start();
  socket.deliver({ type: 'challenge', v: 2, nonce: NONCE, policy });
  socket.deliver({
    type: 'welcome',
    pin: m.pin,
    name: 'Alice',
    policy,
    total: 2,
    directory: [
      { pin: m.pin, name: 'Alice', pk: toB64(m.identity.signPk), online: true },
      { pin: bob.pin, name: 'Bob', pk: toB64(bob.signPk), online: true },
    ],
  });
  return { socket, m, ready };
}

describe('messenger core against a scripted relay', () => {
  it('answers the challenge with a signature over that nonce and its own key', async () => {
    const { socket, m, ready } = loggedIn();
    await ready;
    const hello = socket.last('hello');
    expect(hello.pk).toBe(toB64(m.identity.signPk));
    expect(verifyLogin(NONCE, hello.pk, hello.sig)).toBe(true);
    expect(verifyLogin(toB64(new Uint8Array(32).fill(8)), hello.pk, hello.sig)).toBe(false);
  });

  it('adds an escrow field only while the policy covers the message', async () => {
    const escrow = newEscrowKeyPair();
    const { socket, m } = loggedIn();
    m.sendText([bob.pin], 'before the tap');
    expect(socket.last('send').env.keys.model).toBe('e2e');

    const tap: Policy = { ...OFF, tap: true, escrowPk: toB64(escrow.pk), escrowKid: escrow.kid, epoch: 2 };
    socket.deliver({ type: 'policy', policy: tap });
    const sent = m.sendText([bob.pin], 'under the tap');
    const env = socket.last('send').env;
    expect(env.keys.model === 'e2e-escrow' && env.keys.escrow.kid).toBe(escrow.kid);
    const opened = openWithEscrow(env, escrow, m.identity.signPk);
    expect(opened.ok && opened.value.text).toBe('under the tap');
    expect(sent.readers.escrowKid).toBe(escrow.kid);

    // A warrant for someone else does not cover Alice → Bob.
    socket.deliver({ type: 'policy', policy: { ...tap, scope: 'warrant', pins: ['00000000'], epoch: 3 } });
    m.sendText([bob.pin], 'not under the warrant');
    expect(socket.last('send').env.keys.model).toBe('e2e');
  });

  it('seals again under the new policy when the relay refuses for a missing escrow field, keeping the id', async () => {
    const escrow = newEscrowKeyPair();
    const { socket, m } = loggedIn();
    const msg = m.sendText([bob.pin], 'in flight when the tap went on');
    const first = socket.last('send').env;
    expect(first.keys.model).toBe('e2e');
    socket.deliver({ type: 'policy', policy: { ...OFF, tap: true, escrowPk: toB64(escrow.pk), escrowKid: escrow.kid, epoch: 2 } });
    socket.deliver({ type: 'error', code: 'escrow_required', message: 'add an escrow field', ref: msg.id });
    const second = socket.last('send').env;
    expect(second.id).toBe(first.id);
    expect(second.keys.model === 'e2e-escrow' && second.keys.escrow.kid).toBe(escrow.kid);
    expect(m.messages.get(msg.id)?.readers.escrowKid).toBe(escrow.kid);
    socket.deliver({ type: 'accepted', id: msg.id, duplicate: false });
    expect(m.messages.get(msg.id)?.state).toBe('sent');
  });

  it('opens an incoming envelope, acknowledges it, and drops a replay of the same id', async () => {
    const { socket, m } = loggedIn();
    const me = { pin: m.pin, signPk: m.identity.signPk };
    const { env } = sealEnvelope({ sender: bob, to: [me], conv: 'dm', body: { text: 'hi Alice' } });
    socket.deliver({ type: 'envelope', qid: 5, env });
    expect(m.messages.get(env.id)?.text).toBe('hi Alice');
    expect(socket.last('ack').qids).toEqual([5]);
    const count = m.messages.size;
    socket.deliver({ type: 'envelope', qid: 6, env });
    expect(m.messages.size).toBe(count);
    expect(socket.last('ack').qids).toEqual([6]);
  });

  it('marks a tampered envelope unreadable instead of showing altered text', async () => {
    const { socket, m } = loggedIn();
    const { env } = sealEnvelope({ sender: bob, to: [{ pin: m.pin, signPk: m.identity.signPk }], conv: 'dm', body: { text: 'original' } });
    const tampered = { ...env, ts: env.ts + 1 };
    socket.deliver({ type: 'envelope', qid: 9, env: tampered });
    const got = m.messages.get(env.id);
    expect(got?.state).toBe('unreadable');
    expect(got?.text).toBe('');
  });

  it('moves a sent message through sent, delivered and read as receipts arrive', async () => {
    const { socket, m } = loggedIn();
    const msg = m.sendText([bob.pin], 'tick tock');
    socket.deliver({ type: 'accepted', id: msg.id, duplicate: false });
    expect(m.messages.get(msg.id)?.state).toBe('sent');
    socket.deliver({ type: 'receipt', qid: 1, id: msg.id, by: bob.pin, state: 'delivered', at: Date.now() });
    expect(m.messages.get(msg.id)?.state).toBe('delivered');
    socket.deliver({ type: 'receipt', qid: 2, id: msg.id, by: bob.pin, state: 'read', at: Date.now() });
    expect(m.messages.get(msg.id)?.state).toBe('read');
  });

  it('reports a malformed relay frame as an error event and keeps working', async () => {
    const { socket, m } = loggedIn();
    const errors: string[] = [];
    m.on((e) => e.type === 'error' && errors.push(e.message));
    socket.deliver('{"type":"envelope","qid":"x"}');
    socket.deliver('not json');
    expect(errors).toHaveLength(2);
    m.sendText([bob.pin], 'still fine');
    expect(socket.last('send').env.to).toEqual([bob.pin]);
  });

  it('keeps its identity in the injected storage, so the same storage is the same person', () => {
    const storage = memoryStore();
    const a = new Messenger({ name: 'Alice', connect: () => new FakeSocket(), storage });
    const b = new Messenger({ name: 'Alice', connect: () => new FakeSocket(), storage });
    const c = new Messenger({ name: 'Alice', connect: () => new FakeSocket(), storage: memoryStore() });
    expect(b.pin).toBe(a.pin);
    expect(c.pin).not.toBe(a.pin);
  });
});

describe('directory entries are checked (trust on first use)', () => {
  it('an entry whose PIN is not derived from its key is refused with pin_not_derived and never enters the directory', () => {
    const { socket, m } = loggedIn();
    const events: MessengerEvent[] = [];
    m.on((e) => events.push(e));
    const impostor = newIdentity();
    socket.deliver({ type: 'presence', users: [{ pin: '0BADF00D', name: 'Carol', pk: toB64(impostor.signPk), online: true }] });
    expect(m.directory.has('0BADF00D')).toBe(false);
    expect(events).toContainEqual(expect.objectContaining({ type: 'key-refused', pin: '0BADF00D', code: DirectoryFailure.PinNotDerived }));
    expect(() => m.sendText(['0BADF00D'], 'hello?')).toThrow(/not in the directory/);
  });

  it('another key for a PIN already known is refused with key_changed: the first key is kept, messages are sealed to it, and an envelope signed by the offered key does not open', async () => {
    // Two real keys that share a PIN (a 32-bit birthday collision, tests/fixtures/pin-collision.json).
    const collision = JSON.parse(readFileSync(new URL('../fixtures/pin-collision.json', import.meta.url), 'utf8')) as {
      pin: string;
      first: { seedHex: string };
      second: { seedHex: string };
    };
    const first = newIdentity(fromHex(collision.first.seedHex));
    const second = newIdentity(fromHex(collision.second.seedHex));
    expect([first.pin, second.pin]).toEqual([collision.pin, collision.pin]);
    const { socket, m } = loggedIn();
    const events: MessengerEvent[] = [];
    m.on((e) => events.push(e));
    socket.deliver({ type: 'presence', users: [{ pin: first.pin, name: 'Carol', pk: toB64(first.signPk), online: true }] });
    expect(m.directory.get(first.pin)?.pk).toBe(toB64(first.signPk));
    // The relay (or someone in its place) now says Carol's key is another one with the same PIN.
    socket.deliver({ type: 'presence', users: [{ pin: second.pin, name: 'Carol', pk: toB64(second.signPk), online: true }] });
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'key-refused', pin: first.pin, code: DirectoryFailure.KeyChanged, kept: toB64(first.signPk), offered: toB64(second.signPk) }),
    );
    expect(m.directory.get(first.pin)?.pk).toBe(toB64(first.signPk));
    expect(m.refusedKeys.get(first.pin)).toMatchObject({ code: DirectoryFailure.KeyChanged });
    // Still sealed to the key first seen: the first Carol opens it, the second cannot.
    m.sendText([first.pin], 'to the Carol I met first');
    const env = socket.last('send').env;
    expect(openEnvelope(env, first, m.identity.signPk).ok).toBe(true);
    expect(openEnvelope(env, second, m.identity.signPk).ok).toBe(false);
    // An envelope from that PIN signed by the offered key is checked against the kept key: it does not open.
    const forged = sealEnvelope({ sender: second, to: [{ pin: m.pin, signPk: m.identity.signPk }], conv: 'dm', body: { text: 'trust me' } }).env;
    socket.deliver({ type: 'envelope', qid: 7, env: forged });
    expect(m.messages.get(forged.id)).toMatchObject({ state: 'unreadable', errorCode: OpenFailure.BadSignature });
  });

  it('the first key seen survives a reload: a new messenger on the same storage still refuses another key for that PIN', () => {
    const collision = JSON.parse(readFileSync(new URL('../fixtures/pin-collision.json', import.meta.url), 'utf8')) as { first: { seedHex: string }; second: { seedHex: string } };
    const first = newIdentity(fromHex(collision.first.seedHex));
    const second = newIdentity(fromHex(collision.second.seedHex));
    const storage = memoryStore();
    const socket = new FakeSocket();
    const m = new Messenger({ name: 'Alice', connect: () => socket, storage });
    void m.start();
    socket.deliver({ type: 'challenge', v: 2, nonce: NONCE, policy: OFF });
    socket.deliver({ type: 'welcome', pin: m.pin, name: 'Alice', policy: OFF, total: 2, directory: [{ pin: first.pin, name: 'Carol', pk: toB64(first.signPk), online: true }] });
    m.stop();
    const again = new Messenger({ name: 'Alice', connect: () => socket, storage });
    const events: MessengerEvent[] = [];
    again.on((e) => events.push(e));
    void again.start();
    socket.deliver({ type: 'challenge', v: 2, nonce: NONCE, policy: OFF });
    socket.deliver({
      type: 'welcome',
      pin: again.pin,
      name: 'Alice',
      policy: OFF,
      total: 2,
      directory: [{ pin: second.pin, name: 'Carol', pk: toB64(second.signPk), online: true }],
    });
    expect(events).toContainEqual(expect.objectContaining({ type: 'key-refused', pin: first.pin, code: DirectoryFailure.KeyChanged }));
    expect(again.directory.get(first.pin)?.pk).toBe(toB64(first.signPk));
  });

  it("what others' groups make a tab hold is bounded: of 400 groups a stranger makes, at most OTHERS_HELD are held and OTHERS_SAVED saved, a group by someone you wrote to is kept, and a group let go of refuses its older list as stale", async () => {
    const storage = memoryStore();
    const { socket, m } = loggedIn(OFF, storage);
    const stranger = newIdentity();
    socket.deliver({ type: 'presence', users: [{ pin: stranger.pin, name: 'Stranger', pk: toB64(stranger.signPk), online: true }] });
    const me = { pin: m.pin, signPk: m.identity.signPk };
    const asMember = { pin: m.pin, pk: toB64(m.identity.signPk) };
    let qid = 100;
    const deliver = (from: Identity, conv: string, body: Parameters<typeof sealEnvelope>[0]['body']) => {
      const { env } = sealEnvelope({ sender: from, to: [me], conv, body });
      socket.deliver({ type: 'envelope', qid: qid++, env });
      return env;
    };
    m.sendText([bob.pin], 'hello Bob'); // Bob is someone Alice has written to
    const bobs = createGroup(bob, "Bob's", [asMember]);
    deliver(bob, bobs.id, { text: '', group: bobs, note: 'group-created' });
    const early1 = createGroup(stranger, 'early', [asMember]);
    const early2 = changeGroup(early1, stranger, { name: 'early, renamed' });
    deliver(stranger, early1.id, { text: '', group: early1, note: 'group-created' });
    deliver(stranger, early1.id, { text: '', group: early2, note: 'group-changed' });
    expect(m.groups.get(early1.id)?.version).toBe(2);
    for (let i = 0; i < 400; i++) {
      const g = createGroup(stranger, `junk ${i}`, [asMember]);
      deliver(stranger, g.id, { text: '', group: g, note: 'group-created' });
    }
    const others = m.groups.all().filter((g) => g.creator !== toB64(m.identity.signPk));
    expect(others.length, "others' groups held").toBeLessThanOrEqual(OTHERS_HELD);
    expect(m.groups.get(bobs.id), 'the group of someone Alice wrote to').toBeDefined();
    expect(m.groups.get(early1.id), "the least active stranger's group is let go of").toBeUndefined();
    // Its older list comes back (it may name someone since removed): stale. Its newest brings it back.
    const old = deliver(stranger, early1.id, { text: 'from version 1', group: early1 });
    expect(m.messages.get(old.id)?.flag?.code).toBe(GroupFailure.Stale);
    const current = deliver(stranger, early1.id, { text: 'from version 2', group: early2 });
    expect(m.messages.get(current.id)?.chat).toBe(early1.id);
    expect(m.groups.get(early1.id)?.version).toBe(2);
    m.stop();
    const saved = JSON.parse(storage.getItem(GROUPS_KEY)!) as { groups: { id: string }[]; floors: [string, number][] };
    expect(saved.groups.length, "others' groups saved").toBeLessThanOrEqual(OTHERS_SAVED);
    expect(saved.groups.map((g) => g.id)).toContain(bobs.id);
    expect(saved.floors.length, 'the others are remembered by version only').toBeGreaterThan(0);
    console.log(
      `[figures] 400 + 2 groups from others: ${others.length} held, ${saved.groups.length} saved, ${saved.floors.length} remembered by version; the group book is ${storage.getItem(GROUPS_KEY)!.length} characters`,
    );
  });
});
