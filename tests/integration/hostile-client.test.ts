/**
 * A victim's client (client/core Messenger, driven as the chat page drives it) against what other
 * participants can send it: floods into an open chat, far-future timestamps, storage filled by
 * strangers. Real relay on 127.0.0.1 port 0; attackers are hand-driven raw clients within their
 * own budgets (ported from the attack branch's tests/integration/attacks-client.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { sealEnvelope } from '../../shared/envelope.ts';
import type { Envelope, MessageBody } from '../../shared/protocol.ts';
import { memoryStore, type KeyValueStore } from '../../client/core/messenger.ts';
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
});
