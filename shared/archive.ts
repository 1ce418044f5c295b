/**
 * The intercept archive, defined once: the regulator stores it in this table, exports it as these
 * lines (archive.jsonl), and the decrypt command, the attacker's tools and the tests read it with
 * this parser and open it with `openArchived`. docs/wire-format.md, section 7.
 */
import { z } from 'zod';
import { fromB64, type EscrowKeyPair } from './crypto.ts';
import { openWithAppKey, openWithEscrow } from './envelope.ts';
import { OpenFailure, type OpenFailure as OpenCode } from './failures.ts';
import { AnyEnvelope, DisplayName, Pin, PublicKey, describeBody, groupNameOf, keysOf, type MessageBody } from './protocol.ts';

/**
 * One line of archive.jsonl: the archive's own counter, the relay's time, the sender's directory key
 * at the time (so the signature can be checked offline), the names the relay knew for the sender
 * and recipients (since protocol v2; absent in older lines), and the envelope exactly as it passed.
 */
export const ArchiveLine = z
  .object({
    seq: z.number().int(),
    at: z.number(),
    senderPk: z.union([PublicKey, z.literal('')]),
    names: z.record(Pin, DisplayName).optional(),
    env: AnyEnvelope,
  })
  .strict();
export type ArchiveLine = z.infer<typeof ArchiveLine>;

/** The regulator's archive table (SQLite). `names` is JSON; older databases get it added by `migrateArchive`. */
export const ARCHIVE_TABLE = `
CREATE TABLE IF NOT EXISTS archive (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  env_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  sender_pk TEXT NOT NULL,
  json TEXT NOT NULL,
  names TEXT NOT NULL DEFAULT '{}'
);`;

/** A stored archive row, as `SELECT seq, at, sender_pk, json, names FROM archive` returns it. */
export interface ArchiveRow {
  seq: number;
  at: number;
  sender_pk: string;
  json: string;
  names: string;
}

/** Add the columns later versions need to an archive table made by an older one. */
export function migrateArchive(db: { prepare(sql: string): { all(): unknown[] }; exec(sql: string): unknown }): void {
  const columns = (db.prepare('PRAGMA table_info(archive)').all() as { name: string }[]).map((c) => c.name);
  if (!columns.includes('names')) db.exec("ALTER TABLE archive ADD COLUMN names TEXT NOT NULL DEFAULT '{}'");
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  return `${issue?.path.length ? issue.path.join('.') : '(line)'}: ${issue?.message ?? 'invalid'}`;
}

/** A stored row as an archive line; a row that does not parse (a damaged database) is reported, never thrown. */
export function lineOfRow(row: ArchiveRow): Parsed<ArchiveLine> {
  let env: unknown;
  let names: unknown;
  try {
    env = JSON.parse(row.json);
    names = JSON.parse(row.names || '{}');
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  const parsed = ArchiveLine.safeParse({
    seq: row.seq,
    at: row.at,
    senderPk: row.sender_pk,
    ...(names && typeof names === 'object' && Object.keys(names).length ? { names } : {}),
    env,
  });
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, reason: `not an archive line: ${describeIssue(parsed.error)}` };
}

/** One line of archive.jsonl, as text (without its newline). */
export function parseArchiveLine(text: string): Parsed<ArchiveLine> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  const parsed = ArchiveLine.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, reason: `not an archive line: ${describeIssue(parsed.error)}` };
}

/** An archive line as written to archive.jsonl (one line, UTF-8, followed by `\n` in the file). */
export const formatArchiveLine = (line: ArchiveLine): string => JSON.stringify(line);

/**
 * What an escrow key does with one archived envelope. Three outcomes, each true of the bytes:
 * opened (the body, read with the key); end-to-end (no escrow field at all); not opened (an escrow
 * field is there but does not open with this key: forged, sealed to another key, or the envelope
 * altered), with the stable code saying which.
 */
export type ArchiveVerdict =
  | { status: 'opened'; via: 'escrow key' | 'app key'; body: MessageBody; text: string; group: string | undefined }
  | { status: 'end-to-end'; code: typeof OpenFailure.NoEscrowField; reason: string }
  | { status: 'not-opened'; code: OpenCode; reason: string };

export function openArchived(line: Pick<ArchiveLine, 'env' | 'senderPk'>, key: EscrowKeyPair): ArchiveVerdict {
  const senderPk = line.senderPk ? fromB64(line.senderPk) : undefined;
  const model = keysOf(line.env).model;
  if (model === 'app-key') {
    // Whoever holds the escrow key has the app too: every copy ships the shared key (BBM PIN messages).
    const viaApp = openWithAppKey(line.env, undefined, senderPk);
    if (viaApp.ok) return { status: 'opened', via: 'app key', body: viaApp.value, text: describeBody(viaApp.value), group: groupNameOf(viaApp.value) };
    return { status: 'not-opened', code: viaApp.code, reason: viaApp.reason };
  }
  if (model === 'server-key') return { status: 'not-opened', code: OpenFailure.ServerHeld, reason: 'the enterprise server holds the key: a demand on its operator opens it' };
  const result = openWithEscrow(line.env, key, senderPk);
  if (result.ok) return { status: 'opened', via: 'escrow key', body: result.value, text: describeBody(result.value), group: groupNameOf(result.value) };
  if (model === 'e2e' && result.code === OpenFailure.NoEscrowField) return { status: 'end-to-end', code: OpenFailure.NoEscrowField, reason: result.reason };
  return { status: 'not-opened', code: result.code, reason: result.reason };
}

/** "Alice (231568D1)" when the line names the PIN, the PIN alone otherwise. */
export const personOf = (line: Pick<ArchiveLine, 'names'>, pin: string): string => {
  const name = line.names?.[pin];
  return name ? `${name} (${pin})` : pin;
};
