/**
 * Issue 9, finding 1: nobody joins a group uninvited. A real relay, members on client/core, and
 * hand-driven raw clients for the outsiders and the misbehaving member. Before signed membership
 * a client worked out a group's members from its last message, so one validly signed envelope
 * with a group's (public) conv id made the sender a member in every recipient's client.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createGroup, GroupFailure } from '../../shared/groups.ts';
import { toB64, unwrapKey } from '../../shared/crypto.ts';
import { decryptBody, sealEnvelope } from '../../shared/envelope.ts';
import { keysOf, type AnyEnvelope, type Envelope, type MessageBody } from '../../shared/protocol.ts';
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

/** A raw client sends an envelope it sealed itself and waits for the relay to accept it. */
async function sendRaw(c: RawClient, to: { pin: string; signPk: Uint8Array }[], conv: string, body: MessageBody): Promise<Envelope> {
  const { env } = sealEnvelope({ sender: c.identity, to, conv, body });
  c.send({ type: 'send', env });
  await c.next('accepted', (f) => f.id === env.id);
  return env;
}
const rcpt = (u: TestUser | RawClient) => ('m' in u ? { pin: u.m.pin, signPk: u.m.identity.signPk } : { pin: u.identity.pin, signPk: u.identity.signPk });
const pk = (u: TestUser) => ({ pin: u.m.pin, pk: toB64(u.m.identity.signPk) });

/** Every envelope a raw client was sent, opened with its own key where it can. */
function opened(c: RawClient): { env: AnyEnvelope; text: string | null }[] {
  return c.frames
    .filter((f): f is Extract<typeof f, { type: 'envelope' }> => f.type === 'envelope')
    .map((f) => {
      // Only whether this client's wrap opens the body (the signature is the members' business here).
      const keys = keysOf(f.env);
      const wrap = 'wraps' in keys ? keys.wraps.find((w) => w.to === c.identity.pin) : undefined;
      const key = wrap ? unwrapKey(wrap.key, c.identity.boxPk, c.identity.boxSk) : null;
      const body = key?.ok ? decryptBody(f.env, key.value) : null;
      return { env: f.env, text: body?.ok ? body.value.text : null };
    });
}

