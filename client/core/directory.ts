/**
 * The client's side of the directory. The relay's welcome carries only a page
 * of it (online users first, then the most recently seen), so the messenger
 * keeps every entry it has seen, in memory and in its injected storage, asks
 * the relay (`lookup`) for the PINs it needs and does not have (the sender of
 * an incoming envelope, remembered contacts), and bounds what it keeps so that
 * no number of throwaway identities grows a tab without limit.
 */
import { DirectoryEntry, MAX_LOOKUP_PINS } from '../../shared/protocol.ts';
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
      return parsed.success ? [{ ...parsed.data, online: false }] : [];
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
