/**
 * The one wire protocol of Backdoor Lab, imported by the relay, the browser
 * client, Node bots and the tests. Every frame that crosses a socket is parsed
 * here, once, at the edge; code past the parser trusts its types.
 *
 * Binary values travel as standard base64 (RFC 4648 §4, with padding) so that
 * an independent decryptor (Python's base64.b64decode, PyNaCl) reads them as is.
 */
import { z } from 'zod';

/** Version 2 puts the key model in the signed envelope (`keys`); version 1 envelopes still open (archives, old queues). */
export const PROTOCOL_VERSION = 2;

/** Largest frame the relay accepts; a bigger one closes the socket with 1009. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Largest message text a client will encrypt (characters). */
export const MAX_TEXT_CHARS = 4000;
/** Most recipients one envelope may name (a group of 64 including the sender). */
export const MAX_RECIPIENTS = 63;
export const MAX_NAME_CHARS = 40;
/** Most PINs one `lookup` frame may ask for. */
export const MAX_LOOKUP_PINS = 100;

// ---------------------------------------------------------------------------
// Field shapes

const b64 = (min: number, max: number) =>
  z
    .string()
    .max(Math.ceil(max / 3) * 4)
    // Canonical standard base64 only: unused padding bits must be zero, as libsodium's decoder demands,
    // so nothing that passes here can fail to decode later.
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$/, 'must be canonical standard base64')
    .refine(
      (s) => {
        const n = (s.length / 4) * 3 - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0);
        return n >= min && n <= max;
      },
      `must decode to ${min === max ? min : `${min}..${max}`} bytes`,
    );

/** A BlackBerry-style PIN: 8 upper-case hex digits, derived from the public key. */
export const Pin = z.string().regex(/^[0-9A-F]{8}$/, 'PIN must be 8 upper-case hex digits');
export type Pin = z.infer<typeof Pin>;

/** Envelope id: 16 random bytes as 32 lower-case hex digits. */
export const EnvelopeId = z.string().regex(/^[0-9a-f]{32}$/, 'id must be 32 lower-case hex digits');

/** Conversation id: `dm` for one-to-one, `g-` + 16 hex digits for a group. */
export const ConversationId = z.string().regex(/^(dm|g-[0-9a-f]{16})$/, 'conv must be "dm" or "g-" + 16 hex digits');

/** Combining marks one character may carry (accents stack two or three; more is a tower over the next lines). */
export const MAX_MARKS_PER_CHAR = 4;

/**
 * What a display name may not hold, each class with its own message (checked before trimming, so
 * nothing is silently dropped): a name is shown in every tab, the relay view and the teacher's log,
 * and these characters would reorder, hide or forge text there. Emoji built with a zero-width joiner
 * are refused too (their parts alone are fine).
 */
