/**
 * A lab scenario: one click on the teacher panel. It sets the modes it needs (from whatever state
 * the room is in), starts bot participants, sends scripted messages through the real client code
 * and the real relay, and returns what the class can now see, with a narration card: what happens,
 * what to look for on which page, and the real event behind it, with its date and a source.
 * Adding a scenario means adding one file to server/lab/scenarios/ and listing it in index.ts.
 */
import type { Bot } from '../../client/bot/bot.ts';
import type { ChatMessage, SealingPolicy } from '../../client/core/messenger.ts';
import type { RoomModel } from '../enterprise.ts';
import type { Lab } from './lab.ts';

export type Page = 'chat' | 'relay view' | 'regulator console' | 'teacher panel' | 'attacker console' | 'projector' | 'terminal';

export interface Narration {
  /** What happens, in two or three sentences a teacher can read out. */
  what: string;
  /** Where to look, page by page. */
  look: { page: Page; what: string }[];
  /** The real event behind it. */
  /** `date`: YYYY-MM-DD, or the year alone when the source gives no day. */
  source: { event: string; date: string; link: string };
}

/** What a scenario produced, for the panel and for its test: a sentence and the facts behind it. */
export interface ScenarioResult {
  summary: string;
  facts: Record<string, string | number | boolean>;
}

export interface LabContext {
  lab: Lab;
  /** A bot participant, started if it is not running (by name; the same bot on every call). */
  bot(name: string, sealing?: SealingPolicy): Promise<Bot>;
  /** Send a direct message from one bot to another and wait until it arrived (and was read). */
  say(from: Bot, to: Bot, text: string): Promise<ChatMessage>;
  /** The room's key model (and sealed sender), and the tap, as the scenario needs them. */
  room(model: RoomModel, sealedSender?: boolean): Promise<void>;
  tap(on: boolean, options?: { scope?: 'all' | 'warrant'; pins?: string[]; announced?: boolean }): Promise<void>;
}

export interface Scenario {
  id: string;
  title: string;
  /** Its place in the lesson: the panel's "next" walks the scenes in this order. */
  scene: number;
  narration: Narration;
  run(ctx: LabContext): Promise<ScenarioResult>;
}
