/**
 * The teacher's admin token in the pages that need it (the regulator console, the teacher panel):
 * taken from the URL fragment (`#token=…`, never sent to the server in a URL), moved into this
 * tab's sessionStorage and out of the address bar (and so off the projector), and sent only as a
 * Bearer header or the console socket's first frame. No page ever prints it.
 */

import { el, must, showStatus } from './dom.ts';

const TOKEN_KEY = 'backdoor-lab.admin-token';

export function takeToken(): string | null {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const fromHash = hash.get('token');
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    // Keep the token off the address bar (and off the projector); any other part of the fragment stays.
    hash.delete('token');
    const rest = hash.toString();
    history.replaceState(null, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
    return fromHash;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function dropToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** What an admin API answer that was not OK means, in words; `auth` when the token itself is the problem. */
export async function refusal(res: Response): Promise<{ auth: boolean; message: string }> {
  const body = (await res.json().catch(() => null)) as { message?: unknown } | null;
  const said = typeof body?.message === 'string' ? body.message : res.statusText;
  switch (res.status) {
    case 401:
      return { auth: true, message: 'The relay wants the admin token, and this tab has none: type it below.' };
    case 403:
      return { auth: true, message: 'Wrong admin token: the relay refused it. Type the one printed when the relay started.' };
    case 429: {
      const wait = Number(res.headers.get('Retry-After'));
      return {
        auth: true,
        message: `Too many wrong tokens from this computer's address: the relay will not even check one for ${Number.isFinite(wait) && wait > 0 ? `${wait} s` : 'a while'}. Wait, then type the right one.`,
      };
    }
    default:
      return { auth: false, message: `The relay said no (${res.status}): ${said}` };
  }
}

/** A thrown fetch (relay down, network gone) in words. */
export const unreachable = (err: unknown): string => `Could not reach the relay: ${err instanceof Error ? err.message : String(err)}. Is it still running?`;

/**
 * The form a page shows when it has no token, or the relay refused it: one password field, kept
 * in this tab's sessionStorage once typed (`keepToken`), never shown again. `onToken` opens the page.
 */
export function tokenForm(options: { heading: string; text: string; button: string; problem: string | null; className?: string; onToken: (token: string) => void }): {
  form: HTMLFormElement;
  input: HTMLInputElement;
} {
  const input = el('input', { testid: 'token-input', attrs: { type: 'password', autocomplete: 'off', 'aria-label': 'Admin token', placeholder: 'admin token' } });
  const form = el(
    'form',
    { class: `card token-form${options.className ? ` ${options.className}` : ''}`, testid: 'token-form' },
    el('h2', { text: options.heading }),
    el('p', { text: options.text }),
    input,
    ' ',
    el('button', { text: options.button, attrs: { type: 'submit' } }),
    options.problem ? el('p', { class: 'error', testid: 'auth-error', text: options.problem }) : null,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    input.value = '';
    keepToken(token);
    options.onToken(token);
  });
  return { form, input };
}

/**
 * Lock a page until a token is typed: its status badge says locked, its sections are hidden, and
 * the token form goes into `slot`, focused. `onToken` opens the page (the form is gone by then).
 */
export function lockWithTokenForm(options: {
  status: HTMLElement;
  sections: readonly string[];
  slot: HTMLElement;
  heading: string;
  text: string;
  button: string;
  problem: string | null;
  onToken: (token: string) => void;
}): void {
  showStatus(options.status, 'locked');
  for (const id of options.sections) must(id).hidden = true;
  const { form, input } = tokenForm({
    heading: options.heading,
    text: options.text,
    button: options.button,
    problem: options.problem,
    onToken: (token) => {
      options.slot.replaceChildren();
      options.onToken(token);
    },
  });
  options.slot.replaceChildren(form);
  input.focus();
}
