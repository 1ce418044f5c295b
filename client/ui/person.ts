/**
 * One person per name in this browser. `/?name=Bob` keeps Bob's keys, PIN and history in this
 * browser's localStorage under his name, so closing the tab and opening the link again brings back
 * the same Bob, while two names are two people. Keys never leave the browser.
 *
 * Only one tab may be Bob at a time (the relay keeps one session per PIN). Tabs of the same
 * person find each other over a BroadcastChannel: a new tab asks whether Bob is open elsewhere and,
 * if so, offers "use here"; the tab that gives Bob up says so and can take him back the same way.
 * (BroadcastChannel works on plain http on a LAN, where Web Locks are not available.)
 */
import type { KeyValueStore } from '../core/messenger.ts';

const PREFIX = 'backdoor-lab/person/';
/** How long a new tab waits for an open tab of the same person to answer. */
const PROBE_MS = 300;

type Signal = { t: 'probe'; from: string } | { t: 'here'; from: string } | { t: 'take'; from: string } | { t: 'released'; from: string };

/**
 * localStorage, namespaced by the person's name. Falls back to memory when storage is disabled.
 * A full storage is still used: reading works, so the person and the history saved before come
 * back; writes that do not fit throw, and the messenger (client/core/storage.ts) catches and
 * reports them. (Probing with a write, as this did before, took a full storage for no storage at
 * all, and the person then started over with new keys.)
 */
export function personStorage(name: string): KeyValueStore {
  const prefix = `${PREFIX}${encodeURIComponent(name)}/`;
  let store: Storage | null = null;
  try {
    store = window.localStorage;
    store.getItem(`${prefix}probe`);
  } catch {
    store = null; // storage disabled: this person lasts as long as the tab
  }
  const memory = new Map<string, string>();
  return {
    getItem: (key) => (store ? store.getItem(prefix + key) : (memory.get(key) ?? null)),
    setItem: (key, value) => {
      if (store) store.setItem(prefix + key, value);
      else memory.set(key, value);
    },
  };
}

export class PersonTab {
  readonly storage: KeyValueStore;
  private readonly id = Math.random().toString(36).slice(2);
  private readonly channel: BroadcastChannel | null;
  private active = false;
  private onLost: (() => void) | null = null;
  private waiting: ((signal: Signal) => void) | null = null;

  constructor(readonly name: string) {
    this.storage = personStorage(name);
    this.channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(`backdoor-lab.person.${name}`) : null;
    if (this.channel) this.channel.onmessage = (ev: MessageEvent<Signal>) => this.onSignal(ev.data);
  }

  private post(signal: Signal): void {
    this.channel?.postMessage(signal);
  }

  private onSignal(signal: Signal): void {
    if (!signal || typeof signal !== 'object' || signal.from === this.id) return;
    this.waiting?.(signal);
    if (!this.active) return;
    if (signal.t === 'probe') this.post({ t: 'here', from: this.id });
    if (signal.t === 'take') {
      // Another tab takes this person over: stop (which saves), then tell it to go ahead.
      this.active = false;
      this.onLost?.();
      this.post({ t: 'released', from: this.id });
    }
  }

  /** True when no other tab of this browser is this person right now; this tab then is. */
  async claim(): Promise<boolean> {
    const answered = await this.wait('probe', 'here', PROBE_MS);
    if (answered) return false;
    this.active = true;
    return true;
  }

  /** "Use here": ask the other tab to let go, and be this person from now on. */
  async takeOver(): Promise<void> {
    await this.wait('take', 'released', 1500);
    this.active = true;
  }

  /** Called when another tab takes this person over (after this one must stop). */
  whenTaken(handler: () => void): void {
    this.onLost = handler;
  }

  /** The relay moved this person's session to another connection: this tab is no longer it. */
  lost(): void {
    this.active = false;
  }

  private wait(send: 'probe' | 'take', expect: 'here' | 'released', ms: number): Promise<boolean> {
    if (!this.channel) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        resolve(false);
      }, ms);
      this.waiting = (signal) => {
        if (signal.t !== expect) return;
        clearTimeout(timer);
        this.waiting = null;
        resolve(true);
      };
      this.post({ t: send, from: this.id });
    });
  }
}
