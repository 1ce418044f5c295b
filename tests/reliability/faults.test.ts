/**
 * Issue 4, item 5: faults. The relay runs as a real child process
 * (`node --import tsx server/main.ts --port P --data DIR --quiet`, the same
 * program as `npx tsx server/main.ts`, but one process, so SIGKILL reaches the
 * relay itself and not a wrapper). Node Messengers keep talking while the relay
 * is killed with SIGKILL and restarted on the same data folder and port.
 *
 * Exactly once is counted at two levels:
 * - relay delivery: every "envelope" frame a device's socket received. The
 *   relay delivers at least once: an item is deleted from its queue only when
 *   the device's ack is committed, so an ack still in flight (or batched in
 *   the client) at the moment of the SIGKILL means the item is sent again after
 *   the restart. Such repeats are counted as "redelivered"; a repeat on the same
 *   socket would be a relay bug and must be 0. Nothing may be missing.
 * - app level: the messages the Messenger shows. Replays are dropped by envelope
 *   id, so each accepted message appears exactly once: lost 0, duplicated 0.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import WebSocket from 'ws';
import { Messenger, memoryStore, type SocketLike } from '../../client/core/messenger.ts';
import { cryptoReady } from '../../shared/crypto.ts';
import { startApp } from '../../server/app.ts';
import { until } from '../helpers/relay.ts';
import { Rng, SIZE, reportFigures, sleep } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface RelayProcess {
  child: ChildProcessWithoutNullStreams;
  port: number;
  output: () => string;
}

/** Start `server/main.ts` and wait for its printed links; the port is parsed from "Alice's chat: http://127.0.0.1:PORT/". */
async function startRelayProcess(dataDir: string, port = 0): Promise<RelayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', String(port), '--data', dataDir, '--quiet', '--admin-token', 'fault-test-token'], {
    cwd: root,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  cleanup.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = /Alice's chat: +http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
    if (m) return { child, port: Number(m[1]), output: () => out };
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`relay did not start: ${out}`);
    await sleep(20);
  }
}

function kill9(p: RelayProcess): Promise<void> {
  return new Promise((resolve) => {
    p.child.once('exit', () => resolve());
    p.child.kill('SIGKILL');
  });
}

interface Device {
  m: Messenger;
  /** Envelope frames received: envelope id → socket numbers it arrived on. */
  deliveries: Map<string, number[]>;
  /** 'message' events for incoming messages, by id (a duplicate at app level would show twice). */
  shown: Map<string, number>;
  connects: number[];
}

function device(name: string, wsUrl: string): Device {
  const deliveries = new Map<string, number[]>();
  const shown = new Map<string, number>();
  const connects: number[] = [];
  let socketNo = 0;
  const m = new Messenger({
    name,
    storage: memoryStore(),
    backoff: { minMs: 50, maxMs: 800 },
    connect: () => {
      const no = ++socketNo;
      connects.push(performance.now());
      const ws = new WebSocket(wsUrl);
      ws.on('message', (d) => {
        const s = d.toString();
        if (!s.startsWith('{"type":"envelope"')) return;
        const id = (JSON.parse(s) as { env: { id: string } }).env.id;
        deliveries.set(id, [...(deliveries.get(id) ?? []), no]);
      });
      return ws as unknown as SocketLike;
    },
  });
  m.on((e) => {
    // The Messenger emits an incoming message once, when it opens it; a replay it failed to drop would show again.
    if (e.type === 'message' && e.message.direction === 'in') shown.set(e.message.id, (shown.get(e.message.id) ?? 0) + 1);
  });
  return { m, deliveries, shown, connects };
}

