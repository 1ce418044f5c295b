/**
 * The load generator: N WebSocket clients in one process, apart from the relay
 * under test (which has its own process, so the two never share an event loop).
 *
 * Each client speaks the relay's protocol as the real client (client/core) does
 * on the wire: it answers the login challenge with a real Ed25519 signature,
 * sends pre-sealed envelopes, acknowledges every envelope and every receipt it
 * receives. What it skips is the client's own per-message work (zod parsing,
 * signature check, decryption), which bench/run.ts measures on its own: the
 * point here is to load the relay, not the load generator. Incoming frames are
 * recognised by their prefix and the two fields needed (qid, id) are cut out.
 *
 * Against the baseline it sends `{"type":"hello","pin":...}` instead of the
 * signed login (the baseline has no login), and then exactly the same frames.
 *
 * Commands (IPC): pool, connect, closed, open, disconnect.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { cryptoReady, signLogin, toB64, type Identity } from '../shared/crypto.ts';
import { benchIdentity, benchName, percentile, serve, sleep } from './common.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';

type Mode = 'relay' | 'baseline';

/** Give a client the slice [from, from + count) of its pre-sealed pool for the next phase. */
function assignSlice(c: Client, from: number, count: number): void {
  const pool = frames.get(c.i);
  if (!pool || pool.length < from + count) throw new Error(`pool too small for client ${c.i}: ${pool?.length ?? 0} < ${from + count}`);
  c.next = c.start = from;
  c.end = from + count;
  c.outstanding = 0;
}

interface Client {
  i: number;
  ws: WebSocket;
  /** Next frame of this sender's pool to send, and where its slice for this phase ends. */
  next: number;
  start: number;
  end: number;
  outstanding: number;
  /** Acks as client/core's Messenger sends them: at once while few, else batched. */
  pendingAcks: string[];
  ackBudget: number;
  ackBudgetAt: number;
  ackTimer: NodeJS.Timeout | null;
}

/**
 * The Messenger's ack policy (client/core/messenger.ts): acks go out at once while there are at
 * most ACK_BURST a second; beyond that, one frame per ACK_INTERVAL_MS carries all pending qids.
 */
const ACK_BURST = 10;
const ACK_INTERVAL_MS = 100;

function flushAcks(client: Client): void {
  client.ackTimer = null;
  const qids = client.pendingAcks;
  client.pendingAcks = [];
  for (let i = 0; i < qids.length; i += 1000) {
    if (client.ws.readyState === WebSocket.OPEN) client.ws.send(`{"type":"ack","qids":[${qids.slice(i, i + 1000).join(',')}]}`);
  }
}

function ack(client: Client, qid: string): void {
  client.pendingAcks.push(qid);
  if (client.ackTimer) return;
  const now = Date.now();
  client.ackBudget = Math.min(ACK_BURST, client.ackBudget + ((now - client.ackBudgetAt) / 1000) * ACK_BURST);
  client.ackBudgetAt = now;
  if (client.ackBudget >= 1) {
    client.ackBudget -= 1;
    flushAcks(client);
    return;
  }
  client.ackTimer = setTimeout(() => flushAcks(client), ACK_INTERVAL_MS);
}

interface InFlight {
  client: Client;
  t0: number;
  /** Recipients that have not received it yet (1 for a 1:1 envelope, 29 in the workshop's groups). */
  remaining: number;
}

const frames = new Map<number, string[]>();
/** How many recipients each sender's envelopes name (all of one sender's envelopes in a pool name as many). */
const recipientsOf = new Map<number, number>();
const identities = new Map<number, Identity>();
let clients: Client[] = [];
let mode: Mode = 'relay';
/** False against the cost ladder's accept-only server (bench/ladder-relay.ts), which sends no receipts. */
let expectReceipts = true;
/**
 * Whether the closed loop may send a client's slice round again until its time is up: yes against
 * servers that do not care about repeated envelope ids (the baseline, the cost ladder's rungs), no
 * against the relay, which drops a replayed id.
 */
let cycleIds = false;

// Per-phase counters, reset by each phase.
const inFlight = new Map<string, InFlight>();
let onDelivered: ((client: Client, t0: number, now: number) => void) | null = null;
let delivered = 0;
let receipts = 0;
let accepted = 0;
let errors = 0;
const errorSamples: string[] = [];

