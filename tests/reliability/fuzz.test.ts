/**
 * Issue 4, item 1: thousands of malformed frames from raw clients while a
 * watchdog pair of real Messengers keeps talking. The relay stays up, the pair
 * loses nothing, and every bad frame is answered by an error reply or a close
 * with a named reason.
 *
 * Rate limiting: this relay runs with its rate and byte budgets opened wide
 * (`UNLIMITED`), and the corpus is spread over several sockets, so that every
 * frame reaches the parser instead of being turned away as "rate_limited"
 * (the budgets have their own tests in limits.test.ts and hostile-relay.test.ts).
 *
 * Accounting: each fuzz socket sends one frame, then a probe ping with a unique
 * value, and waits for the probe's pong or for the close. Whatever arrived before
 * the pong is that frame's answer, and the pong itself proves the socket still
 * works after the bad frame.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode, type ServerMessage } from '../../shared/protocol.ts';
import { newIdentity, type Identity } from '../../shared/crypto.ts';
import { memoryLogger } from '../../server/log.ts';
import { startTestRelay, user, knows, until, type TestUser } from '../helpers/relay.ts';
import { UNLIMITED } from '../../server/relay.ts';
import { RawClient, Rng, SIZE, reportFigures, sleep } from './support.ts';
import { fuzzFrame, makeTemplates, mustRefuse, type FuzzFrame } from './fuzz-corpus.ts';

type Relay = Awaited<ReturnType<typeof startTestRelay>>;

const FUZZ_SOCKETS = 8;
const WINDOW = 16;
const NAMED_CLOSE_CODES = new Set<number>(Object.values(CloseCode));

let app: Relay;
const log = memoryLogger();

beforeAll(async () => {
  app = await startTestRelay({ log, limits: UNLIMITED });
});
afterAll(async () => {
  await app?.close();
});

interface Tally {
  sent: number;
  mustRefuse: number;
  validShaped: number;
  refusedByError: number;
  refusedByClose: number;
  notRefused: number;
  unanswered: number;
  badCloses: number;
  closeCodes: Map<number, number>;
  errorCodes: Map<string, number>;
  byKind: Map<string, number>;
  examples: string[];
}

const bump = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1);

/**
 * One fuzz socket: logged in (so envelopes reach the send path) or anonymous. Frames go out in
 * windows of WINDOW, each followed by its own probe ping; the relay answers a socket's frames in
 * order, so the replies between probe k-1's pong and probe k's pong are frame k's answer. If the
 * socket closes, the first frame without a pong closed it and the frames after it were never
 * processed: they are sent again on a fresh socket.
 */
async function fuzzer(wsUrl: string, identity: Identity | null, next: () => FuzzFrame | null, tally: Tally, probeBase: number): Promise<void> {
  let client = null as RawClient | null;
  let framesOnSocket = 0;
  let probe = probeBase;
  const retry: FuzzFrame[] = [];
  const open = async () => {
    client?.close();
    client = await RawClient.connect(wsUrl);
    framesOnSocket = 0;
    if (identity) await client.login(identity, 'Fuzzer');
  };
  for (;;) {
    const window: FuzzFrame[] = retry.splice(0, WINDOW);
    while (window.length < WINDOW) {
      const frame = next();
      if (!frame) break;
      window.push(frame);
    }
    if (!window.length) break;
    // Anonymous sockets are renewed before the relay's 10 s login timeout could close them mid-window.
    if (!client || client.closed || (!identity && framesOnSocket >= 400)) await open();
    const c: RawClient = client!;
    framesOnSocket += window.length;
    const from = c.frames.length;
    const probes = window.map(() => {
      probe += 1;
      return -probe;
    });
    window.forEach((frame, k) => {
      c.ws.send(frame.data, { binary: frame.binary });
      c.send({ type: 'ping', t: probes[k] });
    });
    const last = probes[probes.length - 1];
    try {
      await c.waitFor(
        () => c.closed !== null || (c.frames[c.frames.length - 1]?.type === 'pong' && (c.frames[c.frames.length - 1] as { t: number }).t === last),
        'the probe pongs',
        10_000,
      );
    } catch {
      tally.unanswered += window.length;
      tally.examples.push(`unanswered window starting ${window[0]!.kind}`);
      c.close();
      continue;
    }
    const replies = c.frames.slice(from);
    let at = 0;
    for (let k = 0; k < window.length; k++) {
      const frame = window[k]!;
      const end = replies.findIndex((r, i) => i >= at && r.type === 'pong' && r.t === probes[k]);
      const answer = replies.slice(at, end < 0 ? undefined : end);
      at = end + 1;
      const refuse = mustRefuse(frame);
      tally.sent += 1;
      bump(tally.byKind, frame.kind);
      if (refuse) tally.mustRefuse += 1;
      else tally.validShaped += 1;
      const errors = answer.filter((r): r is Extract<ServerMessage, { type: 'error' }> => r.type === 'error');
      for (const e of errors) bump(tally.errorCodes, e.code);
      if (end < 0) {
        // No pong: this frame closed the socket (after any error reply). The rest go again.
        retry.push(...window.slice(k + 1));
        const closed = c.closed!;
        if (refuse && errors.length) tally.refusedByError += 1;
        else if (refuse) tally.refusedByClose += 1;
        bump(tally.closeCodes, closed.code);
        // A close must be named: a code of ours with a reason, or 1009 (frame too big: ws closes before reading it).
        const named = closed.code === CloseCode.TooBig || (NAMED_CLOSE_CODES.has(closed.code) && closed.reason.length > 0);
        if (!named) {
          tally.badCloses += 1;
          tally.examples.push(`close ${closed.code} "${closed.reason}" after ${frame.kind}`);
        }
        break;
      }
      if (!refuse) continue;
      if (errors.length) tally.refusedByError += 1;
      else {
        tally.notRefused += 1;
        tally.examples.push(`not refused ${frame.kind}: ${String(frame.data).slice(0, 120)} -> ${JSON.stringify(answer).slice(0, 200)}`);
      }
    }
  }
  client?.close();
}

