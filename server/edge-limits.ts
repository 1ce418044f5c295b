/**
 * Limits at the edge of the app, on what is not a logged-in relay session: TCP connections before
 * they become WebSockets, relay-view and regulator-console sockets, relay sockets that have not
 * logged in yet, the backlog a new viewer gets, and wrong admin-token guesses. The relay's own
 * per-session limits are `RelayLimits` (server/relay.ts); `startApp({ limits })` takes both in one
 * object.
 *
 * Every cap counts per address (`addressKey`: an IPv6 address by its /64) and in total. Each total
 * keeps a share for the teacher's laptop (loopback), and a total that is full makes room for an
 * address holding less by closing the oldest connection of the address holding the most
 * (`FairCaps`), so a few addresses cannot take a total for everyone.
 */
import { readFileSync } from 'node:fs';
import { addressKey, isLoopback } from './addresses.ts';

/** The process's soft open-file limit, from /proc/self/limits (Linux); null where it cannot be read. */
export function openFilesLimit(text?: string): number | null {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(text ?? readFileSync('/proc/self/limits', 'utf8'));
    if (!match) return null;
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    return null;
  }
}

/** Connections the server may hold when the open-file limit cannot be read (macOS, Windows). */
export const UNKNOWN_LIMIT_CONNECTIONS = 2000;
/** The most connections held by default, however high the open-file limit (a conference on one laptop). */
export const MAX_DEFAULT_CONNECTIONS = 10_000;

/**
 * `maxConnections` for an open-file limit: a tenth of it (at least 64) is kept for the relay's own
 * files (SQLite databases and their WALs, the checkpointer's connections, esbuild, stdio), the rest
 * may be connections, at most MAX_DEFAULT_CONNECTIONS.
 */
export function connectionCeiling(fileLimit: number | null): number {
  if (fileLimit === null) return UNKNOWN_LIMIT_CONNECTIONS;
  if (!Number.isFinite(fileLimit)) return MAX_DEFAULT_CONNECTIONS;
  return Math.max(16, Math.min(MAX_DEFAULT_CONNECTIONS, fileLimit - Math.max(64, Math.ceil(fileLimit / 10))));
}

export interface EdgeLimits {
  /**
   * TCP connections from the 'connection' event until they become a WebSocket (or close): HTTP
   * requests, keep-alive connections between requests, and connections that never finish their
   * request line. Past the per-address cap a connection is destroyed at once.
   */
  rawConnectionsPerAddress: number;
  rawConnectionsTotal: number;
  /**
   * Every connection the HTTP server holds, WebSockets included (`server.maxConnections`): past it
   * the server drops newcomers before reading a byte. Kept below the process's open-file limit, so
   * the relay's own files (SQLite, its WAL) and its logged-in users never meet EMFILE.
   */
  maxConnections: number;
  /** Time to send a request's headers (Node's headersTimeout), and the whole request (requestTimeout). */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** Time an idle keep-alive connection is held between requests. */
  keepAliveTimeoutMs: number;
  /** Relay-view sockets (`/ws/relay-view`, no login needed): per remote address and in total. */
  viewersPerAddress: number;
  viewersTotal: number;
  /** Regulator-console sockets (`/ws/regulator`) that sent the right admin token. */
  consolesPerAddress: number;
  consolesTotal: number;
  /** Console sockets from the upgrade until they send the token (or are closed), and the time they get. */
  consolesWaitingPerAddress: number;
  consolesWaitingTotal: number;
  consoleAuthTimeoutMs: number;
  /**
   * The share of every total (raw connections, viewers, consoles, connections waiting to log in)
   * kept for loopback (127.0.0.1, ::1: the teacher's laptop), in percent; at least one place.
   */
  loopbackReservePercent: number;
  /** Relay sockets (`/ws`) from the upgrade until login or close. */
  pendingLoginsPerAddress: number;
  pendingLoginsTotal: number;
  /** The relay view's backlog (what a new viewer gets first), bounded by count and by bytes. */
  viewBacklogEvents: number;
  viewBacklogBytes: number;
  /** Intercepts a console gets when it connects. */
  consoleSnapshotItems: number;
  /**
   * Unsent bytes the relay holds for one viewer or console. The backlog is sent in parts while
   * less than half of this is waiting; a live event that would pass it cuts the socket (4004).
   */
  feedMaxBufferedBytes: number;
  /** Wrong admin tokens from one address answered at once, before the lockouts start. */
  adminFreeFailures: number;
  /** The first lockout; each further failure doubles it, up to the maximum. */
  adminLockoutMinMs: number;
  adminLockoutMaxMs: number;
  /** An address with no failure for this long (and not locked) starts again with a clean record. */
  adminForgetMs: number;
}

export const DEFAULT_EDGE_LIMITS: EdgeLimits = {
  rawConnectionsPerAddress: 256,
  rawConnectionsTotal: 1000,
  maxConnections: connectionCeiling(openFilesLimit()),
  // 20 s, not 5: a device short of CPU can open its connection and send the request on it seconds
  // later (30 Chromium pages on two cores got 408 for their own page at 5 s). What a slow-request
  // attacker holds is bounded by the connection caps above (the newest evicts the oldest), not by this.
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5000,
  viewersPerAddress: 20,
  viewersTotal: 200,
  consolesPerAddress: 5,
  consolesTotal: 20,
  consolesWaitingPerAddress: 3,
  consolesWaitingTotal: 16,
  consoleAuthTimeoutMs: 3000,
  loopbackReservePercent: 10,
  pendingLoginsPerAddress: 50,
  pendingLoginsTotal: 500,
  viewBacklogEvents: 200,
  viewBacklogBytes: 2 * 1024 * 1024,
  consoleSnapshotItems: 200,
  feedMaxBufferedBytes: 1024 * 1024,
  adminFreeFailures: 5,
  adminLockoutMinMs: 1000,
  adminLockoutMaxMs: 5 * 60_000,
  adminForgetMs: 15 * 60_000,
};