export const NAME_REFUSALS: readonly { chars: RegExp; message: string }[] = [
  { chars: /[\p{Cc}]/u, message: 'name must not contain control characters (C0, DEL or C1, such as a newline, tab or escape)' },
  {
    chars: /[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/u,
    message: 'name must not contain bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C): they reorder the text around the name',
  },
  { chars: /[\p{Zl}\p{Zp}]/u, message: 'name must not contain line or paragraph separators (U+2028, U+2029)' },
  {
    chars: /[\p{Cf}\p{Cs}]/u,
    message: 'name must not contain invisible format characters (zero-width space or joiner, word joiner, byte order mark, soft hyphen...) or lone surrogates',
  },
  { chars: /(?! )[\s\p{Zs}]/u, message: 'name must not contain whitespace other than a plain space (no tab, no-break or other wide space)' },
  {
    // Default-ignorable code points render as nothing: the Hangul fillers (U+115F, U+1160, U+3164,
    // U+FFA0), the combining grapheme joiner, U+17B4/U+17B5, the variation selectors. One U+FE0F
    // right after an emoji is the exception, so that "❤️" stays a heart. (Format characters, also
    // default-ignorable, have their own message above.)
    chars: /(?!\p{Cf})(?!(?<=\p{Emoji})\uFE0F(?!\uFE0F))\p{Default_Ignorable_Code_Point}/u,
    message:
      'name must not contain invisible characters (Hangul fillers, the combining grapheme joiner, variation selectors other than one U+FE0F right after an emoji...): they show as nothing',
  },
  {
    chars: new RegExp(`(?<=\\p{M}{${MAX_MARKS_PER_CHAR}})\\p{M}`, 'u'),
    message: `name must not stack more than ${MAX_MARKS_PER_CHAR} combining marks on one character: they spill over the lines around it`,
  },
];

/** A character that shows: a letter, digit, symbol or punctuation mark (U+2800, the blank Braille pattern, does not). */
const VISIBLE = /(?!\u2800)[\p{L}\p{N}\p{S}\p{P}]/u;

export const DisplayName = NAME_REFUSALS.reduce((schema, { chars, message }) => schema.refine((s) => !chars.test(s), message), z.string())
  .trim()
  .min(1, 'name must not be empty')
  .max(MAX_NAME_CHARS, `name must be at most ${MAX_NAME_CHARS} characters`)
  // Said only when no refusal above applies, so that each bad name gets the one message that fits.
  .refine(
    (s) => VISIBLE.test(s) || s === '' || NAME_REFUSALS.some(({ chars }) => chars.test(s)),
    'name must contain at least one visible letter, digit, symbol or punctuation mark: blanks and marks alone show as nothing',
  );

export const PublicKey = b64(32, 32);
export const Signature = b64(64, 64);
export const Nonce24 = b64(24, 24);
/** crypto_box_seal of a 32-byte key: 32 ephemeral pk + 32 key + 16 tag = 80 bytes. */
export const SealedKey = b64(80, 80);
export const SEALED_KEY_BYTES = 80;

export const KeyWrap = z.object({ to: Pin, key: SealedKey }).strict();
export type KeyWrap = z.infer<typeof KeyWrap>;

/** The escrow field: the message key sealed to the regulator's escrow key. */
export const EscrowField = z
  .object({
    kid: z.string().regex(/^[0-9a-f]{16}$/, 'kid must be 16 lower-case hex digits'),
    key: SealedKey,
  })
  .strict();
export type EscrowField = z.infer<typeof EscrowField>;

/**
 * Every key model an envelope's `keys.model` may name: how the message key is protected, and so
 * who can read the message. One crypto module per model (shared/crypto/). Names listed here but not
 * in `KeyModel` below are reserved for the lab's later models and refused by the parser by name.
 */
export const KEY_MODEL_NAMES = ['e2e', 'e2e-escrow', 'app-key', 'server-key', 'ratchet', 'ghost'] as const;
export type KeyModelName = (typeof KEY_MODEL_NAMES)[number];

const Wraps = z
  .array(KeyWrap)
  .min(1)
  .max(MAX_RECIPIENTS + 1);

/** End to end: the message key sealed to the sender's own key and each recipient's, nobody else's. */
export const E2eKeys = z.object({ model: z.literal('e2e'), wraps: Wraps }).strict();
/** End to end with escrow (the regulator tap): the same wraps, and the key sealed to the escrow key as well. */
export const EscrowKeys = z.object({ model: z.literal('e2e-escrow'), wraps: Wraps, escrow: EscrowField }).strict();

const Kid = z.string().regex(/^[0-9a-f]{16}$/, 'kid must be 16 lower-case hex digits');

/**
 * The shared app key (consumer BBM's PIN messages): the message key is encrypted (secretbox) with one
 * key that every copy of the app ships, so anyone with the app — or the key — opens every message.
 */
export const AppKeys = z.object({ model: z.literal('app-key'), kid: Kid, nonce: Nonce24, key: b64(48, 48) }).strict();

/**
 * Server-held keys (BES): the message key sealed to the enterprise server's key (and to the
 * sender's own), so the server opens it and re-wraps it for the recipients (the envelope's
 * `delivery`, added by the server, not signed by the sender).
 */
export const ServerKeys = z.object({ model: z.literal('server-key'), kid: Kid, server: SealedKey, wraps: z.array(KeyWrap).length(1) }).strict();

/** The signed, tagged field that says how an envelope's message key is protected. */
export const KeyModel = z.discriminatedUnion('model', [E2eKeys, EscrowKeys, AppKeys, ServerKeys]);
export type KeyModel = z.infer<typeof KeyModel>;
export type E2eKeys = z.infer<typeof E2eKeys>;
export type EscrowKeys = z.infer<typeof EscrowKeys>;
export type AppKeys = z.infer<typeof AppKeys>;
export type ServerKeys = z.infer<typeof ServerKeys>;

/**
 * The PINs a key model must hold wraps for, or null when it names no one (the app key opens for
 * anyone). End to end: the sender and every recipient. Server-held: the sender alone (the server
 * wraps for the recipients).
 */
export function requiredWrapPins(env: { from: string; to: string[] }, keys: KeyModel): { want: string[]; got: string[] } | null {
  switch (keys.model) {
    case 'e2e':
    case 'e2e-escrow':
      return { want: [env.from, ...env.to], got: keys.wraps.map((w) => w.to) };
    case 'server-key':
      return { want: [env.from], got: keys.wraps.map((w) => w.to) };
    case 'app-key':
      return null;
    default:
      return assertNever(keys);
  }
}

const routing = {
  id: EnvelopeId,
  from: Pin,
  to: z.array(Pin).min(1, 'to must name at least one recipient').max(MAX_RECIPIENTS),
  conv: ConversationId,
  ts: z.number().int().min(0).max(8.64e15),
  nonce: Nonce24,
  body: b64(17, MAX_FRAME_BYTES),
};

function checkRouting(
  env: { from: string; to: string[]; conv: string },
  wraps: { want: string[]; got: string[] } | null,
  ctx: z.RefinementCtx,
  wrapsPath: (string | number)[],
): void {
  if (new Set(env.to).size !== env.to.length) ctx.addIssue({ code: 'custom', message: 'to must not repeat a PIN', path: ['to'] });
  if (env.to.includes(env.from)) ctx.addIssue({ code: 'custom', message: 'to must not include the sender', path: ['to'] });
  if (env.conv === 'dm' && env.to.length !== 1) ctx.addIssue({ code: 'custom', message: 'a dm names exactly one recipient', path: ['to'] });
  if (wraps && [...wraps.want].sort().join(',') !== [...wraps.got].sort().join(',')) {
    ctx.addIssue({
      code: 'custom',
      message: wraps.want.length === 1 ? 'wraps must hold one key, for the sender' : 'wraps must hold one key for the sender and each recipient',
      path: wrapsPath,
    });
  }
}

/**
 * The envelope (protocol version 2): everything the relay sees of a message. `from` is set by the
 * sender and checked by the relay against the authenticated session; `keys` says how the message
 * key is protected, and is covered by the signature and bound into the body's associated data.
 */
export const Envelope = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    ...routing,
    keys: KeyModel,
    sig: Signature,
    /**
     * Server-held keys only: the enterprise server's re-wraps of the message key, one per recipient.
     * Added by the server after it opened the key; not covered by the sender's signature (a wrong
     * one only fails to decrypt the body, which the header binds).
     */
    delivery: z.array(KeyWrap).min(1).max(MAX_RECIPIENTS).optional(),
  })
  .strict()
  .superRefine((env, ctx) => {
    checkRouting(env, requiredWrapPins(env, env.keys), ctx, ['keys', 'wraps']);
    if (env.delivery !== undefined) {
      if (env.keys.model !== 'server-key') ctx.addIssue({ code: 'custom', message: 'only a server-held key envelope has a delivery', path: ['delivery'] });
      else if ([...env.delivery.map((w) => w.to)].sort().join(',') !== [...env.to].sort().join(','))
        ctx.addIssue({ code: 'custom', message: 'delivery must hold one key for each recipient', path: ['delivery'] });
    }
  });
