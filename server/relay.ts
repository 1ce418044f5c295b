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
import type { RelayStore } from './store.ts';
import type { Logger } from './log.ts';

export interface RelayLimits {
  /** Largest frame accepted (bytes); bigger closes with 1009 (enforced by ws maxPayload). */
  maxFrameBytes: number;
  /** Token bucket per connection: burst size and refill per second. */
  rateBurst: number;
  ratePerSecond: number;
  /** Frames dropped for rate in a row before the connection is closed as a flood. */
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
}

export class Relay {
  private readonly sessions = new Set<Session>();
  private readonly online = new Map<string, Session>();
  private readonly observers = new Set<TrafficObserver>();
  private readonly pendingPresence = new Map<string, DirectoryEntry>();
  private presenceTimer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private policy: Policy = POLICY_OFF;
  private closed = false;
  readonly limits: RelayLimits;

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

  /** Subscribe to every traffic event; returns the unsubscribe function. */
  observe(observer: TrafficObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
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
    };
    this.sessions.add(session);
    session.loginTimer = setTimeout(() => {
      if (!session.pin) socket.close(CloseCode.LoginTimeout, 'login timeout');
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
    if (session.loginTimer) clearTimeout(session.loginTimer);
    const pin = session.pin;
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
    for (const session of this.sessions) session.socket.close(CloseCode.GoingAway, 'relay shutting down');
  }

  // -------------------------------------------------------------------------
  // Frames

  private takeToken(session: Session): boolean {
    const now = Date.now();
    const refill = ((now - session.lastRefill) / 1000) * this.limits.ratePerSecond;
    session.tokens = Math.min(this.limits.rateBurst, session.tokens + refill);
    session.lastRefill = now;
    if (session.tokens < 1) return false;
    session.tokens -= 1;
    return true;
  }

  private onFrame(session: Session, data: RawData, isBinary: boolean): void {
    try {
      if (!this.takeToken(session)) {
        session.dropped += 1;
        if (session.dropped >= this.limits.floodCloseAfter) {
          this.log.info('closing flooding connection', { pin: session.pin ?? '-' });
          session.socket.close(CloseCode.Flooding, 'flooding: rate limit exceeded');
        } else {
          this.error(session, ErrorCode.RateLimited, `rate limit: at most ${this.limits.ratePerSecond} frames per second`);
        }
        return;
      }
      session.dropped = 0;
      if (isBinary) {
        this.error(session, ErrorCode.BadFrame, 'binary frames are not accepted: send JSON text');
        return;
      }
      const parsed = parseClientMessage(data.toString());
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
      this.error(session, ErrorCode.BadSignature, 'login signature does not verify for this challenge and key');
      session.socket.close(CloseCode.LoginFailed, 'login failed');
      return;
    }
    const pin = pinOf(fromB64(msg.pk));
    const existing = this.store.getUser(pin);
    if (existing && existing.pk !== msg.pk) {
      this.error(session, ErrorCode.KeyMismatch, `PIN ${pin} is registered to another key`);
      session.socket.close(CloseCode.LoginFailed, 'login failed');
      return;
    }
    const now = Date.now();
    this.store.upsertUser(pin, msg.pk, msg.name, now);
    const previous = this.online.get(pin);
    if (previous) {
      previous.pin = null; // its close must not mark the user offline
      previous.socket.close(CloseCode.Replaced, 'logged in elsewhere');
    }
    if (session.loginTimer) clearTimeout(session.loginTimer);
    session.pin = pin;
    session.name = msg.name;
    session.pk = msg.pk;
    this.online.set(pin, session);
    this.log.info('login', { pin, name: msg.name });
    this.send(session, { type: 'welcome', pin, name: msg.name, directory: this.directory(), policy: this.policy });
    for (const row of this.store.pendingFor(pin)) this.deliverQueued(session, row.qid, row.kind, row.ref, row.payload);
    this.queuePresence(pin);
    this.emit({ kind: 'login', at: now, pin, name: msg.name, address: session.address });
  }

  private onSend(session: Session, pin: string, env: Envelope): void {
    if (env.from !== pin) {
      this.emit({ kind: 'rejected', at: Date.now(), pin, code: ErrorCode.Impersonation, message: `claimed to be ${env.from}` });
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
      if (!target) continue;
      online.push(to);
      this.sendRaw(target, `{"type":"envelope","qid":${qid},"env":${json}}`);
    }
    this.emit({ kind: 'envelope', at: now, env, bytes: json.length, online, senderPk: session.pk });
  }

  private onAck(pin: string, qids: number[]): void {
    const now = Date.now();
    for (const row of this.store.ack(pin, qids)) {
      if (row.kind !== 'envelope') continue;
      const meta = this.store.envelopeMetadata(row.ref);
      if (meta) this.receipt(meta.sender, row.ref, pin, 'delivered', now);
    }
  }

  private onRead(session: Session, pin: string, to: string, ids: string[]): void {
    const now = Date.now();
    for (const id of ids) {
      const meta = this.store.envelopeMetadata(id);
      if (!meta || meta.sender !== to || !meta.recipients.split(',').includes(pin)) {
        this.error(session, ErrorCode.BadFrame, `no message ${id} from ${to} to you`, id);
        continue;
      }
      this.receipt(to, id, pin, 'read', now);
    }
  }

  private receipt(sender: string, id: string, by: string, state: 'delivered' | 'read', at: number): void {
    const payload = JSON.stringify({ id, by, state, at });
    const qid = this.store.enqueueReceipt(sender, id, payload, state, by, at);
    const target = this.online.get(sender);
    if (target) this.deliverQueued(target, qid, 'receipt', id, payload);
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

  private sendRaw(session: Session, frame: string): void {
    const socket = session.socket;
    if (socket.readyState !== 1) return;
    if (socket.bufferedAmount + frame.length > this.limits.maxBufferedBytes) {
      // A device that does not read would make the relay hold its traffic in memory without bound.
      // Its queued items stay in the store and are delivered when it reconnects.
      this.log.info('cutting off slow consumer', { pin: session.pin ?? '-', buffered: socket.bufferedAmount });
      socket.close(CloseCode.SlowConsumer, 'slow consumer: too much unread data');
      setTimeout(() => socket.terminate(), 1000).unref();
      return;
    }
    socket.send(frame);
  }

  private error(session: Session, code: ErrorCode, message: string, ref?: string): void {
    this.send(session, ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref });
  }
}
