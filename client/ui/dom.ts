/**
 * Small DOM helpers shared by the pages. Every piece of text goes into the page
 * as a text node or through `textContent`: no HTML string is ever parsed, so a
 * message, a name or a server error cannot inject markup.
 */

type Child = Node | string | number | null | undefined | false;

export interface Props {
  class?: string;
  text?: string;
  testid?: string;
  title?: string;
  attrs?: Record<string, string>;
  data?: Record<string, string>;
  on?: { [K in keyof HTMLElementEventMap]?: (ev: HTMLElementEventMap[K]) => void };
}

/** Create an element; string children become text nodes. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props | null = null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props) {
    if (props.class) node.className = props.class;
    if (props.text !== undefined) node.textContent = props.text;
    if (props.testid) node.dataset.testid = props.testid;
    if (props.title) node.title = props.title;
    for (const [k, v] of Object.entries(props.attrs ?? {})) node.setAttribute(k, v);
    for (const [k, v] of Object.entries(props.data ?? {})) node.dataset[k] = v;
    for (const [type, handler] of Object.entries(props.on ?? {})) node.addEventListener(type, handler as EventListener);
  }
  append(node, ...children);
  return node;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

/** Look up an element that the page's HTML must contain. */
export function must<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`page is missing #${id}`);
  return node as T;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** HH:MM:SS in local time. */
export function clock(ts: number): string {
  const d = new Date(ts);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** HH:MM:SS.mmm, for traffic tables where order within a second matters. */
export function clockMs(ts: number): string {
  return `${clock(ts)}.${pad(new Date(ts).getMilliseconds(), 3)}`;
}

export function shorten(text: string, keep: number): string {
  return text.length <= keep ? text : `${text.slice(0, keep)}…`;
}

/** Standard base64 to lower-case hex, without libsodium (the relay view does not load it). */
export function b64ToHex(b64: string): string {
  let bin: string;
  try {
    bin = atob(b64);
  } catch {
    return '';
  }
  let out = '';
  for (let i = 0; i < bin.length; i++) out += bin.charCodeAt(i).toString(16).padStart(2, '0');
  return out;
}

export function b64Bytes(b64: string): number {
  return Math.floor((b64.length * 3) / 4) - (b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0);
}

export function bytes(n: number): string {
  return n < 10_000 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
}

/**
 * A long value (ciphertext, a sealed key) shown shortened, with a button that
 * expands it. `expanded` remembers the choice across re-renders by `key`.
 */
export function expandable(full: string, keep: number, key: string, expanded: Set<string>, testid?: string): HTMLElement {
  const wrap = el('span', { class: 'expandable', ...(testid ? { testid } : {}) });
  const value = el('code', { class: 'mono' });
  wrap.append(value);
  if (full.length <= keep) {
    value.textContent = full;
    return wrap;
  }
  const button = el('button', { class: 'link', attrs: { type: 'button' } });
  const show = () => {
    const open = expanded.has(key);
    value.textContent = open ? full : shorten(full, keep);
    value.classList.toggle('wrapall', open);
    button.textContent = open ? 'shorten' : `expand (${full.length} chars)`;
    button.setAttribute('aria-expanded', String(open));
  };
  button.addEventListener('click', () => {
    if (expanded.has(key)) expanded.delete(key);
    else expanded.add(key);
    show();
  });
  show();
  wrap.append(' ', button);
  return wrap;
}

/** Coalesce many change notifications into one render per task, even in a background tab. */
export function scheduler(render: () => void): () => void {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      render();
    });
  };
}

/** ws:// or wss:// on this same host. */
export function socketUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

/** Names of PINs as "Name (PIN)"; the PIN alone when the name is unknown. */
export function who(pin: string, names: Map<string, string>): string {
  const name = names.get(pin);
  return name ? `${name} (${pin})` : pin;
}

/** Wait before a watcher page (relay view, regulator console) reconnects: 250 ms, doubling, at most 5 s. */
export const reconnectDelay = (attempt: number): number => Math.min(5000, 250 * 2 ** attempt);

/** A watcher page's connection badge: "live" is drawn as online. */
export function showStatus(badge: HTMLElement, status: string): void {
  badge.textContent = status;
  badge.className = `status ${status === 'live' ? 'online' : status}`;
}
