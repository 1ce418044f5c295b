/**
 * The metadata picture: who talked to whom, when, how often and how much — built only from what
 * the relay itself logged (the metadata table), with no key and no tap. Sealed-sender messages are
 * there too, with their sender unknown: the relay still has the recipient, the time and the size.
 */
import type { RelayStore } from '../store.ts';

export interface MetadataPair {
  /** The sender's PIN, or null for a sealed-sender message (the relay does not know it). */
  from: string | null;
  to: string;
  count: number;
  bytes: number;
  first: number;
  last: number;
}

export interface MetadataPicture {
  people: { pin: string; name: string }[];
  pairs: MetadataPair[];
  envelopes: number;
  /** Envelopes whose sender the relay does not know (sealed sender). */
  sealed: number;
  bytes: number;
  since: number | null;
}

/** At most this many of the newest log rows go into the picture. */
const ROWS = 20_000;

export function metadataPicture(store: RelayStore): MetadataPicture {
  const rows = store.recentMetadata(ROWS).filter((r) => r.kind === 'envelope');
  const pairs = new Map<string, MetadataPair>();
  let bytes = 0;
  let sealed = 0;
  let since: number | null = null;
  for (const row of rows) {
    bytes += row.bytes;
    if (!row.sender) sealed += 1;
    since = since === null ? row.at : Math.min(since, row.at);
    for (const to of row.recipients.split(',').filter(Boolean)) {
      const key = `${row.sender}>${to}`;
      const pair = pairs.get(key) ?? { from: row.sender || null, to, count: 0, bytes: 0, first: row.at, last: row.at };
      pair.count += 1;
      pair.bytes += row.bytes;
      pair.first = Math.min(pair.first, row.at);
      pair.last = Math.max(pair.last, row.at);
      pairs.set(key, pair);
    }
  }
  const pins = new Set([...pairs.values()].flatMap((p) => (p.from ? [p.from, p.to] : [p.to])));
  const people = [...pins].map((pin) => ({ pin, name: store.getUser(pin)?.name ?? pin })).sort((a, b) => a.name.localeCompare(b.name));
  return { people, pairs: [...pairs.values()].sort((a, b) => b.count - a.count), envelopes: rows.length, sealed, bytes, since };
}
