/**
 * The regulator console (`/regulator#token=…`): the tap switch, the intercept
 * feed (every archived envelope, opened where the escrow key opens it), the
 * exports and the audit log. The admin token comes from the URL fragment (never
 * sent to the server in a URL, never left in the address bar), is kept in this
 * tab's sessionStorage, and is sent as the first frame on /ws/regulator and as
 * a Bearer header on the REST calls.
 */
import './no-eval.ts';
import { Pin, parseConsoleMessage, parseViewerMessage, keysOf, type AuditEntry, type InterceptItem, type Policy, type TapSettings } from '../../shared/protocol.ts';
import { clock, clockMs, el, must, reconnectDelay, showStatus, socketUrl } from './dom.ts';
import { wordsFor } from './words.ts';
import { dropToken, lockWithTokenForm, refusal, takeToken, unreachable } from './admin-token.ts';
import { convAndSize, envelopeDetails, route, type EnvelopeViewContext } from './envelope-view.ts';
import { DemandPanel } from './demand.ts';
import { ScanReportsPanel } from './scan-reports.ts';

const MAX_ITEMS = 500;

class Console {
  private token: string | null = takeToken();
  private ws: WebSocket | null = null;
  /** Set once the console's socket accepted the token (the scanner reports are fetched only then). */
  private authed = false;
  private refused = false;
  private attempt = 0;
  private dirty = false;
  /** The settings in force, as the relay last reported them: the form is compared with these. */
  private applied: TapSettings | null = null;
  private total = 0;
  private readonly names = new Map<string, string>();
  private readonly expanded = new Set<string>();
  /** The shared envelope view, as the regulator holds an archived envelope. */
  private readonly view: EnvelopeViewContext = { viewer: 'regulator', name: (pin) => this.who(pin), expanded: this.expanded };
  private readonly demand = new DemandPanel(
    () => this.token,
    (problem) => this.lostToken(problem),
    (id) => this.list.querySelector<HTMLElement>(`[data-testid="intercept"][data-id="${CSS.escape(id)}"]`)?.dataset.via || null,
  );

  private readonly scanReports = new ScanReportsPanel(
    () => (this.authed ? this.token : null),
    (problem) => this.lostToken(problem),
  );

  private readonly status = must('status');
  private readonly list = must('intercepts');
  private readonly form = must<HTMLFormElement>('tap-form');
  private readonly tapError = must('tap-error');
  private readonly exportError = must('export-error');

