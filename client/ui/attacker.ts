/**
 * The attacker console (`/attacker#token=…`): only what the lab's scenarios leaked or stole (the
 * loot: which scenario, when) and what that opens in the archive, with counts — messages, people,
 * conversations, the earliest message opened — and what stays closed. It shows plaintext, so it is
 * behind the admin token like the teacher panel (admin-token.ts). It polls GET /api/lab/attacker
 * every two seconds (the server sends at most the latest 200 opened and 200 closed) and redraws
 * only when the answer changed.
 *
 * An export-grade public key in the loot gets a brute force: a Web Worker (brute-worker.ts, its own
 * bundle) tries every secret with the published derivation, with a progress bar, keys per second
 * and time taken; the secret it finds is posted back (POST /api/lab/attacker/found), where the
 * server derives the key again and only then adds it to the loot, so the messages it opens are
 * opened by the same shared archive reader as everything else here. User text reaches the page only
 * as text nodes.
 */
import './no-eval.ts';
import type { z } from 'zod';
import { clock, el, must, showStatus } from './dom.ts';
import { dropToken, lockWithTokenForm, refusal, takeToken, unreachable } from './admin-token.ts';
import { envelopeDetails, type EnvelopeViewContext } from './envelope-view.ts';
import * as api from './attacker-api.ts';
import type { SearchReport, SearchRequest } from './brute-worker.ts';

const POLL_MS = 2000;
const SECTIONS = ['counts-card', 'side', 'lists'] as const;

/** The token is missing, wrong or locked out: the page has already asked for it again. */
class AuthLost extends Error {}

const num = (n: number): string => n.toLocaleString('en-US');
const when = (ts: number): string => `${new Date(ts).toLocaleDateString('en-GB', { day: 'numeric', month: 'short', year: 'numeric' })} ${clock(ts)}`;
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

const KIND_WORDS: Record<api.AttackerView['loot'][number]['kind'], string> = {
  'escrow key': 'escrow key',
  'archive copy': 'archive copy',
  'feed copy': 'feed copy',
  'swapped escrow key': 'swapped-in key',
  'broken export key': 'key found by brute force',
  'export-grade public key': 'public key to break',
};

/** One brute force, as this page runs it. */
interface Search {
  worker: Worker | null;
  state: 'running' | 'found' | 'exhausted' | 'refused' | 'error';
  tried: number;
  total: number;
  ms: number;
  secret: number | null;
  message: string;
}

/** A worker's report, checked: the page trusts no message it did not check. */
function parseReport(data: unknown): SearchReport | null {
  if (!data || typeof data !== 'object') return null;
  const r = data as Record<string, unknown>;
  const n = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
  switch (r.type) {
    case 'progress':
    case 'exhausted':
      return n(r.tried) && n(r.total) && n(r.ms) ? { type: r.type, tried: r.tried as number, total: r.total as number, ms: r.ms as number } : null;
    case 'found':
      return n(r.secret) && n(r.tried) && n(r.total) && n(r.ms) && typeof r.kid === 'string'
        ? { type: 'found', secret: r.secret as number, kid: r.kid, tried: r.tried as number, total: r.total as number, ms: r.ms as number }
        : null;
    case 'error':
      return typeof r.message === 'string' ? { type: 'error', message: r.message } : null;
    default:
      return null;
  }
}

class AttackerConsole {
  private token: string | null = takeToken();
  private view: api.AttackerView | null = null;
  private lastText = '';
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bumped by every poll: an older one still in flight schedules nothing, so there is one loop. */
  private pollGeneration = 0;
  private live = false;
  /** "Name (PIN)" by PIN, as the copies' names say, for the envelope view. */
  private readonly names = new Map<string, string>();
  private readonly searches = new Map<string, Search>();
  private readonly expanded = new Set<string>();
  private readonly envCtx: EnvelopeViewContext = { viewer: 'attacker', name: (pin) => this.names.get(pin) ?? pin, expanded: this.expanded };
  private readonly status = must('status');
  private readonly errorBar = must('atk-error');

  start(): void {
    if (this.token) void this.poll();
    else this.askToken(null);
  }

  // ---------------------------------------------------------------------------
  // The token

  private askToken(problem: string | null): void {
    this.live = false;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    lockWithTokenForm({
      status: this.status,
      sections: SECTIONS,
      slot: must('auth-slot'),
      heading: 'Admin token',
      text: "This console shows plaintext: it needs the teacher's token, printed when the relay started (the part after #token= in the teacher panel's link). This tab keeps it until you close it; the page never shows it.",
      button: 'Open console',
      problem,
      onToken: (token) => {
        this.token = token;
        void this.poll();
      },
    });
  }