export type Envelope = z.infer<typeof Envelope>;

/**
 * A protocol version 1 envelope (until 2026-12): the wraps and the escrow field at the top level,
 * the key model implicit. Never sent any more; still opened from archives and old queues.
 */
export const EnvelopeV1 = z
  .object({ v: z.literal(1), ...routing, wraps: Wraps, escrow: EscrowField.nullable(), sig: Signature })
  .strict()
  .superRefine((env, ctx) => checkRouting(env, { want: [env.from, ...env.to], got: env.wraps.map((w) => w.to) }, ctx, ['wraps']));
export type EnvelopeV1 = z.infer<typeof EnvelopeV1>;

/** An envelope of either version, as an archive or a queue may hold it. */
export const AnyEnvelope = z.discriminatedUnion('v', [Envelope, EnvelopeV1]);
export type AnyEnvelope = z.infer<typeof AnyEnvelope>;

/** The key model of an envelope of either version (a v1 envelope's is implicit in its escrow field). */
export function keysOf(env: AnyEnvelope): KeyModel {
  if (env.v === PROTOCOL_VERSION) return env.keys;
  return env.escrow ? { model: 'e2e-escrow', wraps: env.wraps, escrow: env.escrow } : { model: 'e2e', wraps: env.wraps };
}

/** Most members a group may have (the sender and MAX_RECIPIENTS others). */
export const MAX_GROUP_MEMBERS = MAX_RECIPIENTS + 1;

