/**
 * What an attacker holds: only what a scenario leaked or stole (keys, copies of the archive or of
 * the relay's feed, an export-grade public key to break), and what that opens. The attacker console
 * (/attacker) shows this and nothing else. It opens envelopes with the shared archive reader
 * (`openArchived`), the same code the decrypt command uses, never through the regulator's own code:
 * what it opens is what anyone holding these files would open.
 *
 * A scenario adds loot with `leak` (or `stealFiles`, a copy of regulator.db read as a thief would);
 * the console's brute force hands back a secret with `found`, checked here before anything is
 * leaked; a room reset forgets it all.
 */
import Database from 'better-sqlite3';
import { lineOfRow, openArchived, personOf, type ArchiveLine, type ArchiveRow, type ArchiveVerdict } from '../../shared/archive.ts';
import { escrowKeyPairFromSecret, fromB64, type EscrowKeyPair } from '../../shared/crypto.ts';
import { exportBitsProblem, exportKeyPair, type ExportGradeTarget } from '../../shared/export-grade.ts';
import { keysOf, type AnyEnvelope } from '../../shared/protocol.ts';

export type LootKind = 'escrow key' | 'archive copy' | 'feed copy' | 'swapped escrow key' | 'broken export key' | 'export-grade public key';

interface LootBase {
  kind: LootKind;
  /** What it is, in words for the class ("the regulator's escrow key, copied from the intercept system"). */
  label: string;
  /** The scenario that leaked it. */
  scenario: string;
}

export type LootInput =
  | (LootBase & { key: EscrowKeyPair; kid: string })
  | (LootBase & { lines: () => ArchiveLine[] })
  /** A public key to break (export-grade escrow): no private key, only what the search needs. */
  | (LootBase & { target: ExportGradeTarget });

export type Loot = LootInput & { id: number; at: number };

type KeyLoot = Loot & { key: EscrowKeyPair; kid: string };
type CopyLoot = Loot & { lines: () => ArchiveLine[] };
type TargetLoot = Loot & { target: ExportGradeTarget };

/** One message an attacker opened, as the console lists it. */
export interface OpenedMessage {
  seq: number;
  at: number;
  id: string;
  from: string;
  to: string[];
  text: string;
  group?: string;
  /** Which loot opened it: a key's label, or "the shared app key". */
  by: string;
  /** The envelope as the copy holds it, for the shared envelope view. */
  env: AnyEnvelope;
}

/** One envelope of the copies that none of the keys held opens, and why. */
export interface ClosedMessage {
  seq: number;
  at: number;
  id: string;
  from: string;
  to: string[];
  /** 'end-to-end': no escrow field at all; 'not-opened': a field or key the loot does not open. */
  status: 'end-to-end' | 'not-opened';
  reason: string;
  env: AnyEnvelope;
}

export interface AttackerView {
  loot: { id: number; kind: LootKind; label: string; scenario: string; at: number; kid?: string; envelopes?: number }[];
  /** Export-grade public keys held, and whether the loot holds the private key found for each yet. */
  targets: (ExportGradeTarget & { loot: number; scenario: string; at: number; broken: boolean })[];
  /** The latest opened (at most `limit`), oldest first. */
  opened: OpenedMessage[];
  /** The latest closed (at most `limit`), oldest first. */
  closed: ClosedMessage[];
  counts: {
    /** Envelopes in the copies held. */
    held: number;
    opened: number;
    closed: number;
    /** Of the closed: end to end, with no escrow field to open. */
    endToEnd: number;
    people: number;
    conversations: number;
    /** The relay's time of the earliest message opened, or null. */
    earliest: number | null;
  };
}

/** A posted "found key" the attacker's loot does not confirm: said in words, nothing leaked. */
export class AttackerError extends Error {
  constructor(
    readonly code: 'no_target' | 'wrong_key',
    message: string,
  ) {
    super(message);
  }
}

/** A conversation as the attacker can tell it from the envelope: a group's id, or the pair of a direct message. */
const conversationOf = (env: AnyEnvelope): string => (env.conv === 'dm' ? `dm:${[env.from, ...env.to].filter(Boolean).sort().join(',')}` : env.conv);

