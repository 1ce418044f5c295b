/**
 * Signed group membership. A group is state its members agree on, never
 * something inferred from traffic: its creator signs a member list (every
 * member's PIN and Ed25519 public key) with a version number, and every
 * member's client stores the newest list it has verified. The group id is
 * bound to the creator's key, so nobody else can sign a list for that id.
 *
 * The design's one admin is the creator: only the creator's signature makes a
 * new version, so a version can be checked on its own, without its history.
 * What this does not protect against: a creator who signs two different lists
 * with the same version (each member sees the conflict, docs/wire-format.md),
 * or a creator who adds someone the others would not want (they see who).
 *
 * Byte layouts and a worked example: docs/wire-format.md, section 8.
 */
import sodium from 'libsodium-wrappers';
import { GroupState, MAX_GROUP_MEMBERS, type Envelope, type GroupMember } from './protocol.ts';
import { fromB64, pinOf, toB64, toHex, type Identity } from './crypto.ts';

export { GroupState, type GroupMember };

import { GroupFailure } from './failures.ts';

export { GroupFailure };

export type GroupCheck = { ok: true; state: GroupState; updated: boolean } | { ok: false; code: GroupFailure; message: string };

const utf8 = (text: string): Uint8Array => sodium.from_string(text);

/** The text hashed into a group id: the creator's key and a random salt. */
export function groupIdInput(creatorPkB64: string, saltB64: string): Uint8Array {
  return utf8(`backdoor-lab group id\ncreator=${creatorPkB64}\nsalt=${saltB64}`);
}

/** Group id: "g-" and BLAKE2b with an 8-byte output over the creator's key and the salt. */
export function groupIdOf(creatorPkB64: string, saltB64: string): string {
  return `g-${toHex(sodium.crypto_generichash(8, groupIdInput(creatorPkB64, saltB64), null))}`;
}

/** Members in their one canonical order: by PIN, then by key. */
export function sortMembers(members: readonly GroupMember[]): GroupMember[] {
  return [...members].sort((a, b) => (a.pin === b.pin ? (a.pk < b.pk ? -1 : 1) : a.pin < b.pin ? -1 : 1));
}

/** Everything the creator signs: each field on its own line, the name as a JSON string. */
export function groupSignedBytes(state: Omit<GroupState, 'sig'>): Uint8Array {
  return utf8(
    [
      'backdoor-lab group state',
      `id=${state.id}`,
      `name=${JSON.stringify(state.name)}`,
      `version=${state.version}`,
      `creator=${state.creator}`,
      `salt=${state.salt}`,
      `members=${state.members.map((m) => `${m.pin}:${m.pk}`).join(',')}`,
    ].join('\n'),
  );
}

function sign(unsigned: Omit<GroupState, 'sig'>, creator: Identity): GroupState {
  return { ...unsigned, sig: toB64(sodium.crypto_sign_detached(groupSignedBytes(unsigned), creator.signSk)) };
}

/** Make version 1 of a new group. `others` are the members besides the creator. */
export function createGroup(creator: Identity, name: string, others: readonly GroupMember[], fixedSalt?: Uint8Array): GroupState {
  const salt = toB64(fixedSalt ?? sodium.randombytes_buf(16));
  const creatorPk = toB64(creator.signPk);
  const members = sortMembers(dedupe([{ pin: creator.pin, pk: creatorPk }, ...others]));
  if (members.length > MAX_GROUP_MEMBERS) throw new Error(`a group has at most ${MAX_GROUP_MEMBERS} members`);
  return sign({ id: groupIdOf(creatorPk, salt), name, version: 1, creator: creatorPk, salt, members }, creator);
}

/** The next version of a group, signed by its creator (the only one who can sign one). */
export function changeGroup(state: GroupState, creator: Identity, change: { name?: string; add?: readonly GroupMember[]; remove?: readonly string[] }): GroupState {
  if (toB64(creator.signPk) !== state.creator) throw new Error("only the group's creator can change its members or name");
  const removed = new Set(change.remove ?? []);
  if (removed.has(creator.pin)) throw new Error('the creator cannot leave the group (the creator signs every change)');
  const members = sortMembers(dedupe([...state.members.filter((m) => !removed.has(m.pin)), ...(change.add ?? [])]));
  if (members.length > MAX_GROUP_MEMBERS) throw new Error(`a group has at most ${MAX_GROUP_MEMBERS} members`);
  const { sig: _old, ...rest } = state;
  return sign({ ...rest, name: change.name ?? state.name, version: state.version + 1, members }, creator);
}

function dedupe(members: readonly GroupMember[]): GroupMember[] {
  const byPin = new Map<string, GroupMember>();
  for (const m of members) if (!byPin.has(m.pin)) byPin.set(m.pin, m);
  return [...byPin.values()];
}

/**
 * Check a member list on its own: the id is the creator's, every PIN is its key's, the list is in
 * canonical order with the creator on it, and the creator's signature verifies.
 */