export const GroupMember = z.object({ pin: Pin, pk: PublicKey }).strict();
export type GroupMember = z.infer<typeof GroupMember>;

/**
 * A group's signed member list (shared/groups.ts checks the signature and bindings). It travels
 * inside the ciphertext of every group message, so the relay never learns a group's name.
 */
export const GroupState = z
  .object({
    id: z.string().regex(/^g-[0-9a-f]{16}$/, 'group id must be "g-" + 16 hex digits'),
    name: DisplayName,
    version: z.number().int().min(1).max(1_000_000),
    /** The creator's Ed25519 public key: the id is derived from it, and only it signs a version. */
    creator: PublicKey,
    salt: b64(16, 16),
    members: z.array(GroupMember).min(1).max(MAX_GROUP_MEMBERS),
    sig: Signature,
  })
  .strict();
export type GroupState = z.infer<typeof GroupState>;

/** What the sender encrypts: the decrypted body of an envelope. */
export const MessageBody = z
  .object({
    /** Empty only in a group note (a new group or a change of its members). */
    text: z.string().max(MAX_TEXT_CHARS),
    /**
     * The group this message belongs to: its signed member list. (Clients before 2026-12 put the
     * group's name here as a plain string, with no member list; such a message is still read, and
     * never trusted as a group message.)
     */
    group: z.union([GroupState, DisplayName]).optional(),
    /** A group note: the creator announces a new group, or a new version of its member list. */
    note: z.enum(['group-created', 'group-changed']).optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if (body.text.length === 0 && body.note === undefined) ctx.addIssue({ code: 'custom', message: 'text must not be empty', path: ['text'] });
    if (body.note !== undefined && (body.group === undefined || typeof body.group === 'string')) {
      ctx.addIssue({ code: 'custom', message: "a group note carries the group's signed member list", path: ['group'] });
    }
  });
export type MessageBody = z.infer<typeof MessageBody>;

/**
 * A body's text as a reader outside the group (the regulator, the decrypt command) shows it: a
 * group note has no text, so it is described by what it carries, the member list.
 */
export function describeBody(body: MessageBody): string {
  if (body.note && typeof body.group === 'object') {
    const what = body.note === 'group-created' ? 'group created' : `group changed (version ${body.group.version})`;
    return `[${what}: "${body.group.name}", members ${body.group.members.map((m) => m.pin).join(', ')}]`;
  }
  return body.text;
}

/** The group name a body names, from a signed member list or an old client's plain name. */
export const groupNameOf = (body: Pick<MessageBody, 'group'>): string | undefined => (typeof body.group === 'string' ? body.group : body.group?.name);

// ---------------------------------------------------------------------------
// Client-side scanning (lab part 2; shared/scan.ts hashes, docs/wire-format.md section 10).

/** Longest phrase a scan-list entry may stand for, in words. */
export const MAX_PHRASE_WORDS = 8;
/** Most entries one scan list may hold (the list travels in every policy frame). */
export const MAX_SCAN_ENTRIES = 64;

const ScanHash = b64(32, 32);
const ScanListId = z.string().regex(/^[0-9a-f]{16}$/, 'list must be 16 lower-case hex digits');

/**
 * The authority's scan list as every client receives it: hashes only, never the phrases. While it
 * is in the policy, an honest client hashes each outgoing message's words under `salt` before it
 * seals the message, and reports a match (the `report` frame). `announced`: whether the chat page
 * says so (a real deployment would not).
 */
