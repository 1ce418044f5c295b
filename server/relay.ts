/**
 * The enterprise relay: logs users in by signature, keeps the public-key
 * directory, routes envelopes by PIN, fans groups out, queues for offline
 * devices and forwards receipts. It never decrypts: after login it does no
 * crypto at all, and it holds no private key of anyone's.
 *
 * Observers (the relay view, the regulator's tap) get a copy of every traffic
 * event through `observe()`, the one narrow interface out of the relay.
 */
import { randomBytes } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { FrameData, Transport } from './transport.ts';
import {
  CloseCode,
  DisplayName,
  ErrorCode,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  assertNever,
  parseClientMessage,
  policyCovers,
  type ClientMessage,
  type DeviceKind,
  type DirectoryEntry,
  Envelope,
  type Policy,
  type ScanPolicy,
  type ServerMessage,
  type TrafficEvent,
} from '../shared/protocol.ts';
import { pinOf, fromB64, verifyLogin } from '../shared/crypto.ts';
import type { QueueRow, RelayStore } from './store.ts';
import type { Logger } from './log.ts';
import { addressKey } from './addresses.ts';
import { FairCaps, MAKE_ROOM_CLOSE } from './edge-limits.ts';
import type { Classroom } from './classroom.ts';

export { addressKey };

/** How the relay treats one connection, beside its address. */
export interface ConnectionOptions {
  /** Called once, when it logs in (the app's cap on connections waiting to log in lets go of it). */
  onLogin?: () => void;
  /** The lab's own bots (in-process, in-memory sockets): never asked for the class code. */
  exempt?: boolean;
}

export interface RelayLimits {
  /** Largest frame accepted (bytes); bigger closes with 1009 (enforced by ws maxPayload). */
  maxFrameBytes: number;
  /** Token bucket per connection: burst size and refill per second. */
  rateBurst: number;
  ratePerSecond: number;
  /**
   * Bytes a connection may send in (every frame's size), beside the frame bucket: burst and refill
   * per second. A frame larger than the burst passes only when the bucket is full.
   */
  inputBurstBytes: number;
  inputBytesPerSecond: number;
  /**
   * Bytes of output a connection may make the relay send: an envelope costs its size times its
   * recipients (online or not: the queued ones go out later), a `lookup` the size of its answer.
   */
  outputBurstBytes: number;
  outputBytesPerSecond: number;
  /**
   * Frames dropped for rate (any of the three buckets) before the connection is closed as a flood.
   * The count is forgotten only once the client has been quiet long enough for all its buckets to
   * fill up again.
   */
  floodCloseAfter: number;
  /**
   * `ack` and `read` frames have their own bucket instead of the frame bucket: a device acking and
   * marking read what others flood it with must never be refused or closed as a flooder for it.
   * They are never dropped and never count toward the flood close; past this allowance (or the
   * input byte bucket) the socket is only read more slowly. Each is bounded (1,000 ids).
   */
  receiptBurst: number;
  receiptsPerSecond: number;
  /** Unsent bytes buffered for one socket before it is cut off as a slow consumer. */
  maxBufferedBytes: number;
  /**
   * The same bound for a socket that has not yet shown it reads: no real `ack` of a queued item and
   * no heartbeat answered since its login (a peer answers a ping only once it has read up to it).
   */
  unreadBufferedBytes: number;
  /**
   * Unsent bytes buffered across all relay sockets together; past it the socket with the largest
   * backlog is cut off as a slow consumer (4004), then the next largest, until it fits again.
   */
  unsentTotalBytes: number;
  /** Logged-in sessions from one network address (an IPv6 address by its /64) at once. */
  sessionsPerAddress: number;
  /**
   * Logged-in sessions from every address together, shared fairly (`FairCaps`: a full total closes
   * the oldest session of the address holding the most, with 1013, to make room for an address
   * holding less; a tenth is kept for loopback). `startApp` sets it below the server's
   * `maxConnections` once the other totals are taken out, so that sessions can never fill the
   * connection ceiling, past which Node drops every newcomer (the teacher's laptop too) unseen.
   */
  sessionsTotal: number;
  /** Logins (hello frames) from one network address: a token bucket, its burst and refill per second. */
  loginBurst: number;
  loginsPerSecond: number;
  /** Time a socket closed by the relay has to finish the closing handshake before it is terminated. */
  closeGraceMs: number;
  /** Time to answer the login challenge. */
  loginTimeoutMs: number;
  /** Interval between heartbeats; a socket that misses one is terminated. */
  heartbeatMs: number;
  /** Directory entries in a welcome (online users first, then the most recently seen); the rest by `lookup`. */
  welcomeDirectory: number;
  /** Users the directory may hold. */
  maxUsers: number;
  /** New identities (PINs never seen) accepted from one network address per rolling window. */
  registrationsPerAddress: number;
  registrationWindowMs: number;
  /**
   * When the directory is full, an offline entry not seen for this long, with nothing queued for it
   * and no envelope of its own waiting, is evicted to make room for a new one.
   */
  evictAfterMs: number;
  /** Envelopes and bytes waiting in one recipient's queue, beyond which a new one is refused. */
  queueMaxEnvelopes: number;
  queueMaxBytes: number;
  /** One sender's share of one recipient's queue (envelopes, bytes). */
  queuePairEnvelopes: number;
  queuePairBytes: number;
  /** Receipts waiting in one user's queue; beyond it a receipt is not queued (counted in stats). */
  queueMaxReceipts: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_LIMITS: RelayLimits = {
  maxFrameBytes: MAX_FRAME_BYTES,
  rateBurst: 60,
  ratePerSecond: 30,
  inputBurstBytes: MiB,
  inputBytesPerSecond: 256 * 1024,
  outputBurstBytes: 4 * MiB,
  outputBytesPerSecond: MiB,
  floodCloseAfter: 500,
  receiptBurst: 60,
  receiptsPerSecond: 30,
  maxBufferedBytes: 4 * MiB,
  unreadBufferedBytes: 512 * 1024,
  unsentTotalBytes: 128 * MiB,
  sessionsPerAddress: 200,
  sessionsTotal: Number.POSITIVE_INFINITY,
  loginBurst: 300,
  loginsPerSecond: 20,
  closeGraceMs: 1000,
  loginTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  welcomeDirectory: 500,
  maxUsers: 5000,
  registrationsPerAddress: 300,
  registrationWindowMs: 60 * 60_000,
  evictAfterMs: 10 * 60_000,
  queueMaxEnvelopes: 1000,
  queueMaxBytes: 16 * MiB,
  queuePairEnvelopes: 250,
  queuePairBytes: 4 * MiB,
  queueMaxReceipts: 10_000,
};

/**
 * Limits opened wide, for tests and the bench that drive the relay harder than any person: every
 * rate, byte and registration limit out of reach. Spread it and set back the limit under test.
 */
export const UNLIMITED: Partial<RelayLimits> = {
  rateBurst: 1e9,
  ratePerSecond: 1e9,
  receiptBurst: 1e9,
  receiptsPerSecond: 1e9,
  inputBurstBytes: 1e15,
  inputBytesPerSecond: 1e15,
  outputBurstBytes: 1e15,
  outputBytesPerSecond: 1e15,
  maxUsers: 1e9,
  registrationsPerAddress: 1e9,
  queueMaxEnvelopes: 1e9,
  queueMaxBytes: 1e15,
  queuePairEnvelopes: 1e9,
  queuePairBytes: 1e15,
  queueMaxReceipts: 1e9,
  loginBurst: 1e9,
  loginsPerSecond: 1e9,
};

/** Counters of the relay's defences at work, for /healthz, the tests and `npm run test:reliability`. */
export interface RelayStats {
  /** Frames received on logged-in or not-yet-logged-in relay sockets. */
  frames: number;
  /** Error replies sent (any code). */
  errors: number;
  /** Frames dropped for rate: by the frame bucket or by either byte bucket. */
  rateLimited: number;
  /** Of those, frames dropped by the input byte bucket, and sends or lookups refused by the output bucket. */
  inputLimited: number;
  outputLimited: number;
  /** `ack` and `read` frames past their own allowance: read more slowly, never dropped. */
  receiptsPaced: number;
  /** Bytes received in frames. */
  bytesIn: number;
  /** Output charged to senders: envelope bytes × recipients, plus lookup answers. */
  outputCharged: number;
  /** Envelopes refused with queue_full. */
  queueFull: number;
  /** Read receipts asked for again (not queued a second time), and receipts not queued for a full queue. */
  repeatedReads: number;
  receiptsDropped: number;
  /** New identities refused for the per-address limit, or because the directory was full. */
  registrationsLimited: number;
  directoryFull: number;
  /** Stale directory entries evicted to make room for new ones. */
  evictions: number;
  /** The largest welcome frame sent (bytes), and all welcome bytes charged to the connections' output budgets (not in outputCharged). */
  maxWelcomeBytes: number;
  welcomeBytes: number;
  /** Logins refused for the per-address login rate, or for the cap on sessions per address. */
  loginsLimited: number;
  sessionsLimited: number;
  /** Of the slow-consumer cuts, those made to keep all sockets' unsent bytes within unsentTotalBytes. */
  unsentTotalCuts: number;
  floodCloses: number;
  slowConsumerCuts: number;
  heartbeatTerminations: number;
  loginTimeouts: number;
  /** The largest unsent backlog (bytes) any one socket held right after a send. */
  maxBuffered: number;
}

export const POLICY_OFF: Policy = {
  tap: false,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: null,
  escrowKid: null,
  epoch: 0,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};

export type TrafficObserver = (event: TrafficEvent) => void;

/** An observer as `observerList()` shows it. */
export interface ObserverInfo {
  name: string;
  /** Attached without telling anyone (the insider tap): only whoever lists observers sees it. */
  hidden: boolean;
  /** When it was attached (ms since the epoch). */
  since: number;
  /** Envelopes (and sealed boxes) the relay has handed it since then: counted by the relay, not by the observer. */
  envelopes: number;
  /** Where it says its copy goes, as whoever attached it declared (shown on a reveal). */
  sink?: string;
}
interface ObserverEntry extends ObserverInfo {
  observer: TrafficObserver;
}

/**
 * A client-side scanning report as the relay hands it on: the author is the logged-in session
 * (never anything the frame says), the recipients and the key model those of the envelope that
 * session sent under this id.
 */
export interface ScanReport {
  at: number;
  id: string;
  from: { pin: string; name: string };
  to: { pin: string; name: string }[];
  list: string;
  entry: string;
  /** The key model of the reported envelope as the relay accepted it ('sealed' for a sealed-sender box). */
  model: Envelope['keys']['model'] | 'sealed';
}
/** Envelopes a session sent that it may still report, while scanning is on: the newest this many. */
export const SCAN_REPORTABLE_PER_SESSION = 32;

export type InPathVerdict =
  | { action: 'pass' }
  /** `read`: what the hook read of it (the enterprise server, in the server-held key model), shown to the relay's observers. */
  | { action: 'replace'; env: Envelope; read?: { text: string; group?: string } }
  | { action: 'refuse'; code: ErrorCode; message: string };
/** The frame that hands a stored sealed box (`{"sealed":true,"id","box"}`) to its recipient. */
function sealedFrame(qid: number, json: string): string {
  const { id, box } = JSON.parse(json) as { id: string; box: string };
  return JSON.stringify({ type: 'sealed', qid, id, box } satisfies ServerMessage);
}

/** Which envelope key models a room's model lets through: the tap's escrow is part of an end-to-end room. */
export function modelAllowed(room: Policy['room']['model'], model: Envelope['keys']['model']): boolean {
  if (room === 'e2e') return model === 'e2e' || model === 'e2e-escrow';
  return model === room;
}

/** See Relay.setInPath. */
export type InPathHook = (env: Envelope, sender: { pin: string; pk: string }) => InPathVerdict;

interface Session {
  socket: Transport;
  address: string;
  nonce: string;
  pin: string | null;
  name: string;
  pk: string;
  /** The three buckets: frames, bytes in, bytes of output caused (see RelayLimits). */
  tokens: number;
  receiptTokens: number;
  inBytes: number;
  outBytes: number;
  lastRefill: number;
  dropped: number;
  alive: boolean;
  loginTimer: NodeJS.Timeout | null;
  /** Counted in `pendingLogins` (from the connection until login or close). */
  pending: boolean;
  /** Not asked for the class code (the lab's bots). */
  exempt: boolean;
  /** What the client said it runs on at login (a claim), or null if it said nothing. */
  device: DeviceKind | null;
  /** Called once, at login (the app's cap on connections waiting to log in lets go of it). */
  onLogin: (() => void) | null;
  /** Counted in `sessionsByAddress` (from login until close). */
  counted: boolean;
  /** Lets go of its place in the total of sessions (`sessionCaps`), once; null when it holds none. */
  releaseTotal: (() => void) | null;
  /** Shown to read since its login (a real ack, or a heartbeat answered): the larger buffer bound applies. */
  reading: boolean;
  /** A heartbeat ping went out since the login (so a pong proves reading). */
  pinged: boolean;
  /** Unsent bytes as last seen after a send (their sum is `unsent`, an estimate kept exact when it matters). */
  buffered: number;
  /** When this user last had an envelope accepted (ms; 0 never): the welcome page's order. */
  lastSent: number;
  /** When this user registered (its directory entry's created_at): the order among online users who never sent. */
  registeredAt: number;
  /** Set while the offline queue is being sent after login: live items wait their turn in the store. */
  backlog: { rows: QueueRow[]; next: number; cursor: number; timer: NodeJS.Timeout | null } | null;
  /** While scanning is on: this session's newest accepted envelopes that it may still report (each once). */
  reportable?: Map<string, { to: string[]; model: ScanReport['model'] }>;
}

export class Relay {
  private readonly sessions = new Set<Session>();
  private readonly online = new Map<string, Session>();
  private readonly observers = new Set<TrafficObserver>();
  private readonly observerEntries = new Set<ObserverEntry>();
  private inPath: InPathHook | null = null;
  private reportSink: ((report: ScanReport) => void) | null = null;
  private readonly flushers = new Set<() => void>();
  private readonly pendingPresence = new Map<string, DirectoryEntry>();
  /** Connections not logged in yet, per remote address (the app caps them at the upgrade). */
  private readonly pending = new Map<string, number>();
  private pendingTotal = 0;
  /**
   * Token buckets of users who disconnected while theirs was not full: a login under the same
   * PIN carries on with it, so a flooder cannot reconnect to get a fresh burst and a clean record.
   */
  private readonly buckets = new Map<string, Bucket>();
  /** New identities per network address, the times of those still inside the window, oldest first. */
  private readonly registrations = new Map<string, number[]>();
  /** Logged-in sessions per network address (`addressKey`). */
  private readonly sessionsByAddress = new Map<string, number>();
  /** Logged-in sessions from every address together, shared fairly (null: no total). */
  private readonly sessionCaps: FairCaps | null;
  /** Login token buckets per network address (`addressKey`), the least recently used first. */
  private readonly loginBuckets = new Map<string, { tokens: number; at: number }>();
  /** Sum of every session's `buffered`: above the bound it is recounted exactly (see sendNow). */
  private unsent = 0;
  private presenceTimer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private policy: Policy = POLICY_OFF;
  /** The policy as the regulator and the teacher set it; `policy` is what is announced (see setEscrowOverride). */
  private requested: Omit<Policy, 'epoch'> = (({ epoch: _epoch, ...rest }) => rest)(POLICY_OFF);
  private escrowOverride: { pk: string; kid: string } | null = null;
  private closed = false;
  /** Classroom mode: the class code every login (but the lab's bots') must carry; null outside it. */
  private classroom: Classroom | null = null;
  /** PINs the teacher removed from the room: refused at login until let back in or the room is reset. */
  private readonly kicked = new Set<string>();
  /** What each user's client said it runs on at its last login (for the teacher's list). */
  private readonly devices = new Map<string, DeviceKind>();
  /**
   * Group commit: the store writes of every frame handled in one turn of the event loop share one
   * SQLite transaction, committed before anything those frames produced is sent (so nothing is
   * forwarded or acknowledged before it is stored). Under load one commit serves many messages.
   */
  private batch: [Session, string][] | null = null;
  readonly limits: RelayLimits;
  readonly stats: RelayStats = {
    frames: 0,
    errors: 0,
    rateLimited: 0,
    receiptsPaced: 0,
    inputLimited: 0,
    outputLimited: 0,
    bytesIn: 0,
    outputCharged: 0,
    queueFull: 0,
    repeatedReads: 0,
    receiptsDropped: 0,
    registrationsLimited: 0,
    directoryFull: 0,
    evictions: 0,
    maxWelcomeBytes: 0,
    welcomeBytes: 0,
    loginsLimited: 0,
    sessionsLimited: 0,
    unsentTotalCuts: 0,
    floodCloses: 0,
    slowConsumerCuts: 0,
    heartbeatTerminations: 0,
    loginTimeouts: 0,
    maxBuffered: 0,
  };

