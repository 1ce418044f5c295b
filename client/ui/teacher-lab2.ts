/**
 * Two cards of the teacher panel for lab part 2 (drawn by teacher.ts, which owns the token, the
 * polling and the one-action-at-a-time rule):
 *
 * - "Observers on the relay": the normal list (GET /api/lab/observers: hidden ones left out, as an
 *   operator's console would list them), and "Reveal hidden observers" (POST
 *   /api/lab/observers/reveal: every observer, hidden ones marked, with since when, how many
 *   envelopes the relay handed each and where a hidden one copies to; the reveal is audited).
 * - "Client-side scanning": off by default; on (announced on the chat page or not) and off; add a
 *   phrase (the relay hashes it under the list's salt and keeps only the hash); the list as hashes,
 *   with the teacher's own note for each, kept in this tab's sessionStorage only; the report count.
 *
 * All text reaches the page as text nodes (dom.ts `el`).
 */
import type { z } from 'zod';
import { clock, el, must } from './dom.ts';
import * as api from './lab-api.ts';

export interface CardDeps {
  call<T>(schema: z.ZodType<T>, path: string, what: string, init?: { method?: string; body?: unknown }): Promise<T>;
  act(label: string, job: () => Promise<string>): Promise<boolean>;
}

export class ObserversCard {
  private revealed: { at: number; observers: api.ObserverInfo[] } | null = null;

  constructor(private readonly deps: CardDeps) {
    must('reveal-observers').addEventListener('click', () => void this.reveal());
  }

  async refresh(): Promise<void> {
    const { observers } = await this.deps.call(api.Observers, '/api/lab/observers', 'the observer list');
    must('observers').replaceChildren(
      ...observers.map((o) =>
        el(
          'li',
          { class: 'observer', testid: 'observer', data: { name: o.name } },
          el('span', { class: 'name', text: o.name }),
          el('span', { class: 'hint', text: ` since ${clock(o.since)}` }),
        ),
      ),
    );
  }

  /** Forget a reveal shown (the room was reset: what it listed is gone). */
  clear(): void {
    this.revealed = null;
    this.drawRevealed();
  }

  private reveal(): Promise<boolean> {
    return this.deps.act('Revealing every observer of the relay', async () => {
      const { observers, hidden } = await this.deps.call(api.Revealed, '/api/lab/observers/reveal', 'the reveal', { method: 'POST', body: {} });
      this.revealed = { at: Date.now(), observers };
      this.drawRevealed();
      return hidden
        ? `${hidden} hidden ${hidden === 1 ? 'observer' : 'observers'} found: see where the copy went, since when and how many envelopes. The reveal is in the audit log.`
        : 'No hidden observer is attached. The reveal is in the audit log.';
    });
  }

  private drawRevealed(): void {
    const box = must('revealed');
    if (!this.revealed) {
      box.replaceChildren();
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.replaceChildren(
      el('p', { class: 'hint', text: `Every observer, as revealed at ${clock(this.revealed.at)}:` }),
      el(
        'ul',
        { class: 'revealed-list', testid: 'revealed-list' },
        ...this.revealed.observers.map((o) =>
          el(
            'li',
            {
              class: `observer ${o.hidden ? 'hidden-observer' : ''}`,
              testid: 'revealed-observer',
              data: { name: o.name, hidden: String(o.hidden), envelopes: String(o.envelopes) },
            },
            o.hidden ? el('span', { class: 'tag danger-tag', text: 'HIDDEN' }) : null,
            el('span', { class: 'name', text: ` ${o.name}` }),
            el('span', {
              class: 'hint',
              testid: 'revealed-since',
              text: ` — since ${clock(o.since)}, ${o.envelopes} ${o.envelopes === 1 ? 'envelope' : 'envelopes'} handed to it`,
            }),
            o.sink ? el('span', { class: 'sink', testid: 'revealed-sink', text: ` — copies to: ${o.sink}` }) : null,
          ),
        ),
      ),
    );
  }
}

const NOTES_KEY = 'backdoor-lab.scan-notes';

/** The teacher's notes on list entries (hash → what it stands for): this tab's sessionStorage only, never sent. */
function notes(): Record<string, string> {
  try {
    const parsed: unknown = JSON.parse(sessionStorage.getItem(NOTES_KEY) ?? '{}');
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, string>) : {};
  } catch {
    return {};
  }
}

