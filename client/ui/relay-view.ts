/**
 * The relay view (`/relay`): traffic exactly as the server sees it. It opens
 * the public `/ws/relay-view` feed, which carries the relay's own traffic
 * events: metadata in clear, message content only as ciphertext. This page
 * loads no crypto at all: there is nothing here it could decrypt with.
 */
import './no-eval.ts';
import { Policy, parseViewerMessage, type DirectoryEntry, type TrafficEvent } from '../../shared/protocol.ts';
import { escrowLabel } from './words.ts';
import { SEALED_SENDER, ciphertext, envelopeDetails, escrowBadge, modelWords, type EnvelopeViewContext } from './envelope-view.ts';
import { b64Bytes, bytes, clockMs, el, must, reconnectDelay, showStatus, socketUrl, who } from './dom.ts';

const MAX_ROWS = 300;
const MAX_SESSION_ROWS = 100;

class RelayView {
  private readonly names = new Map<string, string>();
  private readonly online = new Map<string, string>();
  private readonly expanded = new Set<string>();
  /** The shared envelope view, as the relay sees an envelope. */
  private readonly view: EnvelopeViewContext = { viewer: 'relay', name: (pin) => who(pin, this.names), expanded: this.expanded };
  private envelopes = 0;
  private envelopeBytes = 0;
  private escrowed = 0;
  private receipts = 0;
  private attempt = 0;
  private policyEpoch = -1;
  private directoryTimer: ReturnType<typeof setTimeout> | null = null;

  private readonly body = must('traffic-body');
  private readonly sessions = must('sessions');
  private readonly directory = must('directory');
  private readonly stats = must('stats');
  private readonly status = must('status');

  constructor() {
    const toggle = must<HTMLInputElement>('show-receipts');
    const table = must('traffic');
    const apply = () => table.classList.toggle('hide-receipts', !toggle.checked);
    toggle.addEventListener('change', apply);
    apply();
  }

  connect(): void {
    this.setStatus('connecting');
    void this.loadPolicy();
    const ws = new WebSocket(socketUrl('/ws/relay-view'));
    ws.onopen = () => {
      this.attempt = 0;
      this.setStatus('live');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const parsed = parseViewerMessage(ev.data);
      if (!parsed.ok) {
        this.sessionRow(Date.now(), 'error', `the relay view got a bad frame: ${parsed.message}`);
        return;
      }
      const msg = parsed.value;
      if (msg.type === 'backlog' || msg.type === 'backlog-more') {
        // The backlog comes in parts (within the relay's buffer bound for this page): the first starts afresh.
        if (msg.type === 'backlog') this.reset();
        this.addDirectory(msg.directory);
        for (const event of msg.events) this.add(event);
      } else {
        this.add(msg.event);
      }
      this.renderStats();
    };
    ws.onclose = () => {
      this.setStatus('offline');
      setTimeout(() => this.connect(), reconnectDelay(this.attempt++));
    };
  }

  private setStatus(status: string): void {
    showStatus(this.status, status);
  }

  /** The room's model as the relay reports it (GET /api/policy, public like this page), then from policy events. */
  private async loadPolicy(): Promise<void> {
    try {
      const parsed = Policy.safeParse(await (await fetch('/api/policy', { cache: 'no-store' })).json());
      if (parsed.success) this.statement(parsed.data);
    } catch {
      // The feed's policy events keep the statement right; the static one stays until then.
    }
  }

  /** What the server can read, said for the room's key model in force: not always "nothing". */
  private statement(policy: Policy): void {
    // The backlog replays old policy events: only a policy at least as new as the one shown counts.
    if (policy.epoch < this.policyEpoch) return;
    this.policyEpoch = policy.epoch;
    const node = must('statement');
    node.dataset.model = policy.room.model;
    const words: Record<Policy['room']['model'], string> = {
      e2e: `The server relays ciphertext. It cannot read any message: it holds no key that opens them. What it does see is below: who, to whom, when, how big.${policy.room.sealedSender ? ' With sealed sender on, a direct message\'s "from" is hidden too.' : ''}`,
      'app-key':
        'This room uses the shared app key (BBM PIN messages): every copy of the app has the key that opens every message, so this server can read them all, and so can anyone with the app.',
      'server-key':
        'This room uses server-held keys (BES): the enterprise server opens every message key and wraps it again for the recipient. It reads every message, shown below in red; whoever runs or compels it can too.',
    };
    node.textContent = words[policy.room.model];
    node.classList.toggle('reads', policy.room.model !== 'e2e');
  }