/** Raw TCP garbage: bytes that are not HTTP, and bytes after a real upgrade that are not WebSocket frames. */
async function tcpGarbage(port: number, rng: Rng, upgrade: boolean): Promise<'closed' | 'open'> {
  const socket: Socket = netConnect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.resume(); // read (and drop) whatever the relay answers, so its end of the connection is seen
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  if (upgrade) {
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    // Each first byte is a frame header the protocol forbids: RSV1 set, a reserved opcode, an unmasked
    // client frame, or a length of 2^63-1. The rest is noise.
    const head = rng.pick([
      Buffer.from([0xc1, 0x85]),
      Buffer.from([0x83, 0x85]),
      Buffer.from([0x81, 0x05]),
      Buffer.from([0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ]);
    socket.write(Buffer.concat([head, rng.bytes(rng.int(4, 200))]));
  } else {
    socket.write(rng.bytes(rng.int(1, 600)));
  }
  const result = await Promise.race([closed.then(() => 'closed' as const), sleep(3000).then(() => 'open' as const)]);
  socket.destroy();
  return result;
}

describe('fuzz: malformed frames from raw clients while a watchdog pair talks', () => {
  it(
    `the relay answers each of ${SIZE.frames} malformed frames with an error reply or a named close, stays up, and the watchdog pair loses no message`,
    async () => {
      const rng = new Rng(SIZE.seed);
      const sender = newIdentity();
      const target = newIdentity();
      // The target exists in the directory, so envelopes to it are refused for their faults, not for an unknown PIN.
      const reg = await RawClient.connect(app.wsUrl);
      await reg.login(target, 'Target');
      reg.close();
      const templates = makeTemplates(sender, target);

      // ---- The watchdog pair: real Messengers, one message every 20 ms, alternating direction.
      const a: TestUser = await user(app.wsUrl, 'WatchA');
      const b: TestUser = await user(app.wsUrl, 'WatchB');
      await knows(a, b.m.pin);
      await knows(b, a.m.pin);
      const sent: { from: TestUser; to: TestUser; id: string; text: string }[] = [];
      let fuzzing = true;
      const watchdog = (async () => {
        for (let i = 0; fuzzing && i < 100_000; i++) {
          const [from, to] = i % 2 ? [b, a] : [a, b];
          const text = `watchdog ${i}`;
          sent.push({ from, to, id: from.m.sendText([to.m.pin], text).id, text });
          await sleep(20);
        }
      })();

      // ---- The fuzzers.
      const tally: Tally = {
        sent: 0,
        mustRefuse: 0,
        validShaped: 0,
        refusedByError: 0,
        refusedByClose: 0,
        notRefused: 0,
        unanswered: 0,
        badCloses: 0,
        closeCodes: new Map(),
        errorCodes: new Map(),
        byKind: new Map(),
        examples: [],
      };
      // Make frames until SIZE.frames of them must be refused (a valid ping or ack made by chance does not count).
      let made = 0;
      let madeBad = 0;
      const next = (): FuzzFrame | null => {
        if (madeBad >= SIZE.frames || made >= SIZE.frames * 2) return null;
        const frame = fuzzFrame(rng, templates);
        made += 1;
        if (mustRefuse(frame)) madeBad += 1;
        return frame;
      };
      const started = performance.now();
      await Promise.all(Array.from({ length: FUZZ_SOCKETS }, (_, i) => fuzzer(app.wsUrl, i % 2 === 0 ? newIdentity() : null, next, tally, i * 10_000_000)));
      let garbageClosed = 0;
      const garbageTried = 40;
      for (let i = 0; i < garbageTried; i++) if ((await tcpGarbage(app.port, rng, i % 2 === 1)) === 'closed') garbageClosed += 1;
      const fuzzSeconds = (performance.now() - started) / 1000;
      fuzzing = false;
      await watchdog;

      // ---- The watchdog pair must have everything: accepted by the relay, and opened by the other side.
      await until(() => sent.every((s) => s.from.m.messages.get(s.id)?.state !== 'sending'), 'every watchdog message accepted', 15_000);
      const accepted = sent.filter((s) => ['sent', 'delivered', 'read'].includes(s.from.m.messages.get(s.id)?.state ?? ''));
      await until(() => accepted.every((s) => s.to.m.messages.get(s.id)?.text === s.text), 'every accepted watchdog message received', 15_000).catch(() => {});
      const lost = accepted.filter((s) => s.to.m.messages.get(s.id)?.text !== s.text).length;
      const failed = sent.length - accepted.length;

      // ---- The relay is still up and serving: health, and a fresh login.
      const health = (await (await fetch(`${app.url}/healthz`)).json()) as { ok: boolean };
      const fresh = await RawClient.connect(app.wsUrl);
      await fresh.login(newIdentity(), 'After the storm');
      fresh.close();

      const closes = [...tally.closeCodes].map(([code, n]) => `${code}×${n}`).join(' ');
      const errorCodes = [...tally.errorCodes]
        .sort((x, y) => y[1] - x[1])
        .map(([code, n]) => `${code}×${n}`)
        .join(' ');
      reportFigures('fuzz', {
        seed: SIZE.seed,
        'fuzz sockets': `${FUZZ_SOCKETS} (half logged in), rate and byte budgets opened wide for this relay`,
        'frames sent (total)': tally.sent,
        'malformed frames (must be refused)': tally.mustRefuse,
        'valid-shaped frames (ping/ack by chance)': tally.validShaped,
        'refused by error reply': tally.refusedByError,
        'refused by named close': tally.refusedByClose,
        'close codes': closes || '-',
        'error codes': errorCodes,
        'not refused': tally.notRefused,
        'unanswered (no reply, no close)': tally.unanswered,
        'closes without a named reason': tally.badCloses,
        'tcp garbage connections closed': `${garbageClosed}/${garbageTried}`,
        'watchdog messages sent': sent.length,
        'watchdog accepted': accepted.length,
        'watchdog lost': lost,
        'watchdog refused (failed)': failed,
        'fuzz duration': `${fuzzSeconds.toFixed(1)} s`,
        'frames per second': Math.round(tally.sent / fuzzSeconds),
        'relay internal errors logged': log.lines.filter((l) => l.includes('frame handler failed')).length,
      });
      if (tally.examples.length) console.log(tally.examples.slice(0, 20).join('\n'));

      expect(tally.mustRefuse).toBeGreaterThanOrEqual(SIZE.frames);
      expect(tally.refusedByError + tally.refusedByClose).toBe(tally.mustRefuse);
      expect(tally.notRefused).toBe(0);
      expect(tally.unanswered).toBe(0);
      expect(tally.badCloses).toBe(0);
      expect(tally.errorCodes.get('internal') ?? 0).toBe(0);
      expect(garbageClosed).toBe(garbageTried);
      expect(health.ok).toBe(true);
      expect(sent.length).toBeGreaterThan(10);
      expect(lost).toBe(0);
      expect(failed).toBe(0);
      // The corpus carried __proto__ and constructor.prototype keys: nothing reached Object.prototype.
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
      a.m.stop();
      b.m.stop();
    },
    Math.max(120_000, SIZE.frames * 5),
  );
});