export class ScanCard {
  private state: api.ScanState | null = null;

  constructor(private readonly deps: CardDeps) {
    must<HTMLFormElement>('scan-switch').addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.toggle();
    });
    must<HTMLFormElement>('scan-add').addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.add();
    });
  }

  async refresh(): Promise<void> {
    this.state = await this.deps.call(api.ScanState, '/api/lab/scan', 'the scan list');
    this.draw();
  }

  private toggle(): Promise<boolean> {
    const on = !(this.state?.on ?? false);
    const announced = must<HTMLInputElement>('scan-announced').checked;
    return this.deps.act(on ? 'Turning client-side scanning on' : 'Turning client-side scanning off', async () => {
      this.state = await this.deps.call(api.ScanState, '/api/lab/scan', 'the scanning switch', { method: 'POST', body: { on, announced } });
      this.draw();
      return on
        ? `Scanning is on${announced ? ', and the chat page says so' : ', and the chat page does not say so'}: every honest client now checks what it sends against the list before encrypting it.`
        : 'Scanning is off: clients get no list and report nothing.';
    });
  }

  private add(): Promise<boolean> {
    const input = must<HTMLInputElement>('scan-phrase');
    const phrase = input.value.trim();
    if (!phrase) return this.deps.act('Adding a phrase', async () => Promise.reject(new Error('type a phrase first')));
    return this.deps.act('Adding a phrase to the scan list', async () => {
      const { entry, state } = await this.deps.call(api.ScanEntryAdded, '/api/lab/scan/entries', 'the new list entry', { method: 'POST', body: { phrase } });
      const kept = notes();
      kept[entry.hash] = phrase;
      sessionStorage.setItem(NOTES_KEY, JSON.stringify(kept));
      input.value = '';
      this.state = state;
      this.draw();
      return `Entry ${entry.n} is on the list as a hash only. ${state.on ? 'The next client to send it is reported.' : 'Turn scanning on for clients to use it.'}`;
    });
  }

  private draw(): void {
    const s = this.state;
    if (!s) return;
    const line = must('scan-state');
    line.dataset.on = String(s.on);
    line.textContent = s.on
      ? `ON · ${s.announced ? 'announced on the chat page' : 'not announced'} · ${s.entries.length} ${s.entries.length === 1 ? 'hash' : 'hashes'} · ${s.reports.total} ${s.reports.total === 1 ? 'report' : 'reports'}`
      : `OFF · ${s.entries.length} ${s.entries.length === 1 ? 'hash' : 'hashes'} on the list · ${s.reports.total} ${s.reports.total === 1 ? 'report' : 'reports'}`;
    const button = must<HTMLButtonElement>('scan-toggle');
    button.textContent = s.on ? 'Turn scanning off' : 'Turn scanning on';
    must<HTMLInputElement>('scan-announced').checked = s.on ? s.announced : must<HTMLInputElement>('scan-announced').checked;
    const kept = notes();
    const list = must('scan-entries');
    list.replaceChildren(
      ...s.entries.map((e) =>
        el(
          'li',
          { class: 'scan-entry', testid: 'scan-entry', data: { n: String(e.n), hash: e.hash } },
          el('b', { text: `#${e.n} ` }),
          el('code', { class: 'hash', text: `${e.hash.slice(0, 16)}…` }),
          el('span', {
            class: 'hint',
            testid: 'scan-note',
            text: kept[e.hash] ? ` — your note (this tab only): "${kept[e.hash]}"` : ' — no note in this tab (added by a scene or another tab)',
          }),
        ),
      ),
    );
    if (!s.entries.length) list.append(el('li', { class: 'empty', text: 'The list is empty.' }));
  }
}