describe('faults: SIGKILL during traffic', () => {
  it(
    'every message the relay accepted is delivered exactly once across SIGKILL and restart: lost 0 and duplicated 0 in the app, nothing missing at the relay level, every accepted envelope in the regulator archive, and clients reconnect by themselves and resend',
    async () => {
      await cryptoReady();
      const dir = tempDir('bdl-fault-');
      let relay = await startRelayProcess(dir);
      const port = relay.port;
      const wsUrl = `ws://127.0.0.1:${port}/ws`;
      const devices = ['Ann', 'Bo', 'Cat', 'Dee'].map((n) => device(n, wsUrl));
      cleanup.push(() => {
        for (const d of devices) d.m.stop();
      });
      await Promise.all(devices.map((d) => d.m.start()));
      await until(() => devices.every((d) => devices.every((o) => o === d || d.m.directory.has(o.m.pin))), 'everyone to know everyone');
      const group = devices[0]!.m.createGroup(
        'Fault line',
        devices.slice(1).map((d) => d.m.pin),
      ).id;
      await until(() => devices.every((d) => d.m.groups.get(group) !== undefined), 'every device to hold the group');

      // ---- Traffic: each device sends every 100 ms, mostly 1:1, sometimes to the group of four.
      const rng = new Rng(SIZE.seed);
      const sent: { from: Device; to: Device[]; id: string; text: string }[] = [];
      let talking = true;
      let n = 0;
      const traffic = (async () => {
        for (let tick = 0; talking && tick < 10_000; tick++) {
          for (const d of devices) {
            const others = devices.filter((o) => o !== d);
            const to = rng.next() < 0.2 ? others : [rng.pick(others)];
            const text = `fault ${n++} from ${d.m.name}`;
            const msg =
              to.length > 1
                ? d.m.sendGroup(group, text)
                : d.m.sendText(
                    to.map((o) => o.m.pin),
                    text,
                  );
            sent.push({ from: d, to, id: msg.id, text });
          }
          await sleep(100);
        }
      })();

      // ---- Kill and restart, SIZE.kills times, each time mid-traffic.
      const downtimes: number[] = [];
      const attemptsWhileDown: number[] = [];
      for (let k = 0; k < SIZE.kills; k++) {
        await sleep(SIZE.faultSeconds * 1000);
        const before = devices.map((d) => d.connects.length);
        const killedAt = performance.now();
        await kill9(relay);
        await sleep(300); // clients notice, back off, keep sending into their outboxes
        relay = await startRelayProcess(dir, port);
        downtimes.push(performance.now() - killedAt);
        attemptsWhileDown.push(...devices.map((d, i) => d.connects.length - before[i]!));
      }
      await sleep(SIZE.faultSeconds * 1000);
      talking = false;
      await traffic;

      // ---- Settle: every message accepted (outboxes empty), every accepted message at its recipients.
      const accepted = () => sent.filter((s) => ['sent', 'delivered', 'read'].includes(s.from.m.messages.get(s.id)?.state ?? ''));
      await until(() => accepted().length === sent.length, 'every message accepted', 30_000).catch(() => {});
      const acc = accepted();
      await until(() => acc.every((s) => s.to.every((r) => r.m.messages.get(s.id)?.text === s.text)), 'every accepted message delivered', 30_000).catch(() => {});

      let lostApp = 0;
      let dupApp = 0;
      let missingRelay = 0;
      let redelivered = 0;
      let sameSocketRepeats = 0;
      let pairs = 0;
      for (const s of acc) {
        for (const r of s.to) {
          pairs += 1;
          const shown = r.shown.get(s.id) ?? 0;
          if (r.m.messages.get(s.id)?.text !== s.text || shown === 0) lostApp += 1;
          if (shown > 1) dupApp += shown - 1;
          const sockets = r.deliveries.get(s.id) ?? [];
          if (!sockets.length) missingRelay += 1;
          redelivered += Math.max(0, sockets.length - 1);
          sameSocketRepeats += sockets.length - new Set(sockets).size;
        }
      }
      const failed = sent.filter((s) => s.from.m.messages.get(s.id)?.state === 'failed').length;
      // The regulator's archive commits before the relay's group commit: whatever the relay accepted
      // before a kill is in the archive after it (read from the regulator's file, as its console would).
      const archiveDb = new Database(join(dir, 'regulator.db'), { readonly: true });
      const archived = new Set(
        archiveDb
          .prepare<[], { env_id: string }>('SELECT env_id FROM archive')
          .all()
          .map((r) => r.env_id),
      );
      archiveDb.close();
      const notArchived = acc.filter((s) => !archived.has(s.id)).length;
      reportFigures('faults: SIGKILL and restart', {
        'relay kills (SIGKILL)': SIZE.kills,
        'downtime each (kill to listening again)': downtimes.map((t) => `${Math.round(t)} ms`).join(', '),
        'reconnect attempts per device while down': attemptsWhileDown.join(' '),
        'messages sent': sent.length,
        'accepted by the relay': acc.length,
        'never accepted': sent.length - acc.length,
        failed: failed,
        'deliveries expected (message × recipient)': pairs,
        'app level: lost': lostApp,
        'app level: duplicated': dupApp,
        'relay level: missing': missingRelay,
        'relay level: redelivered after restart (acks lost in the kill, dropped by id)': redelivered,
        'relay level: repeats on one socket': sameSocketRepeats,
        'regulator archive: accepted envelopes missing': notArchived,
      });

      expect(sent.length).toBeGreaterThan(50);
      expect(acc.length).toBe(sent.length); // unaccepted envelopes were resent by the clients after reconnecting
      expect(failed).toBe(0);
      expect(lostApp).toBe(0);
      expect(dupApp).toBe(0);
      expect(missingRelay).toBe(0);
      expect(sameSocketRepeats).toBe(0);
      expect(archived.size).toBeGreaterThan(0);
      expect(notArchived).toBe(0);
      // Backoff, not a tight loop: a handful of attempts per device per outage of about a second or two.
      expect(Math.max(...attemptsWhileDown)).toBeLessThan(20);
      expect(Math.min(...attemptsWhileDown)).toBeGreaterThanOrEqual(1);
    },
    120_000 + SIZE.kills * (SIZE.faultSeconds + 10) * 1000,
  );
});