  private reset(): void {
    this.names.clear();
    this.online.clear();
    this.envelopes = this.envelopeBytes = this.escrowed = this.receipts = 0;
    this.body.replaceChildren();
    this.sessions.replaceChildren();
  }

  private addDirectory(directory: DirectoryEntry[]): void {
    for (const d of directory) {
      this.names.set(d.pin, d.name);
      if (d.online) this.online.set(d.pin, '');
      else this.online.delete(d.pin);
    }
    // A large directory comes in many parts: draw it once they have arrived, not once per part.
    this.directoryTimer ??= setTimeout(() => {
      this.directoryTimer = null;
      this.renderDirectory();
    }, 30);
  }

  private who(pin: string): HTMLElement {
    const name = this.names.get(pin);
    return el('span', { class: 'who' }, name ? el('span', { class: 'name', text: name }) : null, el('span', { class: 'pin', text: pin }));
  }

  /** Just the name (the PIN when unknown), with the PIN on hover: for the compact receipt rows. */
  private short(pin: string): HTMLElement {
    return el('span', { class: 'who-short', text: this.names.get(pin) ?? pin, title: pin });
  }

  private add(event: TrafficEvent): void {
    switch (event.kind) {
      case 'envelope': {
        const env = event.env;
        const escrow = escrowLabel(env, 'relay');
        this.envelopes += 1;
        this.envelopeBytes += event.bytes;
        if (escrow.kind !== 'none') this.escrowed += 1;
        const queued = env.to.filter((pin) => !event.online.includes(pin));
        this.row(
          el(
            'tr',
            { class: `kind-envelope${escrow.kind !== 'none' ? ' escrowed' : ''}`, testid: 'traffic-row', data: { kind: 'envelope', id: env.id } },
            el('td', { class: 'time', text: clockMs(event.at) }),
            el('td', null, el('span', { class: 'kind', text: 'message' })),
            el('td', null, this.who(env.from)),
            el('td', null, ...env.to.map((pin) => this.who(pin))),
            el('td', { class: 'conv' }, env.conv === 'dm' ? '1:1' : el('span', { title: env.conv }, 'group', el('span', { class: 'pin', text: ` ${env.conv.slice(2, 8)}…` }))),
            el('td', { class: 'num', text: bytes(event.bytes) }, el('div', { class: 'hint', text: `body ${b64Bytes(env.body)} B` })),
            el('td', null, escrowBadge(env, 'relay', 'escrow-cell')),
            el(
              'td',
              { class: 'content' },
              el('div', { class: 'mono small' }, 'id ', el('span', { testid: 'envelope-id', text: env.id })),
              el('div', null, ciphertext(env, this.view, env.id)),
              event.serverRead
                ? el(
                    'div',
                    { class: 'server-read', testid: 'server-read' },
                    el('strong', { text: 'The enterprise server read it: ' }),
                    event.serverRead.group ? `[${event.serverRead.group}] ` : '',
                    event.serverRead.text,
                  )
                : null,
              el('div', {
                class: 'hint',
                text: `${modelWords(env, 'relay')}${queued.length ? `; queued for offline ${queued.map((p) => this.names.get(p) ?? p).join(', ')}` : ''}`,
              }),
              envelopeDetails('every field, as the relay holds it', env, this.view, env.id),
            ),
          ),
        );
        return;
      }
      case 'sealed':
        // Sealed sender: the relay has a recipient, a size and a time — and no sender.
        this.envelopes += 1;
        this.envelopeBytes += event.bytes;
        this.row(
          el(
            'tr',
            { class: 'kind-envelope sealed-sender', testid: 'traffic-row', data: { kind: 'sealed', id: event.id } },
            el('td', { class: 'time', text: clockMs(event.at) }),
            el('td', null, el('span', { class: 'kind', text: 'sealed' })),
            el('td', { testid: 'sealed-from' }, el('span', { class: 'hidden-sender', text: 'hidden' })),
            el('td', null, this.who(event.to)),
            el('td', { class: 'conv', text: '?' }),
            el('td', { class: 'num', text: bytes(event.bytes) }),
            el(
              'td',
              null,
              el('span', {
                class: 'no',
                testid: 'escrow-cell',
                data: { escrow: 'unknown' },
                title: 'The relay cannot see whether a sealed box holds an escrow field: under a tap it refuses sealed boxes.',
                text: 'cannot see',
              }),
            ),
            el(
              'td',
              { class: 'content' },
              el('div', { class: 'mono small' }, 'id ', el('span', { testid: 'envelope-id', text: event.id })),
              el('div', { class: 'hint', text: SEALED_SENDER }),
            ),
          ),
        );
        return;
      case 'receipt':
        this.receipts += 1;
        this.row(
          el(
            'tr',
            { class: 'kind-receipt', testid: 'traffic-row', data: { kind: 'receipt' } },
            el('td', { class: 'time', text: clockMs(event.at) }),
            el('td', null, el('span', { class: 'kind', text: event.state === 'read' ? 'R receipt' : 'D receipt' })),
            el('td', null, this.short(event.by)),
            el('td', null, this.short(event.to)),
            el('td', { text: '' }),
            el('td', { text: '' }),
            el('td', { text: '' }),
            el('td', { class: 'content' }, el('span', { class: 'hint', text: `${event.state}: ` }), el('span', { class: 'mono small', text: event.id })),
          ),
        );
        return;
      case 'login':
        this.names.set(event.pin, event.name);
        this.online.set(event.pin, event.address);
        this.sessionRow(event.at, 'login', `${event.name} (${event.pin}) from ${event.address}`);
        this.renderDirectory();
        return;
      case 'logout':
        this.online.delete(event.pin);
        this.sessionRow(event.at, 'logout', `${this.names.get(event.pin) ?? ''} (${event.pin})`);
        this.renderDirectory();
        return;
      case 'rejected':
        this.sessionRow(event.at, 'rejected', `${this.names.get(event.pin) ?? ''} (${event.pin}): ${event.code}: ${event.message}`);
        return;
      case 'policy': {
        const p = event.policy;
        this.statement(p);
        const what = p.tap
          ? `tap on (${p.scope === 'all' ? 'all traffic' : `warrant: ${p.pins.join(', ')}`}, ${p.announced ? 'announced' : 'silent'}); the relay now refuses covered envelopes without an escrow field`
          : 'tap off';
        this.sessionRow(event.at, 'policy', what);
        return;
      }
    }
  }

