/**
 * The lab: what the teacher panel drives. It runs scenarios (server/lab/scenarios/), keeps the bot
 * participants it started (real clients on client/core, talking to this relay over in-memory
 * sockets: their keys live in this process only, never in any store), lists who has joined, and
 * resets the room. Every change it makes goes through the relay's and the regulator's own paths
 * (the tap, the room's key model, the directory), never by writing into their stores.
 */
import { Bot, type BotScript } from '../../client/bot/bot.ts';
import type { ChatMessage, SealingPolicy } from '../../client/core/messenger.ts';
import type { Policy } from '../../shared/protocol.ts';
import type { Enterprise, RoomModel } from '../enterprise.ts';
import type { Logger } from '../log.ts';
import type { Regulator } from '../regulator.ts';
import type { Relay } from '../relay.ts';
import type { RelayStore } from '../store.ts';
import { memoryPair } from '../transport.ts';
import { Attacker } from './attacker.ts';
import { metadataPicture, type MetadataPicture } from './metadata.ts';
import { SCENARIOS } from './scenarios/index.ts';
import type { LabContext, Narration, Scenario, ScenarioResult } from './types.ts';

export interface LabDeps {
  relay: Relay;
  regulator: Regulator;
  store: RelayStore;
  enterprise: Enterprise;
  setRoom(model: RoomModel, sealedSender?: boolean): Policy;
  log: Logger;
}

export interface Person {
  pin: string;
  name: string;
  online: boolean;
  lastSeen: number;
  /** Started by the lab (a bot in this process). */
  bot: boolean;
}

export interface ScenarioInfo {
  id: string;
  title: string;
  scene: number;
  narration: Narration;
}

export interface RunRecord {
  id: string;
  title: string;
  at: number;
  result: ScenarioResult;
  narration: Narration;
}

/** Bot names the lab starts: plain names, as a teacher would pick them. */
const BOT_NAME = /^[A-Za-z][A-Za-z0-9 ]{0,19}$/;

export class Lab {
  private readonly bots = new Map<string, Bot>();
  private readonly scenarios = new Map<string, Scenario>(SCENARIOS.map((s) => [s.id, s]));
  /** The last scenario run, for the panel (and later the projector) to show its card. */
  current: RunRecord | null = null;
  private running: Promise<unknown> | null = null;
  /** What scenarios leaked to the attacker: the attacker console's only source. */
  readonly attacker = new Attacker();

  constructor(readonly deps: LabDeps) {
    if (this.scenarios.size !== SCENARIOS.length) throw new Error('two scenarios share an id');
  }

  list(): ScenarioInfo[] {
    return [...this.scenarios.values()].sort((a, b) => a.scene - b.scene).map(({ id, title, scene, narration }) => ({ id, title, scene, narration }));
  }

  /** Run one scenario; one at a time (a second click waits for the first). */
  async run(id: string): Promise<RunRecord> {
    const scenario = this.scenarios.get(id);
    if (!scenario) throw new LabError(404, `no scenario "${id}"`);
    while (this.running) await this.running.catch(() => undefined);
    const job = scenario.run(this.context());
    this.running = job;
    try {
      const result = await job;
      this.current = { id, title: scenario.title, at: Date.now(), result, narration: scenario.narration };
      this.deps.log.info('lab scenario run', { scenario: id });
      return this.current;
    } finally {
      this.running = null;
    }
  }

  /** A bot participant by name: started (on an in-memory socket to this relay) if it is not running. */
  async bot(name: string, options: { sealing?: SealingPolicy; script?: BotScript } = {}): Promise<Bot> {
    if (!BOT_NAME.test(name)) throw new LabError(400, 'a bot name is 1 to 20 letters, digits or spaces, starting with a letter');
    const running = this.bots.get(name);
    if (running) {
      if (options.sealing) running.m.sealing = options.sealing;
      return running;
    }
    if (this.bots.size >= 20) throw new LabError(400, 'at most 20 bots at once: stop one first');
    const bot = new Bot({
      name,
      connect: () => {
        const { client, server } = memoryPair();
        this.deps.relay.handleConnection(server, 'lab');
        return client;
      },
      ...(options.script ? { script: options.script } : {}),
      ...(options.sealing ? { sealing: options.sealing } : {}),
    });
    this.bots.set(name, bot);
    try {
      await bot.start();
    } catch (err) {
      this.bots.delete(name);
      bot.stop();
      throw new LabError(400, `bot ${name} could not log in: ${(err as Error).message}`);
    }
    return bot;
  }

