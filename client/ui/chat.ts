/**
 * The chat page (`/?name=Alice`): a BBM-style messenger in one browser tab.
 *
 * The identity (Ed25519 secret key) and the history live in this browser's
 * localStorage under the person's name (person.ts): opening `/?name=Bob` again
 * brings back the same Bob, two names are two people, and a second tab of Bob
 * offers to take him over. The keys never leave the browser. All the
 * protocol work is done by client/core's Messenger; this file only draws it.
 * Text reaches the page only through text nodes (see dom.ts).
 */
import './no-eval.ts';
import { cryptoReady, fromB64, safetyNumber } from '../../shared/crypto.ts';
import { DisplayName, MAX_NAME_CHARS, MAX_TEXT_CHARS, type Policy } from '../../shared/protocol.ts';
import { wordsFor } from './words.ts';
import { envelopeFields } from './envelope-view.ts';
import { Messenger, chatKey, type ChatMessage, type KeyValueStore, type SocketLike, type StorageReport, type WireRecord } from '../core/messenger.ts';
import { SAVE_BUDGET } from '../core/saved-history.ts';
import { OTHERS_HELD } from '../core/groups.ts';
import { PersonTab } from './person.ts';
import { LoginRefused } from '../core/messenger.ts';
import { ErrorCode, normalizeClassCode } from '../../shared/protocol.ts';
import { codeCard, codeInput, codeNeeded, deviceKind, kickedCard, saveCode, savedCode, takeCodeFromUrl } from './join.ts';
import { describeReaders } from '../core/readers.ts';
import { EscrowPinError } from '../core/escrow-pin.ts';
import { EscrowPinView, type HeldMessage } from './escrow-pin-view.ts';
import { b64Bytes, bytes, clock, clockMs, el, must, scheduler, socketUrl } from './dom.ts';
import { PhoneTabs } from './phone-tabs.ts';

interface ChatEntry {
  chat: string;
  /** Messages the tab holds for this chat, and how many older ones it dropped from memory. */
  held: number;
  dropped: number;
  title: string;
  members: string[];
  group: boolean;
  /** 'apart': messages that claim a group this tab does not hold them to be part of. */
  kind: 'dm' | 'group' | 'apart';
  last: ChatMessage | undefined;
  unread: number;
}

const UI_KEY = 'backdoor-lab.ui';
/**
 * The contact list is rebuilt at most this often when only who is online (or a name) changed,
 * and at once for someone new or when this tab opened another chat. Each rebuild sorts and redraws every
 * contact: a participant logging identities in and out all the time (each a presence update to
 * every tab, up to 20 a second) froze classmates' tabs with 500 contacts on a slow phone.
 */
const CONTACTS_REDRAW_MS = 1000;
/** Messages drawn for the open chat: its newest this many. */
const DRAWN_PER_CHAT = 300;

/** The local day of a timestamp, to tell whether it is today. */
const clockDay = (ts: number): string => new Date(ts).toDateString();

/** A message's time: HH:MM:SS today, else with its date (YYYY-MM-DD HH:MM:SS); a time no date can hold says so. */
function stamp(ts: number): string {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return 'no valid time';
  if (clockDay(ts) === clockDay(Date.now())) return clock(ts);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ts)}`;
}

const isoOrEmpty = (ts: number): string => (Number.isNaN(new Date(ts).getTime()) ? '' : new Date(ts).toISOString());

/** A duration in the largest whole unit: "3 days", "2 h", "7 min". */
function span(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, 'day'],
    [3_600_000, 'hour'],
    [60_000, 'minute'],
  ];
  for (const [size, name] of units)
    if (ms >= size) {
      const n = Math.floor(ms / size);
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  return `${Math.round(ms / 1000)} s`;
}

/**
 * Redraw a list without taking the keyboard's place away: if a button in `list` had the focus,
 * the new button with the same `data-<key>` gets it back (someone tabbing through the contacts
 * while the directory changes stays where they were).
 */
function keepFocus(list: HTMLElement, key: 'pin' | 'chat', redraw: () => void): void {
  const active = document.activeElement instanceof HTMLElement && list.contains(document.activeElement) ? document.activeElement.dataset[key] : undefined;
  redraw();
  if (active !== undefined) list.querySelector<HTMLElement>(`[data-${key}="${CSS.escape(active)}"]`)?.focus();
}

function start(): void {
  takeCodeFromUrl(); // classroom mode: the join link's #code=… goes to storage, out of the address bar
  const params = new URLSearchParams(location.search);
  const raw = params.get('name');
  const parsed = raw === null ? null : DisplayName.safeParse(raw);
  if (!parsed?.success) {
    nameForm(parsed && !parsed.success ? (parsed.error.issues[0]?.message ?? 'invalid name') : null);
    return;
  }
  void open(parsed.data).catch((err: unknown) => fatal(err instanceof Error ? err.message : String(err)));
}

function fatal(message: string): void {
  const app = must('app');
  app.replaceChildren(el('div', { class: 'card fatal', testid: 'fatal' }, el('h2', { text: 'Something went wrong' }), el('p', { text: message })));
}

/** No ?name: a small form to pick one. Submitting reloads the page as /?name=… */
function nameForm(error: string | null): void {
  document.title = 'Backdoor Lab — who are you?';
  const input = el('input', { testid: 'name-input', attrs: { name: 'name', required: '', maxlength: String(MAX_NAME_CHARS), autocomplete: 'off', placeholder: 'e.g. Alice' } });
  const form = el(
    'form',
    { class: 'card name-form', attrs: { method: 'get', action: '/' } },
    el('h2', { text: 'Who are you?' }),
    el('p', { text: 'Each browser tab is one person with its own keys. Pick a name for this tab.' }),
    el('label', null, 'Name ', input),
    ' ',
    el('button', { text: 'Open chat', attrs: { type: 'submit' } }),
    error ? el('p', { class: 'error', text: error }) : null,
    el('p', { class: 'hint' }, 'Or open ', ...['Alice', 'Bob', 'Carol'].flatMap((n, i) => [i ? ', ' : '', el('a', { text: n, attrs: { href: `/?name=${n}` } })])),
  );
  must('app').replaceChildren(form);
  input.focus();
  // Classroom mode: the class code goes with the name (kept in this browser, never in the address).
  void codeNeeded().then((needed) => {
    if (!needed) return;
    const code = codeInput(savedCode() ?? '');
    code.removeAttribute('aria-describedby');
    form.insertBefore(el('p', null, el('label', null, 'Class code ', code)), form.querySelector('button'));
    form.addEventListener('submit', (ev) => {
      const typed = normalizeClassCode(code.value);
      if (typed) saveCode(typed);
      else {
        ev.preventDefault();
        code.setCustomValidity('six letters and digits, as on the projector');
        code.reportValidity();
      }
    });
    code.addEventListener('input', () => code.setCustomValidity(''));
  });
}

async function open(name: string): Promise<void> {
  document.title = `${name} — Backdoor Lab`;
  must('me-name').textContent = name;
  const person = new PersonTab(name);
  // Asking the browser's other tabs whether this person is open takes a fixed wait: make the keys' library ready meanwhile.
  const [claimed] = await Promise.all([person.claim(), cryptoReady()]);
  if (!claimed) {
    elsewhere(person, `${name} is already open in another tab of this browser.`);
    return;
  }
  await run(person);
}

/** Be this person in this tab: log in, draw the chat, and give the person up if another tab takes over. */
async function run(person: PersonTab): Promise<void> {
  const classCode = savedCode();
  const m = new Messenger({
    name: person.name,
    storage: person.storage,
    connect: () => new WebSocket(socketUrl('/ws')) as unknown as SocketLike,
    device: deviceKind(),
    ...(classCode ? { classCode } : {}),
  });
  document.body.dataset.keysMs = String(Math.round(performance.now()));
  const page = new ChatPage(m, person.storage);
  page.mount();
  const giveUp = (why: string) => {
    m.stop();
    page.unmount();
    elsewhere(person, why);
  };
  person.whenTaken(() => giveUp(`${person.name} is now open in another tab of this browser.`));
  m.on((event) => {
    if (event.type === 'error' && event.code === 'removed') {
      // The teacher reset the room (or removed this person): say so, and let them join again by choice.
      m.stop();
      page.unmount();
      document.body.dataset.ready = 'removed';
      const again = el('button', { text: 'Join again', testid: 'join-again', attrs: { type: 'button' }, on: { click: () => location.reload() } });
      must('app').replaceChildren(
        el(
          'div',
          { class: 'card elsewhere', testid: 'removed-card' },
          el('h2', { text: 'The teacher reset the room.' }),
          el('p', { text: `${event.message}. This tab's keys and history are still here; "Join again" logs ${person.name} in afresh.` }),
          again,
        ),
      );
      return;
    }
    if (event.type === 'error' && event.code === ErrorCode.Kicked) {
      m.stop();
      page.unmount();
      document.body.dataset.ready = 'kicked';
      must('status').textContent = 'removed';
      must('status').className = 'status offline';
      must('app').replaceChildren(kickedCard(person.name));
      return;
    }
    if (event.type === 'error' && event.code === 'replaced') {
      person.lost();
      giveUp(`${person.name} logged in from another tab or device, so this tab let go.`);
    }
  });
  // Leaving the page: close the socket cleanly and write the saved state now, not after the save timer.
  window.addEventListener('pagehide', () => m.stop());
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted) location.reload();
  });
  // A phone that slept, or lost the Wi-Fi: back at once, not after the backoff (what was queued arrives then).
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') m.wake();
  });
  window.addEventListener('online', () => m.wake());
  try {
    await m.start();
  } catch (err) {
    if (err instanceof LoginRefused && err.code === ErrorCode.Kicked) return; // the event above drew the kicked card
    const codeRefusals: string[] = [ErrorCode.ClassCodeRequired, ErrorCode.ClassCodeWrong, ErrorCode.ClassCodeLocked];
    if (!(err instanceof LoginRefused) || !codeRefusals.includes(err.code)) throw err;
    // The class code was missing or wrong: ask for it, and log in again with it.
    m.stop();
    page.unmount();
    document.body.dataset.ready = 'code';
    must('status').textContent = 'needs the class code';
    must('status').className = 'status offline';
    must('app').replaceChildren(codeCard(err.code, err.retryAfterMs, () => location.reload()));
    return;
  }
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  document.body.dataset.ready = 'true';
}

