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
import { Socket } from 'node:net';
import type { WebSocket, RawData } from 'ws';
import {
  CloseCode,
  ErrorCode,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  assertNever,
  parseClientMessage,
  policyCovers,
  type ClientMessage,
  type DirectoryEntry,
  type Envelope,
  type Policy,
  type ServerMessage,
  type TrafficEvent,
} from '../shared/protocol.ts';
import { pinOf, fromB64, verifyLogin } from '../shared/crypto.ts';
import type { QueueRow, RelayStore } from './store.ts';
import type { Logger } from './log.ts';

export interface RelayLimits {
  /** Largest frame accepted (bytes); bigger closes with 1009 (enforced by ws maxPayload). */
  maxFrameBytes: number;
  /** Token bucket per connection: burst size and refill per second. */
  rateBurst: number;
  ratePerSecond: number;
  /**
   * Frames dropped for rate before the connection is closed as a flood. The count is forgotten
   * only once the client has been quiet long enough for its bucket to fill up again.
   */
  floodCloseAfter: number;
  /** Unsent bytes buffered for one socket before it is cut off as a slow consumer. */
  maxBufferedBytes: number;
  /** Time to answer the login challenge. */
  loginTimeoutMs: number;
  /** Interval between heartbeats; a socket that misses one is terminated. */
  heartbeatMs: number;
}

export const DEFAULT_LIMITS: RelayLimits = {
  maxFrameBytes: MAX_FRAME_BYTES,
  rateBurst: 60,
  ratePerSecond: 30,
  floodCloseAfter: 500,
  maxBufferedBytes: 4 * 1024 * 1024,
  loginTimeoutMs: 10_000,
  heartbeatMs: 30_000,
};

/** Counters of the relay's defences at work, for /healthz, the tests and `npm run test:reliability`. */
export interface RelayStats {
  /** Frames received on logged-in or not-yet-logged-in relay sockets. */
  frames: number;
  /** Error replies sent (any code). */
  errors: number;
  /** Frames dropped by the token bucket. */
  rateLimited: number;
  floodCloses: number;
  slowConsumerCuts: number;
  heartbeatTerminations: number;
  loginTimeouts: number;
  /** The largest unsent backlog (bytes) any one socket held right after a send. */
  maxBuffered: number;
}

export const POLICY_OFF: Policy = { tap: false, scope: 'all', pins: [], announced: true, escrowPk: null, escrowKid: null, epoch: 0 };

export type TrafficObserver = (event: TrafficEvent) => void;

interface Session {
  socket: WebSocket;
  address: string;
  nonce: string;
  pin: string | null;
  name: string;
  pk: string;
  tokens: number;
  lastRefill: number;
  dropped: number;
  alive: boolean;
  loginTimer: NodeJS.Timeout | null;
  /** Counted in `pendingLogins` (from the connection until login or close). */
  pending: boolean;
  /** Set while the offline queue is being sent after login: live items wait their turn in the store. */
  backlog: { rows: QueueRow[]; next: number; cursor: number; timer: NodeJS.Timeout | null } | null;
}

