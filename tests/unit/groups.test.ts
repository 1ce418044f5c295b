/**
 * Signed group membership (shared/groups.ts): a member list verifies only as its creator signed
 * it, and a group message is let into the group only when the list a member holds says so.
 */
import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady, newIdentity, toB64, type Identity } from '../../shared/crypto.ts';
import { GroupFailure, changeGroup, checkGroupMessage, createGroup, groupIdOf, groupSignedBytes, verifyGroupState, type GroupState } from '../../shared/groups.ts';
import { GroupState as GroupStateSchema, MessageBody } from '../../shared/protocol.ts';

let alice: Identity, bob: Identity, carol: Identity, dave: Identity, mallory: Identity;
const member = (id: Identity) => ({ pin: id.pin, pk: toB64(id.signPk) });
const resign = (state: Omit<GroupState, 'sig'>, by: Identity): GroupState => ({
  ...state,
  sig: toB64(sodium.crypto_sign_detached(groupSignedBytes(state), by.signSk)),
});

beforeAll(async () => {
  await cryptoReady();
  [alice, bob, carol, dave, mallory] = [1, 2, 3, 4, 5].map((n) => newIdentity(new Uint8Array(32).fill(n))) as [Identity, Identity, Identity, Identity, Identity];
});

describe('a group member list', () => {
  it('made by its creator verifies, passes the wire schema, lists the members in PIN order, and has an id bound to the creator key', () => {
    const state = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    expect(verifyGroupState(state)).toEqual({ ok: true });
    expect(GroupStateSchema.safeParse(state).success).toBe(true);
    expect(state.members.map((m) => m.pin)).toEqual([alice.pin, bob.pin, carol.pin].sort());
    expect(state.id).toBe(groupIdOf(toB64(alice.signPk), state.salt));
    expect(state.version).toBe(1);
  });

  it('with any field changed after signing no longer verifies: name, version, members, salt, creator', () => {
    const state = createGroup(alice, 'Book club', [member(bob)]);
    const variants: [string, GroupState][] = [
      ['name', { ...state, name: 'Book club!' }],
      ['version', { ...state, version: 2 }],
      ['members', { ...state, members: [...state.members, member(mallory)].sort((a, b) => (a.pin < b.pin ? -1 : 1)) }],
      ['salt', { ...state, salt: toB64(new Uint8Array(16)) }],
      ['creator', { ...state, creator: toB64(bob.signPk) }],
    ];
    for (const [field, variant] of variants) {
      const result = verifyGroupState(variant);
      expect(result.ok, field).toBe(false);
      if (!result.ok) expect(result.code, field).toBe(GroupFailure.BadState);
    }
  });

  it('signed by anyone but the creator does not verify, even a member claiming the same id', () => {
    const state = createGroup(alice, 'Book club', [member(bob)]);
    const { sig: _sig, ...unsigned } = state;
    const byBob = resign({ ...unsigned, version: 2, members: [...unsigned.members, member(mallory)].sort((a, b) => (a.pin < b.pin ? -1 : 1)) }, bob);
    expect(verifyGroupState(byBob)).toMatchObject({ ok: false, code: GroupFailure.BadState });
    // Mallory cannot claim to be the creator of Alice's group id: the id is bound to the creator's key.
    const claimed = resign({ ...unsigned, creator: toB64(mallory.signPk), members: [member(mallory), ...unsigned.members].sort((a, b) => (a.pin < b.pin ? -1 : 1)) }, mallory);
    expect(verifyGroupState(claimed)).toMatchObject({ ok: false, code: GroupFailure.BadState, message: expect.stringMatching(/group id/) });
  });

  it('listing a PIN with a key it is not derived from does not verify', () => {
    const state = createGroup(alice, 'Book club', [member(bob)]);
    const { sig: _sig, ...unsigned } = state;
    const members = unsigned.members.map((m) => (m.pin === bob.pin ? { pin: bob.pin, pk: toB64(mallory.signPk) } : m));
    expect(verifyGroupState(resign({ ...unsigned, members }, alice))).toMatchObject({ ok: false, code: GroupFailure.BadState, message: expect.stringMatching(/not derived/) });
  });

  it('can be changed only by its creator, who cannot leave; a change is the next version', () => {
    const v1 = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    const v2 = changeGroup(v1, alice, { add: [member(dave)], remove: [carol.pin] });
    expect(verifyGroupState(v2)).toEqual({ ok: true });
    expect(v2.version).toBe(2);
    expect(v2.id).toBe(v1.id);
    expect(v2.members.map((m) => m.pin).sort()).toEqual([alice.pin, bob.pin, dave.pin].sort());
    expect(() => changeGroup(v1, bob, { add: [member(mallory)] })).toThrow(/only the group's creator/);
    expect(() => changeGroup(v1, alice, { remove: [alice.pin] })).toThrow(/creator cannot leave/);
  });

  it('travels inside a message body; a note without a member list, or an empty text without a note, is refused', () => {
    const state = createGroup(alice, 'Book club', [member(bob)]);
    expect(MessageBody.safeParse({ text: 'hi', group: state }).success).toBe(true);
    expect(MessageBody.safeParse({ text: '', group: state, note: 'group-created' }).success).toBe(true);
    expect(MessageBody.safeParse({ text: 'hi', group: 'Book club' }).success).toBe(true); // an old client's plain name: read, never trusted
    expect(MessageBody.safeParse({ text: '', group: 'Book club', note: 'group-created' }).success).toBe(false);
    expect(MessageBody.safeParse({ text: '', group: state }).success).toBe(false);
  });
});

describe('a group message, checked against the member list a member holds', () => {
  const env = (from: Identity, to: Identity[], conv: string) => ({ from: from.pin, to: to.map((t) => t.pin), conv });

  it('from a member to exactly the other members is let in, and the first list seen is stored', () => {
    const state = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    const verdict = checkGroupMessage({ env: env(bob, [alice, carol], state.id), carried: state, senderPk: toB64(bob.signPk), stored: undefined, me: carol.pin });
    expect(verdict).toEqual({ ok: true, state, updated: true });
    const again = checkGroupMessage({ env: env(alice, [bob, carol], state.id), carried: state, senderPk: toB64(alice.signPk), stored: state, me: carol.pin });
    expect(again).toEqual({ ok: true, state, updated: false });
  });

  it('is refused with a stable code for each way an outsider or a member can get it wrong', () => {
    const v1 = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    const other = createGroup(alice, 'Another', [member(bob), member(carol)]);
    const v2 = changeGroup(v1, alice, { remove: [carol.pin] });
    const { sig: _sig, ...unsigned } = v1;
    const twin = resign({ ...unsigned, name: 'Book club (twin)' }, alice); // the creator equivocates: another list as version 1
    const cases: [string, Parameters<typeof checkGroupMessage>[0], GroupFailure][] = [
      [
        'a plain group name, no list',
        { env: env(mallory, [bob, carol], v1.id), carried: 'Book club', senderPk: toB64(mallory.signPk), stored: v1, me: bob.pin },
        GroupFailure.Unsigned,
      ],
      ['no group field at all', { env: env(mallory, [bob, carol], v1.id), carried: undefined, senderPk: toB64(mallory.signPk), stored: v1, me: bob.pin }, GroupFailure.Unsigned],
      [
        'a copied valid list, sent by an outsider',
        { env: env(mallory, [alice, bob, carol], v1.id), carried: v1, senderPk: toB64(mallory.signPk), stored: v1, me: bob.pin },
        GroupFailure.NotMember,
      ],
      ['a list for another group', { env: env(bob, [alice, carol], v1.id), carried: other, senderPk: toB64(bob.signPk), stored: v1, me: carol.pin }, GroupFailure.WrongGroup],
      [
        'a member who adds an outsider to the recipients',
        { env: env(bob, [alice, carol, mallory], v1.id), carried: v1, senderPk: toB64(bob.signPk), stored: v1, me: carol.pin },
        GroupFailure.RecipientsMismatch,
      ],
      ['a member who leaves someone out', { env: env(bob, [alice], v1.id), carried: v1, senderPk: toB64(bob.signPk), stored: v1, me: alice.pin }, GroupFailure.RecipientsMismatch],
      [
        'a member signing with another key than the listed one',
        { env: env(bob, [alice, carol], v1.id), carried: v1, senderPk: toB64(mallory.signPk), stored: v1, me: carol.pin },
        GroupFailure.MemberKeyMismatch,
      ],
      [
        'a removed member still using the old list',
        { env: env(carol, [alice, bob], v1.id), carried: v1, senderPk: toB64(carol.signPk), stored: v2, me: bob.pin },
        GroupFailure.Stale,
      ],
      [
        'two different lists as one version',
        { env: env(bob, [alice, carol], v1.id), carried: twin, senderPk: toB64(bob.signPk), stored: v1, me: carol.pin },
        GroupFailure.Conflict,
      ],
      ['a list this client is not on', { env: env(alice, [bob], v2.id), carried: v2, senderPk: toB64(alice.signPk), stored: undefined, me: carol.pin }, GroupFailure.NotForMe],
    ];
    for (const [what, input, code] of cases) expect(checkGroupMessage(input), what).toMatchObject({ ok: false, code });
  });

  it('a newer list signed by the creator replaces the stored one, and a removed member learns it from the change note', () => {
    const v1 = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    const v2 = changeGroup(v1, alice, { add: [member(dave)], remove: [carol.pin] });
    // Bob: the note goes to the old and the new members.
    const forBob = checkGroupMessage({ env: env(alice, [bob, carol, dave], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: bob.pin, note: 'group-changed' });
    expect(forBob).toEqual({ ok: true, state: v2, updated: true });
    const forCarol = checkGroupMessage({
      env: env(alice, [bob, carol, dave], v1.id),
      carried: v2,
      senderPk: toB64(alice.signPk),
      stored: v1,
      me: carol.pin,
      note: 'group-changed',
    });
    expect(forCarol).toEqual({ ok: true, state: v2, updated: true });
    // The same recipients without the note are not a group message of version 2.
    const plain = checkGroupMessage({ env: env(alice, [bob, carol, dave], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: bob.pin });
    expect(plain).toMatchObject({ ok: false, code: GroupFailure.RecipientsMismatch });
    // A note signed into a message by someone other than the creator is not a change note.
    const fromBob = checkGroupMessage({ env: env(bob, [alice, carol, dave], v1.id), carried: v2, senderPk: toB64(bob.signPk), stored: v1, me: dave.pin, note: 'group-changed' });
    expect(fromBob).toMatchObject({ ok: false, code: GroupFailure.NoteNotFromCreator });
    // Or in an envelope of its own to the removed member alone, so her full queue holds nothing back.
    const alone = checkGroupMessage({ env: env(alice, [carol], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: carol.pin, note: 'group-changed' });
    expect(alone).toEqual({ ok: true, state: v2, updated: true });
    // That exception is for removed members only: a member, or someone never on the list, is not told apart.
    expect(checkGroupMessage({ env: env(alice, [bob], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: bob.pin, note: 'group-changed' })).toMatchObject({
      ok: false,
      code: GroupFailure.RecipientsMismatch,
    });
    expect(
      checkGroupMessage({ env: env(alice, [carol, mallory], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: carol.pin, note: 'group-changed' }),
    ).toMatchObject({ ok: false, code: GroupFailure.RecipientsMismatch });
    // An older list never replaces a newer one.
    const old = checkGroupMessage({ env: env(bob, [alice, carol], v1.id), carried: v1, senderPk: toB64(bob.signPk), stored: v2, me: alice.pin });
    expect(old).toMatchObject({ ok: false, code: GroupFailure.Stale });
  });

  it('a group note is honoured only from the creator, and from the creator only with a list at least as new as the one held: a member\'s "made the group" or "changed it" and the creator\'s stale note are refused with their own codes', () => {
    const v1 = createGroup(alice, 'Book club', [member(bob), member(carol)]);
    const v2 = changeGroup(v1, alice, { add: [member(dave)] });
    const cases: [string, Parameters<typeof checkGroupMessage>[0], GroupFailure][] = [
      [
        'a member\'s "made the group", to exactly the members',
        { env: env(carol, [alice, bob], v1.id), carried: v1, senderPk: toB64(carol.signPk), stored: v1, me: bob.pin, note: 'group-created' },
        GroupFailure.NoteNotFromCreator,
      ],
      [
        'a member\'s "changed the group" with the list held',
        { env: env(carol, [alice, bob], v1.id), carried: v1, senderPk: toB64(carol.signPk), stored: v1, me: bob.pin, note: 'group-changed' },
        GroupFailure.NoteNotFromCreator,
      ],
      [
        "a member's note for a client that holds no list yet",
        { env: env(carol, [alice, bob], v1.id), carried: v1, senderPk: toB64(carol.signPk), stored: undefined, me: bob.pin, note: 'group-created' },
        GroupFailure.NoteNotFromCreator,
      ],
      [
        'the creator\'s old "made the group" after a change',
        { env: env(alice, [bob, carol, dave], v1.id), carried: v1, senderPk: toB64(alice.signPk), stored: v2, me: bob.pin, note: 'group-created' },
        GroupFailure.NoteNotNewer,
      ],
      [
        'the creator\'s old "changed" note, to exactly the old members',
        { env: env(alice, [bob, carol], v1.id), carried: v1, senderPk: toB64(alice.signPk), stored: v2, me: bob.pin, note: 'group-changed' },
        GroupFailure.NoteNotNewer,
      ],
    ];
    for (const [what, input, code] of cases) expect(checkGroupMessage(input), what).toMatchObject({ ok: false, code });
    // The creator's notes: a new group, a newer list, and the same list again (a repeat: it claims no change).
    expect(
      checkGroupMessage({ env: env(alice, [bob, carol], v1.id), carried: v1, senderPk: toB64(alice.signPk), stored: undefined, me: bob.pin, note: 'group-created' }),
    ).toMatchObject({ ok: true, updated: true });
    expect(
      checkGroupMessage({ env: env(alice, [bob, carol, dave], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v1, me: bob.pin, note: 'group-changed' }),
    ).toMatchObject({ ok: true, updated: true });
    expect(
      checkGroupMessage({ env: env(alice, [bob, carol, dave], v1.id), carried: v2, senderPk: toB64(alice.signPk), stored: v2, me: bob.pin, note: 'group-changed' }),
    ).toMatchObject({ ok: true, updated: false });
    // A member's plain message carrying the creator's newer list is still let in (the list is the creator's).
    expect(checkGroupMessage({ env: env(carol, [alice, bob, dave], v1.id), carried: v2, senderPk: toB64(carol.signPk), stored: v1, me: bob.pin })).toMatchObject({
      ok: true,
      updated: true,
    });
  });
});
