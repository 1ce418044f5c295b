/**
 * The classroom-mode attack (branch attack-classroom): what a participant who has the class code
 * but not the admin token can do to the relay and to the others. Real relays on 127.0.0.1 port 0;
 * other loopback SOURCE addresses (127.0.0.2 ...) stand for other machines on the class network,
 * 127.0.0.1 is the teacher's laptop.
 */
import { request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { newIdentity } from '../../shared/crypto.ts';
import { CloseCode } from '../../shared/protocol.ts';
import { sessionsTotalFor } from '../../server/app.ts';
import { DEFAULT_EDGE_LIMITS, MAKE_ROOM_CLOSE, connectionCeiling } from '../../server/edge-limits.ts';
import { relaysPerTest, type startTestRelay } from '../helpers/relay.ts';
import { RawClient } from '../reliability/support.ts';

const CODE = 'K7M2QX';
type TestApp = Awaited<ReturnType<typeof startTestRelay>>;

const { relay, cleanup } = relaysPerTest();

/** GET a path from a loopback source address: the status, or -1 if the connection was dropped. */
function get(port: number, from: string, path = '/healthz'): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress: from, headers: { host: `127.0.0.1:${port}` }, agent: false, timeout: 3000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(-1));
    req.end();
  });
}

/** A login with the class code from `from`: the client once it got its welcome, or null if it was refused or dropped. */
async function join(app: TestApp, from: string, name: string): Promise<RawClient | null> {
  let c: RawClient;
  try {
    c = await RawClient.connect(app.wsUrl, { localAddress: from });
  } catch {
    return null;
  }
  cleanup.push(() => c.close());
  c.send({ ...c.hello(newIdentity(), name), code: CODE });
  try {
    await c.next('welcome');
    return c;
  } catch {
    return null;
  }
}

describe('logged-in sessions cannot fill the connection ceiling', () => {
  it('the totals of every kind of connection, sessions included, stay below maxConnections with the default limits', () => {
    // 2,000 is the ceiling where the open-file limit cannot be read (macOS, Windows: a teacher's laptop).
    for (const maxConnections of [connectionCeiling(null), connectionCeiling(4096), connectionCeiling(Number.POSITIVE_INFINITY)]) {
      const limits = { ...DEFAULT_EDGE_LIMITS, maxConnections };
      const raw = Math.min(limits.rawConnectionsTotal, Math.floor(maxConnections / 2));
      const sessions = sessionsTotalFor(limits, raw);
      const all = raw + limits.pendingLoginsTotal + limits.viewersTotal + limits.consolesTotal + limits.consolesWaitingTotal + sessions;
      expect(all, `every total together at maxConnections ${maxConnections}`).toBeLessThanOrEqual(maxConnections);
      expect(sessions, 'room for a class and its bots').toBeGreaterThanOrEqual(200);
    }
  });

  it('a participant with the class code holding sessions from several addresses neither locks the teacher out nor keeps a classmate from joining', async () => {
    // The real relay's shape, scaled down: 80 connections at most; the other totals leave 41 for sessions.
    const limits = { maxConnections: 80, sessionsPerAddress: 20, rawConnectionsTotal: 20, pendingLoginsTotal: 10, viewersTotal: 5, consolesTotal: 2, consolesWaitingTotal: 2 };
    const app = await relay({ classroom: { code: CODE }, limits });
    expect(app.relay.limits.sessionsTotal).toBe(41);
    // Before the fix: 60 sessions held, the server at its 80 connections... (here 60 + the test's own),
    // and with the real limits (2,000 on a laptop whose open-file limit cannot be read) ten
    // addresses of 200 sessions each took every connection: the teacher's page was dropped unseen.
    const attacker: RawClient[] = [];
    for (const from of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'])
      for (let i = 0; i < limits.sessionsPerAddress; i++) {
        const c = await join(app, from, `Mallory ${i}`);
        if (c) attacker.push(c);
      }
    const held = attacker.filter((c) => c.closed === null).length;
    expect(held, 'the attacker holds at most the network part of the sessions total').toBeLessThanOrEqual(41);
    expect(await get(app.port, '127.0.0.1'), "the teacher's laptop still gets an answer").toBe(200);
    expect(await get(app.port, '127.0.0.9', '/'), "a classmate's phone still gets the page").toBe(200);
    const classmate = await join(app, '127.0.0.9', 'Carol');
    expect(classmate, 'a classmate from another address logs in').not.toBeNull();
    const teacher = await join(app, '127.0.0.1', 'Teacher tab');
    expect(teacher, 'a tab on the laptop logs in').not.toBeNull();
    // The place was taken back from the attacker (its oldest session, closed 1013 "try again later").
    const madeRoom = await Promise.all(
      attacker.map((c) =>
        c.waitClosed(200).then(
          (x) => x.code,
          () => null,
        ),
      ),
    );
    expect(madeRoom.filter((code) => code === MAKE_ROOM_CLOSE).length).toBeGreaterThanOrEqual(1);
    expect(madeRoom).not.toContain(CloseCode.LoginFailed);
  });
});
