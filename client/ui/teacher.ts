/**
 * The teacher panel (`/teacher#token=…`): the lesson's scenes one click each, with a narration card
 * and the result each returned; who has joined; the tap and the room's key model in force; bots;
 * the room's model switch; forgetting offline people and resetting the room; the metadata picture.
 *
 * It uses only the lab's JSON API (server/lab/api.ts) and GET /api/regulator/tap, with the admin
 * token as the console uses it (admin-token.ts): from the URL fragment into this tab's
 * sessionStorage, never shown, sent only as a Bearer header. Every answer is parsed (lab-api.ts);
 * every refusal and failure is said in words on the page. It polls every few seconds and after
 * each action; user text (names, the scenarios' texts) reaches the page only as text nodes.
 */
import './no-eval.ts';
import type { z } from 'zod';
import { clock, el, must, showStatus } from './dom.ts';
import { dropToken, lockWithTokenForm, refusal, takeToken, unreachable } from './admin-token.ts';
import * as api from './lab-api.ts';
import { metadataMatrix, metadataTotals } from './metadata-view.ts';
import { ObserversCard, ScanCard, type CardDeps } from './teacher-lab2.ts';
import { projectorControl } from './projector-control.ts';

const POLL_MS = 3000;
const DEFAULT_BOTS = ['Bob', 'Carol', 'Dave'] as const;
/** The reset's second click must come within this long of the first. */
const RESET_ARMED_MS = 15_000;

type RoomModel = api.People['room']['model'];

const MODEL_WORDS: Record<RoomModel, string> = {
  e2e: 'end to end',
  'app-key': 'shared app key (BBM PIN messages)',
  'server-key': 'server-held keys (BES)',
};

/** The pages a narration card points at, as links on this panel. */
const PAGE_LINKS: Record<api.ScenarioInfo['narration']['look'][number]['page'], { href: string | null; label: string; opener: boolean }> = {
  chat: { href: '/', label: 'Chat', opener: false },
  'relay view': { href: '/relay', label: 'Relay view', opener: false },
  // The console gets this tab's token: a same-origin tab opened with an opener starts with a copy of its sessionStorage.
  'regulator console': { href: '/regulator', label: 'Regulator console', opener: true },
  'teacher panel': { href: '#metadata', label: 'This panel', opener: false },
  'attacker console': { href: '/attacker', label: 'Attacker console', opener: true },
  projector: { href: '/projector', label: 'Projector', opener: true },
  terminal: { href: null, label: 'Terminal', opener: false },
};

/** The token is missing, wrong or locked out: the panel has already asked for it again. */
class AuthLost extends Error {}

/** A link from scenario data only if it is an https URL (the data is the server's, but a link is a link). */
function safeHttps(link: string): URL | null {
  try {
    const url = new URL(link);
    return url.protocol === 'https:' ? url : null;
  } catch {
    return null;
  }
}

