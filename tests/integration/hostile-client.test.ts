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
import { QuotaStorage } from '../helpers/quota-store.ts';
import { SAVE_BUDGET } from '../../client/core/saved-history.ts';
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Send `n` DMs of `text` from `c` to `to` at about `perSecond`, resending any refused for rate, until all are accepted. */
async function flood(c: RawClient, to: { pin: string; signPk: Uint8Array }, n: number, perSecond: number, text: string): Promise<void> {
  const byId = new Map<string, Envelope>();
  const queue: Envelope[] = [];
  for (let i = 0; i < n; i++) {
    const { env } = sealEnvelope({ sender: c.identity, to: [to], conv: 'dm', body: { text } });
    byId.set(env.id, env);
    queue.push(env);
  }
  const accepted = new Set<string>();
  let read = 0;
  let credit = 0;
  const deadline = Date.now() + 60_000;
  while (accepted.size < n && Date.now() < deadline) {
    credit += perSecond / 10;
    for (; credit >= 1 && queue.length; credit--) c.send({ type: 'send', env: queue.shift()! });
    await sleep(100);
    for (; read < c.frames.length; read++) {
      const f = c.frames[read]!;
      if (f.type === 'accepted') accepted.add(f.id);
      if (f.type === 'error' && f.code === 'rate_limited' && f.ref && byId.has(f.ref)) queue.push(byId.get(f.ref)!);
    }
  }
  if (accepted.size < n) throw new Error(`only ${accepted.size} of ${n} accepted`);
}