export const ScanPolicy = z
  .object({
    list: ScanListId,
    salt: b64(16, 16),
    entries: z
      .array(ScanHash)
      .max(MAX_SCAN_ENTRIES, `a scan list holds at most ${MAX_SCAN_ENTRIES} entries`)
      .refine((e) => new Set(e).size === e.length, 'entries must not repeat a hash'),
    announced: z.boolean(),
  })
  .strict();
export type ScanPolicy = z.infer<typeof ScanPolicy>;

// ---------------------------------------------------------------------------
// Policy: what the relay tells clients about the regulator tap.

export const Policy = z
  .object({
    tap: z.boolean(),
    scope: z.enum(['all', 'warrant']),
    /** PINs named in a warrant; messages from or to them are covered. */
    pins: z.array(Pin).max(1000),
    announced: z.boolean(),
    /** The regulator's X25519 escrow public key (null while the tap is off). */
    escrowPk: PublicKey.nullable(),
    escrowKid: z
      .string()
      .regex(/^[0-9a-f]{16}$/)
      .nullable(),
    /** Incremented on every change, so clients can tell a fresh policy from a stale one. */
    epoch: z.number().int().min(0),
    /**
     * The room's key model, chosen by the teacher: end to end (the default; the tap adds escrow),
     * BBM's shared app key, or BES-style server-held keys (with the enterprise server's public key).
     */
    room: z
      .object({
        model: z.enum(['e2e', 'app-key', 'server-key']),
        serverPk: PublicKey.nullable(),
        serverKid: Kid.nullable(),
        /**
         * Sealed sender (end-to-end rooms, direct messages): the whole signed envelope travels inside
         * a box sealed to the recipient, so the relay stores and forwards it without a sender.
         */
        sealedSender: z.boolean(),
      })
      .strict(),
    /** Client-side scanning: the authority's list of hashes (absent while scanning is off). */
    scan: ScanPolicy.optional(),
  })
  .strict();
export type Policy = z.infer<typeof Policy>;
export type RoomModel = Policy['room']['model'];

/** Whether a message from `from` to `to` falls under the tap (which escrows end-to-end messages; other models need none). */
export function policyCovers(policy: Policy, from: string, to: readonly string[]): boolean {
  if (!policy.tap || policy.escrowPk === null || policy.room.model !== 'e2e') return false;
  if (policy.scope === 'all') return true;
  return policy.pins.includes(from) || to.some((pin) => policy.pins.includes(pin));
}

export const DirectoryEntry = z.object({ pin: Pin, name: DisplayName, pk: PublicKey, online: z.boolean() }).strict();
export type DirectoryEntry = z.infer<typeof DirectoryEntry>;

// ---------------------------------------------------------------------------
// Classroom mode: the class code and the device a participant says it uses.

/**
 * The class code's letters: upper-case letters and digits that cannot be taken for one another
 * (no 0/O, 1/I/L, U/V), so it can be read off a projector and typed on a phone.
 */
export const CLASS_CODE_ALPHABET = '23456789ABCDEFGHJKMNPQRSTWXYZ';
export const CLASS_CODE_LENGTH = 6;
/** A class code as it travels in a login: exactly six characters of CLASS_CODE_ALPHABET. */
export const ClassCode = z
  .string()
  .regex(new RegExp(`^[${CLASS_CODE_ALPHABET}]{${CLASS_CODE_LENGTH}}$`), `class code must be ${CLASS_CODE_LENGTH} characters from ${CLASS_CODE_ALPHABET}`);
export type ClassCode = z.infer<typeof ClassCode>;

/**
 * A code as a person typed it: upper case, spaces and dashes dropped. Returns null when what is
 * left is not a class code (0, 1, I, L, O, U and V are never in one).
 */
export function normalizeClassCode(typed: string): ClassCode | null {
  const parsed = ClassCode.safeParse(typed.toUpperCase().replace(/[ \t-]/g, ''));
  return parsed.success ? parsed.data : null;
}

/** What kind of device a participant's client says it runs on: a claim, shown to the teacher as such. */
export const DEVICE_KINDS = ['phone', 'tablet', 'laptop'] as const;
export const DeviceKind = z.enum(DEVICE_KINDS);
export type DeviceKind = z.infer<typeof DeviceKind>;

