/**
 * "Scanner reports" on the regulator console: what client-side scanning hands the authority. Each
 * report says who wrote a message matching the list, when, to whom, and which entry matched; the
 * message itself stays end to end, and the console says so (its key does not open it). Fetched
 * from GET /api/regulator/scan-reports every few seconds while the console is open with the token.
 */
import { clock, el, must } from './dom.ts';
import { refusal, unreachable } from './admin-token.ts';
import { ScanReports, parseAnswer, type ScanReport } from './lab-api.ts';

const POLL_MS = 2000;

const MESSAGE_WORDS: Record<ScanReport['model'], string> = {
  e2e: 'end to end: this console cannot read it',
  sealed: 'end to end, sealed sender: this console cannot read it',
  'e2e-escrow': 'end to end with an escrow field: the tap reads it in the feed',
  'app-key': 'shared app key',
  'server-key': 'server-held key',
};

export class ScanReportsPanel {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly card = must('scan-reports-card');
  private readonly error = must('scan-reports-error');

  constructor(
    private readonly token: () => string | null,
    private readonly lostToken: (problem: string) => void,
  ) {}

  start(): void {
    void this.poll();
  }

  private async poll(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const token = this.token();
    if (token) await this.load(token);
    else this.card.hidden = true;
    this.timer = setTimeout(() => void this.poll(), POLL_MS);
  }

  private async load(token: string): Promise<void> {
    try {
      const res = await fetch('/api/regulator/scan-reports', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
      if (!res.ok) {
        const why = await refusal(res);
        if (why.auth) return this.lostToken(why.message);
        this.error.textContent = why.message;
        return;
      }
      const { reports, state } = parseAnswer(ScanReports, await res.json(), 'the scanner reports');
      this.error.textContent = '';
      this.card.hidden = false;
      must('scan-reports-state').textContent = state.on
        ? `Client-side scanning is ON: ${state.entries.length} ${state.entries.length === 1 ? 'hash' : 'hashes'} on the list, ${state.announced ? 'announced' : 'not announced'} to users. ${state.reports.total} ${state.reports.total === 1 ? 'report' : 'reports'}.`
        : `Client-side scanning is off. ${state.reports.total} ${state.reports.total === 1 ? 'report' : 'reports'} so far.`;
      const list = must('scan-reports');
      list.replaceChildren(
        ...reports.map((r) =>
          el(
            'li',
            { class: 'scan-report', testid: 'scan-report', data: { id: r.id, from: r.from.pin, n: String(r.n) } },
            el('time', { text: clock(r.at) }),
            el('b', { testid: 'scan-report-from', text: ` ${r.from.name} (${r.from.pin})` }),
            el('span', { text: ' wrote to ' }),
            el('b', { testid: 'scan-report-to', text: r.to.map((t) => `${t.name} (${t.pin})`).join(', ') }),
            el('span', { text: ' a message matching ' }),
            el('b', { testid: 'scan-report-entry', text: r.n ? `list entry #${r.n}` : 'an entry of an earlier list' }),
            el('code', { class: 'hash', text: ` ${r.entry.slice(0, 12)}…` }),
            el('span', { class: 'hint', testid: 'scan-report-message', text: ` — the message: ${MESSAGE_WORDS[r.model]}.` }),
          ),
        ),
      );
      if (!reports.length)
        list.append(el('li', { class: 'empty', text: 'No reports yet. A client reports a message whose words match a hash on the list, before it encrypts it.' }));
    } catch (err) {
      this.error.textContent = err instanceof Error && err.message.startsWith('the relay') ? err.message : unreachable(err);
    }
  }
}