  start(): void {
    this.form.addEventListener('change', () => {
      this.dirty = true;
      this.updateFormState();
    });
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.applyTap();
    });
    must('export-archive').addEventListener('click', () => void this.download('archive.jsonl', 'archive.jsonl'));
    must('export-key').addEventListener('click', () => void this.download('escrow-key', 'escrow-key.json'));
    this.demand.start();
    this.scanReports.start();
    this.watchNames();
    if (this.token) this.connect();
    else this.askToken(null);
  }

  // ---------------------------------------------------------------------------
  // Authentication

  private askToken(problem: string | null): void {
    lockWithTokenForm({
      status: this.status,
      sections: SECTIONS,
      slot: must('auth-slot'),
      heading: 'Admin token',
      text: "The teacher's token was printed when the relay started (the part after #token= in the regulator link).",
      button: 'Open console',
      problem,
      onToken: (token) => {
        this.token = token;
        this.refused = false;
        this.connect();
      },
    });
  }

  private connect(): void {
    if (!this.token) return this.askToken(null);
    this.setStatus('connecting');
    const ws = new WebSocket(socketUrl('/ws/regulator'));
    this.ws = ws;
    const token = this.token;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const parsed = parseConsoleMessage(ev.data);
      if (!parsed.ok) {
        this.tapError.textContent = `The console got a bad frame: ${parsed.message}`;
        return;
      }
      const msg = parsed.value;
      switch (msg.type) {
        case 'snapshot':
          this.authed = true;
          this.attempt = 0;
          this.setStatus('live');
          for (const id of SECTIONS) must(id).hidden = false;
          must('kid').textContent = msg.kid;
          this.list.replaceChildren();
          for (const item of msg.intercepts) this.addIntercept(item);
          this.total = msg.total;
          this.setState(msg.settings, msg.policy, msg.audit, true);
          this.renderCounts();
          return;
        case 'intercept':
          this.addIntercept(msg.item);
          this.total = msg.total;
          this.renderCounts();
          return;
        case 'state':
          // The key in force can change (the lab's export-grade key and back): the policy names it while the tap is on.
          if (msg.policy.escrowKid) must('kid').textContent = msg.policy.escrowKid;
          this.setState(msg.settings, msg.policy, msg.audit, false);
          return;
        case 'error':
          this.lostToken(msg.code === 'forbidden' ? 'wrong token' : `refused: ${msg.message}`);
          return;
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.refused || !this.token) return;
      this.setStatus('offline');
      setTimeout(() => this.connect(), reconnectDelay(this.attempt++));
    };
  }

  private setStatus(status: string): void {
    showStatus(this.status, status);
  }

  /** The relay refused the token (on the socket or a REST call): forget it and ask again, saying why. */
  private lostToken(problem: string): void {
    this.refused = true;
    this.authed = false;
    dropToken();
    this.token = null;
    this.ws?.close();
    this.askToken(problem);
  }

  /** Names for PINs, from the public relay view feed: the regulator knows who is who, as the relay does. */
  private watchNames(): void {
    const ws = new WebSocket(socketUrl('/ws/relay-view'));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const parsed = parseViewerMessage(ev.data);
      if (!parsed.ok) return;
      const msg = parsed.value;
      const before = this.names.size;
      if (msg.type === 'backlog' || msg.type === 'backlog-more') {
        for (const d of msg.directory) this.names.set(d.pin, d.name);
        for (const e of msg.events) if (e.kind === 'login') this.names.set(e.pin, e.name);
      } else if (msg.event.kind === 'login') {
        this.names.set(msg.event.pin, msg.event.name);
      }
      if (this.names.size !== before) this.renderWarrantPins();
    };
    ws.onclose = () => setTimeout(() => this.watchNames(), 2000);
  }

  /** A PIN with the name the relay had for it when it passed this envelope (the archive keeps it), else the name known now. */
  private whoIn(item: InterceptItem, pin: string): string {
    const name = item.names?.[pin];
    return name ? `${name} (${pin})` : this.who(pin);
  }

  private who(pin: string): string {
    const name = this.names.get(pin);
    return name ? `${name} (${pin})` : pin;
  }

  // ---------------------------------------------------------------------------
  // The tap controls

  private setState(settings: TapSettings, policy: Policy, audit: AuditEntry[], force: boolean): void {
    const state = must('tap-state');
    state.textContent = settings.tap
      ? `Tap ON · ${settings.scope === 'all' ? 'all traffic' : `warrant: ${settings.pins.map((p) => this.who(p)).join(', ')}`} · ${settings.announced ? 'announced' : 'silent'}`
      : 'Tap OFF · new messages are end-to-end only';
    state.className = `tap-state ${settings.tap ? 'on' : 'off'}`;
    state.dataset.tap = String(settings.tap);
    state.dataset.announced = String(settings.announced);
    state.dataset.scope = settings.scope;
    state.dataset.epoch = String(policy.epoch);
    this.applied = settings;
    if (force || !this.dirty) this.fillForm(settings);
    else this.updateFormState();
    this.renderAudit(audit);
  }

  private radio(name: string, value: string): HTMLInputElement {
    const input = this.form.querySelector<HTMLInputElement>(`input[name="${name}"][value="${value}"]`);
    if (!input) throw new Error(`tap form has no ${name}=${value}`);
    return input;
  }

  private fillForm(s: TapSettings): void {
    this.radio('tap', s.tap ? 'on' : 'off').checked = true;
    this.radio('scope', s.scope).checked = true;
    this.radio('announced', s.announced ? 'yes' : 'no').checked = true;
    const known = new Set(this.names.keys());
    must<HTMLInputElement>('warrant-text').value = s.pins.filter((p) => !known.has(p)).join(', ');
    this.renderWarrantPins(new Set(s.pins));
    this.dirty = false;
    this.updateFormState();
  }

  private renderWarrantPins(selected?: Set<string>): void {
    const box = must('warrant-pins');
    const checked = selected ?? new Set([...box.querySelectorAll<HTMLInputElement>('input:checked')].map((i) => i.value));
    const pins = [...new Set([...this.names.keys(), ...checked])];
    box.replaceChildren(
      ...pins.map((pin) => {
        const input = el('input', { testid: 'warrant-pin', attrs: { type: 'checkbox', value: pin } });
        input.checked = checked.has(pin);
        return el('label', { class: 'check' }, input, ` ${this.names.get(pin) ?? '?'} `, el('span', { class: 'pin', text: pin }));
      }),
    );
    if (!pins.length) box.append(el('p', { class: 'hint', text: 'No users known yet; type PINs below.' }));
    this.updateFormState();
  }

  private updateFormState(): void {
    const warrant = this.radio('scope', 'warrant').checked;
    must('warrant-pins').classList.toggle('disabled', !warrant);
    for (const input of this.form.querySelectorAll<HTMLInputElement>('#warrant-pins input, #warrant-text')) input.disabled = !warrant;
    this.renderPending();
  }

  /** A change made in the form but not applied yet is said so, next to the Apply button. */
  private renderPending(): void {
    const pending = must('tap-pending');
    const form = this.readForm();
    const applied = this.applied;
    const same =
      applied !== null &&
      typeof form !== 'string' &&
      form.tap === applied.tap &&
      form.announced === applied.announced &&
      (!form.tap || (form.scope === applied.scope && [...form.pins].sort().join() === [...applied.pins].sort().join()));
    if (same || applied === null) {
      pending.textContent = '';
      pending.hidden = true;
      this.form.classList.remove('pending');
      return;
    }
    pending.hidden = false;
    this.form.classList.add('pending');
    pending.textContent =
      typeof form === 'string' ? `Not applied: ${form}` : `Not applied yet: ${this.describe(form)}. Press Apply to put it in force; until then the tap stays as shown above.`;
  }

  private describe(s: TapSettings): string {
    if (!s.tap) return 'tap off';
    return `tap on, ${s.scope === 'all' ? 'all traffic' : `warrant for ${s.pins.map((p) => this.who(p)).join(', ') || 'nobody yet'}`}, ${s.announced ? 'announced' : 'silent'}`;
  }

  private readForm(): TapSettings | string {
    const tap = this.radio('tap', 'on').checked;
    const scope = this.radio('scope', 'warrant').checked ? 'warrant' : 'all';
    const announced = !this.radio('announced', 'no').checked;
    const pins = new Set<string>();
    if (scope === 'warrant') {
      for (const input of this.form.querySelectorAll<HTMLInputElement>('#warrant-pins input:checked')) pins.add(input.value);
      for (const word of must<HTMLInputElement>('warrant-text')
        .value.split(/[\s,;]+/)
        .filter(Boolean)) {
        const pin = word.toUpperCase();
        if (!Pin.safeParse(pin).success) return `"${word}" is not a PIN (8 hex digits)`;
        pins.add(pin);
      }
      if (tap && !pins.size) return 'A warrant must name at least one PIN.';
    }
    return { tap, scope, pins: [...pins], announced };
  }

  private async applyTap(): Promise<void> {
    this.tapError.textContent = '';
    const settings = this.readForm();
    if (typeof settings === 'string') {
      this.tapError.textContent = settings;
      return;
    }
    try {
      const res = await this.api('tap', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(settings) });
      if (!res.ok) {
        const why = await refusal(res);
        if (why.auth) return this.lostToken(why.message);
        this.tapError.textContent = why.message;
        return;
      }
      const body = (await res.json().catch(() => null)) as { settings?: TapSettings } | null;
      this.dirty = false;
      if (body?.settings) this.fillForm(body.settings);
    } catch (err) {
      this.tapError.textContent = unreachable(err);
    }
  }

  private api(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('Authorization', `Bearer ${this.token ?? ''}`);
    return fetch(`/api/regulator/${path}`, { ...init, headers, cache: 'no-store' });
  }

  /** Fetch with the Bearer token, then save through a Blob URL (a download, not a page load). */
  private async download(path: string, filename: string): Promise<void> {
    this.exportError.textContent = '';
    try {
      const res = await this.api(path);
      if (!res.ok) {
        const why = await refusal(res);
        if (why.auth) return this.lostToken(why.message);
        this.exportError.textContent = why.message;
        return;
      }
      const url = URL.createObjectURL(await res.blob());
      const a = el('a', { attrs: { href: url, download: filename } });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      this.exportError.textContent = `Export failed. ${unreachable(err)}`;
    }
  }

  // ---------------------------------------------------------------------------
  // Feed and audit

  private addIntercept(item: InterceptItem): void {
    const env = item.env;
    const verdict = this.verdict(item);
    const li = el(
      'li',
      {
        class: `intercept ${verdict.kind}`,
        testid: 'intercept',
        data: { id: env.id, readable: String(item.readable), status: item.status, code: item.code ?? '', via: verdict.via ?? '' },
      },
      el(
        'div',
        { class: 'meta' },
        el('time', { text: clock(item.at), title: clockMs(item.at) }),
        el('span', { class: 'route', text: route(env, (pin) => this.whoIn(item, pin)) }),
        el('span', { class: 'hint', text: `${convAndSize(env)} · ${keysOf(env).model}` }),
      ),
      verdict.node,
      envelopeDetails('the envelope as archived', env, { ...this.view, name: (pin) => this.whoIn(item, pin) }, `${item.seq}:${env.id}`),
    );
    this.list.querySelector('.empty')?.remove();
    this.list.prepend(li);
    while (this.list.childElementCount > MAX_ITEMS) this.list.lastElementChild?.remove();
  }

  /**
   * What this console's keys did with an archived envelope, worded from the verdict and the key
   * model the envelope carries. The archive reader (shared/archive.ts) opens an app-key envelope
   * only with the app's shared key and every other model only with the escrow key, so the model
   * says which key a READ came from.
   */
  private verdict(item: InterceptItem): { kind: string; via: string | null; node: HTMLElement } {
    const model = keysOf(item.env).model;
    const reason = () => el('span', { class: 'reason', testid: 'intercept-reason', text: ` ${item.code ? wordsFor(item.code) : (item.reason ?? '')}` });
    if (item.readable) {
      const byApp = model === 'app-key';
      return {
        kind: 'read',
        via: byApp ? 'app key' : 'escrow key',
        node: el(
          'div',
          { class: 'verdict read' },
          el('span', { class: 'badge', text: 'READ' }),
          el('span', { class: 'via', testid: 'intercept-via', text: byApp ? "— with the app's shared key (every copy of the app has it)" : '— with the escrow key' }),
          el(
            'span',
            { class: 'opened' },
            item.group ? el('span', { class: 'group', text: `[${item.group}] ` }) : null,
            el('span', { class: 'plaintext', testid: 'intercept-text', text: item.text ?? '' }),
          ),
        ),
      };
    }
    if (item.status === 'end-to-end') {
      // No escrow field at all: the key was sealed only to the participants.
      return {
        kind: 'sealed',
        via: null,
        node: el(
          'div',
          { class: 'verdict sealed' },
          el('span', { class: 'badge', text: 'SEALED' }),
          el('span', { class: 'unreadable', testid: 'intercept-unreadable', text: 'unreadable — end-to-end encrypted: no escrow field' }),
        ),
      };
    }
    if (item.code === 'server_held') {
      // Not end to end, and not a forged field: the key is the enterprise server's, and the operator can be served a demand.
      return {
        kind: 'server-held',
        via: null,
        node: el(
          'div',
          { class: 'verdict server-held' },
          el('span', { class: 'badge', text: 'SERVER HELD' }),
          el('span', { class: 'unreadable', testid: 'intercept-unreadable', text: 'unreadable here — the enterprise server holds the key' }),
          reason(),
          el('span', { class: 'hint', text: ' "Serve a demand on the operator" shows what it hands over.' }),
        ),
      };
    }
    // An escrow field (or the app key) is there, but it does not open: that is not end-to-end, and the page says so.
    return {
      kind: 'forged',
      via: null,
      node: el(
        'div',
        { class: 'verdict forged' },
        el('span', { class: 'badge', text: 'NO ENTRY' }),
        el('span', {
          class: 'unreadable',
          testid: 'intercept-unreadable',
          text:
            model === 'app-key'
              ? "unreadable — the app's shared key does not open it (altered, or not from the claimed sender)"
              : 'unreadable — the escrow field is there but does not open (forged, or sealed to another key)',
        }),
        reason(),
      ),
    };
  }

  private renderCounts(): void {
    const shown = this.list.querySelectorAll('[data-testid="intercept"]');
    const escrow = this.list.querySelectorAll('[data-via="escrow key"]').length;
    const app = this.list.querySelectorAll('[data-via="app key"]').length;
    must('counts').textContent =
      `${this.total} ${this.total === 1 ? 'envelope' : 'envelopes'} archived · of the ${shown.length} shown, ${escrow} read with the escrow key${app ? `, ${app} with the app's shared key` : ''}`;
    if (!shown.length) this.list.replaceChildren(el('li', { class: 'empty', text: 'Nothing intercepted yet. Every envelope that passes the relay appears here.' }));
  }

  private renderAudit(audit: AuditEntry[]): void {
    must('audit').replaceChildren(
      ...audit.map((a) =>
        el(
          'li',
          { class: 'audit-entry', testid: 'audit-entry', data: { action: a.action } },
          el('time', { text: clock(a.at) }),
          el('b', { text: a.action }),
          el('span', { text: a.detail }),
        ),
      ),
    );
  }
}

/** The console's parts that need the token: hidden until the relay has accepted it. */
const SECTIONS = ['controls', 'exports', 'demand-card', 'audit-card', 'feed-card'] as const;

new Console().start();