export class Attacker {
  private loot: Loot[] = [];
  private next = 1;
  private readonly listeners = new Set<() => void>();
  /** What each key did with each envelope, by key loot and envelope: tried once, not on every look. */
  private verdicts = new Map<string, ArchiveVerdict>();

  leak(input: LootInput): Loot {
    const item = { ...input, id: this.next++, at: Date.now() } as Loot;
    this.loot.push(item);
    for (const listener of this.listeners) listener();
    return item;
  }

  has(kind: LootKind): boolean {
    return this.loot.some((l) => l.kind === kind);
  }

  /**
   * A copy of the regulator's database file (regulator.db), read as a thief would read it: every
   * escrow key in its key table and every envelope in its archive table, parsed with the shared
   * archive reader. Leaks one loot item per key and one for the archive; returns the key ids and
   * the envelopes copied.
   */
  stealFiles(file: Buffer, scenario: string): { kids: string[]; lines: ArchiveLine[] } {
    // A copy of a database in WAL mode says so in its header (bytes 18-19 = 2), and SQLite cannot
    // open such an image in memory: read it as a rollback-journal database (1), the content unchanged.
    const image = Buffer.from(file);
    if (image.length > 19 && image[18] === 2 && image[19] === 2) image[18] = image[19] = 1;
    const db = new Database(image, { readonly: true });
    let keyRows: { kid: string; sk: string }[];
    let lines: ArchiveLine[];
    try {
      keyRows = db.prepare<[], { kid: string; sk: string }>('SELECT kid, sk FROM escrow_key ORDER BY created_at, rowid').all();
      lines = [];
      for (const row of db.prepare<[], ArchiveRow>('SELECT seq, at, sender_pk, json, names FROM archive ORDER BY seq').iterate()) {
        const line = lineOfRow(row);
        if (line.ok) lines.push(line.value);
      }
    } finally {
      db.close();
    }
    const kids = keyRows.map((row) => {
      const key = escrowKeyPairFromSecret(fromB64(row.sk));
      // A second theft copies the same key again: held once.
      if (!this.loot.some((l) => 'key' in l && l.kid === key.kid))
        this.leak({ kind: 'escrow key', label: `escrow key ${key.kid}, from the copied regulator.db`, scenario, key, kid: key.kid });
      return key.kid;
    });
    // A second theft copies the first one's envelopes again: the loot keeps each envelope once (what
    // the console opens is the same), so a lesson that breaches again and again does not hold the
    // archive again and again in memory.
    const earlier = this.loot.filter((l): l is CopyLoot => 'lines' in l);
    const held = new Set(earlier.flatMap((c) => c.lines().map((l) => `${l.seq}:${l.env.id}`)));
    const fresh = held.size ? lines.filter((l) => !held.has(`${l.seq}:${l.env.id}`)) : lines;
    const label = earlier.length
      ? `the intercept archive again (${lines.length} envelopes, ${fresh.length} not in an earlier copy), from the copied regulator.db`
      : `the intercept archive (${lines.length} envelopes), from the copied regulator.db`;
    this.leak({ kind: 'archive copy', label, scenario, lines: () => fresh });
    return { kids, lines };
  }

  /**
   * The brute force's answer for an export-grade public key held: `secret` is checked by deriving
   * its key pair with the published derivation; only if that is the key with id `kid` is the private
   * key leaked. A wrong secret, or a key id the loot holds no public key for, is refused in words.
   */
  found(kid: string, secret: number): Loot {
    const target = this.loot.find((l): l is TargetLoot => 'target' in l && l.target.kid === kid);
    if (!target) throw new AttackerError('no_target', `the attacker holds no export-grade public key ${kid}: there is nothing to break`);
    const { bits } = target.target;
    if (exportBitsProblem(bits) !== null || !Number.isInteger(secret) || secret < 0 || secret >= 2 ** bits) {
      throw new AttackerError('wrong_key', `secret ${secret} is not one of the 2^${bits} secrets of key ${kid}: nothing leaked`);
    }
    const key = exportKeyPair(secret);
    if (key.kid !== kid) throw new AttackerError('wrong_key', `secret ${secret} derives key ${key.kid}, not the export-grade key ${kid}: not its private key, nothing leaked`);
    const held = this.loot.find((l): l is KeyLoot => 'key' in l && l.kid === kid);
    if (held) return held;
    return this.leak({ kind: 'broken export key', label: `export-grade key ${kid}, found by brute force (secret ${secret} of 2^${bits})`, scenario: target.scenario, key, kid });
  }

