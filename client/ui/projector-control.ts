/**
 * The teacher panel's projector card: which layout the projector shows, which two bots its three
 * panes follow, and whether the relay's receipts are drawn (POST /api/lab/projector). It reads the
 * choice back every few seconds, so two teacher tabs agree, and lists the running bots for the pair.
 * The token is the panel's (from its sessionStorage); the card never shows it.
 */
import { el, must } from './dom.ts';
import { parseAnswer } from './lab-api.ts';
import { LAYOUTS, LAYOUT_WORDS, ProjectorView, type Layout } from './projector-api.ts';

const POLL_MS = 3000;
const LATEST = '';

export function projectorControl(token: () => string | null): void {
  const card = must('projector-card');
  const layout = must<HTMLSelectElement>('projector-layout');
  const left = must<HTMLSelectElement>('projector-left');
  const right = must<HTMLSelectElement>('projector-right');
  const receipts = must<HTMLInputElement>('projector-receipts');
  const error = must('projector-error');
  layout.replaceChildren(...LAYOUTS.map((l) => el('option', { text: LAYOUT_WORDS[l], attrs: { value: l } })));
  let busy = false;

  const call = async (init?: { body: unknown }): Promise<ProjectorView | null> => {
    const t = token();
    if (!t) return null;
    try {
      const res = await fetch('/api/lab/projector', {
        method: init ? 'POST' : 'GET',
        headers: { Authorization: `Bearer ${t}`, ...(init ? { 'Content-Type': 'application/json' } : {}) },
        ...(init ? { body: JSON.stringify(init.body) } : {}),
        cache: 'no-store',
      });
      const body = (await res.json().catch(() => null)) as { message?: unknown } | null;
      if (!res.ok) {
        error.textContent = `The projector's layout: ${typeof body?.message === 'string' ? body.message : res.statusText}`;
        return null;
      }
      error.textContent = '';
      return parseAnswer(ProjectorView, body, "the projector's layout");
    } catch (err) {
      error.textContent = `The projector's layout: ${(err as Error).message}`;
      return null;
    }
  };

  const options = (select: HTMLSelectElement, bots: string[], chosen: string | undefined) => {
    const want = [LATEST, ...bots];
    if (JSON.stringify([...select.options].map((o) => o.value)) !== JSON.stringify(want)) {
      select.replaceChildren(...want.map((b) => el('option', { text: b === LATEST ? 'the latest pair of bots' : b, attrs: { value: b } })));
    }
    select.value = chosen ?? LATEST;
  };

  const show = (view: ProjectorView) => {
    card.dataset.layout = view.layout;
    if (document.activeElement !== layout) layout.value = view.layout;
    receipts.checked = view.receipts;
    options(left, view.bots, view.pair?.[0]);
    options(right, view.bots, view.pair?.[1]);
    must('projector-pair').hidden = view.layout !== 'three-panes';
  };

  const send = async (body: Record<string, unknown>) => {
    busy = true;
    const view = await call({ body });
    busy = false;
    if (view) show(view);
  };

  layout.addEventListener('change', () => void send({ layout: layout.value as Layout }));
  receipts.addEventListener('change', () => void send({ receipts: receipts.checked }));
  const pair = () => {
    if (left.value === LATEST || right.value === LATEST) return void send({ pair: null });
    if (left.value === right.value) {
      error.textContent = 'Pick two different bots for the two panes.';
      return;
    }
    void send({ pair: [left.value, right.value] });
  };
  left.addEventListener('change', pair);
  right.addEventListener('change', pair);

  const poll = async () => {
    // Only while the panel shows its controls (the token was accepted).
    if (!busy && !card.closest('[hidden]')) {
      const view = await call();
      if (view && !busy) show(view);
    }
    setTimeout(() => void poll(), POLL_MS);
  };
  void poll();
}
