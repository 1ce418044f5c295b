/**
 * The regulator console's feed (`/ws/regulator`): the admin token first, then a snapshot and live
 * intercepts, within the same buffer bound as the relay view. The snapshot's intercepts are read
 * from the archive a part at a time (the newest `consoleSnapshotItems`, oldest first): the first
 * part rides in the `snapshot` frame, the rest follow as `intercept` frames while the socket has
 * room, and live intercepts start once the console has caught up. A console that would hold more
 * than the bound unsent is cut (4004).
 *
 * Two caps (FairCaps): sockets waiting for the token (a few per address, closed after
 * `consoleAuthTimeoutMs`), and consoles that sent the right token. Only the second are consoles:
 * sockets without the token can fill their own small cap, never the teacher's.
 */
import type { WebSocket } from 'ws';
import { CloseCode, ErrorCode, parseConsoleClientMessage, type ConsoleMessage, type Policy } from '../shared/protocol.ts';
import { retryAfterSeconds, type AdminGuard } from './admin-guard.ts';
import { FairCaps, type EdgeLimits, type Refusal } from './edge-limits.ts';
import { FeedSocket, PART_BYTES, closeToMakeRoom } from './feed-socket.ts';
import { tokenMatches } from './http.ts';
import type { Logger } from './log.ts';
import type { Intercept, Regulator } from './regulator.ts';

/** Intercepts read from the archive per step while a console catches up. */
const PART_ITEMS = 4;

interface Console {
  socket: FeedSocket;
  started: boolean;
  /** The last archive seq sent. */
  after: number;
  live: boolean;
}

export interface ConsoleDeps {
  regulator: Regulator;
  policy: () => Policy;
  adminToken: string;
  guard: AdminGuard;
  limits: EdgeLimits;
  log: Logger;
}

export class ConsoleFeed {
  private readonly consoles = new Set<Console>();
  /** Subscribed only while a console is logged in: each intercept handed to a listener is first
   * opened with the escrow key (an Ed25519 verify and an unwrap), which nobody needs otherwise. */
  private unlisten: (() => void) | null = null;
  private readonly offAudit: () => void;
  cuts = 0;
  /** Console sockets that have not sent the token yet, and consoles that sent the right one. */
  readonly waiting: FairCaps;
  readonly open: FairCaps;

  constructor(private readonly deps: ConsoleDeps) {
    const { limits } = deps;
    this.waiting = new FairCaps(
      'regulator-console sockets waiting for the admin token',
      limits.consolesWaitingPerAddress,
      limits.consolesWaitingTotal,
      limits.loopbackReservePercent,
    );
    this.open = new FairCaps('regulator consoles open', limits.consolesPerAddress, limits.consolesTotal, limits.loopbackReservePercent);
    this.offAudit = deps.regulator.onAudit(() => {
      if (!this.consoles.size) return;
      // Deferred: the policy changes right after the audit entry is written.
      setImmediate(() => {
        const frame = this.stateFrame();
        for (const c of this.consoles) if (c.started) c.socket.sendLive(frame);
      });
    });
  }

  /** Why a new console socket from `address` may not be opened now (null: it may; room was made if needed). */
  refusal(address: string): Refusal | null {
    return this.waiting.admit(address);
  }

  /** A new console socket; `address` is its remote address (for the caps and the guessing guard). */
  add(ws: WebSocket, address: string): FeedSocket {
    const socket = new FeedSocket(ws, this.deps.limits.feedMaxBufferedBytes, () => (this.cuts += 1));
    const stopWaiting = this.waiting.add(address, () => closeToMakeRoom(ws));
    const timer = setTimeout(() => ws.close(CloseCode.LoginTimeout, 'send the admin token first'), this.deps.limits.consoleAuthTimeoutMs);
    ws.once('close', () => {
      clearTimeout(timer);
      stopWaiting();
    });
    ws.once('message', (data) => {
      clearTimeout(timer);
      stopWaiting();
      const refuse = (code: string, message: string, reason: string) => {
        ws.send(JSON.stringify({ type: 'error', code, message } satisfies ConsoleMessage));
        ws.close(CloseCode.PolicyViolation, reason);
      };
      const { guard } = this.deps;
      const wait = guard.lockedFor(address);
      if (wait > 0) {
        // Locked out: the token is not even compared.
        return refuse(ErrorCode.RateLimited, `too many wrong admin tokens from your address: try again in ${retryAfterSeconds(wait)} s`, 'too many wrong admin tokens');
      }
      const parsed = parseConsoleClientMessage(data.toString());
      if (!parsed.ok || !tokenMatches(parsed.value.token, this.deps.adminToken)) {
        guard.failed(address);
        this.deps.log.info('console login refused', { address, failures: guard.failures(address) });
        return refuse('forbidden', 'wrong admin token', 'wrong admin token');
      }
      guard.succeeded(address);
      const full = this.open.admit(address);
      if (full) return refuse(ErrorCode.RateLimited, full.reason, 'too many consoles');
      const release = this.open.add(address, () => closeToMakeRoom(ws));
      ws.once('close', release);
      const c: Console = { socket, started: false, after: this.deps.regulator.seqBeforeNewest(this.deps.limits.consoleSnapshotItems), live: false };
      this.consoles.add(c);
      this.listen();
      ws.on('close', () => {
        this.consoles.delete(c);
        if (!this.consoles.size) this.stopListening();
      });
      this.pump(c);
    });
    return socket;
  }

  bufferedAmounts(): number[] {
    return [...this.consoles].map((c) => c.socket.buffered);
  }

  close(): void {
    this.stopListening();
    this.offAudit();
  }

  private listen(): void {
    this.unlisten ??= this.deps.regulator.onIntercept((item) => {
      let frame: string | null = null;
      for (const c of this.consoles) {
        // A console still catching up reads this one from the archive in turn.
        if (!c.live) continue;
        frame ??= this.interceptFrame(item);
        c.socket.sendLive(frame);
        c.after = item.seq;
      }
    });
  }

  private stopListening(): void {
    this.unlisten?.();
    this.unlisten = null;
  }

  private pump(c: Console): void {
    const { regulator } = this.deps;
    const socket = c.socket;
    while (!c.live && socket.open && socket.hasRoom) {
      const items: Intercept[] = [];
      const page = regulator.archived(c.after, PART_ITEMS);
      let size = 0;
      for (const archived of page) {
        if (size >= PART_BYTES) break;
        const item = regulator.open(archived);
        items.push(item);
        c.after = item.seq;
        size += archived.env.body.length + (item.text?.length ?? 0);
      }
      if (!c.started) {
        const settings = regulator.tapSettings();
        socket.sendPart(
          JSON.stringify({
            type: 'snapshot',
            intercepts: items,
            total: regulator.archiveSize(),
            audit: regulator.auditLog(),
            settings,
            policy: this.deps.policy(),
            kid: regulator.kid,
          } satisfies ConsoleMessage),
        );
        c.started = true;
      } else {
        for (const item of items) socket.sendPart(this.interceptFrame(item));
      }
      if (items.length === page.length && page.length < PART_ITEMS) c.live = true;
    }
    if (!c.live && socket.open) socket.whenDrained(() => this.pump(c));
  }

  private interceptFrame(item: Intercept): string {
    return JSON.stringify({ type: 'intercept', item, total: this.deps.regulator.archiveSize() } satisfies ConsoleMessage);
  }

  private stateFrame(): string {
    const { regulator } = this.deps;
    return JSON.stringify({ type: 'state', audit: regulator.auditLog(), settings: regulator.tapSettings(), policy: this.deps.policy() } satisfies ConsoleMessage);
  }
}
