/**
 * Groups against a hostile member (ported from the attack branch's attacks-groups.test.ts): a
 * member who is not the creator posts group notes in her own name, and a member being removed
 * fills her own queue so that the removal reaches nobody. Real relay on 127.0.0.1 port 0, members
 * on client/core, hand-driven raw clients for the attackers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { sealEnvelope } from '../../shared/envelope.ts';
import { GroupFailure } from '../../shared/failures.ts';
import type { Envelope, MessageBody } from '../../shared/protocol.ts';
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
async function member(app: TestRelay, name: string): Promise<TestUser> {
  const u = await user(app.wsUrl, name);
  cleanups.push(() => u.m.stop());
  return u;
}
async function raw(app: TestRelay, name: string): Promise<RawClient> {
  return rawClient(app.wsUrl, { name, onCleanup: (fn) => cleanups.push(fn) });
}
const rcpt = (c: RawClient) => ({ pin: c.identity.pin, signPk: c.identity.signPk });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Send `n` tiny DMs from `c` to `to`, paced under the frame budget, resending any refused for rate, until `n` are accepted or the queue is full. */
async function fill(c: RawClient, to: { pin: string; signPk: Uint8Array }, n: number): Promise<void> {
  const pending = new Map<string, Envelope>();
  for (let i = 0; i < n; i++) {
    const { env } = sealEnvelope({ sender: c.identity, to: [to], conv: 'dm', body: { text: 'x' } });
    pending.set(env.id, env);
  }
  const accepted = new Set<string>();
  let seen = 0;
  const deadline = Date.now() + 60_000;
  const queue = [...pending.values()];
  while (accepted.size < n && Date.now() < deadline) {
    for (const env of queue.splice(0, 20)) c.send({ type: 'send', env });
    await sleep(1000);
    for (; seen < c.frames.length; seen++) {
      const f = c.frames[seen]!;
      if (f.type === 'accepted') accepted.add(f.id);
      if (f.type === 'error' && f.code === 'rate_limited' && f.ref && pending.has(f.ref)) queue.push(pending.get(f.ref)!);
      if (f.type === 'error' && f.code === 'queue_full') return;
    }
  }
}

