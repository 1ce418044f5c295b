/**
 * Issue 4, item 2: the relay's limits. The largest frame, the token bucket
 * against a flooding client (latency a pair sees with and without the flood),
 * the slow consumer that never reads, heartbeats that end dead connections, and
 * the login timeout.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { CloseCode, MAX_FRAME_BYTES, MAX_TEXT_CHARS } from '../../shared/protocol.ts';
import { newIdentity, toB64 } from '../../shared/crypto.ts';
import { DEFAULT_LIMITS, UNLIMITED } from '../../server/relay.ts';
import WebSocket from 'ws';
import { Messenger, memoryStore, type SocketLike } from '../../client/core/messenger.ts';
import { startTestRelay, user, knows, until, type TestUser } from '../helpers/relay.ts';
import { RawClient, SIZE, median, ms, quantile, reportFigures, sleep } from './support.ts';

type Relay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
async function relay(options: Parameters<typeof startTestRelay>[0] = {}): Promise<Relay> {
  const app = await startTestRelay(options);
  cleanup.push(() => app.close());
  return app;
}

describe('limits: frame size', () => {
  it('a frame of exactly the maximum size is read and answered, one byte more closes the socket with 1009, and the relay serves on', async () => {
    const app = await relay();
    const c = await RawClient.connect(app.wsUrl);
    const frame = (size: number) => {
      const head = '{"type":"ping","t":1,"pad":"';
      return `${head}${'x'.repeat(size - head.length - 2)}"}`;
    };
    expect(Buffer.byteLength(frame(MAX_FRAME_BYTES))).toBe(MAX_FRAME_BYTES);
    c.send(frame(MAX_FRAME_BYTES));
    c.send({ type: 'ping', t: 42 });
    const error = await c.next('error');
    expect(error.code).toBe('bad_frame'); // an unknown "pad" field: read, parsed and refused by name
    await c.waitFor(() => c.frames.some((f) => f.type === 'pong' && f.t === 42), 'the pong after the largest frame');
    expect(c.closed).toBeNull();

    c.send(frame(MAX_FRAME_BYTES + 1));
    const closed = await c.waitClosed();
    expect(closed.code).toBe(CloseCode.TooBig);

    const again = await RawClient.connect(app.wsUrl);
    await again.login(newIdentity(), 'Still here');
    again.close();
    reportFigures('frame size', {
      'max frame bytes': MAX_FRAME_BYTES,
      'frame of max bytes': 'answered (error reply), socket open',
      'frame of max+1 bytes': `closed ${closed.code}`,
    });
  });
});

// ---------------------------------------------------------------------------
// Flooding

interface FlooderStats {
  sent: number;
  accepted: number;
  rateLimited: number;
  otherErrors: number;
  closes: Record<string, number>;
  connections: number;
  receivedByRecipients: number;
  recipientBytes: number;
}

interface Flooder {
  child: ChildProcessWithoutNullStreams;
  cmd(line: string): void;
  stats(): Promise<FlooderStats>;
}

/** A flooder in its own process: at `target` (a single-recipient flood), or a fan-out to `fanout` recipients of its own. */
async function startFlooder(wsUrl: string, to: TestUser | { fanout: number }): Promise<Flooder> {
  const file = fileURLToPath(new URL('./flooder.ts', import.meta.url));
  const args = 'fanout' in to ? ['fanout', String(to.fanout)] : [to.m.pin, toB64(to.m.identity.signPk)];
  const child = spawn(process.execPath, ['--import', 'tsx', file, wsUrl, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  cleanup.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    wake?.();
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const nextLine = async (match: (l: string) => boolean, what: string): Promise<string> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const i = lines.findIndex(match);
      if (i >= 0) return lines.splice(i, 1)[0]!;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`flooder: no ${what} (${stderr.trim()})`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  await nextLine((l) => l === 'ready', 'ready line');
  const cmd = (line: string) => child.stdin.write(`${line}\n`);
  return {
    child,
    cmd,
    stats: async () => {
      cmd('stats');
      return JSON.parse(await nextLine((l) => l.startsWith('{'), 'stats line')) as FlooderStats;
    },
  };
}

/**
 * A probe that has not arrived after this long counts as lost. Generous on purpose: in npm test a
 * lost probe must mean a lost message, never a slow machine.
 */
const PROBE_TIMEOUT_MS = 10_000;

/** One-way latency A → B in this process: from sendText to B's Messenger showing it (Infinity if lost). */
function latency(a: TestUser, b: TestUser, text: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    let id = '';
    let t0 = 0;
    const off = b.m.on((e) => {
      if (e.type === 'message' && e.message.id === id && e.message.direction === 'in') {
        clearTimeout(timer);
        off();
        resolve(performance.now() - t0);
      }
    });
    const timer = setTimeout(() => {
      off();
      resolve(Infinity);
    }, timeoutMs);
    t0 = performance.now();
    id = a.m.sendText([b.m.pin], text).id;
  });
}