export function verifyGroupState(state: GroupState): { ok: true } | { ok: false; code: GroupFailure; message: string } {
  const bad = (message: string) => ({ ok: false as const, code: GroupFailure.BadState, message });
  let creatorPk: Uint8Array;
  try {
    creatorPk = fromB64(state.creator);
  } catch {
    return bad('the creator key is not base64');
  }
  if (groupIdOf(state.creator, state.salt) !== state.id) return bad("the group id is not derived from the creator's key and salt");
  const creatorPin = pinOf(creatorPk);
  if (!state.members.some((m) => m.pin === creatorPin && m.pk === state.creator)) return bad('the creator is not on the member list');
  const sorted = sortMembers(state.members);
  for (let i = 0; i < sorted.length; i++) {
    const m = sorted[i]!;
    if (m !== state.members[i]) return bad('the member list is not in canonical order');
    if (i > 0 && sorted[i - 1]!.pin === m.pin) return bad(`PIN ${m.pin} is on the list twice`);
    let pk: Uint8Array;
    try {
      pk = fromB64(m.pk);
    } catch {
      return bad(`the key of ${m.pin} is not base64`);
    }
    if (pinOf(pk) !== m.pin) return bad(`PIN ${m.pin} is not derived from the key listed for it`);
  }
  const { sig, ...unsigned } = state;
  let ok = false;
  try {
    ok = sodium.crypto_sign_verify_detached(fromB64(sig), groupSignedBytes(unsigned), creatorPk);
  } catch {
    ok = false;
  }
  return ok ? { ok: true } : bad("the creator's signature does not verify");
}

/** True when two lists are the same signed document. */
export const sameState = (a: GroupState, b: GroupState): boolean => a.sig === b.sig && toHex(groupSignedBytes(a)) === toHex(groupSignedBytes(b));

/**
 * Decide whether a verified, opened group message belongs in the group, against the list this
 * client holds (`stored`, if any). `carried` is the list inside the message; `senderPk` the key
 * its envelope signature was checked with; `me` this client's PIN. A newer valid list replaces
 * the stored one (`updated`); nothing else in a message ever changes who is in a group.
 *
 * A change note from the creator may go to more people than the new list's members (the ones it
 * removed, so that they learn it), or to removed members alone; any other message must go to
 * exactly the list's members.
 */
export function checkGroupMessage(input: {
  env: Pick<Envelope, 'conv' | 'from' | 'to'>;
  carried: GroupState | string | undefined;
  senderPk: string;
  stored: GroupState | undefined;
  /** With no list held: the version of this group the client once held and let go of (client/core/groups.ts). */
  floor?: number | undefined;
  me: string;
  note?: 'group-created' | 'group-changed' | undefined;
}): GroupCheck {
  const { env, carried, stored, me } = input;
  const fail = (code: GroupFailure, message: string): GroupCheck => ({ ok: false, code, message });
  if (carried === undefined || typeof carried === 'string') return fail(GroupFailure.Unsigned, 'this group message carries no signed member list');
  const valid = verifyGroupState(carried);
  if (!valid.ok) return valid;
  if (carried.id !== env.conv) return fail(GroupFailure.WrongGroup, `the member list is for group ${carried.id}, the envelope for ${env.conv}`);
  // A list older than one this client let go of may still name a member since removed.
  if (!stored && input.floor !== undefined && carried.version < input.floor)
    return fail(GroupFailure.Stale, `sent under member list version ${carried.version}; this client once held version ${input.floor}`);

  let current = stored;
  let updated = false;
  if (!stored || carried.version > stored.version) {
    current = carried;
    updated = true;
  } else if (carried.version === stored.version && !sameState(carried, stored)) {
    return fail(GroupFailure.Conflict, `the creator signed two different member lists as version ${carried.version}`);
  }
  const list = current!;
  const sender = list.members.find((m) => m.pin === env.from);
  if (!sender) {
    return fail(
      carried.version < list.version ? GroupFailure.Stale : GroupFailure.NotMember,
      carried.version < list.version
        ? `sent under member list version ${carried.version}, and the sender is not on version ${list.version}`
        : `the sender ${env.from} is not a member of this group`,
    );
  }
  if (sender.pk !== input.senderPk) return fail(GroupFailure.MemberKeyMismatch, `${env.from} is on the list with another key than the one that signed this message`);
  // A note says who made or changed the group: only its creator's is honoured, and only with a
  // list at least as new as the one held (the same list again is a repeat, which claims no change).
  if (input.note && sender.pk !== list.creator)
    return fail(GroupFailure.NoteNotFromCreator, `${env.from} is not the group's creator, so a note of theirs about making or changing it is not honoured`);
  if (input.note && carried.version < list.version)
    return fail(GroupFailure.NoteNotNewer, `a group note with member list version ${carried.version}, older than version ${list.version} held`);
  const memberPins = list.members.map((m) => m.pin);
  const got = new Set([env.from, ...env.to]);
  // The creator's change note also goes to the members it removed, so that they learn it: either
  // in the members' own envelope (it must then reach every member, and may reach more, whom a
  // member added by this very change cannot know), or — so that a removed member's full queue
  // cannot hold the change back from everyone — in an envelope of its own, to removed members only
  // (members of the list this client held, who are not on the new one).
  const isChangeNote = input.note === 'group-changed' && sender.pk === list.creator && updated;
  const removedOnly =
    isChangeNote && stored !== undefined && got.has(me) && [...got].every((p) => p === env.from || (!memberPins.includes(p) && stored.members.some((m) => m.pin === p)));
  const equal = isChangeNote ? removedOnly || memberPins.every((p) => got.has(p)) : got.size === memberPins.length && memberPins.every((p) => got.has(p));
  if (!equal) {
    if (carried.version < list.version)
      return fail(GroupFailure.Stale, `sent under member list version ${carried.version} (you hold version ${list.version}), to people who are no longer exactly the group`);
    return fail(GroupFailure.RecipientsMismatch, "the envelope went to other people than the group's members");
  }
  if (!list.members.some((m) => m.pin === me) && !(isChangeNote && stored?.members.some((m) => m.pin === me))) {
    return fail(GroupFailure.NotForMe, "you are not on this group's member list");
  }
  return { ok: true, state: list, updated };
}
