/**
 * The platform-neutral messenger: identity, login, directory, sending and
 * receiving envelopes, receipts, the tap policy, reconnects. It knows nothing of
 * the DOM or of `ws`: the socket and the key-value storage are injected, so the
 * browser page, Node bots, the benchmark and the tests all run this same code.
 */
import {
  CloseCode,
  DisplayName,
  ErrorCode,
  PROTOCOL_VERSION,
  assertNever,
  parseServerMessage,
  policyCovers,
  type ClientMessage,
  type ClassCode,
  type DeviceKind,
  type AnyEnvelope,
  type DirectoryEntry,
  type Envelope,
  groupNameOf,
  type MessageBody,
  type Policy,
  type ServerMessage,
} from '../../shared/protocol.ts';
import { changeGroup, checkGroupMessage, createGroup, type GroupMember, type GroupState } from '../../shared/groups.ts';
import { GROUPS_KEY, GroupBook } from './groups.ts';
import { SafeStore, type FailedWrite } from './storage.ts';
import { pickSaved, type NotSaved } from './saved-history.ts';
import { OpenFailure, type FailureCode } from '../../shared/failures.ts';
import { escrowKid, fromB64, identityFromSigningKey, newIdentity, normalizeFingerprint, signLogin, toB64, toHex, type Identity } from '../../shared/crypto.ts';
import { checkEscrowPin, EscrowPinError, type PinVerdict } from './escrow-pin.ts';
import { openEnvelope, sealEnvelope, type SealPlan } from '../../shared/envelope.ts';
import { openSealedBox, sealForRecipient } from '../../shared/sealed-sender.ts';
import { readersOf, type Readers } from './readers.ts';
import { Scanner } from './scanner.ts';
import { History, KEEP_PER_CHAT } from './history.ts';
import { KeyPins, Lookups, loadDirectory, mergeDirectory, saveDirectory, type RefusedEntry } from './directory.ts';

/** The subset of the WebSocket API the core needs; browser WebSocket and `ws` both fit. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export function memoryStore(): KeyValueStore {
  const map = new Map<string, string>();
  return { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => void map.set(k, v) };
}

export type MessageState = 'sending' | 'sent' | 'delivered' | 'read' | 'failed' | 'received' | 'unreadable';

/** A group note as the messenger shows it: who made or changed the group, and how. */
export interface GroupNote {
  kind: 'group-created' | 'group-changed';
  version: number;
  added: string[];
  removed: string[];
  /** The new name, when a change renamed the group. */
  renamed?: string;
}

/** Why a message was kept out of a group and shown apart: a stable code and plain words. */
export interface MessageFlag {
  code: string;
  message: string;
}

/** One envelope of a group note that has not reached the relay yet (see ChatMessage.waiting). */
export interface NoteWaiting {
  /** The envelope's id: the note's own, or a part's. */
  env: string;
  to: string[];
  code: string;
  message: string;
  attempt: number;
  /** When it is tried next (ms since the epoch); null once given up. */
  nextAt: number | null;
}

export interface ChatMessage {
  id: string;
  /**
   * 'dm:<other PIN>', a group's conv id, or 'apart:<conv>:<sender PIN>' for a message that claims a
   * group this client does not hold it to be part of (shown apart, with `flag`).
   */
  chat: string;
  from: string;
  to: string[];
  /** The sender's timestamp, as its envelope says: shown, never used to order anything. */
  ts: number;
  /** When this device got the message (or sent it): what orders a chat and the chat list. */
  at: number;
  /** Set when the sender's timestamp was this far (ms) ahead of this device's clock on arrival. */
  clockAheadMs?: number;
  direction: 'out' | 'in';
  text: string;
  group?: string;
  /** Set on a group note (no text): the group was made or its member list changed. */
  note?: GroupNote;
  /** Set on a message shown apart from the group it claims: why. */
  flag?: MessageFlag;
  /**
   * A group note of this device's whose envelope (or one of its parts: the separate envelope to
   * each removed member) the relay refused for now: to whom, why, and when it is tried again.
   */
  waiting?: NoteWaiting[];
  /** Sent or received as sealed sender: the relay never saw who sent it (and no receipts come back). */
  sealedSender?: true;
  state: MessageState;
  /** Per recipient: who has the message on their device, and who has seen it. */
  deliveredTo: string[];
  readBy: string[];
  /** Who holds a key that opens this envelope, worked out from the envelope itself. */
  readers: Readers;
  error?: string;
  /** The stable code of why an incoming message did not open (shared/failures.ts). */
  errorCode?: FailureCode;
  /** Set on incoming messages once the user has seen them. */
  seen?: boolean;
}

export interface WireRecord {
  direction: 'out' | 'in';
  at: number;
  env: AnyEnvelope;
  bytes: number;
  /** It crossed the wire inside a sealed-sender box: the relay saw only the recipient, the size and the time. */
  sealed?: true;
}

export type MessengerEvent =
  | { type: 'status'; status: 'connecting' | 'online' | 'offline' }
  | { type: 'ready'; pin: string }
  | { type: 'directory' }
  | { type: 'policy'; policy: Policy }
  /** The person pinned (or cleared) the regulator key's fingerprint. */
  | { type: 'escrow-pin'; pinned: string | null }
  | { type: 'message'; message: ChatMessage }
  | { type: 'wire'; record: WireRecord }
  | { type: 'error'; code: string; message: string; ref?: string; retryAfterMs?: number }
  /** An incoming envelope that was not shown at all (a replay), with its stable code. */
  | { type: 'dropped'; id: string; code: FailureCode }
  /** The relay sent a directory entry this client refused (see KeyPins): the UI says so. */
  | ({ type: 'key-refused' } & RefusedEntry)
  /** What this tab could not save, or chose not to (see StorageReport): the UI says so. */
  | { type: 'storage'; report: StorageReport };

/**
 * What of this person's state the browser did not keep. `failed`: writes the storage refused
 * (it is full); `level`: how far the history had to be cut to fit (0: within its budgets, 1–3:
 * cut further for a full storage, 4: not saved at all); `notSaved`: messages on screen that the
 * budgets left out (saved-history.ts); `groupsNotSaved`: others' groups over the saved cap.
 */
export interface StorageReport {
  failed: FailedWrite[];
  level: number;
  notSaved: NotSaved[];
  groupsNotSaved: number;
}

/**
 * How a client answers the tap when the policy covers a message. Every honest client complies; a
 * bot in a lab scenario may omit the escrow field, forge it (random bytes under the right key id),
 * or redirect it (sealed to another key while naming the regulator's key id) — through this same
 * code, so what the relay and the regulator see is what a real rogue client would send.
 */
export type SealingPolicy = { escrow: 'comply' } | { escrow: 'omit' } | { escrow: 'forge' } | { escrow: 'redirect'; to: { pk: Uint8Array } };

/**
 * The seal plan for one message in the room's key model: BBM's shared app key, BES's server-held
 * key (to the server the policy names), or end to end — with escrow when the tap covers it, as the
 * sealing policy says.
 */
export function roomPlan(policy: Policy | null, sealing: SealingPolicy, covered: { pk: Uint8Array; kid: string } | null): SealPlan {
  const room = policy?.room;
  if (room?.model === 'app-key') return { model: 'app-key' };
  if (room?.model === 'server-key' && room.serverPk && room.serverKid) return { model: 'server-key', server: { pk: fromB64(room.serverPk), kid: room.serverKid } };
  return planFor(sealing, covered);
}