/** "30 November 2015" for an ISO date (the date of the event, not of a time zone). */
function longDate(iso: string): string {
  const d = new Date(`${iso}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleDateString('en-GB', { day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC' });
}

const factValue = (v: string | number | boolean): string => (typeof v === 'boolean' ? (v ? 'yes' : 'no') : String(v));

class TeacherPanel {
  private token: string | null = takeToken();
  private scenarios: api.ScenarioInfo[] = [];
  private current: api.RunRecord | null = null;
  private people: api.People | null = null;
  private classroom: api.ClassroomView | null = null;
  private tap: z.infer<typeof api.Tap> | null = null;
  private escrow: api.EscrowKeys | null = null;
  private metadata: api.MetadataPicture | null = null;
  /** Scenes run from this panel since it opened (the current one is marked too). */
  private readonly ran = new Set<string>();
  private busy: string | null = null;
  /** Bumped by every action: a poll that started before one finished is stale and dropped. */
  private generation = 0;
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private live = false;
  private roomDirty = false;
  private resetTimer: ReturnType<typeof setTimeout> | null = null;

  private readonly status = must('status');
  private readonly errorBar = must('panel-error');
  private readonly noticeBar = must('notice');
  private readonly roomForm = must<HTMLFormElement>('room-form');
  /** Lab part 2's cards: the relay's observers (and the reveal), client-side scanning. */
  private readonly cardDeps: CardDeps = { call: (schema, path, what, init) => this.call(schema, path, what, init), act: (label, job) => this.act(label, job) };
  private readonly observersCard = new ObserversCard(this.cardDeps);
  private readonly scanCard = new ScanCard(this.cardDeps);

  start(): void {
    must('next').addEventListener('click', () => {
      const next = this.nextScene();
      if (next) void this.run(next);
    });
    this.roomForm.addEventListener('change', () => {
      this.roomDirty = true;
      this.syncRoomForm();
    });
    this.roomForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.applyRoom();
    });
    must<HTMLFormElement>('bot-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = must<HTMLInputElement>('bot-name');
      const name = input.value.trim();
      if (!name) return this.showError('Type a name for the bot first.');
      void this.startBot(name).then((ok) => {
        if (ok) input.value = '';
      });
    });
    must('forget-offline').addEventListener('click', () => void this.forgetOffline());
    this.drawResetBox(false);
    must('metadata-fullscreen').addEventListener('click', () => void this.toggleFullscreen());
    document.addEventListener('fullscreenchange', () => {
      must('metadata-fullscreen').textContent = document.fullscreenElement ? 'Leave full screen' : 'Full screen';
    });
    projectorControl(() => this.token);
    if (this.token) void this.open();
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
      text: "The teacher's token was printed when the relay started (the part after #token= in the regulator console's link). This tab keeps it until you close it; the page never shows it.",
      button: 'Open the panel',
      problem,
      onToken: (token) => {
        this.token = token;
        void this.open();
      },
    });
  }

  private lostToken(problem: string): never {
    dropToken();
    this.token = null;
    this.askToken(problem);
    throw new AuthLost(problem);
  }

  /** One call to the API: the answer parsed, or an error in words (a refused token asks for it again). */
  private async call<T>(schema: z.ZodType<T>, path: string, what: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
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
    return api.parseAnswer(schema, await res.json().catch(() => null), what);
  }

  private async open(): Promise<void> {
    showStatus(this.status, 'connecting');
    try {
      this.scenarios = [...(await this.call(api.Scenarios, '/api/lab/scenarios', 'the list of scenarios')).scenarios].sort((a, b) => a.scene - b.scene);
    } catch (err) {
      if (err instanceof AuthLost) return;
      showStatus(this.status, 'offline');
      this.showError(`The panel could not load the scenarios. ${(err as Error).message}`);
      must('stage').hidden = false;
      this.pollTimer = setTimeout(() => void this.open(), POLL_MS);
      return;
    }
    for (const id of SECTIONS) must(id).hidden = false;
    this.live = true;
    this.drawScenarios();
    this.drawNarration();
    await this.poll();
  }

  // ---------------------------------------------------------------------------
  // Polling

  private async poll(): Promise<void> {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    await this.refresh();
    if (this.live) this.pollTimer = setTimeout(() => void this.poll(), POLL_MS);
  }

  /** Everything the panel shows, fetched again; a failure is said once, and cleared when it passes. */
  private async refresh(): Promise<void> {
    const generation = this.generation;
    try {
      const [people, current, metadata, tap, escrow, classroom] = await Promise.all([
        this.call(api.People, '/api/lab/people', 'the people list'),
        this.call(api.Current, '/api/lab/current', 'the current scenario'),
        this.call(api.MetadataPicture, '/api/lab/metadata', 'the metadata picture'),
        this.call(api.Tap, '/api/regulator/tap', 'the tap'),
        this.call(api.EscrowKeys, '/api/lab/escrow', 'the escrow keys'),
        this.call(api.ClassroomView, '/api/lab/classroom', 'classroom mode'),
      ]);
      if (generation !== this.generation) return;
      this.escrow = escrow;
      this.people = people;
      this.classroom = classroom;
      this.tap = tap;
      this.metadata = metadata;
      if (current.current?.id !== this.current?.id || current.current?.at !== this.current?.at) {
        this.current = current.current;
        if (this.current) this.ran.add(this.current.id);
        this.drawNarration();
        this.drawScenarios();
      }
      showStatus(this.status, 'live');
      if (this.errorBar.dataset.source === 'poll') this.clearError();
      this.drawState();
      this.drawPeople();
      this.drawClassroom();
      this.drawBots();
      this.drawMetadata();
      await Promise.all([this.observersCard.refresh(), this.scanCard.refresh()]);
    } catch (err) {
      if (err instanceof AuthLost) return;
      showStatus(this.status, 'offline');
      this.showError((err as Error).message, 'poll');
    }
  }

  // ---------------------------------------------------------------------------
  // Actions

  /** Run one action at a time: buttons off while it runs, its outcome said, then everything fetched again. */
  private async act(label: string, job: () => Promise<string>): Promise<boolean> {
    if (this.busy) {
      this.showError(`Wait: "${this.busy}" is still running.`);
      return false;
    }
    this.busy = label;
    this.clearError();
    this.notice(`${label}…`);
    this.drawBusy();
    let ok = false;
    try {
      this.notice(await job());
      ok = true;
    } catch (err) {
      if (!(err instanceof AuthLost)) {
        this.notice('');
        this.showError(`${label} failed: ${(err as Error).message}`, 'action');
      }
    } finally {
      this.busy = null;
      this.generation += 1;
      this.drawBusy();
    }
    if (this.token) await this.poll();
    return ok;
  }

  private run(scenario: api.ScenarioInfo): Promise<boolean> {
    return this.act(`Running scene ${scenario.scene}: ${scenario.title}`, async () => {
      const record = await this.call(api.RunRecord, `/api/lab/scenarios/${encodeURIComponent(scenario.id)}/run`, 'the scenario run', { method: 'POST', body: {} });
      this.current = record;
      this.ran.add(record.id);
      this.drawNarration();
      this.drawScenarios();
      // The card below says what it did; the bar needs to say nothing more.
      return '';
    });
  }

  private nextScene(): api.ScenarioInfo | undefined {
    const at = this.current ? this.scenarios.findIndex((s) => s.id === this.current?.id) : -1;
    return this.scenarios[at + 1 < this.scenarios.length ? at + 1 : 0];
  }

  private async applyRoom(): Promise<void> {
    const model = (this.roomForm.querySelector<HTMLInputElement>('input[name="model"]:checked')?.value ?? 'e2e') as RoomModel;
    const sealed = model === 'e2e' && must<HTMLInputElement>('sealed-sender').checked;
    await this.act(`Setting the room to ${MODEL_WORDS[model]}${sealed ? ' with sealed sender' : ''}`, async () => {
      const { room } = await this.call(api.Room, '/api/lab/room', 'the room change', { method: 'POST', body: { model, sealedSender: sealed } });
      this.roomDirty = false;
      return `The room is now ${MODEL_WORDS[room.model]}${room.sealedSender ? ', with sealed sender' : ''}: every client seals its next message under it.`;
    });
  }

  private startBot(name: string): Promise<boolean> {
    return this.act(`Starting the bot ${name}`, async () => {
      const bot = await this.call(api.Bot, '/api/lab/bots', 'starting a bot', { method: 'POST', body: { name } });
      return `${bot.name} is online (PIN ${bot.pin}): a real client in the relay's process, its keys in its memory only. It answers what it is sent.`;
    });
  }

  private stopBot(name: string): Promise<boolean> {
    return this.act(`Stopping the bot ${name}`, async () => {
      await this.call(api.Stopped, `/api/lab/bots/${encodeURIComponent(name)}`, 'stopping a bot', { method: 'DELETE' });
      return `${name} stopped: offline now, still in the directory until you forget offline people.`;
    });
  }

  private kick(person: api.Person): Promise<boolean> {
    return this.act(`Removing ${person.name} from the room`, async () => {
      const done = await this.call(api.Kicked, `/api/lab/people/${encodeURIComponent(person.pin)}/kick`, 'removing a person', { method: 'POST', body: {} });
      return `${person.name} (PIN ${done.kicked}) is removed: ${done.sessions ? 'their tab now says the teacher removed them' : 'they were offline'}, and their PIN cannot log in again until you let them back in or reset the room.`;
    });
  }

  private readmit(person: api.Person): Promise<boolean> {
    return this.act(`Letting ${person.name} back in`, async () => {
      await this.call(api.Readmitted, `/api/lab/people/${encodeURIComponent(person.pin)}/readmit`, 'letting a person back in', { method: 'POST', body: {} });
      return `${person.name} may join again: they reload their chat page.`;
    });
  }

  private hideCode(hidden: boolean): Promise<boolean> {
    return this.act(hidden ? 'Hiding the class code' : 'Showing the class code', async () => {
      this.classroom = await this.call(api.ClassroomView, '/api/lab/classroom', 'classroom mode', { method: 'POST', body: { hidden } });
      this.drawClassroom();
      return hidden ? 'The class code is hidden here and on the projector. Joining with it still works: show it again for a late-comer.' : 'The class code is shown again.';
    });
  }

  private forgetOffline(): Promise<boolean> {
    return this.act('Forgetting offline people', async () => {
      const { forgotten } = await this.call(api.Forgotten, '/api/lab/forget-offline', 'forgetting offline people', { method: 'POST', body: {} });
      return forgotten
        ? `Forgot ${forgotten} ${forgotten === 1 ? 'person' : 'people'} who ${forgotten === 1 ? 'was' : 'were'} offline (their directory entries and queues).`
        : 'Nobody was offline: nothing to forget.';
    });
  }

  /** The reset's first click only arms it: the box then says what will be erased and asks again. */
  private drawResetBox(armed: boolean): void {
    if (this.resetTimer) clearTimeout(this.resetTimer);
    this.resetTimer = null;
    const box = must('reset-box');
    if (!armed) {
      const button = el('button', { class: 'danger', testid: 'reset', text: 'Reset the room…', attrs: { type: 'button' } });
      button.disabled = this.busy !== null;
      button.addEventListener('click', () => this.drawResetBox(true));
      box.replaceChildren(button);
      box.classList.remove('armed');
      return;
    }
    const confirm = el('button', { class: 'danger', testid: 'reset-confirm', text: 'Yes, reset everything', attrs: { type: 'button' } });
    const cancel = el('button', { class: 'secondary', testid: 'reset-cancel', text: 'Cancel', attrs: { type: 'button' } });
    confirm.addEventListener('click', () => {
      this.drawResetBox(false);
      void this.reset();
    });
    cancel.addEventListener('click', () => this.drawResetBox(false));
    box.replaceChildren(
      el(
        'p',
        { class: 'reset-warning', testid: 'reset-warning', attrs: { role: 'alert' } },
        el('strong', { text: 'Reset the whole room? ' }),
        "Everyone is disconnected and forgotten (open chat tabs are told), every queue, the relay's metadata log and the intercept archive are emptied, the bots stop, the tap goes off and the room is end to end again. The regulator's audit log keeps a record of the reset.",
      ),
      confirm,
      ' ',
      cancel,
    );
    box.classList.add('armed');
    confirm.focus();
    this.resetTimer = setTimeout(() => this.drawResetBox(false), RESET_ARMED_MS);
  }

  private reset(): Promise<boolean> {
    return this.act('Resetting the room', async () => {
      const done = await this.call(api.ResetDone, '/api/lab/reset', 'the reset', { method: 'POST', body: { confirm: 'reset' } });
      this.ran.clear();
      this.current = null;
      this.roomDirty = false;
      this.observersCard.clear();
      this.drawNarration();
      this.drawScenarios();
      return `The room is reset: ${done.users} ${done.users === 1 ? 'person' : 'people'} forgotten, ${done.intercepts} intercepts deleted, ${done.bots} ${done.bots === 1 ? 'bot' : 'bots'} stopped. The audit log records it.`;
    });
  }

  private async toggleFullscreen(): Promise<void> {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await must('metadata').requestFullscreen();
    } catch (err) {
      this.showError(`Full screen was refused by the browser: ${(err as Error).message}`, 'action');
    }
  }

  // ---------------------------------------------------------------------------
  // Drawing

  private notice(text: string): void {
    this.noticeBar.textContent = text;
  }

  private showError(text: string, source: 'poll' | 'action' = 'action'): void {
    this.errorBar.textContent = text;
    this.errorBar.dataset.source = source;
  }

  private clearError(): void {
    this.errorBar.textContent = '';
    delete this.errorBar.dataset.source;
  }

  private drawBusy(): void {
    document.body.dataset.busy = this.busy ? 'true' : 'false';
    for (const button of document.querySelectorAll<HTMLButtonElement>('.t-side button, #reset')) button.disabled = this.busy !== null;
    this.drawNext();
  }

  private drawNext(): void {
    const next = this.nextScene();
    const button = must<HTMLButtonElement>('next');
    const last = this.current !== null && this.scenarios.at(-1)?.id === this.current.id;
    button.textContent = next ? `${last ? 'Again from' : 'Next:'} ${next.scene} · ${next.title}` : 'Next';
    button.dataset.next = next?.id ?? '';
    button.disabled = this.busy !== null || !next;
  }

  private drawScenarios(): void {
    must('scenarios').replaceChildren(
      ...this.scenarios.map((s) => {
        const state = this.current?.id === s.id ? 'current' : this.ran.has(s.id) ? 'done' : 'todo';
        const button = el('button', { class: 'run', testid: 'run', text: 'Run', attrs: { type: 'button', 'aria-label': `Run scene ${s.scene}: ${s.title}` } });
        button.disabled = this.busy !== null;
        button.addEventListener('click', () => void this.run(s));
        return el(
          'li',
          { class: `scenario ${state}`, testid: 'scenario', data: { id: s.id, state } },
          el('span', { class: 'num', text: String(s.scene) }),
          el('span', { class: 'title', text: s.title }),
          state === 'done' ? el('span', { class: 'done-mark', title: 'run from this panel', text: '✓' }) : null,
          button,
        );
      }),
    );
    this.drawNext();
  }

  private drawNarration(): void {
    const card = must('narration');
    const record = this.current;
    if (!record) {
      const first = this.scenarios[0];
      card.dataset.id = '';
      card.replaceChildren(
        el('h2', { class: 'scene-title', text: 'No scene run yet' }),
        el('p', {
          class: 'what',
          text: `Press "Next" to start with scene ${first?.scene ?? 1}${first ? `, ${first.title}` : ''}. Each scene sets the modes it needs, starts bot participants, sends its messages through the real relay, and shows here what happened, where to look, and the real event behind it.`,
        }),
      );
      return;
    }
    const scene = this.scenarios.find((s) => s.id === record.id)?.scene;
    const n = record.narration;
    const source = safeHttps(n.source.link);
    card.dataset.id = record.id;
    card.replaceChildren(
      el('p', { class: 'scene-kicker' }, `Scene ${scene ?? '?'} · run at `, el('time', { text: clock(record.at) })),
      el('h2', { class: 'scene-title', testid: 'narration-title', text: record.title }),
      el(
        'div',
        { class: 'result', testid: 'result', data: { id: record.id } },
        el('p', { class: 'result-summary', testid: 'result-summary', text: record.result.summary }),
        el(
          'dl',
          { class: 'facts', testid: 'result-facts' },
          ...Object.entries(record.result.facts).map(([k, v]) =>
            el('div', { class: 'fact', testid: 'fact', data: { key: k, value: factValue(v) } }, el('dt', { text: k }), el('dd', { text: factValue(v) })),
          ),
        ),
      ),
      el('h3', { text: 'What happens' }),
      el('p', { class: 'what', testid: 'narration-what', text: n.what }),
      el(
        'p',
        { class: 'source', testid: 'narration-source' },
        el('span', { class: 'source-label', text: 'The real event: ' }),
        n.source.event,
        ' — ',
        el('time', { testid: 'source-date', text: longDate(n.source.date), attrs: { datetime: n.source.date } }),
        source ? ' · ' : null,
        source ? el('a', { testid: 'source-link', text: source.hostname.replace(/^www\./, ''), attrs: { href: source.href, target: '_blank', rel: 'noopener noreferrer' } }) : null,
      ),
      el('h3', { text: 'Where to look' }),
      el(
        'ul',
        { class: 'look', testid: 'narration-look' },
        ...n.look.map((l) => {
          const page = PAGE_LINKS[l.page];
          const label = page.href
            ? el('a', {
                class: 'page-link',
                testid: 'look-link',
                text: page.label,
                attrs: { href: page.href, ...(page.href.startsWith('#') ? {} : { target: '_blank', rel: page.opener ? 'opener' : 'noopener' }) },
              })
            : el('span', { class: 'page-link', text: page.label });
          return el('li', { testid: 'look', data: { page: l.page } }, label, el('span', { text: ` ${l.what}` }));
        }),
      ),
    );
  }

  private drawState(): void {
    const people = this.people;
    const tap = this.tap;
    if (!people || !tap) return;
    const s = tap.settings;
    const nameOf = (pin: string) => people.people.find((p) => p.pin === pin)?.name ?? pin;
    const tapWords = s.tap ? `ON · ${s.scope === 'all' ? 'all traffic' : `warrant: ${s.pins.map(nameOf).join(', ')}`} · ${s.announced ? 'announced' : 'silent'}` : 'OFF';
    const room = people.room;
    const line = must('room-line');
    line.replaceChildren(
      el('span', { class: `pill ${s.tap ? 'on' : 'off'}`, text: `Tap ${s.tap ? 'ON' : 'OFF'}` }),
      el('span', { class: 'pill model', text: `${MODEL_WORDS[room.model]}${room.sealedSender ? ' · sealed sender' : ''}` }),
    );
    const dl = must('in-force');
    dl.dataset.tap = String(s.tap);
    dl.dataset.model = room.model;
    dl.dataset.sealed = String(room.sealedSender);
    dl.dataset.exportGrade = String(this.escrow?.exportGradeBits ?? 'no');
    const item = (k: string, v: string, cls = '') => el('div', { class: `kv-row ${cls}` }, el('dt', { text: k }), el('dd', { text: v }));
    dl.replaceChildren(
      item('tap', tapWords, s.tap ? 'on' : 'off'),
      ...(tap.policy.escrowKid ? [item('escrow key', tap.policy.escrowKid)] : []),
      ...(this.escrow?.exportGradeBits
        ? [item('escrow key strength', `export-grade: a ${this.escrow.exportGradeBits}-bit secret, 2^${this.escrow.exportGradeBits} tries break it`, 'on')]
        : []),
      item('key model', MODEL_WORDS[room.model]),
      item('sealed sender', room.sealedSender ? 'on (direct messages)' : 'off'),
    );
    this.drawEscrowKeys();
    if (!this.roomDirty) {
      const radio = this.roomForm.querySelector<HTMLInputElement>(`input[name="model"][value="${room.model}"]`);
      if (radio) radio.checked = true;
      must<HTMLInputElement>('sealed-sender').checked = room.sealedSender;
    }
    this.syncRoomForm();
  }

  /**
   * The regulator key's fingerprint: the out-of-band value the class pins (read it out, write it on
   * the board). When the relay announces another key, both fingerprints, side by side.
   */
  private drawEscrowKeys(): void {
    const keys = this.escrow;
    const box = must('escrow-keys');
    if (!keys) return;
    box.dataset.swapped = String(keys.swapped);
    const announced = keys.announced;
    box.replaceChildren(
      el('p', {
        class: 'hint',
        text: "The regulator key's fingerprint — read it out or write it on the board: a chat tab that pins it warns when the relay asks it to seal to another key.",
      }),
      el('p', { class: 'fingerprint', testid: 'regulator-fingerprint', text: keys.regulator.fingerprint }),
      announced === null
        ? el('p', { class: 'hint', testid: 'announced-key', text: 'The tap is off: the relay announces no escrow key.' })
        : keys.swapped
          ? el(
              'p',
              { class: 'flag', testid: 'announced-key', attrs: { role: 'alert' } },
              el('strong', { text: 'The relay announces another key: ' }),
              el('span', { class: 'fingerprint', text: announced.fingerprint }),
              ` (key id ${announced.kid}). Compliant clients seal to it; the regulator's key does not open what they send.`,
            )
          : el('p', { class: 'hint', testid: 'announced-key', text: `The relay announces this key (key id ${announced.kid}).` }),
    );
  }

  private syncRoomForm(): void {
    const model = this.roomForm.querySelector<HTMLInputElement>('input[name="model"]:checked')?.value;
    const sealed = must<HTMLInputElement>('sealed-sender');
    sealed.disabled = model !== 'e2e' || this.busy !== null;
    if (model !== 'e2e') sealed.checked = false;
    this.roomForm.classList.toggle('pending', this.roomDirty);
  }

  private drawPeople(): void {
    const people = this.people?.people ?? [];
    const online = people.filter((p) => p.online).length;
    must('people-head').textContent = people.length ? `People — ${online} online, ${people.length - online} offline` : 'People';
    const list = must('people');
    list.replaceChildren(
      ...people.map((p) =>
        el(
          'li',
          { class: `person ${p.online ? 'online' : 'offline'}`, testid: 'person', data: { pin: p.pin, online: String(p.online), bot: String(p.bot) } },
          el('span', { class: `dot ${p.online ? 'on' : 'off'}`, title: p.online ? 'online' : 'offline' }),
          el('span', { class: 'name', testid: 'person-name', text: p.name }),
          p.bot ? el('span', { class: 'tag', text: 'bot' }) : null,
          el('span', { class: 'pin', text: p.pin }),
          el('span', { class: 'device hint', testid: 'person-device', title: 'what their browser says it runs on', text: p.bot ? '' : p.device ? `says: ${p.device}` : '' }),
          el('span', { class: 'seen hint', text: p.kicked ? 'removed by you' : p.online ? 'online' : `offline, last seen ${clock(p.lastSeen)}` }),
          p.bot ? null : this.personButton(p),
        ),
      ),
    );
    if (!people.length) list.append(el('li', { class: 'empty', testid: 'people-empty', text: 'Nobody has joined yet. Run a scene, start a bot, or open a chat tab.' }));
  }

  private personButton(p: api.Person): HTMLButtonElement {
    const button = p.kicked
      ? el('button', { class: 'secondary small-button', testid: 'readmit', text: 'Let back in', attrs: { type: 'button', 'aria-label': `Let ${p.name} back in` } })
      : el('button', { class: 'danger small-button', testid: 'kick', text: 'Remove', attrs: { type: 'button', 'aria-label': `Remove ${p.name} from the room` } });
    button.disabled = this.busy !== null;
    button.addEventListener('click', () => void (p.kicked ? this.readmit(p) : this.kick(p)));
    return button;
  }

  /**
   * Classroom mode: the join QR code large, the class code and the links — until the teacher hides
   * them (everyone is in). The QR code is an image from an SVG data: URL the relay made (checked by
   * lab-api.ts to be only that); nothing here holds or shows the admin token.
   */
  private drawClassroom(): void {
    const card = must('classroom');
    const view = this.classroom;
    if (!view?.classroom) {
      card.hidden = true;
      return;
    }
    card.hidden = false;
    card.dataset.hidden = String(view.hidden);
    const key = JSON.stringify(view) + String(this.busy !== null);
    if (card.dataset.drawn === key) return;
    card.dataset.drawn = key;
    const toggle = el('button', {
      class: 'secondary',
      testid: view.hidden ? 'show-code' : 'hide-code',
      text: view.hidden ? 'Show the class code' : 'Hide the code (everyone is in)',
      attrs: { type: 'button' },
    });
    toggle.disabled = this.busy !== null;
    toggle.addEventListener('click', () => void this.hideCode(!view.hidden));
    const wrong = view.wrongCodes
      ? el('p', { class: 'hint', testid: 'wrong-codes', text: `${view.wrongCodes} wrong class code${view.wrongCodes === 1 ? '' : 's'} refused so far.` })
      : null;
    if (view.hidden) {
      card.replaceChildren(
        el('h2', { text: 'Joining' }),
        el('p', { testid: 'code-hidden', text: 'The class code is hidden (here and on the projector). Joining with it still works.' }),
        ...(wrong ? [wrong] : []),
        toggle,
      );
      return;
    }
    card.replaceChildren(
      el('h2', { text: 'Join on your phone or laptop' }),
      el(
        'div',
        { class: 'join' },
        view.qr
          ? el('img', { class: 'join-qr', testid: 'join-qr', attrs: { src: view.qr, alt: `QR code of the join link ${view.links[0] ?? ''}`, width: '360', height: '360' } })
          : null,
        el(
          'div',
          { class: 'join-text' },
          el('p', { class: 'hint', text: 'Class code' }),
          el('p', { class: 'class-code', testid: 'class-code', text: view.code }),
          el('p', { class: 'hint', text: 'or open' }),
          el('ul', { class: 'join-links', testid: 'join-links' }, ...view.links.map((link) => el('li', { text: link }))),
        ),
      ),
      ...(wrong ? [wrong] : []),
      toggle,
    );
  }

  private drawBots(): void {
    const running = new Set(this.people?.bots ?? []);
    const names = [...new Set([...DEFAULT_BOTS, ...running])];
    must('bot-buttons').replaceChildren(
      ...names.map((name) => {
        const on = running.has(name);
        const button = el('button', {
          class: `bot-toggle ${on ? 'stop secondary' : 'start'}`,
          testid: 'bot-toggle',
          data: { name, running: String(on) },
          text: `${on ? 'Stop' : 'Start'} ${name}`,
          attrs: { type: 'button' },
        });
        button.disabled = this.busy !== null;
        button.addEventListener('click', () => void (on ? this.stopBot(name) : this.startBot(name)));
        return button;
      }),
    );
  }

  private drawMetadata(): void {
    const pic = this.metadata;
    if (!pic) return;
    must('metadata-totals').textContent = metadataTotals(pic);
    must('metadata-matrix-wrap').replaceChildren(metadataMatrix(pic));
  }
}

/** The panel's parts that need the token: hidden until the relay has accepted it. */
const SECTIONS = ['controls', 'stage', 'people-card'] as const;

new TeacherPanel().start();