const identity = (i: number): Identity => {
  let id = identities.get(i);
  if (!id) {
    id = benchIdentity(i);
    identities.set(i, id);
  }
  return id;
};

/** The 32-hex-digit envelope id after `"id":"` at or after `from`. */
function idAt(frame: string, from: number): string {
  const at = frame.indexOf('"id":"', from);
  return frame.slice(at + 6, at + 38);
}

/** The number after `"qid":`. */
function qidOf(frame: string): string {
  const at = frame.indexOf('"qid":') + 6;
  let end = at;
  while (end < frame.length && frame.charCodeAt(end) >= 48 && frame.charCodeAt(end) <= 57) end++;
  return frame.slice(at, end);
}

/** One recipient got envelope `id`: a delivery (a group envelope makes one per recipient). */
function deliver(id: string): void {
  const entry = inFlight.get(id);
  if (!entry) return;
  if (--entry.remaining <= 0) inFlight.delete(id);
  delivered++;
  onDelivered?.(entry.client, entry.t0, performance.now());
}

function onFrame(client: Client, frame: string, loggedIn: () => void): void {
  if (mode === 'relay') {
    if (frame.startsWith('{"type":"envelope"')) {
      deliver(idAt(frame, frame.indexOf('"env":')));
      ack(client, qidOf(frame));
    } else if (frame.startsWith('{"type":"accepted"')) {
      accepted++;
    } else if (frame.startsWith('{"type":"receipt"')) {
      receipts++;
      ack(client, qidOf(frame));
    } else if (frame.startsWith('{"type":"challenge"')) {
      const { nonce } = JSON.parse(frame) as { nonce: string };
      const id = identity(client.i);
      client.ws.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(id.signPk), name: benchName(client.i), sig: signLogin(nonce, id) }));
    } else if (frame.startsWith('{"type":"welcome"')) {
      loggedIn();
    } else if (frame.startsWith('{"type":"error"')) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(frame.slice(0, 300));
    }
    // presence, policy, pong: nothing to do
  } else {
    if (frame.startsWith('{"type":"send"')) {
      // The real client acknowledges what it received; the baseline parses the ack and drops it.
      deliver(idAt(frame, 0));
      ack(client, '1');
    } else if (frame.startsWith('{"type":"welcome"')) {
      loggedIn();
    }
  }
}

function connectOne(wsUrl: string, i: number, timeoutMs: number): Promise<Client> {
  return new Promise<Client>((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const client: Client = { i, ws, next: 0, start: 0, end: 0, outstanding: 0, pendingAcks: [], ackBudget: ACK_BURST, ackBudgetAt: 0, ackTimer: null };
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      ws.terminate();
      reject(new Error(`client ${i}: no login within ${timeoutMs} ms`));
    }, timeoutMs);
    const loggedIn = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(client);
    };
    ws.on('message', (data) => onFrame(client, data.toString(), loggedIn));
    ws.on('open', () => {
      if (mode === 'baseline') ws.send(JSON.stringify({ type: 'hello', pin: identity(i).pin }));
    });
    ws.on('error', (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`client ${i}: ${err.message}`));
    });
    ws.on('close', (code) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`client ${i}: closed with ${code} before login`));
    });
  });
}

function resetCounters(): void {
  inFlight.clear();
  onDelivered = null;
  delivered = receipts = accepted = errors = 0;
  errorSamples.length = 0;
}

function sendNext(client: Client, t0: number): void {
  if (client.next >= client.end) client.next = client.start; // a cycling closed loop goes round its slice again
  const frame = frames.get(client.i)![client.next++]!;
  inFlight.set(idAt(frame, 0), { client, t0, remaining: recipientsOf.get(client.i) ?? 1 });
  client.outstanding++;
  client.ws.send(frame);
}

function latencySummary(samples: number[]): { p50: number; p90: number; p99: number; max: number; mean: number; samples: number } {
  samples.sort((a, b) => a - b);
  const mean = samples.reduce((s, x) => s + x, 0) / (samples.length || 1);
  return {
    p50: percentile(samples, 50),
    p90: percentile(samples, 90),
    p99: percentile(samples, 99),
    max: samples[samples.length - 1] ?? Number.NaN,
    mean,
    samples: samples.length,
  };
}

