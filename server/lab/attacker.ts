/**
 * What an attacker holds: only what a scenario leaked or stole (keys, copies of the archive or of
 * the relay's feed), and what that opens. The attacker console (/attacker) shows this and nothing
 * else. It opens envelopes with the shared archive reader (`openArchived`), the same code the
 * decrypt command uses, never through the regulator's own code: what it opens is what anyone
 * holding these files would open.
 *
 * A scenario adds loot with `leak`; a room reset forgets it all.
 */
import { openArchived, personOf, type ArchiveLine } from '../../shared/archive.ts';
import type { EscrowKeyPair } from '../../shared/crypto.ts';

export type LootKind = 'escrow key' | 'archive copy' | 'feed copy' | 'swapped escrow key' | 'broken export key';

interface LootBase {
  kind: LootKind;
  /** What it is, in words for the class ("the regulator's escrow key, copied from the intercept system"). */
  label: string;
  /** The scenario that leaked it. */
  scenario: string;
}

export type LootInput = (LootBase & { key: EscrowKeyPair; kid: string }) | (LootBase & { lines: () => ArchiveLine[] });

export type Loot = LootInput & { id: number; at: number };

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
}

export interface AttackerView {
  loot: { id: number; kind: LootKind; label: string; scenario: string; at: number; kid?: string; envelopes?: number }[];
  opened: OpenedMessage[];
  counts: {
    /** Envelopes in the copies held. */
    held: number;
    opened: number;
    closed: number;
    people: number;
    conversations: number;
    /** The relay's time of the earliest message opened, or null. */
    earliest: number | null;
  };
}

export class Attacker {
  private loot: Loot[] = [];
  private next = 1;
  private readonly listeners = new Set<() => void>();

  leak(input: LootInput): Loot {
    const item = { ...input, id: this.next++, at: Date.now() } as Loot;
    this.loot.push(item);
    for (const listener of this.listeners) listener();
    return item;
  }

  has(kind: LootKind): boolean {
    return this.loot.some((l) => l.kind === kind);
  }

  /** Everything the loot opens: every key held tried on every envelope held. */
  view(limit = 500): AttackerView {
    const keys = this.loot.filter((l): l is Loot & { key: EscrowKeyPair; kid: string } => 'key' in l);
    const copies = this.loot.filter((l): l is Loot & { lines: () => ArchiveLine[] } => 'lines' in l);
    const seen = new Set<string>();
    const opened: OpenedMessage[] = [];
    let held = 0;
    const people = new Set<string>();
    const conversations = new Set<string>();
    let earliest: number | null = null;
    for (const copy of copies) {
      for (const line of copy.lines()) {
        if (seen.has(line.env.id)) continue;
        seen.add(line.env.id);
        held += 1;
        for (const key of keys) {
          const verdict = openArchived(line, key.key);
          if (verdict.status !== 'opened') continue;
          const to = line.env.to.filter((pin) => pin !== line.env.from);
          for (const pin of [line.env.from, ...to]) if (pin) people.add(pin);
          conversations.add(line.env.conv);
          earliest = earliest === null ? line.at : Math.min(earliest, line.at);
          opened.push({
            seq: line.seq,
            at: line.at,
            id: line.env.id,
            from: line.env.from ? personOf(line, line.env.from) : 'hidden sender',
            to: to.map((pin) => personOf(line, pin)),
            text: verdict.text,
            ...(verdict.group ? { group: verdict.group } : {}),
            by: verdict.via === 'app key' ? 'the shared app key' : key.label,
          });
          break;
        }
      }
    }
    opened.sort((a, b) => a.at - b.at);
    return {
      loot: this.loot.map((l) => ({
        id: l.id,
        kind: l.kind,
        label: l.label,
        scenario: l.scenario,
        at: l.at,
        ...('kid' in l ? { kid: l.kid } : {}),
        ...('lines' in l ? { envelopes: l.lines().length } : {}),
      })),
      opened: opened.slice(-limit),
      counts: { held, opened: opened.length, closed: held - opened.length, people: people.size, conversations: conversations.size, earliest },
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
    for (const listener of this.listeners) listener();
    return n;
  }
}
