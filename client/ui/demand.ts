/**
 * "Serve a demand on the operator", on the regulator console: Pakistan's 2015 demand made
 * concrete. The relay's operator is asked for the archived traffic and hands over what it holds a
 * key to — plaintext for the server-held key model (it runs the enterprise server) and the shared
 * app key (every copy of the app has it), metadata and ciphertext only for end to end, with or
 * without an escrow field (the escrow key is the regulator's, not the operator's). What is drawn
 * here is what POST /api/regulator/demand returned, envelope by envelope.
 */
import { clock, clockMs, el, must } from './dom.ts';
import { refusal, unreachable } from './admin-token.ts';
import { Demand, parseAnswer, type DemandItem } from './lab-api.ts';

const MODEL_NAMES: Record<string, string> = {
  e2e: 'end to end',
  'e2e-escrow': 'end to end + escrow',
  'app-key': 'shared app key (BBM PIN)',
  'server-key': 'server-held key (BES)',
};

export class DemandPanel {
  private readonly button = must<HTMLButtonElement>('demand-button');
  private readonly error = must('demand-error');
  private readonly section = must('handover');

  constructor(
    private readonly token: () => string | null,
    private readonly lostToken: (problem: string) => void,
    /** What this console's own key did with an envelope ('escrow key', 'app key'), from its feed. */
    private readonly consoleRead: (id: string) => string | null,
  ) {}

  start(): void {
    this.button.addEventListener('click', () => void this.serve());
    must('handover-close').addEventListener('click', () => {
      this.section.hidden = true;
    });
  }

  private async serve(): Promise<void> {
    this.error.textContent = '';
    this.button.disabled = true;
    const label = this.button.textContent;
    this.button.textContent = 'Serving the demand…';
    try {
      const res = await fetch('/api/regulator/demand', {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token() ?? ''}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ limit: 200 }),
        cache: 'no-store',
      });
      if (!res.ok) {
        const why = await refusal(res);
        if (why.auth) return this.lostToken(why.message);
        this.error.textContent = why.message;
        return;
      }
      this.render(parseAnswer(Demand, await res.json(), 'the demand'));
    } catch (err) {
      this.error.textContent = err instanceof Error && err.message.startsWith('the relay') ? err.message : unreachable(err);
    } finally {
      this.button.disabled = false;
      this.button.textContent = label;
    }
  }

  private render(demand: Demand): void {
    const items = demand.items;
    const byServer = items.filter((i) => i.status === 'plaintext' && i.by === 'server key').length;
    const byApp = items.filter((i) => i.status === 'plaintext' && i.by === 'app key').length;
    const closed = items.length - byServer - byApp;
    must('demand-summary').textContent = items.length
      ? `The operator handed over ${demand.plaintext} of the ${items.length} archived envelopes in plaintext (${byServer} opened with the server's key, ${byApp} with the app's shared key). For the other ${closed} it had metadata and ciphertext only.`
      : 'The archive is empty: there is nothing to demand yet.';
    const models = [...new Set(items.map((i) => i.model))];
    must('demand-models').replaceChildren(
      el('thead', null, el('tr', null, el('th', { text: 'key model' }), el('th', { text: 'envelopes' }), el('th', { text: 'plaintext' }), el('th', { text: 'ciphertext only' }))),
      el(
        'tbody',
        null,
        ...models.map((model) => {
          const of = items.filter((i) => i.model === model);
          const plain = of.filter((i) => i.status === 'plaintext').length;
          return el(
            'tr',
            { testid: 'demand-model', data: { model, plaintext: String(plain), total: String(of.length) } },
            el('td', { text: MODEL_NAMES[model] ?? model }),
            el('td', { class: 'num', text: String(of.length) }),
            el('td', { class: `num${plain ? ' read' : ''}`, text: String(plain) }),
            el('td', { class: 'num', text: String(of.length - plain) }),
          );
        }),
      ),
    );
    const list = must('demand-items');
    list.replaceChildren(...[...items].reverse().map((item) => this.item(item)));
    if (!items.length) list.append(el('li', { class: 'empty', text: 'Nothing archived.' }));
    this.section.hidden = false;
    this.section.scrollIntoView({ block: 'nearest' });
  }

  private item(item: DemandItem): HTMLElement {
    const name = (pin: string) => (item.names[pin] ? `${item.names[pin]} (${pin})` : pin);
    const meta = el(
      'div',
      { class: 'meta' },
      el('time', { text: clock(item.at), title: clockMs(item.at) }),
      el('span', { class: 'route', text: `${name(item.from)} → ${item.to.map(name).join(', ')}` }),
      el('span', { class: 'hint', text: `${MODEL_NAMES[item.model] ?? item.model} · ${item.bytes} B body` }),
    );
    if (item.status === 'plaintext') {
      return el(
        'li',
        { class: 'handed plaintext', testid: 'demand-item', data: { id: item.id, status: item.status, by: item.by, model: item.model } },
        meta,
        el(
          'div',
          { class: 'verdict read' },
          el('span', { class: 'badge', text: 'PLAINTEXT' }),
          el('span', { class: 'via', text: item.by === 'server key' ? '— the operator opened it with its server key' : "— the operator opened it with the app's shared key" }),
          el(
            'span',
            { class: 'opened' },
            item.group !== undefined ? el('span', { class: 'group', text: `[${item.group}] ` }) : null,
            el('span', { class: 'plaintext', testid: 'demand-text', text: item.text }),
          ),
        ),
      );
    }
    const own = item.model === 'e2e-escrow' ? this.consoleRead(item.id) : null;
    return el(
      'li',
      { class: 'handed closed', testid: 'demand-item', data: { id: item.id, status: item.status, by: '', model: item.model } },
      meta,
      el(
        'div',
        { class: 'verdict sealed' },
        el('span', { class: 'badge', text: 'CIPHERTEXT ONLY' }),
        el('span', { class: 'unreadable', testid: 'demand-why', text: `metadata and ciphertext only — ${item.why}` }),
        own === 'escrow key' ? el('span', { class: 'hint', text: ' (this console opens it anyway, with the escrow key: the tap covered it)' }) : null,
      ),
    );
  }
}