/** This person is open elsewhere: say so, and offer to use them here. */
function elsewhere(person: PersonTab, why: string): void {
  document.body.dataset.ready = 'elsewhere';
  must('status').textContent = 'elsewhere';
  must('status').className = 'status offline';
  const button = el('button', { text: 'Use here', testid: 'use-here', attrs: { type: 'button' } });
  button.addEventListener('click', () => {
    button.disabled = true;
    void person
      .takeOver()
      .then(() => run(person))
      .catch((err: unknown) => fatal(err instanceof Error ? err.message : String(err)));
  });
  must('app').replaceChildren(
    el(
      'div',
      { class: 'card elsewhere', testid: 'elsewhere' },
      el('h2', { text: why }),
      el('p', {
        text: `One tab at a time can be ${person.name}: the relay keeps one session per PIN. "Use here" moves ${person.name} (keys, PIN and history) to this tab; the other tab can take it back the same way.`,
      }),
      button,
    ),
  );
}

class ChatPage {
  private openChat: string | null = null;
  private wireScope: 'chat' | 'all' = 'chat';
  private readonly expanded = new Set<string>();
  private flash: { text: string; until: number } | null = null;
  private renderedChat: string | null = null;
  /** What each region was last drawn from: a region is redrawn only when this changes. */
  private readonly drawn = new Map<string, string>();

  private readonly sidebar = el('nav', { class: 'sidebar', testid: 'sidebar', attrs: { 'aria-label': 'Contacts and chats' } });
  /** The phone's tab bar (phone-tabs.ts); hidden on a wider screen. */
  private tabs: PhoneTabs | null = null;
  private readonly contactsUl = el('ul', { class: 'contacts', testid: 'contacts' });
  private readonly chatsUl = el('ul', { class: 'chats', testid: 'chats' });
  private readonly convHead = el('div', { class: 'conv-head' });
  private readonly messageList = el('ol', { class: 'messages', testid: 'messages', attrs: { 'aria-live': 'polite', 'aria-label': 'Messages' } });
  private readonly composer = el('textarea', {
    testid: 'composer',
    // No maxlength: a browser would cut a long paste mid-sentence without a word. The counter says it instead.
    attrs: { rows: '2', placeholder: 'Type a message. Enter sends, Shift+Enter for a new line.', 'aria-label': 'Message', 'aria-describedby': 'composer-count' },
  });
  private readonly counter = el('span', { class: 'counter', testid: 'composer-count', attrs: { id: 'composer-count', 'aria-live': 'polite' } });
  private readonly sendButton = el('button', { text: 'Send', testid: 'send', attrs: { type: 'button' } });
  private readonly notice = el('p', { class: 'notice', testid: 'notice', attrs: { role: 'status' } });
  /** What this browser did not keep of this person (see renderStorage). */
  private readonly storageNote = el('div', { class: 'storage-note', testid: 'storage' });
  private readonly wirePanel = el('div', { class: 'wire-list', testid: 'wire-panel' });
  private readonly wireHead = el('div', { class: 'wire-head' });
  /** The wire panel's articles by record, with the names they were drawn with (see renderWire). */
  private wireNodes = new Map<string, { names: string; node: HTMLElement }>();
  /** The open conversation's message items by id, with what they were drawn from. */
  private messageNodes = new Map<string, { sig: string; node: HTMLElement }>();
  private readonly schedule = scheduler(() => this.render());
  private dead = false;
  /** The escrow key pin: its setting, and the warning that holds a message back (escrow-pin-view.ts). */
  private readonly pin: EscrowPinView;