async function latencies(a: TestUser, b: TestUser, n: number, timeoutMs = PROBE_TIMEOUT_MS): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(await latency(a, b, `latency probe ${i}`, timeoutMs));
    await sleep(15);
  }
  return out;
}

interface FloodRun {
  quiet: number[];
  flooded: number[];
  fs: FlooderStats;
  ratio: number;
  ratio95: number;
  /** Time spent in flooded windows, and from the flooder's start to the end (ms). */
  floodMs: number;
  totalMs: number;
}

/**
 * An honest pair's latency in alternating quiet and flooded windows (so that any other load on the
 * machine falls on both alike), with the flooder started by `flood` on the same relay.
 */
async function floodRun(app: Relay, flood: (b: TestUser) => Promise<Flooder>, names: [string, string]): Promise<FloodRun> {
  const a = await user(app.wsUrl, names[0]);
  const b = await user(app.wsUrl, names[1]);
  await knows(a, b.m.pin);
  cleanup.push(() => {
    a.m.stop();
    b.m.stop();
  });
  const started = performance.now();
  const flooder = await flood(b);
  await latencies(a, b, 10); // warm up
  const quiet: number[] = [];
  const flooded: number[] = [];
  const per = Math.max(5, Math.ceil(SIZE.latencySamples / 4));
  let floodMs = 0;
  for (let round = 0; round < 2; round++) {
    quiet.push(...(await latencies(a, b, per)));
    const t0 = performance.now();
    flooder.cmd('on');
    await sleep(300);
    flooded.push(...(await latencies(a, b, per)));
    flooder.cmd('off');
    floodMs += performance.now() - t0;
    await sleep(300);
  }
  const fs = await flooder.stats();
  const totalMs = performance.now() - started;
  return { quiet, flooded, fs, ratio: median(flooded) / median(quiet), ratio95: quantile(flooded, 0.95) / quantile(quiet, 0.95), floodMs, totalMs };
}

function latencyFigures(run: FloodRun): Record<string, string> {
  return {
    'latency quiet p50 / p95': `${ms(median(run.quiet))} / ${ms(quantile(run.quiet, 0.95))}`,
    'latency flooded p50 / p95': `${ms(median(run.flooded))} / ${ms(quantile(run.flooded, 0.95))}`,
    'ratio flooded/quiet p50': run.ratio.toFixed(2),
    'ratio flooded/quiet p95': run.ratio95.toFixed(2),
    'probes per condition': String(run.quiet.length),
  };
}

