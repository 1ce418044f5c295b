/**
 * Scan what a party stored on disk: every row of every table of a SQLite file
 * (read with its own read-only connection, not through the code under test)
 * plus the raw bytes of the database file, its write-ahead log and its shared
 * memory file. Tests search the dump for secrets (message texts, the escrow
 * secret key) in every encoding a careless store might use.
 */
import Database from 'better-sqlite3';
import { existsSync, readFileSync } from 'node:fs';

export interface StoreDump {
  /** Table name → its rows, as read by a separate read-only connection. */
  tables: Record<string, unknown[]>;
  /** Files read byte for byte (the db, -wal, -shm when present) and their sizes. */
  files: Record<string, number>;
  /** The rows as JSON followed by every file's bytes as latin1: one searchable string. */
  text: string;
}

function cell(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** Dump everything stored in the SQLite file `file` (tables and raw bytes of file, WAL and SHM). */
export function dumpSqlite(file: string): StoreDump {
  if (!existsSync(file)) throw new Error(`no database file at ${file}`);
  const tables: Record<string, unknown[]> = {};
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const names = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
    for (const { name } of names) {
      const rows = db.prepare(`SELECT * FROM "${name.replace(/"/g, '""')}"`).all() as Record<string, unknown>[];
      tables[name] = rows.map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, cell(v)])));
    }
  } finally {
    db.close();
  }
  const files: Record<string, number> = {};
  const parts = [JSON.stringify(tables)];
  for (const path of [file, `${file}-wal`, `${file}-shm`]) {
    if (!existsSync(path)) continue;
    const bytes = readFileSync(path);
    files[path] = bytes.length;
    parts.push(bytes.toString('latin1'));
  }
  return { tables, files, text: parts.join('\n') };
}

/**
 * The forms a secret could take in a dump: its UTF-8 bytes (as latin1, the way
 * the dump holds raw bytes), as itself, hex (both cases) and standard or
 * URL-safe base64 at each of the three byte alignments it could start at.
 */
export function encodingsOf(secret: string | Uint8Array): string[] {
  const bytes = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
  const forms = new Set<string>([bytes.toString('latin1'), bytes.toString('hex'), bytes.toString('hex').toUpperCase()]);
  if (typeof secret === 'string') forms.add(secret);
  for (let shift = 0; shift < 3; shift++) {
    // Base64 of the secret starting `shift` bytes into a 3-byte group: pad in front, then keep
    // only the characters that depend on the secret's bytes alone.
    const padded = Buffer.concat([Buffer.alloc(shift), bytes]);
    const b64 = padded.toString('base64').replace(/=+$/, '');
    const start = Math.ceil((shift * 8) / 6);
    const end = Math.floor((padded.length * 8) / 6);
    const core = b64.slice(start, end);
    if (core.length >= 8) {
      forms.add(core);
      forms.add(core.replace(/\+/g, '-').replace(/\//g, '_'));
    }
  }
  return [...forms].filter((f) => f.length >= 4);
}

/** The encodings of `secret` found in `haystack` (empty when none is). */
export function findSecret(haystack: string, secret: string | Uint8Array): string[] {
  return encodingsOf(secret).filter((form) => haystack.includes(form));
}