/** The names of the edge limits (the rest of `startApp`'s limits object goes to the relay). */
export const EDGE_LIMIT_KEYS = Object.keys(DEFAULT_EDGE_LIMITS) as (keyof EdgeLimits)[];

/**
 * The standard WebSocket close code "try again later" (RFC 6455 registry): a connection closed by
 * `FairCaps` to make room for another address. Clients reconnect after it like after any close.
 */
export const MAKE_ROOM_CLOSE = 1013;

interface Held {
  key: string;
  loopback: boolean;
  close: () => void;
  release: () => void;
}

/** Why a cap refused a connection: the address's own cap, or the total. */
export interface Refusal {
  scope: 'address' | 'total';
  reason: string;
}

/**
 * Open connections of one kind, per address (`addressKey`) and in total, shared fairly.
 *
 * - An address past its own cap is refused: that cap is its share. Or, for connections whose
 *   honest life is a few seconds (`replaceOldest`: TCP connections before the upgrade), its own
 *   oldest is closed instead, so that behind one NAT a participant who holds the address's share
 *   with connections that never finish cannot keep a classmate's fresh request out.
 * - A total keeps `reserve` places for loopback (the teacher's laptop), which network addresses
 *   cannot take; loopback may use the whole total.
 * - When the total (or the network's part of it) is full, the newcomer is not simply refused:
 *   the oldest connection of the address holding the most is closed to make room, if that address
 *   holds at least two more than the newcomer's (so equal shares do not take turns closing each
 *   other). Only when no address holds more is the newcomer refused.
 *
 * `admit` decides (and makes room when it must); `add` counts a connection until the returned
 * release is called (once; later calls are no-ops). `close` is how the connection is ended when
 * it must make room: it is released at once, whatever its close takes.
 */
export class FairCaps {
  private readonly byKey = new Map<string, Set<Held>>();
  private count = 0;
  private loopbackCount = 0;
  /** Places of the total kept for loopback. */
  readonly reserve: number;
  /** Connections closed to make room for another address. */
  evictions = 0;

  constructor(
    private readonly what: string,
    readonly perAddress: number,
    readonly total: number,
    reservePercent: number,
    private readonly replaceOldest = false,
  ) {
    this.reserve = reservePercent > 0 && total > 1 ? Math.min(total - 1, Math.max(1, Math.floor((total * reservePercent) / 100))) : 0;
  }

  /** Null when `address` may open one more (after making room if it had to), else why not. */
  admit(address: string): Refusal | null {
    const key = addressKey(address);
    const loopback = isLoopback(address);
    const own = this.byKey.get(key);
    let mine = own?.size ?? 0;
    if (mine >= this.perAddress) {
      if (!this.replaceOldest || !own) return { scope: 'address', reason: `too many ${this.what} from your address (${this.perAddress} at most); close some and try again` };
      this.makeRoom(own);
      mine -= 1;
    }
    const networkFull = !loopback && this.count - this.loopbackCount >= this.total - this.reserve;
    if (this.count < this.total && !networkFull) return null;
    // Full: take the place back from the address holding the most (only network addresses when
    // the network's part is what is full, so the loopback reserve stays the laptop's).
    let victim: Set<Held> | null = null;
    for (const held of this.byKey.values()) {
      const first = held.values().next().value;
      if (!first || (networkFull && first.loopback)) continue;
      if (!victim || held.size > victim.size) victim = held;
    }
    if (!victim || victim.size < mine + 2) {
      const total = loopback ? this.total : this.total - this.reserve;
      return {
        scope: 'total',
        reason: `too many ${this.what} on this relay (${total} at most${loopback ? '' : ` from the network; ${this.reserve} more are kept for the relay's own machine`}); try again later`,
      };
    }
    this.makeRoom(victim);
    return null;
  }

  /** Close the oldest connection of one address (released at once). */
  private makeRoom(held: Set<Held>): void {
    const oldest = held.values().next().value!;
    this.evictions += 1;
    oldest.release();
    oldest.close();
  }

  add(address: string, close: () => void): () => void {
    const key = addressKey(address);
    let set = this.byKey.get(key);
    if (!set) {
      set = new Set();
      this.byKey.set(key, set);
    }
    let released = false;
    const held: Held = {
      key,
      loopback: isLoopback(address),
      close,
      release: () => {
        if (released) return;
        released = true;
        this.count -= 1;
        if (held.loopback) this.loopbackCount -= 1;
        const mine = this.byKey.get(key);
        mine?.delete(held);
        if (mine && !mine.size) this.byKey.delete(key);
      },
    };
    set.add(held);
    this.count += 1;
    if (held.loopback) this.loopbackCount += 1;
    return held.release;
  }

  /** Open connections: from `address`'s key, or in total. */
  size(address?: string): number {
    return address === undefined ? this.count : (this.byKey.get(addressKey(address))?.size ?? 0);
  }
}