describe('groups against a hostile member', () => {
  it('a member who is not the creator cannot post "made the group" or "changed the group" notes: the others\' clients show them apart with note_not_from_creator, and nothing changes', async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await member(app, 'Bob');
    const mallory = await member(app, 'Mallory'); // an honest-looking member with a modified client
    await knows(alice, bob.m.pin, mallory.m.pin);
    await knows(bob, alice.m.pin, mallory.m.pin);
    await knows(mallory, alice.m.pin, bob.m.pin);
    const made = alice.m.createGroup('Book club', [bob.m.pin, mallory.m.pin]);
    await until(() => bob.m.groups.get(made.id) !== undefined && mallory.m.groups.get(made.id) !== undefined, 'members hold the group');
    const state = mallory.m.groups.get(made.id)!;

    // Mallory's client calls the messenger's own post() with a note, as only the creator's should.
    const post = (mallory.m as unknown as { post(to: string[], conv: string, body: MessageBody): { id: string } }).post.bind(mallory.m);
    const created = post([alice.m.pin, bob.m.pin], made.id, { text: '', group: state, note: 'group-created' });
    const changed = post([alice.m.pin, bob.m.pin], made.id, { text: '', group: state, note: 'group-changed' });
    await until(() => [created.id, changed.id].every((id) => bob.m.messages.has(id) && alice.m.messages.has(id)), 'Alice and Bob receive both');

    for (const u of [alice, bob]) {
      for (const id of [created.id, changed.id]) {
        const seen = u.m.messages.get(id)!;
        expect({ chat: seen.chat, note: seen.note ?? null, flag: seen.flag?.code }).toEqual({
          chat: `apart:${made.id}:${mallory.m.pin}`,
          note: null,
          flag: GroupFailure.NoteNotFromCreator,
        });
      }
      expect(u.m.groups.get(made.id)?.version).toBe(1);
      expect(
        u.m
          .messagesIn(made.id)
          .filter((m) => m.note)
          .map((m) => m.from),
      ).toEqual([alice.m.pin]);
    }
  });

  it("a member being removed cannot block the removal by filling her own queue: the remaining members get the change note, the creator's screen says plainly which note is waiting, it is retried with the same signed list, and Bob never seals to her again", async () => {
    const app = await relay();
    const alice = await member(app, 'Alice'); // creator
    const bob = await member(app, 'Bob');
    const mallory = await raw(app, 'Mallory');
    await knows(alice, bob.m.pin, mallory.identity.pin);
    await knows(bob, alice.m.pin, mallory.identity.pin);
    const made = alice.m.createGroup('Night shift', [bob.m.pin, mallory.identity.pin]);
    await until(() => bob.m.groups.get(made.id)?.version === 1, 'Bob holds version 1');
    await mallory.next('envelope', (f) => f.env.id === made.message.id);

    // Mallory goes offline; four throwaway identities fill her queue (250 each: a sender's share).
    mallory.ws.close();
    await until(() => app.relay.onlineCount() === 2, 'Mallory offline');
    const sybils = await Promise.all([1, 2, 3, 4].map((i) => raw(app, `s${i}`)));
    await Promise.all(sybils.map((s) => fill(s, rcpt(mallory), 250)));
    expect(app.store.queueLoad(mallory.identity.pin).envelopes).toBeGreaterThanOrEqual(1000);

    // Alice removes Mallory: the note to Bob is accepted, the one to Mallory is refused (queue_full).
    const change = alice.m.changeGroup(made.id, { remove: [mallory.identity.pin] });
    await until(() => bob.m.groups.get(made.id)?.version === 2, 'Bob holds version 2', 10_000);
    await until(() => (alice.m.messages.get(change.id)?.waiting?.length ?? 0) > 0, "Alice's screen says a part of the note is waiting");
    const waiting = alice.m.messages.get(change.id)!.waiting!;
    expect(waiting).toEqual([expect.objectContaining({ to: [mallory.identity.pin], code: 'queue_full' })]);
    expect(alice.m.messages.get(change.id)!.state, 'the note itself went out').not.toBe('failed');
    expect(bob.m.messagesIn(made.id).find((m) => m.id === change.id)?.note).toMatchObject({ kind: 'group-changed', version: 2, removed: [mallory.identity.pin] });

    // Mallory comes back and reads her queue: the retry reaches her with the same signed list.
    const back = await rawClient(app.wsUrl, { identity: mallory.identity, name: 'Mallory', onCleanup: (fn) => cleanups.push(fn) });
    let acked = 0;
    await until(
      () => {
        const qids = back.frames.flatMap((f) => (f.type === 'envelope' ? [f.qid] : [])).slice(acked);
        for (let i = 0; i < qids.length; i += 1000) back.send({ type: 'ack', qids: qids.slice(i, i + 1000) });
        acked += qids.length;
        return back.frames.some((f) => f.type === 'envelope' && f.env.conv === made.id && f.env.to.length === 1 && f.env.to[0] === mallory.identity.pin);
      },
      'the removal notice reaches Mallory on a retry',
      30_000,
    );
    const notice = back.frames.find((f): f is Extract<typeof f, { type: 'envelope' }> => f.type === 'envelope' && f.env.conv === made.id && f.env.to[0] === mallory.identity.pin)!;
    expect(notice.env.from).toBe(alice.m.pin);
    expect(notice.env.id, 'the same envelope the relay refused, sent again').toBe(waiting[0]!.env);
    await until(() => (alice.m.messages.get(change.id)?.waiting?.length ?? 0) === 0, "Alice's screen no longer says anything is waiting", 10_000);

    const secret = bob.m.sendGroup(made.id, 'now that Mallory is gone: the plan is...');
    await until(() => bob.m.messages.get(secret.id)?.state !== 'sending', 'the relay answers');
    await sleep(300);
    const malloryReadsIt = back.frames.some((f) => f.type === 'envelope' && f.env.id === secret.id);
    expect({ bobVersion: bob.m.groups.get(made.id)?.version, to: bob.m.messages.get(secret.id)!.to, malloryReadsIt }).toEqual({
      bobVersion: 2,
      to: [alice.m.pin],
      malloryReadsIt: false,
    });
  }, 120_000);
});