/** The seal plan for one message: end to end unless the tap covers it, then as the sealing policy says. */
export function planFor(sealing: SealingPolicy, covered: { pk: Uint8Array; kid: string } | null): SealPlan {
  if (!covered) return { model: 'e2e' };
  switch (sealing.escrow) {
    case 'comply':
      return { model: 'e2e-escrow', escrow: covered };
    case 'omit':
      return { model: 'e2e' };
    case 'forge':
      return { model: 'e2e-escrow', forged: { kid: covered.kid } };
    case 'redirect':
      return { model: 'e2e-escrow', escrow: { pk: sealing.to.pk, kid: covered.kid } };
    default:
      return assertNever(sealing);
  }
}

export interface MessengerOptions {
  name: string;
  /** How to answer the tap (default: comply). */
  sealing?: SealingPolicy;
  connect: () => SocketLike;
  storage?: KeyValueStore;
  identity?: Identity;
  /** Reconnect backoff: first delay and ceiling (ms); each delay is jittered by ±25%. */
  backoff?: { minMs: number; maxMs: number };
  /** Classroom mode: the class code sent with every login. */
  classCode?: ClassCode;
  /** What this client runs on, told to the relay at login for the teacher's list (a claim). */
  device?: DeviceKind;
  /** After `wake()`, how long an open-looking socket has to answer a ping before it is replaced (ms). */
  wakePingMs?: number;
  /** Keep this many wire records for the panel. */
  wireLimit?: number;
  /** Messages one chat keeps in memory (default KEEP_PER_CHAT); the oldest beyond it are dropped. */
  keepPerChat?: number;
  /**
   * The regulator key's fingerprint, pinned out of band (escrow-pin.ts): a message is not sealed to
   * any other escrow key without the person's say-so. Left out, the pin kept in the storage (if any).
   */
  pinnedEscrow?: string | null;
}

/** Where the pinned escrow fingerprint is kept (the person's own storage, like the identity). */
const ESCROW_PIN_KEY = 'backdoor-lab.escrow-pin';

/** The person accepted, for this one message, the escrow key with this fingerprint (escrow-pin.ts). */
export interface SendOptions {
  acceptEscrow?: string;
}

/**
 * A sender's clock more than this far ahead of ours is marked on its message. (One behind cannot be
 * told apart from a message that waited in the relay's queue, so only ahead is marked.)
 */
export const CLOCK_AHEAD_MS = 5 * 60_000;

interface SavedState {
  messages: ChatMessage[];
  outbox: Envelope[];
  /** What each outbox envelope encrypts, to seal it again if the policy changed in flight. */
  bodies?: [string, MessageBody][];
  seen: string[];
  /** Outbox envelopes that are parts of a group note (to a removed member), by the note's id. */
  parts?: [string, string][];
  /** PINs written to, most recent last (whose chats are saved first). */
  wroteTo?: string[];
}

const OPEN = 1;

/**
 * Login refusals after which reconnecting would only be refused again: the messenger stops and
 * says why (the page asks for the code, or says the teacher removed this person).
 */
export const LOGIN_STOPS: readonly string[] = [
  ErrorCode.BadSignature,
  ErrorCode.KeyMismatch,
  ErrorCode.ClassCodeRequired,
  ErrorCode.ClassCodeWrong,
  ErrorCode.ClassCodeLocked,
  ErrorCode.Kicked,
];

/** `start()` rejects with this when the relay refuses the login for good (a code in LOGIN_STOPS). */
export class LoginRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(`login refused: ${message}`);
  }
}
/**
 * A group note the relay refused for a full queue is sent again (the same signed envelope) after
 * 2 s, doubling up to a minute, at most NOTE_RETRIES times; the creator's screen says so meanwhile.
 */
const NOTE_RETRIES = 30;
const NOTE_RETRY_MAX_MS = 60_000;
/**
 * Acks go out at once while they are few (ACK_BURST a second); beyond that they are batched, one
 * frame per ACK_INTERVAL_MS, so a device receiving a backlog stays far under the relay's rate limit.
 */
const ACK_BURST = 10;
const ACK_INTERVAL_MS = 100;
/**
 * Read receipts are batched like acks: one `read` frame per sender, its ids merged (up to the
 * protocol's 1,000), at most READ_PER_SECOND frames a second after a burst of READ_BURST, flushed
 * every READ_INTERVAL_MS. However fast messages arrive in an open chat, acks and reads together stay
 * near 14 frames a second, under the relay's 30. At most MAX_PENDING_READS ids wait; beyond that a
 * read tick is not sent (the message itself is safe).
 */
const READ_BURST = 4;
const READ_PER_SECOND = 4;
const READ_INTERVAL_MS = 250;
const MAX_PENDING_READS = 5000;
/** Read frames sent at most when the messenger stops; the rest of the ticks are not sent. */
const READ_FRAMES_ON_STOP = 20;

export class Messenger {
  readonly identity: Identity;
  readonly name: string;
  readonly directory = new Map<string, DirectoryEntry>();
  /** The messages this tab holds, indexed per chat in arrival order (history.ts). */
  readonly history: History;
  readonly wire: WireRecord[] = [];
  policy: Policy | null = null;
  status: 'connecting' | 'online' | 'offline' = 'offline';

  private socket: SocketLike | null = null;
  private readonly listeners = new Set<(event: MessengerEvent) => void>();
  /** Envelopes sent but not yet accepted by the relay: resent after a reconnect. */
  private readonly outbox = new Map<string, Envelope>();
  private readonly bodies = new Map<string, MessageBody>();
  /** Envelopes that are parts of a group note (the note to one removed member): part id → note id. */
  private readonly parts = new Map<string, string>();
  /** Retry timers of group notes refused for now, by envelope id. */
  private readonly noteTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Ids of envelopes that arrived in sealed-sender boxes (until they are shown). */
  private readonly sealedIds = new Set<string>();
  /** The groups this client holds, each as its newest verified member list. */
  readonly groups: GroupBook;
  /** Envelope ids already received: a replay is acknowledged and dropped. */
  private readonly seen = new Set<string>();
  /** Envelopes whose sender is not in the directory yet: its entry has been asked for (`lookup`). */
  private readonly waiting: { qid: number; env: AnyEnvelope }[] = [];
  private readonly lookups = new Lookups();
  /** The key first seen for each PIN (trust on first use). */
  private readonly keyPins: KeyPins;
  /** Directory entries refused, by PIN: a key the PIN is not derived from, or another key for a known PIN. */
  readonly refusedKeys = new Map<string, RefusedEntry & { at: number }>();
  private readonly storage: SafeStore;
  /** PINs this device has sent to, most recent last: whose chats are saved first (saved-history.ts). */
  private readonly wroteTo = new Set<string>();
  private constructed = false;
  private saveLevel = 0;
  private notSaved: NotSaved[] = [];
  private groupsNotSaved = 0;
  private lastReport = '';
  private stopped = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  /** Set while a ping sent by wake() waits for its pong. */
  private wakeTimer: ReturnType<typeof setTimeout> | null = null;
  /** Reconnects made so far (after the first connection), for the tests and the page. */
  reconnects = 0;
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private pendingAcks: number[] = [];
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private ackBudget = ACK_BURST;
  private ackBudgetAt = 0;
  /** Read receipts not sent yet, by the sender they go to (see READ_BURST). */
  private readonly pendingReads = new Map<string, Set<string>>();
  private pendingReadCount = 0;
  private readTimer: ReturnType<typeof setTimeout> | null = null;
  private readBudget = READ_BURST;
  private readBudgetAt = 0;
  /** Read ticks never sent: more than MAX_PENDING_READS were waiting. */
  readsNotSent = 0;

