/**
 * Why a message did not open, or was not let into a group: stable codes, one list for the whole
 * project. Code compares codes, tests assert codes, and the pages word them for people
 * (client/ui/words.ts); the `reason` that travels with a code is for logs and the curious.
 */

/** Opening an envelope, as a recipient, the sender, the regulator or an attacker with a key. */
export const OpenFailure = {
  /** The sender's directory key does not have the PIN the envelope claims. */
  SenderKeyMismatch: 'sender_key_mismatch',
  /** The sender is not known (not in the directory this client holds). */
  UnknownSender: 'unknown_sender',
  /** The signature does not verify: altered, or not from the claimed sender. */
  BadSignature: 'bad_signature',
  /** The envelope holds no key wrap for this reader. */
  NotAddressedToMe: 'not_addressed_to_me',
  /** This reader's wrap does not open with its key. */
  WrapDoesNotOpen: 'wrap_does_not_open',
  /** The key model has no escrow field: end to end only. */
  NoEscrowField: 'no_escrow_field',
  /** The escrow field is sealed to another escrow key (another key id). */
  EscrowKidUnknown: 'escrow_kid_unknown',
  /** The escrow field names this key but does not open with it: forged or corrupted. */
  EscrowDoesNotOpen: 'escrow_does_not_open',
  /** A key was unwrapped but the body does not decrypt with it (a forged key, or an altered body or header). */
  BodyDoesNotDecrypt: 'body_does_not_decrypt',
  /** The body decrypts but is not a valid message body. */
  BodyMalformed: 'body_malformed',
  /** An envelope id this client has already shown: dropped. */
  Replay: 'replay',
  /** A key model this code does not implement. */
  UnsupportedModel: 'unsupported_model',
  /** A sealed-sender box that does not open with this device's key, or holds no envelope for it. */
  SealedBoxDoesNotOpen: 'sealed_box_does_not_open',
  /** Server-held keys: only the enterprise server's key opens it (a demand on its operator does). */
  ServerHeld: 'server_held',
} as const;
export type OpenFailure = (typeof OpenFailure)[keyof typeof OpenFailure];

/** Why a group message or a member list was not accepted (shared/groups.ts). */
export const GroupFailure = {
  /** A message in a group conversation that carries no signed member list (an old client, or a forger). */
  Unsigned: 'group_unsigned',
  /** The member list's signature, key binding or layout does not check out. */
  BadState: 'group_state_invalid',
  /** The member list is for another group than the envelope's conversation. */
  WrongGroup: 'group_id_mismatch',
  /** The sender is not on the member list this client holds. */
  NotMember: 'not_a_member',
  /** The sender is on the list, but under another key than the one that signed the envelope. */
  MemberKeyMismatch: 'member_key_mismatch',
  /** The envelope went to another set of people than the list's members. */
  RecipientsMismatch: 'recipients_mismatch',
  /** Sent under an older member list than this client holds, to a set of people that is no longer the group. */
  Stale: 'group_state_stale',
  /** The creator signed two different lists with the same version number. */
  Conflict: 'group_state_conflict',
  /** This client is not on the list it was sent. */
  NotForMe: 'not_in_group',
  /** A group note (made / changed the group) from a member who is not the group's creator. */
  NoteNotFromCreator: 'note_not_from_creator',
  /** A group note from the creator carrying an older member list than this client holds. */
  NoteNotNewer: 'note_not_newer',
} as const;
export type GroupFailure = (typeof GroupFailure)[keyof typeof GroupFailure];

/** Why a client refused a directory entry the relay sent (client/core/directory.ts). */
export const DirectoryFailure = {
  /** The entry's PIN is not the one its key is derived from: the relay (or someone in its place) lied. */
  PinNotDerived: 'pin_not_derived',
  /** The relay offered another key for a PIN this client already knows: it keeps the first one (trust on first use). */
  KeyChanged: 'key_changed',
} as const;
export type DirectoryFailure = (typeof DirectoryFailure)[keyof typeof DirectoryFailure];

export type FailureCode = OpenFailure | GroupFailure | DirectoryFailure;

/** A value, or a stable failure code with a reason. */
export type Outcome<T, C extends string = OpenFailure> = { ok: true; value: T } | { ok: false; code: C; reason: string };

export const fail = <C extends string>(code: C, reason: string): { ok: false; code: C; reason: string } => ({ ok: false, code, reason });

/** Plain words for each code, the same sentence on every page and in the decrypt command. */
const WORDS: Record<FailureCode, string> = {
  sender_key_mismatch: "The sender's key is not the one its PIN is derived from.",
  unknown_sender: 'The sender is not in the directory, so the signature cannot be checked.',
  bad_signature: 'The signature does not verify: the envelope was altered, or is not from the claimed sender.',
  not_addressed_to_me: 'It holds no key for you: it was not sent to you.',
  wrap_does_not_open: 'Your key wrap does not open with your key.',
  no_escrow_field: 'It has no escrow field: end-to-end only.',
  escrow_kid_unknown: 'Its escrow field is sealed to another escrow key.',
  escrow_does_not_open: "Its escrow field names the regulator's key but does not open with it: forged or corrupted.",
  body_does_not_decrypt: 'The key does not decrypt the body: a forged key, or the header or body was altered.',
  body_malformed: 'It decrypts, but what is inside is not a valid message.',
  replay: 'It was already received once; the copy was dropped.',
  unsupported_model: 'It uses a key model this page does not know.',
  sealed_box_does_not_open: 'A sealed-sender box that does not open with your key, or holds no envelope for you.',
  server_held: 'Its key is held by the enterprise server: only the server, or whoever compels its operator, opens it.',
  group_unsigned: 'It names a group but carries no signed member list, so anyone could have sent it as a group message.',
  group_state_invalid: "Its member list is not validly signed by the group's creator: forged or altered.",
  group_id_mismatch: 'Its member list belongs to a different group.',
  not_a_member: 'The sender is not a member of this group.',
  member_key_mismatch: 'The sender is on the member list, but with a different key from the one that signed the message.',
  recipients_mismatch: "It was not sent to exactly the group's members.",
  group_state_stale: 'It was sent under an older member list, to people who are no longer exactly the group.',
  group_state_conflict: "The group's creator signed two different member lists with the same version number.",
  not_in_group: "You are not on this group's member list.",
  note_not_from_creator: "It claims to make or change the group, but it is not from the group's creator: only the creator can do that, so nothing changed.",
  note_not_newer: "It is a note from the group's creator about an older member list than the one you hold: it changes nothing.",
  pin_not_derived: 'The relay sent a key for this PIN that the PIN is not derived from: refused.',
  key_changed:
    'The relay offered a different key for a PIN this tab already knows. This tab keeps the key it saw first; compare safety numbers in person before trusting anything else.',
};

export const wordsFor = (code: string): string => (code in WORDS ? WORDS[code as FailureCode] : code);