  constructor(
    private readonly store: RelayStore,
    private readonly log: Logger,
    limits: Partial<RelayLimits> = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    // No per-address cap here (sessionsPerAddress is checked apart, knowing a re-login replaces its session).
    this.sessionCaps = Number.isFinite(this.limits.sessionsTotal)
      ? new FairCaps('sessions logged in', Number.POSITIVE_INFINITY, Math.max(1, this.limits.sessionsTotal), SESSIONS_LOOPBACK_RESERVE_PERCENT)
      : null;
    this.heartbeat = setInterval(() => this.beat(), this.limits.heartbeatMs);
    this.heartbeat.unref();
    for (const pin of parseKicked(store.setting(KICKED_SETTING))) this.kicked.add(pin);
  }

  // -------------------------------------------------------------------------
  // Classroom mode and the teacher's controls

  /** Require the class code of `classroom` at every login (but the lab's bots'); null: no code, as outside classroom mode. */
  setClassroom(classroom: Classroom | null): void {
    this.classroom = classroom;
  }

  getClassroom(): Classroom | null {
    return this.classroom;
  }

  /** What a user's client said it runs on at its last login (a claim), if it said. */
  deviceOf(pin: string): DeviceKind | null {
    return this.devices.get(pin) ?? null;
  }

  isKicked(pin: string): boolean {
    return this.kicked.has(pin);
  }

  /**
   * The teacher removes a person from the room: their session is closed with 4008 ("the teacher
   * removed you from the room"), and their PIN is refused at login (4008 again) until the teacher
   * lets it back in or resets the room. Their directory entry stays, so others' chats still name
   * them. Returns how many sessions were closed, or null for a PIN the directory does not hold.
   */
  kick(pin: string): { sessions: number } | null {
    if (!this.store.getUser(pin)) return null;
    this.kicked.add(pin);
    this.store.putSetting(KICKED_SETTING, JSON.stringify([...this.kicked]));
    const session = this.online.get(pin);
    if (!session) return { sessions: 0 };
    this.log.info('removed by the teacher', { pin });
    // Its close marks the user offline and tells the others, as any logout does.
    this.closeHard(session, CloseCode.Kicked, 'the teacher removed you from the room');
    return { sessions: 1 };
  }

  /** Let a removed person back in (their next login is accepted). False if the PIN was not removed. */
  readmit(pin: string): boolean {
    if (!this.kicked.delete(pin)) return false;
    this.store.putSetting(KICKED_SETTING, JSON.stringify([...this.kicked]));
    return true;
  }

  // -------------------------------------------------------------------------
  // Observers and policy