  /** How this client answers the tap; a bot may change it between messages. */
  sealing: SealingPolicy;
  /** The pinned regulator key's fingerprint (normalized), or null. */
  private pinned: string | null = null;
  /** Messages the person sent to an escrow key that is not the pinned one: id → that key's fingerprint. */
  private readonly acceptedEscrow = new Map<string, string>();
  /** Client-side scanning: checks outgoing texts against the policy's list (`scanner.enabled = false`: a client that does not). */
  readonly scanner = new Scanner();

  constructor(private readonly options: MessengerOptions) {
    this.name = options.name;
    this.sealing = options.sealing ?? { escrow: 'comply' };
    // Every write goes through SafeStore: a full storage never throws into receiving a message.
    this.storage = new SafeStore(options.storage ?? memoryStore(), () => this.constructed && this.reportStorage());
    this.history = new History(options.keepPerChat ?? KEEP_PER_CHAT, (id) => this.outbox.has(id));
    this.identity = options.identity ?? loadOrCreateIdentity(this.storage);
    const pin = options.pinnedEscrow !== undefined ? options.pinnedEscrow : this.storage.getItem(ESCROW_PIN_KEY);
    this.pinned = pin ? normalizeFingerprint(pin) : null;
    this.groups = new GroupBook(this.storage, toB64(this.identity.signPk), (state) => this.wroteTo.has(creatorPinOf(state)));
    this.keyPins = new KeyPins(this.storage);
    for (const entry of this.keyPins.check(loadDirectory(this.storage), new Set()).accepted) this.directory.set(entry.pin, entry);
    this.restore();
    this.constructed = true;
  }

  get pin(): string {
    return this.identity.pin;
  }

  /** Envelopes sent but not yet accepted by the relay (they go again after a reconnect). */
  outboxSize(): number {
    return this.outbox.size;
  }

  /** Every message held, by id. */
  get messages(): ReadonlyMap<string, ChatMessage> {
    return this.history.messages;
  }