describe('groups nobody can join uninvited', () => {
  it('an outsider who copies a group\'s public conv id and name and calls herself "Carol" is shown apart and flagged, never joins, and the members\' replies are not sealed to her', async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await member(app, 'Bob');
    const carol = await member(app, 'Carol');
    const mallory = await raw(app, 'Carol'); // the same display name as the real Carol
    await knows(alice, bob.m.pin, carol.m.pin, mallory.identity.pin);
    await knows(bob, alice.m.pin, carol.m.pin, mallory.identity.pin);
    const made = alice.m.createGroup('Book club', [bob.m.pin, carol.m.pin]);
    await until(() => bob.m.groups.get(made.id) !== undefined && carol.m.groups.get(made.id) !== undefined, 'members hold the group');

    // 1. The old attack: the group's name as a plain string, as the clients before this fix sent it.
    const plain = await sendRaw(mallory, [rcpt(alice), rcpt(bob)], made.id, { text: 'hi all, Carol here', group: 'Book club' });
    // 2. A member list of her own for the same id: she cannot sign as the group's creator.
    const forgedState = { ...createGroup(mallory.identity, 'Book club', [pk(alice), pk(bob)]), id: made.id };
    const forged = await sendRaw(mallory, [rcpt(alice), rcpt(bob)], made.id, { text: 'new number, same Carol', group: forgedState });
    // 3. The real list, copied (an ex-member could have it), sent from her own key.
    const realState = alice.m.groups.get(made.id)!;
    const copied = await sendRaw(mallory, [rcpt(alice), rcpt(bob), rcpt(carol)], made.id, { text: 'it is me, Carol', group: realState });

    for (const [env, code] of [
      [plain, GroupFailure.Unsigned],
      [forged, GroupFailure.BadState],
      [copied, GroupFailure.NotMember],
    ] as const) {
      await until(() => bob.m.messages.has(env.id), 'Bob receives it');
      const seen = bob.m.messages.get(env.id)!;
      expect(seen.chat, code).toBe(`apart:${made.id}:${mallory.identity.pin}`);
      expect(seen.flag?.code).toBe(code);
    }
    // Not one of them is inside the group thread, and the group's members are unchanged everywhere.
    for (const u of [alice, bob]) {
      expect(u.m.messagesIn(made.id).map((m) => m.from)).not.toContain(mallory.identity.pin);
      expect(
        u.m.groups
          .get(made.id)
          ?.members.map((m) => m.pin)
          .sort(),
      ).toEqual([alice.m.pin, bob.m.pin, carol.m.pin].sort());
      const chat = u.m.chats().find((c) => c.chat === made.id)!;
      expect(chat.members.sort()).toEqual([alice.m.pin, bob.m.pin, carol.m.pin].filter((p) => p !== u.m.pin).sort());
    }
    expect(bob.m.chats().find((c) => c.chat.startsWith('apart:'))).toMatchObject({ kind: 'apart', members: [] });

    // Replies go to the member list, not to whoever wrote last: Mallory gets none, and could open none.
    const before = mallory.frames.length;
    const reply = bob.m.sendGroup(made.id, 'who was that?');
    await until(() => alice.m.messages.has(reply.id) && carol.m.messages.has(reply.id), 'the members get the reply');
    expect(reply.to.sort()).toEqual([alice.m.pin, carol.m.pin].sort());
    await new Promise((r) => setTimeout(r, 100));
    expect(mallory.frames.slice(before).filter((f) => f.type === 'envelope')).toEqual([]);
    const events = app.store.envelopeMetadata(reply.id);
    expect(events?.recipients.split(',').sort()).toEqual([alice.m.pin, carol.m.pin].sort());
  });

  it("a member who adds an outsider to a group message's recipients is shown apart, and the outsider is never added", async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await raw(app, 'Bob'); // a real member whose client misbehaves
    const carol = await member(app, 'Carol');
    const mallory = await raw(app, 'Mallory');
    await knows(alice, bob.identity.pin, carol.m.pin, mallory.identity.pin);
    await knows(carol, bob.identity.pin, alice.m.pin, mallory.identity.pin);
    const made = alice.m.createGroup('Night shift', [bob.identity.pin, carol.m.pin]);
    await bob.next('envelope', (f) => f.env.id === made.message.id);
    const note = opened(bob).find((o) => o.env.id === made.message.id)!;
    expect(note.text).toBe(''); // Bob opens the group note: he is a member
    await until(() => carol.m.groups.get(made.id) !== undefined, 'Carol holds the group');
    const state = carol.m.groups.get(made.id)!;

    const leak = await sendRaw(bob, [rcpt(alice), rcpt(carol), rcpt(mallory)], made.id, { text: 'Mallory, read along', group: state });
    await until(() => carol.m.messages.has(leak.id), 'Carol receives it');
    expect(carol.m.messages.get(leak.id)).toMatchObject({ chat: `apart:${made.id}:${bob.identity.pin}`, flag: { code: GroupFailure.RecipientsMismatch } });
    const reply = carol.m.sendGroup(made.id, 'not to Mallory');
    expect(reply.to.sort()).toEqual([alice.m.pin, bob.identity.pin].sort());
    await until(() => alice.m.messages.has(reply.id), 'Alice gets the reply');
    expect(mallory.frames.some((f) => f.type === 'envelope' && f.env.id === reply.id)).toBe(false);
  });

  it('the creator adds and removes members with a signed change: the new member joins, the removed one learns it, cannot send, and her old-list messages are shown apart', async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await member(app, 'Bob');
    const carol = await raw(app, 'Carol');
    const dave = await member(app, 'Dave');
    await knows(alice, bob.m.pin, carol.identity.pin, dave.m.pin);
    await knows(bob, alice.m.pin, carol.identity.pin, dave.m.pin);
    await knows(dave, alice.m.pin, bob.m.pin, carol.identity.pin);
    const made = alice.m.createGroup('Choir', [bob.m.pin, carol.identity.pin]);
    await until(() => bob.m.groups.get(made.id)?.version === 1, 'Bob holds version 1');
    const v1 = bob.m.groups.get(made.id)!;

    const change = alice.m.changeGroup(made.id, { add: [dave.m.pin], remove: [carol.identity.pin] });
    expect(change.to.sort()).toEqual([bob.m.pin, carol.identity.pin, dave.m.pin].sort()); // old and new members
    await until(() => bob.m.groups.get(made.id)?.version === 2 && dave.m.groups.get(made.id)?.version === 2, 'Bob and Dave hold version 2');
    expect(bob.m.messages.get(change.id)?.note).toMatchObject({ kind: 'group-changed', version: 2, added: [dave.m.pin], removed: [carol.identity.pin] });
    // Carol's client gets the note too, in an envelope of its own (her full queue could not hold the
    // others' back): it opens for her, and names her removal.
    const notice = await carol.next('envelope', (f) => f.env.conv === made.id && f.env.id !== made.message.id);
    expect(notice.env.to).toEqual([carol.identity.pin]);
    expect(opened(carol).find((o) => o.env.id === notice.env.id)?.text).toBe('');

    // Dave is in: his reply reaches Alice and Bob inside the group.
    const hello = dave.m.sendGroup(made.id, 'thanks for having me');
    await until(() => alice.m.messages.has(hello.id) && bob.m.messages.has(hello.id), "Dave's message arrives");
    expect(bob.m.messages.get(hello.id)).toMatchObject({ chat: made.id, state: 'received' });
    expect(hello.to.sort()).toEqual([alice.m.pin, bob.m.pin].sort());

    // Carol, removed, sends with the list she still has: shown apart as sent under an old list.
    const stale = await sendRaw(carol, [rcpt(alice), rcpt(bob)], made.id, { text: 'still here?', group: v1 });
    await until(() => bob.m.messages.has(stale.id), 'Bob receives it');
    expect(bob.m.messages.get(stale.id)).toMatchObject({ chat: `apart:${made.id}:${carol.identity.pin}`, flag: { code: GroupFailure.Stale } });
    const after = bob.m.sendGroup(made.id, 'Carol has left');
    expect(after.to.sort()).toEqual([alice.m.pin, dave.m.pin].sort());
  });

  it("a member's own client refuses to send to a group it was removed from, and names the removal", async () => {
    const app = await relay();
    const alice = await member(app, 'Alice');
    const bob = await member(app, 'Bob');
    const carol = await member(app, 'Carol');
    await knows(alice, bob.m.pin, carol.m.pin);
    await knows(carol, alice.m.pin, bob.m.pin);
    const made = alice.m.createGroup('Choir', [bob.m.pin, carol.m.pin]);
    await until(() => carol.m.groups.get(made.id)?.version === 1, 'Carol holds version 1');
    const change = alice.m.changeGroup(made.id, { remove: [carol.m.pin] });
    // Her notice is an envelope of its own (to her alone), not the one the members got.
    const notice = () => carol.m.messagesIn(made.id).find((m) => m.note?.version === 2);
    await until(() => notice() !== undefined, 'Carol gets the note');
    expect(notice()).toMatchObject({ chat: made.id, to: [carol.m.pin], note: { removed: [carol.m.pin] } });
    expect(notice()!.id).not.toBe(change.id);
    expect(carol.m.groups.get(made.id)?.version).toBe(2);
    expect(() => carol.m.sendGroup(made.id, 'let me back in')).toThrow(/no longer a member/);
    expect(() => bob.m.changeGroup(made.id, { add: [carol.m.pin] })).toThrow(/only the group's creator/);
  });
});
