/**
 * The lab: what the teacher panel drives. It runs scenarios (server/lab/scenarios/), keeps the bot
 * participants it started (real clients on client/core, talking to this relay over in-memory
 * sockets: their keys live in this process only, never in any store), lists who has joined, and
 * resets the room. Every change it makes goes through the relay's and the regulator's own paths
 * (the tap, the room's key model, the directory), never by writing into their stores.
 */
import { Bot, type BotScript } from '../../client/bot/bot.ts';
import type { ChatMessage, SealingPolicy } from '../../client/core/messenger.ts';
import type { DeviceKind, Policy } from '../../shared/protocol.ts';
import type { Enterprise, RoomModel } from '../enterprise.ts';
import type { Logger } from '../log.ts';
import type { Regulator } from '../regulator.ts';
import type { ObserverInfo, Relay } from '../relay.ts';
import type { RelayStore } from '../store.ts';
import { memoryPair } from '../transport.ts';
import { qrDataUrl } from '../classroom.ts';
import { Attacker } from './attacker.ts';
import { EscrowSwap, type EscrowKeys } from './escrow-swap.ts';
import { InsiderTap } from './insider.ts';
import { ScanAuthority } from './scan-authority.ts';
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
  /** Classroom mode: the links participants open (with the class code); empty outside it. */
  joinLinks?: () => string[];
}

/**
 * Classroom mode as the teacher panel shows it. While the code is hidden (everyone is in), the
 * answer holds neither the code nor the links nor the QR code, so no page can show them; joining
 * with the code still works (a late-comer asks the teacher, who shows it again).
 */
export type ClassroomView =
  | { classroom: false }
  | { classroom: true; hidden: true; code: null; links: []; qr: null; wrongCodes: number }
  | { classroom: true; hidden: false; code: string; links: string[]; qr: string; wrongCodes: number };

export interface Person {
  pin: string;
  name: string;
  online: boolean;
  lastSeen: number;
  /** Started by the lab (a bot in this process). */
  bot: boolean;
  /** What the person's client said it runs on at its last login (their claim, not checked), or null. */
  device: DeviceKind | null;
  /** Removed by the teacher: refused at login until let back in or the room is reset. */
  kicked: boolean;
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
  /** The swapped escrow key (escrow-swap.ts): undone before every scenario and on reset. */
  private readonly escrow: EscrowSwap;
  /** The insider scenario's hidden observer (attached only by that scenario; a reset detaches it). */
  readonly insider: InsiderTap;
  /** Client-side scanning: the authority's hash list, its switch and the reports (off until the teacher turns it on). */
  readonly scanner: ScanAuthority;

  constructor(readonly deps: LabDeps) {
    if (this.scenarios.size !== SCENARIOS.length) throw new Error('two scenarios share an id');
    this.escrow = new EscrowSwap(deps.relay, deps.regulator, this.attacker);
    this.insider = new InsiderTap(deps.relay);
    this.scanner = new ScanAuthority(deps.relay, deps.regulator);
  }

  /**
   * Whoever controls the relay's configuration puts its own escrow key in the policy (the
   * swapped-key scenario); resolves once every bot has the swapped policy. The key and a copy of
   * the feed from now on go to the attacker.
   */
  async swapEscrowKey(scenario: string): Promise<ReturnType<EscrowSwap['swap']>> {
    const swapped = this.escrow.swap(scenario);
    this.deps.log.info("lab: the relay now announces another escrow key than the regulator's", { kid: swapped.key.kid });
    await this.policyReached(swapped.policy.epoch);
    return swapped;
  }

  /** The regulator key's fingerprint (the out-of-band value), the key the relay announces, and whether they differ. */
  escrowKeys(): EscrowKeys {
    return this.escrow.keys();
  }

  /** Put the regulator's key back in the relay's policy, if it was swapped. */
  private undoSwap(): void {
    if (this.escrow.undo()) this.deps.log.info("lab: the relay announces the regulator's escrow key again", { kid: this.deps.regulator.kid });
  }

