/**
 * Classroom mode on the chat page: the class code and the device kind a participant's tab sends
 * at login, the field to type the code in, and what the tab says when the teacher removed its
 * person. (The relay checks the code; this page only carries it.)
 *
 * The join link carries the code in its fragment (`/#code=K7M2QX`), which a browser never sends
 * to a server. The page moves it into this browser's storage at once and takes it out of the
 * address bar, so it survives the name form's reload and a phone's sleep, and is not left on
 * screen. Every text goes in through dom.ts (`textContent` only).
 */
import { CLASS_CODE_LENGTH, ErrorCode, normalizeClassCode, type ClassCode, type DeviceKind } from '../../shared/protocol.ts';
import { el } from './dom.ts';

const CODE_KEY = 'backdoor-lab.class-code';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** Take a class code out of the address's fragment (`#code=…`) into storage; the address bar keeps the rest. */
export function takeCodeFromUrl(): void {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const typed = hash.get('code');
  if (typed === null) return;
  const code = normalizeClassCode(typed);
  if (code) saveCode(code);
  hash.delete('code');
  const rest = hash.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
}

export function savedCode(): ClassCode | undefined {
  const code = normalizeClassCode(storage()?.getItem(CODE_KEY) ?? '');
  return code ?? undefined;
}

export function saveCode(code: ClassCode): void {
  try {
    storage()?.setItem(CODE_KEY, code);
  } catch {
    // A full storage: the code lasts as long as the page (it is asked again after a reload).
  }
}

/** Whether this relay asks for a class code (GET /api/join; false if it cannot be asked). */
export async function codeNeeded(): Promise<boolean> {
  try {
    const res = await fetch('/api/join', { cache: 'no-store' });
    const body: unknown = await res.json();
    return typeof body === 'object' && body !== null && (body as { classCode?: unknown }).classCode === true;
  } catch {
    return false;
  }
}

/**
 * What this browser runs on, as well as a page can tell: a phone, a tablet or a laptop (any
 * computer). Sent at login as a claim for the teacher's list; nothing depends on it.
 */
export function deviceKind(): DeviceKind {
  const ua = navigator.userAgent;
  const mobile = (navigator as Navigator & { userAgentData?: { mobile?: boolean } }).userAgentData?.mobile;
  if (/iPad|Tablet|PlayBook|Silk/i.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1)) return 'tablet';
  if (mobile === true || /iPhone|iPod|Mobile|Windows Phone/i.test(ua)) return 'phone';
  if (/Android/i.test(ua)) return 'tablet'; // Android without "Mobile" in its user agent is a tablet
  return 'laptop';
}

/**
 * The class code input (upper case, no autocorrect), for the name form and the code card. It has
 * no `name`: the name form is a GET form, and a named field would put the code in the address.
 */
export function codeInput(value = ''): HTMLInputElement {
  return el('input', {
    testid: 'class-code-input',
    attrs: {
      'aria-label': 'Class code',
      value,
      required: '',
      maxlength: String(CLASS_CODE_LENGTH + 2),
      autocomplete: 'off',
      autocapitalize: 'characters',
      spellcheck: 'false',
      inputmode: 'text',
      placeholder: 'e.g. K7M2QX',
      'aria-describedby': 'class-code-hint',
    },
  });
}

/** What the page says for each stable refusal code (the relay's own words are for logs and raw clients). */
function refusalWords(code: string, retryAfterMs: number | undefined): string {
  if (code === ErrorCode.ClassCodeWrong) return "That is not this room's class code: check it on the projector and type it again.";
  if (code === ErrorCode.ClassCodeLocked) return `Too many wrong class codes from your network: wait ${Math.max(1, Math.ceil((retryAfterMs ?? 0) / 1000))} s, then type it again.`;
  return 'This room needs the class code: scan the QR code on the projector, or type the code the teacher shows.';
}

/**
 * The relay refused the login for its class code (`code`: missing, wrong, or too many wrong from
 * this address): say so in words, and let the person type it. `join` gets a well-formed code.
 */
export function codeCard(code: string, retryAfterMs: number | undefined, join: (code: ClassCode) => void): HTMLElement {
  const input = codeInput(savedCode() ?? '');
  const problem = el('p', { class: 'error', testid: 'class-code-message', text: refusalWords(code, retryAfterMs), data: { code }, attrs: { role: 'alert' } });
  const form = el(
    'form',
    { class: 'card name-form', testid: 'class-code-card' },
    el('h2', { text: 'Join the class' }),
    problem,
    el('label', null, 'Class code ', input),
    ' ',
    el('button', { text: 'Join', testid: 'class-code-join', attrs: { type: 'submit' } }),
    el('p', { class: 'hint', text: 'The code is on the projector and in the QR code the teacher shows. It has six letters and digits.', attrs: { id: 'class-code-hint' } }),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const typed = normalizeClassCode(input.value);
    if (!typed) {
      problem.textContent = `A class code is ${CLASS_CODE_LENGTH} letters and digits (no 0, 1, I, L, O, U or V): check it on the projector.`;
      input.focus();
      return;
    }
    saveCode(typed);
    join(typed);
  });
  setTimeout(() => input.focus(), 0);
  return form;
}

/** The teacher removed this person: said plainly; the tab does not reconnect on its own. */
export function kickedCard(name: string): HTMLElement {
  return el(
    'div',
    { class: 'card elsewhere', testid: 'kicked-card', attrs: { role: 'alert' } },
    el('h2', { text: 'The teacher removed you from the room' }),
    el('p', { text: `${name} is disconnected and this tab will not reconnect. If that was a mistake, ask the teacher to let you back in, then reload this page.` }),
  );
}