  /**
   * Subscribe to every traffic event, under a name; returns the unsubscribe function. Every observer
   * is listed by `observerList()` — a hidden one too, marked so, for whoever may see it (the teacher;
   * the insider scenario's reveal). An observer that batches its own writes passes `flush`: the
   * relay calls it before each group commit, so whatever the observer keeps of a turn's traffic is
   * written before anything of that turn leaves the relay.
   */
  observe(name: string, observer: TrafficObserver, options: { hidden?: boolean; flush?: () => void; sink?: string } = {}): () => void {
    const entry: ObserverEntry = {
      name,
      hidden: options.hidden === true,
      since: Date.now(),
      envelopes: 0,
      observer,
      ...(options.sink !== undefined ? { sink: options.sink } : {}),
    };
    this.observerEntries.add(entry);
    this.observers.add(observer);
    const flush = options.flush;
    if (flush) this.flushers.add(flush);
    return () => {
      this.observerEntries.delete(entry);
      this.observers.delete(observer);
      if (flush) this.flushers.delete(flush);
    };
  }

  /** Every observer attached right now, hidden ones included (marked), oldest first. */
  observerList(): ObserverInfo[] {
    return [...this.observerEntries].map(({ name, hidden, since, envelopes, sink }) => ({ name, hidden, since, envelopes, ...(sink !== undefined ? { sink } : {}) }));
  }

  /**
   * Where client-side scanning reports go (the authority); null: nowhere, and report frames are
   * refused. The relay checks each report against what the session sent before handing it on.
   */
  setReportSink(sink: ((report: ScanReport) => void) | null): void {
    this.reportSink = sink;
  }

  /**
   * The in-path hook: called with every envelope the relay is about to accept, after its checks and
   * before it is stored and fanned out. It may pass it, refuse it with a code (the sender gets an
   * error naming the envelope; nothing is stored), or replace it with another envelope for the same
   * id, sender and recipients (the server-held key model re-wraps keys here). One hook at a time.
   */
  setInPath(hook: InPathHook | null): void {
    this.inPath = hook;
  }

  private emit(event: TrafficEvent): void {
    const counted = event.kind === 'envelope' || event.kind === 'sealed';
    for (const entry of this.observerEntries) {
      if (counted) entry.envelopes += 1;
      try {
        entry.observer(event);
      } catch (err) {
        // An observer's fault must never stop traffic.
        this.log.error('observer failed', { error: (err as Error).message });
      }
    }
  }

  getPolicy(): Policy {
    return this.policy;
  }

  /** Set the room's key model (the teacher's choice) and tell every client; the tap settings stay. */
  setRoom(room: Policy['room']): Policy {
    return this.setPolicy({ ...this.requested, room });
  }

  /** Set the tap policy (public parts only: the escrow public key, never its secret) and tell every client. */
  setPolicy(policy: Omit<Policy, 'epoch' | 'room'> & { room?: Policy['room'] }): Policy {
    this.requested = { ...this.requested, ...policy };
    return this.announce();
  }

  /**
   * The relay's configuration can name the escrow key it announces, in place of the one the
   * regulator handed it (the swapped-key scenario: Juniper's replaced Dual_EC constant, PGP's
   * additional decryption keys). Only the public key: the relay never holds an escrow secret. It
   * replaces the key only while the tap is on; clients get it in the same policy frame as the
   * regulator's, and only a client that pinned the regulator key's fingerprint can tell. Not a
   * frame or a route any participant can reach: the lab sets it (server/lab/lab.ts), and null puts
   * the regulator's key back. Kept in memory only: a restart undoes it.
   */
  setEscrowOverride(override: { pk: string; kid: string } | null): Policy {
    this.escrowOverride = override ? { ...override } : null;
    return this.announce();
  }

  /** The key the relay announces in place of the regulator's, or null. */
  escrowOverrideKey(): { pk: string; kid: string } | null {
    return this.escrowOverride ? { ...this.escrowOverride } : null;
  }

  /** Client-side scanning: the authority's list of hashes in the policy (null: scanning off), told to every client. */
  setScan(scan: ScanPolicy | null): Policy {
    const { scan: _scan, ...rest } = this.requested;
    this.requested = scan ? { ...rest, scan } : rest;
    return this.announce();
  }

  private announce(): Policy {
    const o = this.escrowOverride;
    const next = o && this.requested.tap && this.requested.escrowPk !== null ? { ...this.requested, escrowPk: o.pk, escrowKid: o.kid } : this.requested;
    // The epoch moves only when the policy does: setting the same policy again tells nobody anything.
    const { epoch: _epoch, ...current } = this.policy;
    if (JSON.stringify(current) === JSON.stringify(next) && this.policy.epoch > 0) return this.policy;
    this.policy = { ...next, epoch: this.policy.epoch + 1 };
    const frame = JSON.stringify({ type: 'policy', policy: this.policy } satisfies ServerMessage);
    for (const session of this.online.values()) this.sendRaw(session, frame);
    this.emit({ kind: 'policy', at: Date.now(), policy: this.policy });
    return this.policy;
  }

  /**
   * A bounded page of the directory, as the welcome carries it: online users first (so a client
   * may take an offline entry in the page to mean that every online user is in it), each part by
   * recent activity. Online: the latest senders first, then those who never sent, the earliest
   * registered first; offline: the latest senders first, then the most recently seen. However many
   * users the store holds, this stays under `limit` entries, so no number of throwaway identities
   * makes a welcome too big to receive; and identities that only log in, however many and however
   * often, fall behind everyone online who talks or who was registered before them.
   */
  directory(limit = this.limits.welcomeDirectory): DirectoryEntry[] {
    const online = [...this.online.values()].filter((s) => s.pin !== null);
    online.sort((a, b) => b.lastSent - a.lastSent || a.registeredAt - b.registeredAt);
    const page: DirectoryEntry[] = online.slice(0, limit).map((s) => ({ pin: s.pin!, name: s.name, pk: s.pk, online: true }));
    if (page.length >= limit) return page;
    // The store keeps the offline part in order (users_by_activity); online users are skipped.
    for (const u of this.store.recentUsers(limit - page.length + this.online.size)) {
      if (page.length >= limit) break;
      if (!this.online.has(u.pin)) page.push(entryOf(u, false));
    }
    return page;
  }

  /** How many users the directory holds. */
  userCount(): number {
    return this.store.userCount();
  }

  /**
   * Remove a user from the directory, with what is queued for it and its envelopes still waiting
   * for others (the teacher's "reset"; also what eviction does). An online user is disconnected
   * with 4007; if its client logs in again, that is a new registration. Returns false for an
   * unknown PIN.
   */
  removeUser(pin: string): boolean {
    this.disconnectRemoved([pin]);
    this.devices.delete(pin);
    return this.store.removeUsers([pin]) === 1;
  }

  /**
   * Forget the users who are offline and were last seen at least `notSeenForMs` ago (0: every
   * offline user), with their queues, as removeUser does. Returns how many were removed.
   */
  forgetOffline(notSeenForMs = 0): number {
    const pins = this.store.usersSeenBefore(Date.now() - notSeenForMs).filter((pin) => !this.online.has(pin));
    for (const pin of pins) {
      this.pendingPresence.delete(pin);
      this.devices.delete(pin);
    }
    return this.store.removeUsers(pins);
  }

  /**
   * The teacher's "reset the room": everyone is disconnected (4007, "the room was reset") and
   * forgotten, with every queue, stored envelope and metadata record; budgets and registration
   * counts start again. Returns how many users were forgotten.
   */
  resetRoom(): number {
    this.commitBatch();
    for (const [pin, session] of [...this.online]) {
      this.online.delete(pin);
      session.pin = null;
      this.closeHard(session, CloseCode.Removed, 'the room was reset');
      this.emit({ kind: 'logout', at: Date.now(), pin });
    }
    this.pendingPresence.clear();
    this.buckets.clear();
    this.registrations.clear();
    this.loginBuckets.clear();
    this.kicked.clear();
    this.devices.clear();
    this.store.putSetting(KICKED_SETTING, '[]');
    // A close above may have written (and opened a batch): commit it, or the store could not VACUUM the deleted rows away.
    this.commitBatch();
    const { users, wiped } = this.store.reset();
    if (!wiped) this.log.error('room reset: the write-ahead log could not be emptied; deleted rows may stay on disk until the next checkpoint');
    return users;
  }

  private disconnectRemoved(pins: readonly string[]): void {
    for (const pin of pins) {
      this.pendingPresence.delete(pin);
      const session = this.online.get(pin);
      if (!session) continue;
      this.online.delete(pin);
      session.pin = null; // its close must not touch the store again
      this.closeHard(session, CloseCode.Removed, 'removed from the directory');
      this.emit({ kind: 'logout', at: Date.now(), pin });
    }
  }

  /** The PINs logged in right now. */
  onlinePins(): string[] {
    return [...this.online.keys()];
  }

  onlineCount(): number {
    return this.online.size;
  }

  connectionCount(): number {
    return this.sessions.size;
  }

  /** Connections not logged in yet: from `address`, or in total. */
  pendingLogins(address?: string): number {
    return address === undefined ? this.pendingTotal : (this.pending.get(address) ?? 0);
  }

  private endPending(session: Session): void {
    if (!session.pending) return;
    session.pending = false;
    this.pendingTotal -= 1;
    const left = (this.pending.get(session.address) ?? 1) - 1;
    if (left > 0) this.pending.set(session.address, left);
    else this.pending.delete(session.address);
  }

  /** Logged-in sessions from `address`'s network (its `addressKey`). */
  sessionsFrom(address: string): number {
    return this.sessionsByAddress.get(addressKey(address)) ?? 0;
  }

  private uncount(session: Session): void {
    if (!session.counted) return;
    session.counted = false;
    session.releaseTotal?.();
    session.releaseTotal = null;
    const key = addressKey(session.address);
    const left = (this.sessionsByAddress.get(key) ?? 1) - 1;
    if (left > 0) this.sessionsByAddress.set(key, left);
    else this.sessionsByAddress.delete(key);
  }

