/**
 * The client's side of the directory. The relay's welcome carries only a page
 * of it (online users first, then the most recently seen), so the messenger
 * keeps every entry it has seen, in memory and in its injected storage, asks
 * the relay (`lookup`) for the PINs it needs and does not have (the sender of
 * an incoming envelope, remembered contacts), and bounds what it keeps so that
 * no number of throwaway identities grows a tab without limit.
 */
import { fromB64, pinOf } from '../../shared/crypto.ts';
import { DirectoryFailure } from '../../shared/failures.ts';
import { DirectoryEntry, MAX_LOOKUP_PINS, PublicKey } from '../../shared/protocol.ts';
import type { KeyValueStore } from './messenger.ts';

const STORAGE_KEY = 'backdoor-lab.directory';
/** Entries kept in memory; beyond it the oldest offline entries that are nobody's contact go. */
export const MAX_DIRECTORY_ENTRIES = 5000;
/** Entries kept in storage across reloads: contacts first, then the most recently seen. */
export const MAX_SAVED_ENTRIES = 1000;

/** Saved entries, each checked against the protocol's schema (storage is not trusted more than the wire). */
export function loadDirectory(storage: KeyValueStore): DirectoryEntry[] {
  const raw = storage.getItem(STORAGE_KEY);
  if (!raw) return [];
  try {
    const list: unknown = JSON.parse(raw);
    if (!Array.isArray(list)) return [];
    return list.flatMap((item) => {
      const parsed = DirectoryEntry.safeParse(item);
      return parsed.success && derived(parsed.data.pin, parsed.data.pk) ? [{ ...parsed.data, online: false }] : [];
    });
  } catch {
    return [];
  }
}

/** Keep the contacts (`keep`) and then the most recently merged entries, at most MAX_SAVED_ENTRIES. */
export function saveDirectory(storage: KeyValueStore, directory: ReadonlyMap<string, DirectoryEntry>, keep: ReadonlySet<string>): void {
  const contacts = [...directory.values()].filter((e) => keep.has(e.pin));
  const others = [...directory.values()].filter((e) => !keep.has(e.pin));
  const saved = [...contacts.slice(-MAX_SAVED_ENTRIES), ...others.slice(-Math.max(0, MAX_SAVED_ENTRIES - contacts.length))];
  storage.setItem(STORAGE_KEY, JSON.stringify(saved));
}

/**
 * Put entries into the directory, newest last (a Map keeps insertion order, which is what
 * saveDirectory and trimDirectory go by), then trim it.
 */
export function mergeDirectory(directory: Map<string, DirectoryEntry>, entries: readonly DirectoryEntry[], keep: ReadonlySet<string>): void {
  for (const entry of entries) {
    directory.delete(entry.pin);
    directory.set(entry.pin, entry);
  }
  trimDirectory(directory, keep, MAX_DIRECTORY_ENTRIES);
}

/** Drop the oldest offline entries that are not in `keep` until at most `max` remain. */
export function trimDirectory(directory: Map<string, DirectoryEntry>, keep: ReadonlySet<string>, max: number): void {
  if (directory.size <= max) return;
  for (const [pin, entry] of directory) {
    if (directory.size <= max) return;
    if (!entry.online && !keep.has(pin)) directory.delete(pin);
  }
}

/**
 * PINs to look up: each asked once per connection until the relay answers, in frames of at most
 * MAX_LOOKUP_PINS.
 */
export class Lookups {
  private readonly asked = new Set<string>();

  /** The frames to send for `pins` not asked yet on this connection. */
  frames(pins: Iterable<string>): string[][] {
    const fresh = [...new Set(pins)].filter((pin) => !this.asked.has(pin));
    for (const pin of fresh) this.asked.add(pin);
    const out: string[][] = [];
    for (let i = 0; i < fresh.length; i += MAX_LOOKUP_PINS) out.push(fresh.slice(i, i + MAX_LOOKUP_PINS));
    return out;
  }

  /** The relay answered for these PINs (found or unknown): they may be asked again later. */
  answered(pins: Iterable<string>): void {
    for (const pin of pins) this.asked.delete(pin);
  }

  /** A new connection: nothing is in flight any more. */
  reset(): void {
    this.asked.clear();
  }
}

const PINNED_KEY = 'backdoor-lab.pinned-keys';

/** A directory entry this client refused, and why. */
export interface RefusedEntry {
  pin: string;
  code: DirectoryFailure;
  /** The key the relay offered. */
  offered: string;
  /** The key this client keeps for the PIN (for a key change). */
  kept?: string;
}

/**
 * Trust on first use. The key this client first saw for each PIN is kept (in memory and in its
 * storage); an entry whose PIN is not derived from its key is refused, and so is an entry that
 * offers another key for a PIN already known. The relay checks both too, so either one means the
 * relay — or someone in its place — lies. The messenger reports each refusal as an event; a later
 * issue builds verification and key transparency on it.
 */
export class KeyPins {
  private readonly keys = new Map<string, string>();

  constructor(private readonly storage: KeyValueStore) {
    const raw = storage.getItem(PINNED_KEY);
    if (!raw) return;
    try {
      const saved: unknown = JSON.parse(raw);
      if (!saved || typeof saved !== 'object') return;
      for (const [pin, pk] of Object.entries(saved as Record<string, unknown>)) {
        if (typeof pk === 'string' && PublicKey.safeParse(pk).success && derived(pin, pk)) this.keys.set(pin, pk);
      }
    } catch {
      // Unreadable: keys are pinned again as they are seen.
    }
  }

  /** The key kept for a PIN, if any. */
  keyOf(pin: string): string | undefined {
    return this.keys.get(pin);
  }

  /** Sort the relay's entries into those this client takes and those it refuses. New PINs are pinned. */
  check(entries: readonly DirectoryEntry[], keep: ReadonlySet<string>): { accepted: DirectoryEntry[]; refused: RefusedEntry[] } {
    const accepted: DirectoryEntry[] = [];
    const refused: RefusedEntry[] = [];
    let changed = false;
    for (const entry of entries) {
      if (!derived(entry.pin, entry.pk)) {
        refused.push({ pin: entry.pin, code: DirectoryFailure.PinNotDerived, offered: entry.pk });
        continue;
      }
      const first = this.keys.get(entry.pin);
      if (first === undefined) {
        this.keys.set(entry.pin, entry.pk);
        changed = true;
      } else if (first !== entry.pk) {
        refused.push({ pin: entry.pin, code: DirectoryFailure.KeyChanged, offered: entry.pk, kept: first });
        continue;
      }
      accepted.push(entry);
    }
    if (changed) this.save(keep);
    return { accepted, refused };
  }

  /** Saved with the contacts first; beyond MAX_DIRECTORY_ENTRIES the oldest other pins are forgotten. */
  private save(keep: ReadonlySet<string>): void {
    if (this.keys.size > MAX_DIRECTORY_ENTRIES) {
      for (const pin of this.keys.keys()) {
        if (this.keys.size <= MAX_DIRECTORY_ENTRIES) break;
        if (!keep.has(pin)) this.keys.delete(pin);
      }
    }
    this.storage.setItem(PINNED_KEY, JSON.stringify(Object.fromEntries(this.keys)));
  }
}

/** True when `pin` is the PIN of the Ed25519 public key `pk` (base64). */
function derived(pin: string, pk: string): boolean {
  try {
    return pinOf(fromB64(pk)) === pin;
  } catch {
    return false;
  }
}
