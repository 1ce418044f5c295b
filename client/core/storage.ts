/**
 * The injected key-value storage, made safe to use. A browser's localStorage throws when it is
 * full (QuotaExceededError: about 5 MB per origin in Chromium, shared by every person open in that
 * browser, so another person's history can fill it too) or when it is disabled. Every write goes
 * through here: a failed write never throws into the code that receives, acks and shows messages;
 * it is remembered, by key, for the page to say what was not kept.
 */
import type { KeyValueStore } from './messenger.ts';

/** What each stored key holds, in words for the page. */
export const STORED_WHAT: Record<string, string> = {
  'backdoor-lab.identity': "your keys (this person's identity)",
  'backdoor-lab.state': 'your message history',
  'backdoor-lab.groups': 'your groups',
  'backdoor-lab.directory': 'your contacts',
  'backdoor-lab.pinned-keys': 'the keys you have seen for each PIN',
};

export interface FailedWrite {
  key: string;
  what: string;
  error: string;
  /** Characters that did not fit. */
  chars: number;
}

export class SafeStore implements KeyValueStore {
  private readonly failed = new Map<string, FailedWrite>();

  constructor(
    private readonly inner: KeyValueStore,
    /** Called when the set of failing keys changes. */
    private readonly onChange: () => void = () => {},
  ) {}

  getItem(key: string): string | null {
    try {
      return this.inner.getItem(key);
    } catch {
      return null;
    }
  }

  setItem(key: string, value: string): void {
    this.trySet(key, value);
  }

  /** Write; false (and remembered) if the storage refused it. */
  trySet(key: string, value: string): boolean {
    try {
      this.inner.setItem(key, value);
      if (this.failed.delete(key)) this.onChange();
      return true;
    } catch (err) {
      const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      const had = this.failed.has(key);
      this.failed.set(key, { key, what: STORED_WHAT[key] ?? key, error, chars: value.length });
      if (!had) this.onChange();
      return false;
    }
  }

  /** Keys whose last write failed. */
  failures(): FailedWrite[] {
    return [...this.failed.values()];
  }
}
