/**
 * `npm run bench`: the relay against a bare ws relay (with a cost ladder between
 * them), a workshop of 300 in groups of 30, memory per connection, client crypto
 * cost and the browser, in one run. See docs/performance.md.
 *
 *   npm run bench                      full run (about 5.5 minutes), with the cost ladder at N = 100
 *   npm run bench -- --quick           shorter runs, fewer samples
 *   npm run bench -- --json out.json   also write the figures to out.json
 *   flags: --skip-relay --skip-workshop --skip-memory --skip-crypto --skip-browser --skip-pages --skip-ladder
 *          --sizes 10,100,1000  --ladder-sizes 10,100,1000  --reps N
 *          --profile  --fresh-pool  --skip-baseline (experiments)
 *
 * Whatever a flag skips is reported as not measured: "—" in the tables, null in the
 * JSON, "not measured" against a target. Nothing is filled in from another figure.
 */
import { parseArgs } from 'node:util';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { busyCores, GROUP_SIZE, LADDER_LABELS, LADDER_RUNGS, machineCpu, median, spawnTs, sleep, type Child, type LadderRung, type MemorySample } from './common.ts';
import { runCryptoBench, type CryptoFigures } from './crypto-bench.ts';
import { runBrowserBench, type BrowserFigures } from './browser-bench.ts';
import { measureClassOnWire, measureCrowd, measureOnePage, measurePageWeight, type ClassFigures, type CrowdFigures, type PageWeight } from './page-bench.ts';
import type { AppLimits } from '../server/app.ts';
import { UNLIMITED } from '../server/relay.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    'skip-relay': { type: 'boolean', default: false },
    'skip-memory': { type: 'boolean', default: false },
    'skip-crypto': { type: 'boolean', default: false },
    'skip-browser': { type: 'boolean', default: false },
    'skip-pages': { type: 'boolean', default: false },
    'skip-workshop': { type: 'boolean', default: false },
    sizes: { type: 'string' },
    reps: { type: 'string' },
    profile: { type: 'boolean', default: false },
    'fresh-pool': { type: 'boolean', default: false },
    'skip-baseline': { type: 'boolean', default: false },
    'ladder-sizes': { type: 'string' },
    'skip-ladder': { type: 'boolean', default: false },
  },
  strict: true,
});

const quick = flags.quick;
const sizes = (flags.sizes ?? '10,100,1000').split(',').map((s) => Number(s.trim()));
if (sizes.some((n) => !Number.isInteger(n) || n < 10 || n % 10 !== 0 || n > 1000)) throw new Error('--sizes: multiples of 10 from 10 to 1000');
if (flags.reps !== undefined && !(Number.isInteger(Number(flags.reps)) && Number(flags.reps) >= 1)) throw new Error('--reps: a whole number, at least 1');
/**
 * The cost ladder (bench/ladder-relay.ts) runs at these N (default: 100, the target's), as many times
 * as the relay; --skip-ladder leaves it out.
 */
const ladderSizes = flags['skip-ladder']
  ? []
  : flags['ladder-sizes'] !== undefined
    ? flags['ladder-sizes'].split(',').map((s) => Number(s.trim()))
    : sizes.filter((n) => n === 100);
if (ladderSizes.some((n) => !sizes.includes(n))) throw new Error('--ladder-sizes: each must be one of --sizes');
/** --skip-baseline: the bare ws server is not run at all (neither throughput nor memory). */
const skipBaseline = flags['skip-baseline'];

/**
 * Every rate, byte, registration, login and queue limit out of reach, and the caps on connections
 * (before the upgrade, not logged in yet, logged in) per address: the load generator sends far more
 * than a person per connection, and connects and registers up to 1,000 identities from 127.0.0.1 at
 * once. (The cap on all connections, below the open-file limit, stays: the check below makes sure
 * the limit is high enough.)
 */
const BENCH_LIMITS: Partial<AppLimits> = {
  ...UNLIMITED,
  pendingLoginsPerAddress: 100_000,
  pendingLoginsTotal: 100_000,
  rawConnectionsPerAddress: 100_000,
  rawConnectionsTotal: 100_000,
  sessionsPerAddress: 100_000,
};

const CONFIG = {
  /** Closed loop: at most this many envelopes per run (split over the N clients), for at most closedSeconds. */
  closedTotal: quick ? 6_000 : 16_000,
  closedSeconds: quick ? 3 : 6,
  /** Closed loop: outstanding envelopes per client. */
  window: (n: number) => Math.max(1, Math.ceil(200 / n)),
  /** Open loop: per-client rate (msg/s) and measured seconds (after one warm-up second). */
  openRate: (n: number) => (n >= 1000 ? 1 : 10),
  openSeconds: quick ? 3 : 6,
  openWarmup: 1,
  /** Runs of each server per N; the figures reported are the medians (N = 100, the target, gets three). */
  reps: (n: number) => Number(flags.reps ?? (quick ? 1 : n === 100 ? 3 : 1)),
  memoryConnections: 1000,
  /**
   * The workshop: 300 clients in groups of 30 (GROUP_SIZE), each sending one message to its group
   * every 3 s on a fixed schedule (100 messages, 2,900 deliveries a second), for `seconds` after a
   * warm-up; the relay as in the other runs (rate limit raised, on-disk store).
   */
  workshop: { clients: 300, rate: 1 / 3, seconds: quick ? 6 : 12, warmup: 1 },
  crypto: quick ? { oneToOne: 150, group: 20 } : { oneToOne: 500, group: 60 },
  browserMessages: quick ? 20 : 40,
};

// ---------------------------------------------------------------------------
// Environment checks

function openFilesLimit(): number | null {
  try {
    const match = /Max open files\s+(\d+|unlimited)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!match) return null;
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    return null;
  }
}