// ---------------------------------------------------------------------------
// Client → relay

export const ClientMessage = z.discriminatedUnion('type', [
  /**
   * Answer to the relay's challenge: a signature over the login transcript. In classroom mode
   * `code` is the class code (a login without the right one is refused before anything is
   * registered); `device` is what the client says it runs on, for the teacher's list.
   */
  z
    .object({
      type: z.literal('hello'),
      v: z.literal(PROTOCOL_VERSION),
      pk: PublicKey,
      name: DisplayName,
      sig: Signature,
      code: ClassCode.optional(),
      device: DeviceKind.optional(),
    })
    .strict(),
  z.object({ type: z.literal('send'), env: Envelope }).strict(),
  /**
   * Sealed sender: `box` is crypto_box_seal of the whole signed envelope (its JSON) to the
   * recipient's X25519 key; the relay sees only the id, the recipient, the size and the time.
   */
  z.object({ type: z.literal('send-sealed'), id: EnvelopeId, to: Pin, box: b64(48 + 200, MAX_FRAME_BYTES) }).strict(),
  /** The device has the queued items: the relay may delete them. */
  z.object({ type: z.literal('ack'), qids: z.array(z.number().int().min(1)).min(1).max(1000) }).strict(),
  /** The user saw these messages: tell their senders (the R in BBM). */
  z.object({ type: z.literal('read'), to: Pin, ids: z.array(EnvelopeId).min(1).max(1000) }).strict(),
  z.object({ type: z.literal('ping'), t: z.number() }).strict(),
  /**
   * Ask for the directory entries of these PINs (the senders of incoming envelopes, remembered
   * contacts): the welcome carries only a page of the directory, never all of it.
   */
  z.object({ type: z.literal('lookup'), pins: z.array(Pin).min(1).max(MAX_LOOKUP_PINS) }).strict(),
  /**
   * Client-side scanning: the message `id` this device sent (and the relay accepted) to `to`
   * matched `entry` of scan list `list`. No author field: the relay takes the author from the
   * logged-in session, and accepts a report only for a message that session sent, once.
   */
  z
    .object({
      type: z.literal('report'),
      id: EnvelopeId,
      to: z.array(Pin).min(1).max(MAX_RECIPIENTS),
      list: ScanListId,
      entry: ScanHash,
    })
    .strict(),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;

// ---------------------------------------------------------------------------
// Relay → client

export const ReceiptState = z.enum(['delivered', 'read']);
export type ReceiptState = z.infer<typeof ReceiptState>;

export const ServerMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('challenge'), v: z.literal(PROTOCOL_VERSION), nonce: b64(32, 32), policy: Policy }).strict(),
  /**
   * Login succeeded. `directory` is a bounded page (online users first, then the most recently
   * seen), `total` the number of users the relay knows; the others are found with `lookup`.
   */
  z.object({ type: z.literal('welcome'), pin: Pin, name: DisplayName, directory: z.array(DirectoryEntry), total: z.number().int().min(0), policy: Policy }).strict(),
  /** Directory changes since the last frame: new users and who went on- or offline. */
  z.object({ type: z.literal('presence'), users: z.array(DirectoryEntry) }).strict(),
  z.object({ type: z.literal('policy'), policy: Policy }).strict(),
  /** The relay stored the envelope and will deliver it (the "sent" tick). */
  z.object({ type: z.literal('accepted'), id: EnvelopeId, duplicate: z.boolean() }).strict(),
  /** A queued envelope for this device; ack its qid once stored. */
  /** A queued envelope for this device (of either version: a queue may hold version 1 envelopes); ack its qid once stored. */
  z.object({ type: z.literal('envelope'), qid: z.number().int().min(1), env: AnyEnvelope }).strict(),
  /** A queued sealed-sender box for this device: open it, check the envelope inside, ack its qid. */
  z.object({ type: z.literal('sealed'), qid: z.number().int().min(1), id: EnvelopeId, box: b64(48 + 200, MAX_FRAME_BYTES) }).strict(),
  /** A queued receipt for a message this device sent; ack its qid. */
  z.object({ type: z.literal('receipt'), qid: z.number().int().min(1), id: EnvelopeId, by: Pin, state: ReceiptState, at: z.number() }).strict(),
  z.object({ type: z.literal('pong'), t: z.number() }).strict(),
  /** The answer to `lookup`: the entries found, and the PINs the relay does not know. */
  z.object({ type: z.literal('users'), users: z.array(DirectoryEntry), unknown: z.array(Pin) }).strict(),
  /** `retryAfterMs`: on `rate_limited`, when the refused frame would fit the socket's budget. */
  z.object({ type: z.literal('error'), code: z.string(), message: z.string(), ref: z.string().optional(), retryAfterMs: z.number().int().min(0).optional() }).strict(),
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