describe('limits: a flooding client', () => {
  it('one client flooding a single recipient is held by the token bucket: its excess is dropped with rate_limited, it is closed with 4005, and the pair loses no message (latency ratio asserted in test:reliability)', async () => {
    const app = await relay();
    const run = await floodRun(app, (b) => startFlooder(app.wsUrl, b), ['LatencyA', 'LatencyB']);
    const { fs } = run;
    const stats = app.relay.stats;
    reportFigures('flood (token bucket on, default limits)', {
      bucket: `burst ${DEFAULT_LIMITS.rateBurst}, ${DEFAULT_LIMITS.ratePerSecond}/s, close after ${DEFAULT_LIMITS.floodCloseAfter} drops`,
      ...latencyFigures(run),
      'flood frames sent': fs.sent,
      'flood envelopes accepted': fs.accepted,
      'flood rate_limited replies': fs.rateLimited,
      'flood closes (code×n)':
        Object.entries(fs.closes)
          .map(([c, n]) => `${c}×${n}`)
          .join(' ') || '-',
      'flood connections (it reconnects when closed)': fs.connections,
      'relay frames dropped by bucket': stats.rateLimited,
      'relay flood closes': stats.floodCloses,
    });
    expect(fs.sent).toBeGreaterThan(10 * fs.accepted); // it really flooded
    expect(stats.rateLimited).toBeGreaterThan(0);
    expect(stats.floodCloses).toBeGreaterThan(0);
    expect(fs.closes[String(CloseCode.Flooding)] ?? 0).toBeGreaterThan(0);
    expect([...run.quiet, ...run.flooded].every(Number.isFinite)).toBe(true); // no probe lost
    // The property: the median latency under flood is at most double the quiet one. Medians of
    // alternating windows are stable on a quiet machine; the p95 is printed, not asserted.
    if (SIZE.timing) expect(run.ratio).toBeLessThanOrEqual(2);
  }, 60_000);

  it('one client fanning max-size group envelopes out to 63 recipients is held by the output budget: its accepted bytes × recipients stay within burst + rate × time, and the pair loses no message (latency ratio asserted in test:reliability)', async () => {
    const app = await relay();
    const run = await floodRun(app, () => startFlooder(app.wsUrl, { fanout: 63 }), ['FanoutA', 'FanoutB']);
    const { fs } = run;
    const stats = app.relay.stats;
    // The flooder's bucket refills in the quiet windows too, so its budget runs from its start.
    const budget = DEFAULT_LIMITS.outputBurstBytes + (DEFAULT_LIMITS.outputBytesPerSecond * run.totalMs) / 1000;
    reportFigures('fan-out flood (output budget on, default limits)', {
      'output budget': `burst ${DEFAULT_LIMITS.outputBurstBytes} B, ${DEFAULT_LIMITS.outputBytesPerSecond} B/s per connection (envelope bytes × recipients)`,
      ...latencyFigures(run),
      'flood frames sent (max-size, 63 recipients)': fs.sent,
      'flood envelopes accepted': fs.accepted,
      'flood rate_limited replies': fs.rateLimited,
      'flood closes (code×n)':
        Object.entries(fs.closes)
          .map(([c, n]) => `${c}×${n}`)
          .join(' ') || '-',
      'envelopes the 63 recipients got': fs.receivedByRecipients,
      'relay output charged (bytes)': stats.outputCharged,
      "budget from the flooder's start (bytes)": Math.round(budget),
      'relay output per flooded second': `${(stats.outputCharged / (run.floodMs / 1000) / 1024 / 1024).toFixed(2)} MiB/s`,
      'refused by the output bucket': stats.outputLimited,
      'refused by the input byte bucket': stats.inputLimited,
    });
    expect(fs.sent).toBeGreaterThan(fs.accepted); // it really flooded
    expect(stats.outputLimited).toBeGreaterThan(0);
    // What the relay took from the flooder fits its budget. The honest pair's probes are charged
    // too (under 1 KB each: 256 KiB covers them), and the time is measured here, from before the
    // flooder started to after its last frame, so the bound is looser than the relay's own clock
    // and no slowness of the machine can break it.
    expect(stats.outputCharged).toBeLessThanOrEqual(budget + 256 * 1024);
    expect([...run.quiet, ...run.flooded].every(Number.isFinite)).toBe(true); // no probe lost
    if (SIZE.timing) expect(run.ratio).toBeLessThanOrEqual(2);
  }, 90_000);

  // Registered only with RELIABILITY_CONTRAST=1 (npm run test:reliability): it floods a relay on purpose and takes ~10 s.
  if (SIZE.contrast)
    it('contrast: with the byte buckets opened wide (the frame bucket alone, as before), the same fan-out flood makes the relay push many times its budget', async () => {
      const app = await relay({ limits: { inputBurstBytes: 1e15, inputBytesPerSecond: 1e15, outputBurstBytes: 1e15, outputBytesPerSecond: 1e15 } });
      const run = await floodRun(app, () => startFlooder(app.wsUrl, { fanout: 63 }), ['OpenFanA', 'OpenFanB']);
      const perSecond = app.relay.stats.outputCharged / (run.floodMs / 1000);
      reportFigures('fan-out flood (contrast: byte buckets opened wide)', {
        ...latencyFigures(run),
        'flood envelopes accepted': run.fs.accepted,
        'envelopes the 63 recipients got': run.fs.receivedByRecipients,
        'relay output per flooded second': `${(perSecond / 1024 / 1024).toFixed(2)} MiB/s`,
      });
      expect(perSecond).toBeGreaterThan(4 * DEFAULT_LIMITS.outputBytesPerSecond);
    }, 90_000);

  // Registered only with RELIABILITY_CONTRAST=1 (npm run test:reliability): it floods a relay on purpose and takes ~10 s.
  if (SIZE.contrast)
    it('contrast: without the token bucket the same flood makes a pair wait behind it, its slowest probe many times the quiet one (shows what the bucket is for)', async () => {
      const open = await relay({ limits: UNLIMITED });
      const oa = await user(open.wsUrl, 'OpenA');
      const ob = await user(open.wsUrl, 'OpenB');
      await knows(oa, ob.m.pin);
      cleanup.push(() => {
        oa.m.stop();
        ob.m.stop();
      });
      const openFlooder = await startFlooder(open.wsUrl, ob);
      await latencies(oa, ob, 5);
      const per = 10;
      const openQuiet = await latencies(oa, ob, per, 3000);
      openFlooder.cmd('on');
      await sleep(300);
      const openFlooded = await latencies(oa, ob, per, 3000);
      openFlooder.cmd('off');
      const ofs = await openFlooder.stats();
      const finite = openFlooded.filter(Number.isFinite);
      reportFigures('flood (contrast: token bucket opened wide)', {
        'latency quiet p50': ms(median(openQuiet)),
        'latency flooded p50 / p95': `${ms(median(finite))} / ${ms(quantile(finite, 0.95))}`,
        'probes lost (> 3 s)': openFlooded.length - finite.length,
        'ratio flooded/quiet p50': (median(openFlooded) / median(openQuiet)).toFixed(2),
        'slowest probe quiet / flooded': `${ms(Math.max(...openQuiet))} / ${ms(Math.max(...openFlooded))}`,
        'ratio flooded/quiet slowest probe': (Math.max(...openFlooded) / Math.max(...openQuiet)).toFixed(1),
        'flood frames sent': ofs.sent,
        'flood envelopes accepted': ofs.accepted,
      });
      // Without the bucket the flood is delivered: the pair waits behind it. The flooder's stock holds
      // 1,500 distinct envelopes and it then repeats them, which the relay answers cheaply as
      // duplicates; so the flood's real weight is one burst of 1,500 deliveries to B, and the probes
      // that meet it wait up to a second or more, while the later ones do not. The median of ten
      // probes then depends on where they fall (0.84-14.6 in runs on 2026-11-29); the slowest probe
      // does not (about 1.2 s against a few ms quiet).
      expect(Math.max(...openFlooded) / Math.max(...openQuiet)).toBeGreaterThan(10);
    }, 60_000);
});