  private lostToken(problem: string): never {
    dropToken();
    this.token = null;
    this.askToken(problem);
    throw new AuthLost(problem);
  }

  /** One call to the API: the answer (text and parsed), or an error in words (a refused token asks for it again). */
  private async call<T>(schema: z.ZodType<T>, path: string, what: string, init: { method?: string; body?: unknown } = {}): Promise<{ text: string; value: T }> {
    let res: Response;
    try {
      res = await fetch(path, {
        method: init.method ?? 'GET',
        headers: { Authorization: `Bearer ${this.token ?? ''}`, ...(init.body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        cache: 'no-store',
      });
    } catch (err) {
      throw new Error(unreachable(err));
    }
    if (!res.ok) {
      const why = await refusal(res);
      if (why.auth) this.lostToken(why.message);
      throw new Error(why.message);
    }
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // parseAnswer says so below
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`the relay's answer to ${what} is not what this page expects (${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'})`);
    }
    return { text, value: parsed.data };
  }

  // ---------------------------------------------------------------------------
  // Polling

  private async poll(): Promise<void> {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    const generation = ++this.pollGeneration;
    try {
      const { text, value } = await this.call(api.AttackerView, '/api/lab/attacker', 'the attacker view');
      if (!this.live) {
        this.live = true;
        for (const id of SECTIONS) must(id).hidden = false;
      }
      if (generation !== this.pollGeneration) return;
      showStatus(this.status, 'live');
      if (this.errorBar.dataset.source === 'poll') this.showError('', 'poll');
      if (text !== this.lastText) {
        this.lastText = text;
        this.view = value;
        this.draw();
      }
    } catch (err) {
      if (err instanceof AuthLost) return;
      showStatus(this.status, 'offline');
      this.showError((err as Error).message, 'poll');
    }
    if (this.token && generation === this.pollGeneration) this.pollTimer = setTimeout(() => void this.poll(), POLL_MS);
  }

  private showError(text: string, source: 'poll' | 'action'): void {
    this.errorBar.textContent = text;
    this.errorBar.dataset.source = source;
  }

  // ---------------------------------------------------------------------------
  // Drawing

  private draw(): void {
    const v = this.view;
    if (!v) return;
    for (const m of [...v.opened, ...v.closed]) {
      if (m.env.from) this.names.set(m.env.from, m.from);
      const to = m.env.to.filter((pin) => pin !== m.env.from);
      for (const [i, pin] of to.entries()) this.names.set(pin, m.to[i] ?? pin);
    }
    this.drawCounts(v);
    this.drawLoot(v);
    this.drawBrute(v);
    this.drawLists(v);
  }

  private drawCounts(v: api.AttackerView): void {
    const c = v.counts;
    const item = (key: string, label: string, value: string, hint: string | null = null) =>
      el(
        'div',
        { class: `big-count ${key}`, testid: `count-${key}`, data: { value } },
        el('dt', { text: label }),
        el('dd', { text: value }),
        hint ? el('span', { class: 'hint', text: hint }) : null,
      );
    must('counts').replaceChildren(
      item('opened', 'messages opened', num(c.opened), `of ${num(c.held)} envelopes held`),
      item('people', 'people', num(c.people), 'whose messages opened'),
      item('conversations', 'conversations', num(c.conversations)),
      item('earliest', 'earliest message opened', c.earliest === null ? '—' : when(c.earliest)),
      item('closed', 'stay closed', num(c.closed), c.endToEnd === c.closed ? 'end to end' : `${num(c.endToEnd)} end to end`),
    );
    must('counts-line').textContent = v.loot.length
      ? `${num(c.opened)} of ${num(c.held)} envelopes held open with the loot; ${num(c.closed)} stay closed${c.endToEnd ? `, ${num(c.endToEnd)} of them end to end: no escrow field, so no stolen key can open them` : ''}.`
      : 'Nothing leaked or stolen yet. Run a scene from the teacher panel ("The intercept system is breached", "Export-grade escrow").';
  }

  private drawLoot(v: api.AttackerView): void {
    const list = must('loot');
    if (!v.loot.length) return void list.replaceChildren(el('li', { class: 'empty', testid: 'loot-empty', text: 'No loot yet.' }));
    list.replaceChildren(
      ...v.loot.map((l) =>
        el(
          'li',
          { class: `loot-item ${l.kind.replace(/\W+/g, '-')}`, testid: 'loot-item', data: { kind: l.kind, id: String(l.id) } },
          el('span', { class: 'loot-kind', text: KIND_WORDS[l.kind] }),
          el('span', { class: 'loot-label', testid: 'loot-label', text: l.label }),
          el('span', { class: 'hint', text: `${l.scenario} · ${when(l.at)}${l.envelopes !== undefined ? ` · ${num(l.envelopes)} envelopes` : ''}` }),
        ),
      ),
    );
  }

