/**
 * The relay's SQLite store: the public-key directory, the offline queue and the
 * relay's metadata log. It never holds a private key or a plaintext: only what
 * the relay itself sees (public keys, envelopes as ciphertext, metadata).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export class StoreError extends Error {
  override name = 'StoreError';
}

export interface UserRow {
  pin: string;
  pk: string;
  name: string;
  created_at: number;
  last_seen: number;
  /** When the user last had an envelope accepted (0: never), as of its last logout. */
  last_sent: number;
}

export interface QueueRow {
  qid: number;
  recipient: string;
  kind: 'envelope' | 'receipt';
  ref: string;
  payload: string;
}

/** A queue row as acknowledged, with the envelope's sender (null for a receipt) and its size. */
export interface AckedRow extends QueueRow {
  sender: string | null;
  bytes: number;
}

/** What waits in one recipient's offline queue: envelopes (count, bytes) and receipts (count, bytes). */
export interface QueueLoad {
  envelopes: number;
  envelopeBytes: number;
  receipts: number;
  receiptBytes: number;
}

/** What one sender has waiting in one recipient's queue. */
export interface PairLoad {
  envelopes: number;
  bytes: number;
}

export interface MetadataRow {
  seq: number;
  at: number;
  kind: string;
  sender: string;
  recipients: string;
  conv: string;
  ref: string;
  bytes: number;
  escrow: number;
}

const SCHEMA = `
-- The enterprise server's own key pair (the server-held key model): the relay in its BES role.
-- Not a user's key and not the escrow key: the operator's, which is the point of that model.
CREATE TABLE IF NOT EXISTS server_key (
  kid TEXT PRIMARY KEY,
  pk TEXT NOT NULL,
  sk TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
-- Room settings the teacher chose (the key model in force), kept across restarts.
CREATE TABLE IF NOT EXISTS settings (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
  pin TEXT PRIMARY KEY,
  pk TEXT NOT NULL,
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);
-- (Until 2026-11-29 a table "seen" held every accepted envelope id; the metadata log below holds
-- the same ids, written in the same transaction, and now answers that question alone.)
DROP TABLE IF EXISTS seen;
-- Envelopes waiting for at least one recipient, stored once however many recipients.
CREATE TABLE IF NOT EXISTS envelopes (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  json TEXT NOT NULL,
  at INTEGER NOT NULL
);
-- The offline queue: one row per recipient per item, deleted on the recipient's ack.
CREATE TABLE IF NOT EXISTS queue (
  qid INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('envelope', 'receipt')),
  ref TEXT NOT NULL,
  payload TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_recipient ON queue (recipient, qid);
CREATE INDEX IF NOT EXISTS queue_by_ref ON queue (ref);
-- The eviction of stale entries (least recently seen first).
CREATE INDEX IF NOT EXISTS users_by_last_seen ON users (last_seen);
-- Whether a user still has envelopes waiting for others (such a user is never evicted).
CREATE INDEX IF NOT EXISTS envelopes_by_sender ON envelopes (sender);
-- What every relay learns even without a tap: who, to whom, when, how much.
CREATE TABLE IF NOT EXISTS metadata (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  conv TEXT NOT NULL,
  ref TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  escrow INTEGER NOT NULL
);
-- Also the relay's memory of accepted envelope ids (a replayed id is not delivered twice): never pruned.
CREATE INDEX IF NOT EXISTS metadata_by_ref ON metadata (ref);
`;

/**
 * Columns and indexes later versions added to `users`: `last_sent` (the welcome's order by recent
 * activity) on a database made before it.
 */
function migrateUsers(db: Database.Database): void {
  const columns = (db.prepare('PRAGMA table_info(users)').all() as { name: string }[]).map((c) => c.name);
  if (!columns.includes('last_sent')) db.exec('ALTER TABLE users ADD COLUMN last_sent INTEGER NOT NULL DEFAULT 0');
  db.exec('CREATE INDEX IF NOT EXISTS users_by_activity ON users (last_sent, last_seen, pin)');
}