// ---------------------------------------------------------------------------

interface Exit {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
}

async function mapTwoAtATime<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

function runMain(args: string[]): Promise<Exit> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // A relay that started after all must not linger: the test ends it.
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

describe('faults: a damaged data folder at start', () => {
  it('a corrupt, truncated, misplaced or unreadable database gives one clear "error:" line and exit code 1, no stack trace, no restart loop, and the file is left as it was', async () => {
    await cryptoReady();
    // A real relay.db with users in it, to truncate.
    const good = tempDir('bdl-good-');
    const app = await startApp({ port: 0, host: '127.0.0.1', dataDir: good });
    for (let i = 0; i < 200; i++) app.store.upsertUser(`${i.toString(16).toUpperCase().padStart(8, '0')}`, `${'A'.repeat(43)}=`, `user ${i}`, Date.now());
    await app.close();
    const goodBytes = readFileSync(join(good, 'relay.db'));

    const rng = new Rng(7);
    /** Write `data` to `name` in `dir`; the file's path. */
    const write = (dir: string, name: string, data: string | Uint8Array): string => {
      writeFileSync(join(dir, name), data);
      return join(dir, name);
    };
    const cases: { name: string; setup: (dir: string) => string; expect: RegExp }[] = [
      { name: 'relay.db is random bytes', setup: (d) => write(d, 'relay.db', rng.bytes(8192)), expect: /relay database .* cannot be used: file is not a database/ },
      { name: 'relay.db is a text file', setup: (d) => write(d, 'relay.db', 'these are my lesson notes, not a database\n'.repeat(50)), expect: /relay database .* cannot be used/ },
      {
        name: 'relay.db has a valid header and garbage after it',
        setup: (d) => write(d, 'relay.db', Buffer.concat([goodBytes.subarray(0, 100), rng.bytes(goodBytes.length - 100)])),
        expect: /relay database .* cannot be used/,
      },
      {
        name: 'relay.db cut short (a copy interrupted)',
        setup: (d) => {
          writeFileSync(join(d, 'relay.db'), goodBytes);
          truncateSync(join(d, 'relay.db'), Math.floor(goodBytes.length / 2) + 17);
          return join(d, 'relay.db');
        },
        expect: /relay database .* cannot be used/,
      },
      {
        name: 'relay.db is a directory',
        setup: (d) => {
          mkdirSync(join(d, 'relay.db'));
          return join(d, 'relay.db');
        },
        expect: /relay database .* cannot be used: unable to open database file/,
      },
      {
        name: 'regulator.db is random bytes (relay.db fine)',
        setup: (d) => {
          write(d, 'relay.db', goodBytes);
          return write(d, 'regulator.db', rng.bytes(4096));
        },
        expect: /regulator database .* cannot be used: file is not a database/,
      },
      { name: '--data names a file, not a folder', setup: (d) => write(d, 'not-a-folder', 'x'), expect: /cannot start: .*not-a-folder/ },
    ];
    // Two at a time: seven tsx start-ups at once on a busy 2-core machine can take longer than
    // any fair wait, and a relay killed for being slow would read as one that never exited.
    const results = await mapTwoAtATime(cases, async (c) => {
      const dir = tempDir('bdl-bad-');
      const target = c.setup(dir);
      const dataArg = c.name.startsWith('--data') ? target : dir;
      const before = statSync(target).isDirectory() ? 'dir' : readFileSync(target).toString('base64');
      const exit = await runMain(['--data', dataArg, '--quiet']);
      const after = existsSync(target) ? (statSync(target).isDirectory() ? 'dir' : readFileSync(target).toString('base64')) : 'gone';
      return { c, exit, unchanged: before === after };
    });
    const table: Record<string, string> = {};
    for (const { c, exit, unchanged } of results)
      table[c.name] = `exit ${exit.code} in ${Math.round(exit.ms)} ms${unchanged ? '' : ', FILE CHANGED'}: ${exit.stderr.trim().slice(0, 110)}`;
    reportFigures('faults: damaged data folder at start', table);
    for (const { c, exit, unchanged } of results) {
      const lines = exit.stderr.split('\n').filter((l) => l.trim() !== '');
      expect(exit.code, c.name).toBe(1);
      expect(exit.signal, c.name).toBeNull(); // it exited by itself, not killed by the test's 20 s guard
      expect(lines, c.name).toHaveLength(1);
      expect(lines[0], c.name).toMatch(/^error: /);
      expect(lines[0], c.name).toMatch(c.expect);
      expect(exit.stderr, c.name).not.toMatch(/\n\s+at /); // no stack trace
      expect(exit.stdout, c.name).not.toMatch(/is running/);
      expect(unchanged, `${c.name}: the damaged file must be left for the teacher to inspect`).toBe(true);
    }
  }, 180_000);
});