  private drawLists(v: api.AttackerView): void {
    must('opened-count').textContent = v.counts.opened > v.opened.length ? `${num(v.counts.opened)} (the latest ${num(v.opened.length)} shown)` : num(v.counts.opened);
    must('closed-count').textContent = v.counts.closed > v.closed.length ? `${num(v.counts.closed)} (the latest ${num(v.closed.length)} shown)` : num(v.counts.closed);
    const opened = must('opened');
    opened.replaceChildren(
      ...(v.opened.length
        ? [...v.opened]
            .reverse()
            .map((m) =>
              el(
                'li',
                { class: 'intercept read', testid: 'opened-item', data: { id: m.id, seq: String(m.seq) } },
                el(
                  'div',
                  { class: 'meta' },
                  el('time', { text: when(m.at) }),
                  el('span', { class: 'route', testid: 'opened-route', text: `${m.from} → ${m.to.join(', ')}` }),
                  m.group ? el('span', { class: 'hint', text: `group "${m.group}"` }) : null,
                ),
                el('p', { class: 'plaintext', testid: 'opened-text', text: m.text }),
                el('p', { class: 'hint', testid: 'opened-by', text: `opened with ${m.by}` }),
                envelopeDetails('the envelope, as the copy holds it', m.env, this.envCtx, `o:${m.id}`),
              ),
            )
        : [el('li', { class: 'empty', text: 'Nothing opens yet.' })]),
    );
    const closed = must('closed');
    closed.replaceChildren(
      ...(v.closed.length
        ? [...v.closed].reverse().map((m) =>
            el(
              'li',
              { class: `intercept ${m.status === 'end-to-end' ? 'sealed' : 'forged'}`, testid: 'closed-item', data: { id: m.id, status: m.status } },
              el('div', { class: 'meta' }, el('time', { text: when(m.at) }), el('span', { class: 'route', text: `${m.from} → ${m.to.join(', ')}` })),
              el('p', {
                class: 'closed-why',
                testid: 'closed-reason',
                text: m.status === 'end-to-end' ? 'End to end: no escrow field. No stolen key opens it; only its sender and recipients can.' : `Does not open: ${m.reason}`,
              }),
              envelopeDetails('the envelope, as the copy holds it', m.env, this.envCtx, `c:${m.id}`),
            ),
          )
        : [el('li', { class: 'empty', text: 'Nothing held stays closed.' })]),
    );
  }

  // ---------------------------------------------------------------------------
  // The brute force

  private drawBrute(v: api.AttackerView): void {
    const card = must('brute-card');
    card.hidden = v.targets.length === 0;
    for (const kid of [...this.searches.keys()]) {
      if (!v.targets.some((t) => t.kid === kid)) this.stop(kid);
    }
    card.replaceChildren(el('h2', { text: 'Brute-force the export-grade key' }), ...v.targets.map((t) => this.targetBox(t)));
  }

  private targetBox(t: api.Target): HTMLElement {
    const search = this.searches.get(t.kid);
    const total = 2 ** t.bits;
    const box = el('div', { class: 'target', testid: 'target', data: { kid: t.kid, broken: String(t.broken), state: search?.state ?? (t.broken ? 'found' : 'idle') } });
    box.append(
      el(
        'p',
        null,
        'Key ',
        el('code', { class: 'mono', text: t.kid }),
        ` — a ${t.bits}-bit secret: ${num(total)} to try. Held: its public key and the published derivation (BLAKE2b keyed with "${t.kdf}", then a libsodium box seed). No private key.`,
      ),
    );
    const progress = el('progress', { testid: 'brute-progress', attrs: { max: String(total), value: String(search?.tried ?? (t.broken ? total : 0)) } });
    const figures = el('p', { class: 'brute-figures', testid: 'brute-figures' });
    const outcome = el('p', { class: 'brute-outcome', testid: 'brute-outcome', attrs: { role: 'status' } });
    const button = el('button', { testid: 'brute-start', text: search?.state === 'running' ? 'Stop' : 'Start the search', attrs: { type: 'button' } });
    button.addEventListener('click', () => (this.searches.get(t.kid)?.state === 'running' ? this.stop(t.kid, true) : this.startSearch(t)));
    if (t.broken && search?.state !== 'running') button.hidden = true;
    box.append(el('div', { class: 'brute-row' }, button, progress), figures, outcome);
    this.fillSearch(t, search, progress, figures, outcome);
    return box;
  }

