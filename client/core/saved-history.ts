/**
 * What of a tab's history is saved, within budgets in characters (what localStorage counts):
 * chats with people you have written to (and groups made by you or by them) first, each keeping
 * its newest messages up to YOURS_CHAT characters; then chats you never answered (strangers'
 * DMs, others' groups, messages shown apart), newest activity first, at most OTHER_CHATS of them
 * with OTHER_CHAT characters each and OTHER_TOTAL in all. So a stranger can make you save at most
 * a small, fixed share, and never push a chat you wrote in out of what a reload brings back. A
 * message still being sent is always saved.
 */
import type { History } from './history.ts';

export const SAVE_BUDGET = {
  yoursChat: 200_000,
  yoursTotal: 800_000,
  otherChat: 20_000,
  otherTotal: 150_000,
  otherChats: 40,
} as const;

export interface NotSaved {
  chat: string;
  /** Messages held on screen but not saved. */
  messages: number;
  /** A chat with someone you have written to (saved first). */
  yours: boolean;
}

export interface Picked {
  /** Each saved message as JSON, chat by chat, each chat in arrival order. */
  parts: string[];
  chars: number;
  notSaved: NotSaved[];
}

/**
 * Pick the messages to save. `scale` shrinks every budget (1: as above; 0: only messages still
 * being sent); `others` false saves no chat you never answered.
 */
export function pickSaved(history: History, isYours: (chat: string) => boolean, pinned: (id: string) => boolean, scale: number, others: boolean): Picked {
  const chats = [...history.chats()].map(([chat, list]) => ({ chat, list, yours: isYours(chat), at: list[list.length - 1]?.at ?? 0 })).sort((a, b) => b.at - a.at);
  const parts: string[] = [];
  const notSaved: NotSaved[] = [];
  const used = { yours: 0, other: 0 };
  let otherChats = 0;
  let chars = 0;
  for (const { chat, list, yours } of chats) {
    const open = yours || (others && otherChats < SAVE_BUDGET.otherChats);
    const perChat = open ? (yours ? SAVE_BUDGET.yoursChat : SAVE_BUDGET.otherChat) * scale : 0;
    const total = (yours ? SAVE_BUDGET.yoursTotal : SAVE_BUDGET.otherTotal) * scale;
    const kind = yours ? 'yours' : 'other';
    const taken: string[] = [];
    let inChat = 0;
    let full = false;
    let left = 0;
    // Newest first, as a contiguous run: a chat keeps its newest messages, without holes.
    for (let i = list.length - 1; i >= 0; i--) {
      const message = list[i]!;
      if (pinned(message.id)) {
        taken.push(JSON.stringify(message));
        continue;
      }
      if (full) {
        left += 1;
        continue;
      }
      const json = JSON.stringify(message);
      if (inChat + json.length <= perChat && used[kind] + json.length <= total) {
        taken.push(json);
        inChat += json.length;
        used[kind] += json.length;
        continue;
      }
      full = true;
      left += 1;
    }
    if (!yours && inChat > 0) otherChats += 1;
    for (let i = taken.length - 1; i >= 0; i--) {
      parts.push(taken[i]!);
      chars += taken[i]!.length + 1;
    }
    if (left) notSaved.push({ chat, messages: left, yours });
  }
  return { parts, chars, notSaved };
}
