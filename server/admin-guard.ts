/**
 * Wrong admin-token guesses, slowed per remote address. The first few are answered at once (a
 * teacher mistyping); after that each failure locks the address out for twice as long as the last,
 * and while it is locked out every admin request and console login from it gets 429 with
 * Retry-After, without the token even being compared. A success, or a quiet spell, forgets it.
 *
 * Per address is all the relay can see: behind one NAT or a TLS proxy everyone shares a record,
 * so a participant's guesses lock the teacher out too (docs/security.md says so). An IPv6 address
 * counts by its /64 (`addressKey`), so a host's many privacy addresses share one record.
 */
import { addressKey } from './addresses.ts';
import type { EdgeLimits } from './edge-limits.ts';

type GuardLimits = Pick<EdgeLimits, 'adminFreeFailures' | 'adminLockoutMinMs' | 'adminLockoutMaxMs' | 'adminForgetMs'>;

interface Record {
  failures: number;
  lastFailure: number;
  lockedUntil: number;
}

/** Addresses remembered at most; the oldest record goes first (a record is small, the bound is for safety). */
const MAX_RECORDS = 10_000;

export class AdminGuard {
  private readonly records = new Map<string, Record>();

  constructor(
    private readonly limits: GuardLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Milliseconds this address must still wait (0: it may try). */
  lockedFor(address: string): number {
    const key = addressKey(address);
    const record = this.records.get(key);
    if (!record) return 0;
    const now = this.now();
    if (now < record.lockedUntil) return record.lockedUntil - now;
    if (now - Math.max(record.lastFailure, record.lockedUntil) >= this.limits.adminForgetMs) this.records.delete(key);
    return 0;
  }

  /** Count a wrong token; returns the lockout it started (0 while failures are still free). */
  failed(address: string): number {
    this.lockedFor(address); // forget a stale record first
    const key = addressKey(address);
    const now = this.now();
    const record = this.records.get(key) ?? { failures: 0, lastFailure: now, lockedUntil: 0 };
    this.records.delete(key); // re-inserted last: the map stays in order of last failure
    record.failures += 1;
    record.lastFailure = now;
    const over = record.failures - this.limits.adminFreeFailures;
    const lock = over < 0 ? 0 : Math.min(this.limits.adminLockoutMaxMs, this.limits.adminLockoutMinMs * 2 ** Math.min(over, 40));
    record.lockedUntil = now + lock;
    this.records.set(key, record);
    if (this.records.size > MAX_RECORDS) this.records.delete(this.records.keys().next().value!);
    return lock;
  }

  succeeded(address: string): void {
    this.records.delete(addressKey(address));
  }

  /** Failures on record for an address (for the tests and the log). */
  failures(address: string): number {
    return this.records.get(addressKey(address))?.failures ?? 0;
  }
}

/** Retry-After in whole seconds, never 0 for a lock still running. */
export const retryAfterSeconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/** Why a chosen admin token is not acceptable (null: it is). 16 characters at least: guessing must not pay. */
export function adminTokenProblem(token: string): string | null {
  if (token.length < 16) return `must be at least 16 characters (this one has ${token.length}); leave it out for a random one`;
  if (token.length > 200) return `must be at most 200 characters (this one has ${token.length})`;
  if (!/^[\x21-\x7e]+$/.test(token)) return 'must be printable ASCII without spaces';
  return null;
}
