/**
 * Client-side scanning, the authority's side: the list (hashes only, under one random salt per
 * list), the switch (off by default; only the teacher turns it on), and the reports clients send
 * back, as the regulator console shows them. The phrases never reach this module in a form it
 * keeps: `addPhrase` hashes and forgets; `addHash` takes a hash the supplier computed with the
 * list's salt. The list travels to every client in the relay's policy frame (Relay.setScan), and
 * the relay hands each report it accepted here (Relay.setReportSink).
 *
 * Refusals are thrown as Errors with a message for the teacher (the lab API answers them with 400).
 * Every change to the list or the switch is in the regulator's audit log; reports are not (they are
 * not the authority's actions): they are kept here, the newest MAX_REPORTS, and counted.
 */
import { randomBytes } from 'node:crypto';
import { toB64 } from '../../shared/crypto.ts';
import { MAX_SCAN_ENTRIES, type Policy, type ScanPolicy } from '../../shared/protocol.ts';
import { hashPhrase, normalisePhrase, SCAN_SALT_BYTES } from '../../shared/scan.ts';
import type { Regulator } from '../regulator.ts';
import type { Relay, ScanReport } from '../relay.ts';

/** Reports kept (the oldest dropped first, and counted). */
export const MAX_REPORTS = 500;

export interface ScanEntry {
  /** 1, 2, 3… in the order added: how the panel and the reports name an entry. */
  n: number;
  hash: string;
  at: number;
}

export interface ScanState {
  on: boolean;
  announced: boolean;
  /** The list's id and salt (what clients get), null until the first entry. */
  list: string | null;
  salt: string | null;
  entries: ScanEntry[];
  reports: { total: number; kept: number; dropped: number };
}

export interface ReportView extends ScanReport {
  seq: number;
  /** The list entry's number (0 if the list was replaced since). */
  n: number;
}

export class ScanAuthority {
  private on = false;
  private announced = true;
  private list: { id: string; salt: Uint8Array; entries: ScanEntry[] } | null = null;
  private kept: ReportView[] = [];
  private total = 0;
  private readonly listeners = new Set<(report: ReportView) => void>();

  constructor(
    private readonly relay: Pick<Relay, 'setScan' | 'setReportSink'>,
    private readonly regulator: Pick<Regulator, 'recordAction'>,
  ) {
    relay.setReportSink((report) => this.take(report));
  }

  state(): ScanState {
    return {
      on: this.on,
      announced: this.announced,
      list: this.list?.id ?? null,
      salt: this.list ? toB64(this.list.salt) : null,
      entries: this.list ? this.list.entries.map((e) => ({ ...e })) : [],
      reports: { total: this.total, kept: this.kept.length, dropped: this.total - this.kept.length },
    };
  }

  /** Turn scanning on or off (and whether the chat page says so); the policy goes to every client. */
  set(settings: { on: boolean; announced: boolean }, who: string): Policy {
    this.on = settings.on;
    this.announced = settings.announced;
    this.regulator.recordAction(
      'scanning changed',
      settings.on
        ? `client-side scanning on (${settings.announced ? 'announced on the chat page' : 'not announced'}), list of ${this.list?.entries.length ?? 0} hashes, set by ${who}`
        : `client-side scanning off, set by ${who}`,
    );
    return this.publish();
  }

  /** Add a phrase to the list: only its hash is kept. Returns the new entry. */
  addPhrase(phrase: string, who: string): ScanEntry {
    const normalised = normalisePhrase(phrase);
    if (!normalised.ok) throw new Error(`phrase: ${normalised.reason}`);
    return this.addHash(hashPhrase(this.ensureList().salt, normalised.value), who);
  }

  /** Add a hash the supplier computed with this list's salt (shared/scan.ts hashPhrase). */
  addHash(hash: string, who: string): ScanEntry {
    // What every client's parser will demand of the policy: a bad hash here would make them all refuse it.
    if (!/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(hash)) throw new Error('hash must be 32 bytes in canonical standard base64 (44 characters)');
    const list = this.ensureList();
    if (list.entries.some((e) => e.hash === hash)) throw new Error('that hash is on the list already');
    if (list.entries.length >= MAX_SCAN_ENTRIES) throw new Error(`the list holds at most ${MAX_SCAN_ENTRIES} hashes`);
    const entry: ScanEntry = { n: (list.entries.at(-1)?.n ?? 0) + 1, hash, at: Date.now() };
    list.entries.push(entry);
    this.regulator.recordAction(
      'scan list changed',
      `entry ${entry.n} added to scan list ${list.id} by ${who}: hash ${hash.slice(0, 12)}… (what it stands for is not recorded here)`,
    );
    this.publish();
    return { ...entry };
  }

  /** The newest reports first, at most `limit`. */
  reports(limit = MAX_REPORTS): ReportView[] {
    return this.kept.slice(-limit).reverse();
  }

  onReport(listener: (report: ReportView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The room's reset: scanning off, the list and the reports forgotten (a new list gets a new salt). */
  reset(): void {
    this.on = false;
    this.announced = true;
    this.list = null;
    this.kept = [];
    this.total = 0;
    this.relay.setScan(null);
  }

  private ensureList(): { id: string; salt: Uint8Array; entries: ScanEntry[] } {
    this.list ??= { id: randomBytes(8).toString('hex'), salt: new Uint8Array(randomBytes(SCAN_SALT_BYTES)), entries: [] };
    return this.list;
  }

  private publish(): Policy {
    const scan: ScanPolicy | null = this.on
      ? { list: this.ensureList().id, salt: toB64(this.ensureList().salt), entries: this.ensureList().entries.map((e) => e.hash), announced: this.announced }
      : null;
    return this.relay.setScan(scan);
  }

  private take(report: ScanReport): void {
    this.total += 1;
    const n = this.list?.id === report.list ? (this.list.entries.find((e) => e.hash === report.entry)?.n ?? 0) : 0;
    const view: ReportView = { ...report, seq: this.total, n };
    this.kept.push(view);
    if (this.kept.length > MAX_REPORTS) this.kept.splice(0, this.kept.length - MAX_REPORTS);
    for (const listener of this.listeners) listener(view);
  }
}