// ---------------------------------------------------------------------------
// Slow consumers

describe('limits: a slow consumer', () => {
  it('a device that stops reading is cut off with 4004 before the relay holds more than the bound for it, and gets every queued message exactly once when it comes back and reads', async () => {
    const bound = 256 * 1024;
    // The sender's buckets and the queue quota are opened wide so it can outpace the reader; the
    // bound is small so the test is quick. The cut socket gets 30 s (not 1) to read what was
    // buffered before its close frame: on a busy machine a second was not always enough, and the
    // reader then saw 1006 instead of the 4004 this test is about.
    const app = await relay({ limits: { ...UNLIMITED, maxBufferedBytes: bound, closeGraceMs: 30_000 } });
    const sender = await user(app.wsUrl, 'Talker');
    const slowId = newIdentity();
    const slow = await RawClient.connect(app.wsUrl);
    await slow.login(slowId, 'Sleepy');
    await knows(sender, slowId.pin);
    cleanup.push(() => sender.m.stop());
    // Stop reading: the relay's writes fill the kernel buffers, then its own.
    slow.ws.pause();

    const text = 'z'.repeat(MAX_TEXT_CHARS);
    const ids: string[] = [];
    let maxSeen = 0;
    const sampler = setInterval(() => {
      for (const b of app.relay.bufferedAmounts()) maxSeen = Math.max(maxSeen, b);
    }, 2);
    cleanup.push(() => clearInterval(sampler));
    for (let i = 0; i < 20_000 && app.relay.stats.slowConsumerCuts === 0; i++) {
      ids.push(sender.m.sendText([slowId.pin], `${i} ${text}`).id);
      if (i % 50 === 49) await sleep(5);
    }
    await until(() => app.relay.stats.slowConsumerCuts > 0, 'the relay to cut the slow consumer off', 20_000);
    // Read now: what was queued before the cut, then the close frame with its code and reason.
    slow.ws.resume();
    const closed = await slow.waitClosed(5000);
    clearInterval(sampler);
    await until(() => ids.every((id) => sender.m.messages.get(id)?.state !== 'sending'), 'every message accepted');
    const accepted = ids.filter((id) => sender.m.messages.get(id)?.state !== 'failed');
    const deliveredBeforeCut = new Set(slow.frames.filter((f) => f.type === 'envelope').map((f) => (f as { env: { id: string } }).env.id));

    // It comes back as the same identity, through the Messenger, and reads: everything is there, once.
    const storage = memoryStore();
    storage.setItem('backdoor-lab.identity', toB64(slowId.signSk));
    const envelopeFrames: string[] = [];
    const back = new Messenger({
      name: 'Sleepy',
      storage,
      connect: () => {
        const ws = new WebSocket(app.wsUrl);
        ws.on('message', (d) => {
          const s = d.toString();
          if (s.startsWith('{"type":"envelope"')) envelopeFrames.push(JSON.parse(s).env.id);
        });
        return ws as unknown as SocketLike;
      },
    });
    cleanup.push(() => back.stop());
    await back.start();
    await until(() => accepted.every((id) => back.messages.has(id)), 'the returning device to have every accepted message', 30_000);
    const duplicates = envelopeFrames.length - new Set(envelopeFrames).size;

    reportFigures('slow consumer', {
      'bound (maxBufferedBytes)': bound,
      'messages sent before the cut': ids.length,
      'largest relay-side buffer sampled': maxSeen,
      'relay stats maxBuffered': app.relay.stats.maxBuffered,
      'close seen by the device': `${closed.code} "${closed.reason}"`,
      'read before the cut': deliveredBeforeCut.size,
      'accepted for it': accepted.length,
      'delivered on return (unique)': new Set(envelopeFrames).size,
      'duplicate deliveries on the returning socket': duplicates,
      lost: accepted.filter((id) => !back.messages.has(id)).length,
    });
    expect(closed.code).toBe(CloseCode.SlowConsumer);
    expect(closed.reason).toMatch(/slow consumer/);
    // One frame may be written after the last check; nothing beyond the bound plus that frame.
    expect(maxSeen).toBeLessThanOrEqual(bound);
    expect(app.relay.stats.maxBuffered).toBeLessThanOrEqual(bound);
    expect(accepted.length).toBe(ids.length);
    expect(accepted.filter((id) => !back.messages.has(id))).toEqual([]);
    expect(duplicates).toBe(0);
    expect(app.relay.connectionCount()).toBe(2); // the cut socket is gone: the sender and the returned device
  }, 60_000);
});

