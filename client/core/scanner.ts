/**
 * The client's scanner (client-side scanning, lab part 2): before a message is sealed, its text is
 * checked against the authority's list from the policy — hashes only, so the client cannot tell
 * what the list targets — and a match is remembered, to be reported once the relay has accepted
 * the envelope. The envelope itself is sealed exactly as it would be without the scanner.
 *
 * A client with `enabled` false (a rogue bot, a patched app) never reports anything: scanning
 * catches the compliant, not the determined.
 */
import { fromB64 } from '../../shared/crypto.ts';
import type { ScanPolicy } from '../../shared/protocol.ts';
import { scanText } from '../../shared/scan.ts';

export interface ScanHit {
  list: string;
  entry: string;
}

/** Matches waiting for their envelope to be accepted, at most this many (the oldest forgotten first). */
const MAX_PENDING = 1000;

export class Scanner {
  /** Whether this client scans at all when the policy asks it to (an honest client does). */
  enabled = true;
  private cached: { policy: ScanPolicy; salt: Uint8Array; entries: Set<string> } | null = null;
  private readonly pending = new Map<string, ScanHit & { to: string[] }>();
  /** Messages this client reported, for the tests and the bench. */
  reported = 0;

  /** The first list entry the text matches under this policy's list, or null (also while scanning is off). */
  check(scan: ScanPolicy | undefined, text: string): ScanHit | null {
    if (!scan || !this.enabled || !text || !scan.entries.length) return null;
    if (this.cached?.policy !== scan) this.cached = { policy: scan, salt: fromB64(scan.salt), entries: new Set(scan.entries) };
    const [entry] = scanText(this.cached.salt, this.cached.entries, text);
    return entry ? { list: scan.list, entry } : null;
  }

  /** Remember a match for envelope `id` until the relay accepts it. */
  hold(id: string, to: string[], hit: ScanHit): void {
    this.pending.set(id, { ...hit, to: [...to] });
    while (this.pending.size > MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
  }

  /** The relay accepted envelope `id`: the report to send for it, if it matched (once). */
  accepted(id: string): { type: 'report'; id: string; to: string[]; list: string; entry: string } | null {
    const hit = this.pending.get(id);
    if (!hit) return null;
    this.pending.delete(id);
    this.reported += 1;
    return { type: 'report', id, to: hit.to, list: hit.list, entry: hit.entry };
  }

  /** The envelope failed for good: nothing to report. */
  forget(id: string): void {
    this.pending.delete(id);
  }
}