/** Open a SQLite file (or ':memory:'), check it is a healthy database, and apply the schema. */
export function openDatabase(file: string, label: string): Database.Database {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  let db: Database.Database;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode survives a killed process; only a power cut may lose the last commits.
    db.pragma('synchronous = NORMAL');
    // Checkpoints (copying the log into the database file, with an fsync of each) are done by a
    // background thread (startCheckpointer); this connection checkpoints itself only as a backstop,
    // at 10,000 WAL pages rather than SQLite's 1,000. What survives a crash or power cut is unchanged.
    db.pragma('wal_autocheckpoint = 10000');
    db.pragma('busy_timeout = 2000');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(String(check));
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new StoreError(`${label} database ${file} cannot be used: ${why}. Move it aside (or start with --ephemeral) and start again.`);
  }
  if (file !== ':memory:') startCheckpointer(db, file);
  return db;
}

/**
 * The background checkpointer: one worker thread per process, with its own connection to each
 * database file opened here, runs a PASSIVE checkpoint of each every CHECKPOINT_MS, so the fsyncs of
 * checkpointing do not stall the event loop. (`npm run bench`, 100 clients × 10 msg/s: with the
 * checkpoints on the event loop the relay's p99 latency was 9-15 ms at SQLite's default of 1,000
 * pages on an idle disk, hundreds of ms while other processes used the disk; with this thread, ~8 ms.
 * See docs/performance.md.) PASSIVE never blocks the main connection's writes. Under a continuous write load it may not catch up to the very end
 * of the log, so the log is not restarted and keeps growing; the main connection's own
 * wal_autocheckpoint then finishes the job, cheaply, since the thread has copied nearly all of it.
 * If the thread cannot run, that backstop alone keeps the log bounded, as before.
 */
