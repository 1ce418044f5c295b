/**
 * The chat page on a phone: one column, and a tab bar (Contacts · Chat · Wire) that shows one
 * pane at a time, one tap each. On a wider screen the bar is hidden and the three panes stand side
 * by side as before; the tab roles are set only while the bar is in use, so a screen reader hears
 * tabs on a phone and plain regions on a laptop. Keys: the WAI-ARIA tabs pattern (arrows, Home,
 * End move between the tabs; Tab goes into the pane).
 *
 * The page's height follows the visual viewport (what is left above an on-screen keyboard), so the
 * message box stays at the bottom of what can be seen while typing; `100dvh` where that API is
 * missing, and `interactive-widget=resizes-content` in the page's viewport tag asks the browser
 * to shrink the layout itself when the keyboard opens.
 */
import { el } from './dom.ts';

export type PaneName = 'contacts' | 'chat' | 'wire';

const PHONE = '(max-width: 760px)';
const LABELS: Record<PaneName, string> = { contacts: 'Contacts', chat: 'Chat', wire: 'Wire' };
const ORDER: PaneName[] = ['contacts', 'chat', 'wire'];

export class PhoneTabs {
  readonly bar = el('div', { class: 'phone-tabs', testid: 'phone-tabs', attrs: { 'aria-label': 'Parts of the chat page' } });
  private readonly tabs = new Map<PaneName, HTMLButtonElement>();
  private readonly badges = new Map<PaneName, HTMLElement>();
  private readonly media = window.matchMedia(PHONE);
  private current: PaneName;

  constructor(
    private readonly app: HTMLElement,
    private readonly panes: Record<PaneName, HTMLElement>,
    initial: PaneName,
  ) {
    this.current = initial;
    for (const name of ORDER) {
      const badge = el('span', { class: 'tab-badge', testid: `tab-badge-${name}` });
      const tab = el(
        'button',
        { class: 'phone-tab', testid: `tab-${name}`, data: { pane: name }, attrs: { type: 'button', id: `tab-${name}` } },
        el('span', { text: LABELS[name] }),
        badge,
      );
      tab.addEventListener('click', () => this.show(name));
      tab.addEventListener('keydown', (ev) => this.key(ev, name));
      this.tabs.set(name, tab);
      this.badges.set(name, badge);
      this.bar.append(tab);
      panes[name].id ||= `pane-${name}`;
    }
    app.before(this.bar);
    this.media.addEventListener('change', () => this.apply());
    this.apply();
    fitToVisualViewport();
  }

  /** True while the page is one column with the tab bar. */
  get phone(): boolean {
    return this.media.matches;
  }

  show(name: PaneName, focusTab = false): void {
    this.current = name;
    this.apply();
    if (focusTab) this.tabs.get(name)?.focus();
  }

  /** A count on a tab (unread messages on Contacts); empty hides it. */
  badge(name: PaneName, text: string, label: string): void {
    const badge = this.badges.get(name);
    if (!badge || badge.textContent === text) return;
    badge.textContent = text;
    this.tabs.get(name)?.setAttribute('aria-label', text ? `${LABELS[name]}, ${label}` : LABELS[name]);
  }

  private key(ev: KeyboardEvent, name: PaneName): void {
    const at = ORDER.indexOf(name);
    const to =
      ev.key === 'ArrowRight'
        ? ORDER[(at + 1) % ORDER.length]
        : ev.key === 'ArrowLeft'
          ? ORDER[(at + ORDER.length - 1) % ORDER.length]
          : ev.key === 'Home'
            ? ORDER[0]
            : ev.key === 'End'
              ? ORDER[ORDER.length - 1]
              : undefined;
    if (!to) return;
    ev.preventDefault();
    this.show(to, true);
  }

  private apply(): void {
    const phone = this.phone;
    this.app.dataset.pane = this.current;
    this.bar.setAttribute('role', phone ? 'tablist' : 'presentation');
    for (const name of ORDER) {
      const tab = this.tabs.get(name)!;
      const pane = this.panes[name];
      const selected = name === this.current;
      if (phone) {
        tab.setAttribute('role', 'tab');
        tab.setAttribute('aria-selected', String(selected));
        tab.setAttribute('aria-controls', pane.id);
        tab.tabIndex = selected ? 0 : -1;
        pane.setAttribute('role', 'tabpanel');
        pane.setAttribute('aria-labelledby', tab.id);
      } else {
        for (const a of ['role', 'aria-selected', 'aria-controls']) tab.removeAttribute(a);
        tab.tabIndex = -1;
        pane.removeAttribute('role');
        pane.removeAttribute('aria-labelledby');
      }
      tab.classList.toggle('active', selected);
    }
  }
}

/** Keep the page exactly as tall as the visible area, above an on-screen keyboard. */
function fitToVisualViewport(): void {
  const vv = window.visualViewport;
  if (!vv) return;
  const fitToViewport = () => {
    // CSSOM, not a style attribute: the CSP (style-src 'self') allows this.
    document.documentElement.style.setProperty('--vvh', `${Math.round(vv.height)}px`);
    if (vv.offsetTop) window.scrollTo(0, 0);
  };
  vv.addEventListener('resize', fitToViewport);
  vv.addEventListener('scroll', fitToViewport);
  fitToViewport();
}
