/**
 * The projector (`/projector`): the story in large type for the back row, in the layout the
 * teacher picks on the teacher panel (GET /api/lab/projector, polled every second):
 *
 * - relay view + regulator console: what the relay holds (ciphertext and metadata, the relay
 *   view's own public feed) beside what the regulator's escrow key opens (GET /api/regulator/intercepts);
 * - sender | relay | recipient: one conversation between two of the lab's bots, each outer pane
 *   what that bot's own client decrypted, the middle the relay's feed filtered to the two PINs;
 * - the metadata picture (GET /api/lab/metadata);
 * - the current scene's narration card (GET /api/lab/current).
 *
 * Two layouts show plaintext, so the page needs the admin token, as the console does: it comes
 * from the teacher panel's link (a copy of that tab's sessionStorage) or the URL fragment, never
 * from the query string, and it is never drawn. User text reaches the page only as text nodes.
 */
import './no-eval.ts';
import { z } from 'zod';
import { InterceptItem, parseViewerMessage, type TrafficEvent } from '../../shared/protocol.ts';
import { b64ToHex, bytes, clock, el, must, reconnectDelay, shorten, showStatus, socketUrl } from './dom.ts';
import { dropToken, refusal, takeToken, tokenForm, unreachable } from './admin-token.ts';
import { escrowBadge } from './envelope-view.ts';
import * as api from './lab-api.ts';
import { metadataMatrix, metadataTotals } from './metadata-view.ts';
import { LAYOUT_WORDS, ProjectorView, type Layout } from './projector-api.ts';

const POLL_MS = 1000;
/** Traffic events kept from the relay's feed (the panes draw the newest few). */
const KEEP_EVENTS = 200;
const RELAY_ROWS = 6;
const INTERCEPT_ROWS = 6;

const Intercepts = z.object({ intercepts: z.array(InterceptItem), total: z.number(), kid: z.string() });

class AuthLost extends Error {}

class ProjectorPage {
  private token: string | null = takeToken();
  private view: ProjectorView | null = null;
  private drawnLayout: Layout | null = null;
  private readonly drawn = new Map<string, string>();
  private events: TrafficEvent[] = [];
  private readonly names = new Map<string, string>();
  private attempt = 0;
  private ws: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly app = must('app');
  private readonly status = must('status');
  private readonly title = must('layout-title');

  start(): void {
    if (this.token) void this.poll();
    else this.askToken(null);
  }

  // ---------------------------------------------------------------------------
  // The token (never drawn)