// ---------------------------------------------------------------------------
// Observers: what the relay hands to the relay view and to the regulator's tap.
// These are the relay's own view of traffic: metadata in clear, content as ciphertext.

export const TrafficEvent = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('envelope'),
      at: z.number(),
      env: Envelope,
      bytes: z.number().int(),
      online: z.array(Pin),
      senderPk: PublicKey,
      /** The display names the relay has for the sender and the recipients (it knows who is who). */
      names: z.record(Pin, DisplayName),
      /** Server-held keys: what the enterprise server read of it (it opens every such message). */
      serverRead: z.object({ text: z.string(), group: z.string().nullable() }).strict().optional(),
    })
    .strict(),
  z.object({ kind: z.literal('receipt'), at: z.number(), id: EnvelopeId, by: Pin, to: Pin, state: ReceiptState }).strict(),
  /** A sealed-sender box: the relay knows the recipient, the size and the time — and records no sender. */
  z.object({ kind: z.literal('sealed'), at: z.number(), id: EnvelopeId, to: Pin, bytes: z.number().int(), online: z.boolean() }).strict(),
  z.object({ kind: z.literal('login'), at: z.number(), pin: Pin, name: DisplayName, address: z.string() }).strict(),
  z.object({ kind: z.literal('logout'), at: z.number(), pin: Pin }).strict(),
  z.object({ kind: z.literal('rejected'), at: z.number(), pin: z.string(), code: z.string(), message: z.string() }).strict(),
  z.object({ kind: z.literal('policy'), at: z.number(), policy: Policy }).strict(),
]);
export type TrafficEvent = z.infer<typeof TrafficEvent>;

/**
 * Frames on the relay view socket (`/ws/relay-view`): a backlog, then live events. The backlog comes
 * in parts, within the viewer's buffer bound: `backlog` first (the page starts afresh), then any
 * number of `backlog-more` (applied in order, on top), the directory before the events.
 */
export const ViewerMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('backlog'), events: z.array(TrafficEvent), directory: z.array(DirectoryEntry) }).strict(),
  z.object({ type: z.literal('backlog-more'), events: z.array(TrafficEvent), directory: z.array(DirectoryEntry) }).strict(),
  z.object({ type: z.literal('traffic'), event: TrafficEvent }).strict(),
]);
export type ViewerMessage = z.infer<typeof ViewerMessage>;
export const parseViewerMessage = (raw: string): Parsed<ViewerMessage> => parseWith(ViewerMessage, raw);

/**
 * An archived envelope as the regulator console shows it, with what its escrow key does with it:
 * opened; end-to-end (no escrow field); or not opened (a field that does not open with the
 * regulator's key: forged, sealed to another key, or altered), with the stable code saying which.
 */
export const InterceptItem = z
  .object({
    seq: z.number().int(),
    at: z.number(),
    senderPk: z.string(),
    names: z.record(Pin, DisplayName).optional(),
    env: AnyEnvelope,
    status: z.enum(['opened', 'end-to-end', 'not-opened']),
    readable: z.boolean(),
    code: z.string().nullable(),
    text: z.string().nullable(),
    group: z.string().nullable(),
    reason: z.string().nullable(),
  })
  .strict();
export type InterceptItem = z.infer<typeof InterceptItem>;

export const AuditEntry = z.object({ seq: z.number().int(), at: z.number(), action: z.string(), detail: z.string() }).strict();
export type AuditEntry = z.infer<typeof AuditEntry>;

export const TapSettings = z.object({ tap: z.boolean(), scope: z.enum(['all', 'warrant']), pins: z.array(Pin), announced: z.boolean() }).strict();
export type TapSettings = z.infer<typeof TapSettings>;