  private row(tr: HTMLElement): void {
    this.body.prepend(tr);
    while (this.body.childElementCount > MAX_ROWS) this.body.lastElementChild?.remove();
  }

  private sessionRow(at: number, kind: string, text: string): void {
    this.sessions.prepend(
      el(
        'li',
        { class: `session ${kind}`, testid: 'session-row', data: { kind } },
        el('time', { text: clockMs(at) }),
        el('span', { class: 'kind', text: kind }),
        el('span', { text }),
      ),
    );
    while (this.sessions.childElementCount > MAX_SESSION_ROWS) this.sessions.lastElementChild?.remove();
  }

  private renderDirectory(): void {
    const pins = [...this.names.keys()].sort((a, b) => Number(this.online.has(b)) - Number(this.online.has(a)));
    this.directory.replaceChildren(
      ...pins.map((pin) => {
        const address = this.online.get(pin);
        return el(
          'li',
          { testid: 'directory-entry', data: { pin } },
          el('span', { class: `dot ${address !== undefined ? 'on' : 'off'}`, title: address !== undefined ? 'online' : 'offline' }),
          this.who(pin),
          address ? el('span', { class: 'hint', text: ` ${address}` }) : null,
        );
      }),
    );
    if (!pins.length) this.directory.append(el('li', { class: 'empty', text: 'Nobody has logged in yet.' }));
  }

  private renderStats(): void {
    const stat = (value: string, label: string) => el('div', { class: 'stat' }, el('b', { text: value }), el('span', { text: label }));
    this.stats.replaceChildren(
      stat(String(this.online.size), 'online'),
      stat(String(this.envelopes), 'envelopes relayed'),
      stat(bytes(this.envelopeBytes), 'of ciphertext and metadata'),
      stat(String(this.receipts), 'receipts'),
      stat(String(this.escrowed), 'with an escrow field'),
    );
  }
}

const view = new RelayView();
view.connect();
