/**
 * What the projector shows (`/projector`), chosen from the teacher panel: the layout, whether the
 * relay's receipts are drawn, and which conversation the three panes follow. Behind the admin
 * token like the rest of the lab's API, because two layouts show plaintext.
 *
 *   GET  /api/lab/projector    the choice, the running bots, and (three panes) the conversation
 *   POST /api/lab/projector {layout?, receipts?, pair?}   change it; fields left out stay as they are
 *
 * The three panes (sender | relay | recipient) follow one conversation between two of the lab's
 * bots, because only there does the lab honestly hold both ends' plaintext: a bot is a client in
 * the relay's process, and what its pane shows is what its own Messenger decrypted with its own
 * keys. A person's tab keeps its keys and plaintext in its browser, so no person's conversation
 * can be put on the projector's outer panes, and none is. The middle pane is the relay view's own
 * public feed, filtered to the two PINs: ciphertext and metadata, exactly as the relay holds them.
 */
import express, { type Request, type Response } from 'express';
import { z } from 'zod';
import { describeReaders } from '../../client/core/readers.ts';
import type { Bot } from '../../client/bot/bot.ts';
import type { Lab } from './lab.ts';

export const LAYOUTS = ['relay-console', 'three-panes', 'metadata', 'narration'] as const;
export type Layout = (typeof LAYOUTS)[number];

/** Messages each outer pane holds (the newest). */
const PANE_MESSAGES = 12;

const BotName = z.string().min(1).max(20);
const Choice = z
  .object({
    layout: z.enum(LAYOUTS).optional(),
    receipts: z.boolean().optional(),
    /** Two running bots' names, sender pane first; null: follow the latest conversation between any two bots. */
    pair: z.tuple([BotName, BotName]).nullable().optional(),
  })
  .strict();

export interface PaneMessage {
  id: string;
  direction: 'in' | 'out';
  text: string;
  ts: number;
  state: string;
  /** Who can read it, worded from the envelope that was sent (as the chat page words it). */
  readers: string;
  escrowed: boolean;
}

export interface Pane {
  name: string;
  pin: string;
  messages: PaneMessage[];
}

export interface Conversation {
  /** The pair followed, and whether the teacher picked it or it is the latest between two bots. */
  picked: boolean;
  left: Pane;
  right: Pane;
}

export interface ProjectorView {
  layout: Layout;
  receipts: boolean;
  pair: [string, string] | null;
  bots: string[];
  /** Three panes only: the conversation, or why there is none. */
  conversation: Conversation | null;
  why: string | null;
}

export class Projector {
  layout: Layout = 'relay-console';
  receipts = false;
  pair: [string, string] | null = null;

  constructor(private readonly lab: Lab) {}

  choose(choice: z.infer<typeof Choice>): void {
    if (choice.pair && choice.pair[0] === choice.pair[1]) throw new Error('pair: pick two different bots');
    if (choice.pair) for (const name of choice.pair) if (!this.lab.botByName(name)) throw new Error(`pair: no bot "${name}" is running`);
    if (choice.layout !== undefined) this.layout = choice.layout;
    if (choice.receipts !== undefined) this.receipts = choice.receipts;
    if (choice.pair !== undefined) this.pair = choice.pair;
  }

  view(): ProjectorView {
    const base = { layout: this.layout, receipts: this.receipts, pair: this.pair, bots: this.lab.botNames() };
    if (this.layout !== 'three-panes') return { ...base, conversation: null, why: null };
    const found = this.conversation();
    return { ...base, conversation: 'why' in found ? null : found, why: 'why' in found ? found.why : null };
  }

  private conversation(): Conversation | { why: string } {
    const picked = this.pair ? this.pair.map((n) => this.lab.botByName(n)) : null;
    if (picked?.[0] && picked[1]) return { picked: true, left: pane(picked[0], picked[1]), right: pane(picked[1], picked[0]) };
    const latest = this.latestPair();
    if (!latest) {
      return {
        why: this.pair
          ? `${this.pair.join(' or ')} is not running: start both bots again, or pick another pair on the teacher panel.`
          : "No two bots have written to each other yet. Run a scene, or start two bots on the teacher panel: the three panes follow a conversation between two of the lab's bots, whose plaintext the lab holds.",
      };
    }
    // The latest message's sender on the left.
    return { picked: false, left: pane(latest[0], latest[1]), right: pane(latest[1], latest[0]) };
  }

  /** The two bots with the newest direct message between them, its sender first. */
  private latestPair(): [Bot, Bot] | null {
    const bots = this.lab
      .botNames()
      .map((n) => this.lab.botByName(n))
      .filter((b): b is Bot => b !== undefined);
    const byPin = new Map(bots.map((b) => [b.pin, b]));
    let best: { ts: number; pair: [Bot, Bot] } | null = null;
    for (const bot of bots) {
      for (const chat of bot.m.chats()) {
        const other = chat.kind === 'dm' ? byPin.get(chat.chat.slice(3)) : undefined;
        const last = chat.last;
        if (!other || !last || (best && best.ts >= last.ts)) continue;
        best = { ts: last.ts, pair: last.direction === 'out' ? [bot, other] : [other, bot] };
      }
    }
    return best?.pair ?? null;
  }
}

/** One bot's side of its direct chat with another: what its own client decrypted. */
function pane(bot: Bot, other: Bot): Pane {
  const nameOf = (pin: string) => (pin === bot.pin ? bot.name : pin === other.pin ? other.name : bot.m.nameOf(pin));
  const messages = bot.m
    .messagesIn(`dm:${other.pin}`, PANE_MESSAGES)
    .filter((msg) => !msg.note)
    .map((msg) => ({
      id: msg.id,
      direction: msg.direction,
      text: msg.state === 'unreadable' ? '' : msg.text,
      ts: msg.ts,
      state: msg.state,
      readers: describeReaders(msg.readers, nameOf),
      escrowed: Boolean(msg.readers.escrowKid),
    }));
  return { name: bot.name, pin: bot.pin, messages };
}

export function projectorRouter(projector: Projector): express.Router {
  const r = express.Router();
  r.get('/projector', (_req, res) => void res.json(projector.view()));
  r.post('/projector', (req: Request, res: Response) => {
    const parsed = Choice.safeParse(req.body ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return void res.status(400).json({ error: 'bad_request', message: `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}` });
    }
    try {
      projector.choose(parsed.data);
    } catch (err) {
      return void res.status(400).json({ error: 'bad_request', message: (err as Error).message });
    }
    res.json(projector.view());
  });
  return r;
}
