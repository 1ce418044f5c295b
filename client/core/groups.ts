/**
 * The groups this client holds: the newest verified member list of each, kept in the injected
 * storage. Only a list that shared/groups.ts verified is ever stored, and only a newer version
 * replaces it; the messenger asks this book whom a group message goes to, never the traffic.
 *
 * Anyone can make a group with you in it, as many as they like, so what others' groups can make
 * a tab hold is bounded: at most OTHERS_HELD groups made by others in memory and OTHERS_SAVED in
 * storage (within GROUPS_SAVED_CHARS), those made by people you have written to first, then the
 * most recently active. A group let go of leaves its version behind (a floor, up to FLOORS of
 * them), so an older list of it — one that still names a member since removed — is refused as
 * stale when it comes back; its next message at that version or newer brings the group back.
 * Groups you made are always held and saved first.
 */
import { GroupState, verifyGroupState } from '../../shared/groups.ts';
import type { KeyValueStore } from './messenger.ts';

const KEY = 'backdoor-lab.groups';
export const OTHERS_HELD = 300;
export const OTHERS_SAVED = 100;
export const GROUPS_SAVED_CHARS = 200_000;
export const FLOORS = 2000;

interface Saved {
  groups: unknown[];
  floors?: [string, number][];
}

export class GroupBook {
  private readonly states = new Map<string, GroupState>();
  /** Last activity per group (this tab's clock): what decides which of others' groups go first. */
  private readonly active = new Map<string, number>();
  /** Versions of groups let go of, by id (oldest first). */
  private readonly floors = new Map<string, number>();
  /** Groups let go of in this tab's life (to bound memory), for the page and the tests. */
  evicted = 0;

  constructor(
    storage: KeyValueStore,
    /** My signing key (base64): groups it created are mine. */
    private readonly mine: string,
    /** True for a group made by someone this client has written to. */
    private readonly known: (state: GroupState) => boolean = () => false,
  ) {
    const raw = storage.getItem(KEY);
    if (!raw) return;
    try {
      const saved: unknown = JSON.parse(raw);
      // Version 1 of this key was a bare array of lists.
      const { groups, floors } = (Array.isArray(saved) ? { groups: saved } : saved) as Saved;
      for (const item of Array.isArray(groups) ? groups : []) {
        // Stored lists are checked again on load: storage is only as trusted as the page that wrote it.
        const parsed = GroupState.safeParse(item);
        if (parsed.success && verifyGroupState(parsed.data).ok) {
          this.states.set(parsed.data.id, parsed.data);
          this.active.set(parsed.data.id, 0);
        }
      }
      for (const entry of Array.isArray(floors) ? floors : []) {
        if (Array.isArray(entry) && typeof entry[0] === 'string' && Number.isInteger(entry[1])) this.floors.set(entry[0], entry[1] as number);
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

  /** The version of a group this client once held and let go of (an older list is stale). */
  floor(id: string): number | undefined {
    return this.states.has(id) ? undefined : this.floors.get(id);
  }

  /** A message of this group was just shown: it counts as active. */
  touch(id: string): void {
    if (this.states.has(id)) this.active.set(id, Date.now());
  }

  /**
   * Keep a verified list if it is new or newer than the one held. Returns the one held before.
   * Memory only: the messenger saves the book with its history (save()), so a full storage never
   * stops a group from being taken.
   */
  put(state: GroupState): GroupState | undefined {
    const before = this.states.get(state.id);
    if (before && before.version >= state.version) return before;
    this.states.set(state.id, state);
    this.floors.delete(state.id);
    this.active.set(state.id, Date.now());
    if (state.creator !== this.mine) this.bound();
    return before;
  }

  /** Others' groups in the order they go first: not made by anyone I wrote to, then the least active. */
  private othersByPriority(): GroupState[] {
    const ranked = [...this.states.values()]
      .filter((s) => s.creator !== this.mine)
      .map((state) => ({ state, known: Number(this.known(state)), at: this.active.get(state.id) ?? 0 }));
    return ranked.sort((a, b) => b.known - a.known || b.at - a.at).map((r) => r.state);
  }

  private bound(): void {
    const others = this.othersByPriority();
    for (const state of others.slice(OTHERS_HELD)) {
      this.states.delete(state.id);
      this.active.delete(state.id);
      this.floors.delete(state.id);
      this.floors.set(state.id, state.version);
      this.evicted += 1;
    }
    while (this.floors.size > FLOORS) this.floors.delete(this.floors.keys().next().value!);
  }

  /**
   * What to save: my groups, then others' by priority, at most OTHERS_SAVED of them and
   * GROUPS_SAVED_CHARS in all (mine are always included); the rest leave their version as a floor.
   */
  serialize(): { json: string; notSaved: number } {
    const mine = [...this.states.values()].filter((s) => s.creator === this.mine);
    const parts = mine.map((s) => JSON.stringify(s));
    let chars = parts.reduce((n, p) => n + p.length + 1, 0);
    const floors = new Map(this.floors);
    let notSaved = 0;
    let kept = 0;
    for (const state of this.othersByPriority()) {
      const json = JSON.stringify(state);
      if (kept < OTHERS_SAVED && chars + json.length + 1 <= GROUPS_SAVED_CHARS) {
        parts.push(json);
        chars += json.length + 1;
        kept += 1;
      } else {
        floors.delete(state.id);
        floors.set(state.id, state.version);
        notSaved += 1;
      }
    }
    const floorList = [...floors].slice(-FLOORS);
    return { json: `{"groups":[${parts.join(',')}],"floors":${JSON.stringify(floorList)}}`, notSaved };
  }
}

export const GROUPS_KEY = KEY;
