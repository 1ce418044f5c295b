/**
 * The room reset's promise that deleted rows are on the disk nowhere rests on vacuumAway: VACUUM,
 * then a TRUNCATE checkpoint that must really empty the write-ahead log. A checkpoint that answers
 * busy (another connection in the way) must not be taken for success.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, vacuumAway } from '../../server/store.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true, maxRetries: 5 });
});

function filled(): { db: Database.Database; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'bdl-vacuum-'));
  dirs.push(dir);
  const file = join(dir, 'v.db');
  const db = openDatabase(file, 'test');
  db.exec('CREATE TABLE t (x TEXT)');
  const put = db.prepare('INSERT INTO t VALUES (?)');
  for (let i = 0; i < 200; i++) put.run(`secret-row-${i}-${'x'.repeat(200)}`);
  db.exec('DELETE FROM t');
  return { db, file };
}

const onDisk = (file: string): string =>
  [file, `${file}-wal`]
    .filter(existsSync)
    .map((f) => readFileSync(f).toString('latin1'))
    .join('');

describe('vacuumAway', () => {
  it('leaves the deleted rows in neither the database file nor its write-ahead log, which is emptied', () => {
    const { db, file } = filled();
    expect(onDisk(file), 'not vacuous: the deleted rows are on disk before').toContain('secret-row-7-');
    expect(vacuumAway(db)).toBe(true);
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(onDisk(file)).not.toContain('secret-row-');
    db.close();
  });

  it('says false, not true, when another connection keeps the log from being emptied (a reader on an old snapshot)', () => {
    const { db, file } = filled();
    const reader = new Database(file, { readonly: true });
    reader.exec('BEGIN');
    reader.prepare('SELECT COUNT(*) FROM t').get(); // holds a read snapshot: the log cannot be reset past it
    expect(vacuumAway(db)).toBe(false);
    reader.exec('COMMIT');
    reader.close();
    expect(vacuumAway(db)).toBe(true);
    expect(onDisk(file)).not.toContain('secret-row-');
    db.close();
  });
});

describe('closing a database', () => {
  it('leaves nothing to happen after close() returns: the checkpointer thread lets go first, so the -wal and -shm files are already gone and the folder can be removed at once', () => {
    const { db, file } = filled();
    expect(existsSync(`${file}-wal`), 'not vacuous: open, the log file exists').toBe(true);
    db.close();
    expect(readdirSync(join(file, '..'))).toEqual(['v.db']);
  });
});