  /** The relay's observers as the operator's normal view lists them: hidden ones left out. */
  observers(): { name: string; since: number }[] {
    return this.deps.relay
      .observerList()
      .filter((o) => !o.hidden)
      .map(({ name, since }) => ({ name, since }));
  }

  /**
   * The reveal: every observer, hidden ones included and marked, with since when, how many envelopes
   * the relay handed each, and where a hidden one says its copy goes. Recorded in the audit log.
   */
  revealObservers(who: string): ObserverInfo[] {
    const all = this.deps.relay.observerList();
    const hidden = all.filter((o) => o.hidden);
    const what = hidden.length
      ? hidden.map((o) => `"${o.name}", attached ${new Date(o.since).toISOString()}, handed ${o.envelopes} envelopes, copying to ${o.sink ?? 'an undeclared recipient'}`).join('; ')
      : 'none';
    this.deps.regulator.recordAction(
      'observers revealed',
      `${who} listed every observer of the relay, hidden ones included: ${all.length} attached, ${hidden.length} hidden (${what})`,
    );
    return all;
  }

  list(): ScenarioInfo[] {
    return [...this.scenarios.values()].sort((a, b) => a.scene - b.scene).map(({ id, title, scene, narration }) => ({ id, title, scene, narration }));
  }

  /** Run one scenario; one at a time (a second click waits for the first). */
  async run(id: string): Promise<RunRecord> {
    const scenario = this.scenarios.get(id);
    if (!scenario) throw new LabError(404, `no scenario "${id}"`);
    while (this.running) await this.running.catch(() => undefined);
    // Every scene starts from the regulator's key in the policy: a swap lasts until the next scene.
    this.undoSwap();
    const job = scenario.run(this.context()).then(async (result) => {
      // The bots' answers to this scene go out before the next scene can change a mode.
      await this.botsIdle();
      return result;
    });
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
  async bot(name: string, options: { sealing?: SealingPolicy; script?: BotScript; pinnedEscrow?: string | null } = {}): Promise<Bot> {
    if (!BOT_NAME.test(name)) throw new LabError(400, 'a bot name is 1 to 20 letters, digits or spaces, starting with a letter');
    const running = this.bots.get(name);
    if (running) {
      if (options.sealing) running.m.sealing = options.sealing;
      if (options.pinnedEscrow !== undefined) running.m.pinEscrowKey(options.pinnedEscrow);
      return running;
    }
    if (this.bots.size >= 20) throw new LabError(400, 'at most 20 bots at once: stop one first');
    const bot = new Bot({
      name,
      connect: () => {
        const { client, server } = memoryPair();
        this.deps.relay.handleConnection(server, 'lab', { exempt: true });
        return client;
      },
      ...(options.script ? { script: options.script } : {}),
      ...(options.sealing ? { sealing: options.sealing } : {}),
      answers: (pin) => ![...this.bots.values()].some((b) => b.pin === pin),
      ...(options.pinnedEscrow ? { pinnedEscrow: options.pinnedEscrow } : {}),
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

  /** A running bot, for the projector's panes (server/lab/projector.ts). */
  botByName(name: string): Bot | undefined {
    return this.bots.get(name);
  }

  /** Everyone in the directory, online or not, bots marked. */
  people(): Person[] {
    const botPins = new Set([...this.bots.values()].map((b) => b.pin));
    const online = new Set(this.deps.relay.onlinePins());
    return this.deps.store
      .allUsers()
      .map((u) => ({
        pin: u.pin,
        name: u.name,
        online: online.has(u.pin),
        lastSeen: u.last_seen,
        bot: botPins.has(u.pin),
        device: this.deps.relay.deviceOf(u.pin),
        kicked: this.deps.relay.isKicked(u.pin),
      }))
      .sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
  }

  /**
   * Remove a person from the room (Relay.kick). The lab's own bots are not removed this way: the
   * lab would go on counting on them; they are stopped with stopBot.
   */
  kick(pin: string): { sessions: number } {
    const bot = [...this.bots.values()].find((b) => b.pin === pin);
    if (bot) throw new LabError(409, `${bot.name} is one of the lab's bots: stop it instead (DELETE /api/lab/bots/${encodeURIComponent(bot.name)})`);
    const done = this.deps.relay.kick(pin);
    if (!done) throw new LabError(404, `nobody with PIN ${pin} in the directory`);
    return done;
  }

  /** Let a removed person back in. */
  readmit(pin: string): void {
    if (!this.deps.relay.readmit(pin)) throw new LabError(404, `PIN ${pin} was not removed`);
  }

  /** Classroom mode for the panel: the class code, the join links and the first one's QR code (an SVG data: URL), unless hidden. */
  classroomView(): ClassroomView {
    const classroom = this.deps.relay.getClassroom();
    if (!classroom) return { classroom: false };
    if (classroom.hidden) return { classroom: true, hidden: true, code: null, links: [], qr: null, wrongCodes: classroom.wrongCodes };
    const links = this.deps.joinLinks?.() ?? [];
    return { classroom: true, hidden: false, code: classroom.code, links, qr: links[0] ? qrDataUrl(links[0]) : '', wrongCodes: classroom.wrongCodes };
  }

  /** Hide the class code from the panel and the projector (everyone is in), or show it again. */
  hideClassCode(hidden: boolean): ClassroomView {
    const classroom = this.deps.relay.getClassroom();
    if (!classroom) throw new LabError(409, 'the relay is not in classroom mode (start it with --classroom): there is no class code');
    classroom.hidden = hidden;
    this.deps.log.info(hidden ? 'class code hidden' : 'class code shown');
    return this.classroomView();
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
    this.undoSwap();
    this.deps.regulator.setTap({ tap: false, scope: 'all', pins: [], announced: true });
    this.deps.regulator.useExportGrade(false);
    this.deps.setRoom('e2e', false);
    const users = this.deps.relay.resetRoom();
    const intercepts = this.deps.regulator.resetArchive(who);
    this.attacker.reset();
    this.insider.detach();
    this.scanner.reset();
    this.deps.log.info('room reset', { users, intercepts, bots });
    return { users, intercepts, bots };
  }

  close(): void {
    this.escrow.undo();
    for (const bot of this.bots.values()) bot.stop();
    this.bots.clear();
  }

  private context(): LabContext {
    return {
      lab: this,
      bot: (name, sealing) => this.bot(name, sealing ? { sealing } : {}),
      say: (from, to, text) => this.say(from, to, text),
      room: async (model, sealedSender = false) => {
        await this.botsIdle();
        const policy = this.deps.setRoom(model, sealedSender);
        await this.policyReached(policy.epoch);
      },
      tap: async (on, options = {}) => {
        await this.botsIdle();
        const policy = this.deps.regulator.setTap({ tap: on, scope: options.scope ?? 'all', pins: options.pins ?? [], announced: options.announced ?? true });
        await this.policyReached(policy.epoch);
      },
    };
  }

  /** Wait until no bot has a reply pending or a message unacknowledged (bounded: a bot that is stuck does not hang the panel). */
  private async botsIdle(): Promise<void> {
    await waitFor(() => [...this.bots.values()].every((b) => b.idle()), 'the bots to finish answering').catch((err: unknown) =>
      this.deps.log.info('lab bots still busy', { error: (err as Error).message }),
    );
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
    // A bot answers what it reads: the exchange is over when that answer has reached the sender, so a
    // scene's figures count it and its next step (a mode change, say) comes after it.
    await waitFor(() => to.idle(), `${to.name} to answer`);
    const answers = [...to.m.messages.values()].filter((m) => m.direction === 'out' && m.chat === `dm:${from.pin}` && m.state !== 'failed');
    await waitFor(() => answers.every((a) => from.m.messages.has(a.id)), `${from.name} to get ${to.name}'s answer`);
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
