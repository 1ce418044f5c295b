/**
 * The groups this client holds: the newest verified member list of each, kept in the injected
 * storage. Only a list that shared/groups.ts verified is ever stored, and only a newer version
 * replaces it; the messenger asks this book whom a group message goes to, never the traffic.
 */
import { GroupState, verifyGroupState } from '../../shared/groups.ts';
import type { KeyValueStore } from './messenger.ts';

const KEY = 'backdoor-lab.groups';

export class GroupBook {
  private readonly states = new Map<string, GroupState>();

  constructor(private readonly storage: KeyValueStore) {
    const raw = storage.getItem(KEY);
    if (!raw) return;
    try {
      const list: unknown = JSON.parse(raw);
      if (!Array.isArray(list)) return;
      for (const item of list) {
        // Stored lists are checked again on load: storage is only as trusted as the page that wrote it.
        const parsed = GroupState.safeParse(item);
        if (parsed.success && verifyGroupState(parsed.data).ok) this.states.set(parsed.data.id, parsed.data);
      }
    } catch {
      // Unreadable: the groups are learnt again from the next message of each.
    }
  }

  get(id: string): GroupState | undefined {
    return this.states.get(id);
  }

  all(): GroupState[] {
    return [...this.states.values()];
  }

  /** Keep a verified list if it is new or newer than the one held. Returns the one held before. */
  put(state: GroupState): GroupState | undefined {
    const before = this.states.get(state.id);
    if (before && before.version >= state.version) return before;
    this.states.set(state.id, state);
    this.storage.setItem(KEY, JSON.stringify(this.all()));
    return before;
  }
}