describe("a victim's client against other participants", () => {
  it("a message stamped a day ahead is placed by arrival, not by its timestamp: a later message is the chat's newest and its preview, and the far-off clock is marked", async () => {
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
    await until(() => bob.m.messages.has(later.id), "Bob receives Alice's correction");

    const thread = bob.m.messagesIn(made.id);
    expect(thread.map((m) => m.id)).toEqual([made.message.id, pinned.id, later.id]);
    expect(bob.m.chats().find((c) => c.chat === made.id)!.last!.id).toBe(later.id);
    const marked = bob.m.messages.get(pinned.id)!;
    expect(marked.ts, "the sender's own timestamp is kept for display").toBe(future);
    expect(marked.clockAheadMs, "the sender's clock is marked as about a day ahead").toBeGreaterThan(23 * 3600_000);
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
    const group = createGroup(strangers[0]!.identity, 'Workshop', [
      { pin: victim.m.pin, pk: toB64(victim.m.identity.signPk) },
      ...strangers.slice(1).map((s) => ({ pin: s.identity.pin, pk: toB64(s.identity.signPk) })),
    ]);
    const members = group.members.map((x) => ({ pin: x.pin, signPk: fromB64(x.pk) }));
    const others = (s: RawClient) => members.filter((x) => x.pin !== s.identity.pin);
    strangers[0]!.send({
      type: 'send',
      env: sealEnvelope({ sender: strangers[0]!.identity, to: others(strangers[0]!), conv: group.id, body: { text: '', group, note: 'group-created' } }).env,
    });
    await until(() => victim.m.groups.get(group.id) !== undefined, 'the victim holds the group');
    // What the chat page does with the group open: every render (one per incoming frame at worst)
    // marks the open chat read (client/ui/chat.ts markSeen).
    victim.m.on((event) => {
      if (event.type === 'message') victim.m.markChatRead(group.id);
    });
    for (const s of strangers) s.frames.length = 0;
    const framesBefore = new Map(sentByVictim);
    const startedAt = Date.now();
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
    cleanups.push(() => {
      clearInterval(timer);
      clearInterval(acker);
    });
    const seconds = 15;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    clearInterval(timer);
    await new Promise((r) => setTimeout(r, 500)); // the last answers
    await until(() => [...accepted].every((id) => victim.m.messages.has(id)), 'the victim has every accepted message', 20_000);
    await until(() => app.store.queueLoad(victim.m.pin).envelopes === 0, "the victim's queue drains", 10_000);
    clearInterval(acker);
    const honest = alice.m.sendText(victim.m.pin, 'are you still there?');
    await until(() => victim.m.messages.has(honest.id), 'an honest DM reaches the victim');

    const delta = (type: string) => (sentByVictim.get(type) ?? 0) - (framesBefore.get(type) ?? 0);
    const elapsed = (Date.now() - startedAt) / 1000;
    const refused = victimEvents.filter((e) => e.type === 'error' && e.code === 'rate_limited').length;
    const offline = victimEvents.filter((e) => e.type === 'status' && e.status === 'offline').length;
    console.log(
      `[figures] flood of ${accepted.size} group messages in ${seconds} s (4 senders × 20/s): the victim sent ${delta('ack')} ack frames (${(delta('ack') / seconds).toFixed(1)}/s) and ${delta('read')} read frames (${(delta('read') / seconds).toFixed(1)}/s); rate_limited ${refused}, offline ${offline}, relay flood closes ${app.relay.stats.floodCloses}, receipts paced ${app.relay.stats.receiptsPaced}`,
    );
    // Not a throughput figure (the machine may be busy): only that the flood was a flood.
    expect(accepted.size, "the strangers' messages accepted").toBeGreaterThan(300);
    expect({ refused, offline, floodCloses: app.relay.stats.floodCloses }).toEqual({ refused: 0, offline: 0, floodCloses: 0 });
    expect(victim.m.messagesIn(group.id).filter((m) => m.direction === 'in').length, 'every message kept (and the note)').toBe(accepted.size + 1);
    // The client's own budgets, whatever the machine's load: acks 10 + 10/s, reads 4 + 4/s (with one in flight).
    expect(delta('ack'), 'ack frames within the ack budget').toBeLessThanOrEqual(10 + 10 * elapsed + 1);
    expect(delta('read'), 'read frames within the read budget').toBeLessThanOrEqual(4 + 4 * elapsed + 1);
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
    const envs = Array.from(
      { length: 50 },
      () => sealEnvelope({ sender: c.identity, to: [{ pin: other.identity.pin, signPk: other.identity.signPk }], conv: 'dm', body: { text: 'after the acks' } }).env,
    );
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

  it('strangers flooding huge and many messages never push a chat out of what a reload brings back, and what they make the victim save stays within its budget: no write fails in a browser-sized storage', async () => {
    const app = await relay();
    const browser = new QuotaStorage();
    const alice = await member(app, 'Alice', browser.person('Alice'));
    const bob = await member(app, 'Bob');
    const carol = await member(app, 'Carol'); // writes to Alice, who never answers
    const strangers = await Promise.all([0, 1, 2, 3, 4].map((i) => raw(app, `Stranger ${i}`)));
    await knows(alice, bob.m.pin, carol.m.pin, ...strangers.map((s) => s.identity.pin));
    await knows(bob, alice.m.pin);
    await knows(carol, alice.m.pin);
    const hi = alice.m.sendText(bob.m.pin, 'Bob, where do we meet?');
    await until(() => bob.m.messages.has(hi.id), 'Bob gets it');
    const early: string[] = [];
    for (let i = 0; i < 5; i++) early.push(bob.m.sendText(alice.m.pin, `Bob's message ${i}: the meeting point is the library`).id);
    for (let i = 0; i < 2; i++) early.push(carol.m.sendText(alice.m.pin, `Carol ${i}: are you coming tonight?`).id);
    await until(() => early.every((id) => alice.m.messages.has(id)), 'Alice has them');

    // Four strangers: 57 messages of 4,000 control characters each (24,000 once JSON-escaped),
    // within each one's byte budget; a fifth: 300 one-letter messages.
    const huge = '\u0001'.repeat(4000);
    await Promise.all([...strangers.slice(0, 4).map((s) => flood(s, rcpt(alice), 57, 6, huge)), flood(strangers[4]!, rcpt(alice), 300, 25, 'x')]);
    const total = 4 * 57 + 300 + early.length + 1;
    await until(() => alice.m.messages.size >= total, 'Alice has every message on screen', 20_000);
    await until(() => app.store.queueLoad(alice.m.pin).envelopes === 0, 'Alice acknowledged them all', 10_000);
    alice.m.stop(); // the tab closes: the state is saved
    const report = alice.m.storageReport();
    const used = browser.used('backdoor-lab/person/Alice/');
    const saved = JSON.parse(browser.map.get('backdoor-lab/person/Alice/backdoor-lab.state')!) as { messages: { from: string; chat: string }[] };
    const strangerPins = new Set(strangers.map((s) => s.identity.pin));
    const fromStrangers = saved.messages.filter((m) => strangerPins.has(m.from));
    const strangerChars = fromStrangers.reduce((n, m) => n + JSON.stringify(m).length, 0);
    console.log(
      `[figures] after ${total} messages (${4 * 57} of 24,000 escaped characters): Alice's storage ${used} UTF-16 units of the browser's 5,242,880; strangers' messages saved ${fromStrangers.length} (${strangerChars} characters); not saved: ${report.notSaved.map((c) => c.messages).join('+')} in ${report.notSaved.length} chats; writes refused ${browser.refused}`,
    );
    expect(browser.refused, 'writes the storage refused').toBe(0);
    expect(report.failed).toEqual([]);
    expect(strangerChars).toBeLessThanOrEqual(SAVE_BUDGET.otherTotal);
    expect(report.notSaved.length).toBeGreaterThan(0);
    expect(report.notSaved.every((c) => !c.yours && c.chat.startsWith('dm:') && strangerPins.has(c.chat.slice(3)))).toBe(true);

    const reloaded = new Messenger({ name: 'Alice', connect: () => ({}) as SocketLike, storage: browser.person('Alice') });
    expect(reloaded.pin).toBe(alice.m.pin);
    expect(reloaded.messagesIn(`dm:${bob.m.pin}`).map((m) => m.text)).toEqual([hi.text, ...[0, 1, 2, 3, 4].map((i) => `Bob's message ${i}: the meeting point is the library`)]);
    expect(reloaded.messagesIn(`dm:${carol.m.pin}`)).toHaveLength(2);
    reloaded.stop();
  }, 120_000);

  it("with the browser's storage full, every message is still acknowledged and shown and a new group still joined; the messenger says plainly what was not kept, and says so no longer once there is room", async () => {
    const app = await relay();
    const browser = new QuotaStorage();
    const alice = await member(app, 'Alice', browser.person('Alice'));
    const bob = await member(app, 'Bob');
    await knows(alice, bob.m.pin);
    await knows(bob, alice.m.pin);
    const reports: string[][] = [];
    alice.m.on((e) => e.type === 'storage' && reports.push(e.report.failed.map((f) => f.key)));
    browser.fill(50); // another person in this browser filled it

    const made = bob.m.createGroup('Project team', [alice.m.pin]);
    const hello = bob.m.sendGroup(made.id, 'welcome to the project team');
    const dm = bob.m.sendText(alice.m.pin, 'did you get the invitation?');
    await until(() => [made.message.id, hello.id, dm.id].every((id) => alice.m.messages.has(id)), 'Alice has all three');
    expect(alice.m.groups.get(made.id)?.name).toBe('Project team');
    expect(alice.m.messages.get(hello.id)).toMatchObject({ chat: made.id, state: 'received' });
    await until(() => app.store.queueLoad(alice.m.pin).envelopes === 0, 'Alice acknowledged all three');
    await until(() => alice.m.storageReport().failed.length > 0, 'the messenger reports the refused writes', 5000);
    const failed = alice.m.storageReport().failed.map((f) => f.key);
    expect(failed).toEqual(expect.arrayContaining(['backdoor-lab.state', 'backdoor-lab.groups']));
    expect(alice.m.storageReport().failed.find((f) => f.key === 'backdoor-lab.state')?.what).toBe('your message history');
    expect(
      reports.some((r) => r.includes('backdoor-lab.state')),
      'a storage event said so',
    ).toBe(true);

    // A new person opened in this full browser: her keys cannot be kept, and she is told.
    const carol = await member(app, 'Carol', browser.person('Carol'));
    expect(carol.m.storageReport().failed.map((f) => f.key)).toContain('backdoor-lab.identity');

    // Room again: the next save goes through and the warning is gone.
    browser.map.delete('someone-else/filler');
    const again = bob.m.sendText(alice.m.pin, 'one more');
    await until(() => alice.m.messages.has(again.id), 'Alice gets it');
    await until(() => alice.m.storageReport().failed.length === 0, 'the saves go through again', 10_000);
    const saved = JSON.parse(browser.map.get('backdoor-lab/person/Alice/backdoor-lab.state')!) as { messages: { id: string }[] };
    expect(saved.messages.map((m) => m.id)).toEqual(expect.arrayContaining([made.message.id, hello.id, dm.id, again.id]));
    expect(browser.map.get('backdoor-lab/person/Alice/backdoor-lab.groups')).toContain(made.id);
  }, 60_000);
});