const CHECKPOINT_MS = 100;
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const dbs = new Map();
const checkpoint = (db) => { try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {} };
setInterval(() => { for (const db of dbs.values()) checkpoint(db); }, workerData.everyMs);
parentPort.on('message', ({ open, close, file, done }) => {
  if (open !== undefined) { try { dbs.set(open, new Database(file, { fileMustExist: true })); } catch {} }
  const db = dbs.get(close);
  if (db) { dbs.delete(close); checkpoint(db); try { db.close(); } catch {} }
  if (done) { Atomics.store(done, 0, 1); Atomics.notify(done, 0); }
});
`;

/**
 * Rewrite the file without deleted rows and empty the write-ahead log, so that what was deleted is
 * on the disk nowhere (the reset's promise). VACUUM writes the new pages through the log; the old
 * frames stay in it until a TRUNCATE checkpoint succeeds, and that answers busy (without an
 * error) while the checkpointer thread is in the middle of its own. So it is tried again, briefly;
 * false if the log still holds frames after that (or a transaction is open and VACUUM cannot run).
 */
export function vacuumAway(db: Database.Database, withinMs = 1000): boolean {
  if (db.inTransaction) return false;
  db.exec('VACUUM');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const waited = db.pragma('busy_timeout', { simple: true }) as number;
  // Each try waits for others at most 50 ms (not the connection's 2 s), the whole at most withinMs:
  // this blocks the event loop, and a reset is rare.
  db.pragma('busy_timeout = 50');
  try {
    const deadline = Date.now() + withinMs;
    do {
      const [result] = db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number }[];
      if (!result || (result.busy === 0 && result.log <= 0)) return true;
      Atomics.wait(pause, 0, 0, 5);
    } while (Date.now() < deadline);
    return false;
  } finally {
    db.pragma(`busy_timeout = ${Number(waited) || 2000}`);
  }
}

/** One checkpointer thread per process, serving every database file opened here. */
let checkpointer: Worker | null | undefined;
let nextCheckpointId = 1;

function startCheckpointer(db: Database.Database, file: string): void {
  if (checkpointer === undefined) {
    try {
      const module = createRequire(import.meta.url).resolve('better-sqlite3');
      checkpointer = new Worker(CHECKPOINTER, { eval: true, workerData: { module, everyMs: CHECKPOINT_MS } });
      checkpointer.unref(); // never keeps the process alive
      checkpointer.on('error', () => {
        checkpointer = null; // the backstop (wal_autocheckpoint) takes over
      });
    } catch {
      checkpointer = null;
    }
  }
  const worker = checkpointer;
  if (!worker) return;
  const id = nextCheckpointId++;
  worker.postMessage({ open: id, file });
  const close = db.close.bind(db);
  db.close = () => {
    // The thread closes its connection first, and this one waits for that (a few ms): so this
    // connection is the file's last, and when close() returns SQLite has already removed the
    // -wal and -shm files. (Closing this one first left the thread to remove them a moment later,
    // while a test was already deleting the folder: ENOTEMPTY, seen twice in CI.)
    if (checkpointer === worker) {
      const done = new Int32Array(new SharedArrayBuffer(4));
      worker.postMessage({ close: id, done });
      Atomics.wait(done, 0, 0, 2000);
    }
    return close();
  };
}

export class RelayStore {
  readonly db: Database.Database;
  private readonly stmt;
  private readonly users = new Map<string, UserRow>();
  private userTotal = 0;
  /**
   * Queue quotas are checked on every `send`, so what waits per recipient and per sender→recipient
   * pair is counted here, in memory, kept in step with every write, and rebuilt from the tables at
   * start and after a rolled-back transaction.
   */
  private readonly loads = new Map<string, QueueLoad>();
  private readonly pairs = new Map<string, PairLoad>();

  constructor(file: string) {
    this.db = openDatabase(file, 'relay');
    try {
      this.db.exec(SCHEMA);
      migrateUsers(this.db);
    } catch (err) {
      throw new StoreError(`relay database ${file} has an unexpected layout: ${(err as Error).message}`);
    }
    const db = this.db;
    this.stmt = {
      getUser: db.prepare<[string], UserRow>('SELECT * FROM users WHERE pin = ?'),
      allUsers: db.prepare<[], UserRow>('SELECT * FROM users ORDER BY created_at, pin'),
      // The welcome's page after the online users: the latest senders first, then the most recently seen (users_by_activity).
      recentUsers: db.prepare<[number], UserRow>('SELECT * FROM users ORDER BY last_sent DESC, last_seen DESC, pin DESC LIMIT ?'),
      countUsers: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM users'),
      deleteUser: db.prepare('DELETE FROM users WHERE pin = ?'),
      // Offline entries not seen since a time, with nothing queued for them and no envelope of theirs waiting.
      stale: db.prepare<[number, number], { pin: string }>(
        `SELECT u.pin FROM users u WHERE u.last_seen < ?
           AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.recipient = u.pin)
           AND NOT EXISTS (SELECT 1 FROM envelopes e WHERE e.sender = u.pin)
         ORDER BY u.last_seen, u.pin LIMIT ?`,
      ),
      offlineBefore: db.prepare<[number], { pin: string }>('SELECT pin FROM users WHERE last_seen <= ? ORDER BY last_seen, pin'),
      deleteQueueOf: db.prepare('DELETE FROM queue WHERE recipient = ?'),
      envelopesFrom: db.prepare<[string], { id: string }>('SELECT id FROM envelopes WHERE sender = ?'),
      deleteQueueRef: db.prepare("DELETE FROM queue WHERE ref = ? AND kind = 'envelope'"),
      deleteEnvelope: db.prepare('DELETE FROM envelopes WHERE id = ?'),
      orphanEnvelopes: db.prepare("DELETE FROM envelopes WHERE NOT EXISTS (SELECT 1 FROM queue q WHERE q.ref = envelopes.id AND q.kind = 'envelope')"),
      envelopeLoads: db.prepare<[], { recipient: string; sender: string; n: number; bytes: number }>(
        `SELECT q.recipient, e.sender, COUNT(*) AS n, SUM(length(e.json)) AS bytes FROM queue q
         JOIN envelopes e ON e.id = q.ref WHERE q.kind = 'envelope' GROUP BY q.recipient, e.sender`,
      ),
      receiptLoads: db.prepare<[], { recipient: string; n: number; bytes: number }>(
        "SELECT recipient, COUNT(*) AS n, SUM(length(payload)) AS bytes FROM queue WHERE kind = 'receipt' GROUP BY recipient",
      ),
      // The delivered receipt still waiting for the same reader, which a read receipt makes redundant.
      queuedDelivered: db.prepare<[string, string, string], { qid: number; bytes: number }>(
        "SELECT qid, length(payload) AS bytes FROM queue WHERE ref = ? AND recipient = ? AND kind = 'receipt' AND payload LIKE ? LIMIT 1",
      ),
      readSent: db.prepare<[string, string], { one: number }>("SELECT 1 AS one FROM metadata WHERE ref = ? AND kind = 'receipt:read' AND sender = ? LIMIT 1"),
      upsertUser: db.prepare(
        `INSERT INTO users (pin, pk, name, created_at, last_seen) VALUES (@pin, @pk, @name, @now, @now)
         ON CONFLICT (pin) DO UPDATE SET name = excluded.name, last_seen = excluded.last_seen`,
      ),
      touchUser: db.prepare('UPDATE users SET last_seen = ?, last_sent = max(last_sent, ?) WHERE pin = ?'),
      addEnvelope: db.prepare('INSERT INTO envelopes (id, sender, json, at) VALUES (?, ?, ?, ?)'),
      getEnvelopeJson: db.prepare<[string], { json: string }>('SELECT json FROM envelopes WHERE id = ?'),
      dropEnvelopeIfDone: db.prepare("DELETE FROM envelopes WHERE id = ? AND NOT EXISTS (SELECT 1 FROM queue WHERE ref = ? AND kind = 'envelope')"),
      enqueue: db.prepare('INSERT INTO queue (recipient, kind, ref, payload, at) VALUES (?, ?, ?, ?, ?)'),
      pending: db.prepare<[string], QueueRow>('SELECT qid, recipient, kind, ref, payload FROM queue WHERE recipient = ? ORDER BY qid'),
      // With the envelope's sender (who gets the delivery receipt), while the envelope is still stored.
      getQueued: db.prepare<[number, string], AckedRow>(
        `SELECT q.qid, q.recipient, q.kind, q.ref, q.payload, e.sender,
                CASE q.kind WHEN 'envelope' THEN coalesce(length(e.json), 0) ELSE length(q.payload) END AS bytes FROM queue q
         LEFT JOIN envelopes e ON q.kind = 'envelope' AND e.id = q.ref WHERE q.qid = ? AND q.recipient = ?`,
      ),
      deleteQueued: db.prepare('DELETE FROM queue WHERE qid = ?'),
      addMetadata: db.prepare('INSERT INTO metadata (at, kind, sender, recipients, conv, ref, bytes, escrow) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      metadataFor: db.prepare<[string], MetadataRow>("SELECT * FROM metadata WHERE ref = ? AND kind = 'envelope' LIMIT 1"),
      recentMetadata: db.prepare<[number], MetadataRow>('SELECT * FROM metadata ORDER BY seq DESC LIMIT ?'),
      queueDepth: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM queue'),
    };
    this.recount();
  }

  /** Rebuild the counted totals (users, queue loads) from the tables. */
  private recount(): void {
    this.userTotal = this.stmt.countUsers.get()?.n ?? 0;
    this.loads.clear();
    this.pairs.clear();
    for (const row of this.stmt.envelopeLoads.all()) {
      const load = this.loadOf(row.recipient);
      load.envelopes += row.n;
      load.envelopeBytes += row.bytes;
      this.pairs.set(pairKey(row.sender, row.recipient), { envelopes: row.n, bytes: row.bytes });
    }
    for (const row of this.stmt.receiptLoads.all()) {
      const load = this.loadOf(row.recipient);
      load.receipts += row.n;
      load.receiptBytes += row.bytes;
    }
  }

  private loadOf(pin: string): QueueLoad {
    let load = this.loads.get(pin);
    if (!load) {
      load = { envelopes: 0, envelopeBytes: 0, receipts: 0, receiptBytes: 0 };
      this.loads.set(pin, load);
    }
    return load;
  }

  /** Count an item in (`sign` 1) or out of (-1) a recipient's queue. */
  private count(recipient: string, kind: 'envelope' | 'receipt', bytes: number, sign: 1 | -1, sender?: string | null): void {
    const load = this.loadOf(recipient);
    if (kind === 'receipt') {
      load.receipts += sign;
      load.receiptBytes += sign * bytes;
    } else {
      load.envelopes += sign;
      load.envelopeBytes += sign * bytes;
      if (sender) {
        const key = pairKey(sender, recipient);
        const pair = this.pairs.get(key) ?? { envelopes: 0, bytes: 0 };
        pair.envelopes += sign;
        pair.bytes += sign * bytes;
        if (pair.envelopes <= 0) this.pairs.delete(key);
        else this.pairs.set(key, pair);
      }
    }
    if (load.envelopes <= 0 && load.receipts <= 0) this.loads.delete(recipient);
  }

  /** What waits in `pin`'s queue now. */
  queueLoad(pin: string): QueueLoad {
    return { ...(this.loads.get(pin) ?? { envelopes: 0, envelopeBytes: 0, receipts: 0, receiptBytes: 0 }) };
  }

  /** What `sender` has waiting in `recipient`'s queue now. */
  pairLoad(sender: string, recipient: string): PairLoad {
    return { ...(this.pairs.get(pairKey(sender, recipient)) ?? { envelopes: 0, bytes: 0 }) };
  }

  /**
   * Users by PIN, read through a cache: every `send` looks up each recipient, and a user row only
   * changes at login and logout, both of which go through this class and drop the entry.
   */
  getUser(pin: string): UserRow | undefined {
    const cached = this.users.get(pin);
    if (cached) return cached;
    const row = this.stmt.getUser.get(pin);
    if (row) this.users.set(pin, row);
    return row;
  }

  /** Forget cached rows and counts (after a rolled-back transaction, whose writes they may reflect). */
  clearCaches(): void {
    this.users.clear();
    this.recount();
  }

  /** How many users the directory holds. */
  userCount(): number {
    return this.userTotal;
  }

  /** The users who sent most recently, then the most recently seen: at most `limit` of them. */
  recentUsers(limit: number): UserRow[] {
    return this.stmt.recentUsers.all(limit);
  }

  /**
   * Users that may be evicted to make room: not seen since `before`, nothing queued for them and
   * no envelope of theirs still waiting for someone (a recipient needs the sender's key to open it).
   * Oldest first; the caller skips those who are online.
   */
  staleUsers(before: number, limit: number): string[] {
    return this.stmt.stale.all(before, limit).map((r) => r.pin);
  }

  /** PINs of users last seen at or before `at`, oldest first (the caller skips those online). */
  usersSeenBefore(at: number): string[] {
    return this.stmt.offlineBefore.all(at).map((r) => r.pin);
  }

  /**
   * Remove users from the directory, with everything queued for them and every envelope of theirs
   * still waiting for someone (without the sender's key no recipient could open it). The metadata
   * log keeps its record. Returns how many users were removed.
   */
  removeUsers(pins: readonly string[]): number {
    const run = this.db.transaction(() => {
      let removed = 0;
      for (const pin of pins) {
        this.users.delete(pin);
        if (this.stmt.deleteUser.run(pin).changes === 0) continue;
        removed += 1;
        this.stmt.deleteQueueOf.run(pin);
        for (const { id } of this.stmt.envelopesFrom.all(pin)) {
          this.stmt.deleteQueueRef.run(id);
          this.stmt.deleteEnvelope.run(id);
        }
      }
      if (removed) this.stmt.orphanEnvelopes.run();
      return removed;
    });
    try {
      return run();
    } finally {
      this.recount();
    }
  }

  allUsers(): UserRow[] {
    return this.stmt.allUsers.all();
  }

  /** Register a user or update its name and last-seen time; true when the PIN is new. */
  upsertUser(pin: string, pk: string, name: string, now: number): boolean {
    const created = this.getUser(pin) === undefined;
    this.users.delete(pin);
    this.stmt.upsertUser.run({ pin, pk, name, now });
    if (created) this.userTotal += 1;
    return created;
  }

  /** Record a user's logout: last seen `now`, and the time of its last envelope (kept in memory while it is online). */
  touchUser(pin: string, now: number, lastSent = 0): void {
    this.users.delete(pin);
    this.stmt.touchUser.run(now, lastSent, pin);
  }

  /** The sender of an already accepted envelope id, if any (from the metadata log). */
  seenSender(id: string): string | undefined {
    return this.stmt.metadataFor.get(id)?.sender;
  }

  /**
   * Accept an envelope in one transaction: keep one copy of it, queue it for each recipient and
   * log its metadata (which also remembers its id). Returns the qid per recipient.
   */
  acceptEnvelope(env: { id: string; from: string; to: string[]; conv: string; escrow: boolean }, json: string, now: number): Map<string, number> {
    const run = this.db.transaction(() => {
      this.stmt.addEnvelope.run(env.id, env.from, json, now);
      const qids = new Map<string, number>();
      for (const pin of env.to) {
        const info = this.stmt.enqueue.run(pin, 'envelope', env.id, '', now);
        qids.set(pin, Number(info.lastInsertRowid));
        this.count(pin, 'envelope', json.length, 1, env.from);
      }
      this.stmt.addMetadata.run(now, 'envelope', env.from, env.to.join(','), env.conv, env.id, json.length, env.escrow ? 1 : 0);
      return qids;
    });
    return run();
  }

  /**
   * Queue a receipt for the original sender; returns its qid. A read receipt replaces the delivered
   * receipt of the same reader still waiting (read implies delivered), so a message leaves at most
   * one receipt per reader in its sender's queue.
   */
  enqueueReceipt(recipient: string, ref: string, payload: string, state: string, by: string, now: number): number {
    const run = this.db.transaction(() => {
      if (state === 'read') {
        const stale = this.stmt.queuedDelivered.get(ref, recipient, `%"by":"${by}","state":"delivered"%`);
        if (stale) {
          this.stmt.deleteQueued.run(stale.qid);
          this.count(recipient, 'receipt', stale.bytes, -1);
        }
      }
      const info = this.stmt.enqueue.run(recipient, 'receipt', ref, payload, now);
      this.count(recipient, 'receipt', payload.length, 1);
      this.stmt.addMetadata.run(now, `receipt:${state}`, by, recipient, '', ref, payload.length, 0);
      return Number(info.lastInsertRowid);
    });
    return run();
  }

  /** Whether `by` has already sent a read receipt for envelope `id` (the metadata log remembers). */
  readReceiptSent(id: string, by: string): boolean {
    return this.stmt.readSent.get(id, by) !== undefined;
  }

  envelopeJson(id: string): string | undefined {
    return this.stmt.getEnvelopeJson.get(id)?.json;
  }

  pendingFor(pin: string): QueueRow[] {
    return this.stmt.pending.all(pin);
  }

  /** Delete acknowledged items that belong to `pin`; returns the rows deleted. */
  ack(pin: string, qids: readonly number[]): AckedRow[] {
    const run = this.db.transaction(() => {
      const done: AckedRow[] = [];
      for (const qid of qids) {
        const row = this.stmt.getQueued.get(qid, pin);
        if (!row) continue;
        this.stmt.deleteQueued.run(qid);
        if (row.kind === 'envelope') this.stmt.dropEnvelopeIfDone.run(row.ref, row.ref);
        this.count(pin, row.kind, row.bytes, -1, row.sender);
        done.push(row);
      }
      return done;
    });
    return run();
  }

  envelopeMetadata(id: string): MetadataRow | undefined {
    return this.stmt.metadataFor.get(id);
  }

  recentMetadata(limit: number): MetadataRow[] {
    return this.stmt.recentMetadata.all(limit);
  }

  queueDepth(): number {
    return this.stmt.queueDepth.get()?.n ?? 0;
  }

  /**
   * Reset the room: forget every user, every queued item, every stored envelope and the whole
   * metadata log (the relay's memory of who talked to whom). The enterprise server's key and the
   * room settings stay. Returns how many users were forgotten, and whether the deleted rows are
   * gone from the disk too (see vacuumAway).
   */
  reset(): { users: number; wiped: boolean } {
    const users = this.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM users').get()?.n ?? 0;
    this.db.transaction(() => {
      for (const table of ['queue', 'envelopes', 'metadata', 'users']) this.db.exec(`DELETE FROM ${table}`);
    })();
    // Deleted rows linger in free pages and in the write-ahead log: rewrite the file without them.
    const wiped = vacuumAway(this.db);
    this.users.clear();
    this.loads.clear();
    this.pairs.clear();
    return { users, wiped };
  }

  /** The enterprise server's key pair as stored (base64), if one was made. */
  serverKey(): { kid: string; pk: string; sk: string } | undefined {
    return this.db.prepare<[], { kid: string; pk: string; sk: string }>('SELECT kid, pk, sk FROM server_key ORDER BY created_at LIMIT 1').get();
  }

  putServerKey(kid: string, pk: string, sk: string, now: number): void {
    this.db.prepare('INSERT INTO server_key (kid, pk, sk, created_at) VALUES (?, ?, ?, ?)').run(kid, pk, sk, now);
  }

  setting(name: string): string | undefined {
    return this.db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE name = ?').get(name)?.value;
  }

  putSetting(name: string, value: string): void {
    this.db.prepare('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(name, value);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function pairKey(sender: string, recipient: string): string {
  return `${sender}>${recipient}`;
}
