/**
 * Limits at the edge of the app, on what is not a logged-in relay session: relay-view and
 * regulator-console sockets, relay sockets that have not logged in yet, the backlog a new viewer
 * gets, and wrong admin-token guesses. The relay's own per-session limits are `RelayLimits`
 * (server/relay.ts); `startApp({ limits })` takes both in one object.
 */

export interface EdgeLimits {
  /** Relay-view sockets (`/ws/relay-view`, no login needed): per remote address and in total. */
  viewersPerAddress: number;
  viewersTotal: number;
  /** Regulator-console sockets (`/ws/regulator`), counted from the upgrade, before the token is checked. */
  consolesPerAddress: number;
  consolesTotal: number;
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
  viewersPerAddress: 20,
  viewersTotal: 200,
  consolesPerAddress: 5,
  consolesTotal: 20,
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
 * Open connections of one kind, per remote address and in total. `admit` answers the reason to
 * refuse (or null); `add` counts one until the returned release is called (once; later calls are no-ops).
 */
export class ConnectionCaps {
  private readonly byAddress = new Map<string, number>();
  private count = 0;

  constructor(
    private readonly what: string,
    private readonly perAddress: number,
    private readonly total: number,
  ) {}

  refusal(address: string): string | null {
    if (this.count >= this.total) return `too many ${this.what} open on this relay (${this.total} at most); try again later`;
    if ((this.byAddress.get(address) ?? 0) >= this.perAddress) return `too many ${this.what} open from your address (${this.perAddress} at most); close some and try again`;
    return null;
  }

  add(address: string): () => void {
    this.count += 1;
    this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.count -= 1;
      const left = (this.byAddress.get(address) ?? 1) - 1;
      if (left > 0) this.byAddress.set(address, left);
      else this.byAddress.delete(address);
    };
  }

  size(address?: string): number {
    return address === undefined ? this.count : (this.byAddress.get(address) ?? 0);
  }
}