  /**
   * Take a login token for `address`'s network, or answer how many seconds until one is due. A
   * refused login costs the relay no signature check: this is asked first.
   */
  private takeLogin(address: string, now: number): number {
    const { loginBurst, loginsPerSecond } = this.limits;
    const key = addressKey(address);
    const bucket = this.loginBuckets.get(key) ?? { tokens: loginBurst, at: now };
    this.loginBuckets.delete(key); // re-inserted last: the map stays in order of last use
    bucket.tokens = Math.min(loginBurst, bucket.tokens + ((now - bucket.at) / 1000) * loginsPerSecond);
    bucket.at = now;
    const wait = bucket.tokens >= 1 ? 0 : (1 - bucket.tokens) / loginsPerSecond;
    if (wait === 0) bucket.tokens -= 1;
    this.loginBuckets.set(key, bucket);
    if (this.loginBuckets.size > 10_000) this.loginBuckets.delete(this.loginBuckets.keys().next().value!);
    return wait;
  }

  /** Unsent bytes the relay holds right now for all its open sockets together (what unsentTotalBytes bounds). */
  unsentTotal(): number {
    let total = 0;
    for (const s of this.sessions) if (s.socket.readyState === 1) total += s.socket.bufferedAmount;
    return total;
  }

  /** Unsent bytes the relay holds for each open socket right now (the slow-consumer bound applies to each). */
  bufferedAmounts(): number[] {
    return [...this.sessions].map((s) => s.socket.bufferedAmount);
  }

  // -------------------------------------------------------------------------
  // Connections

  /**
   * A new connection, from a WebSocket (server/app.ts wraps it with wsTransport) or an in-memory
   * pair (bots, tests). `onLogin` is called once, when it logs in.
   */
  handleConnection(socket: Transport, address: string, options: ConnectionOptions | (() => void) = {}): void {
    const { onLogin, exempt } = typeof options === 'function' ? { onLogin: options, exempt: false } : options;
    const session: Session = {
      socket,
      address,
      nonce: randomBytes(32).toString('base64'),
      pin: null,
      name: '',
      pk: '',
      tokens: this.limits.rateBurst,
      receiptTokens: this.limits.receiptBurst,
      inBytes: this.limits.inputBurstBytes,
      outBytes: this.limits.outputBurstBytes,
      lastRefill: Date.now(),
      dropped: 0,
      alive: true,
      loginTimer: null,
      pending: true,
      exempt: exempt === true,
      device: null,
      onLogin: onLogin ?? null,
      counted: false,
      releaseTotal: null,
      reading: false,
      pinged: false,
      buffered: 0,
      lastSent: 0,
      registeredAt: 0,
      backlog: null,
    };
    this.sessions.add(session);
    this.pendingTotal += 1;
    this.pending.set(address, (this.pending.get(address) ?? 0) + 1);
    session.loginTimer = setTimeout(() => {
      if (session.pin || socket.readyState !== 1) return;
      this.stats.loginTimeouts += 1;
      socket.close(CloseCode.LoginTimeout, 'login timeout');
    }, this.limits.loginTimeoutMs);

    socket.on('pong', () => {
      session.alive = true;
      // The peer read everything sent before that ping: from now on it is a reader.
      if (session.pinged) session.reading = true;
    });
    socket.on('message', (data, isBinary) => this.onFrame(session, data, isBinary));
    socket.on('close', () => this.onClose(session));
    socket.on('error', (err) => {
      // ws reports oversize frames (1009) and protocol errors here, then closes.
      this.log.info('socket error', { pin: session.pin ?? '-', error: err.message });
    });

    this.send(session, { type: 'challenge', v: PROTOCOL_VERSION, nonce: session.nonce, policy: this.policy });
  }

  private onClose(session: Session): void {
    this.sessions.delete(session);
    this.endPending(session);
    this.unsent -= session.buffered;
    session.buffered = 0;
    this.uncount(session);
    if (session.loginTimer) clearTimeout(session.loginTimer);
    if (session.backlog?.timer) clearTimeout(session.backlog.timer);
    session.backlog = null;
    const pin = session.pin;
    if (pin && !this.bucketsFull(session)) {
      this.buckets.delete(pin);
      this.buckets.set(pin, {
        tokens: session.tokens,
        receiptTokens: session.receiptTokens,
        inBytes: session.inBytes,
        outBytes: session.outBytes,
        lastRefill: session.lastRefill,
        dropped: session.dropped,
      });
      if (this.buckets.size > 10_000) this.buckets.delete(this.buckets.keys().next().value!);
    }
    if (this.closed) return; // shutting down: the store may already be closed
    if (pin && this.online.get(pin) === session) {
      this.online.delete(pin);
      this.store.touchUser(pin, Date.now(), session.lastSent);
      this.queuePresence(pin);
      this.emit({ kind: 'logout', at: Date.now(), pin });
    }
  }

  private beat(): void {
    for (const session of this.sessions) {
      if (!session.alive) {
        // No pong since the last ping: the peer is gone (or not reading). End it without a handshake.
        this.stats.heartbeatTerminations += 1;
        session.socket.terminate();
        continue;
      }
      session.alive = false;
      if (session.pin) session.pinged = true;
      try {
        session.socket.ping();
      } catch {
        session.socket.terminate();
      }
    }
  }

  /** Stop timers and close every socket (used on shutdown). */
  close(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.commitBatch();
    try {
      // Their closes will not reach the store (it closes first): store each user's last envelope time now.
      const now = Date.now();
      for (const [pin, session] of this.online) this.store.touchUser(pin, now, session.lastSent);
    } catch (err) {
      this.log.error('could not store the last activity of online users', { error: (err as Error).message });
    }
    for (const session of this.sessions) {
      const socket = session.socket;
      socket.close(CloseCode.GoingAway, 'relay shutting down');
      // A socket paused by a rate limit cannot read its peer's answer: ws would wait 30 s for it.
      if (socket.isPaused) socket.terminate();
      else setTimeout(() => socket.terminate(), this.limits.closeGraceMs).unref();
    }
  }

  // -------------------------------------------------------------------------
  // Frames

  private refill(bucket: Bucket, now: number): void {
    const limits = this.limits;
    const seconds = (now - bucket.lastRefill) / 1000;
    bucket.tokens = Math.min(limits.rateBurst, bucket.tokens + seconds * limits.ratePerSecond);
    bucket.receiptTokens = Math.min(limits.receiptBurst, bucket.receiptTokens + seconds * limits.receiptsPerSecond);
    bucket.inBytes = Math.min(limits.inputBurstBytes, bucket.inBytes + seconds * limits.inputBytesPerSecond);
    bucket.outBytes = Math.min(limits.outputBurstBytes, bucket.outBytes + seconds * limits.outputBytesPerSecond);
    bucket.lastRefill = now;
    if (this.bucketsFull(bucket)) bucket.dropped = 0; // quiet long enough for every bucket to fill: forgiven
  }

  private bucketsFull(bucket: Bucket): boolean {
    const limits = this.limits;
    return (
      bucket.tokens >= limits.rateBurst && bucket.receiptTokens >= limits.receiptBurst && bucket.inBytes >= limits.inputBurstBytes && bucket.outBytes >= limits.outputBurstBytes
    );
  }

  /**
   * Seconds until `bucket` holds `cost` (or 0 if it does now). A cost above the burst is due once
   * the bucket is full, so a large frame or a big fan-out is slowed, never refused for ever.
   */
  private static due(tokens: number, cost: number, burst: number, perSecond: number): number {
    const need = Math.min(cost, burst);
    return tokens >= need ? 0 : (need - tokens) / perSecond;
  }

  /**
   * Charge the output a frame of this session causes (an envelope's bytes × recipients, a lookup's
   * answer) to its output bucket; false, with a rate_limited reply and reading paused, if it does
   * not fit now.
   */
  private spendOutput(session: Session, cost: number, what: string, ref?: string): boolean {
    const limits = this.limits;
    this.refill(session, Date.now());
    const wait = Relay.due(session.outBytes, cost, limits.outputBurstBytes, limits.outputBytesPerSecond);
    if (wait > 0) {
      this.stats.outputLimited += 1;
      this.limited(
        session,
        wait,
        `output limit: ${what} would make the relay send ${cost} bytes; at most ${limits.outputBytesPerSecond} bytes per second (${limits.outputBurstBytes} at once) per connection`,
        ref,
      );
      return false;
    }
    session.outBytes -= cost;
    this.stats.outputCharged += cost;
    return true;
  }

  /** A frame dropped for rate: reply (or close as a flood) and stop reading for `seconds`. */
  private limited(session: Session, seconds: number, message: string, ref?: string): void {
    this.stats.rateLimited += 1;
    session.dropped += 1;
    if (session.dropped >= this.limits.floodCloseAfter) {
      this.log.info('closing flooding connection', { pin: session.pin ?? '-' });
      this.stats.floodCloses += 1;
      this.closeHard(session, CloseCode.Flooding, 'flooding: rate limit exceeded', true);
      return;
    }
    this.error(session, ErrorCode.RateLimited, message, ref, Math.ceil(seconds * 1000));
    // Stop reading until the bucket is due: the sender's own TCP window then holds its excess, so
    // a flood costs the relay almost nothing and other users do not wait behind it.
    this.pauseFor(session, seconds);
  }