  private fillSearch(t: api.Target, search: Search | undefined, progress: HTMLProgressElement, figures: HTMLElement, outcome: HTMLElement): void {
    if (search) {
      progress.value = search.tried;
      const rate = search.ms > 0 ? Math.round((search.tried / search.ms) * 1000) : 0;
      figures.textContent = `${num(search.tried)} of ${num(search.total)} tried (${((search.tried / search.total) * 100).toFixed(1)} %) · ${num(rate)} keys/s · ${seconds(search.ms)}`;
      figures.dataset.tried = String(search.tried);
      figures.dataset.rate = String(rate);
      figures.dataset.ms = String(Math.round(search.ms));
    }
    outcome.dataset.state = search?.state ?? (t.broken ? 'found' : 'idle');
    if (search?.state === 'found') outcome.textContent = `Found: secret ${num(search.secret ?? 0)}, after ${num(search.tried)} tries in ${seconds(search.ms)}. ${search.message}`;
    else if (search?.state === 'running') outcome.textContent = 'Searching…';
    else if (search) outcome.textContent = search.message;
    else outcome.textContent = t.broken ? 'Broken: the private key is in the loot.' : 'Not searched yet.';
  }

  private startSearch(t: api.Target): void {
    this.stop(t.kid);
    let worker: Worker;
    try {
      // The worker's content-hashed name, which the server wrote into this page (server/assets.ts).
      worker = new Worker(document.body.dataset.worker ?? '/assets/brute-worker.js', { type: 'module', name: 'brute force' });
    } catch (err) {
      this.showError(`The brute force could not start: ${(err as Error).message}`, 'action');
      return;
    }
    const search: Search = { worker, state: 'running', tried: 0, total: 2 ** t.bits, ms: 0, secret: null, message: '' };
    this.searches.set(t.kid, search);
    worker.onmessage = (ev: MessageEvent<unknown>) => {
      const report = parseReport(ev.data);
      if (!report) return;
      if (report.type === 'error') {
        this.finish(t.kid, { state: 'error', message: `The search failed: ${report.message}` });
        return;
      }
      search.tried = report.tried;
      search.total = report.total;
      search.ms = report.ms;
      if (report.type === 'found') {
        search.secret = report.secret;
        this.finish(t.kid, { state: 'found', message: 'Handing it to the loot…' });
        void this.postFound(t.kid, report.secret);
      } else if (report.type === 'exhausted') this.finish(t.kid, { state: 'exhausted', message: `No secret of the ${num(report.total)} derives this key.` });
      else this.redrawTarget(t.kid);
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.finish(t.kid, { state: 'error', message: `The search failed: ${ev.message || 'the worker could not run'}` });
    };
    const request: SearchRequest = { type: 'search', pk: t.pk, kid: t.kid, bits: t.bits };
    worker.postMessage(request);
    this.redrawTarget(t.kid);
  }

  private finish(kid: string, how: Pick<Search, 'state' | 'message'>): void {
    const search = this.searches.get(kid);
    if (!search) return;
    search.worker?.terminate();
    search.worker = null;
    search.state = how.state;
    search.message = how.message;
    this.redrawTarget(kid);
  }

  private stop(kid: string, keep = false): void {
    const search = this.searches.get(kid);
    if (!search) return;
    search.worker?.terminate();
    search.worker = null;
    if (keep) {
      search.state = 'error';
      search.message = 'Stopped.';
      this.redrawTarget(kid);
    } else this.searches.delete(kid);
  }

  private async postFound(kid: string, secret: number): Promise<void> {
    const search = this.searches.get(kid);
    try {
      await this.call(api.Found, '/api/lab/attacker/found', 'the found key', { method: 'POST', body: { kid, secret } });
      if (search) search.message = 'The private key is now in the loot: the messages sealed to it open below.';
    } catch (err) {
      if (err instanceof AuthLost) return;
      if (search) {
        search.state = 'refused';
        search.message = `The relay refused it: ${(err as Error).message}`;
      }
    }
    this.redrawTarget(kid);
    await this.poll();
  }

  /** Only the one target's box, at up to ten reports a second: the lists are not rebuilt. */
  private redrawTarget(kid: string): void {
    const t = this.view?.targets.find((x) => x.kid === kid);
    const old = must('brute-card').querySelector<HTMLElement>(`[data-testid="target"][data-kid="${CSS.escape(kid)}"]`);
    if (!t || !old) return;
    old.replaceWith(this.targetBox(t));
  }
}

new AttackerConsole().start();
