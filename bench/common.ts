/**
 * Pieces shared by the benchmark's processes: deterministic bench identities,
 * who talks to whom, the envelope pool layout, child processes with a small
 * request/response protocol over IPC, and statistics.
 */
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { Server } from 'node:http';
import { newIdentity, type Identity } from '../shared/crypto.ts';

export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
export const ROOT_DIR = fileURLToPath(new URL('..', import.meta.url));

// ---------------------------------------------------------------------------
// Bench users

/** Bench user i: an Ed25519 key from a fixed seed, so every process derives the same users. */
export function benchIdentity(i: number): Identity {
  const seed = createHash('sha256').update(`backdoor-lab bench user ${i}`).digest();
  return newIdentity(new Uint8Array(seed));
}

export const benchName = (i: number): string => `bench-${i}`;

/**
 * Users talk in classes of ten: user i sends, round robin, to the other nine
 * members of its block. The blocks are the same whatever N (10, 100 or 1,000),
 * so one pool of envelopes serves every run.
 */
export const BLOCK = 10;
export function peerOf(i: number, k: number): number {
  const base = i - (i % BLOCK);
  const others = BLOCK - 1;
  const j = k % others;
  const offset = i % BLOCK;
  return base + (j < offset ? j : j + 1);
}

/**
 * The workshop scenario's groups: user i belongs to the group of GROUP_SIZE users starting at
 * i − i % GROUP_SIZE, and sends every message to the other members of it.
 */
export const GROUP_SIZE = 30;
export function groupOf(i: number): { index: number; members: number[]; conv: string; name: string } {
  const index = Math.floor(i / GROUP_SIZE);
  const base = index * GROUP_SIZE;
  const conv = `g-${createHash('sha256').update(`backdoor-lab bench group ${index}`).digest('hex').slice(0, 16)}`;
  return { index, members: Array.from({ length: GROUP_SIZE }, (_, k) => base + k), conv, name: `Workshop table ${index + 1}` };
}

/** The cost ladder's servers (bench/ladder-relay.ts), in the order of the work they do. */
export const LADDER_RUNGS = ['accept-only', 'protocol-raw', 'protocol', 'records'] as const;
export type LadderRung = (typeof LADDER_RUNGS)[number];

/** What each rung does, for the bench's table (see bench/ladder-relay.ts). */
export const LADDER_LABELS: Record<LadderRung, string> = {
  'accept-only': 'forward + accepted, no receipts',
  'protocol-raw': 'whole protocol in memory, JSON.parse',
  protocol: 'whole protocol in memory, validated',
  records: '+ metadata log and archive (SQLite)',
};

// ---------------------------------------------------------------------------
// Child processes: TypeScript run by Node with the tsx loader, talking over IPC.

export interface Child {
  proc: ChildProcess;
  /** Send a request, resolve with the reply (or reject on an error reply or exit). */
  request<T = unknown>(msg: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  /** Resolve once the child has exited. */
  exited: Promise<number | null>;
  kill(): void;
}

interface Reply {
  rid: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

export function spawnTs(file: string, args: string[] = [], nodeFlags: string[] = []): Child {
  const proc = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', `${BENCH_DIR}${file}`, ...args], {
    cwd: ROOT_DIR,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let next = 1;
  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => {
      for (const p of pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`${file} exited (code ${code}) before answering`));
      }
      pending.clear();
      resolve(code);
    });
  });
  proc.on('message', (raw) => {
    const reply = raw as Reply;
    const p = pending.get(reply.rid);
    if (!p) return;
    pending.delete(reply.rid);
    clearTimeout(p.timer);
    if (reply.ok) p.resolve(reply.value);
    else p.reject(new Error(`${file}: ${reply.error}`));
  });
  return {
    proc,
    exited,
    request<T>(msg: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
      const rid = next++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(rid);
          reject(new Error(`${file}: no answer to ${String(msg.cmd)} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(rid, { resolve: resolve as (v: unknown) => void, reject, timer });
        proc.send({ ...msg, rid });
      });
    },
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}

/** In a child: answer the parent's requests with `handler`. */
export function serve(handler: (msg: Record<string, unknown> & { cmd: string }) => Promise<unknown> | unknown): void {
  process.on('message', (raw) => {
    const msg = raw as Record<string, unknown> & { cmd: string; rid: number };
    void (async () => {
      try {
        const value = await handler(msg);
        process.send?.({ rid: msg.rid, ok: true, value } satisfies Reply);
      } catch (err) {
        process.send?.({ rid: msg.rid, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies Reply);
      }
    })();
  });
  // The parent going away (even killed) must not leave this child behind.
  process.on('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------------------
// Memory and CPU of a server child

export interface MemorySample {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** VmRSS from /proc/self/status (bytes), where there is one. */
  vmRss: number | null;
}

export async function sampleMemory(): Promise<MemorySample> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    // Two full collections with a turn of the event loop between them, so weak callbacks and finalizers run.
    gc();
    await new Promise((r) => setTimeout(r, 50));
    gc();
  }
  const m = process.memoryUsage();
  let vmRss: number | null = null;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (match) vmRss = Number(match[1]) * 1024;
  } catch {
    // Not Linux: process.memoryUsage().rss is the figure.
  }
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, vmRss };
}

// ---------------------------------------------------------------------------
// Statistics

export function percentile(sorted: readonly number[], p: number): number {
  if (!sorted.length) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Whole-machine CPU, to tell when something outside the bench was competing for the cores

/** Busy and total jiffies summed over all CPUs, from /proc/stat (null where there is none). */
export function machineCpu(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** Busy cores (0..cpus) between two machineCpu() samples. */
export function busyCores(a: ReturnType<typeof machineCpu>, b: ReturnType<typeof machineCpu>, cores: number): number {
  if (!a || !b || b.total === a.total) return Number.NaN;
  return ((b.busy - a.busy) / (b.total - a.total)) * cores;
}

/**
 * Event-loop delay (how long a ready event waited for the loop) and garbage-collection pauses of
 * this process, since the last reset: what a server process reports for the latency phases.
 */
export function loopMonitor() {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let gc = { count: 0, totalMs: 0, maxMs: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.count += 1;
      gc.totalMs += entry.duration;
      gc.maxMs = Math.max(gc.maxMs, entry.duration);
    }
  }).observe({ entryTypes: ['gc'] });
  return {
    reset(): void {
      delay.reset();
      gc = { count: 0, totalMs: 0, maxMs: 0 };
    },
    read() {
      return { p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6, gc };
    },
  };
}

/**
 * `serve()` for a server under test (the relay or the baseline): the measuring commands every
 * server answers the same way (memory, event-loop delay, CPU) are handled here; the rest go to
 * `handler`.
 */
export function serveServer(handler: (msg: Record<string, unknown> & { cmd: string }) => Promise<unknown> | unknown): void {
  const loop = loopMonitor();
  serve((msg) => {
    switch (msg.cmd) {
      case 'memory':
        return sampleMemory();
      case 'loop-reset':
        loop.reset();
        return null;
      case 'loop':
        return loop.read();
      case 'cpu':
        return { cpu: process.cpuUsage(), at: performance.now() };
      default:
        return handler(msg);
    }
  });
}

/** Listen on 127.0.0.1, port 0, and give the addresses the orchestrator needs (the ws path is /ws). */
export async function listenLocal(server: Server): Promise<{ url: string; wsUrl: string; pid: number }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws`, pid: process.pid };
}
