/**
 * The messages a tab holds, indexed per chat. Each chat keeps its messages in the order they
 * reached this device (the sender's timestamp is theirs to set, so it never decides where a
 * message sits or which one is a chat's newest), with its unread ones and its last arrival kept
 * up to date as messages come and go. Listing the chats therefore costs the number of chats, not
 * the number of messages, and a chat holds at most `keepPerChat` messages in memory: beyond it the
 * oldest go (never one still being sent), so a flood into one chat cannot grow a tab without end.
 */
import type { ChatMessage } from './messenger.ts';

/** Messages one chat keeps in memory by default; see History. */
export const KEEP_PER_CHAT = 2000;

interface ChatLog {
  /** In arrival order. */
  list: ChatMessage[];
  /** Incoming messages not yet seen, by id. */
  unseen: Map<string, ChatMessage>;
}

export interface ChatSummary {
  chat: string;
  last: ChatMessage | undefined;
  unread: number;
  /** Messages held in memory for this chat. */
  held: number;
  /** Messages dropped from memory for this chat (the oldest, beyond keepPerChat). */
  dropped: number;
}

export class History {
  private readonly byId = new Map<string, ChatMessage>();
  private readonly logs = new Map<string, ChatLog & { dropped: number }>();
  /** How many held messages name each PIN as sender or recipient. */
  private readonly people = new Map<string, number>();
  /** Trimming is done in steps of this many, so it costs O(1) per message on average. */
  private readonly slack: number;

  constructor(
    readonly keepPerChat: number = KEEP_PER_CHAT,
    /** True for a message that must stay (it is still being sent). */
    private readonly pinned: (id: string) => boolean = () => false,
  ) {
    this.slack = Math.max(1, Math.floor(keepPerChat / 4));
  }

  /** The messages by id (read only: add and drop go through this class). */
  get messages(): ReadonlyMap<string, ChatMessage> {
    return this.byId;
  }

  get(id: string): ChatMessage | undefined {
    return this.byId.get(id);
  }

  /** Add a message at the end of its chat (a known id is left as it is). */
  add(message: ChatMessage): void {
    if (this.byId.has(message.id)) return;
    this.byId.set(message.id, message);
    let log = this.logs.get(message.chat);
    if (!log) {
      log = { list: [], unseen: new Map(), dropped: 0 };
      this.logs.set(message.chat, log);
    }
    log.list.push(message);
    if (message.direction === 'in' && !message.seen) log.unseen.set(message.id, message);
    this.count(message, 1);
    if (log.list.length > this.keepPerChat + this.slack) this.trim(log);
  }

  /** Mark an incoming message seen; false if it was already (or is not incoming). */
  markSeen(message: ChatMessage): boolean {
    if (message.direction !== 'in' || message.seen) return false;
    message.seen = true;
    this.logs.get(message.chat)?.unseen.delete(message.id);
    return true;
  }

  /** A chat's messages in arrival order; with `limit`, only the newest that many. */
  inChat(chat: string, limit?: number): ChatMessage[] {
    const list = this.logs.get(chat)?.list ?? [];
    return limit === undefined || limit >= list.length ? list.slice() : list.slice(list.length - limit);
  }

  /** A chat's incoming messages not yet seen. */
  unseenIn(chat: string): ChatMessage[] {
    return [...(this.logs.get(chat)?.unseen.values() ?? [])];
  }

  /** One line per chat (in no particular order): its last arrival and its unread count. */
  summaries(): ChatSummary[] {
    const out: ChatSummary[] = [];
    for (const [chat, log] of this.logs) out.push({ chat, last: log.list[log.list.length - 1], unread: log.unseen.size, held: log.list.length, dropped: log.dropped });
    return out;
  }

  hasChat(chat: string): boolean {
    return this.logs.has(chat);
  }

  /** Every PIN a held message was from or to. */
  participants(): Set<string> {
    return new Set(this.people.keys());
  }

  /** Chats, each with its messages in arrival order. */
  *chats(): IterableIterator<[string, readonly ChatMessage[]]> {
    for (const [chat, log] of this.logs) yield [chat, log.list];
  }

  private count(message: ChatMessage, delta: 1 | -1): void {
    for (const pin of new Set([message.from, ...message.to])) {
      const n = (this.people.get(pin) ?? 0) + delta;
      if (n > 0) this.people.set(pin, n);
      else this.people.delete(pin);
    }
  }

  /** Drop the oldest messages of a chat down to keepPerChat, keeping those still being sent. */
  private trim(log: ChatLog & { dropped: number }): void {
    let excess = log.list.length - this.keepPerChat;
    const kept: ChatMessage[] = [];
    for (const message of log.list) {
      if (excess > 0 && !this.pinned(message.id)) {
        excess -= 1;
        log.dropped += 1;
        this.byId.delete(message.id);
        log.unseen.delete(message.id);
        this.count(message, -1);
        continue;
      }
      kept.push(message);
    }
    log.list = kept;
  }
}
