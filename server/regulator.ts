/**
 * The regulator: a separate party with its own store. It makes and keeps the
 * escrow key pair, receives the tap feed from the relay through the relay's one
 * observer interface, archives every envelope it is handed (readable or not)
 * and opens those whose escrow field its key opens.
 *
 * The relay never gets the escrow secret key: `Regulator` hands it only the
 * public policy (escrow public key, key id, scope). The secret lives in this
 * module's SQLite file and leaves it only through the audited export.
 *
 * Export-grade escrow (the lab's scene 13): `useExportGrade(true)` puts in force an escrow key
 * derived from a deliberately small secret (shared/export-grade.ts), as export rules once did; the
 * policy's key id changes and compliant clients seal to it. The private key stays here like the
 * other; the regulator keeps every key it ever used, so it still opens what each one sealed, and
 * `useExportGrade(false)` (or a room reset) puts the first, full-strength key back in force.
 *
 * The archive is bounded in bytes (`archiveMaxBytes`): past it the oldest intercepts are deleted,
 * and the audit log (which the console shows) and the teacher's log say so. The archive is the
 * regulator's copy, never the delivery queue: what it drops was delivered all the same.
 */
import type Database from 'better-sqlite3';
import { DisplayName, Pin, keysOf, type AuditEntry, type Envelope, type InterceptItem, type Policy, type TapSettings, type TrafficEvent } from '../shared/protocol.ts';
import { escrowKeyPairFromSecret, fromB64, newEscrowKeyPair, toB64, type EscrowKeyPair } from '../shared/crypto.ts';
import { EXPORT_KDF, exportBitsProblem, exportKeyPair, randomExportSecret, type ExportGradeTarget } from '../shared/export-grade.ts';
import { ARCHIVE_TABLE, formatArchiveLine, lineOfRow, migrateArchive, openArchived, type ArchiveLine, type ArchiveRow } from '../shared/archive.ts';
import { openDatabase, StoreError, vacuumAway } from './store.ts';
import { silentLogger, type Logger } from './log.ts';

const MiB = 1024 * 1024;

export interface RegulatorLimits {
  /**
   * Bytes the intercept archive may hold (each envelope's JSON and the names with it, as stored).
   * Past it the oldest intercepts are deleted, down to nine tenths of it, and the audit log says so.
   */
  archiveMaxBytes: number;
}

export const DEFAULT_REGULATOR_LIMITS: RegulatorLimits = { archiveMaxBytes: 256 * MiB };

/** The names of the regulator's limits (in `startApp`'s one limits object). */
export const REGULATOR_LIMIT_KEYS = Object.keys(DEFAULT_REGULATOR_LIMITS) as (keyof RegulatorLimits)[];

export interface RegulatorOptions {
  limits?: Partial<RegulatorLimits>;
  /** The teacher's log: told when the archive drops its oldest intercepts. */
  log?: Logger;
  /**
   * The size in bits of an export-grade escrow key's secret (`useExportGrade`): 2^bits secrets to
   * search. The default is sized for a search of about 20-45 s in Chromium on a laptop
   * (docs/attacker.md); tests choose fewer bits so they stay fast, with the same search code.
   */
  exportGradeBits?: number;
}

/**
 * 2^19 = 524,288 secrets: 11,000-16,000 keys/s in a Chromium Web Worker on the project's 2-core
 * laptop (docs/attacker.md, measured) make the whole search 33-47 s, 17-24 s on average.
 */
export const DEFAULT_EXPORT_GRADE_BITS = 19;

/** What the archive has dropped to stay within its cap, since this regulator started. */
export interface ArchiveDrops {
  /** Times the cap was reached, intercepts deleted, and their bytes. */
  trims: number;
  intercepts: number;
  bytes: number;
}

/** Stored names (JSON) with every name the protocol now refuses replaced by its PIN. */
function namesAsShown(json: string): string {
  try {
    const names: unknown = JSON.parse(json || '{}');
    if (!names || typeof names !== 'object') return '{}';
    return JSON.stringify(Object.fromEntries(Object.entries(names).map(([pin, name]) => [pin, DisplayName.safeParse(name).success ? name : pin])));
  } catch {
    return '{}';
  }
}