// ---------------------------------------------------------------------------
// Heartbeats and the login timeout

describe('limits: heartbeats and the login timeout', () => {
  it('a connection that stops answering pings is terminated by the heartbeat (no closing handshake) and goes offline, while one that answers stays open', async () => {
    const heartbeatMs = 100;
    const app = await relay({ limits: { heartbeatMs } });
    const deadId = newIdentity();
    // autoPong off: the socket stays open at TCP level but never answers a ping, like a vanished laptop.
    const dead = await RawClient.connect(app.wsUrl, { autoPong: false });
    await dead.login(deadId, 'Ghost');
    const live = await RawClient.connect(app.wsUrl);
    await live.login(newIdentity(), 'Awake');
    const t0 = performance.now();
    const closed = await dead.waitClosed(20 * heartbeatMs);
    const after = performance.now() - t0;
    await sleep(5 * heartbeatMs);
    reportFigures('heartbeat', {
      'heartbeat interval': `${heartbeatMs} ms`,
      'dead connection ended after': ms(after),
      'close code seen by it': closed.code,
      'terminations counted': app.relay.stats.heartbeatTerminations,
      'answering connection still open after 5 more beats': live.closed === null ? 'yes' : 'no',
    });
    expect(closed.code).toBe(1006); // terminated: no closing handshake with a peer that does not answer
    expect(app.relay.stats.heartbeatTerminations).toBe(1);
    expect(live.closed).toBeNull();
    expect(app.relay.directory().find((d) => d.pin === deadId.pin)?.online).toBe(false);
    live.close();
  });

  it('a connection that never logs in is closed with 4002 and a reason when the login timeout passes', async () => {
    const app = await relay({ limits: { loginTimeoutMs: 150 } });
    const idle = await RawClient.connect(app.wsUrl);
    const closed = await idle.waitClosed(3000);
    expect(closed).toEqual({ code: CloseCode.LoginTimeout, reason: 'login timeout' });
    expect(app.relay.stats.loginTimeouts).toBe(1);
  });
});