  private onFrame(session: Session, data: FrameData, isBinary: boolean): void {
    // A socket being closed (flood, slow consumer, failed login) gets no more service.
    if (session.socket.readyState !== 1) return;
    this.stats.frames += 1;
    this.openBatch();
    try {
      const limits = this.limits;
      const size = frameSize(data);
      this.stats.bytesIn += size;
      this.refill(session, Date.now());
      // An ack or a read by its head: charged to its own bucket and paced, never dropped (see
      // receiptBurst). Checked again once parsed, so a frame dressed up as one pays like any other.
      const receipt = !isBinary && isReceiptFrame(data);
      if (receipt) {
        this.paceReceipt(session, size);
      } else if (session.tokens < 1) {
        this.limited(session, (1 - session.tokens) / limits.ratePerSecond, `rate limit: at most ${limits.ratePerSecond} frames per second`, isBinary ? undefined : sendRef(data));
        return;
      }
      if (!receipt) {
        const wait = Relay.due(session.inBytes, size, limits.inputBurstBytes, limits.inputBytesPerSecond);
        if (wait > 0) {
          this.stats.inputLimited += 1;
          this.limited(
            session,
            wait,
            `rate limit: at most ${limits.inputBytesPerSecond} bytes per second (${limits.inputBurstBytes} at once)`,
            isBinary ? undefined : sendRef(data),
          );
          return;
        }
        session.tokens -= 1;
        session.inBytes -= size;
      }
      if (isBinary) {
        this.error(session, ErrorCode.BadFrame, 'binary frames are not accepted: send JSON text');
        return;
      }
      const buffer = asBuffer(data);
      // ws is told to skip its own UTF-8 check (which would close the socket with 1007 and no reason):
      // a malformed text frame gets an error reply like any other bad frame, and the socket lives on.
      if (!isUtf8(buffer)) {
        this.error(session, ErrorCode.BadFrame, 'text frame is not valid UTF-8');
        return;
      }
      const parsed = parseClientMessage(buffer.toString('utf8'));
      if (!parsed.ok) {
        this.error(session, parsed.code, parsed.message);
        return;
      }
      if (receipt && parsed.value.type !== 'ack' && parsed.value.type !== 'read') {
        // Not an ack or a read after all: it pays the frame bucket like any other frame.
        if (session.tokens < 1) {
          this.limited(session, (1 - session.tokens) / limits.ratePerSecond, `rate limit: at most ${limits.ratePerSecond} frames per second`, sendRef(data));
          return;
        }
        session.tokens -= 1;
      }
      this.dispatch(session, parsed.value);
    } catch (err) {
      // The relay never throws on input: anything unexpected is reported and the socket lives on.
      this.log.error('frame handler failed', { pin: session.pin ?? '-', error: (err as Error).message });
      this.error(session, ErrorCode.Internal, 'the relay could not process this frame');
    }
  }

  /**
   * Charge an ack or a read to its own bucket and to the input bytes. It is handled whatever they
   * hold (dropping an ack would leave its item queued, and the queue fills for everyone); past the
   * allowance, reading pauses until the buckets are due. The debt is bounded, so the pause is too.
   */
  private paceReceipt(session: Session, size: number): void {
    const limits = this.limits;
    session.receiptTokens = Math.max(-limits.receiptBurst, session.receiptTokens - 1);
    session.inBytes = Math.max(-limits.inputBurstBytes, session.inBytes - size);
    const wait = Math.max(
      session.receiptTokens < 0 ? -session.receiptTokens / limits.receiptsPerSecond : 0,
      session.inBytes < 0 ? -session.inBytes / limits.inputBytesPerSecond : 0,
    );
    if (wait > 0) {
      this.stats.receiptsPaced += 1;
      this.pauseFor(session, wait);
    }
  }

  /** Stop reading a socket for `seconds` (at most 1 s); frames already read are still handled. */
  private pauseFor(session: Session, seconds: number): void {
    const socket = session.socket;
    if (socket.isPaused || socket.readyState !== 1) return;
    socket.pause();
    setTimeout(
      () => {
        if (socket.readyState === 1) socket.resume();
      },
      Math.min(1000, Math.max(1, Math.ceil(seconds * 1000))),
    ).unref();
  }

  /**
   * Close with a code and a reason, and end the socket for good if the peer does not finish the
   * closing handshake within `closeGraceMs`. With `stopReading` (a flooder), nothing more is read
   * from it at all, so its queued frames cost nothing; it then cannot finish the handshake and is
   * terminated when the grace ends. A socket still read from (a slow consumer) ends as soon as its
   * peer has read up to the close frame and answered it.
   */
  private closeHard(session: Session, code: number, reason: string, stopReading = false): void {
    this.commitBatch(); // what was sent before the close goes out before it
    const socket = session.socket;
    socket.close(code, reason);
    if (stopReading) socket.pause();
    setTimeout(() => socket.terminate(), this.limits.closeGraceMs).unref();
  }

  private dispatch(session: Session, msg: ClientMessage): void {
    if (msg.type === 'hello') return this.onHello(session, msg);
    if (msg.type === 'ping') return this.send(session, { type: 'pong', t: msg.t });
    if (!session.pin) return this.error(session, ErrorCode.NotLoggedIn, `log in before sending "${msg.type}"`);
    switch (msg.type) {
      case 'send':
        return this.onSend(session, session.pin, msg.env);
      case 'ack':
        return this.onAck(session.pin, msg.qids);
      case 'read':
        return this.onRead(session, session.pin, msg.to, msg.ids);
      case 'lookup':
        return this.onLookup(session, msg.pins);
      case 'send-sealed':
        return this.onSendSealed(session, session.pin, msg);
      case 'report':
        return this.onReport(session, session.pin, msg);
      default:
        return assertNever(msg);
    }
  }