  constructor(
    private readonly m: Messenger,
    private readonly storage: KeyValueStore,
  ) {
    this.pin = new EscrowPinView(
      m,
      (held) => this.sendHeld(held),
      () => this.schedule(),
    );
    const saved = storage.getItem(UI_KEY);
    if (saved) {
      try {
        const ui = JSON.parse(saved) as { open?: string | null; wire?: 'chat' | 'all' };
        this.openChat = typeof ui.open === 'string' ? ui.open : null;
        this.wireScope = ui.wire === 'all' ? 'all' : 'chat';
      } catch {
        // Only the view state is lost.
      }
    }
  }

  private saveUi(): void {
    try {
      this.storage.setItem(UI_KEY, JSON.stringify({ open: this.openChat, wire: this.wireScope }));
    } catch {
      // A full storage: only which chat was open is not remembered (the storage notice says it is full).
    }
  }

  mount(): void {
    const m = this.m;
    must('me-pin').textContent = m.pin;
    const conversation = el(
      'section',
      { class: 'conversation', testid: 'conversation' },
      this.convHead,
      this.messageList,
      this.notice,
      this.pin.warning,
      el('div', { class: 'composer' }, this.composer, this.sendButton),
      el(
        'p',
        { class: 'legend', testid: 'legend' },
        this.counter,
        el(
          'span',
          { class: 'ticks' },
          'Ticks on your messages: ',
          el('b', { text: '…' }),
          ' sending · ',
          el('b', { text: '✓' }),
          ' the relay has it · ',
          el('b', { text: 'D' }),
          ' delivered to their device · ',
          el('b', { text: 'R' }),
          ' read · ',
          el('b', { text: '✗' }),
          ' failed',
        ),
      ),
    );
    const wire = el(
      'aside',
      { class: 'wire', testid: 'wire', attrs: { 'aria-label': 'What crossed the wire' } },
      this.wireHead,
      el('p', { class: 'hint', text: 'Every envelope this tab sent or received, exactly as the relay saw it. The body is ciphertext; only the key wraps let a reader open it.' }),
      this.wirePanel,
    );
    must('app').replaceChildren(this.sidebar, conversation, wire);
    this.tabs = new PhoneTabs(must('app'), { contacts: this.sidebar, chat: conversation, wire }, this.openChat ? 'chat' : 'contacts');

    this.composer.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.send();
      }
    });
    this.sendButton.addEventListener('click', () => this.send());
    this.composer.addEventListener('input', () => this.renderCounter());
    this.renderCounter();
    document.addEventListener('visibilitychange', this.schedule);
    window.addEventListener('focus', this.schedule);

    m.on((event) => {
      // A tab that was duplicated shares this identity; the relay keeps one session, and the message stays up.
      if (event.type === 'error' && !event.ref) this.say(`${event.code}: ${event.message}`, event.code === 'replaced' ? Infinity : 8000);
      if (event.type === 'key-refused') this.say(`${m.nameOf(event.pin)} (${event.pin}): ${wordsFor(event.code)}`, 15_000);
      this.schedule();
    });
    this.render();
  }

  /** Stop drawing: another tab is this person now (the messenger was stopped). */
  unmount(): void {
    this.dead = true;
    this.tabs?.bar.remove();
    document.removeEventListener('visibilitychange', this.schedule);
    window.removeEventListener('focus', this.schedule);
  }

  /** True when `region` was last drawn from this same state (and so need not be redrawn). */
  private unchanged(region: string, state: unknown): boolean {
    const key = JSON.stringify(state);
    if (this.drawn.get(region) === key) return true;
    this.drawn.set(region, key);
    return false;
  }

  private say(text: string, ms = 8000): void {
    this.flash = { text, until: Date.now() + ms };
    if (Number.isFinite(ms)) setTimeout(() => this.schedule(), ms + 100);
    this.schedule();
  }

  // ---------------------------------------------------------------------------
  // Model

  private entries(): ChatEntry[] {
    return this.m
      .chats()
      .map((c) => ({ chat: c.chat, title: c.title, members: c.members, group: c.kind !== 'dm', kind: c.kind, last: c.last, unread: c.unread, held: c.held, dropped: c.dropped }));
  }

  private entry(chat: string): ChatEntry {
    const found = this.entries().find((e) => e.chat === chat);
    if (found) return found;
    const pin = chat.slice(3);
    return { chat, title: this.m.nameOf(pin), members: [pin], group: false, kind: 'dm', last: undefined, unread: 0, held: 0, dropped: 0 };
  }

  private select(chat: string): void {
    if (chat !== this.openChat && this.flash && Number.isFinite(this.flash.until)) this.flash = null;
    // A message held by the escrow pin belongs to the chat it was typed in: another chat lets it go (the text stays in the box).
    if (this.pin.held && this.pin.held.chat !== chat) this.pin.drop();
    this.openChat = chat;
    this.saveUi();
    this.render();
    this.tabs?.show('chat');
    // On a phone, focusing the box would open the keyboard over the conversation just opened.
    if (!this.tabs?.phone) this.composer.focus();
  }

  /** Characters used of the limit; over it, the count turns red and says by how much. */
  private renderCounter(): void {
    const n = this.composer.value.length;
    const over = n - MAX_TEXT_CHARS;
    this.counter.textContent = over > 0 ? `${n} / ${MAX_TEXT_CHARS} characters: ${over} too many` : `${n} / ${MAX_TEXT_CHARS}`;
    this.counter.classList.toggle('over', over > 0);
    this.composer.setAttribute('aria-invalid', String(over > 0));
  }

  private send(): void {
    const text = this.composer.value;
    if (!text.trim() || !this.openChat) return;
    if (text.length > MAX_TEXT_CHARS) {
      // Refused as a whole, and kept in the box: nothing is cut or lost.
      this.say(`Not sent: this message has ${text.length} characters, and the limit is ${MAX_TEXT_CHARS}. Shorten it by ${text.length - MAX_TEXT_CHARS}, or split it in two.`);
      return;
    }
    if (this.pin.held) return; // a held message waits for the person's choice first
    const entry = this.entry(this.openChat);
    try {
      if (entry.kind === 'apart') throw new Error('You cannot reply here: these messages are not part of a group you hold.');
      if (entry.kind === 'group') this.m.sendGroup(entry.chat, text);
      else this.m.sendText(entry.members, text);
      this.composer.value = '';
      this.renderCounter();
    } catch (err) {
      // The escrow key is not the pinned one: nothing was sealed or sent; the person chooses.
      if (err instanceof EscrowPinError) return this.pin.hold(entry.chat, text, err);
      this.say(err instanceof Error ? err.message : String(err));
    }
  }

  /** "Send anyway": the held message, sealed to the key the person has now seen and accepted (this once). */
  private sendHeld(held: HeldMessage): void {
    const entry = this.entry(held.chat);
    try {
      if (entry.kind === 'group') this.m.sendGroup(entry.chat, held.text, { acceptEscrow: held.announced });
      else if (entry.kind === 'dm') this.m.sendText(entry.members, held.text, { acceptEscrow: held.announced });
      else throw new Error('You cannot reply here: these messages are not part of a group you hold.');
      if (this.composer.value === held.text) this.composer.value = '';
      this.renderCounter();
    } catch (err) {
      if (err instanceof EscrowPinError) return this.pin.hold(held.chat, held.text, err); // the key changed again meanwhile
      this.say(err instanceof Error ? err.message : String(err));
    }
    this.schedule();
  }

  private markSeen(): void {
    if (!this.openChat || document.visibilityState !== 'visible') return;
    // The messenger batches the read receipts (one frame per sender per interval), however often this runs.
    if (this.m.chats().find((c) => c.chat === this.openChat)?.unread) {
      this.m.markChatRead(this.openChat);
      this.schedule();
    }
  }

  // ---------------------------------------------------------------------------
  // Drawing

  private render(): void {
    if (this.dead) return;
    this.renderStatus();
    this.renderBanner(this.m.policy);
    this.pin.render();
    this.renderScanNotice(this.m.policy);
    this.renderSidebar();
    this.renderConversation();
    this.renderWire();
    this.renderStorage(this.m.storageReport());
    this.markSeen();
  }

  /**
   * Say plainly what this browser did not keep: a full storage (shared by every person open in this
   * browser) and what it cost, or the messages the budgets leave out of what is saved.
   */
  private renderStorage(report: StorageReport): void {
    const names = (chats: { chat: string; messages: number }[]) =>
      chats
        .slice(0, 3)
        .map((c) => `${this.chatName(c.chat)} (${c.messages})`)
        .join(', ') + (chats.length > 3 ? `, and ${chats.length - 3} more` : '');
    const full = report.failed.length > 0 || report.level > 0;
    const held = report.notSaved.reduce((n, c) => n + c.messages, 0);
    if (this.unchanged('storage', [full, report.failed.map((f) => f.what), report.level, held, report.notSaved.length, report.groupsNotSaved])) return;
    const parts: HTMLElement[] = [];
    if (full) {
      const what = report.failed.map((f) => f.what);
      if (report.level > 0 && report.level < 4 && !what.includes('your message history')) what.push('part of your message history');
      parts.push(
        el(
          'div',
          { class: 'flag', testid: 'storage-full', attrs: { role: 'alert' } },
          el('strong', { text: "This browser's storage is full. " }),
          `It is shared by every person open in this browser. Not saved: ${what.join(', ') || 'some of your history'}. Messages still arrive, are acknowledged and are shown here, but what was not saved is gone after a reload or when this tab closes.`,
          report.notSaved.length ? ` Left out: ${held} message${held === 1 ? '' : 's'} in ${names(report.notSaved)}.` : '',
        ),
      );
    } else if (report.notSaved.length || report.groupsNotSaved) {
      const chats = report.notSaved;
      parts.push(
        el(
          'p',
          { class: 'hint', testid: 'storage-trimmed' },
          chats.length ? `Not saved in this browser (shown until this tab closes): ${held} older message${held === 1 ? '' : 's'} in ${names(chats)}. ` : '',
          report.groupsNotSaved ? `${report.groupsNotSaved} groups others made are not saved (they come back with their next message). ` : '',
          `Chats with people you have written to are saved first (${SAVE_BUDGET.yoursChat.toLocaleString('en')} characters each); others keep their newest ${SAVE_BUDGET.otherChat.toLocaleString('en')} characters.`,
        ),
      );
    }
    this.storageNote.replaceChildren(...parts);
  }

  /** A chat's name for a notice: the person or the group. */
  private chatName(chat: string): string {
    if (chat.startsWith('dm:')) return this.m.nameOf(chat.slice(3));
    if (chat.startsWith('apart:')) return `messages shown apart from ${this.m.nameOf(chat.split(':')[2] ?? '')}`;
    return `"${this.m.groups.get(chat)?.name ?? 'a group'}"`;
  }

  private renderStatus(): void {
    const status = must('status');
    status.textContent = this.m.status;
    status.className = `status ${this.m.status}`;
  }

  /** Shown only when the tap is on and announced; a silent tap shows nothing, as a real one would. */
  private renderBanner(policy: Policy | null): void {
    const slot = must('banner-slot');
    const shown = policy?.tap && policy.announced;
    const verdict = this.m.escrowPin();
    if (this.unchanged('banner', shown ? [policy.scope, policy.pins, policy.escrowKid, policy.pins.map((p) => this.m.nameOf(p)), verdict] : null)) return;
    if (!shown) {
      slot.replaceChildren();
      return;
    }
    const label = (pin: string) => `${this.m.nameOf(pin)} (${pin})`;
    const others = policy.pins.filter((pin) => pin !== this.m.pin).map(label);
    const [headline, scope] =
      policy.scope === 'all'
        ? ['The regulator can read new messages you send', 'Scope: all traffic.']
        : policy.pins.includes(this.m.pin)
          ? ['The regulator can read new messages you send', `Scope: a warrant naming you${others.length ? ` and ${others.join(', ')}` : ''}.`]
          : [`The regulator can read new messages you send to or receive from ${others.join(', ')}`, 'Scope: a warrant naming them.'];
    slot.replaceChildren(
      el(
        'div',
        { class: 'banner', testid: 'tap-banner', attrs: { role: 'alert' } },
        el('strong', { text: headline }),
        el('span', { text: ` ${scope} Each new message key is also sealed to the regulator's escrow key ${policy.escrowKid ?? ''}.` }),
        verdict === null
          ? null
          : verdict.status === 'matches'
            ? el('span', { testid: 'escrow-pin-status', data: { status: verdict.status }, text: " Its fingerprint matches the regulator's key you pinned." })
            : verdict.status === 'differs'
              ? el('strong', {
                  class: 'pin-differs',
                  testid: 'escrow-pin-status',
                  data: { status: verdict.status },
                  text: ` But its fingerprint, ${verdict.announced}, is not the regulator's key you pinned: this tab asks before sending.`,
                })
              : el('span', {
                  testid: 'escrow-pin-status',
                  data: { status: verdict.status },
                  text: ` Its fingerprint: ${verdict.announced}. Compare it with the one your teacher shows, and pin it (bottom left) to be warned if it changes.`,
                }),
      ),
    );
  }

  /**
   * Client-side scanning, when it is on and announced (a real deployment would not announce it: the
   * list still comes in the policy either way, and this client scans either way).
   */
  private renderScanNotice(policy: Policy | null): void {
    const scan = policy?.scan;
    const shown = scan?.announced;
    if (this.unchanged('scan', shown ? [scan.list, scan.entries.length, this.m.scanner.enabled] : null)) return;
    const slot = must('scan-slot');
    if (!shown) {
      slot.replaceChildren();
      return;
    }
    slot.replaceChildren(
      el(
        'div',
        { class: 'banner scan-banner', testid: 'scan-banner', attrs: { role: 'status' } },
        el('strong', { text: 'Scanning is on.' }),
        el('span', {
          text: ` Before this tab encrypts a message, it checks the words against the authority's list of ${scan.entries.length} ${scan.entries.length === 1 ? 'hash' : 'hashes'} and reports a match (who, when, to whom). The message itself stays end to end. This tab cannot tell what the list targets.`,
        }),
      ),
    );
  }

  private contactsDrawnAt = Number.NEGATIVE_INFINITY;
  private contactsDrawnFor: string | null = null;
  private contactsLater: ReturnType<typeof setTimeout> | null = null;
  private contactsDraws = 0;

  private renderSidebar(): void {
    const m = this.m;
    const scroll = this.sidebar.scrollTop;
    const contacts = m.contacts().sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
    const entries = this.entries();
    const unread = entries.reduce((n, e) => n + e.unread, 0);
    this.tabs?.badge('contacts', unread ? String(unread) : '', `${unread} unread`);
    this.renderContacts(contacts);
    const state = {
      open: this.openChat,
      entries: entries.map((e) => [e.chat, e.title, e.unread, e.members.length, e.last?.id, e.last?.text, e.last?.direction, e.kind]),
    };
    const form = this.groupForm(contacts.map((c) => ({ pin: c.pin, name: c.name })));
    if (!this.sidebar.childElementCount)
      this.sidebar.append(this.storageNote, el('h2', { text: 'Contacts' }), this.contactsUl, el('h2', { text: 'Chats' }), this.chatsUl, form, this.pin.form);
    if (!this.unchanged('chats', state)) this.renderChats(entries);
    this.sidebar.scrollTop = scroll;
  }

  /** The contact list, rebuilt when it changed: at once for someone new or a click here, at most once a CONTACTS_REDRAW_MS for who is online and names. */
  private renderContacts(contacts: ReturnType<Messenger['contacts']>): void {
    const key = JSON.stringify(contacts.map((c) => [c.pin, c.name, c.online]));
    if (this.drawn.get('contacts') === key && this.contactsDrawnFor === this.openChat) return;
    // Someone new is drawn at once; who is online, and names, wait (new identities are few: the
    // relay allows an address 300 an hour, while logging in and out, under any name, is cheap).
    const people = JSON.stringify(contacts.map((c) => c.pin).sort());
    const onlyPresence = this.drawn.get('contact-people') === people && this.contactsDrawnFor === this.openChat;
    const wait = this.contactsDrawnAt + CONTACTS_REDRAW_MS - performance.now();
    if (wait > 0 && onlyPresence) {
      this.contactsLater ??= setTimeout(() => {
        this.contactsLater = null;
        this.schedule();
      }, wait);
      return;
    }
    this.drawn.set('contacts', key);
    this.drawn.set('contact-people', people);
    this.contactsDrawnAt = performance.now();
    this.contactsDrawnFor = this.openChat;
    this.contactsDraws += 1;
    this.contactsUl.dataset.draws = String(this.contactsDraws);
    const contactList = el('ul', { class: 'contacts' });
    for (const c of contacts) {
      const chat = `dm:${c.pin}`;
      contactList.append(
        el(
          'li',
          null,
          el(
            'button',
            {
              class: `contact${this.openChat === chat ? ' active' : ''}`,
              testid: 'contact',
              data: { pin: c.pin, online: String(c.online) },
              attrs: { type: 'button' },
              on: { click: () => this.select(chat) },
            },
            el('span', { class: `dot ${c.online ? 'on' : 'off'}`, title: c.online ? 'online' : 'offline', attrs: { role: 'img', 'aria-label': c.online ? 'online' : 'offline' } }),
            el('span', { class: 'name', text: c.name }),
            el('span', { class: 'pin', text: c.pin }),
          ),
        ),
      );
    }
    if (!contacts.length) contactList.append(el('li', { class: 'empty', text: 'Nobody else yet. Open another tab with ?name=Bob.' }));
    keepFocus(this.contactsUl, 'pin', () => this.contactsUl.replaceChildren(...contactList.childNodes));
  }

  private renderChats(entries: ChatEntry[]): void {
    const chatList = el('ul', { class: 'chats' });
    for (const e of entries) {
      const lastText = e.last ? (e.last.note ? this.noteText(e.last) : e.last.text) : '';
      const preview = e.last ? (e.last.direction === 'out' ? `You: ${lastText}` : lastText) : e.group ? `${e.members.length + 1} members` : '';
      chatList.append(
        el(
          'li',
          null,
          el(
            'button',
            {
              class: `chat-item${this.openChat === e.chat ? ' active' : ''}`,
              testid: 'chat-item',
              data: { chat: e.chat },
              attrs: { type: 'button' },
              on: { click: () => this.select(e.chat) },
            },
            el(
              'span',
              { class: 'title' },
              e.kind === 'apart' ? el('span', { class: 'tag warn', text: 'not verified' }) : e.group ? el('span', { class: 'tag', text: 'group' }) : null,
              e.title,
            ),
            e.unread ? el('span', { class: 'unread', testid: 'unread', text: String(e.unread) }) : null,
            el('span', { class: 'preview', text: preview.length > 60 ? `${preview.slice(0, 60)}…` : preview }),
          ),
        ),
      );
    }
    if (!chatList.childElementCount) chatList.append(el('li', { class: 'empty', text: 'No chats yet.' }));
    keepFocus(this.chatsUl, 'chat', () => this.chatsUl.replaceChildren(...chatList.childNodes));
  }

  private groupFormNode: HTMLDetailsElement | null = null;
  private readonly groupMembers = el('div', { class: 'members' });

  /** The "New group" form is built once, so typing in it survives re-renders; only its member list is redrawn. */
  private groupForm(contacts: { pin: string; name: string }[]): HTMLElement {
    if (!this.unchanged('group-members', contacts)) {
      const checked = new Set([...this.groupMembers.querySelectorAll('input:checked')].map((b) => (b as HTMLInputElement).value));
      this.groupMembers.replaceChildren(
        ...contacts.map((c) => {
          const box = el('input', { testid: 'group-member', attrs: { type: 'checkbox', value: c.pin } });
          box.checked = checked.has(c.pin);
          return el('label', { class: 'check' }, box, ` ${c.name} `, el('span', { class: 'pin', text: c.pin }));
        }),
      );
      if (!contacts.length) this.groupMembers.append(el('p', { class: 'hint', text: 'No contacts to add yet.' }));
    }
    if (this.groupFormNode) return this.groupFormNode;

    const details = el('details', { class: 'new-group', testid: 'new-group' });
    const nameInput = el('input', { testid: 'group-name', attrs: { maxlength: String(MAX_NAME_CHARS), placeholder: 'Group name', 'aria-label': 'Group name' } });
    const error = el('p', { class: 'error', testid: 'group-error' });
    const create = el('button', { text: 'Create group', testid: 'create-group', attrs: { type: 'button' } });
    create.addEventListener('click', () => {
      const name = DisplayName.safeParse(nameInput.value);
      const members = [...this.groupMembers.querySelectorAll('input:checked')].map((b) => (b as HTMLInputElement).value);
      if (!name.success) {
        error.textContent = `Group name: ${name.error.issues[0]?.message ?? 'invalid'}`;
        return;
      }
      if (!members.length) {
        error.textContent = 'Pick at least one member.';
        return;
      }
      let id: string;
      try {
        id = this.m.createGroup(name.data, members).id;
      } catch (err) {
        error.textContent = err instanceof Error ? err.message : String(err);
        return;
      }
      error.textContent = '';
      nameInput.value = '';
      for (const box of this.groupMembers.querySelectorAll('input')) box.checked = false;
      details.open = false;
      this.select(id);
      this.say(`Group "${name.data}" made: you signed its member list, and every member has been sent it.`);
    });
    details.append(el('summary', { text: 'New group' }), nameInput, this.groupMembers, create, error);
    this.groupFormNode = details;
    return details;
  }

  private renderConversation(): void {
    const m = this.m;
    const chat = this.openChat;
    const current = chat ? this.entry(chat) : null;
    const state = current?.kind === 'group' ? m.groups.get(current.chat) : undefined;
    const closed = !chat || current?.kind === 'apart' || (current?.kind === 'group' && !state?.members.some((x) => x.pin === m.pin));
    this.composer.disabled = closed;
    this.sendButton.disabled = closed;
    const placeholder = !chat
      ? 'Pick a contact or a chat first.'
      : current?.kind === 'apart'
        ? 'You cannot reply here: these messages are not part of a group you hold.'
        : current?.kind === 'group' && !state
          ? `This tab let go of this group's member list (it holds at most ${OTHERS_HELD} groups others made); the group's next message brings it back.`
          : closed
            ? 'You were removed from this group.'
            : 'Type a message. Enter sends, Shift+Enter for a new line.';
    if (this.composer.placeholder !== placeholder) this.composer.placeholder = placeholder;
    this.notice.textContent = this.flash && this.flash.until > Date.now() ? this.flash.text : '';
    if (!chat) {
      if (this.unchanged('conv', null)) return;
      this.drawn.delete('conv-head');
      this.convHead.replaceChildren(el('h2', { testid: 'conv-title', text: 'Pick a contact to start a chat' }));
      this.messageList.replaceChildren();
      this.renderedChat = null;
      return;
    }
    const entry = current!;
    const label = (pin: string) => `${m.nameOf(pin)} (${pin})`;
    const who =
      entry.kind === 'group'
        ? `Group with ${entry.members.map(label).join(', ')}`
        : entry.kind === 'apart'
          ? 'Messages that claim a group you do not hold them to be part of'
          : `PIN ${entry.members[0] ?? ''}`;
    const other = entry.kind === 'dm' ? m.directory.get(entry.members[0] ?? '') : undefined;
    // The head is redrawn only when it changes, so an open safety number (or member form) stays open.
    const contacts = m.contacts().map((c) => [c.pin, c.name]);
    const refused = entry.kind === 'dm' ? m.refusedKeys.get(entry.members[0] ?? '') : undefined;
    if (!this.unchanged('conv-head', [chat, entry.title, who, other?.pk, state?.version, state?.members.map((x) => x.pin), contacts, refused?.offered]))
      this.drawHead(entry, who, other);

    // Only the newest DRAWN_PER_CHAT are drawn; the tab holds more (history.ts) and says how many.
    const messages = m.messagesIn(chat, DRAWN_PER_CHAT);
    const earlier = (current?.held ?? 0) - messages.length + (current?.dropped ?? 0);
    const names = [...new Set(messages.flatMap((msg) => [msg.from, ...msg.readers.participants]))].map((pin) => m.nameOf(pin));
    const drawnState = [
      chat,
      names,
      earlier,
      clockDay(Date.now()),
      messages.map((msg) => [msg.id, msg.state, msg.text, msg.error, msg.waiting, msg.deliveredTo.length, msg.readBy.length, msg.readers]),
    ];
    if (this.unchanged('conv', drawnState)) return;
    const list = this.messageList;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    const scroll = list.scrollTop;
    // Each message's item is rebuilt only when what it shows changed (as the wire panel's articles).
    const built = new Map<string, { sig: string; node: HTMLElement }>();
    const drawnWith = JSON.stringify([chat, entry.group, names]);
    const items = messages.map((msg) => {
      const sig = drawnWith + JSON.stringify([msg.state, msg.text, msg.error, msg.waiting, clockDay(Date.now()), msg.deliveredTo.length, msg.readBy.length, msg.readers]);
      const cached = this.messageNodes.get(msg.id);
      const node = cached && cached.sig === sig ? cached.node : this.messageItem(msg, entry.group);
      built.set(msg.id, { sig, node });
      return node;
    });
    this.messageNodes = built;
    list.replaceChildren(...items);
    if (earlier > 0)
      list.prepend(
        el('li', {
          class: 'empty',
          testid: 'earlier',
          text: `${earlier} earlier message${earlier === 1 ? '' : 's'} in this chat ${earlier === 1 ? 'is' : 'are'} not drawn here (the newest ${DRAWN_PER_CHAT} are).`,
        }),
      );
    if (!items.length) list.append(el('li', { class: 'empty', text: entry.group ? 'No messages yet. Say hello to the group.' : `No messages yet. Say hello to ${entry.title}.` }));
    list.scrollTop = atBottom || this.renderedChat !== chat ? list.scrollHeight : scroll;
    this.renderedChat = chat;
  }

  private drawHead(entry: ChatEntry, who: string, other: { name: string; pk: string } | undefined): void {
    const m = this.m;
    const head: HTMLElement[] = [el('h2', { testid: 'conv-title', text: entry.title }), el('p', { class: 'sub', testid: 'conv-sub', text: who })];
    const refused = entry.kind === 'dm' ? m.refusedKeys.get(entry.members[0] ?? '') : undefined;
    if (refused) {
      head.push(
        el(
          'p',
          { class: 'flag', testid: 'key-warning', data: { code: refused.code }, attrs: { role: 'alert' } },
          el('strong', { text: refused.code === 'key_changed' ? 'Key change refused. ' : 'Directory entry refused. ' }),
          wordsFor(refused.code),
        ),
      );
    }
    if (other) {
      const details = el('details', { class: 'safety', testid: 'safety' });
      details.append(
        el('summary', { text: 'Safety number' }),
        el('p', { class: 'mono big', testid: 'safety-number', text: safetyNumber(m.identity.signPk, fromB64(other.pk)) }),
        el('p', { class: 'hint', text: `Compare it with ${other.name} in person. If the relay swapped a key, the numbers on the two screens differ.` }),
      );
      head.push(details);
    }
    if (entry.kind === 'apart') {
      head.push(
        el('p', {
          class: 'flag',
          testid: 'apart-warning',
          text: 'These messages name a group, but the member list you hold does not let them in (or they carry none). They never change who is in a group or who your replies go to. Each one says why.',
        }),
      );
    }
    const state = entry.kind === 'group' ? m.groups.get(entry.chat) : undefined;
    if (state) {
      const creatorPin = state.members.find((x) => x.pk === state.creator)?.pin ?? '';
      const members = el('details', { class: 'members-panel', testid: 'group-members' });
      members.append(
        el('summary', { text: `Members (${state.members.length}) · list version ${state.version}` }),
        el(
          'ul',
          { class: 'member-list' },
          ...state.members.map((x) =>
            el(
              'li',
              { testid: 'group-member-row', data: { pin: x.pin } },
              x.pin === m.pin ? `${m.name} (you)` : m.nameOf(x.pin),
              ' ',
              el('span', { class: 'pin', text: x.pin }),
              x.pin === creatorPin ? el('span', { class: 'tag', text: 'creator' }) : null,
            ),
          ),
        ),
        el('p', {
          class: 'hint',
          text: `The member list is signed by its creator, ${creatorPin === m.pin ? 'you' : `${m.nameOf(creatorPin)} (${creatorPin})`}. Only the creator can change it; a message from anyone else is shown apart.`,
        }),
      );
      if (!state.members.some((x) => x.pin === m.pin))
        members.append(el('p', { class: 'flag', testid: 'removed', text: 'You were removed from this group: you can read its history, but not send to it.' }));
      if (creatorPin === m.pin)
        members.append(
          this.memberForm(
            state.id,
            state.members.map((x) => x.pin),
          ),
        );
      head.push(members);
    }
    this.convHead.replaceChildren(...head);
  }

  /** The creator's form to add and remove members: a new signed version of the list. */
  private memberForm(id: string, current: string[]): HTMLElement {
    const m = this.m;
    const boxes = el('div', { class: 'members' });
    for (const c of m.contacts()) {
      const box = el('input', { testid: 'member-toggle', attrs: { type: 'checkbox', value: c.pin } });
      box.checked = current.includes(c.pin);
      boxes.append(el('label', { class: 'check' }, box, ` ${c.name} `, el('span', { class: 'pin', text: c.pin })));
    }
    const error = el('p', { class: 'error', testid: 'member-error' });
    const apply = el('button', { text: 'Update members', testid: 'update-members', attrs: { type: 'button' } });
    apply.addEventListener('click', () => {
      const want = [...boxes.querySelectorAll('input:checked')].map((b) => (b as HTMLInputElement).value);
      const add = want.filter((p) => !current.includes(p));
      const remove = current.filter((p) => p !== m.pin && !want.includes(p));
      if (!add.length && !remove.length) {
        error.textContent = 'Nothing changed.';
        return;
      }
      if (current.length - remove.length + add.length < 2) {
        error.textContent = 'A group needs at least one other member.';
        return;
      }
      try {
        m.changeGroup(id, { add, remove });
        error.textContent = '';
      } catch (err) {
        error.textContent = err instanceof Error ? err.message : String(err);
      }
    });
    return el('div', { class: 'member-form' }, el('p', { class: 'hint', text: 'Change the members (you sign a new version of the list):' }), boxes, apply, error);
  }

  private messageItem(msg: ChatMessage, group: boolean): HTMLElement {
    const m = this.m;
    const mine = msg.direction === 'out';
    if (msg.note) {
      // A group note: who made or changed the group, as a line of its own; and, on the creator's
      // screen, which of its envelopes the relay has not taken yet, in plain words.
      const li = el(
        'li',
        { class: 'message note', testid: 'group-note', data: { id: msg.id, direction: msg.direction, state: msg.state } },
        el('div', { class: 'text', text: this.noteText(msg) }),
      );
      if (msg.state === 'failed') li.append(el('div', { class: 'flag', testid: 'note-failed', text: `Not sent: ${msg.error ?? 'unknown error'}` }));
      for (const w of msg.waiting ?? []) {
        const whom = w.to.map((pin) => `${m.nameOf(pin)} (${pin})`).join(', ');
        const why = w.code === 'queue_full' ? 'the relay holds too many messages waiting for them' : w.message;
        li.append(
          el(
            'div',
            { class: 'flag', testid: 'note-waiting', data: { code: w.code } },
            w.nextAt === null
              ? `Not delivered to ${whom}: ${why}. Your client has stopped trying.`
              : `Not yet delivered to ${whom}: ${why}. Your client sends it again, with the same signed member list (try ${w.attempt}).`,
          ),
        );
      }
      return li;
    }
    const li = el('li', {
      class: `message ${mine ? 'out' : 'in'} ${msg.state}${msg.flag ? ' flagged' : ''}`,
      testid: 'message',
      data: { id: msg.id, direction: msg.direction, state: msg.state },
    });
    // In a group the sender line carries the PIN as well: two people may pick the same name.
    if (!mine && group) li.append(el('div', { class: 'sender', testid: 'sender' }, m.nameOf(msg.from), ' ', el('span', { class: 'pin', text: msg.from })));
    if (msg.flag) {
      li.append(
        el(
          'div',
          { class: 'flag', testid: 'flag', data: { code: msg.flag.code }, attrs: { role: 'note' } },
          el('strong', { text: `Not shown in ${msg.group ? `"${msg.group}"` : 'the group'}: ` }),
          wordsFor(msg.flag.code),
        ),
      );
    }
    if (msg.state === 'unreadable') {
      li.append(
        el('div', {
          class: 'text error',
          testid: 'message-text',
          data: { code: msg.errorCode ?? '' },
          text: `Could not open this message. ${msg.errorCode ? wordsFor(msg.errorCode) : (msg.error ?? 'unknown reason')}`,
        }),
      );
    } else li.append(el('div', { class: 'text', testid: 'message-text', text: msg.text }));
    // The sender's time, with its date when that is not today; a clock far ahead of ours is said so.
    const meta = el('div', { class: 'meta' }, el('time', { testid: 'message-time', text: stamp(msg.ts), attrs: { datetime: isoOrEmpty(msg.ts) } }));
    if (msg.clockAheadMs !== undefined)
      meta.append(' ', el('span', { class: 'flag skew', testid: 'clock-ahead', text: `sender's clock was ${span(msg.clockAheadMs)} ahead of yours` }));
    if (mine) meta.append(' ', this.stateBadge(msg));
    li.append(meta);
    // Who can read: from the envelope actually sent (message.readers), never from the current tap switch.
    li.append(
      el('div', { class: `readers${msg.readers.escrowKid ? ' escrowed' : ''}`, testid: 'readers', text: `Who can read: ${describeReaders(msg.readers, (pin) => m.nameOf(pin))}` }),
    );
    return li;
  }

  /** A group note in words: "Alice (PIN) made the group "Book club" with Bob (PIN), Carol (PIN)". */
  private noteText(msg: ChatMessage): string {
    const note = msg.note;
    if (!note) return msg.text;
    const m = this.m;
    const who = (pin: string) => (pin === m.pin ? 'you' : `${m.nameOf(pin)} (${pin})`);
    const by = msg.direction === 'out' ? 'You' : who(msg.from);
    if (note.kind === 'group-created')
      return `${by} made the group "${msg.group ?? ''}" with ${note.added
        .filter((p) => p !== msg.from)
        .map(who)
        .join(', ')}.`;
    const parts = [
      note.added.length ? `added ${note.added.map(who).join(', ')}` : '',
      note.removed.length ? `removed ${note.removed.map(who).join(', ')}` : '',
      note.renamed !== undefined ? `renamed the group "${note.renamed}"` : '',
    ].filter(Boolean);
    return `${by} ${parts.length ? parts.join('; ') : 'signed the member list again'} (member list version ${note.version}).`;
  }

  private stateBadge(msg: ChatMessage): HTMLElement {
    const n = msg.to.length;
    const names = (pins: string[]) => (pins.length ? pins.map((p) => this.m.nameOf(p)).join(', ') : 'nobody yet');
    const letter: Record<string, [string, string]> = {
      sending: ['…', 'sending: not yet accepted by the relay'],
      sent: ['✓', 'sent: the relay has it'],
      delivered: ['D', `delivered to ${names(msg.deliveredTo)}`],
      read: ['R', `read by ${names(msg.readBy)}`],
      failed: ['✗', `failed: ${msg.error ?? ''}`],
    };
    const [mark, title] = letter[msg.state] ?? ['', msg.state];
    const badge = el('span', { class: `state ${msg.state}`, testid: 'message-state', data: { state: msg.state }, title });
    badge.append(el('b', { text: mark }));
    if (n > 1) badge.append(el('span', { class: 'counts', text: ` D ${msg.deliveredTo.length}/${n} · R ${msg.readBy.length}/${n}` }));
    if (msg.state === 'failed') badge.append(el('span', { class: 'error', text: ` failed: ${msg.error ?? 'unknown error'}` }));
    return badge;
  }

  private renderWire(): void {
    const m = this.m;
    const chat = this.openChat;
    const scopeButton = (scope: 'chat' | 'all', label: string) =>
      el('button', {
        text: label,
        class: `toggle${this.wireScope === scope ? ' active' : ''}`,
        testid: `wire-scope-${scope}`,
        attrs: { type: 'button', 'aria-pressed': String(this.wireScope === scope) },
        on: {
          click: () => {
            this.wireScope = scope;
            this.saveUi();
            this.render();
          },
        },
      });
    // A record belongs to the chat its message is shown in (a group message kept apart is not in the group's).
    const records = m.wire.filter((r) => this.wireScope === 'all' || (chat !== null && (m.messages.get(r.env.id)?.chat ?? chatKey(r.env, m.pin)) === chat));
    const state = [this.wireScope, chat, m.directory.size, records.slice(-60).map((r) => `${r.direction}:${r.env.id}:${r.at}`)];
    if (this.unchanged('wire', state)) return;
    this.wireHead.replaceChildren(el('h2', { text: 'What crossed the wire' }), el('div', { class: 'toggles' }, scopeButton('chat', 'This chat'), scopeButton('all', 'All')));
    const scroll = this.wirePanel.scrollTop;
    // A record's article is built once and reused while the names it shows stay the same: a new
    // message adds one article instead of rebuilding sixty (the receiving tab's redraw was most of
    // the tab-to-tab time once a conversation grew; docs/performance.md).
    const built = new Map<string, { names: string; node: HTMLElement }>();
    const nodes = records
      .slice(-60)
      .reverse()
      .map((r) => {
        const key = `${r.direction}:${r.env.id}:${r.at}`;
        const names = [r.env.from, ...r.env.to].map((pin) => m.nameOf(pin)).join('\n');
        const cached = this.wireNodes.get(key);
        const node = cached && cached.names === names ? cached.node : this.wireItem(r);
        built.set(key, { names, node });
        return node;
      });
    this.wireNodes = built;
    this.wirePanel.replaceChildren(...nodes);
    if (!nodes.length)
      this.wirePanel.append(el('p', { class: 'empty', text: chat || this.wireScope === 'all' ? 'Nothing yet. Send a message.' : 'Open a chat to see its envelopes.' }));
    this.wirePanel.scrollTop = scroll;
  }

  private wireItem(r: WireRecord): HTMLElement {
    const env = r.env;
    const ctx = { viewer: r.direction === 'out' ? 'sender' : 'recipient', name: (pin: string) => `${this.m.nameOf(pin)} (${pin})`, expanded: this.expanded } as const;
    return el(
      'article',
      { class: `wire-record ${r.direction}`, testid: 'wire-record', data: { id: env.id, direction: r.direction } },
      el(
        'header',
        null,
        el('span', { class: 'dir', text: r.direction === 'out' ? '↑ sent' : '↓ received' }),
        el('time', { text: clockMs(r.at) }),
        el('span', { class: 'size', text: `${bytes(r.bytes)} · body ${bytes(b64Bytes(env.body))}`, title: 'whole envelope as sent · ciphertext body' }),
      ),
      envelopeFields(env, ctx, `${r.direction}:${env.id}`, r.sealed ? { sealed: true } : {}),
    );
  }
}

start();