  private verdict(key: KeyLoot, line: ArchiveLine): ArchiveVerdict {
    const memo = `${key.id}:${line.env.id}:${line.seq}`;
    let verdict = this.verdicts.get(memo);
    if (!verdict) {
      verdict = openArchived(line, key.key);
      this.verdicts.set(memo, verdict);
    }
    return verdict;
  }

  /** Everything the loot opens: every key held tried on every envelope held. */
  view(limit = 500): AttackerView {
    const keys = this.loot.filter((l): l is KeyLoot => 'key' in l);
    const copies = this.loot.filter((l): l is CopyLoot => 'lines' in l);
    const seen = new Set<string>();
    const opened: OpenedMessage[] = [];
    const closed: ClosedMessage[] = [];
    let held = 0;
    let endToEnd = 0;
    const people = new Set<string>();
    const conversations = new Set<string>();
    let earliest: number | null = null;
    for (const copy of copies) {
      for (const line of copy.lines()) {
        if (seen.has(line.env.id)) continue;
        seen.add(line.env.id);
        held += 1;
        const to = line.env.to.filter((pin) => pin !== line.env.from);
        const from = line.env.from ? personOf(line, line.env.from) : 'hidden sender';
        let last: ArchiveVerdict | null = null;
        for (const key of keys) {
          const verdict = this.verdict(key, line);
          last = verdict;
          if (verdict.status !== 'opened') continue;
          for (const pin of [line.env.from, ...to]) if (pin) people.add(pin);
          conversations.add(conversationOf(line.env));
          earliest = earliest === null ? line.at : Math.min(earliest, line.at);
          opened.push({
            seq: line.seq,
            at: line.at,
            id: line.env.id,
            from,
            to: to.map((pin) => personOf(line, pin)),
            text: verdict.text,
            ...(verdict.group ? { group: verdict.group } : {}),
            by: verdict.via === 'app key' ? 'the shared app key' : key.label,
            env: line.env,
          });
          break;
        }
        if (last?.status === 'opened') continue;
        const status = (last ? last.status === 'end-to-end' : keysOf(line.env).model === 'e2e') ? 'end-to-end' : 'not-opened';
        if (status === 'end-to-end') endToEnd += 1;
        closed.push({
          seq: line.seq,
          at: line.at,
          id: line.env.id,
          from,
          to: to.map((pin) => personOf(line, pin)),
          status,
          reason: last ? last.reason : 'the attacker holds no key to try',
          env: line.env,
        });
      }
    }
    opened.sort((a, b) => a.at - b.at);
    closed.sort((a, b) => a.at - b.at);
    const keyKids = new Set(keys.map((k) => k.kid));
    return {
      loot: this.loot.map((l) => ({
        id: l.id,
        kind: l.kind,
        label: l.label,
        scenario: l.scenario,
        at: l.at,
        ...('kid' in l ? { kid: l.kid } : 'target' in l ? { kid: l.target.kid } : {}),
        ...('lines' in l ? { envelopes: l.lines().length } : {}),
      })),
      targets: this.loot.filter((l): l is TargetLoot => 'target' in l).map((l) => ({ ...l.target, loot: l.id, scenario: l.scenario, at: l.at, broken: keyKids.has(l.target.kid) })),
      opened: limit > 0 ? opened.slice(-limit) : [],
      closed: limit > 0 ? closed.slice(-limit) : [],
      counts: { held, opened: opened.length, closed: held - opened.length, endToEnd, people: people.size, conversations: conversations.size, earliest },
    };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The room's reset: the attacker forgets everything. */
  reset(): number {
    const n = this.loot.length;
    this.loot = [];
    this.verdicts = new Map();
    for (const listener of this.listeners) listener();
    return n;
  }
}
