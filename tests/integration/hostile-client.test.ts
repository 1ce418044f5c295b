/**
 * A victim's client (client/core Messenger, driven as the chat page drives it) against what other
 * participants can send it: floods into an open chat, far-future timestamps, storage filled by
 * strangers. Real relay on 127.0.0.1 port 0; attackers are hand-driven raw clients within their
 * own budgets (ported from the attack branch's tests/integration/attacks-client.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { sealEnvelope } from '../../shared/envelope.ts';
import { fromB64, toB64 } from '../../shared/crypto.ts';
import { createGroup } from '../../shared/groups.ts';
import { CloseCode, type Envelope, type MessageBody } from '../../shared/protocol.ts';
import { Messenger, memoryStore, type KeyValueStore, type MessengerEvent, type SocketLike } from '../../client/core/messenger.ts';
import { knows, startTestRelay, until, user, type TestUser } from '../helpers/relay.ts';
import { rawClient, type RawClient } from '../helpers/raw-client.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
async function relay(): Promise<TestRelay> {
  const app = await startTestRelay();
  cleanups.push(() => app.close());
  return app;
}
async function member(app: TestRelay, name: string, storage: KeyValueStore = memoryStore()): Promise<TestUser> {
  const u = await user(app.wsUrl, name, storage);
  cleanups.push(() => u.m.stop());
  return u;
}
async function raw(app: TestRelay, name: string): Promise<RawClient> {
  return rawClient(app.wsUrl, { name, onCleanup: (fn) => cleanups.push(fn) });
}
const rcpt = (u: TestUser | RawClient) => ('m' in u ? { pin: u.m.pin, signPk: u.m.identity.signPk } : { pin: u.identity.pin, signPk: u.identity.signPk });

async function sendRaw(c: RawClient, to: { pin: string; signPk: Uint8Array }[], conv: string, body: MessageBody, ts?: number): Promise<Envelope> {
  const { env } = sealEnvelope({ sender: c.identity, to, conv, body, ...(ts !== undefined ? { fixed: { ts } } : {}) });
  c.send({ type: 'send', env });
  await c.next('accepted', (f) => f.id === env.id);
  return env;
}

describe('a victim\'s client against other participants', () => {
  it('a message stamped a day ahead is placed by arrival, not by its timestamp: a later message is the chat\'s newest and its preview, and the far-off clock is marked', async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await member(app, 'Bob');
    const mallory = await raw(app, 'Mallory');
    await knows(alice, bob.m.pin, mallory.identity.pin);
    await knows(bob, alice.m.pin, mallory.identity.pin);
    const made = alice.m.createGroup('Class', [bob.m.pin, mallory.identity.pin]);
    await until(() => bob.m.groups.get(made.id) !== undefined, 'Bob holds the group');
    await mallory.next('envelope', (f) => f.env.id === made.message.id);
    const state = bob.m.groups.get(made.id)!;
    const future = Date.now() + 24 * 3600_000;
    const pinned = await sendRaw(mallory, [rcpt(alice), rcpt(bob)], made.id, { text: 'Exam moved to room 12', group: state }, future);
    await until(() => bob.m.messages.has(pinned.id), 'Bob receives it');
    const later = alice.m.sendGroup(made.id, 'No it is not, exam stays in room 3');
    await until(() => bob.m.messages.has(later.id), 'Bob receives Alice\'s correction');

    const thread = bob.m.messagesIn(made.id);
    expect(thread.map((m) => m.id)).toEqual([made.message.id, pinned.id, later.id]);
    expect(bob.m.chats().find((c) => c.chat === made.id)!.last!.id).toBe(later.id);
    const marked = bob.m.messages.get(pinned.id)!;
    expect(marked.ts, 'the sender\'s own timestamp is kept for display').toBe(future);
    expect(marked.clockAheadMs, 'the sender\'s clock is marked as about a day ahead').toBeGreaterThan(23 * 3600_000);
    expect(bob.m.messages.get(later.id)!.clockAheadMs, 'an honest clock is not marked').toBeUndefined();
  });

  it('a victim with a group open, receiving 4 senders × 20 messages a second for 15 s, is never refused or closed 4005, keeps every message, and its queue drains: its acks and reads are batched and the relay never counts them as a flood', async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    // The victim, with its outgoing frames counted by type.
    const sentByVictim = new Map<string, number>();
    const victimMessenger = new Messenger({
      name: 'Bob',
      storage: memoryStore(),
      backoff: { minMs: 50, maxMs: 500 },
      connect: () => {
        const ws = new WebSocket(app.wsUrl);
        const send = ws.send.bind(ws);
        ws.send = ((data: string) => {
          const type = /"type":"([a-z-]+)"/.exec(data)?.[1] ?? '?';
          sentByVictim.set(type, (sentByVictim.get(type) ?? 0) + 1);
          send(data);
        }) as typeof ws.send;
        return ws as unknown as SocketLike;
      },
    });
    const victimEvents: MessengerEvent[] = [];
    victimMessenger.on((e) => victimEvents.push(e));
    await victimMessenger.start();
    cleanups.push(() => victimMessenger.stop());
    const victim = { m: victimMessenger };
    const strangers = await Promise.all([0, 1, 2, 3].map((i) => raw(app, `Stranger ${i}`)));
    await until(() => strangers.every((s) => victim.m.directory.has(s.identity.pin)) && victim.m.directory.has(alice.m.pin), 'the victim knows everyone');
    await knows(alice, victim.m.pin);
    const group = createGroup(strangers[0]!.identity, 'Workshop', [{ pin: victim.m.pin, pk: toB64(victim.m.identity.signPk) }, ...strangers.slice(1).map((s) => ({ pin: s.identity.pin, pk: toB64(s.identity.signPk) }))]);
    const members = group.members.map((x) => ({ pin: x.pin, signPk: fromB64(x.pk) }));
    const others = (s: RawClient) => members.filter((x) => x.pin !== s.identity.pin);
    strangers[0]!.send({ type: 'send', env: sealEnvelope({ sender: strangers[0]!.identity, to: others(strangers[0]!), conv: group.id, body: { text: '', group, note: 'group-created' } }).env });
    await until(() => victim.m.groups.get(group.id) !== undefined, 'the victim holds the group');
    // What the chat page does with the group open: every render (one per incoming frame at worst)
    // marks the open chat read (client/ui/chat.ts markSeen).
    victim.m.on((event) => {
      if (event.type === 'message') victim.m.markChatRead(group.id);
    });
    for (const s of strangers) s.frames.length = 0;
    const framesBefore = new Map(sentByVictim);
    const accepted = new Set<string>();
    const timer = setInterval(() => {
      for (const s of strangers) {
        for (let i = 0; i < 2; i++) s.send({ type: 'send', env: sealEnvelope({ sender: s.identity, to: others(s), conv: group.id, body: { text: 'spam', group } }).env });
      }
    }, 100);
    const acker = setInterval(() => {
      for (const s of strangers) {
        const frames = s.frames.splice(0);
        for (const f of frames) if (f.type === 'accepted') accepted.add(f.id);
        s.raw.length = 0;
        const qids = frames.flatMap((f) => (f.type === 'envelope' ? [f.qid] : []));
        for (let i = 0; i < qids.length; i += 1000) s.send({ type: 'ack', qids: qids.slice(i, i + 1000) });
      }
    }, 250);
    cleanups.push(() => (clearInterval(timer), clearInterval(acker)));
    const seconds = 15;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    clearInterval(timer);
    await new Promise((r) => setTimeout(r, 500)); // the last answers
    await until(() => [...accepted].every((id) => victim.m.messages.has(id)), 'the victim has every accepted message', 20_000);
    await until(() => app.store.queueLoad(victim.m.pin).envelopes === 0, 'the victim\'s queue drains', 10_000);
    clearInterval(acker);
    const honest = alice.m.sendText(victim.m.pin, 'are you still there?');
    await until(() => victim.m.messages.has(honest.id), 'an honest DM reaches the victim');

    const delta = (type: string) => (sentByVictim.get(type) ?? 0) - (framesBefore.get(type) ?? 0);
    const refused = victimEvents.filter((e) => e.type === 'error' && e.code === 'rate_limited').length;
    const offline = victimEvents.filter((e) => e.type === 'status' && e.status === 'offline').length;
    console.log(`[figures] flood of ${accepted.size} group messages in ${seconds} s (4 senders × 20/s): the victim sent ${delta('ack')} ack frames (${(delta('ack') / seconds).toFixed(1)}/s) and ${delta('read')} read frames (${(delta('read') / seconds).toFixed(1)}/s); rate_limited ${refused}, offline ${offline}, relay flood closes ${app.relay.stats.floodCloses}, receipts paced ${app.relay.stats.receiptsPaced}`);
    expect(accepted.size, 'the strangers\' messages accepted').toBeGreaterThan(4 * 20 * seconds * 0.8);
    expect({ refused, offline, floodCloses: app.relay.stats.floodCloses }).toEqual({ refused: 0, offline: 0, floodCloses: 0 });
    expect(victim.m.messagesIn(group.id).filter((m) => m.direction === 'in').length, 'every message kept (and the note)').toBe(accepted.size + 1);
    expect((delta('ack') + delta('read')) / seconds, 'the victim\'s ack and read frames a second').toBeLessThan(20);
    expect(victim.m.messagesIn(group.id).every((m) => m.seen)).toBe(true);
  }, 90_000);

  it('ack and read frames are never refused for rate nor counted toward the flood close: 600 in a burst leave the frame budget whole, while frames only dressed as acks pay it', async () => {
    const app = await relay();
    const c = await raw(app, 'Acker');
    const other = await raw(app, 'Other');
    const id = (n: number) => n.toString(16).padStart(32, '0');
    for (let i = 0; i < 300; i++) c.send({ type: 'ack', qids: [i + 1_000_000] });
    for (let i = 0; i < 300; i++) c.send({ type: 'read', to: other.identity.pin, ids: [id(i)] });
    // Then as many sends as the frame burst allows: none is refused, the acks took nothing from it.
    const envs = Array.from({ length: 50 }, () => sealEnvelope({ sender: c.identity, to: [{ pin: other.identity.pin, signPk: other.identity.signPk }], conv: 'dm', body: { text: 'after the acks' } }).env);
    for (const env of envs) c.send({ type: 'send', env });
    await until(() => envs.every((env) => c.frames.some((f) => f.type === 'accepted' && f.id === env.id)), 'every send after the acks accepted', 15_000);
    const limited = () => c.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited').length;
    expect(limited(), 'rate_limited replies for 600 receipts and 50 sends').toBe(0);
    expect(app.relay.stats.floodCloses).toBe(0);
    expect(app.relay.stats.receiptsPaced, 'past their own allowance they were read more slowly').toBeGreaterThan(0);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);

    // A lookup whose head reads like an ack (a duplicate "type" key: the last one wins when parsed).
    const disguised = `{"type":"ack","type":"lookup","pins":["${other.identity.pin}"]}`;
    for (let i = 0; i < 200; i++) c.send(disguised);
    await until(() => limited() > 0, 'the disguised frames are rate limited like any other', 10_000);
    expect(CloseCode.Flooding).toBe(4005);
  }, 60_000);
});