export class Relay {
  private readonly sessions = new Set<Session>();
  private readonly online = new Map<string, Session>();
  private readonly observers = new Set<TrafficObserver>();
  private readonly flushers = new Set<() => void>();
  private readonly pendingPresence = new Map<string, DirectoryEntry>();
  /** Connections not logged in yet, per remote address (the app caps them at the upgrade). */
  private readonly pending = new Map<string, number>();
  private pendingTotal = 0;
  /**
   * Token buckets of users who disconnected while theirs was not full: a login under the same
   * PIN carries on with it, so a flooder cannot reconnect to get a fresh burst and a clean record.
   */
  private readonly buckets = new Map<string, { tokens: number; lastRefill: number; dropped: number }>();
  private presenceTimer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private policy: Policy = POLICY_OFF;
  private closed = false;
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
    this.heartbeat = setInterval(() => this.beat(), this.limits.heartbeatMs);
    this.heartbeat.unref();
  }

  // -------------------------------------------------------------------------
  // Observers and policy

  /**
   * Subscribe to every traffic event; returns the unsubscribe function. An observer that batches
   * its own writes passes `flush`: the relay calls it before each group commit, so whatever the
   * observer keeps of a turn's traffic is written before anything of that turn leaves the relay.
   */
  observe(observer: TrafficObserver, flush?: () => void): () => void {
    this.observers.add(observer);
    if (flush) this.flushers.add(flush);
    return () => {
      this.observers.delete(observer);
      if (flush) this.flushers.delete(flush);
    };
  }

  private emit(event: TrafficEvent): void {
    for (const observer of this.observers) {
      try {
        observer(event);
      } catch (err) {
        // An observer's fault must never stop traffic.
        this.log.error('observer failed', { error: (err as Error).message });
      }
    }
  }

  getPolicy(): Policy {
    return this.policy;
  }

  /** Set the tap policy (public parts only: the escrow public key, never its secret) and tell every client. */
  setPolicy(policy: Omit<Policy, 'epoch'>): Policy {
    this.policy = { ...policy, epoch: this.policy.epoch + 1 };
    const frame = JSON.stringify({ type: 'policy', policy: this.policy } satisfies ServerMessage);
    for (const session of this.online.values()) this.sendRaw(session, frame);
    this.emit({ kind: 'policy', at: Date.now(), policy: this.policy });
    return this.policy;
  }

  directory(): DirectoryEntry[] {
    return this.store.allUsers().map((u) => ({ pin: u.pin, name: u.name, pk: u.pk, online: this.online.has(u.pin) }));
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

  /** Unsent bytes the relay holds for each open socket right now (the slow-consumer bound applies to each). */
  bufferedAmounts(): number[] {
    return [...this.sessions].map((s) => s.socket.bufferedAmount);
  }

  // -------------------------------------------------------------------------
  // Connections

  handleConnection(socket: WebSocket, address: string): void {
    const session: Session = {
      socket,
      address,
      nonce: randomBytes(32).toString('base64'),
      pin: null,
      name: '',
      pk: '',
      tokens: this.limits.rateBurst,
      lastRefill: Date.now(),
      dropped: 0,
      alive: true,
      loginTimer: null,
      pending: true,
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
    if (session.loginTimer) clearTimeout(session.loginTimer);
    if (session.backlog?.timer) clearTimeout(session.backlog.timer);
    session.backlog = null;
    const pin = session.pin;
    if (pin && session.tokens < this.limits.rateBurst) {
      this.buckets.delete(pin);
      this.buckets.set(pin, { tokens: session.tokens, lastRefill: session.lastRefill, dropped: session.dropped });
      if (this.buckets.size > 10_000) this.buckets.delete(this.buckets.keys().next().value!);
    }
    if (this.closed) return; // shutting down: the store may already be closed
    if (pin && this.online.get(pin) === session) {
      this.online.delete(pin);
      this.store.touchUser(pin, Date.now());
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
    for (const session of this.sessions) session.socket.close(CloseCode.GoingAway, 'relay shutting down');
  }

  // -------------------------------------------------------------------------
  // Frames

  private refill(session: Session, now: number): void {
    session.tokens = Math.min(this.limits.rateBurst, session.tokens + ((now - session.lastRefill) / 1000) * this.limits.ratePerSecond);
    session.lastRefill = now;
    if (session.tokens >= this.limits.rateBurst) session.dropped = 0; // quiet for a whole burst: forgiven
  }

  private takeToken(session: Session): boolean {
    this.refill(session, Date.now());
    if (session.tokens < 1) return false;
    session.tokens -= 1;
    return true;
  }

  private onFrame(session: Session, data: RawData, isBinary: boolean): void {
    // A socket being closed (flood, slow consumer, failed login) gets no more service.
    if (session.socket.readyState !== 1) return;
    this.stats.frames += 1;
    this.openBatch();
    try {
      if (!this.takeToken(session)) {
        this.stats.rateLimited += 1;
        session.dropped += 1;
        if (session.dropped >= this.limits.floodCloseAfter) {
          this.log.info('closing flooding connection', { pin: session.pin ?? '-' });
          this.stats.floodCloses += 1;
          this.closeHard(session, CloseCode.Flooding, 'flooding: rate limit exceeded', true);
        } else {
          this.error(session, ErrorCode.RateLimited, `rate limit: at most ${this.limits.ratePerSecond} frames per second`, isBinary ? undefined : sendRef(data));
          // Stop reading until the bucket has a token again: the sender's own TCP window then holds
          // its excess, so a flood costs the relay almost nothing and other users do not wait behind it.
          this.pauseFor(session, (1 - session.tokens) / this.limits.ratePerSecond);
        }
        return;
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
      this.dispatch(session, parsed.value);
    } catch (err) {
      // The relay never throws on input: anything unexpected is reported and the socket lives on.
      this.log.error('frame handler failed', { pin: session.pin ?? '-', error: (err as Error).message });
      this.error(session, ErrorCode.Internal, 'the relay could not process this frame');
    }
  }

  /** Stop reading a socket for `seconds` (at most 1 s); frames already read are still handled. */
  private pauseFor(session: Session, seconds: number): void {
    const socket = session.socket;
    if (socket.isPaused || socket.readyState !== 1) return;
    socket.pause();
    setTimeout(() => {
      if (socket.readyState === 1) socket.resume();
    }, Math.min(1000, Math.max(1, Math.ceil(seconds * 1000)))).unref();
  }

  /**
   * Close with a code and a reason, and end the socket for good if the peer does not finish the
   * closing handshake within a second. With `stopReading`, nothing more is read from it at all:
   * a flooder's queued frames are never processed and a slow consumer's buffer is dropped.
   */
  private closeHard(session: Session, code: number, reason: string, stopReading = false): void {
    this.commitBatch(); // what was sent before the close goes out before it
    const socket = session.socket;
    socket.close(code, reason);
    if (stopReading) socket.pause();
    setTimeout(() => socket.terminate(), 1000).unref();
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
      default:
        return assertNever(msg);
    }
  }

  private onHello(session: Session, msg: Extract<ClientMessage, { type: 'hello' }>): void {
    if (session.pin) return this.error(session, ErrorCode.AlreadyLoggedIn, 'this connection is already logged in');
    if (session.nonce === '') return this.error(session, ErrorCode.BadSignature, 'the challenge was already used');
    const nonce = session.nonce;
    session.nonce = ''; // one attempt per challenge: a signature cannot be tried twice
    if (!verifyLogin(nonce, msg.pk, msg.sig)) {
      this.emit({ kind: 'rejected', at: Date.now(), pin: '-', code: ErrorCode.BadSignature, message: 'login signature invalid' });
      this.log.info('login refused', { reason: 'bad signature', address: session.address });
      this.error(session, ErrorCode.BadSignature, 'login signature does not verify for this challenge and key');
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: bad signature');
      return;
    }
    const pin = pinOf(fromB64(msg.pk));
    const existing = this.store.getUser(pin);
    if (existing && existing.pk !== msg.pk) {
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.KeyMismatch, message: 'PIN registered to another key' });
      this.log.info('login refused', { reason: 'PIN registered to another key', pin, address: session.address });
      this.error(session, ErrorCode.KeyMismatch, `PIN ${pin} is registered to another key`);
      this.closeHard(session, CloseCode.LoginFailed, 'login failed: PIN registered to another key');
      return;
    }
    const now = Date.now();
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
      this.refill(session, now); // bring this connection's bucket up to now, then keep the lower of the two
      const refilled = saved.tokens + ((now - saved.lastRefill) / 1000) * this.limits.ratePerSecond;
      if (refilled < this.limits.rateBurst) {
        session.tokens = Math.min(session.tokens, refilled);
        session.dropped = Math.max(session.dropped, saved.dropped);
      }
    }
    this.endPending(session);
    session.pin = pin;
    session.name = msg.name;
    session.pk = msg.pk;
    this.online.set(pin, session);
    this.log.info('login', { pin, name: msg.name });
    this.send(session, { type: 'welcome', pin, name: msg.name, directory: this.directory(), policy: this.policy });
    session.backlog = { rows: this.store.pendingFor(pin), next: 0, cursor: 0, timer: null };
    this.pumpBacklog(session);
    this.queuePresence(pin);
    this.emit({ kind: 'login', at: now, pin, name: msg.name, address: session.address });
  }

  private onSend(session: Session, pin: string, env: Envelope): void {
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
    // Recipients must learn the sender's key before its first envelope: flush a pending presence first.
    if (this.pendingPresence.has(pin)) this.flushPresence();
    if (policyCovers(this.policy, env.from, env.to) && env.escrow?.kid !== this.policy.escrowKid) {
      // The relay can see the field is present and well formed; it cannot see whether it opens.
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.EscrowRequired, message: 'no escrow field under the tap' });
      return this.error(session, ErrorCode.EscrowRequired, `the tap is on: add an escrow field for key ${this.policy.escrowKid}`, env.id);
    }

    const json = JSON.stringify(env); // serialized once, fanned out as is
    const now = Date.now();
    const qids = this.store.acceptEnvelope(env, json, now);
    this.send(session, { type: 'accepted', id: env.id, duplicate: false });
    const online: string[] = [];
    for (const [to, qid] of qids) {
      const target = this.online.get(to);
      if (!target || target.backlog) continue; // offline, or still receiving its queue: it gets this in turn
      online.push(to);
      this.sendRaw(target, `{"type":"envelope","qid":${qid},"env":${json}}`);
    }
    this.emit({ kind: 'envelope', at: now, env, bytes: json.length, online, senderPk: session.pk });
  }

  private onAck(pin: string, qids: number[]): void {
    const now = Date.now();
    for (const row of this.store.ack(pin, qids)) {
      if (row.kind === 'envelope' && row.sender) this.receipt(row.sender, row.ref, pin, 'delivered', now);
    }
  }

  private onRead(session: Session, pin: string, to: string, ids: string[]): void {
    const now = Date.now();
    const bad: string[] = [];
    for (const id of ids) {
      const meta = this.store.envelopeMetadata(id);
      if (!meta || meta.sender !== to || !meta.recipients.split(',').includes(pin)) {
        bad.push(id);
        continue;
      }
      this.receipt(to, id, pin, 'read', now);
    }
    // One error for the whole frame, never one per id: a 1000-id frame must not fan out into 1000 replies.
    if (bad.length) this.error(session, ErrorCode.BadFrame, `${bad.length === 1 ? 'no message' : `${bad.length} ids name no message`} ${bad[0]} from ${to} to you`, bad[0]);
  }

  private receipt(sender: string, id: string, by: string, state: 'delivered' | 'read', at: number): void {
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
    if (json) this.sendRaw(session, `{"type":"envelope","qid":${qid},"env":${json}}`);
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
    const soft = this.limits.maxBufferedBytes / 2;
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
    this.pendingPresence.set(pin, { pin, name: user.name, pk: user.pk, online: this.online.has(pin) });
    this.presenceTimer ??= setTimeout(() => this.flushPresence(), 50);
  }

  private flushPresence(): void {
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    if (!this.pendingPresence.size) return;
    const users = [...this.pendingPresence.values()].map((u) => ({ ...u, online: this.online.has(u.pin) }));
    this.pendingPresence.clear();
    const frame = JSON.stringify({ type: 'presence', users } satisfies ServerMessage);
    for (const session of this.online.values()) this.sendRaw(session, frame);
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
    const corked: Socket[] = [];
    for (const [session, frame] of out) {
      const tcp = tcpOf(session.socket);
      if (tcp && !tcp.writableCorked) {
        tcp.cork();
        corked.push(tcp);
      }
      this.sendNow(session, frame);
    }
    for (const tcp of corked) tcp.uncork();
  }

  private sendRaw(session: Session, frame: string): void {
    if (this.batch) this.batch.push([session, frame]);
    else this.sendNow(session, frame);
  }

  private sendNow(session: Session, frame: string): void {
    const socket = session.socket;
    if (socket.readyState !== 1) return;
    if (socket.bufferedAmount + frame.length > this.limits.maxBufferedBytes) {
      // A device that does not read would make the relay hold its traffic in memory without bound.
      // Its queued items stay in the store and are delivered when it reconnects.
      this.log.info('cutting off slow consumer', { pin: session.pin ?? '-', buffered: socket.bufferedAmount });
      this.stats.slowConsumerCuts += 1;
      this.closeHard(session, CloseCode.SlowConsumer, 'slow consumer: too much unread data', true);
      return;
    }
    socket.send(frame);
    if (socket.bufferedAmount > this.stats.maxBuffered) this.stats.maxBuffered = socket.bufferedAmount;
  }

  private error(session: Session, code: ErrorCode, message: string, ref?: string): void {
    this.stats.errors += 1;
    this.send(session, ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref });
  }
}

/** The TCP socket under a ws WebSocket (ws keeps it in `_socket`; not part of its typed API). */
function tcpOf(socket: WebSocket): Socket | undefined {
  const tcp = (socket as unknown as { _socket?: unknown })._socket;
  return tcp instanceof Socket ? tcp : undefined;
}

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/**
 * The envelope id of a rate-limited `send`, read from the head of the raw frame without parsing
 * it (parsing is what the limit saves), so the client can retry exactly that envelope.
 */
function sendRef(data: RawData): string | undefined {
  const head = asBuffer(data).subarray(0, 200).toString('latin1');
  if (!head.includes('"send"')) return undefined;
  return /"id"\s*:\s*"([0-9a-f]{32})"/.exec(head)?.[1];
}