/** The regulator console socket (`/ws/regulator`): the console sends `auth` first. */
export const ConsoleClientMessage = z.object({ type: z.literal('auth'), token: z.string().max(200) }).strict();
export const ConsoleMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('snapshot'),
      intercepts: z.array(InterceptItem),
      total: z.number().int(),
      audit: z.array(AuditEntry),
      settings: TapSettings,
      policy: Policy,
      kid: z.string(),
    })
    .strict(),
  z.object({ type: z.literal('intercept'), item: InterceptItem, total: z.number().int() }).strict(),
  z.object({ type: z.literal('state'), audit: z.array(AuditEntry), settings: TapSettings, policy: Policy }).strict(),
  z.object({ type: z.literal('error'), code: z.string(), message: z.string() }).strict(),
]);
export type ConsoleMessage = z.infer<typeof ConsoleMessage>;
export const parseConsoleMessage = (raw: string): Parsed<ConsoleMessage> => parseWith(ConsoleMessage, raw);
export const parseConsoleClientMessage = (raw: string): Parsed<z.infer<typeof ConsoleClientMessage>> => parseWith(ConsoleClientMessage, raw);

// ---------------------------------------------------------------------------
// Errors and close codes, named once.

export const ErrorCode = {
  BadJson: 'bad_json',
  BadFrame: 'bad_frame',
  NotLoggedIn: 'not_logged_in',
  AlreadyLoggedIn: 'already_logged_in',
  BadSignature: 'bad_signature',
  KeyMismatch: 'key_mismatch',
  Impersonation: 'impersonation',
  UnknownRecipient: 'unknown_recipient',
  EscrowRequired: 'escrow_required',
  /** The envelope's key model is not the one the room uses (the teacher chose another). */
  WrongModel: 'wrong_model',
  RateLimited: 'rate_limited',
  /** A recipient's offline queue (or this sender's share of it) is full: the envelope was not accepted. */
  QueueFull: 'queue_full',
  /** Too many new identities from this network address in the last hour (then close 4001). */
  RegistrationLimited: 'registration_limited',
  /** The directory holds as many users as the relay allows and none can be evicted (then close 4001). */
  DirectoryFull: 'directory_full',
  /** A scan report the relay does not take: scanning off, another list, not a message this session sent, or reported already. */
  ReportRefused: 'report_refused',
  /** Classroom mode: the login carried no class code, or a wrong one (then close 4001; nothing is registered). */
  ClassCodeRequired: 'class_code_required',
  ClassCodeWrong: 'class_code_wrong',
  /** Classroom mode: too many wrong class codes from this network address; `retryAfterMs` says when to try again. */
  ClassCodeLocked: 'class_code_locked',
  /** The teacher removed this person from the room (then close 4008); the PIN stays out until the teacher lets it back in or resets the room. */
  Kicked: 'kicked',
  Internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  PolicyViolation: 1008,
  TooBig: 1009,
  /** Application codes (4000–4999). */
  LoginFailed: 4001,
  LoginTimeout: 4002,
  Replaced: 4003,
  SlowConsumer: 4004,
  Flooding: 4005,
  TooManyErrors: 4006,
  /** The user was removed from the directory (the teacher's reset); logging in again registers anew. */
  Removed: 4007,
  /** The teacher removed this person from the room: the client must not reconnect on its own. */
  Kicked: 4008,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

// ---------------------------------------------------------------------------
// Parsing at the edge.

export type Parsed<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; message: string };

function describe(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.join('.') : '(frame)'}: ${i.message}`)
    .join('; ');
}

function parseWith<T>(schema: z.ZodType<T>, raw: string): Parsed<T> {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false, code: ErrorCode.BadJson, message: 'frame is not valid JSON' };
  }
  const result = schema.safeParse(json);
  if (!result.success) return { ok: false, code: ErrorCode.BadFrame, message: describe(result.error) };
  return { ok: true, value: result.data };
}

export const parseClientMessage = (raw: string): Parsed<ClientMessage> => parseWith(ClientMessage, raw);
export const parseServerMessage = (raw: string): Parsed<ServerMessage> => parseWith(ServerMessage, raw);

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}