const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

/** An archived envelope: one line of archive.jsonl (shared/archive.ts defines both). */
export type ArchivedEnvelope = ArchiveLine;
export type { ArchiveLine };

export type Intercept = InterceptItem;
export type { TapSettings };

/** The exported escrow key file (`GET /api/regulator/escrow-key`). */
export interface EscrowKeyFile {
  kind: 'backdoor-lab escrow key';
  kid: string;
  pk: string;
  sk: string;
  exportedAt: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS escrow_key (
  kid TEXT PRIMARY KEY,
  pk TEXT NOT NULL,
  sk TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
${ARCHIVE_TABLE}
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

/** The narrow part of the relay the regulator talks to: the tap feed out, the public policy in. */
export interface TapPoint {
  observe(name: string, observer: (event: TrafficEvent) => void, options?: { hidden?: boolean; flush?: () => void }): () => void;
  setPolicy(policy: Omit<Policy, 'epoch' | 'room'>): Policy;
  getPolicy(): Policy;
}

export class Regulator {
  private readonly db: Database.Database;
  /** The key in force: the first one, or an export-grade one. */
  private key: EscrowKeyPair;
  /** The first, full-strength key (the one the relay's first policy named). */
  private readonly primary: EscrowKeyPair;
  /** Every key this regulator made, by key id: it still opens what each one sealed. */
  private readonly keys = new Map<string, EscrowKeyPair>();
  /** The export-grade key in force, if one is. */
  private exportGrade: { kid: string; bits: number } | null = null;
  readonly exportGradeBits: number;
  private settings: TapSettings;
  private readonly listeners = new Set<(item: Intercept) => void>();
  private readonly auditListeners = new Set<() => void>();
  private readonly stmt;
  private readonly unsubscribe: () => void;
  private archiveCount: number | null = null;
  /** Bytes the archive holds now (octet_length of json and names), counted once at start, then kept up to date. */
  private archiveBytes: number;
  readonly limits: RegulatorLimits;
  private readonly log: Logger;
  readonly drops: ArchiveDrops = { trims: 0, intercepts: 0, bytes: 0 };

  constructor(
    file: string,
    private readonly relay: TapPoint,
    options: RegulatorOptions = {},
  ) {
    this.limits = { ...DEFAULT_REGULATOR_LIMITS, ...options.limits };
    this.exportGradeBits = options.exportGradeBits ?? DEFAULT_EXPORT_GRADE_BITS;
    const bitsProblem = exportBitsProblem(this.exportGradeBits);
    if (bitsProblem) throw new Error(bitsProblem);
    this.log = options.log ?? silentLogger;
    this.db = openDatabase(file, 'regulator');
    try {
      this.db.exec(SCHEMA);
      migrateArchive(this.db);
    } catch (err) {
      throw new StoreError(`regulator database ${file} has an unexpected layout: ${(err as Error).message}`);
    }
    const db = this.db;
    this.stmt = {
      getKey: db.prepare<[], { kid: string; pk: string; sk: string }>('SELECT kid, pk, sk FROM escrow_key ORDER BY created_at, rowid LIMIT 1'),
      allKeys: db.prepare<[], { kid: string; sk: string }>('SELECT kid, sk FROM escrow_key ORDER BY created_at, rowid'),
      putKey: db.prepare('INSERT OR IGNORE INTO escrow_key (kid, pk, sk, created_at) VALUES (?, ?, ?, ?)'),
      archive: db.prepare('INSERT INTO archive (at, env_id, sender, sender_pk, json, names) VALUES (?, ?, ?, ?, ?, ?)'),
      since: db.prepare<[number, number], ArchiveRow>('SELECT seq, at, sender_pk, json, names FROM archive WHERE seq > ? ORDER BY seq LIMIT ?'),
      latest: db.prepare<[number], ArchiveRow>('SELECT seq, at, sender_pk, json, names FROM archive ORDER BY seq DESC LIMIT ?'),
      count: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM archive'),
      nthNewest: db.prepare<[number], { seq: number }>('SELECT seq FROM archive ORDER BY seq DESC LIMIT 1 OFFSET ?'),
      bytes: db.prepare<[], { n: number }>('SELECT coalesce(sum(octet_length(json) + octet_length(names)), 0) AS n FROM archive'),
      oldest: db.prepare<[number], { seq: number; bytes: number }>('SELECT seq, octet_length(json) + octet_length(names) AS bytes FROM archive ORDER BY seq LIMIT ?'),
      dropUpTo: db.prepare('DELETE FROM archive WHERE seq <= ?'),
      audit: db.prepare('INSERT INTO audit (at, action, detail) VALUES (?, ?, ?)'),
      auditAll: db.prepare<[], AuditEntry>('SELECT seq, at, action, detail FROM audit ORDER BY seq DESC LIMIT 200'),
      getSetting: db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE name = ?'),
      putSetting: db.prepare('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value'),
    };
    this.archiveBytes = this.stmt.bytes.get()?.n ?? 0;
    this.primary = this.loadOrCreateKey();
    for (const row of this.stmt.allKeys.all()) {
      const key = escrowKeyPairFromSecret(fromB64(row.sk));
      if (key.kid === row.kid) this.keys.set(key.kid, key);
    }
    this.keys.set(this.primary.kid, this.primary);
    this.key = this.primary;
    this.exportGrade = this.loadExportGrade();
    if (this.exportGrade) this.key = this.keys.get(this.exportGrade.kid) ?? this.primary;
    this.settings = this.loadSettings();
    this.applyPolicy();
    this.unsubscribe = relay.observe(
      'regulator tap (lawful-intercept handover)',
      (event) => {
        if (event.kind === 'envelope') this.intercept(event.at, event.senderPk, event.env, event.names);
      },
      { flush: () => this.commitArchive() },
    );
  }

  private loadOrCreateKey(): EscrowKeyPair {
    const row = this.stmt.getKey.get();
    if (row) return escrowKeyPairFromSecret(fromB64(row.sk));
    const key = newEscrowKeyPair();
    this.stmt.putKey.run(key.kid, toB64(key.pk), toB64(key.sk), Date.now());
    this.record('key created', `escrow key ${key.kid} created`);
    return key;
  }

  private loadExportGrade(): { kid: string; bits: number } | null {
    const raw = this.stmt.getSetting.get('escrow.export-grade')?.value;
    if (!raw) return null;
    try {
      const saved = JSON.parse(raw) as { kid?: unknown; bits?: unknown } | null;
      if (!saved || typeof saved.kid !== 'string' || typeof saved.bits !== 'number' || !this.keys.has(saved.kid)) return null;
      return { kid: saved.kid, bits: saved.bits };
    } catch {
      return null;
    }
  }

  /**
   * Put an export-grade escrow key in force (a fresh one, from a new random secret of
   * `exportGradeBits` bits), or the full-strength key back. The relay gets the new public key in the
   * policy (a new key id, so compliant clients seal to it); the private key is stored here like the
   * first one and never leaves but through the audited export. Audited either way.
   */
  useExportGrade(on: boolean): Policy {
    if (on) {
      const bits = this.exportGradeBits;
      const key = exportKeyPair(randomExportSecret(bits));
      this.stmt.putKey.run(key.kid, toB64(key.pk), toB64(key.sk), Date.now());
      this.keys.set(key.kid, key);
      this.key = key;
      this.exportGrade = { kid: key.kid, bits };
      this.stmt.putSetting.run('escrow.export-grade', JSON.stringify(this.exportGrade));
      this.record(
        'escrow key weakened',
        `export-grade escrow key ${key.kid} in force: derived from a ${bits}-bit secret ("${EXPORT_KDF}", 2^${bits} possible keys); key ${this.primary.kid} is kept for what it sealed`,
      );
    } else {
      if (!this.exportGrade) return this.relay.getPolicy();
      const weak = this.exportGrade.kid;
      this.key = this.primary;
      this.exportGrade = null;
      this.stmt.putSetting.run('escrow.export-grade', 'null');
      this.record('escrow key restored', `escrow key ${this.primary.kid} in force again; export-grade key ${weak} is kept for what it sealed`);
    }
    this.applyPolicy();
    return this.relay.getPolicy();
  }

  /** The export-grade key in force, as public as an export standard: key id, public key, bits and derivation. Null while the full-strength key is. */
  exportGradeTarget(): ExportGradeTarget | null {
    return this.exportGrade ? { kid: this.exportGrade.kid, pk: toB64(this.key.pk), bits: this.exportGrade.bits, kdf: EXPORT_KDF } : null;
  }

  private loadSettings(): TapSettings {
    const raw = this.stmt.getSetting.get('tap')?.value;
    const off: TapSettings = { tap: false, scope: 'all', pins: [], announced: true };
    if (!raw) return off;
    try {
      const saved = JSON.parse(raw) as TapSettings;
      return {
        tap: saved.tap === true,
        scope: saved.scope === 'warrant' ? 'warrant' : 'all',
        pins: saved.pins.filter((p) => Pin.safeParse(p).success),
        announced: saved.announced !== false,
      };
    } catch {
      return off;
    }
  }

  private applyPolicy(): void {
    const s = this.settings;
    this.relay.setPolicy({
      tap: s.tap,
      scope: s.scope,
      pins: s.scope === 'warrant' ? s.pins : [],
      announced: s.announced,
      escrowPk: s.tap ? toB64(this.key.pk) : null,
      escrowKid: s.tap ? this.key.kid : null,
    });
  }

  /** Turn the tap on or off. The relay gets the public key and scope; the secret stays here. */
  setTap(settings: TapSettings): Policy {
    if (settings.scope === 'warrant' && settings.tap && settings.pins.length === 0) throw new Error('a warrant must name at least one PIN');
    // Off clears the warrant: a later "on" must name its scope again, never reuse a stale one silently.
    this.settings = settings.tap
      ? { ...settings, pins: settings.scope === 'warrant' ? [...new Set(settings.pins)] : [] }
      : { tap: false, scope: 'all', pins: [], announced: settings.announced };
    this.stmt.putSetting.run('tap', JSON.stringify(this.settings));
    const what = settings.tap
      ? `tap on: ${settings.scope === 'all' ? 'all traffic' : `warrant for ${this.settings.pins.join(', ')}`}, ${settings.announced ? 'announced' : 'silent'}`
      : 'tap off';
    this.record('tap changed', what);
    this.applyPolicy();
    return this.relay.getPolicy();
  }

  tapSettings(): TapSettings {
    return { ...this.settings, pins: [...this.settings.pins] };
  }

  get kid(): string {
    return this.key.kid;
  }

  get publicKey(): string {
    return toB64(this.key.pk);
  }

  // -------------------------------------------------------------------------
  // The intercept archive

  /**
   * Archive writes are batched like the relay's: the first intercept of a turn of the event loop
   * opens a transaction, and the relay commits it through `commitArchive` just before its own group
   * commit (so an envelope is in the archive before the relay acknowledges or forwards it). The
   * setImmediate is a fallback for a turn without a relay commit (e.g. while the relay shuts down).
   */
  private archiveOpen = false;

  private commitArchive(): void {
    if (!this.archiveOpen) return;
    this.archiveOpen = false;
    if (!this.db.open || !this.db.inTransaction) return;
    try {
      this.db.exec('COMMIT');
    } catch (err) {
      // Never leave the archive in a transaction that no later turn would commit.
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  private intercept(at: number, senderPk: string, env: Envelope, names: Record<string, string>): void {
    if (!this.archiveOpen && !this.db.inTransaction) {
      this.db.exec('BEGIN');
      this.archiveOpen = true;
      setImmediate(() => this.commitArchive());
    }
    const json = JSON.stringify(env);
    const namesJson = JSON.stringify(names);
    const info = this.stmt.archive.run(at, env.id, env.from, senderPk, json, namesJson);
    if (this.archiveCount !== null) this.archiveCount += 1;
    this.archiveBytes += Buffer.byteLength(json) + Buffer.byteLength(namesJson);
    if (this.archiveBytes > this.limits.archiveMaxBytes) this.dropOldest(Number(info.lastInsertRowid));
    if (!this.listeners.size) return;
    const item = this.open({ seq: Number(info.lastInsertRowid), at, senderPk, names, env });
    for (const listener of this.listeners) listener(item);
  }

  /**
   * The archive is past its cap: delete the oldest intercepts (never the one just archived, `newest`)
   * down to nine tenths of the cap, so this happens once per tenth, not once per envelope; in the
   * same transaction as the insert. Said plainly in the audit log and the teacher's log.
   */
  private dropOldest(newest: number): void {
    // Counted again first (octet_length reads no row's content): whatever else emptied the archive
    // (a reset) has not moved this counter.
    this.archiveBytes = this.stmt.bytes.get()?.n ?? 0;
    if (this.archiveBytes <= this.limits.archiveMaxBytes) return;
    const target = Math.floor(this.limits.archiveMaxBytes * 0.9);
    let freed = 0;
    let count = 0;
    let first = 0;
    let last = 0;
    while (this.archiveBytes - freed > target) {
      const page = this.stmt.oldest.all(500).filter((row) => row.seq > last && row.seq < newest);
      if (!page.length) break;
      for (const row of page) {
        if (this.archiveBytes - freed <= target) break;
        freed += row.bytes;
        count += 1;
        first ||= row.seq;
        last = row.seq;
      }
      this.stmt.dropUpTo.run(last);
    }
    if (!count) return;
    this.archiveBytes -= freed;
    if (this.archiveCount !== null) this.archiveCount -= count;
    this.drops.trims += 1;
    this.drops.intercepts += count;
    this.drops.bytes += freed;
    const detail = `the archive reached its cap of ${mib(this.limits.archiveMaxBytes)}: the oldest ${count} intercepts (seq ${first}-${last}, ${mib(freed)}) were deleted to make room, and the regulator can no longer read them (the messages themselves were delivered)`;
    this.record('archive full', detail);
    this.log.info('intercept archive full: oldest intercepts deleted', { deleted: count, bytes: freed, capBytes: this.limits.archiveMaxBytes, firstSeq: first, lastSeq: last });
  }

  /** Bytes the archive holds now (what `archiveMaxBytes` bounds). */
  archiveByteSize(): number {
    return this.archiveBytes;
  }

  /** Try the escrow key on one archived envelope: opened, end-to-end, or a field that does not open (and why). */
  open(item: ArchivedEnvelope): Intercept {
    // Each envelope with the key it names: an export-grade key's messages stay readable after it is retired.
    const keys = keysOf(item.env);
    const verdict = openArchived(item, (keys.model === 'e2e-escrow' ? this.keys.get(keys.escrow.kid) : undefined) ?? this.key);
    const base = { seq: item.seq, at: item.at, senderPk: item.senderPk, ...(item.names ? { names: item.names } : {}), env: item.env };
    return verdict.status === 'opened'
      ? { ...base, status: 'opened', readable: true, code: null, text: verdict.text, group: verdict.group ?? null, reason: null }
      : { ...base, status: verdict.status, readable: false, code: verdict.code, text: null, group: null, reason: verdict.reason };
  }

  onIntercept(listener: (item: Intercept) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Rows that parse as archive lines (v1 or v2); a damaged row is skipped, never thrown. A row
   * archived under older display-name rules, with a name the protocol now refuses, is read with
   * that name shown as its PIN (as the relay sends such names), so it is not lost from view.
   */
  private rows(rows: ArchiveRow[]): ArchivedEnvelope[] {
    const out: ArchivedEnvelope[] = [];
    for (const row of rows) {
      let line = lineOfRow(row);
      if (!line.ok) line = lineOfRow({ ...row, names: namesAsShown(row.names) });
      if (line.ok) out.push(line.value);
    }
    return out;
  }

  /** Archived envelopes after `seq`, oldest first. */
  archived(afterSeq = 0, limit = 1000): ArchivedEnvelope[] {
    return this.rows(this.stmt.since.all(afterSeq, limit));
  }

  /** The newest `limit` intercepts, opened where the key opens them, oldest first. */
  recent(limit = 200): Intercept[] {
    return this.rows(this.stmt.latest.all(limit))
      .reverse()
      .map((item) => this.open(item));
  }

  /** The seq after which the newest `limit` intercepts start (0 when the archive holds no more than that). */
  seqBeforeNewest(limit: number): number {
    return this.stmt.nthNewest.get(limit)?.seq ?? 0;
  }

  /** Counted once, then kept up to date: COUNT(*) scans the whole archive, and the console asks on every intercept. */
  archiveSize(): number {
    this.archiveCount ??= this.stmt.count.get()?.n ?? 0;
    return this.archiveCount;
  }

  /** The whole archive as JSON lines, streamed in pages so a large archive never sits in memory. */
  *exportArchive(): Generator<string> {
    this.record('archive exported', `${this.archiveSize()} envelopes`);
    let after = 0;
    for (;;) {
      // Paged by the rows read, not the rows that parsed: a page of damaged rows does not end the export.
      const rows = this.stmt.since.all(after, 500);
      if (!rows.length) return;
      for (const item of this.rows(rows)) yield `${formatArchiveLine(item)}\n`;
      after = rows[rows.length - 1]!.seq;
    }
  }

  /** The teacher's "reset the room": the intercept archive is emptied (the key and the audit log stay), and the reset is audited. */
  resetArchive(who: string): number {
    this.commitArchive();
    const n = this.archiveSize();
    this.db.exec('DELETE FROM archive');
    this.archiveCount = 0;
    this.archiveBytes = 0;
    // Deleted rows linger in free pages and in the write-ahead log: rewrite the file without them.
    if (!vacuumAway(this.db)) this.log.error('room reset: the write-ahead log could not be emptied; deleted intercepts may stay on disk until the next checkpoint');
    this.record('room reset', `the intercept archive (${n} envelopes) was emptied by ${who}`);
    return n;
  }

  /** A demand was served on the relay's operator (what it could hand over is the operator's, not this key's). */
  recordDemand(envelopes: number, plaintext: number): void {
    this.record('demand served on the operator', `${envelopes} envelopes asked for; the operator handed over ${plaintext} in plaintext, the rest as metadata and ciphertext`);
  }

  /**
   * The regulator's database file, byte for byte, as someone who copies regulator.db off the disk
   * gets it: every escrow key it holds and the whole archive (the lab's breach scenario). Not in the
   * audit log, on purpose: copying a file is not something this application sees or records, just
   * as a thief does not use the audited export. Pending archive writes are committed first.
   */
  fileCopy(): Buffer {
    this.commitArchive();
    return this.db.serialize();
  }

  /** Export the escrow secret key in force. Recorded in the audit log, which the console shows. */
  exportKey(who: string): EscrowKeyFile {
    this.record('escrow key exported', `escrow key ${this.key.kid} exported by ${who}`);
    return { kind: 'backdoor-lab escrow key', kid: this.key.kid, pk: toB64(this.key.pk), sk: toB64(this.key.sk), exportedAt: Date.now() };
  }

  /**
   * An action of the lab's that belongs in the authority's audit log (the scan list changed, hidden
   * observers revealed): recorded like the regulator's own, and shown on the console.
   */
  recordAction(action: string, detail: string): void {
    this.record(action, detail);
  }

  private record(action: string, detail: string): void {
    this.stmt.audit.run(Date.now(), action, detail);
    for (const listener of this.auditListeners) listener();
  }

  /** Called after every audit entry and tap change, so the console can refresh its state. */
  onAudit(listener: () => void): () => void {
    this.auditListeners.add(listener);
    return () => this.auditListeners.delete(listener);
  }

  auditLog(): AuditEntry[] {
    return this.stmt.auditAll.all();
  }

  close(): void {
    this.commitArchive();
    this.unsubscribe();
    this.listeners.clear();
    this.auditListeners.clear();
    if (this.db.open) this.db.close();
  }
}