const nofile = openFilesLimit();
const needFds = Math.max(...sizes, CONFIG.memoryConnections) + 200;
if (nofile !== null && nofile < needFds) {
  console.error(`ulimit -n is ${nofile}; 1,000 connections need about ${needFds} descriptors per process. Run \`ulimit -n 4096\` first.`);
  process.exit(1);
}

const children = new Set<Child>();
function child(file: string, args: string[] = [], nodeFlags: string[] = []): Child {
  const c = spawnTs(file, args, nodeFlags);
  children.add(c);
  void c.exited.then(() => children.delete(c));
  return c;
}
function killAll(): void {
  for (const c of children) c.kill();
}
process.on('exit', killAll);
process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});

const log = (line: string) => process.stdout.write(`${line}\n`);

// ---------------------------------------------------------------------------
// The envelope pool (sealed once, cached in the temp dir: identities are derived from fixed seeds)

function openCount(n: number): number {
  return Math.round(CONFIG.openRate(n) * (CONFIG.openSeconds + CONFIG.openWarmup));
}
function closedPerClient(n: number): number {
  return Math.ceil(CONFIG.closedTotal / n);
}

async function preparePool(): Promise<string> {
  const maxN = Math.max(...sizes);
  const counts: number[] = [];
  for (let i = 0; i < maxN; i++) {
    let need = 0;
    for (const n of sizes) if (i < n) need = Math.max(need, openCount(n) + closedPerClient(n));
    counts.push(need);
  }
  return sealPool('dm', counts);
}

/**
 * Seal `counts[i]` envelopes from each bench user i (`dm`: 1:1, `group`: to the user's group of 30)
 * with one sealer process per core, or reuse the pool cached in the temp dir under the same layout.
 */
