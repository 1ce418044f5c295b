/**
 * A KeyValueStore that fills up like a browser's localStorage: one quota (in UTF-16 units, keys
 * and values, as Chromium counts them: 5,242,880 per origin) shared by every person who uses it
 * through `person(name)`, and a write that does not fit throws a QuotaExceededError and leaves
 * the old value in place.
 */
import type { KeyValueStore } from '../../client/core/messenger.ts';

export const CHROMIUM_QUOTA = 5_242_880;

export class QuotaStorage {
  readonly map = new Map<string, string>();
  refused = 0;

  constructor(readonly quota = CHROMIUM_QUOTA) {}

  used(prefix = ''): number {
    let n = 0;
    for (const [k, v] of this.map) if (k.startsWith(prefix)) n += k.length + v.length;
    return n;
  }

  setItem(key: string, value: string): void {
    const delta = key.length + value.length - (this.map.has(key) ? key.length + this.map.get(key)!.length : 0);
    if (this.used() + delta > this.quota) {
      this.refused += 1;
      const err = new Error(`Failed to execute 'setItem' on 'Storage': Setting the value of '${key}' exceeded the quota.`);
      err.name = 'QuotaExceededError';
      throw err;
    }
    this.map.set(key, value);
  }

  /** One person's view, namespaced like client/ui/person.ts. */
  person(name: string): KeyValueStore {
    const prefix = `backdoor-lab/person/${encodeURIComponent(name)}/`;
    return { getItem: (k) => this.map.get(prefix + k) ?? null, setItem: (k, v) => this.setItem(prefix + k, v) };
  }

  /** Fill the storage to within `room` units of the quota (another person's data, say). */
  fill(room: number): void {
    const left = this.quota - this.used() - room - 20;
    if (left > 0) this.setItem('someone-else/filler', 'f'.repeat(left));
  }
}