  stopBot(name: string): boolean {
    const bot = this.bots.get(name);
    if (!bot) return false;
    bot.stop();
    this.bots.delete(name);
    return true;
  }

  botNames(): string[] {
    return [...this.bots.keys()];
  }

  /** Everyone in the directory, online or not, bots marked. */
  people(): Person[] {
    const botPins = new Set([...this.bots.values()].map((b) => b.pin));
    const online = new Set(this.deps.relay.onlinePins());
    return this.deps.store
      .allUsers()
      .map((u) => ({ pin: u.pin, name: u.name, online: online.has(u.pin), lastSeen: u.last_seen, bot: botPins.has(u.pin) }))
      .sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
  }

  metadata(): MetadataPicture {
    return metadataPicture(this.deps.store);
  }

  /** "Forget offline people": the directory entries (and queues) of everyone offline now. */
  forgetOffline(): number {
    return this.deps.relay.forgetOffline();
  }

  /**
   * "Reset the room": bots stopped, everyone disconnected and forgotten, every queue, stored
   * envelope, metadata record and intercept emptied, the tap off, the full-strength escrow key in
   * force, the attacker's loot forgotten and the room end to end. The
   * regulator's audit log keeps a record of the reset (and of everything before it).
   */
  reset(who: string): { users: number; intercepts: number; bots: number } {
    const bots = this.bots.size;
    for (const bot of this.bots.values()) bot.stop();
    this.bots.clear();
    this.current = null;
    this.deps.regulator.setTap({ tap: false, scope: 'all', pins: [], announced: true });
    this.deps.regulator.useExportGrade(false);
    this.deps.setRoom('e2e', false);
    const users = this.deps.relay.resetRoom();
    const intercepts = this.deps.regulator.resetArchive(who);
    this.attacker.reset();
    this.deps.log.info('room reset', { users, intercepts, bots });
    return { users, intercepts, bots };
  }

  close(): void {
    for (const bot of this.bots.values()) bot.stop();
    this.bots.clear();
  }

  private context(): LabContext {
    return {
      lab: this,
      bot: (name, sealing) => this.bot(name, sealing ? { sealing } : {}),
      say: (from, to, text) => this.say(from, to, text),
      room: async (model, sealedSender = false) => {
        const policy = this.deps.setRoom(model, sealedSender);
        await this.policyReached(policy.epoch);
      },
      tap: async (on, options = {}) => {
        const policy = this.deps.regulator.setTap({ tap: on, scope: options.scope ?? 'all', pins: options.pins ?? [], announced: options.announced ?? true });
        await this.policyReached(policy.epoch);
      },
    };
  }

  /** Wait until every bot has the policy of `epoch` (people's tabs get it in the same frame). */
  private async policyReached(epoch: number): Promise<void> {
    await waitFor(() => [...this.bots.values()].every((b) => (b.m.policy?.epoch ?? -1) >= epoch), 'every bot to have the new policy');
  }

  private async say(from: Bot, to: Bot, text: string): Promise<ChatMessage> {
    await waitFor(() => from.m.directory.has(to.pin), `${from.name} to know ${to.name}`);
    const sent = from.m.sendText([to.pin], text);
    await waitFor(() => to.m.messages.has(sent.id) || from.m.messages.get(sent.id)?.state === 'failed', `${to.name} to get "${text}"`);
    const state = from.m.messages.get(sent.id);
    if (state?.state === 'failed') throw new LabError(500, `${from.name}'s message was refused: ${state.error ?? 'no reason given'}`);
    return sent;
  }
}

export class LabError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function waitFor(check: () => boolean, what: string, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new LabError(500, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