  private onHello(session: Session, msg: Extract<ClientMessage, { type: 'hello' }>): void {
    if (session.pin) return this.error(session, ErrorCode.AlreadyLoggedIn, 'this connection is already logged in');
    if (session.nonce === '') return this.error(session, ErrorCode.BadSignature, 'the challenge was already used');
    const nonce = session.nonce;
    session.nonce = ''; // one attempt per challenge: a signature cannot be tried twice
    const wait = this.takeLogin(session.address, Date.now());
    if (wait > 0) {
      // Login churn: each login costs a signature check, a store write and a welcome page.
      const { loginsPerSecond, loginBurst } = this.limits;
      this.stats.loginsLimited += 1;
      this.logOnce(`login rate ${addressKey(session.address)}`, 'logins refused: login rate', { address: session.address });
      this.error(
        session,
        ErrorCode.RateLimited,
        `too many logins from ${addressKey(session.address)}: at most ${loginsPerSecond} a second (${loginBurst} at once); try again in ${Math.ceil(wait)} s`,
        undefined,
        Math.ceil(wait * 1000),
      );
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: rate_limited');
      return;
    }
    if (this.classroom && !session.exempt) {
      // Before the signature, the directory and the registration budget: a wrong or missing code
      // costs the relay no crypto and registers nothing. The code itself is never logged.
      const verdict = this.classroom.check(msg.code, session.address);
      if (!verdict.ok) {
        this.emit({
          kind: 'rejected',
          at: Date.now(),
          pin: '-',
          code: verdict.code,
          message:
            verdict.code === ErrorCode.ClassCodeRequired ? 'no class code' : verdict.code === ErrorCode.ClassCodeWrong ? 'wrong class code' : 'locked out for wrong class codes',
        });
        this.logOnce(`class code ${addressKey(session.address)}`, 'login refused: class code', { reason: verdict.code, address: session.address });
        this.error(session, verdict.code, verdict.message, undefined, verdict.retryAfterMs === undefined ? undefined : Math.ceil(verdict.retryAfterMs));
        this.closeHard(session, CloseCode.LoginFailed, `login failed: ${verdict.code}`);
        return;
      }
    }
    if (!verifyLogin(nonce, msg.pk, msg.sig)) {
      this.emit({ kind: 'rejected', at: Date.now(), pin: '-', code: ErrorCode.BadSignature, message: 'login signature invalid' });
      this.log.info('login refused', { reason: 'bad signature', address: session.address });
      this.error(session, ErrorCode.BadSignature, 'login signature does not verify for this challenge and key');
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: bad signature');
      return;
    }
    const pin = pinOf(fromB64(msg.pk));
    if (this.kicked.has(pin)) {
      // Removed by the teacher: said with the same close code, so the client stops; a client that
      // tries again anyway counts toward its address's lockout for wrong class codes.
      this.classroom?.strike(session.address);
      this.logOnce(`kicked ${pin}`, 'login refused: removed by the teacher', { pin, address: session.address });
      this.error(session, ErrorCode.Kicked, 'the teacher removed you from the room; ask the teacher to let you back in');
      this.closeHard(session, CloseCode.Kicked, 'the teacher removed you from the room');
      return;
    }
    const existing = this.store.getUser(pin);
    if (existing && existing.pk !== msg.pk) {
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.KeyMismatch, message: 'PIN registered to another key' });
      this.log.info('login refused', { reason: 'PIN registered to another key', pin, address: session.address });
      this.error(session, ErrorCode.KeyMismatch, `PIN ${pin} is registered to another key`);
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: PIN registered to another key');
      return;
    }
    const key = addressKey(session.address);
    const replaced = this.online.get(pin);
    const replacing = replaced?.counted && addressKey(replaced.address) === key ? 1 : 0;
    if ((this.sessionsByAddress.get(key) ?? 0) - replacing >= this.limits.sessionsPerAddress) {
      this.stats.sessionsLimited += 1;
      this.logOnce(`sessions ${key}`, 'logins refused: too many sessions from one address', { address: session.address });
      this.error(
        session,
        ErrorCode.RateLimited,
        `too many sessions logged in from ${key} (${this.limits.sessionsPerAddress} at most); close a tab or a bot somewhere and try again`,
      );
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: too many sessions from your address');
      return;
    }
    const now = Date.now();
    if (!existing) {
      const refusal = this.admit(session.address, now);
      if (refusal) {
        this.emit({ kind: 'rejected', at: now, pin, code: refusal.code, message: refusal.message });
        this.log.info('login refused', { reason: refusal.code, pin, address: session.address });
        this.error(session, refusal.code, refusal.message);
        this.closeHard(session, CloseCode.LoginFailed, `login failed: ${refusal.code}`);
        return;
      }
    }
    // The total of sessions: a login that replaces this identity's session takes no more places;
    // any other may make room by closing the oldest session of the address holding the most.
    if (this.sessionCaps && !replaced?.counted) {
      const full = this.sessionCaps.admit(session.address);
      if (full) {
        this.stats.sessionsLimited += 1;
        this.logOnce(`sessions total ${key}`, 'logins refused: too many sessions on this relay', { address: session.address });
        this.error(session, ErrorCode.RateLimited, full.reason);
        this.closeHard(session, CloseCode.LoginFailed, 'login failed: too many sessions on this relay');
        return;
      }
    }
    this.store.upsertUser(pin, msg.pk, msg.name, now);
    const previous = this.online.get(pin);
    if (previous) {
      previous.pin = null; // its close must not mark the user offline
      this.commitBatch();
      previous.socket.close(CloseCode.Replaced, 'logged in elsewhere');
    }
    if (session.loginTimer) clearTimeout(session.loginTimer);
    const saved = this.buckets.get(pin);
    if (saved) {
      this.buckets.delete(pin);
      // Bring both this connection's buckets and the saved ones up to now, then keep the lower of each.
      this.refill(session, now);
      this.refill(saved, now);
      session.tokens = Math.min(session.tokens, saved.tokens);
      session.receiptTokens = Math.min(session.receiptTokens, saved.receiptTokens);
      session.inBytes = Math.min(session.inBytes, saved.inBytes);
      session.outBytes = Math.min(session.outBytes, saved.outBytes);
      session.dropped = Math.max(session.dropped, saved.dropped);
    }
    this.endPending(session);
    session.onLogin?.();
    session.onLogin = null;
    session.counted = true;
    this.sessionsByAddress.set(key, (this.sessionsByAddress.get(key) ?? 0) + 1);
    session.releaseTotal =
      this.sessionCaps?.add(session.address, () => {
        this.logOnce('sessions made room', 'sessions: full, so the oldest of the address holding the most was closed to make room', { pin, address: session.address });
        this.closeHard(session, MAKE_ROOM_CLOSE, 'the relay is full: this address holds the most sessions, so its oldest was closed to make room');
      }) ?? null;
    // (A session this one replaces has not stored its time yet: it is stored at logout.)
    session.lastSent = Math.max(existing?.last_sent ?? 0, replaced?.lastSent ?? 0);
    session.registeredAt = existing?.created_at ?? now;
    session.pin = pin;
    session.name = msg.name;
    session.pk = msg.pk;
    session.device = msg.device ?? null;
    if (msg.device) this.devices.set(pin, msg.device);
    else this.devices.delete(pin);
    this.online.set(pin, session);
    this.log.info('login', { pin, name: msg.name });
    const welcome = JSON.stringify({
      type: 'welcome',
      pin,
      name: msg.name,
      directory: this.directory(),
      total: this.store.userCount(),
      policy: this.policy,
    } satisfies ServerMessage);
    if (welcome.length > this.stats.maxWelcomeBytes) this.stats.maxWelcomeBytes = welcome.length;
    // The welcome is output this login caused: charged like any (it may leave the bucket in debt,
    // which the next envelopes wait out), and kept with the PIN between its connections.
    session.outBytes -= welcome.length;
    this.stats.welcomeBytes += welcome.length; // (counted apart from outputCharged, which is envelopes and lookups)
    this.sendRaw(session, welcome);
    session.backlog = { rows: this.store.pendingFor(pin), next: 0, cursor: 0, timer: null };
    this.pumpBacklog(session);
    this.queuePresence(pin);
    this.emit({ kind: 'login', at: now, pin, name: msg.name, address: session.address });
  }

  private onSend(session: Session, pin: string, offered: Envelope): void {
    let env = offered;
    let serverRead: { text: string; group?: string } | undefined;
    if (env.from !== pin) {
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.Impersonation, message: `claimed to be ${env.from}` });
      this.log.info('impersonation refused', { pin, claimed: env.from });
      return this.error(session, ErrorCode.Impersonation, `you are logged in as ${pin}, not ${env.from}`, env.id);
    }
    const seenBy = this.store.seenSender(env.id);
    if (seenBy !== undefined) {
      if (seenBy === pin) return this.send(session, { type: 'accepted', id: env.id, duplicate: true });
      return this.error(session, ErrorCode.BadFrame, 'envelope id already used', env.id);
    }
    const unknown = env.to.filter((to) => !this.store.getUser(to));
    if (unknown.length) return this.error(session, ErrorCode.UnknownRecipient, `no user with PIN ${unknown.join(', ')}`, env.id);
    if (!modelAllowed(this.policy.room.model, env.keys.model)) {
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.WrongModel, message: `${env.keys.model} in a ${this.policy.room.model} room` });
      return this.error(
        session,
        ErrorCode.WrongModel,
        `this room uses the key model ${this.policy.room.model}: seal it again as the policy says (this envelope is ${env.keys.model})`,
        env.id,
      );
    }
    if (offered.delivery !== undefined) return this.error(session, ErrorCode.BadFrame, 'delivery wraps are added by the enterprise server, never sent by a client', env.id);
    const escrowKid = env.keys.model === 'e2e-escrow' ? env.keys.escrow.kid : null;
    if (policyCovers(this.policy, env.from, env.to) && escrowKid !== this.policy.escrowKid) {
      // The relay can see the field is present and well formed; it cannot see whether it opens.
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.EscrowRequired, message: 'no escrow field under the tap' });
      return this.error(session, ErrorCode.EscrowRequired, `the tap is on: add an escrow field for key ${this.policy.escrowKid}`, env.id);
    }
    if (this.inPath) {
      const verdict = this.runInPath(env, session);
      if (verdict.action === 'refuse') {
        this.emit({ kind: 'rejected', at: Date.now(), pin, code: verdict.code, message: verdict.message });
        return this.error(session, verdict.code, verdict.message, env.id);
      }
      if (verdict.action === 'replace') {
        env = verdict.env;
        serverRead = verdict.read;
      }
    }
    const json = JSON.stringify(env); // serialized once, fanned out as is
    const full = this.queueRefusal(pin, env.to, json.length);
    if (full) {
      this.stats.queueFull += 1;
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.QueueFull, message: full });
      return this.error(session, ErrorCode.QueueFull, full, env.id);
    }
    if (!this.spendOutput(session, json.length * env.to.length, `this envelope (${json.length} bytes to ${env.to.length} recipients)`, env.id)) return;
    // Recipients should learn the sender's key before its first envelope: flush a pending presence first.
    if (this.pendingPresence.has(pin)) this.flushPresence(pin);

    const now = Date.now();
    const qids = this.store.acceptEnvelope({ id: env.id, from: env.from, to: env.to, conv: env.conv, escrow: escrowKid !== null }, json, now);
    session.lastSent = now; // (a sealed box never counts: the relay notes no sender for it)
    this.noteReportable(session, env.id, env.to, env.keys.model);
    this.send(session, { type: 'accepted', id: env.id, duplicate: false });
    const online: string[] = [];
    for (const [to, qid] of qids) {
      const target = this.online.get(to);
      if (!target || target.backlog) continue; // offline, or still receiving its queue: it gets this in turn
      online.push(to);
      this.sendRaw(target, `{"type":"envelope","qid":${qid},"env":${json}}`);
    }
    if (this.observers.size) {
      const names: Record<string, string> = {};
      for (const p of [env.from, ...env.to]) {
        const user = this.store.getUser(p);
        if (user) names[p] = entryOf(user, false).name;
      }
      this.emit({
        kind: 'envelope',
        at: now,
        env,
        bytes: json.length,
        online,
        senderPk: session.pk,
        names,
        ...(serverRead ? { serverRead: { text: serverRead.text, group: serverRead.group ?? null } } : {}),
      });
    }
  }

  /** The in-path hook, held to its contract: it never throws into the relay, and a replacement keeps the routing and parses. */
  private runInPath(env: Envelope, session: Session): InPathVerdict {
    try {
      const verdict = this.inPath!(env, { pin: session.pin ?? '', pk: session.pk });
      if (verdict.action !== 'replace') return verdict;
      const parsed = Envelope.safeParse(verdict.env);
      const same = parsed.success && parsed.data.id === env.id && parsed.data.from === env.from && parsed.data.to.join() === env.to.join() && parsed.data.conv === env.conv;
      if (same) return { action: 'replace', env: parsed.data, ...(verdict.read ? { read: verdict.read } : {}) };
      this.log.error('in-path hook returned an envelope with other routing or an invalid one', { pin: session.pin ?? '-' });
    } catch (err) {
      this.log.error('in-path hook failed', { pin: session.pin ?? '-', error: (err as Error).message });
    }
    return { action: 'refuse', code: ErrorCode.Internal, message: 'the relay could not process this envelope' };
  }

  /**
   * Sealed sender: a box the relay cannot open, for one recipient. The relay stores, queues and
   * forwards it, and records it without a sender — in the metadata log, the queue and what it hands
   * its observers. (It arrives on the sender's logged-in connection, so a relay that wanted to could
   * note who sent it; this one does not, and the lesson says so.) No delivered receipt can follow:
   * the relay does not know whom to tell. Under the tap it is refused: the relay cannot see an
   * escrow field inside the box.
   */
  private onSendSealed(session: Session, pin: string, msg: Extract<ClientMessage, { type: 'send-sealed' }>): void {
    if (!this.policy.room.sealedSender) return this.error(session, ErrorCode.WrongModel, 'sealed sender is off in this room', msg.id);
    if (policyCovers(this.policy, pin, [msg.to]))
      return this.error(session, ErrorCode.EscrowRequired, 'the tap is on: a sealed box hides the escrow field from the relay, so send the envelope unsealed', msg.id);
    if (msg.to === pin) return this.error(session, ErrorCode.BadFrame, 'to must not be yourself', msg.id);
    if (this.store.seenSender(msg.id) !== undefined) return this.send(session, { type: 'accepted', id: msg.id, duplicate: true });
    if (!this.store.getUser(msg.to)) return this.error(session, ErrorCode.UnknownRecipient, `no user with PIN ${msg.to}`, msg.id);
    const json = JSON.stringify({ sealed: true, id: msg.id, box: msg.box });
    const full = this.queueRefusal('', [msg.to], json.length);
    if (full) return this.error(session, ErrorCode.QueueFull, full, msg.id);
    if (!this.spendOutput(session, json.length, `this sealed box (${json.length} bytes)`, msg.id)) return;
    const now = Date.now();
    const qids = this.store.acceptEnvelope({ id: msg.id, from: '', to: [msg.to], conv: '', escrow: false }, json, now);
    // (Kept on the session only, and only while scanning is on: a report names its author anyway.)
    this.noteReportable(session, msg.id, [msg.to], 'sealed');
    this.send(session, { type: 'accepted', id: msg.id, duplicate: false });
    const target = this.online.get(msg.to);
    const live = Boolean(target && !target.backlog);
    if (target && live) this.sendRaw(target, sealedFrame(qids.get(msg.to)!, json));
    this.emit({ kind: 'sealed', at: now, id: msg.id, to: msg.to, bytes: json.length, online: live });
  }

  /** While scanning is on, remember that this session sent `id` (the newest SCAN_REPORTABLE_PER_SESSION only). */
  private noteReportable(session: Session, id: string, to: string[], model: ScanReport['model']): void {
    if (!this.policy.scan) {
      delete session.reportable;
      return;
    }
    session.reportable ??= new Map();
    const reportable = session.reportable;
    reportable.set(id, { to: [...to], model });
    while (reportable.size > SCAN_REPORTABLE_PER_SESSION) reportable.delete(reportable.keys().next().value!);
  }

  /**
   * A client-side scanning report. Taken only while scanning is on, for the list in force and one
   * of its entries, and for an envelope this very session sent (among its newest) to exactly these
   * recipients — once: so a participant cannot report someone else's message, nor report more
   * often than it sends. The author is the session's user, whatever the frame might claim.
   */
  private onReport(session: Session, pin: string, msg: Extract<ClientMessage, { type: 'report' }>): void {
    const scan = this.policy.scan;
    const refuse = (why: string) => this.error(session, ErrorCode.ReportRefused, `report for ${msg.id} not taken: ${why}`, msg.id);
    if (!scan || !this.reportSink) return refuse('scanning is off');
    if (msg.list !== scan.list) return refuse(`list ${msg.list} is not the list in force (${scan.list})`);
    if (!scan.entries.includes(msg.entry)) return refuse('that hash is not on the list');
    const sent = session.reportable?.get(msg.id);
    if (!sent) return refuse('not an envelope this connection sent while scanning was on, or reported already');
    if ([...sent.to].sort().join() !== [...msg.to].sort().join()) return refuse('the recipients are not those of the envelope');
    session.reportable!.delete(msg.id);
    const nameOf = (p: string) => {
      const user = this.store.getUser(p);
      return user ? entryOf(user, false).name : p;
    };
    const report: ScanReport = {
      at: Date.now(),
      id: msg.id,
      from: { pin, name: session.name },
      to: sent.to.map((p) => ({ pin: p, name: nameOf(p) })),
      list: scan.list,
      entry: msg.entry,
      model: sent.model,
    };
    try {
      this.reportSink(report);
    } catch (err) {
      this.log.error('scan report sink failed', { error: (err as Error).message });
    }
  }

  private onAck(pin: string, qids: number[]): void {
    const now = Date.now();
    const rows = this.store.ack(pin, qids);
    // A real ack (of an item sent to it) shows the device reads: the larger buffer bound applies.
    const session = rows.length ? this.online.get(pin) : undefined;
    if (session) session.reading = true;
    for (const row of rows) {
      if (row.kind === 'envelope' && row.sender) this.receipt(row.sender, row.ref, pin, 'delivered', now);
    }
  }

  /**
   * All or nothing: the first recipient whose queue (or this sender's share of it) cannot take
   * `bytes` more, as the error message to send; null when every recipient's can.
   */
  private queueRefusal(sender: string, to: readonly string[], bytes: number): string | null {
    const limits = this.limits;
    const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
    for (const pin of to) {
      const load = this.store.queueLoad(pin);
      if (load.envelopes + 1 > limits.queueMaxEnvelopes || load.envelopeBytes + bytes > limits.queueMaxBytes) {
        return `the queue of ${pin} is full (${load.envelopes} envelopes, ${mib(load.envelopeBytes)} waiting; at most ${limits.queueMaxEnvelopes} or ${mib(limits.queueMaxBytes)}): not accepted for anyone; send it again once ${pin} has read some`;
      }
      const pair = this.store.pairLoad(sender, pin);
      if (pair.envelopes + 1 > limits.queuePairEnvelopes || pair.bytes + bytes > limits.queuePairBytes) {
        return `you have ${pair.envelopes} envelopes (${mib(pair.bytes)}) waiting for ${pin}, your share of its queue (at most ${limits.queuePairEnvelopes} or ${mib(limits.queuePairBytes)}): not accepted for anyone; send it again once ${pin} has read some`;
      }
    }
    return null;
  }

  /**
   * May a new identity register from `address` now? Checks the per-address window, then room in
   * the directory, evicting stale entries if it is full. Records the registration when allowed.
   */
  private admit(address: string, now: number): { code: ErrorCode; message: string } | null {
    const limits = this.limits;
    const key = addressKey(address);
    const since = now - limits.registrationWindowMs;
    const times = (this.registrations.get(key) ?? []).filter((t) => t > since);
    if (times.length >= limits.registrationsPerAddress) {
      this.stats.registrationsLimited += 1;
      const minutes = Math.max(1, Math.ceil((times[0]! - since) / 60_000));
      return {
        code: ErrorCode.RegistrationLimited,
        message: `too many new identities from ${key}: at most ${limits.registrationsPerAddress} per ${Math.round(limits.registrationWindowMs / 60_000)} minutes; log in with an identity you already have, or try again in ${minutes} min`,
      };
    }
    const excess = this.store.userCount() - limits.maxUsers + 1;
    if (excess > 0) {
      const stale = this.store
        .staleUsers(now - limits.evictAfterMs, excess + this.online.size)
        .filter((pin) => !this.online.has(pin))
        .slice(0, excess);
      if (stale.length < excess) {
        this.stats.directoryFull += 1;
        return {
          code: ErrorCode.DirectoryFull,
          message: `the directory is full (${this.store.userCount()} users, at most ${limits.maxUsers}) and no entry is stale enough to make room; log in with an identity you already have`,
        };
      }
      for (const pin of stale) this.pendingPresence.delete(pin);
      this.stats.evictions += this.store.removeUsers(stale);
      this.log.info('evicted stale directory entries', { count: stale.length });
    }
    times.push(now);
    this.registrations.delete(key); // re-inserted last: the map is kept in order of last registration
    this.registrations.set(key, times);
    if (this.registrations.size > 10_000) this.registrations.delete(this.registrations.keys().next().value!);
    return null;
  }

  private onLookup(session: Session, pins: string[]): void {
    const users: DirectoryEntry[] = [];
    const unknown: string[] = [];
    for (const pin of new Set(pins)) {
      const u = this.store.getUser(pin);
      if (u) users.push(entryOf(u, this.online.has(u.pin)));
      else unknown.push(pin);
    }
    const frame = JSON.stringify({ type: 'users', users, unknown } satisfies ServerMessage);
    if (this.spendOutput(session, frame.length, `this lookup`)) this.sendRaw(session, frame);
  }

  private onRead(session: Session, pin: string, to: string, ids: string[]): void {
    const now = Date.now();
    const bad: string[] = [];
    for (const id of new Set(ids)) {
      const meta = this.store.envelopeMetadata(id);
      if (!meta || meta.sender !== to || !meta.recipients.split(',').includes(pin)) {
        bad.push(id);
        continue;
      }
      // Once per message and reader: a read frame sent again must not fill the sender's queue.
      if (this.store.readReceiptSent(id, pin)) {
        this.stats.repeatedReads += 1;
        continue;
      }
      this.receipt(to, id, pin, 'read', now);
    }
    // One error for the whole frame, never one per id: a 1000-id frame must not fan out into 1000 replies.
    if (bad.length) this.error(session, ErrorCode.BadFrame, `${bad.length === 1 ? 'no message' : `${bad.length} ids name no message`} ${bad[0]} from ${to} to you`, bad[0]);
  }

  private receipt(sender: string, id: string, by: string, state: 'delivered' | 'read', at: number): void {
    if (!this.store.getUser(sender)) return; // the sender was removed: nobody to queue it for
    if (this.store.queueLoad(sender).receipts >= this.limits.queueMaxReceipts) {
      // A tick lost is better than a queue without bound; the message itself is safe.
      this.stats.receiptsDropped += 1;
      return;
    }
    const payload = JSON.stringify({ id, by, state, at });
    const qid = this.store.enqueueReceipt(sender, id, payload, state, by, at);
    const target = this.online.get(sender);
    if (target && !target.backlog) this.deliverQueued(target, qid, 'receipt', id, payload);
    this.emit({ kind: 'receipt', at, id, by, to: sender, state });
  }

  private deliverQueued(session: Session, qid: number, kind: 'envelope' | 'receipt', ref: string, payload: string): void {
    if (kind === 'receipt') {
      this.sendRaw(session, `{"type":"receipt","qid":${qid},${payload.slice(1)}`);
      return;
    }
    const json = this.store.envelopeJson(ref);
    if (!json) return;
    this.sendRaw(session, json.startsWith('{"sealed":true') ? sealedFrame(qid, json) : `{"type":"envelope","qid":${qid},"env":${json}}`);
  }

  /**
   * Send a freshly logged-in device its offline queue, oldest first, without ever holding more
   * than half the slow-consumer bound for it: a device coming back to a big queue is paced by
   * how fast it reads, instead of being cut off as a slow consumer and coming back for ever.
   * Items queued meanwhile are picked up here in qid order, so none is sent twice on one socket.
   */
  private pumpBacklog(session: Session): void {
    this.commitBatch(); // paced by the socket's real backlog, so nothing may wait in the batch
    const backlog = session.backlog;
    if (!backlog) return;
    backlog.timer = null;
    const socket = session.socket;
    const pin = session.pin;
    if (this.closed || socket.readyState !== 1 || !pin || this.online.get(pin) !== session) {
      session.backlog = null;
      return;
    }
    // Half the lower bound, whether or not the device has shown it reads: a device catching up
    // never holds more unsent than a socket that never reads may, so the cut on all sockets'
    // unsent bytes (largest backlog first) reaches the sockets that do not read before it.
    const soft = Math.min(this.limits.unreadBufferedBytes, this.limits.maxBufferedBytes) / 2;
    for (;;) {
      if (backlog.next >= backlog.rows.length) {
        backlog.rows = this.store.pendingFor(pin).filter((row) => row.qid > backlog.cursor);
        backlog.next = 0;
        if (!backlog.rows.length) {
          session.backlog = null; // caught up: from now on items go out live
          return;
        }
      }
      if (socket.bufferedAmount >= soft) {
        backlog.timer = setTimeout(() => this.pumpBacklog(session), 10);
        return;
      }
      const row = backlog.rows[backlog.next++]!;
      backlog.cursor = row.qid;
      this.deliverQueued(session, row.qid, row.kind, row.ref, row.payload);
    }
  }

  // -------------------------------------------------------------------------
  // Presence, batched so a class logging in at once costs one frame per tick, not one per user.

  private queuePresence(pin: string): void {
    const user = this.store.getUser(pin);
    if (!user) return;
    this.pendingPresence.set(pin, entryOf(user, this.online.has(pin)));
    this.presenceTimer ??= setTimeout(() => this.flushPresence(), 50);
  }

  /**
   * Send at most PRESENCE_BATCH pending entries (`first` among them, if given) and leave the rest for
   * the next tick, so a burst of registrations becomes a stream of small frames, never one huge one.
   */
  private flushPresence(first?: string): void {
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    if (!this.pendingPresence.size) return;
    const pins = [...this.pendingPresence.keys()];
    if (first !== undefined && this.pendingPresence.has(first)) pins.unshift(first);
    const users: DirectoryEntry[] = [];
    for (const pin of pins) {
      const entry = this.pendingPresence.get(pin);
      if (!entry) continue;
      this.pendingPresence.delete(pin);
      users.push({ ...entry, online: this.online.has(pin) });
      if (users.length >= PRESENCE_BATCH) break;
    }
    const frame = JSON.stringify({ type: 'presence', users } satisfies ServerMessage);
    for (const session of this.online.values()) this.sendRaw(session, frame);
    if (this.pendingPresence.size) this.presenceTimer = setTimeout(() => this.flushPresence(), 50);
  }

  // -------------------------------------------------------------------------
  // Output

  private send(session: Session, msg: ServerMessage): void {
    this.sendRaw(session, JSON.stringify(msg));
  }

  private openBatch(): void {
    if (this.batch || this.closed || this.store.db.inTransaction) return;
    this.store.db.exec('BEGIN');
    this.batch = [];
    setImmediate(() => this.commitBatch());
  }

  private commitBatch(): void {
    const out = this.batch;
    if (!out) return;
    this.batch = null;
    for (const flush of this.flushers) {
      try {
        flush();
      } catch (err) {
        this.log.error('observer flush failed', { error: (err as Error).message });
      }
    }
    try {
      this.store.db.exec('COMMIT');
    } catch (err) {
      // Nothing of this turn was stored: send none of it. The senders' devices resend on reconnect.
      this.log.error('store commit failed', { error: (err as Error).message });
      if (this.store.db.inTransaction) this.store.db.exec('ROLLBACK');
      this.store.clearCaches();
      for (const [session] of out) if (session.socket.readyState === 1) session.socket.close(1011, 'relay storage error');
      return;
    }
    // Each socket's frames of this turn leave in one write: its TCP socket stays corked until all
    // are queued (ws uncorks after each frame, but corks nest). Fewer writes is most of the saving
    // the bench's cost ladder shows for corking (docs/performance.md).
    const corked = new Set<Transport>();
    for (const [session, frame] of out) {
      if (!corked.has(session.socket)) {
        session.socket.cork();
        corked.add(session.socket);
      }
      this.sendNow(session, frame);
    }
    for (const socket of corked) socket.uncork();
  }

  private sendRaw(session: Session, frame: string): void {
    if (this.batch) this.batch.push([session, frame]);
    else this.sendNow(session, frame);
  }

  /** The unsent bytes one socket may hold: less until it has shown that it reads (see `reading`). */
  private bufferBound(session: Session): number {
    const { maxBufferedBytes, unreadBufferedBytes } = this.limits;
    return session.reading ? maxBufferedBytes : Math.min(unreadBufferedBytes, maxBufferedBytes);
  }

  private sendNow(session: Session, frame: string): void {
    const socket = session.socket;
    if (socket.readyState !== 1) return;
    if (socket.bufferedAmount + frame.length > this.bufferBound(session)) {
      // A device that does not read would make the relay hold its traffic in memory without bound.
      // Its queued items stay in the store and are delivered when it reconnects.
      this.log.info('cutting off slow consumer', { pin: session.pin ?? '-', buffered: socket.bufferedAmount, reading: session.reading });
      this.stats.slowConsumerCuts += 1;
      this.closeHard(session, CloseCode.SlowConsumer, 'slow consumer: too much unread data');
      return;
    }
    socket.send(frame);
    const buffered = socket.bufferedAmount;
    if (buffered > this.stats.maxBuffered) this.stats.maxBuffered = buffered;
    this.unsent += buffered - session.buffered;
    session.buffered = buffered;
    if (this.unsent > this.limits.unsentTotalBytes) this.holdUnsentTotal();
  }

  private holdingUnsent = false;

  /**
   * All sockets together seem to hold more than unsentTotalBytes unsent (each as last seen after a
   * send, so the sum only overestimates): recount exactly, and while it is still over, cut the
   * socket with the largest backlog first. Honest devices that read hold next to nothing here; the
   * largest backlog is a device that does not read, whichever identity or address it uses.
   */
  private holdUnsentTotal(): void {
    if (this.holdingUnsent) return;
    this.holdingUnsent = true;
    try {
      let total = 0;
      for (const s of this.sessions) {
        s.buffered = s.socket.readyState === 1 ? s.socket.bufferedAmount : 0;
        total += s.buffered;
      }
      this.unsent = total;
      while (this.unsent > this.limits.unsentTotalBytes) {
        let largest: Session | null = null;
        for (const s of this.sessions) if (s.socket.readyState === 1 && s.buffered > 0 && (!largest || s.buffered > largest.buffered)) largest = s;
        if (!largest) break;
        this.log.info('cutting off slow consumer: unsent total', { pin: largest.pin ?? '-', buffered: largest.buffered, total: this.unsent });
        this.stats.slowConsumerCuts += 1;
        this.stats.unsentTotalCuts += 1;
        this.unsent -= largest.buffered;
        largest.buffered = 0;
        this.closeHard(largest, CloseCode.SlowConsumer, 'slow consumer: the relay holds too much unread data in all, and yours was the most');
      }
    } finally {
      this.holdingUnsent = false;
    }
  }

  private readonly logged = new Map<string, number>();

  /** Log a line at most once every 10 s per key: a flood of refusals must not flood the teacher's terminal. */
  private logOnce(key: string, message: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    const last = this.logged.get(key);
    if (last !== undefined && now - last < 10_000) return;
    this.logged.delete(key);
    this.logged.set(key, now);
    if (this.logged.size > 1000) this.logged.delete(this.logged.keys().next().value!);
    this.log.info(message, fields);
  }

  private error(session: Session, code: ErrorCode, message: string, ref?: string, retryAfterMs?: number): void {
    this.stats.errors += 1;
    this.send(session, {
      type: 'error',
      code,
      message,
      ...(ref === undefined ? {} : { ref }),
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }
}

/**
 * A stored user as a directory entry. A name stored under older, looser rules that the protocol's
 * DisplayName now refuses would make every frame carrying it unparseable for every client (one bad
 * entry in a welcome would lock everyone out), so such a name is sent as the PIN instead.
 */
function entryOf(u: { pin: string; name: string; pk: string }, online: boolean): DirectoryEntry {
  const name = DisplayName.safeParse(u.name);
  return { pin: u.pin, name: name.success ? name.data : u.pin, pk: u.pk, online };
}

/** Directory entries in one presence frame; more wait for the next tick (50 ms later). */
/** The store setting that keeps the PINs the teacher removed (a JSON array), across restarts. */
const KICKED_SETTING = 'room.kicked';
/** The share of the total of sessions kept for loopback (the teacher's laptop), as for the edge's totals. */
const SESSIONS_LOOPBACK_RESERVE_PERCENT = 10;

function parseKicked(value: string | undefined): string[] {
  if (value === undefined) return [];
  try {
    const list: unknown = JSON.parse(value);
    return Array.isArray(list) ? list.filter((pin): pin is string => typeof pin === 'string' && /^[0-9A-F]{8}$/.test(pin)) : [];
  } catch {
    return [];
  }
}

const PRESENCE_BATCH = 200;

/** A connection's buckets, also kept for a PIN between its connections (see Relay.buckets). */
interface Bucket {
  tokens: number;
  receiptTokens: number;
  inBytes: number;
  outBytes: number;
  lastRefill: number;
  dropped: number;
}

function frameSize(data: FrameData): number {
  if (typeof data === 'string') return Buffer.byteLength(data);
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0);
  return data.byteLength;
}

function asBuffer(data: FrameData): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** True when a text frame starts as an `ack` or a `read` does ({"type":"ack" …), read from its head without parsing. */
function isReceiptFrame(data: FrameData): boolean {
  return /^\s*\{\s*"type"\s*:\s*"(ack|read)"/.test(asBuffer(data).subarray(0, 40).toString('latin1'));
}

/**
 * The envelope id of a rate-limited `send`, read from the head of the raw frame without parsing
 * it (parsing is what the limit saves), so the client can retry exactly that envelope.
 */
function sendRef(data: FrameData): string | undefined {
  const head = asBuffer(data).subarray(0, 200).toString('latin1');
  if (!head.includes('"send"')) return undefined;
  return /"id"\s*:\s*"([0-9a-f]{32})"/.exec(head)?.[1];
}