/** Wait (bounded) until the relay has sent every receipt for what was delivered, so phases do not overlap. */
async function settleReceipts(ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  const waitFor = mode === 'relay' && expectReceipts;
  while (waitFor && receipts < delivered && Date.now() < deadline) await sleep(5);
  await sleep(ACK_INTERVAL_MS + 50); // the last batched acks go out
  return !waitFor || receipts >= delivered;
}

serve(async (msg) => {
  switch (msg.cmd) {
    case 'pool': {
      // The pool: part files written by the sealers.
      const dir = msg.dir as string;
      frames.clear();
      recipientsOf.clear();
      for (const file of readdirSync(dir).filter((f) => f.startsWith('part-') && f.endsWith('.json'))) {
        const part = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { frames: Record<string, string[]> };
        for (const [i, list] of Object.entries(part.frames)) {
          frames.set(Number(i), list);
          const first = list[0];
          if (first) recipientsOf.set(Number(i), (JSON.parse(first) as { env: { to: string[] } }).env.to.length);
        }
      }
      return { senders: frames.size };
    }

    case 'connect': {
      await cryptoReady();
      mode = msg.mode as Mode;
      expectReceipts = msg.receipts !== false;
      cycleIds = typeof msg.cycle === 'boolean' ? msg.cycle : mode === 'baseline';
      resetCounters();
      const n = msg.n as number;
      const wsUrl = msg.wsUrl as string;
      const batch = (msg.batch as number | undefined) ?? 50;
      for (let i = 0; i < n; i++) identity(i); // key derivation outside the timed part
      const t0 = performance.now();
      clients = [];
      for (let start = 0; start < n; start += batch) {
        const group = await Promise.all(Array.from({ length: Math.min(batch, n - start) }, (_, k) => connectOne(wsUrl, start + k, 30_000)));
        clients.push(...group);
      }
      const loginMs = performance.now() - t0;
      return { clients: clients.length, loginMs, errors, errorSamples };
    }

    case 'closed': {
      // Closed loop: every client keeps `window` envelopes outstanding until its slice is sent or
      // `durationMs` has passed (then the envelopes in flight are waited for). The relay drops a
      // replayed envelope id, so against it each envelope goes once; the baseline and the ladder's
      // rungs do not care, so there the slice is sent round again until the time is up (the same
      // envelopes, in order), and their figures cover the same seconds.
      const cycle = cycleIds;
      resetCounters();
      const perClient = msg.perClient as number;
      const window = Math.min(msg.window as number, msg.perClient as number);
      const from = (msg.from as number | undefined) ?? 0;
      const durationMs = (msg.durationMs as number | undefined) ?? 10_000;
      const deadlineMs = durationMs + 30_000;
      for (const c of clients) assignSlice(c, from, perClient);
      const total = cycle ? Number.POSITIVE_INFINITY : clients.length * perClient;
      const latencies: number[] = [];
      const doneAt: number[] = [];
      let sent = 0;
      let stopped = false;
      let finish: () => void = () => {};
      const finished = new Promise<void>((resolve) => (finish = resolve));
      onDelivered = (client, t0, now) => {
        latencies.push(now - t0);
        doneAt.push(now);
        client.outstanding--;
        if (!stopped && (cycle || client.next < client.end)) {
          sendNext(client, now);
          sent++;
        }
        if ((stopped || sent === total) && delivered === sent) finish();
      };
      const cpu0 = process.cpuUsage();
      const start = performance.now();
      const stopTimer = setTimeout(() => {
        stopped = true;
        if (delivered === sent) finish();
      }, durationMs);
      for (const c of clients) {
        // (window ≤ slice: an id is never in flight twice)
        for (let k = 0; k < window && c.next < c.end; k++) {
          sendNext(c, start);
          sent++;
        }
      }
      const timedOut = await Promise.race([finished.then(() => false), sleep(deadlineMs).then(() => true)]);
      clearTimeout(stopTimer);
      const end = performance.now();
      const cpu = process.cpuUsage(cpu0);
      const receiptsSettled = await settleReceipts(10_000);
      // Throughput over the steady middle of the run (10th to 90th percentile of completions).
      const n = doneAt.length;
      const a = doneAt[Math.floor(n * 0.1)] ?? start;
      const b = doneAt[Math.max(0, Math.floor(n * 0.9) - 1)] ?? end;
      const steady = b > a ? (Math.floor(n * 0.9) - Math.floor(n * 0.1)) / ((b - a) / 1000) : Number.NaN;
      return {
        total: sent,
        stoppedByTime: stopped,
        delivered,
        accepted,
        receipts,
        receiptsSettled,
        errors,
        errorSamples,
        timedOut,
        elapsedMs: end - start,
        msgPerSec: steady,
        msgPerSecOverall: delivered / ((end - start) / 1000),
        latency: latencySummary(latencies),
        loadgenCpuPct: ((cpu.user + cpu.system) / 1000 / (end - start)) * 100,
      };
    }

    case 'open': {
      // Open loop: every client sends `rate` envelopes per second on a fixed schedule, whatever
      // the replies; latency is counted from the scheduled send time (no coordinated omission).
      resetCounters();
      const rate = msg.rate as number;
      const seconds = msg.seconds as number;
      const warmupSeconds = (msg.warmupSeconds as number | undefined) ?? 1;
      const from = (msg.from as number | undefined) ?? 0;
      const perClient = Math.round(rate * (seconds + warmupSeconds));
      const schedule: { at: number; client: Client }[] = [];
      const interval = 1000 / rate;
      for (const c of clients) {
        assignSlice(c, from, perClient);
        const phase = Math.random() * interval;
        for (let k = 0; k < perClient; k++) schedule.push({ at: phase + k * interval, client: c });
      }
      schedule.sort((x, y) => x.at - y.at);
      const sends = schedule.length;
      /** Deliveries expected: one per recipient of each envelope sent. */
      const total = schedule.reduce((n, item) => n + (recipientsOf.get(item.client.i) ?? 1), 0);
      const latencies: number[] = [];
      /** [ms since the measured part began, latency ms] of messages slower than 10 ms: do they come in bursts? */
      const slow: [number, number][] = [];
      let lateSum = 0;
      let lateMax = 0;
      const start = performance.now() + 20;
      const warmupEnd = start + warmupSeconds * 1000;
      let finish: () => void = () => {};
      const finished = new Promise<void>((resolve) => (finish = resolve));
      onDelivered = (client, t0, now) => {
        if (t0 >= warmupEnd) {
          latencies.push(now - t0);
          if (now - t0 > 10) slow.push([Math.round(t0 - warmupEnd), Math.round(now - t0)]);
        }
        client.outstanding--;
        if (delivered === total) finish();
      };
      const cpu0 = process.cpuUsage();
      let index = 0;
      await new Promise<void>((resolve) => {
        const tick = () => {
          const now = performance.now();
          while (index < sends && start + schedule[index]!.at <= now) {
            const item = schedule[index++]!;
            const planned = start + item.at;
            lateSum += now - planned;
            lateMax = Math.max(lateMax, now - planned);
            sendNext(item.client, planned);
          }
          if (index >= sends) return resolve();
          const wait = start + schedule[index]!.at - performance.now();
          setTimeout(tick, Math.max(0, wait));
        };
        tick();
      });
      const timedOut = await Promise.race([finished.then(() => false), sleep(10_000).then(() => true)]);
      const end = performance.now();
      const cpu = process.cpuUsage(cpu0);
      await settleReceipts(10_000);
      return {
        total,
        sends,
        delivered,
        accepted,
        receipts,
        errors,
        errorSamples,
        timedOut,
        offeredPerSec: clients.length * rate,
        elapsedMs: end - start,
        sendLagMeanMs: lateSum / (sends || 1),
        sendLagMaxMs: lateMax,
        slow: slow.slice(0, 50),
        latency: latencySummary(latencies),
        loadgenCpuPct: ((cpu.user + cpu.system) / 1000 / (end - start)) * 100,
      };
    }

    case 'disconnect': {
      const closing = clients.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.ws.readyState === WebSocket.CLOSED) return resolve();
            const timer = setTimeout(() => {
              c.ws.terminate();
              resolve();
            }, 2000);
            c.ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            c.ws.close(1000, 'bench done');
          }),
      );
      await Promise.all(closing);
      for (const c of clients) if (c.ackTimer) clearTimeout(c.ackTimer);
      clients = [];
      resetCounters();
      return { closed: closing.length };
    }

    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
});
