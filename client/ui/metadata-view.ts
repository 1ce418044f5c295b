/**
 * The metadata picture: who wrote to whom, how often, how much and when — drawn from GET
 * /api/lab/metadata, which is built from the relay's own log with no key and no tap. A matrix
 * (rows the senders, columns the recipients), each cell the number of messages and their bytes,
 * shaded by count; sealed-sender messages form a "hidden sender" row, because the relay still has
 * their recipient, time and size. Large type, for a projector: a picture, not a log dump.
 */
import { bytes, clock, el } from './dom.ts';
import type { MetadataPicture } from './lab-api.ts';

type Pair = MetadataPicture['pairs'][number];

/** Five shades, by share of the busiest cell (classes, not inline styles: the CSP allows no inline style). */
const shade = (count: number, max: number): string => `shade-${Math.max(1, Math.ceil((5 * count) / max))}`;

/** "10:02" or "10:02–10:07" (minutes: the cell's title has the seconds). */
const minutes = (ts: number) => clock(ts).slice(0, 5);
const span = (first: number, last: number): string => (minutes(first) === minutes(last) ? minutes(first) : `${minutes(first)}–${minutes(last)}`);

export function metadataTotals(pic: MetadataPicture): string {
  if (!pic.envelopes) return '';
  const last = Math.max(...pic.pairs.map((p) => p.last));
  return [
    `${pic.envelopes} ${pic.envelopes === 1 ? 'message' : 'messages'}`,
    bytes(pic.bytes),
    `${pic.pairs.length} ${pic.pairs.length === 1 ? 'pair' : 'pairs'}`,
    pic.since !== null ? `first ${clock(pic.since)}, last ${clock(last)}` : '',
    pic.sealed ? `${pic.sealed} with the sender hidden (sealed sender)` : 'every sender known',
  ]
    .filter(Boolean)
    .join(' · ');
}

export function metadataMatrix(pic: MetadataPicture): HTMLElement {
  if (!pic.pairs.length)
    return el('p', {
      class: 'empty',
      testid: 'metadata-empty',
      text: 'No messages yet. Run a scene, or write from a chat tab: every envelope the relay passes adds to this picture.',
    });
  const names = new Map(pic.people.map((p) => [p.pin, p.name]));
  const order = (pins: Iterable<string>) => [...new Set(pins)].sort((a, b) => (names.get(a) ?? a).localeCompare(names.get(b) ?? b) || a.localeCompare(b));
  const senders = order(pic.pairs.flatMap((p) => (p.from ? [p.from] : [])));
  const recipients = order(pic.pairs.map((p) => p.to));
  const hidden = pic.pairs.some((p) => p.from === null);
  const cells = new Map(pic.pairs.map((p) => [`${p.from ?? ''}>${p.to}`, p]));
  const max = Math.max(...pic.pairs.map((p) => p.count));
  const person = (pin: string) => el('span', { class: 'who' }, el('span', { class: 'name', text: names.get(pin) ?? pin }), el('span', { class: 'pin', text: pin }));
  const sum = (pairs: Pair[]) => ({ count: pairs.reduce((n, p) => n + p.count, 0), bytes: pairs.reduce((n, p) => n + p.bytes, 0) });
  const totalCell = (pairs: Pair[], testid: string, data: Record<string, string>) => {
    const t = sum(pairs);
    return el(
      'td',
      { class: 'total', testid, data: { ...data, count: String(t.count) } },
      el('div', { class: 'count', text: String(t.count) }),
      el('div', { class: 'bytes', text: bytes(t.bytes) }),
    );
  };

  const row = (from: string | null) => {
    const key = from ?? '';
    const mine = pic.pairs.filter((p) => p.from === from);
    return el(
      'tr',
      { class: from === null ? 'hidden-row' : '', testid: 'matrix-row', data: { from: from ?? 'hidden' } },
      el(
        'th',
        { attrs: { scope: 'row' } },
        from === null
          ? el(
              'span',
              { class: 'who' },
              el('span', { class: 'name hidden-sender', text: 'hidden sender' }),
              el('span', { class: 'pin', text: 'sealed: the relay does not know who' }),
            )
          : person(from),
      ),
      ...recipients.map((to) => {
        const pair = cells.get(`${key}>${to}`);
        if (!pair) return el('td', { class: from === to ? 'self' : 'none', text: '·' });
        return el(
          'td',
          {
            class: `cell ${shade(pair.count, max)}`,
            testid: 'matrix-cell',
            data: { from: from ?? 'hidden', to, count: String(pair.count), bytes: String(pair.bytes) },
            title: `${from === null ? 'Someone (sealed sender)' : (names.get(from) ?? from)} → ${names.get(to) ?? to}: ${pair.count} ${pair.count === 1 ? 'message' : 'messages'}, ${bytes(pair.bytes)}, first ${clock(pair.first)}, last ${clock(pair.last)}`,
          },
          el('div', { class: 'count', text: String(pair.count) }),
          el('div', { class: 'bytes', text: bytes(pair.bytes) }),
          el('div', { class: 'when', text: span(pair.first, pair.last) }),
        );
      }),
      totalCell(mine, 'matrix-row-total', { from: from ?? 'hidden' }),
    );
  };

  return el(
    'table',
    { class: 'matrix', testid: 'metadata-matrix' },
    el('caption', { class: 'hint', text: 'Each cell: messages from the row to the column, their bytes, and the first–last time. Darker is more.' }),
    el(
      'thead',
      null,
      el(
        'tr',
        null,
        el('th', { class: 'corner', text: 'from ↓  to →' }),
        ...recipients.map((to) => el('th', { attrs: { scope: 'col' } }, person(to))),
        el('th', { class: 'total', text: 'sent' }),
      ),
    ),
    el('tbody', null, ...senders.map((from) => row(from)), hidden ? row(null) : null),
    el(
      'tfoot',
      null,
      el(
        'tr',
        null,
        el('th', { text: 'received' }),
        ...recipients.map((to) =>
          totalCell(
            pic.pairs.filter((p) => p.to === to),
            'matrix-col-total',
            { to },
          ),
        ),
        totalCell(pic.pairs, 'matrix-total', {}),
      ),
    ),
  );
}
