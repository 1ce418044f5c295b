/**
 * Shared by the reliability tests: sizes (small in `npm test`, larger through
 * `npm run test:reliability -- --frames N ...`), the figures every test prints,
 * a raw WebSocket client that speaks the protocol by hand, and a seeded PRNG.
 */
import { appendFileSync } from 'node:fs';
import WebSocket, { type ClientOptions } from 'ws';
import { PROTOCOL_VERSION, parseServerMessage, type ServerMessage } from '../../shared/protocol.ts';
import { signLogin, toB64, type Identity } from '../../shared/crypto.ts';

// ---------------------------------------------------------------------------
// Sizes: environment variables set by scripts/reliability.ts (or by hand).

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number, not "${raw}"`);
  return n;
}

export const SIZE = {
  /**
   * Malformed frames the fuzz test sends: 2,500 in `npm test` (its share of keeping the suite near
   * five minutes), 10,000 in `npm run test:reliability` (the hardening issue's "at least 10,000").
   */
  frames: envInt('RELIABILITY_FRAMES', 2_500),
  /** Seconds of traffic on each side of the SIGKILL in the fault test. */
  faultSeconds: envInt('RELIABILITY_FAULT_SECONDS', 2),
  /** SIGKILL-and-restart cycles in the fault test. */
  kills: envInt('RELIABILITY_KILLS', 2),
  /** Messages timed per window in the flood latency test. */
  latencySamples: envInt('RELIABILITY_LATENCY_SAMPLES', 60),
  /** Also run the flood against a relay without a token bucket, for contrast (slow: off in `npm test`). */
  contrast: process.env.RELIABILITY_CONTRAST === '1',
  /**
   * Assert timing ratios (flood latency against quiet). Only `npm run test:reliability` sets it: in
   * `npm test` other files (the browser tests) share the two cores, and a ratio can fail for that
   * alone. There the figures are printed and only what no machine load can change is asserted.
   */
  timing: process.env.RELIABILITY_TIMING === '1',
  /** PRNG seed for the fuzzer; printed so a failure can be replayed. */
  seed: envInt('RELIABILITY_SEED', 20240917),
};

// ---------------------------------------------------------------------------
// Figures: printed in the vitest output and, when RELIABILITY_FIGURES_FILE is
// set, appended as JSON lines for scripts/reliability.ts to put in one table.

export type Figures = Record<string, number | string>;

export function reportFigures(section: string, figures: Figures): void {
  const width = Math.max(...Object.keys(figures).map((k) => k.length));
  const lines = Object.entries(figures).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  console.log(`[figures] ${section}\n${lines.join('\n')}`);
  const file = process.env.RELIABILITY_FIGURES_FILE;
  if (file) appendFileSync(file, `${JSON.stringify({ section, figures })}\n`);
}

export const median = (xs: number[]): number => quantile(xs, 0.5);
export function quantile(xs: number[], q: number): number {
  if (!xs.length) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
export const ms = (x: number): string => `${x.toFixed(2)} ms`;

// ---------------------------------------------------------------------------
// A seeded PRNG (mulberry32): the fuzz corpus is the same on every run with the same seed.

export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
  hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += '0123456789abcdef'[this.int(0, 15)];
    return s;
  }
}

// ---------------------------------------------------------------------------
// A raw protocol client: no Messenger, every frame by hand.

export interface Closed {
  code: number;
  reason: string;
}

export class RawClient {
  readonly frames: ServerMessage[] = [];
  /** Frames that did not parse as a server message (there must be none). */
  readonly unparsed: string[] = [];
  closed: Closed | null = null;
  challenge: Extract<ServerMessage, { type: 'challenge' }> | null = null;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString();
      const parsed = parseServerMessage(text);
      if (parsed.ok) {
        this.frames.push(parsed.value);
        if (parsed.value.type === 'challenge') this.challenge = parsed.value;
      } else this.unparsed.push(text);
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => {
      // A close event follows.
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Open a socket and wait for the relay's challenge. */
  static async connect(wsUrl: string, options: ClientOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(wsUrl, options);
    const client = new RawClient(ws);
    await client.waitFor(() => client.challenge !== null || client.closed !== null, 'the challenge');
    if (!client.challenge) throw new Error(`socket closed (${client.closed?.code} ${client.closed?.reason}) before the challenge`);
    return client;
  }

  /** Resolve when `check` holds (checked on every frame and on close); reject after `ms`. */
  waitFor(check: () => boolean, what: string, ms = 5000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      const waiter = () => {
        if (check()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(waiter);
      };
      this.waiters.push(waiter);
    });
  }

  /** Wait for the first frame after index `from` matching `match`, or for the close. */
  async next<T extends ServerMessage['type']>(type: T, from = 0, ms = 5000): Promise<Extract<ServerMessage, { type: T }>> {
    let found: ServerMessage | undefined;
    await this.waitFor(
      () => {
        found = this.frames.slice(from).find((f) => f.type === type);
        return found !== undefined || this.closed !== null;
      },
      `a "${type}" frame`,
      ms,
    );
    if (!found) throw new Error(`socket closed (${this.closed?.code} ${this.closed?.reason}) before a "${type}" frame`);
    return found as Extract<ServerMessage, { type: T }>;
  }

  waitClosed(ms = 5000): Promise<Closed> {
    return this.waitFor(() => this.closed !== null, 'the close', ms).then(() => this.closed!);
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The hello frame for this connection's challenge, signed by `identity`. */
  hello(identity: Identity, name: string): { type: 'hello'; v: typeof PROTOCOL_VERSION; pk: string; name: string; sig: string } {
    if (!this.challenge) throw new Error('no challenge yet');
    return { type: 'hello', v: PROTOCOL_VERSION, pk: toB64(identity.signPk), name, sig: signLogin(this.challenge.nonce, identity) };
  }

  /** Log in as `identity` and wait for the welcome. */
  async login(identity: Identity, name: string): Promise<Extract<ServerMessage, { type: 'welcome' }>> {
    const from = this.frames.length;
    this.send(this.hello(identity, name));
    return this.next('welcome', from);
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

/** Resolve after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