  on(listener: (event: MessengerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: MessengerEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  /** Resolves once logged in (the first time). */
  start(): Promise<void> {
    this.stopped = false;
    const ready = new Promise<void>((resolve, reject) => {
      const off = this.on((event) => {
        if (event.type === 'ready') {
          off();
          resolve();
        } else if (event.type === 'error' && (LOGIN_STOPS.includes(event.code) || event.code === 'kicked')) {
          off();
          reject(new LoginRefused(event.code, event.message, event.retryAfterMs));
        }
      });
    });
    this.connect();
    this.reportStorage(); // e.g. a new person's keys that a full storage could not keep
    return ready;
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    for (const timer of this.noteTimers.values()) clearTimeout(timer);
    this.noteTimers.clear();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.flushAcks();
    if (this.readTimer) clearTimeout(this.readTimer);
    this.readTimer = null;
    this.flushReads(READ_FRAMES_ON_STOP);
    this.socket?.close(1000, 'bye');
    this.socket = null;
    this.flushSave();
  }

  // -------------------------------------------------------------------------
  // Connection

  private connect(): void {
    this.setStatus('connecting');
    const socket = this.options.connect();
    this.socket = socket;
    socket.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.onFrame(ev.data);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (ev.code === CloseCode.Removed) {
        // The teacher reset the room or removed this person: coming back on its own would register
        // again behind the teacher's back. The page offers to join again.
        this.stopped = true;
        this.emit({ type: 'error', code: 'removed', message: ev.reason || 'removed from the directory' });
      }
      if (ev.code === CloseCode.Kicked) {
        // The teacher removed this person: the relay refuses the PIN until the teacher lets it back in.
        this.stopped = true;
        this.emit({ type: 'error', code: 'kicked', message: 'The teacher removed you from the room.' });
      }
      if (ev.code === CloseCode.Replaced) {
        // The same identity logged in from another tab: reconnecting would take the session
        // back, and the two tabs would replace each other for ever. This one steps aside.
        this.stopped = true;
        this.emit({ type: 'error', code: 'replaced', message: 'this identity is now logged in from another tab; this tab is disconnected' });
      }
      this.setStatus('offline');
      if (!this.stopped) this.scheduleReconnect();
    };
    socket.onerror = () => {
      // A close event follows; the reconnect is scheduled there.
    };
  }

  /**
   * The device is back (the page became visible again, the network came back): a phone that slept
   * may hold a socket that looks open but is dead, or be waiting out a long backoff. Offline, it
   * reconnects now; with an open socket, a ping must be answered within `wakePingMs`, or the socket
   * is dropped and a new one made. After the login, the relay sends what was queued meanwhile and
   * the outbox goes again (the relay answers a repeat as a duplicate; nothing is shown twice).
   */
  wake(): void {
    if (this.stopped) return;
    const socket = this.socket;
    if (!socket) {
      if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.attempt = 0;
      this.reconnects += 1;
      this.connect();
      return;
    }
    if (socket.readyState !== OPEN || this.wakeTimer) return; // still connecting, or already checking
    if (!this.send({ type: 'ping', t: Date.now() })) return;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      if (this.socket === socket && !this.stopped) this.replaceSocket(socket);
    }, this.options.wakePingMs ?? 4000);
  }

  /** Give up on a socket that does not answer, and connect again at once. */
  private replaceSocket(socket: SocketLike): void {
    socket.onclose = null;
    socket.onmessage = null;
    socket.onerror = null;
    this.socket = null;
    try {
      socket.close(1000, 'no answer after wake');
    } catch {
      // A dead socket may refuse even to close; it is dropped all the same.
    }
    this.setStatus('offline');
    this.attempt = 0;
    this.reconnects += 1;
    this.connect();
  }

  private scheduleReconnect(): void {
    const { minMs, maxMs } = this.options.backoff ?? { minMs: 250, maxMs: 5000 };
    const delay = Math.min(maxMs, minMs * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.stopped) return;
      this.reconnects += 1;
      this.connect();
    }, delay);
  }

  private setStatus(status: Messenger['status']): void {
    this.status = status;
    this.emit({ type: 'status', status });
  }

  private send(msg: ClientMessage): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(msg));
    return true;
  }

  /** Acknowledge a queued item: at once while acks are few, else in a batch (see ACK_BURST). */
  private ack(qid: number): void {
    this.pendingAcks.push(qid);
    if (this.ackTimer) return;
    if (this.spendAckBudget(false)) {
      this.flushAcks();
      return;
    }
    // A batched frame is charged too, so that batches and immediate acks together stay near ACK_BURST a second.
    this.ackTimer = setTimeout(() => {
      this.spendAckBudget(true);
      this.flushAcks();
    }, ACK_INTERVAL_MS);
  }

  /** Take one frame from the ack budget if it has one (or, with `always`, in any case, down to -1). */
  private spendAckBudget(always: boolean): boolean {
    const now = Date.now();
    this.ackBudget = Math.min(ACK_BURST, this.ackBudget + ((now - this.ackBudgetAt) / 1000) * ACK_BURST);
    this.ackBudgetAt = now;
    if (this.ackBudget < 1 && !always) return false;
    this.ackBudget = Math.max(-1, this.ackBudget - 1);
    return true;
  }

  private flushAcks(): void {
    this.ackTimer = null;
    const qids = this.pendingAcks;
    this.pendingAcks = [];
    // If the socket is gone, the relay still holds these items and sends them again; the replay is dropped by id.
    for (let i = 0; i < qids.length; i += 1000) this.send({ type: 'ack', qids: qids.slice(i, i + 1000) });
  }

  /**
   * Send waiting read receipts, one frame per sender, as far as the read budget allows (or up to
   * `force` frames whatever the budget, when stopping); what is left goes at the next interval.
   * Offline, they wait for the next login.
   */
  private flushReads(force = 0): void {
    const now = Date.now();
    this.readBudget = Math.min(READ_BURST, this.readBudget + ((now - this.readBudgetAt) / 1000) * READ_PER_SECOND);
    this.readBudgetAt = now;
    let forced = 0;
    while (this.pendingReads.size && (force ? forced < force : this.readBudget >= 1)) {
      const [to, set] = this.pendingReads.entries().next().value!;
      const ids = [...set].slice(0, 1000);
      if (!this.send({ type: 'read', to, ids })) break;
      if (force) forced += 1;
      else this.readBudget -= 1;
      for (const id of ids) set.delete(id);
      this.pendingReadCount -= ids.length;
      this.pendingReads.delete(to);
      if (set.size) this.pendingReads.set(to, set); // the rest of this sender's go after the others'
    }
    if (this.pendingReads.size && !this.readTimer && !force && this.socket) {
      this.readTimer = setTimeout(() => {
        this.readTimer = null;
        this.flushReads();
      }, READ_INTERVAL_MS);
    }
  }

  private onFrame(raw: string): void {
    const parsed = parseServerMessage(raw);
    if (!parsed.ok) {
      this.emit({ type: 'error', code: parsed.code, message: `relay sent a bad frame: ${parsed.message}` });
      return;
    }
    this.handle(parsed.value);
  }

  private handle(msg: ServerMessage): void {
    switch (msg.type) {
      case 'challenge':
        this.policy = msg.policy;
        this.send({
          type: 'hello',
          v: PROTOCOL_VERSION,
          pk: toB64(this.identity.signPk),
          name: this.name,
          sig: signLogin(msg.nonce, this.identity),
          ...(this.options.classCode ? { code: this.options.classCode } : {}),
          ...(this.options.device ? { device: this.options.device } : {}),
        });
        return;
      case 'welcome':
        this.attempt = 0;
        this.onWelcomeDirectory(msg.directory);
        this.setPolicy(msg.policy);
        this.setStatus('online');
        this.emit({ type: 'directory' });
        this.emit({ type: 'ready', pin: msg.pin });
        for (const env of this.outbox.values()) this.transmit(env);
        this.flushReads();
        return;
      case 'presence':
        this.acceptEntries(msg.users);
        this.emit({ type: 'directory' });
        this.retryWaiting();
        return;
      case 'users':
        return this.onUsers(msg.users, msg.unknown);
      case 'policy':
        this.setPolicy(msg.policy);
        return;
      case 'accepted':
        return this.onAccepted(msg.id);
      case 'envelope':
        return this.onEnvelope(msg.qid, msg.env);
      case 'sealed':
        return this.onSealed(msg.qid, msg.id, msg.box);
      case 'receipt':
        this.onReceipt(msg.id, msg.by, msg.state);
        this.ack(msg.qid);
        return;
      case 'pong':
        if (this.wakeTimer) clearTimeout(this.wakeTimer);
        this.wakeTimer = null;
        return;
      case 'error':
        return this.onError(msg.code, msg.message, msg.ref, msg.retryAfterMs);
      default:
        return assertNever(msg);
    }
  }

  /**
   * The welcome's page of the directory joins the entries kept from before (the page is bounded;
   * the relay may know many more users). The page lists online users first, so once it holds an
   * offline entry every kept entry outside it is offline. Then the entries still missing are asked
   * for: remembered contacts (for who is online now) and senders of envelopes waiting.
   */
  private onWelcomeDirectory(page: DirectoryEntry[]): void {
    this.lookups.reset();
    const inPage = new Set(page.map((e) => e.pin));
    if (page.some((e) => !e.online)) {
      for (const [pin, entry] of this.directory) if (!inPage.has(pin) && entry.online) this.directory.set(pin, { ...entry, online: false });
    }
    this.acceptEntries(page);
    const missing = [...this.contactPins(), ...this.waiting.map((w) => w.env.from)].filter((pin) => pin !== this.pin && !inPage.has(pin));
    this.lookup(missing.slice(0, 500));
  }

  /**
   * Take the relay's entries into the directory, except those the pinned keys refuse: an entry whose
   * PIN is not its key's, or another key for a PIN already known (the first key is kept). Each
   * refusal is an event the UI shows.
   */
  private acceptEntries(entries: readonly DirectoryEntry[]): void {
    const keep = this.contactPins();
    const { accepted, refused } = this.keyPins.check(entries, keep);
    mergeDirectory(this.directory, accepted, keep);
    for (const r of refused) {
      const known = this.refusedKeys.get(r.pin);
      if (known && known.offered === r.offered) continue;
      this.refusedKeys.set(r.pin, { ...r, at: Date.now() });
      this.emit({ type: 'key-refused', ...r });
    }
  }

  /** Ask the relay for the directory entries of these PINs; the answer comes as a `directory` event. */
  lookup(pins: string[]): void {
    for (const batch of this.lookups.frames(pins)) if (batch.length) this.send({ type: 'lookup', pins: batch });
  }

  private onUsers(users: DirectoryEntry[], unknown: string[]): void {
    this.lookups.answered([...users.map((u) => u.pin), ...unknown]);
    this.acceptEntries(users);
    this.emit({ type: 'directory' });
    this.retryWaiting();
    // The relay does not know these senders (removed, or never registered): their envelopes cannot
    // be checked, so they are shown as unreadable and acknowledged rather than fetched for ever.
    const gone = this.waiting.filter((w) => unknown.includes(w.env.from));
    for (const item of gone) {
      this.waiting.splice(this.waiting.indexOf(item), 1);
      this.unverifiable(item.qid, item.env);
    }
  }

  /** PINs this device has talked with (its remembered contacts): kept in the directory whatever else comes. */
  private contactPins(): Set<string> {
    const pins = this.history.participants();
    for (const w of this.waiting) pins.add(w.env.from);
    pins.delete(this.pin);
    return pins;
  }

  private setPolicy(policy: Policy): void {
    this.policy = policy;
    this.emit({ type: 'policy', policy });
  }

  // -------------------------------------------------------------------------
  // Sending

  /** PINs of contacts in the directory other than me, with their names. */
  contacts(): DirectoryEntry[] {
    return [...this.directory.values()].filter((d) => d.pin !== this.pin);
  }

  /** Send a text to one person (a dm). Groups go through createGroup and sendGroup. */
  sendText(to: string[] | string, text: string, options: SendOptions = {}): ChatMessage {
    const recipients = [...new Set(typeof to === 'string' ? [to] : to)].filter((pin) => pin !== this.pin);
    if (recipients.length !== 1) throw new Error(recipients.length ? 'a direct message goes to one person: make a group for more' : 'choose a recipient');
    this.requireKnown(recipients);
    return this.post(recipients, 'dm', { text }, undefined, undefined, options.acceptEscrow);
  }

  // -------------------------------------------------------------------------
  // The escrow key pin (escrow-pin.ts)

  /** The pinned regulator key's fingerprint, or null. */
  get pinnedEscrow(): string | null {
    return this.pinned;
  }

  /** Pin the regulator key's fingerprint (as typed: spaces, dashes and case do not matter), or clear it with null; kept in this person's storage. */
  pinEscrowKey(fingerprint: string | null): string | null {
    const pin = fingerprint === null ? null : normalizeFingerprint(fingerprint);
    if (fingerprint !== null && pin === null) throw new Error('a fingerprint is 40 hex digits (0-9, A-F), as the teacher shows it');
    this.pinned = pin;
    this.storage.trySet(ESCROW_PIN_KEY, pin ?? '');
    this.emit({ type: 'escrow-pin', pinned: pin });
    return pin;
  }

  /** What the pin says of the escrow key the policy names now (null while no escrow key is announced). */
  escrowPin(): PinVerdict | null {
    const pk = this.policy?.tap ? this.policy.escrowPk : null;
    return pk ? checkEscrowPin(this.pinned, fromB64(pk)) : null;
  }

  /** Throws EscrowPinError if a message to `to` would be sealed to an escrow key other than the pinned one (and not `accepted`). */
  private checkPin(to: string[], accepted?: string): void {
    const policy = this.policy;
    if (!policy || !this.pinned || this.sealing.escrow !== 'comply' || !policy.escrowPk || !policyCovers(policy, this.pin, to)) return;
    const verdict = checkEscrowPin(this.pinned, fromB64(policy.escrowPk));
    if (verdict.status === 'differs' && verdict.announced !== accepted) throw new EscrowPinError(verdict.announced, verdict.pinned);
  }

  /**
   * Make a group: version 1 of its member list, signed with this identity (its creator and only
   * admin), announced to every member at once with a group note.
   */
  createGroup(rawName: string, pins: string[]): { id: string; message: ChatMessage } {
    const others = [...new Set(pins)].filter((pin) => pin !== this.pin);
    if (!others.length) throw new Error('pick at least one member');
    const checked = DisplayName.safeParse(rawName);
    if (!checked.success) throw new Error(`group name: ${checked.error.issues[0]?.message ?? 'invalid'}`);
    const name = checked.data;
    this.requireKnown(others);
    this.checkPin(others);
    const state = createGroup(
      this.identity,
      name,
      others.map((pin) => this.memberOf(pin)),
    );
    this.groups.put(state);
    const note = describeNote('group-created', state, undefined);
    return { id: state.id, message: this.post(others, state.id, { text: '', group: state, note: 'group-created' }, note) };
  }

  /** Send a text to a group this client holds: to exactly its members, with its signed member list. */
  sendGroup(id: string, text: string, options: SendOptions = {}): ChatMessage {
    const state = this.groups.get(id);
    if (!state) throw new Error('this client holds no member list for that group');
    if (!state.members.some((m) => m.pin === this.pin)) throw new Error('you are no longer a member of this group');
    const to = state.members.map((m) => m.pin).filter((pin) => pin !== this.pin);
    if (!to.length) throw new Error('the group has no other members');
    this.requireKnown(to);
    return this.post(to, id, { text, group: state }, undefined, undefined, options.acceptEscrow);
  }

  /**
   * The creator adds or removes members, or renames the group: a new signed version, announced to
   * the new list's members in one envelope, and to each removed member in an envelope of its own
   * (so that a removed member learns it, and her full queue cannot hold it back from the others).
   */
  changeGroup(id: string, change: { add?: string[]; remove?: string[]; name?: string }): ChatMessage {
    const state = this.groups.get(id);
    if (!state) throw new Error('this client holds no member list for that group');
    const add = (change.add ?? []).filter((pin) => !state.members.some((m) => m.pin === pin));
    if (change.name !== undefined && !DisplayName.safeParse(change.name).success) throw new Error('group name: not a valid name');
    this.requireKnown(add);
    const next = changeGroup(state, this.identity, {
      ...(change.name !== undefined ? { name: change.name } : {}),
      add: add.map((pin) => this.memberOf(pin)),
      remove: change.remove ?? [],
    });
    const remaining = next.members.map((m) => m.pin).filter((pin) => pin !== this.pin);
    const removed = state.members.map((m) => m.pin).filter((pin) => pin !== this.pin && !remaining.includes(pin));
    if (!remaining.length) throw new Error('a group needs at least one other member');
    this.requireKnown(removed);
    this.checkPin([...remaining, ...removed]);
    this.groups.put(next);
    const body: MessageBody = { text: '', group: next, note: 'group-changed' };
    const message = this.post(remaining, id, body, describeNote('group-changed', next, state), [...remaining, ...removed]);
    for (const pin of removed) this.postPart(message, pin, body);
    return message;
  }

  /** The separate envelope of a group note to one removed member: in the outbox, not in the chat. */
  private postPart(note: ChatMessage, pin: string, body: MessageBody): void {
    const env = this.seal([pin], note.chat, body);
    this.parts.set(env.id, note.id);
    this.outbox.set(env.id, env);
    this.bodies.set(env.id, body);
    this.transmit(env);
    this.save();
  }

  private noteWrote(pins: readonly string[]): void {
    for (const pin of pins) {
      this.wroteTo.delete(pin);
      this.wroteTo.add(pin);
    }
    while (this.wroteTo.size > 2000) this.wroteTo.delete(this.wroteTo.keys().next().value!);
  }

  /** A chat saved first: a DM with someone I have written to, a group made by me or by someone I have written to. */
  private isYours(chat: string): boolean {
    if (chat.startsWith('dm:')) return this.wroteTo.has(chat.slice(3));
    if (chat.startsWith('apart:')) return false;
    const state = this.groups.get(chat);
    return state !== undefined && (state.creator === toB64(this.identity.signPk) || this.wroteTo.has(creatorPinOf(state)));
  }

  /** The chat message an envelope id stands for: its own, or the note it is a part of. */
  private messageFor(id: string): ChatMessage | undefined {
    return this.messages.get(this.parts.get(id) ?? id);
  }

  /** Set or clear (patch null) what a note says about one of its envelopes waiting. */
  private setWaiting(note: ChatMessage, env: string, patch: NoteWaiting | null): void {
    const rest = (note.waiting ?? []).filter((w) => w.env !== env);
    const waiting = patch ? [...rest, patch] : rest;
    if (!patch && rest.length === (note.waiting ?? []).length) return;
    if (waiting.length) this.update(note, { waiting });
    else {
      delete note.waiting;
      this.update(note, {});
    }
  }

  /**
   * A group note refused for a full queue: said on the creator's screen and sent again, the same
   * signed envelope, later. A note to the members that a newer list has overtaken is not sent
   * again (the newer note carries the change); a part to a removed member always is.
   */
  private retryNote(note: ChatMessage, ref: string, env: Envelope, code: string, text: string): void {
    const attempt = (note.waiting?.find((w) => w.env === ref)?.attempt ?? 0) + 1;
    const old = this.noteTimers.get(ref);
    if (old) clearTimeout(old);
    if (attempt > NOTE_RETRIES) {
      this.noteTimers.delete(ref);
      this.outbox.delete(ref);
      this.bodies.delete(ref);
      this.setWaiting(note, ref, { env: ref, to: env.to, code, message: `${text} (gave up after ${NOTE_RETRIES} tries)`, attempt: NOTE_RETRIES, nextAt: null });
      if (ref === note.id) this.update(note, { state: 'failed', error: text });
      this.save();
      return;
    }
    const delay = Math.min(NOTE_RETRY_MAX_MS, 2000 * 2 ** (attempt - 1));
    this.setWaiting(note, ref, { env: ref, to: env.to, code, message: text, attempt, nextAt: Date.now() + delay });
    this.noteTimers.set(
      ref,
      setTimeout(() => {
        this.noteTimers.delete(ref);
        const current = this.outbox.get(ref);
        if (!current || this.stopped) return;
        const held = this.groups.get(current.conv);
        const carried = this.bodies.get(ref)?.group;
        if (ref === note.id && held && typeof carried === 'object' && held.version > carried.version) {
          this.outbox.delete(ref);
          this.bodies.delete(ref);
          this.setWaiting(note, ref, null);
          this.update(note, { state: 'failed', error: `not sent: member list version ${held.version} went out since, and carries this change` });
          this.save();
          return;
        }
        this.transmit(current);
      }, delay),
    );
    this.save();
  }

  private memberOf(pin: string): GroupMember {
    return { pin, pk: this.directory.get(pin)!.pk };
  }

  private requireKnown(pins: string[]): void {
    const unknown = pins.filter((pin) => !this.directory.has(pin));
    if (unknown.length) throw new Error(`not in the directory: ${unknown.join(', ')}`);
  }

  /** `shownTo`: whom the message says it went to, when that is more than this envelope's recipients (a note's parts). */
  private post(to: string[], conv: string, body: MessageBody, note?: GroupNote, shownTo?: string[], acceptEscrow?: string): ChatMessage {
    // Client-side scanning: the plaintext is checked before it is sealed; the envelope is sealed as it would be anyway.
    const hit = this.scanner.check(this.policy?.scan, body.text);
    const env = this.seal(to, conv, body, undefined, acceptEscrow);
    if (acceptEscrow) this.acceptedEscrow.set(env.id, acceptEscrow);
    if (hit) this.scanner.hold(env.id, env.to, hit);
    const name = typeof body.group === 'object' ? body.group.name : undefined;
    const message: ChatMessage = {
      id: env.id,
      chat: chatKey(env, this.pin),
      from: this.pin,
      to: shownTo ?? env.to,
      ts: env.ts,
      at: Date.now(),
      direction: 'out',
      text: body.text,
      ...(name !== undefined ? { group: name } : {}),
      ...(note ? { note } : {}),
      state: 'sending',
      deliveredTo: [],
      readBy: [],
      readers: readersOf(env),
    };
    this.history.add(message);
    this.noteWrote(message.to);
    this.outbox.set(env.id, env);
    this.bodies.set(env.id, body);
    this.emit({ type: 'message', message });
    this.transmit(env);
    this.save();
    return message;
  }

  private seal(to: string[], conv: string, body: MessageBody, id?: string, acceptEscrow?: string): Envelope {
    const policy = this.policy;
    // Before anything is sealed: an escrow key that is not the pinned one goes no further (escrow-pin.ts).
    this.checkPin(to, acceptEscrow);
    // The key id is worked out from the key itself: a policy whose id does not match its key gets an
    // envelope the relay refuses, never a field that names one key and is sealed to another.
    const covered =
      policy && policyCovers(policy, this.pin, to) && policy.escrowPk && policy.escrowKid ? { pk: fromB64(policy.escrowPk), kid: escrowKid(fromB64(policy.escrowPk)) } : null;
    const recipients = to.map((pin) => ({ pin, signPk: fromB64(this.directory.get(pin)!.pk) }));
    return sealEnvelope({
      sender: this.identity,
      to: recipients,
      conv,
      body,
      plan: roomPlan(policy, this.sealing, covered),
      ...(id ? { fixed: { id } } : {}),
    }).env;
  }

  private transmit(env: Envelope): void {
    const json = JSON.stringify(env);
    // Sealed sender (a room mode, for direct messages, never under the tap): the whole signed
    // envelope goes in a box sealed to the recipient, and the relay sees no sender.
    const policy = this.policy;
    const recipient = env.conv === 'dm' ? this.directory.get(env.to[0] ?? '') : undefined;
    if (policy?.room.sealedSender && policy.room.model === 'e2e' && recipient && !policyCovers(policy, this.pin, env.to)) {
      const box = sealForRecipient(env, fromB64(recipient.pk));
      if (this.send({ type: 'send-sealed', id: env.id, to: recipient.pin, box })) {
        this.record({ direction: 'out', at: Date.now(), env, bytes: box.length, sealed: true });
        const message = this.messages.get(env.id);
        if (message && !message.sealedSender) this.update(message, { sealedSender: true });
      }
      return;
    }
    if (this.send({ type: 'send', env })) this.record({ direction: 'out', at: Date.now(), env, bytes: json.length });
  }

  /** A sealed-sender box: open it, and the envelope inside is received like any other (its signature names the sender). */
  private onSealed(qid: number, id: string, box: string): void {
    const opened = openSealedBox(box, id, this.identity);
    if (!opened.ok) {
      // Not for this device, or not an envelope: nothing to show, and nobody to tell (the relay knows no sender).
      this.ack(qid);
      this.emit({ type: 'dropped', id, code: OpenFailure.SealedBoxDoesNotOpen });
      return;
    }
    this.sealedIds.add(id);
    this.onEnvelope(qid, opened.value);
  }

  /**
   * Seal an envelope in flight again under the policy now in force; if that policy names an escrow
   * key other than the pinned one (and not the one the person accepted for this message), the
   * message is not sent, and says why.
   */
  private resealOrRefuse(message: ChatMessage, ref: string, env: Envelope): Envelope | null {
    try {
      return this.seal(env.to, env.conv, this.bodies.get(ref) ?? { text: message.text }, env.id, this.acceptedEscrow.get(message.id));
    } catch (err) {
      if (!(err instanceof EscrowPinError)) throw err;
      this.outbox.delete(ref);
      this.bodies.delete(ref);
      this.acceptedEscrow.delete(message.id);
      this.update(message, { state: 'failed', error: err.message });
      this.save();
      return null;
    }
  }

  private onAccepted(id: string): void {
    this.acceptedEscrow.delete(id);
    const report = this.scanner.accepted(id);
    if (report) this.send(report);
    this.outbox.delete(id);
    this.bodies.delete(id);
    const message = this.messageFor(id);
    if (message?.waiting) this.setWaiting(message, id, null);
    if (message && message.id === id && message.state === 'sending') this.update(message, { state: 'sent' });
    this.save();
  }

  private onError(code: string, text: string, ref?: string, retryAfterMs?: number): void {
    // A login refused for good: the relay closes the socket next, and coming back would only be refused again.
    if (ref === undefined && LOGIN_STOPS.includes(code) && this.status !== 'online') this.stopped = true;
    this.emit({ type: 'error', code, message: text, ...(ref === undefined ? {} : { ref }), ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
    if (!ref) return;
    const message = this.messageFor(ref);
    const env = this.outbox.get(ref);
    if (!message || !env) return;
    const part = message.id !== ref;
    if (code === ErrorCode.WrongModel) {
      // The teacher changed the room's key model while this was in flight: seal it again, once.
      const resealed = this.resealOrRefuse(message, ref, env);
      if (!resealed) return;
      if (resealed.keys.model !== env.keys.model) {
        this.outbox.set(ref, resealed);
        if (!part) this.update(message, { readers: readersOf(resealed) });
        this.transmit(resealed);
        return;
      }
    }
    if (code === ErrorCode.EscrowRequired && this.policy?.tap) {
      // The tap changed while this was in flight: seal it again under the policy now in force —
      // once: a client whose sealing policy omits the field would only be refused again.
      const resealed = this.resealOrRefuse(message, ref, env);
      if (!resealed) return;
      const kid = (e: Envelope) => (e.keys.model === 'e2e-escrow' ? e.keys.escrow.kid : null);
      if (kid(resealed) !== null && kid(resealed) !== kid(env)) {
        this.outbox.set(ref, resealed);
        if (!part) this.update(message, { readers: readersOf(resealed) });
        this.transmit(resealed);
        return;
      }
    }
    if (code === ErrorCode.RateLimited) {
      // Never sooner than 1 s: envelopes refused together retry together, and each refusal counts
      // toward the relay's flood close. Later when the relay says the envelope needs longer to fit
      // (a big fan-out waits for the output budget to refill).
      const delay = Math.min(10_000, Math.max(1000, retryAfterMs ?? 0));
      setTimeout(() => this.outbox.has(ref) && this.transmit(this.outbox.get(ref)!), delay);
      return;
    }
    if (code === ErrorCode.QueueFull && message.note) return this.retryNote(message, ref, env, code, text);
    this.scanner.forget(ref);
    this.outbox.delete(ref);
    this.bodies.delete(ref);
    if (part) {
      // One removed member's notice failed for good: the note itself went out; say so on it.
      this.setWaiting(message, ref, { env: ref, to: env.to, code, message: text, attempt: 1, nextAt: null });
      this.save();
      return;
    }
    this.update(message, { state: 'failed', error: text });
  }

  // -------------------------------------------------------------------------
  // Receiving

  private onEnvelope(qid: number, env: AnyEnvelope): void {
    if (this.seen.has(env.id)) {
      // A replay of an envelope already received: acknowledge it so the relay forgets it, show nothing.
      this.ack(qid);
      this.emit({ type: 'dropped', id: env.id, code: OpenFailure.Replay });
      return;
    }
    const sender = this.directory.get(env.from);
    if (!sender) {
      this.waiting.push({ qid, env });
      this.lookup([env.from]);
      return;
    }
    const sealed = this.sealedIds.delete(env.id);
    this.record({ direction: 'in', at: Date.now(), env, bytes: JSON.stringify(env).length, ...(sealed ? { sealed: true as const } : {}) });
    this.seen.add(env.id);
    const opened = openEnvelope(env, this.identity, fromB64(sender.pk));
    const body = opened.ok ? opened.value : null;
    let chat = chatKey(env, this.pin);
    let group: string | undefined;
    let note: GroupNote | undefined;
    let flag: MessageFlag | undefined;
    if (env.conv !== 'dm') {
      // A group message belongs in the group only if the member list this client holds (or a newer
      // one it carries, signed by the group's creator) says so; nothing else in it changes who is in.
      const verdict = body
        ? checkGroupMessage({ env, carried: body.group, senderPk: sender.pk, stored: this.groups.get(env.conv), floor: this.groups.floor(env.conv), me: this.pin, note: body.note })
        : null;
      if (verdict?.ok) {
        // A repeat of the list held (not `updated`) is described against itself: it claims no change.
        const before = verdict.updated ? this.groups.put(verdict.state) : this.groups.get(env.conv);
        this.groups.touch(env.conv);
        group = verdict.state.name;
        if (body?.note) note = describeNote(body.note, verdict.state, body.note === 'group-created' ? undefined : before);
      } else {
        chat = `apart:${env.conv}:${env.from}`;
        group = body ? groupNameOf(body) : undefined;
        flag = verdict ? { code: verdict.code, message: verdict.message } : { code: 'unreadable', message: 'the message does not open, so its group cannot be checked' };
      }
    } else if (body?.note) {
      flag = { code: 'group_note_in_dm', message: 'a group note sent as a direct message' };
    }
    const at = Date.now();
    const message: ChatMessage = {
      id: env.id,
      chat,
      from: env.from,
      to: env.to,
      ts: env.ts,
      at,
      ...(env.ts - at > CLOCK_AHEAD_MS ? { clockAheadMs: env.ts - at } : {}),
      direction: 'in',
      text: body ? body.text : '',
      ...(group !== undefined ? { group } : {}),
      ...(note ? { note } : {}),
      ...(flag ? { flag } : {}),
      state: opened.ok ? 'received' : 'unreadable',
      deliveredTo: [],
      readBy: [],
      readers: readersOf(env, true),
      ...(opened.ok ? {} : { error: opened.reason, errorCode: opened.code }),
      ...(sealed ? { sealedSender: true as const } : {}),
      seen: false,
    };
    this.history.add(message);
    this.ack(qid);
    this.emit({ type: 'message', message });
    this.save();
  }

  /** An envelope whose sender the relay does not know: shown as unreadable, acknowledged. */
  private unverifiable(qid: number, env: AnyEnvelope): void {
    this.record({ direction: 'in', at: Date.now(), env, bytes: JSON.stringify(env).length });
    this.seen.add(env.id);
    const message: ChatMessage = {
      id: env.id,
      chat: chatKey(env, this.pin),
      from: env.from,
      to: env.to,
      ts: env.ts,
      at: Date.now(),
      direction: 'in',
      text: '',
      state: 'unreadable',
      deliveredTo: [],
      readBy: [],
      readers: readersOf(env, true),
      error: `the relay does not know the sender ${env.from}: its key, and so its signature, cannot be checked`,
      errorCode: OpenFailure.UnknownSender,
      seen: false,
    };
    this.history.add(message);
    this.ack(qid);
    this.emit({ type: 'message', message });
    this.save();
  }

  private retryWaiting(): void {
    const ready = this.waiting.filter((w) => this.directory.has(w.env.from));
    if (!ready.length) return;
    for (const item of ready) this.waiting.splice(this.waiting.indexOf(item), 1);
    for (const item of ready) this.onEnvelope(item.qid, item.env);
  }

  private onReceipt(id: string, by: string, state: 'delivered' | 'read'): void {
    const message = this.messageFor(id);
    if (message?.direction !== 'out') return;
    const deliveredTo = message.deliveredTo.includes(by) ? message.deliveredTo : [...message.deliveredTo, by];
    const readBy = state === 'read' && !message.readBy.includes(by) ? [...message.readBy, by] : message.readBy;
    const all = (list: string[]) => message.to.every((pin) => list.includes(pin));
    const next: MessageState = all(readBy) ? 'read' : all(deliveredTo) ? 'delivered' : message.state === 'sending' ? 'sent' : message.state;
    this.update(message, { deliveredTo, readBy, state: next });
    this.save();
  }

  /** Tell the senders that the user has now seen these incoming messages (the R tick). */
  markRead(ids: string[]): void {
    let changed = false;
    for (const id of ids) {
      const message = this.messages.get(id);
      if (!message || !this.history.markSeen(message)) continue;
      changed = true;
      // A sealed-sender message has no read receipt: the relay keeps no sender to send it to.
      if (message.sealedSender) continue;
      if (this.pendingReadCount >= MAX_PENDING_READS) {
        this.readsNotSent += 1;
        continue;
      }
      const set = this.pendingReads.get(message.from) ?? new Set<string>();
      if (!set.has(id)) this.pendingReadCount += 1;
      set.add(id);
      this.pendingReads.set(message.from, set);
    }
    // Batched: at once while frames are few, then one per sender per interval (see READ_BURST).
    if (!this.readTimer) this.flushReads();
    if (changed) this.save();
  }

  // -------------------------------------------------------------------------
  // Views for the UI

  /**
   * Conversations, newest activity first. A group's title and members come from the member list
   * this client holds, never from its messages; a chat of messages shown apart has no members to
   * reply to.
   */
  chats(): { chat: string; title: string; members: string[]; last: ChatMessage | undefined; unread: number; kind: 'dm' | 'group' | 'apart'; held: number; dropped: number }[] {
    // One line per chat from the index: the cost is the number of chats, not of messages.
    const lines = this.history.summaries();
    for (const state of this.groups.all()) if (!this.history.hasChat(state.id)) lines.push({ chat: state.id, last: undefined, unread: 0, held: 0, dropped: 0 });
    return lines
      .map(({ chat, last, unread, held, dropped }) => {
        const common = { chat, last, unread, held, dropped };
        if (chat.startsWith('dm:')) return { ...common, title: this.nameOf(chat.slice(3)), members: [chat.slice(3)], kind: 'dm' as const };
        if (chat.startsWith('apart:')) {
          const from = chat.split(':')[2] ?? '';
          return { ...common, title: last?.group ?? 'Unknown group', members: [] as string[], kind: 'apart' as const, from };
        }
        const state = this.groups.get(chat);
        const members = state ? state.members.map((m) => m.pin).filter((p) => p !== this.pin) : [];
        return { ...common, title: state?.name ?? last?.group ?? 'Group', members, kind: 'group' as const };
      })
      .sort((a, b) => (b.last?.at ?? 0) - (a.last?.at ?? 0));
  }

  /** A chat's messages in the order they reached this device; with `limit`, the newest that many. */
  messagesIn(chat: string, limit?: number): ChatMessage[] {
    return this.history.inChat(chat, limit);
  }

  /** Mark every unseen message of a chat read (the page does this for the open chat). */
  markChatRead(chat: string): void {
    const ids = this.history.unseenIn(chat).map((m) => m.id);
    if (ids.length) this.markRead(ids);
  }

  nameOf(pin: string): string {
    if (pin === this.pin) return this.name;
    return this.directory.get(pin)?.name ?? pin;
  }

  // -------------------------------------------------------------------------
  // Internals

  private update(message: ChatMessage, patch: Partial<ChatMessage>): void {
    Object.assign(message, patch);
    this.emit({ type: 'message', message });
  }

  private record(record: WireRecord): void {
    this.wire.push(record);
    const limit = this.options.wireLimit ?? 200;
    if (this.wire.length > limit) this.wire.splice(0, this.wire.length - limit);
    this.emit({ type: 'wire', record });
  }

  private restore(): void {
    const raw = this.storage.getItem('backdoor-lab.state');
    if (!raw) return;
    try {
      const state = JSON.parse(raw) as SavedState;
      // Saved in arrival order; a state saved before arrival times were kept goes by its timestamps.
      for (const m of state.messages) this.history.add({ ...m, at: typeof m.at === 'number' ? m.at : m.ts });
      for (const env of state.outbox) this.outbox.set(env.id, env);
      for (const [id, body] of state.bodies ?? []) if (this.outbox.has(id)) this.bodies.set(id, body);
      for (const [id, note] of state.parts ?? []) this.parts.set(id, note);
      for (const id of state.seen) this.seen.add(id);
      this.noteWrote([...(state.wroteTo ?? []), ...state.messages.filter((m) => m.direction === 'out').flatMap((m) => m.to)].filter((p) => typeof p === 'string'));
    } catch {
      // A damaged saved state only costs the history on screen; the identity is kept separately.
    }
  }

  private save(): void {
    // While the storage refuses writes, try again every few seconds rather than five times a second.
    this.saveTimer ??= setTimeout(() => this.flushSave(), this.storage.failures().length ? 5000 : 200);
  }

  /**
   * Save the history within its budgets (saved-history.ts); if the storage refuses it, cut it
   * further, down to only the messages still being sent; then the groups and the directory. A
   * refused write is reported (StorageReport), never thrown.
   */
  private flushSave(): void {
    if (this.saveTimer) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const levels = [
      { scale: 1, others: true, seen: 5000 },
      { scale: 0.5, others: false, seen: 5000 },
      { scale: 0.125, others: false, seen: 1000 },
      { scale: 0, others: false, seen: 500 },
    ];
    const pinned = (id: string) => this.outbox.has(id);
    const rest = `"outbox":${JSON.stringify([...this.outbox.values()])},"bodies":${JSON.stringify([...this.bodies.entries()])},"parts":${JSON.stringify([...this.parts].slice(-500))},"wroteTo":${JSON.stringify([...this.wroteTo])}`;
    let level = 0;
    for (; level < levels.length; level++) {
      const { scale, others, seen } = levels[level]!;
      const picked = pickSaved(this.history, (chat) => this.isYours(chat), pinned, scale, others);
      const json = `{"v":2,"messages":[${picked.parts.join(',')}],${rest},"seen":${JSON.stringify([...this.seen].slice(-seen))}}`;
      if (this.storage.trySet('backdoor-lab.state', json)) {
        this.notSaved = picked.notSaved;
        break;
      }
    }
    if (level === levels.length) this.notSaved = this.history.summaries().map((c) => ({ chat: c.chat, messages: c.held, yours: this.isYours(c.chat) }));
    this.saveLevel = level;
    const groups = this.groups.serialize();
    this.groupsNotSaved = groups.notSaved;
    this.storage.trySet(GROUPS_KEY, groups.json);
    saveDirectory(this.storage, this.directory, this.contactPins());
    this.reportStorage();
  }

  /** What this person's storage did not keep (see StorageReport). */
  storageReport(): StorageReport {
    return { failed: this.storage.failures(), level: this.saveLevel, notSaved: this.notSaved, groupsNotSaved: this.groupsNotSaved };
  }

  private reportStorage(): void {
    const report = this.storageReport();
    const key = JSON.stringify(report);
    if (key === this.lastReport) return;
    this.lastReport = key;
    this.emit({ type: 'storage', report });
  }
}

/** The PIN of a group's creator (it is always on the list). */
function creatorPinOf(state: GroupState): string {
  return state.members.find((m) => m.pk === state.creator)?.pin ?? '';
}

/** The tab's identity: the Ed25519 secret key kept in the injected storage, never sent anywhere. */
export function loadOrCreateIdentity(storage: KeyValueStore): Identity {
  const saved = storage.getItem('backdoor-lab.identity');
  if (saved) {
    try {
      return identityFromSigningKey(fromB64(saved));
    } catch {
      // Unreadable key material: start over with a fresh identity rather than fail to load.
    }
  }
  const identity = newIdentity();
  storage.setItem('backdoor-lab.identity', toB64(identity.signSk));
  return identity;
}

/** Describe a group note against the list it replaced (none for a new group). */
export function describeNote(kind: 'group-created' | 'group-changed', state: GroupState, before: GroupState | undefined): GroupNote {
  const now = state.members.map((m) => m.pin);
  const was = before?.members.map((m) => m.pin) ?? [];
  return {
    kind,
    version: state.version,
    added: before ? now.filter((p) => !was.includes(p)) : now,
    removed: was.filter((p) => !now.includes(p)),
    ...(before && before.name !== state.name ? { renamed: state.name } : {}),
  };
}

/** The chat an envelope belongs to, from one participant's point of view. */
export function chatKey(env: Pick<AnyEnvelope, 'conv' | 'from' | 'to'>, me: string): string {
  if (env.conv !== 'dm') return env.conv;
  return `dm:${env.from === me ? env.to[0] : env.from}`;
}

export function newGroupId(): string {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return `g-${toHex(bytes)}`;
}