async function sealPool(kind: 'dm' | 'group', counts: number[]): Promise<string> {
  // (The 1:1 pool's cache key is its layout alone, as it was before group pools existed.)
  const spec = JSON.stringify(kind === 'dm' ? { v: PROTOCOL_VERSION, counts } : { v: PROTOCOL_VERSION, kind, counts });
  const dir = join(tmpdir(), 'backdoor-lab-bench-pool', createHash('sha256').update(spec).digest('hex').slice(0, 16));
  const total = counts.reduce((a, b) => a + b, 0);
  const what = kind === 'dm' ? 'envelope pool' : 'group envelope pool';
  if (!flags['fresh-pool'] && existsSync(join(dir, 'done'))) {
    log(`${what}: ${total} sealed envelopes reused from ${dir}`);
    return dir;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const workers = Math.max(1, Math.min(cpus().length, 4));
  const parts: [number, number][][] = Array.from({ length: workers }, () => []);
  const load = new Array<number>(workers).fill(0);
  // Largest first onto the least-loaded sealer.
  const order = counts.map((c, i) => [i, c] as [number, number]).sort((a, b) => b[1] - a[1]);
  for (const item of order) {
    const w = load.indexOf(Math.min(...load));
    parts[w]!.push(item);
    load[w]! += item[1];
  }
  log(`${what}: sealing ${total} envelopes with sealEnvelope on ${workers} processes (cached for later runs)...`);
  const t0 = performance.now();
  await Promise.all(
    parts.map(async (senders, w) => {
      const sealer = child('sealer.ts');
      try {
        await sealer.request({ cmd: 'seal', senders, kind, file: join(dir, `part-${w}.json`) }, 600_000);
      } finally {
        sealer.proc.disconnect();
        await sealer.exited;
      }
    }),
  );
  writeFileSync(join(dir, 'done'), spec);
  log(`${what}: sealed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

// ---------------------------------------------------------------------------
// Relay runs

/**
 * The servers a run can measure: the relay, the bare baseline and the cost ladder's
 * rungs (bench/ladder-relay.ts), which do more and more of the relay's work.
 */
type ServerKind = 'relay' | 'baseline' | LadderRung;

interface Latency {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  samples: number;
}
interface ClosedResult {
  total: number;
  delivered: number;
  accepted: number;
  receipts: number;
  errors: number;
  errorSamples: string[];
  timedOut: boolean;
  elapsedMs: number;
  msgPerSec: number;
  msgPerSecOverall: number;
  latency: Latency;
  loadgenCpuPct: number;
}
/** The server's event-loop delay during the open loop (ms). */
interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
  gc: { count: number; totalMs: number; maxMs: number };
}
interface OpenResult {
  serverLoopDelay?: LoopDelay;
  /** Deliveries expected (one per recipient of each envelope sent), and envelopes sent. */
  total: number;
  sends: number;
  delivered: number;
  errors: number;
  errorSamples: string[];
  timedOut: boolean;
  offeredPerSec: number;
  sendLagMeanMs: number;
  sendLagMaxMs: number;
  slow?: [number, number][];
  latency: Latency;
  loadgenCpuPct: number;
}
interface RunResult {
  kind: ServerKind;
  n: number;
  loginMs: number;
  open: OpenResult;
  closed: ClosedResult;
  serverCpuPct: number;
  /** Relay (or baseline) CPU time per delivered message, µs: a figure other load on the machine barely moves. */
  serverCpuUsPerMsg: number;
  /** Cores busy with anything but the server under test and the load generator during the closed loop. */
  otherCores: number;
  /** The server after the run: connections, queue depth and (relay) SQLite file sizes. */
  stats: ServerStats;
}

interface ServerStats {
  online: number;
  connections: number;
  queueDepth: number;
  walBytes?: { relay: number; regulator: number };
  dbBytes?: { relay: number; regulator: number };
}

interface Started {
  url: string;
  wsUrl: string;
  pid: number;
}

let profileCount = 0;
function startServer(kind: ServerKind): Child {
  const nodeFlags = ['--expose-gc'];
  // One folder per relay process: Node writes a profile per thread (the tsx loader has its own);
  // the main thread's is the largest file.
  if (flags.profile && kind === 'relay') nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${join(tmpdir(), 'backdoor-lab-bench-profiles', `relay-${++profileCount}`)}`);
  switch (kind) {
    case 'relay':
      return child('relay-process.ts', [JSON.stringify(BENCH_LIMITS)], nodeFlags);
    case 'baseline':
      return child('baseline-relay.ts', [], nodeFlags);
    default:
      return child('ladder-relay.ts', [kind], nodeFlags);
  }
}

async function stopServer(server: Child): Promise<void> {
  try {
    await server.request({ cmd: 'stop' }, 15_000);
  } catch {
    server.kill();
  }
  await Promise.race([server.exited, sleep(5000)]);
  server.kill();
}

/** End a run's own load generator and server. */
async function stopPair(loadgen: Child, server: Child): Promise<void> {
  loadgen.proc.disconnect();
  await stopServer(server);
  await Promise.race([loadgen.exited, sleep(3000)]);
  loadgen.kill();
}

async function cpuOf(server: Child): Promise<{ cpu: NodeJS.CpuUsage; at: number }> {
  return server.request({ cmd: 'cpu' });
}

async function relayRun(loadgen: Child, kind: ServerKind, n: number): Promise<RunResult> {
  const server = startServer(kind);
  try {
    const started = await server.request<Started>({ cmd: 'start' }, 60_000);
    const login = await loadgen.request<{ loginMs: number; errors: number; errorSamples: string[] }>(
      { cmd: 'connect', mode: kind === 'baseline' ? 'baseline' : 'relay', receipts: kind !== 'accept-only', cycle: kind !== 'relay', wsUrl: started.wsUrl, n },
      120_000,
    );
    await sleep(300); // presence frames settle
    await server.request({ cmd: 'loop-reset' });
    const open = await loadgen.request<OpenResult>({ cmd: 'open', rate: CONFIG.openRate(n), seconds: CONFIG.openSeconds, warmupSeconds: CONFIG.openWarmup, from: 0 }, 120_000);
    open.serverLoopDelay = await server.request<LoopDelay>({ cmd: 'loop' });
    await sleep(200);
    const c0 = await cpuOf(server);
    const m0 = machineCpu();
    const closed = await loadgen.request<ClosedResult>(
      { cmd: 'closed', perClient: closedPerClient(n), window: CONFIG.window(n), from: openCount(n), durationMs: CONFIG.closedSeconds * 1000 },
      120_000,
    );
    const m1 = machineCpu();
    const c1 = await cpuOf(server);
    const cpuMs = (c1.cpu.user - c0.cpu.user + c1.cpu.system - c0.cpu.system) / 1000;
    // CPU over the whole closed-loop call (it includes the receipts settling at the end).
    const serverCpuPct = (cpuMs / (c1.at - c0.at)) * 100;
    const otherCores = busyCores(m0, m1, cpus().length) - serverCpuPct / 100 - closed.loadgenCpuPct / 100;
    const stats = await server.request<ServerStats>({ cmd: 'stats' });
    await loadgen.request({ cmd: 'disconnect' }, 30_000);
    if (stats.queueDepth) log(`  ! ${kind} N=${n}: ${stats.queueDepth} items still queued in the relay after the run`);
    for (const r of [open, closed]) {
      if (r.errors) log(`  ! ${kind} N=${n}: ${r.errors} error frames, e.g. ${r.errorSamples[0] ?? ''}`);
      if (r.timedOut) log(`  ! ${kind} N=${n}: run timed out with ${r.delivered}/${r.total} delivered`);
    }
    return { kind, n, loginMs: login.loginMs, open, closed, serverCpuPct, serverCpuUsPerMsg: (cpuMs * 1000) / closed.delivered, otherCores, stats };
  } finally {
    await stopServer(server);
  }
}

/** What the tables report for one server at one N: each figure the median over the runs. */
interface Summary {
  runs: number;
  msgPerSec: number;
  cpuUsPerMsg: number;
  cpuPct: number;
  p50: number;
  p99: number;
  otherCores: number;
}

function summarize(runs: RunResult[]): Summary {
  const med = (f: (r: RunResult) => number) => median(runs.map(f));
  return {
    runs: runs.length,
    msgPerSec: med((r) => r.closed.msgPerSec),
    cpuUsPerMsg: med((r) => r.serverCpuUsPerMsg),
    cpuPct: med((r) => r.serverCpuPct),
    p50: med((r) => r.open.latency.p50),
    p99: med((r) => r.open.latency.p99),
    otherCores: Math.max(...runs.map((r) => r.otherCores)),
  };
}

interface SizeFigures {
  n: number;
  openRatePerClient: number;
  /** null with --skip-baseline. */
  baseline: Summary | null;
  relay: Summary;
  /** relay msg/s ÷ baseline msg/s; null with --skip-baseline. */
  ratio: number | null;
  /** The cost ladder's servers (bench/ladder-relay.ts); null where it was not run (--ladder-sizes, --skip-ladder). */
  ladder: Record<LadderRung, Summary> | null;
  runs: Record<ServerKind, RunResult[]>;
}

async function relayBench(): Promise<SizeFigures[]> {
  const poolDir = await preparePool();
  const loadgen = child('loadgen.ts');
  try {
    await loadgen.request({ cmd: 'pool', dir: poolDir }, 120_000);
    const out: SizeFigures[] = [];
    for (const n of sizes) {
      const runs: Record<ServerKind, RunResult[]> = { relay: [], baseline: [], 'accept-only': [], 'protocol-raw': [], protocol: [], records: [] };
      const kinds: ServerKind[] = [...(skipBaseline ? [] : (['baseline'] as const)), ...(ladderSizes.includes(n) ? LADDER_RUNGS : []), 'relay'];
      for (let rep = 0; rep < CONFIG.reps(n); rep++) {
        for (const kind of kinds) {
          const r = await relayRun(loadgen, kind, n);
          runs[kind].push(r);
          log(
            `  ${kind.padEnd(12)} N=${String(n).padStart(4)} rep ${rep + 1}: ${fmt(r.closed.msgPerSec, 0)} msg/s (cpu ${fmt(r.serverCpuPct, 0)}% = ${fmt(r.serverCpuUsPerMsg, 0)} µs/msg, loadgen ${fmt(r.closed.loadgenCpuPct, 0)}%, other load ${fmt(r.otherCores, 2)} cores), ` +
              `open loop ${r.open.offeredPerSec}/s p50 ${fmt(r.open.latency.p50, 2)} ms p99 ${fmt(r.open.latency.p99, 2)} ms ` +
              `(server loop delay p99 ${fmt(r.open.serverLoopDelay?.p99, 1)} max ${fmt(r.open.serverLoopDelay?.max, 1)} ms, gc max ${fmt(r.open.serverLoopDelay?.gc.maxMs, 1)} ms)`,
          );
        }
      }
      const relay = summarize(runs.relay);
      const baseline = runs.baseline.length ? summarize(runs.baseline) : null; // --skip-baseline: not measured
      const ratio = baseline ? relay.msgPerSec / baseline.msgPerSec : null;
      const ladder = ladderSizes.includes(n) ? (Object.fromEntries(LADDER_RUNGS.map((r) => [r, summarize(runs[r])])) as Record<LadderRung, Summary>) : null;
      out.push({ n, openRatePerClient: CONFIG.openRate(n), baseline, relay, ratio: ratio !== null && Number.isFinite(ratio) ? ratio : null, ladder, runs });
    }
    return out;
  } finally {
    loadgen.proc.disconnect();
    await Promise.race([loadgen.exited, sleep(3000)]);
    loadgen.kill();
  }
}

// ---------------------------------------------------------------------------
// The workshop: group fan-out at a classroom's pace

interface WorkshopFigures {
  clients: number;
  groupSize: number;
  ratePerClient: number;
  seconds: number;
  offeredMsgsPerSec: number;
  offeredDeliveriesPerSec: number;
  sends: number;
  expected: number;
  delivered: number;
  errors: number;
  errorSamples: string[];
  timedOut: boolean;
  /** Per delivery: from the scheduled send to the envelope frame at that recipient, after the warm-up. */
  latency: Latency;
  sendLagMaxMs: number;
  /** The relay's CPU over the whole open loop (warm-up and the receipts settling included). */
  relayCpuPct: number;
  relayCpuUsPerDelivery: number;
  loopDelay: LoopDelay;
  loadgenCpuPct: number;
  queueDepthAfter: number;
  loginMs: number;
}

async function workshopBench(): Promise<WorkshopFigures> {
  const W = CONFIG.workshop;
  const perClient = Math.round(W.rate * (W.seconds + W.warmup));
  const poolDir = await sealPool('group', new Array<number>(W.clients).fill(perClient));
  const server = startServer('relay');
  const loadgen = child('loadgen.ts');
  try {
    const started = await server.request<Started>({ cmd: 'start' }, 60_000);
    await loadgen.request({ cmd: 'pool', dir: poolDir }, 120_000);
    const login = await loadgen.request<{ loginMs: number }>({ cmd: 'connect', mode: 'relay', wsUrl: started.wsUrl, n: W.clients }, 120_000);
    await sleep(300); // presence frames settle
    await server.request({ cmd: 'loop-reset' });
    const c0 = await cpuOf(server);
    const open = await loadgen.request<OpenResult>({ cmd: 'open', rate: W.rate, seconds: W.seconds, warmupSeconds: W.warmup, from: 0 }, 180_000);
    const c1 = await cpuOf(server);
    const loopDelay = await server.request<LoopDelay>({ cmd: 'loop' });
    const stats = await server.request<ServerStats>({ cmd: 'stats' });
    await loadgen.request({ cmd: 'disconnect' }, 30_000);
    const cpuMs = (c1.cpu.user - c0.cpu.user + c1.cpu.system - c0.cpu.system) / 1000;
    if (open.errors) log(`  ! workshop: ${open.errors} error frames, e.g. ${open.errorSamples[0] ?? ''}`);
    if (open.timedOut) log(`  ! workshop: timed out with ${open.delivered}/${open.total} delivered`);
    return {
      clients: W.clients,
      groupSize: GROUP_SIZE,
      ratePerClient: W.rate,
      seconds: W.seconds,
      offeredMsgsPerSec: W.clients * W.rate,
      offeredDeliveriesPerSec: W.clients * W.rate * (GROUP_SIZE - 1),
      sends: open.sends,
      expected: open.total,
      delivered: open.delivered,
      errors: open.errors,
      errorSamples: open.errorSamples,
      timedOut: open.timedOut,
      latency: open.latency,
      sendLagMaxMs: open.sendLagMaxMs,
      relayCpuPct: (cpuMs / (c1.at - c0.at)) * 100,
      relayCpuUsPerDelivery: (cpuMs * 1000) / open.delivered,
      loopDelay,
      loadgenCpuPct: open.loadgenCpuPct,
      queueDepthAfter: stats.queueDepth,
      loginMs: login.loginMs,
    };
  } finally {
    await stopPair(loadgen, server);
  }
}

// ---------------------------------------------------------------------------
// Memory per idle authenticated connection

interface MemoryFigures {
  connections: number;
  before: MemorySample;
  after: MemorySample;
  bytesPerConnection: number;
  heapPerConnection: number;
  online: number;
}

async function memoryBench(kind: ServerKind): Promise<MemoryFigures> {
  const connections = CONFIG.memoryConnections;
  const server = startServer(kind);
  const loadgen = child('loadgen.ts');
  try {
    const started = await server.request<Started>({ cmd: 'start' }, 60_000);
    await sleep(500);
    const before = await server.request<MemorySample>({ cmd: 'memory' });
    await loadgen.request({ cmd: 'connect', mode: kind === 'baseline' ? 'baseline' : 'relay', wsUrl: started.wsUrl, n: connections }, 180_000);
    await sleep(1500); // presence batches flushed, sockets idle
    const stats = await server.request<{ online: number }>({ cmd: 'stats' });
    const after = await server.request<MemorySample>({ cmd: 'memory' });
    await loadgen.request({ cmd: 'disconnect' }, 30_000);
    const rss = (m: MemorySample) => m.vmRss ?? m.rss;
    return {
      connections,
      before,
      after,
      bytesPerConnection: (rss(after) - rss(before)) / connections,
      heapPerConnection: (after.heapUsed - before.heapUsed) / connections,
      online: stats.online,
    };
  } finally {
    await stopPair(loadgen, server);
  }
}

// ---------------------------------------------------------------------------
// Output

/** Shown for a figure that was not measured (skipped by a flag, or no samples). */
const NOT_MEASURED = '—';

/** A measured number, or null: for the JSON, where anything not measured is null. */
const measured = (x: number | undefined | null): number | null => (x === undefined || x === null || !Number.isFinite(x) ? null : x);

function fmt(x: number | undefined | null, digits = 1): string {
  const v = measured(x);
  if (v === null) return NOT_MEASURED;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** fmt with a unit, or "—" alone when not measured. */
function fmtUnit(x: number | undefined | null, digits: number, unit: string): string {
  return measured(x) === null ? NOT_MEASURED : `${fmt(x, digits)} ${unit}`;
}

function table(title: string, head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  log(`\n${title}`);
  log(line(head));
  log(`|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const r of rows) log(line(r));
}

/** A target's verdict: only a measured figure can be "ok" or "MISSED". */
function targetRow(figure: string, target: string, value: number | undefined | null, shown: (v: number) => string, ok: (v: number) => boolean): string[] {
  const v = measured(value);
  if (v === null) return [figure, target, NOT_MEASURED, 'not measured'];
  return [figure, target, shown(v), ok(v) ? 'ok' : 'MISSED'];
}

async function main(): Promise<void> {
  const started = performance.now();
  log(`Backdoor Lab bench — ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), Node ${process.version}, ulimit -n ${nofile ?? '?'}${quick ? ', --quick' : ''}`);
  log(`relay under test: startApp with an on-disk SQLite data dir (temp), rate, byte, registration and queue limits raised for the bench (${JSON.stringify(BENCH_LIMITS)})`);

  let cryptoFigures: CryptoFigures | null = null;
  if (!flags['skip-crypto']) {
    log('\n[crypto] libsodium-wrappers in Node, per message...');
    cryptoFigures = await runCryptoBench(CONFIG.crypto);
  }

  let relayFigures: SizeFigures[] | null = null;
  if (!flags['skip-relay']) {
    log(`\n[relay] ${skipBaseline ? 'relay only (--skip-baseline: no ratio)' : 'baseline and relay'}, closed loop (throughput) and open loop (latency)...`);
    relayFigures = await relayBench();
  }

  let workshop: WorkshopFigures | null = null;
  if (!flags['skip-workshop']) {
    const W = CONFIG.workshop;
    log(`\n[workshop] ${W.clients} clients in groups of ${GROUP_SIZE}, each sending one message to its group every ${fmt(1 / W.rate, 0)} s...`);
    workshop = await workshopBench();
    log(
      `  ${workshop.delivered}/${workshop.expected} deliveries (${workshop.sends} messages), p50 ${fmt(workshop.latency.p50, 2)} ms, ` +
        `p99 ${fmt(workshop.latency.p99, 2)} ms, max ${fmt(workshop.latency.max, 1)} ms; relay cpu ${fmt(workshop.relayCpuPct, 0)}% ` +
        `(${fmt(workshop.relayCpuUsPerDelivery, 0)} µs per delivery), event-loop delay max ${fmt(workshop.loopDelay.max, 1)} ms`,
    );
  }

  let memory: { relay: MemoryFigures; baseline: MemoryFigures | null } | null = null;
  if (!flags['skip-memory']) {
    log(`\n[memory] ${CONFIG.memoryConnections} idle logged-in connections...`);
    const relay = await memoryBench('relay');
    const baseline = skipBaseline ? null : await memoryBench('baseline');
    memory = { relay, baseline };
    log(
      `  relay ${fmt(relay.bytesPerConnection / 1024)} KB/connection (online ${relay.online}), ` +
        `baseline ${baseline ? `${fmt(baseline.bytesPerConnection / 1024)} KB/connection` : 'skipped'}`,
    );
  }

  let browser: BrowserFigures | null = null;
  if (!flags['skip-browser']) {
    log('\n[browser] Chromium, two tabs...');
    browser = await runBrowserBench({ messages: CONFIG.browserMessages, startRelay: () => startServerForBrowser() });
  }

  let pages: { weight: PageWeight[]; classroom: ClassFigures; onePageMs: number[]; crowd: CrowdFigures } | null = null;
  if (!flags['skip-pages']) {
    log('\n[pages] Chromium: bytes on the wire, first and repeat load of each page; a class of 30 loading the chat page at once...');
    const server = await startServerForBrowser();
    try {
      const weight = await measurePageWeight(server.url);
      for (const w of weight)
        log(`  ${w.name}: first ${fmt(w.first.bytes / 1024, 1)} KB (${w.first.requests} requests), repeat ${fmt(w.repeat.bytes / 1024, 1)} KB (${w.repeat.fromCache} from cache)`);
      const classroom = await measureClassOnWire(server.url, 30, 3);
      log(
        `  30 devices at once (HTTP + login): all logged in after ${classroom.allReadyMs.map((v) => `${fmt(v, 0)} ms`).join(', ')}; ` +
          `${fmt(classroom.bytesPerClient / 1024, 1)} KB each${classroom.failures.length ? `; failed: ${classroom.failures.join('; ')}` : ''}`,
      );
      const onePageMs = await measureOnePage(server.url, 5);
      log(`  one chat page alone in Chromium: ready after ${onePageMs.map((v) => `${fmt(v, 0)} ms`).join(', ')}`);
      const crowd = await measureCrowd(server.url, 30, 1);
      log(
        `  30 Chromium pages at once on this machine (stress): all ready after ${crowd.allReadyMs.map((v) => `${fmt(v, 0)} ms`).join(', ')}, ` +
          `Chromium CPU ${crowd.chromiumCpuS.map((v) => `${fmt(v, 1)} s`).join(', ')}${crowd.failures.length ? `; failed: ${crowd.failures.join('; ')}` : ''}`,
      );
      pages = { weight, classroom, onePageMs, crowd };
    } finally {
      await server.stop();
    }
  }

  // ---- Tables
  if (relayFigures) {
    table(
      'Relay vs bare ws baseline — closed loop: envelopes delivered per second (steady part); open loop: latency, send → recipient',
      ['N clients', 'baseline msg/s', 'relay msg/s', 'ratio', 'baseline cpu/msg', 'relay cpu/msg', 'open loop', 'baseline p50 / p99', 'relay p50 / p99'],
      relayFigures.map((s) => [
        String(s.n),
        fmt(s.baseline?.msgPerSec, 0),
        fmt(s.relay.msgPerSec, 0),
        fmt(s.ratio, 3),
        fmtUnit(s.baseline?.cpuUsPerMsg, 0, 'µs'),
        fmtUnit(s.relay.cpuUsPerMsg, 0, 'µs'),
        `${s.n} × ${s.openRatePerClient}/s`,
        s.baseline ? `${fmt(s.baseline.p50, 2)} / ${fmt(s.baseline.p99, 2)} ms` : NOT_MEASURED,
        `${fmt(s.relay.p50, 2)} / ${fmt(s.relay.p99, 2)} ms`,
      ]),
    );
    if (skipBaseline) log('  (--skip-baseline: the baseline was not run, so there is no ratio)');
    if (relayFigures.some((s) => s.ladder)) {
      const rung = (s: SizeFigures, name: string, x: Summary | null | undefined): string[] => [
        String(s.n),
        name,
        fmt(x?.msgPerSec, 0),
        s.baseline && x ? fmt(x.msgPerSec / s.baseline.msgPerSec, 3) : NOT_MEASURED,
        fmtUnit(x?.cpuUsPerMsg, 0, 'µs'),
        x ? `${fmt(x.cpuPct, 0)}%` : NOT_MEASURED,
      ];
      table(
        'Cost ladder — the same load against servers doing more and more of the relay’s work (closed loop)',
        ['N clients', 'server', 'msg/s', '÷ baseline', 'cpu/msg', 'server cpu'],
        relayFigures
          .filter((s) => s.ladder)
          .flatMap((s) => [
            rung(s, 'baseline: JSON.parse, forward', s.baseline),
            ...LADDER_RUNGS.map((r) => rung(s, LADDER_LABELS[r], s.ladder?.[r])),
            rung(s, 'relay: + offline queue, receipts stored', s.relay),
          ]),
      );
    }
    const disturbed = relayFigures.flatMap((s) => Object.values(s.runs).flat()).filter((r) => r.otherCores > 0.3);
    if (disturbed.length) {
      log(
        `  ! other processes used more than 0.3 of a core during ${disturbed.map((r) => `${r.kind} N=${r.n}`).join(', ')}: ` +
          'msg/s and latency there are low; the cpu/msg figures are barely affected.',
      );
    }
  }
  if (workshop) {
    const w = workshop;
    table(
      `Workshop: ${w.clients} clients in ${w.clients / w.groupSize} groups of ${w.groupSize}, one message each every ${fmt(1 / w.ratePerClient, 0)} s to the group (open loop, ${w.seconds} s measured)`,
      ['offered', 'delivered', 'latency p50 / p90 / p99 / max', 'relay cpu', 'relay event-loop delay max'],
      [
        [
          `${fmt(w.offeredMsgsPerSec, 0)} msg/s = ${fmt(w.offeredDeliveriesPerSec, 0)} deliveries/s`,
          `${w.delivered} / ${w.expected}`,
          `${fmt(w.latency.p50, 2)} / ${fmt(w.latency.p90, 2)} / ${fmt(w.latency.p99, 2)} / ${fmt(w.latency.max, 1)} ms`,
          `${fmt(w.relayCpuPct, 0)}% (${fmt(w.relayCpuUsPerDelivery, 0)} µs/delivery)`,
          `${fmt(w.loopDelay.max, 1)} ms`,
        ],
      ],
    );
  }
  if (memory) {
    const rss = (m: MemorySample) => m.vmRss ?? m.rss;
    const row = (name: string, m: MemoryFigures | null) =>
      m
        ? [
            name,
            fmtUnit(rss(m.before) / 1024 / 1024, 1, 'MB'),
            fmtUnit(rss(m.after) / 1024 / 1024, 1, 'MB'),
            fmtUnit(m.bytesPerConnection / 1024, 1, 'KB'),
            fmtUnit(m.heapPerConnection / 1024, 1, 'KB'),
          ]
        : [name, NOT_MEASURED, NOT_MEASURED, NOT_MEASURED, NOT_MEASURED];
    table(
      `Memory: RSS of the server process, idle, before and with ${CONFIG.memoryConnections} logged-in connections (after GC)`,
      ['server', 'before', 'after', 'per connection', 'JS heap per connection'],
      [row('relay', memory.relay), row('baseline', memory.baseline)],
    );
  }
  if (cryptoFigures) {
    table(
      'Client crypto, libsodium-wrappers in Node (µs per message)',
      ['message', 'seal + sign', 'verify + open', 'envelope JSON bytes'],
      [
        ['1:1', fmt(cryptoFigures.oneToOne.sealUs, 0), fmt(cryptoFigures.oneToOne.openUs, 0), String(cryptoFigures.oneToOne.bytes)],
        ['group of 30 (29 recipients)', fmt(cryptoFigures.group30.sealUs, 0), fmt(cryptoFigures.group30.openUs, 0), String(cryptoFigures.group30.bytes)],
      ],
    );
  }
  if (browser) {
    table(
      `Browser (Chromium ${browser.chromium})`,
      ['figure', 'value'],
      [
        ['ready: navigation start → keys made, logged in (per tab)', browser.readyMsPerTab.map((t) => `${t.name} ${fmt(t.readyMs, 0)} ms`).join(', ')],
        [
          `tab to tab: Enter → text in the other tab (${browser.samples} messages)`,
          `median ${fmt(browser.tabToTabMedianMs, 1)} ms, p95 ${fmt(browser.tabToTabP95Ms, 1)} ms, max ${fmt(browser.tabToTabMaxMs, 1)} ms`,
        ],
      ],
    );
  }

  if (pages) {
    table(
      'Page weight: bytes on the wire (Chromium, a fresh profile; the repeat is the page opened again in that profile)',
      ['page', 'first load', 'requests', 'repeat load', 'from cache'],
      pages.weight.map((w) => [w.name, `${fmt(w.first.bytes / 1024, 1)} KB`, String(w.first.requests), `${fmt(w.repeat.bytes / 1024, 1)} KB`, String(w.repeat.fromCache)]),
    );
    const c = pages.classroom;
    const crowd = pages.crowd;
    table(
      'A class loading the chat page at once',
      ['what', 'runs', 'figure'],
      [
        [
          `${c.clients} devices, each its own connections: page + assets (brotli), then a login with new keys`,
          String(c.runs),
          c.failures.length
            ? `failed: ${c.failures.join('; ')}`
            : `all logged in: median ${fmt(c.medianAllReadyMs, 0)} ms (runs ${c.allReadyMs.map((v) => fmt(v, 0)).join(', ')}); all bytes in by ${c.allLoadedMs.map((v) => fmt(v, 0)).join(', ')} ms; median device ${c.medianClientMs.map((v) => fmt(v, 0)).join(', ')} ms; ${fmt(c.bytesPerClient / 1024, 1)} KB each`,
        ],
        [
          'one chat page alone, fresh Chromium context: navigation to ready',
          String(pages.onePageMs.length),
          `median ${fmt(median(pages.onePageMs), 0)} ms (${pages.onePageMs.map((v) => fmt(v, 0)).join(', ')})`,
        ],
        [
          `${crowd.clients} Chromium pages at once in one Chromium (stress: 30 browsers on 2 cores)`,
          String(crowd.runs),
          crowd.failures.length
            ? `failed: ${crowd.failures.join('; ')}`
            : `all ready ${crowd.allReadyMs.map((v) => fmt(v, 0)).join(', ')} ms; Chromium used ${crowd.chromiumCpuS.map((v) => `${fmt(v, 1)} CPU s (${fmt(v / crowd.clients, 2)} s a page)`).join(', ')}`,
        ],
      ],
    );
  }

  // Every target is listed; one whose figure was skipped (or N = 100 not run) says so.
  const s100 = relayFigures?.find((s) => s.n === 100);
  const weightOf = (name: string) => pages?.weight.find((w) => w.name === name);
  const targets: string[][] = [
    targetRow(
      'relay/baseline throughput, 100 clients',
      '≥ 0.8',
      s100?.ratio,
      (v) => fmt(v, 3),
      (v) => v >= 0.8,
    ),
    targetRow(
      'p99 latency, 100 clients × 10 msg/s',
      '< 20 ms',
      s100?.relay.p99,
      (v) => `${fmt(v, 2)} ms`,
      (v) => v < 20,
    ),
    targetRow(
      'relay memory per idle connection (1,000)',
      '< 50 KB',
      memory?.relay.bytesPerConnection,
      (v) => `${fmt(v / 1024)} KB`,
      (v) => v < 50 * 1024,
    ),
    targetRow(
      'browser: chat page ready (median of tabs)',
      '< 1 s',
      browser?.readyMs,
      (v) => `${fmt(v, 0)} ms`,
      (v) => v < 1000,
    ),
    targetRow(
      'browser: tab-to-tab median',
      '< 50 ms',
      browser?.tabToTabMedianMs,
      (v) => `${fmt(v, 1)} ms`,
      (v) => v < 50,
    ),
    targetRow(
      'chat page, first load on the wire',
      '≤ 350 KB',
      weightOf('chat')?.first.bytes,
      (v) => `${fmt(v / 1024, 1)} KB`,
      (v) => v <= 350 * 1024,
    ),
    targetRow(
      'chat page, repeat load on the wire',
      '≤ 20 KB',
      weightOf('chat')?.repeat.bytes,
      (v) => `${fmt(v / 1024, 1)} KB`,
      (v) => v <= 20 * 1024,
    ),
    targetRow(
      'relay view, first load on the wire',
      '≤ 120 KB',
      weightOf('relay view')?.first.bytes,
      (v) => `${fmt(v / 1024, 1)} KB`,
      (v) => v <= 120 * 1024,
    ),
    targetRow(
      'regulator console, first load on the wire',
      '≤ 120 KB',
      weightOf('regulator console')?.first.bytes,
      (v) => `${fmt(v / 1024, 1)} KB`,
      (v) => v <= 120 * 1024,
    ),
    targetRow(
      // The relay's part for 30 devices at once, plus one device's own start-up on top (each
      // device does that on its own CPU; adding it whole counts its download twice, so this errs high).
      '30 clients loading the chat page at once, all ready (median of 3 runs, + one page alone)',
      '≤ 3 s',
      pages && !pages.classroom.failures.length && pages.onePageMs.length ? pages.classroom.medianAllReadyMs + median(pages.onePageMs) : undefined,
      (v) => `${fmt(v, 0)} ms`,
      (v) => v <= 3000,
    ),
  ];
  table('Targets', ['figure', 'target', 'measured', ''], targets);

  const elapsed = (performance.now() - started) / 1000;
  log(`\nbench finished in ${fmt(elapsed, 0)} s`);

  if (flags.json) {
    const relayJson: Record<string, unknown> = {};
    for (const s of relayFigures ?? []) {
      relayJson[`ratio_${s.n}`] = measured(s.ratio);
      relayJson[`msgs_per_sec_${s.n}`] = measured(s.relay.msgPerSec);
      relayJson[`baseline_msgs_per_sec_${s.n}`] = measured(s.baseline?.msgPerSec);
      relayJson[`cpu_us_per_msg_${s.n}`] = measured(s.relay.cpuUsPerMsg);
      relayJson[`baseline_cpu_us_per_msg_${s.n}`] = measured(s.baseline?.cpuUsPerMsg);
      relayJson[`p50_ms_${s.n}`] = measured(s.relay.p50);
      relayJson[`p99_ms_${s.n}`] = measured(s.relay.p99);
      relayJson[`baseline_p50_ms_${s.n}`] = measured(s.baseline?.p50);
      relayJson[`baseline_p99_ms_${s.n}`] = measured(s.baseline?.p99);
      relayJson[`open_loop_msgs_per_sec_${s.n}`] = s.n * s.openRatePerClient;
      if (s.ladder) {
        const ladder = s.ladder;
        relayJson[`ladder_${s.n}`] = Object.fromEntries(
          LADDER_RUNGS.map((r) => [
            r,
            {
              msgs_per_sec: measured(ladder[r].msgPerSec),
              ratio: s.baseline ? measured(ladder[r].msgPerSec / s.baseline.msgPerSec) : null,
              cpu_us_per_msg: measured(ladder[r].cpuUsPerMsg),
            },
          ]),
        );
      }
    }
    relayJson.detail = relayFigures ?? [];
    const json = {
      meta: {
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? null,
        quick,
        /** What this run left out, by flag: its figures are null below. */
        skipped: (['relay', 'baseline', 'ladder', 'workshop', 'memory', 'crypto', 'browser', 'pages'] as const).filter((k) => flags[`skip-${k}`]),
        ladderSizes,
        ulimitNofile: nofile,
        relayLimits: BENCH_LIMITS,
        config: {
          ...CONFIG,
          window: Object.fromEntries(sizes.map((n) => [n, CONFIG.window(n)])),
          openRate: Object.fromEntries(sizes.map((n) => [n, CONFIG.openRate(n)])),
          reps: Object.fromEntries(sizes.map((n) => [n, CONFIG.reps(n)])),
        },
        elapsedSeconds: elapsed,
      },
      relay: relayFigures ? relayJson : null,
      workshop: workshop
        ? {
            offered_msgs_per_sec: workshop.offeredMsgsPerSec,
            offered_deliveries_per_sec: workshop.offeredDeliveriesPerSec,
            p50_ms: measured(workshop.latency.p50),
            p99_ms: measured(workshop.latency.p99),
            max_ms: measured(workshop.latency.max),
            relay_cpu_pct: measured(workshop.relayCpuPct),
            delivered: workshop.delivered,
            expected: workshop.expected,
            detail: workshop,
          }
        : null,
      memory: memory
        ? {
            bytes_per_connection: measured(memory.relay.bytesPerConnection),
            heap_bytes_per_connection: measured(memory.relay.heapPerConnection),
            baseline_bytes_per_connection: measured(memory.baseline?.bytesPerConnection),
            connections: memory.relay.connections,
            online: memory.relay.online,
            relay: memory.relay,
            baseline: memory.baseline,
          }
        : null,
      crypto: cryptoFigures
        ? {
            seal_us_1to1: cryptoFigures.oneToOne.sealUs,
            open_us_1to1: cryptoFigures.oneToOne.openUs,
            seal_us_group30: cryptoFigures.group30.sealUs,
            open_us_group30: cryptoFigures.group30.openUs,
            ...cryptoFigures,
          }
        : null,
      pages,
      browser: browser
        ? {
            ready_ms: browser.readyMs,
            tab_to_tab_median_ms: browser.tabToTabMedianMs,
            tab_to_tab_p95_ms: browser.tabToTabP95Ms,
            ...browser,
          }
        : null,
    };
    writeFileSync(flags.json, `${JSON.stringify(json, null, 2)}\n`);
    log(`figures written to ${flags.json}`);
  }
}

async function startServerForBrowser(): Promise<{ url: string; stop: () => Promise<void> }> {
  // The browser runs against the relay with its default limits (nothing raised).
  const server = child('relay-process.ts', ['{}'], ['--expose-gc']);
  const started = await server.request<Started>({ cmd: 'start' }, 60_000);
  return { url: started.url, stop: () => stopServer(server) };
}

main().then(
  () => {
    killAll();
    process.exit(0);
  },
  (err: unknown) => {
    console.error(err);
    killAll();
    process.exit(1);
  },
);