  private askToken(problem: string | null): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close();
    this.ws = null;
    showStatus(this.status, 'locked');
    this.title.textContent = 'Projector';
    this.drawnLayout = null;
    this.drawn.clear();
    const { form } = tokenForm({
      heading: 'Open the projector from the teacher panel',
      text: 'Its "Projector" link opens this page with the teacher\'s token, without showing it. This page shows plaintext in some layouts, so it needs the token, as the regulator console does.',
      button: 'Open',
      problem,
      className: 'pane',
      onToken: (token) => {
        this.token = token;
        void this.poll();
      },
    });
    this.app.dataset.layout = 'locked';
    this.app.replaceChildren(form);
  }

  private async call<T>(schema: z.ZodType<T>, path: string, what: string): Promise<T> {
    let res: Response;
    try {
      res = await fetch(path, { headers: { Authorization: `Bearer ${this.token ?? ''}` }, cache: 'no-store' });
    } catch (err) {
      throw new Error(unreachable(err));
    }
    if (!res.ok) {
      const why = await refusal(res);
      if (why.auth) {
        dropToken();
        this.token = null;
        this.askToken(why.message);
        throw new AuthLost(why.message);
      }
      throw new Error(why.message);
    }
    return api.parseAnswer(schema, await res.json().catch(() => null), what);
  }

  // ---------------------------------------------------------------------------
  // Polling: the teacher's choice, then what its layout needs

  private async poll(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    try {
      const view = await this.call(ProjectorView, '/api/lab/projector', "the projector's layout");
      this.view = view;
      if (view.layout !== this.drawnLayout) this.layout(view.layout);
      showStatus(this.status, 'live');
      must('problem').textContent = '';
      await this.refresh(view);
    } catch (err) {
      if (err instanceof AuthLost) return;
      showStatus(this.status, 'offline');
      must('problem').textContent = (err as Error).message;
    }
    if (this.token) this.timer = setTimeout(() => void this.poll(), POLL_MS);
  }

  private async refresh(view: ProjectorView): Promise<void> {
    switch (view.layout) {
      case 'relay-console': {
        this.drawRelay('relay-list', null);
        const found = await this.call(Intercepts, `/api/regulator/intercepts?limit=${INTERCEPT_ROWS}`, 'the intercepts');
        this.drawIntercepts(found);
        return;
      }
      case 'three-panes':
        this.drawConversation(view);
        return;
      case 'metadata':
        this.drawMetadata(await this.call(api.MetadataPicture, '/api/lab/metadata', 'the metadata picture'));
        return;
      case 'narration':
        this.drawNarration((await this.call(api.Current, '/api/lab/current', 'the current scene')).current);
        return;
    }
  }

  /** True when `region` was last drawn from this same state. */
  private unchanged(region: string, state: unknown): boolean {
    const key = JSON.stringify(state);
    if (this.drawn.get(region) === key) return true;
    this.drawn.set(region, key);
    return false;
  }

  // ---------------------------------------------------------------------------
  // The relay's feed (public, as the relay view's)

  private connect(): void {
    if (this.ws) return;
    const ws = new WebSocket(socketUrl('/ws/relay-view'));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const parsed = parseViewerMessage(ev.data);
      if (!parsed.ok) return;
      const msg = parsed.value;
      if (msg.type === 'backlog') this.events = [];
      if (msg.type === 'traffic') this.add(msg.event);
      else {
        for (const d of msg.directory) this.names.set(d.pin, d.name);
        for (const event of msg.events) this.add(event);
      }
      if (this.view) {
        if (this.view.layout === 'relay-console') this.drawRelay('relay-list', null);
        if (this.view.layout === 'three-panes') this.drawConversation(this.view);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.token) setTimeout(() => this.connect(), reconnectDelay(this.attempt++));
    };
  }

  private add(event: TrafficEvent): void {
    if (event.kind === 'login') this.names.set(event.pin, event.name);
    if (event.kind === 'envelope') for (const [pin, name] of Object.entries(event.names)) this.names.set(pin, name);
    if (event.kind !== 'envelope' && event.kind !== 'sealed' && event.kind !== 'receipt') return;
    this.events.push(event);
    if (this.events.length > KEEP_EVENTS) this.events.splice(0, this.events.length - KEEP_EVENTS);
  }

  private name(pin: string): string {
    return this.names.get(pin) ?? pin;
  }

  // ---------------------------------------------------------------------------
  // Layouts

  private layout(layout: Layout): void {
    this.drawnLayout = layout;
    this.drawn.clear();
    this.title.textContent = LAYOUT_WORDS[layout];
    this.app.dataset.layout = layout;
    const pane = (testid: string, heading: string, ...body: HTMLElement[]) => el('section', { class: `pane ${testid}`, testid }, el('h2', { text: heading }), ...body);
    const list = (id: string) => el('ol', { class: 'p-list', attrs: { id }, testid: id });
    switch (layout) {
      case 'relay-console':
        this.connect();
        this.app.replaceChildren(
          pane('pane-relay', 'What the relay holds', list('relay-list')),
          pane('pane-console', 'What the escrow key opens', el('p', { class: 'p-sub', attrs: { id: 'console-sub' }, testid: 'console-sub' }), list('console-list')),
        );
        return;
      case 'three-panes':
        this.connect();
        this.app.replaceChildren(
          pane('pane-left', '…', el('p', { class: 'p-sub', attrs: { id: 'left-sub' } }), list('left-list')),
          pane('pane-middle', 'What the relay holds', el('p', { class: 'p-sub', attrs: { id: 'middle-sub' } }), list('middle-list')),
          pane('pane-right', '…', el('p', { class: 'p-sub', attrs: { id: 'right-sub' } }), list('right-list')),
        );
        return;
      case 'metadata':
        this.app.replaceChildren(
          pane(
            'pane-metadata',
            "Who talked to whom: the relay's own log, no key, no tap",
            el('p', { class: 'p-sub', attrs: { id: 'metadata-sub' } }),
            el('div', { class: 'p-matrix', attrs: { id: 'metadata-wrap' } }),
          ),
        );
        return;
      case 'narration':
        this.app.replaceChildren(el('section', { class: 'pane pane-narration', testid: 'pane-narration', attrs: { id: 'narration' } }));
        return;
    }
  }

  /** The relay's envelopes, newest first; `pins`: only those between these two. Receipts as the teacher chose. */
  private drawRelay(listId: string, pins: [string, string] | null): void {
    const receipts = this.view?.receipts ?? false;
    const between = (from: string | null, to: string[]) =>
      !pins || ((from === null || pins.includes(from)) && to.some((p) => pins.includes(p)) && (from === null || to.some((p) => p !== from)));
    const keep = (e: TrafficEvent): boolean =>
      e.kind === 'envelope' ? between(e.env.from, e.env.to) : e.kind === 'sealed' ? between(null, [e.to]) : e.kind === 'receipt' && receipts && between(e.by, [e.to]);
    const shown = this.events.filter(keep).slice(-RELAY_ROWS).reverse();
    const key = (e: TrafficEvent) => (e.kind === 'receipt' ? `r${e.id}${e.state}` : e.kind === 'sealed' ? `s${e.id}` : e.kind === 'envelope' ? e.env.id : '');
    if (this.unchanged(listId, [shown.map(key), pins, [...this.names]])) return;
    const list = document.getElementById(listId);
    if (!list) return;
    list.replaceChildren(...shown.map((e) => this.relayRow(e)));
    if (!shown.length) list.append(el('li', { class: 'empty', text: pins ? 'Nothing between them yet.' : 'No messages yet.' }));
  }

  private relayRow(event: TrafficEvent): HTMLElement {
    switch (event.kind) {
      case 'envelope': {
        const env = event.env;
        return el(
          'li',
          { class: 'p-row', testid: 'relay-row', data: { id: env.id, kind: 'envelope' } },
          el(
            'div',
            { class: 'p-route' },
            `${this.name(env.from)} → ${env.to.map((p) => this.name(p)).join(', ')}`,
            el('span', { class: 'p-meta', text: ` · ${clock(event.at)} · ${bytes(event.bytes)}` }),
          ),
          el('code', { class: 'p-cipher', testid: 'relay-cipher', text: shorten(b64ToHex(env.body), 44) }),
          el('div', { class: 'p-escrow' }, 'escrow field: ', escrowBadge(env, 'relay', 'relay-escrow')),
          event.serverRead ? el('div', { class: 'p-read', testid: 'server-read' }, 'The enterprise server read it: ', event.serverRead.text) : null,
        );
      }
      case 'sealed':
        return el(
          'li',
          { class: 'p-row', testid: 'relay-row', data: { id: event.id, kind: 'sealed' } },
          el('div', { class: 'p-route' }, `hidden sender → ${this.name(event.to)}`, el('span', { class: 'p-meta', text: ` · ${clock(event.at)} · ${bytes(event.bytes)}` })),
          el('div', { class: 'p-closed', text: 'Sealed sender: the relay sees to whom, when and how much, not who.' }),
        );
      case 'receipt':
        return el(
          'li',
          { class: 'p-row p-receipt', testid: 'relay-row', data: { kind: 'receipt' } },
          `${event.state === 'read' ? 'read' : 'delivered'} receipt: ${this.name(event.by)} → ${this.name(event.to)} · ${clock(event.at)}`,
        );
      default:
        return el('li');
    }
  }

  private drawIntercepts(found: z.infer<typeof Intercepts>): void {
    const items = [...found.intercepts].sort((a, b) => b.seq - a.seq).slice(0, INTERCEPT_ROWS);
    if (this.unchanged('console', [found.total, items.map((i) => [i.seq, i.status])])) return;
    const opened = items.filter((i) => i.readable).length;
    must('console-sub').textContent = `${found.total} archived · the newest ${items.length}: ${opened} opened`;
    const nameOf = (item: InterceptItem, pin: string) => item.names?.[pin] ?? this.name(pin);
    const rows = items.map((item) =>
      el(
        'li',
        { class: `p-row ${item.readable ? 'opened' : 'closed'}`, testid: 'console-row', data: { id: item.env.id, readable: String(item.readable) } },
        el(
          'div',
          { class: 'p-route' },
          `${nameOf(item, item.env.from)} → ${item.env.to.map((p) => nameOf(item, p)).join(', ')}`,
          el('span', { class: 'p-meta', text: ` · ${clock(item.at)}` }),
        ),
        item.readable && item.text !== null
          ? el('div', { class: 'p-read', testid: 'console-text' }, 'READ: ', el('q', { text: item.text }))
          : el('div', {
              class: 'p-closed',
              testid: 'console-closed',
              text: item.status === 'end-to-end' ? 'Cannot open: end to end, no escrow field.' : `Not opened: ${item.reason ?? item.code ?? 'the escrow key does not open it'}`,
            }),
      ),
    );
    const list = must('console-list');
    list.replaceChildren(...rows);
    if (!rows.length) list.append(el('li', { class: 'empty', text: 'Nothing archived yet.' }));
  }

  private drawConversation(view: ProjectorView): void {
    const conv = view.conversation;
    if (!conv) {
      if (this.unchanged('conversation', view.why)) return;
      for (const side of ['left', 'right'] as const) {
        const pane = this.app.querySelector(`.pane-${side} h2`);
        if (pane) pane.textContent = side === 'left' ? 'Sender' : 'Recipient';
        must(`${side}-sub`).textContent = '';
        must(`${side}-list`).replaceChildren();
      }
      must('middle-sub').textContent = view.why ?? '';
      must('middle-list').replaceChildren();
      return;
    }
    const pins: [string, string] = [conv.left.pin, conv.right.pin];
    if (!this.unchanged('conversation', conv)) {
      for (const [side, pane] of [
        ['left', conv.left],
        ['right', conv.right],
      ] as const) {
        const heading = this.app.querySelector(`.pane-${side} h2`);
        if (heading) heading.textContent = `${pane.name}'s screen`;
        must(`${side}-sub`).textContent = `a lab bot: what its own keys opened`;
        const messages = [...pane.messages].reverse().slice(0, 5);
        const list = must(`${side}-list`);
        list.replaceChildren(
          ...messages.map((msg) =>
            el(
              'li',
              { class: `p-bubble ${msg.direction}`, testid: `${side}-message`, data: { id: msg.id } },
              el('div', { class: 'p-who', text: msg.direction === 'out' ? `${pane.name} sent` : `from ${side === 'left' ? conv.right.name : conv.left.name}` }),
              msg.state === 'unreadable'
                ? el('div', { class: 'p-closed', text: 'could not open this message' })
                : el('div', { class: 'p-text', testid: `${side}-text`, text: msg.text }),
              el('div', { class: msg.escrowed ? 'p-readers escrowed' : 'p-readers', text: `Who can read: ${msg.readers}` }),
            ),
          ),
        );
        if (!messages.length) list.append(el('li', { class: 'empty', text: 'No messages yet.' }));
      }
      must('middle-sub').textContent = `${conv.left.name} ↔ ${conv.right.name}${conv.picked ? '' : ' (the latest pair of bots)'}`;
    }
    this.drawRelay('middle-list', pins);
  }

  private drawMetadata(pic: api.MetadataPicture): void {
    if (this.unchanged('metadata', pic)) return;
    must('metadata-sub').textContent = metadataTotals(pic);
    must('metadata-wrap').replaceChildren(metadataMatrix(pic));
  }

  private drawNarration(record: api.RunRecord | null): void {
    if (this.unchanged('narration', record ? [record.id, record.at] : null)) return;
    const card = must('narration');
    if (!record) {
      card.replaceChildren(el('h2', { text: 'No scene run yet' }), el('p', { text: "The teacher runs the scenes from the teacher panel; each one's card shows here." }));
      return;
    }
    const n = record.narration;
    card.replaceChildren(
      el('h2', { class: 'p-title', testid: 'narration-title', text: record.title }),
      el('p', { class: 'p-summary', text: record.result.summary }),
      el('p', { class: 'p-what', text: n.what }),
      el('ul', { class: 'p-look' }, ...n.look.map((l) => el('li', null, el('b', { text: `${l.page}: ` }), l.what))),
      el('p', { class: 'p-source' }, el('b', { text: 'The real event: ' }), `${n.source.event} (${n.source.date})`),
    );
  }
}

new ProjectorPage().start();
