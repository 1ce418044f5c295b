/**
 * A bot: a real participant built on client/core, with keys that live only in its own process
 * memory. It reads what it is sent like a person (the ticks go to D, then R), and answers: from a
 * small script of replies in order, then by echoing. The lab's scenarios start bots in the relay's
 * process over an in-memory socket; `npm run bot` starts one over a WebSocket from a terminal.
 *
 * Bots never answer a bot's answer (they mark theirs with "↩"), so two bots do not talk for ever;
 * the lab's bots answer people only (`answers`), so a scene's scripted lines between bots stay as written.
 */
import { EscrowPinError } from '../core/escrow-pin.ts';
import { Messenger, memoryStore, type ChatMessage, type MessengerOptions, type SealingPolicy, type SocketLike } from '../core/messenger.ts';

/** What a bot says back: `replies` in order, then an echo of what it was sent (unless `echo` is false). */
export interface BotScript {
  replies?: string[];
  echo?: boolean;
  /** Milliseconds between reading a message and answering it (default 300). */
  delayMs?: number;
}

export const BOT_MARK = '↩ ';

/** A script from a file's text: a JSON BotScript, or plain lines of replies. */
export function parseScript(text: string): BotScript {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    const json = JSON.parse(trimmed) as unknown;
    if (!json || typeof json !== 'object') throw new Error('a bot script is a JSON object or lines of text');
    const { replies, echo, delayMs } = json as Record<string, unknown>;
    if (replies !== undefined && !(Array.isArray(replies) && replies.every((r) => typeof r === 'string' && r.length > 0 && r.length <= 4000)))
      throw new Error('"replies" must be a list of texts');
    if (echo !== undefined && typeof echo !== 'boolean') throw new Error('"echo" must be true or false');
    if (delayMs !== undefined && !(typeof delayMs === 'number' && delayMs >= 0 && delayMs <= 60_000)) throw new Error('"delayMs" must be 0 to 60000');
    return { ...(replies ? { replies: replies as string[] } : {}), ...(echo !== undefined ? { echo } : {}), ...(delayMs !== undefined ? { delayMs } : {}) };
  }
  return {
    replies: trimmed
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter(Boolean),
  };
}

export interface BotOptions {
  name: string;
  connect: () => SocketLike;
  script?: BotScript;
  sealing?: SealingPolicy;
  /**
   * Whether to answer a message from this PIN (default: everyone). The lab's bots answer people,
   * not each other: a scene's scripted lines stay the scene's, and its figures count only them.
   */
  answers?: (pin: string) => boolean;
  /** The regulator key's fingerprint: a pinned bot refuses to seal to any other escrow key (client/core/escrow-pin.ts). */
  pinnedEscrow?: string;
}

export class Bot {
  readonly m: Messenger;
  private next = 0;
  private readonly answered = new Set<string>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private off: (() => void) | null = null;

  constructor(private readonly options: BotOptions) {
    const m: MessengerOptions = {
      name: options.name,
      connect: options.connect,
      storage: memoryStore(),
      backoff: { minMs: 200, maxMs: 3000 },
      ...(options.sealing ? { sealing: options.sealing } : {}),
      pinnedEscrow: options.pinnedEscrow ?? null,
    };
    this.m = new Messenger(m);
  }

  get name(): string {
    return this.m.name;
  }

  get pin(): string {
    return this.m.pin;
  }

  async start(): Promise<void> {
    this.off = this.m.on((event) => {
      if (event.type === 'message') this.onMessage(event.message);
    });
    await this.m.start();
  }

  stop(): void {
    this.off?.();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.m.stop();
  }

  /**
   * Nothing in flight: no reply waiting for its delay and none of this bot's messages still
   * unacknowledged by the relay. The lab waits for this before it changes the room's modes, so a
   * reply to one scene never goes out under the next scene's key model.
   */
  idle(): boolean {
    if (this.timers.size > 0) return false;
    for (const message of this.m.messages.values()) if (message.direction === 'out' && message.state === 'sending') return false;
    return true;
  }

  /**
   * Send a direct message, as the bot would: a pinned bot that is asked to seal to another escrow
   * key than the pinned one does not send, and says so (the refusal is returned, and kept).
   */
  trySend(to: string, text: string): { sent: ChatMessage } | { refused: string } {
    try {
      return { sent: this.m.sendText([to], text) };
    } catch (err) {
      if (!(err instanceof EscrowPinError)) throw err;
      const refused = `${this.name} refuses to send: ${err.message}`;
      this.refusals.push(refused);
      return { refused };
    }
  }

  /** What this bot refused to send, and why (newest last). */
  readonly refusals: string[] = [];

  private onMessage(message: ChatMessage): void {
    if (message.direction !== 'in' || message.state !== 'received' || message.note || message.flag || this.answered.has(message.id)) return;
    this.answered.add(message.id);
    const delay = this.options.script?.delayMs ?? 300;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.m.markRead([message.id]);
      if (this.options.answers && !this.options.answers(message.from)) return;
      const reply = this.replyTo(message);
      if (reply === null) return;
      try {
        if (message.chat.startsWith('dm:')) this.m.sendText([message.from], reply);
        else if (this.m.groups.get(message.chat)) this.m.sendGroup(message.chat, reply);
      } catch (err) {
        // A pinned bot does not answer under an escrow key it did not pin: it says so.
        if (err instanceof EscrowPinError) this.refusals.push(`${this.name} refuses to send: ${err.message}`);
        // Otherwise the sender left, or the group no longer has this bot: nothing to answer.
      }
    }, delay);
    this.timers.add(timer);
  }

  /** The next scripted reply, else an echo; never an answer to another bot's answer. */
  private replyTo(message: ChatMessage): string | null {
    if (message.text.startsWith(BOT_MARK)) return null;
    const replies = this.options.script?.replies ?? [];
    if (this.next < replies.length) return `${BOT_MARK}${replies[this.next++]}`;
    if (this.options.script?.echo === false) return null;
    const text = message.text.length > 200 ? `${message.text.slice(0, 200)}…` : message.text;
    return `${BOT_MARK}${this.name} got it: "${text}"`;
  }
}
