/**
 * Classroom mode end to end: a real relay on 127.0.0.1 port 0 with the class code check on (the
 * option turns it on without listening on the LAN), real clients on client/core over real
 * WebSockets, raw sockets where a test must misbehave, the store scanned for what a refused login
 * left behind, and `npm start -- --classroom` itself for what it prints.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import decodeQR from '@paulmillr/qr/decode.js';
import { Messenger, memoryStore, LoginRefused, type KeyValueStore, type MessengerEvent, type SocketLike } from '../../client/core/messenger.ts';
import { newIdentity, signLogin, toB64, type Identity } from '../../shared/crypto.ts';
import { CLASS_CODE_ALPHABET, CloseCode, ErrorCode, PROTOCOL_VERSION, normalizeClassCode, parseServerMessage, type ServerMessage } from '../../shared/protocol.ts';
import { Classroom, classroomLines, joinUrl, newClassCode, terminalQr } from '../../server/classroom.ts';
import { allowedHosts, checkHostAndOrigin } from '../../server/hosts.ts';
import { memoryPair } from '../../server/transport.ts';
import type { AppOptions } from '../../server/app.ts';
import { startTestRelay, until } from '../helpers/relay.ts';
import { dumpSqlite, findSecret } from '../helpers/scan.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;

const CODE = 'K7M2QX';
const TOKEN = 'test-admin-token';
const root = fileURLToPath(new URL('../..', import.meta.url));

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function classroomRelay(options: AppOptions = {}): Promise<TestRelay> {
  const app = await startTestRelay({ classroom: { code: CODE }, ...options });
  cleanups.push(() => app.close());
  return app;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-classroom-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A participant: a Messenger on client/core over a real WebSocket, every frame and close it got recorded. */
interface Participant {
  m: Messenger;
  events: MessengerEvent[];
  frames: ServerMessage[];
  closes: number[];
  sockets: WebSocket[];
  storage: KeyValueStore;
}

function participant(
  app: TestRelay,
  name: string,
  options: { code?: string | null; storage?: KeyValueStore; device?: 'phone' | 'tablet' | 'laptop'; wrap?: (ws: WebSocket) => SocketLike } = {},
): Participant {
  const frames: ServerMessage[] = [];
  const closes: number[] = [];
  const sockets: WebSocket[] = [];
  const storage = options.storage ?? memoryStore();
  const code = options.code === undefined ? CODE : options.code;
  const m = new Messenger({
    name,
    storage,
    backoff: { minMs: 50, maxMs: 300 },
    wakePingMs: 300,
    ...(code !== null ? { classCode: normalizeClassCode(code)! } : {}),
    ...(options.device ? { device: options.device } : {}),
    connect: () => {
      const ws = new WebSocket(app.wsUrl);
      sockets.push(ws);
      ws.on('message', (data) => {
        const parsed = parseServerMessage(data.toString());
        if (parsed.ok) frames.push(parsed.value);
      });
      ws.on('close', (c) => closes.push(c));
      return options.wrap ? options.wrap(ws) : (ws as unknown as SocketLike);
    },
  });
  const events: MessengerEvent[] = [];
  m.on((e) => events.push(e));
  cleanups.push(() => m.stop());
  return { m, events, frames, closes, sockets, storage };
}

async function joined(app: TestRelay, name: string, options: Parameters<typeof participant>[2] = {}): Promise<Participant> {
  const p = participant(app, name, options);
  await p.m.start();
  return p;
}

/** The ids of the messages a participant was shown as received, with how often each. */
function received(p: Participant): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of p.events)
    if (e.type === 'message' && e.message.direction === 'in' && e.message.state === 'received') counts.set(e.message.id, (counts.get(e.message.id) ?? 0) + 1);
  return counts;
}

/** A hand-made login on a raw socket: whatever `hello` fields the test gives (or a broken frame). */
async function rawLogin(
  app: TestRelay,
  hello: (challenge: { nonce: string }, id: Identity) => unknown,
  id: Identity = newIdentity(),
): Promise<{ frames: ServerMessage[]; close: { code: number; reason: string } }> {
  const ws = new WebSocket(app.wsUrl);
  cleanups.push(() => ws.terminate());
  const frames: ServerMessage[] = [];
  ws.on('error', () => {});
  const close = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('message', (data) => {
    const parsed = parseServerMessage(data.toString());
    if (!parsed.ok) return;
    frames.push(parsed.value);
    if (parsed.value.type === 'challenge') ws.send(JSON.stringify(hello(parsed.value, id)));
    // A frame the parser refused leaves the socket open (not logged in): the test is done with it.
    if (parsed.value.type === 'error' && parsed.value.code === ErrorCode.BadFrame) ws.close(1000);
    if (parsed.value.type === 'welcome') ws.close(1000);
  });
  return { frames, close: await close };
}

const hello =
  (code: string | undefined, extra: Record<string, unknown> = {}) =>
  (challenge: { nonce: string }, id: Identity) => ({
    type: 'hello',
    v: PROTOCOL_VERSION,
    pk: toB64(id.signPk),
    name: 'Mallory',
    sig: signLogin(challenge.nonce, id),
    ...(code === undefined ? {} : { code }),
    ...extra,
  });

/**
 * A SocketLike over a real WebSocket that lets the test stand in the way: `deliver(data)` false
 * swallows an incoming frame, and a socket in `deaf` neither sends nor receives any more (a phone's
 * socket after sleep: open on this side, dead underneath).
 */
function proxy(ws: WebSocket, options: { deliver?: (data: string, ws: WebSocket) => boolean; deaf?: Set<WebSocket> } = {}): SocketLike {
  const socket: SocketLike = {
    get readyState() {
      return ws.readyState;
    },
    send: (data) => {
      if (!options.deaf?.has(ws)) ws.send(data);
    },
    close: (code, reason) => ws.close(code, reason),
    onopen: null,
    onmessage: null,
    onclose: null,
    onerror: null,
  };
  ws.onopen = (ev) => socket.onopen?.(ev);
  ws.onmessage = (ev) => {
    const data = String(ev.data);
    if (options.deaf?.has(ws) || (options.deliver && !options.deliver(data, ws))) return;
    socket.onmessage?.({ data });
  };
  ws.onclose = (ev) => socket.onclose?.({ code: ev.code, reason: ev.reason });
  ws.onerror = (ev) => socket.onerror?.(ev);
  return socket;
}

const errorOf = (frames: ServerMessage[]) => frames.find((f): f is Extract<ServerMessage, { type: 'error' }> => f.type === 'error');

async function api(
  app: TestRelay,
  path: string,
  init: { method?: string; body?: unknown; token?: string | null } = {},
): Promise<{ status: number; body: Record<string, unknown>; text: string }> {
  const token = init.token === undefined ? TOKEN : init.token;
  const method = init.method ?? 'GET';
  const body = method === 'GET' ? undefined : init.body;
  const res = await fetch(`${app.url}${path}`, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Record<string, unknown>, text };
}

describe('classroom: joining with the class code', () => {
  it('30 participants join with the code and exchange messages in pairs and in the class group with nothing lost or doubled', async () => {
    const app = await classroomRelay();
    const people = await Promise.all(Array.from({ length: 30 }, (_, i) => joined(app, `Student ${i + 1}`, { device: i % 3 === 0 ? 'phone' : i % 3 === 1 ? 'tablet' : 'laptop' })));
    const pins = people.map((p) => p.m.pin);
    expect(app.store.userCount()).toBe(30);
    await until(() => people.every((p) => pins.every((pin) => pin === p.m.pin || p.m.directory.has(pin))), 'everyone knows everyone', 20_000);

    // Pairs: student 2k and 2k+1 write to each other.
    const expected = new Map<string, Set<string>>(pins.map((pin) => [pin, new Set<string>()]));
    for (let i = 0; i < 30; i += 2) {
      const [a, b] = [people[i]!, people[i + 1]!];
      expected.get(b.m.pin)!.add(a.m.sendText(b.m.pin, `hello ${b.m.name}, from ${a.m.name}`).id);
      expected.get(a.m.pin)!.add(b.m.sendText(a.m.pin, `hello ${a.m.name}, from ${b.m.name}`).id);
    }
    // The class group: made by the first student, then everyone writes once.
    const teacherPet = people[0]!;
    const group = teacherPet.m.createGroup('Class 4B', pins.slice(1));
    for (const p of people.slice(1)) expected.get(p.m.pin)!.add(group.message.id);
    await until(() => people.every((p) => p.m.groups.get(group.id) !== undefined), 'everyone holds the class group', 20_000);
    for (const p of people) {
      const sent = p.m.sendGroup(group.id, `${p.m.name} says hi to the class`);
      for (const q of people) if (q !== p) expected.get(q.m.pin)!.add(sent.id);
    }
    await until(() => people.every((p) => [...expected.get(p.m.pin)!].every((id) => received(p).has(id))), 'every message to arrive', 30_000);
    await until(() => people.every((p) => [...p.m.messages.values()].every((msg) => msg.direction === 'in' || msg.state !== 'sending')), 'every sender to hear "accepted"', 10_000);

    let deliveries = 0;
    for (const p of people) {
      const got = received(p);
      const want = expected.get(p.m.pin)!;
      // Each expected message shown exactly once, and nothing else.
      expect([...got.keys()].sort()).toEqual([...want].sort());
      expect([...got.values()].every((n) => n === 1)).toBe(true);
      // And the relay sent each envelope to it once.
      const envelopeIds = p.frames.filter((f) => f.type === 'envelope').map((f) => (f as Extract<ServerMessage, { type: 'envelope' }>).env.id);
      expect(new Set(envelopeIds).size).toBe(envelopeIds.length);
      deliveries += got.size;
      expect([...p.m.messages.values()].filter((msg) => msg.direction === 'out').every((msg) => msg.state !== 'failed')).toBe(true);
    }
    // 30 direct messages, 29 copies of the group note, 30 × 29 group messages.
    expect(deliveries).toBe(30 + 29 + 30 * 29);
    // The teacher's list: everyone online, with the device each claimed.
    const list = await api(app, '/api/lab/people');
    const listed = list.body.people as { pin: string; online: boolean; device: string | null }[];
    expect(listed.filter((p) => p.online)).toHaveLength(30);
    expect(listed.find((p) => p.pin === pins[0])?.device).toBe('phone');
    expect(listed.find((p) => p.pin === pins[1])?.device).toBe('tablet');
  }, 90_000);

  it('a wrong or a missing class code is refused with its stable code and close 4001, and nothing is registered', async () => {
    const dir = tempDir();
    // One registration per address: a refused login must not spend it.
    const app = await classroomRelay({ dataDir: dir, limits: { registrationsPerAddress: 1 } });
    const missing = await rawLogin(app, hello(undefined));
    expect(errorOf(missing.frames)?.code).toBe(ErrorCode.ClassCodeRequired);
    expect(errorOf(missing.frames)?.message).toMatch(/needs the class code/);
    expect(missing.close).toEqual({ code: CloseCode.LoginFailed, reason: `login failed: ${ErrorCode.ClassCodeRequired}` });

    const ids: Identity[] = [];
    for (const wrong of ['AAAAAA', 'K7M2QY']) {
      const id = newIdentity();
      ids.push(id);
      const refused = await rawLogin(app, hello(wrong), id);
      expect(errorOf(refused.frames)?.code).toBe(ErrorCode.ClassCodeWrong);
      expect(errorOf(refused.frames)?.message).toMatch(/not this room's class code/);
      expect(refused.frames.some((f) => f.type === 'welcome')).toBe(false);
      expect(refused.close.code).toBe(CloseCode.LoginFailed);
    }
    // A code that is not even a class code is refused by the protocol's parser, before the relay looks at it.
    const malformed = await rawLogin(app, hello('k7m2qx'));
    expect(errorOf(malformed.frames)?.code).toBe(ErrorCode.BadFrame);
    expect(errorOf(malformed.frames)?.message).toMatch(/class code must be 6 characters/);

    expect(app.store.userCount()).toBe(0);
    expect(app.relay.stats.registrationsLimited).toBe(0);
    // Nothing of the refused logins is stored: not their PINs, not their keys, not the name.
    const dump = dumpSqlite(join(dir, 'relay.db'));
    for (const id of ids) {
      expect(findSecret(dump.text, id.pin)).toEqual([]);
      expect(findSecret(dump.text, toB64(id.signPk))).toEqual([]);
    }
    expect(dump.text.includes('Mallory')).toBe(false);
    // The budget was not spent: the first right login from this address still registers.
    const ok = await rawLogin(app, (c, id) => hello(CODE)(c, id));
    expect(ok.frames.some((f) => f.type === 'welcome')).toBe(true);
  });

  it('a Messenger refused for its class code stops (no reconnect loop) and start() says why', async () => {
    const app = await classroomRelay();
    for (const [code, expected] of [
      [null, ErrorCode.ClassCodeRequired],
      ['AB2345', ErrorCode.ClassCodeWrong],
    ] as const) {
      const p = participant(app, 'Late', { code });
      const err = await p.m.start().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LoginRefused);
      expect((err as LoginRefused).code).toBe(expected);
      await new Promise((r) => setTimeout(r, 700)); // more than the backoff ceiling
      expect(p.sockets).toHaveLength(1);
      expect(p.m.status).toBe('offline');
    }
  });

  it('wrong codes are slowed per address: after the free tries even the right code is not compared, and other addresses are not affected', async () => {
    const app = await classroomRelay({ classroom: { code: CODE, limits: { freeFailures: 3, lockoutMinMs: 60_000 } } });
    const login = (address: string, code: string | undefined) =>
      new Promise<{ error: string | null; welcome: boolean; retryAfterMs?: number }>((resolve) => {
        const { client, server } = memoryPair();
        app.relay.handleConnection(server, address);
        const id = newIdentity();
        let error: string | null = null;
        let retryAfterMs: number | undefined;
        client.onmessage = (ev) => {
          const parsed = parseServerMessage(String(ev.data));
          if (!parsed.ok) return;
          const f = parsed.value;
          if (f.type === 'challenge') client.send(JSON.stringify(hello(code)(f, id)));
          if (f.type === 'error') {
            error = f.code;
            retryAfterMs = f.retryAfterMs;
          }
          if (f.type === 'welcome') {
            client.close();
            resolve({ error, welcome: true });
          }
        };
        client.onclose = () => resolve({ error, welcome: false, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
      });
    // One address brute-forcing: three free wrong tries, then locked out (the right code too).
    const codes = ['222222', '333333', '444444', '555555'];
    const results = [];
    for (const code of codes) results.push(await login('10.9.8.7', code));
    expect(results.map((r) => r.error)).toEqual([ErrorCode.ClassCodeWrong, ErrorCode.ClassCodeWrong, ErrorCode.ClassCodeWrong, ErrorCode.ClassCodeLocked]);
    const locked = await login('10.9.8.7', CODE);
    expect(locked).toMatchObject({ error: ErrorCode.ClassCodeLocked, welcome: false });
    expect(locked.retryAfterMs).toBeGreaterThan(50_000);
    // Many addresses: each gets its own three tries and is then locked; 40 addresses guessed 120 codes in all.
    for (let a = 0; a < 40; a++) for (let t = 0; t < 4; t++) await login(`10.1.${a}.1`, '666666');
    expect(app.classroom!.wrongCodes).toBe(3 + 40 * 3);
    // Another address with the right code joins at once.
    expect(await login('10.5.5.5', CODE)).toMatchObject({ error: null, welcome: true });
    // (29^6 ≈ 5.9e8 codes: 120 guesses find it with odds of 2 in 10 million.)
    expect(CLASS_CODE_ALPHABET.length ** 6).toBeGreaterThan(5e8);
  }, 30_000);

  it("the lab's own bots are not asked for the class code", async () => {
    const app = await classroomRelay();
    const bot = await app.lab.bot('Alice');
    expect(app.relay.onlinePins()).toContain(bot.pin);
  });

  it('a device kind outside phone/tablet/laptop (control characters, escapes, anything) is refused by the parser and nothing is registered', async () => {
    const app = await classroomRelay();
    for (const device of ['phone\u0007', '\u001b[31mlaptop', 'PHONE', 'x'.repeat(5000), 7]) {
      const refused = await rawLogin(app, hello(CODE, { device }));
      expect(errorOf(refused.frames)?.code).toBe(ErrorCode.BadFrame);
      expect(refused.frames.some((f) => f.type === 'welcome')).toBe(false);
    }
    expect(app.store.userCount()).toBe(0);
  });

  it('without classroom mode no code is asked (the two-tab lesson is unchanged) and /api/join says so', async () => {
    const app = await startTestRelay();
    cleanups.push(() => app.close());
    expect(app.host).toBe('127.0.0.1');
    expect(app.classroom).toBeNull();
    expect(await (await fetch(`${app.url}/api/join`)).json()).toEqual({ classCode: false });
    const p = participant(app as TestRelay, 'Alice', { code: null });
    await p.m.start();
    expect(p.m.status).toBe('online');
  });
});

describe('classroom: teacher controls', () => {
  it("kick closes exactly that person's session with 4008, the kicked client stops, and its PIN is refused until readmitted", async () => {
    const app = await classroomRelay();
    const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => joined(app, n)));
    const kicked = await api(app, `/api/lab/people/${bob!.m.pin}/kick`, { method: 'POST', body: {} });
    expect(kicked).toMatchObject({ status: 200, body: { kicked: bob!.m.pin, sessions: 1 } });
    await until(() => bob!.closes.includes(CloseCode.Kicked), 'Bob closed with 4008');
    expect(bob!.events.some((e) => e.type === 'error' && e.code === ErrorCode.Kicked && /teacher removed you/.test(e.message))).toBe(true);
    await new Promise((r) => setTimeout(r, 700)); // past the backoff ceiling: no reconnect
    expect(bob!.sockets).toHaveLength(1);
    expect(alice!.closes).toEqual([]);
    expect(carol!.closes).toEqual([]);
    expect(app.relay.onlinePins().sort()).toEqual([alice!.m.pin, carol!.m.pin].sort());
    const people = (await api(app, '/api/lab/people')).body.people as { pin: string; kicked: boolean; online: boolean }[];
    expect(people.find((p) => p.pin === bob!.m.pin)).toMatchObject({ kicked: true, online: false });

    // Bob's client started again (a reload) is refused with the same code, and stops.
    const again = participant(app, 'Bob', { storage: bob!.storage });
    const err = await again.m.start().then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as LoginRefused).code).toBe(ErrorCode.Kicked);
    await until(() => again.closes.length === 1, 'the refused socket closed');
    expect(again.closes).toEqual([CloseCode.Kicked]);

    // Readmitted, he joins again with the code.
    expect((await api(app, `/api/lab/people/${bob!.m.pin}/readmit`, { method: 'POST', body: {} })).status).toBe(200);
    const back = participant(app, 'Bob', { storage: bob!.storage });
    await back.m.start();
    expect(app.relay.onlinePins()).toContain(bob!.m.pin);
  });

  it('a kicked identity reconnecting in a tight loop from a raw socket is refused every time and soon locked out with the wrong-code lockout', async () => {
    const app = await classroomRelay({ classroom: { code: CODE, limits: { freeFailures: 3, lockoutMinMs: 60_000 } } });
    const bob = await joined(app, 'Bob');
    const id = bob.m.identity;
    bob.m.stop();
    await until(() => !app.relay.onlinePins().includes(id.pin), 'Bob offline');
    expect((await api(app, `/api/lab/people/${id.pin}/kick`, { method: 'POST', body: {} })).body).toMatchObject({ sessions: 0 });
    const codes: (string | undefined)[] = [];
    for (let i = 0; i < 10; i++) codes.push(errorOf((await rawLogin(app, hello(CODE), id)).frames)?.code);
    expect(codes.slice(0, 3)).toEqual([ErrorCode.Kicked, ErrorCode.Kicked, ErrorCode.Kicked]);
    expect(codes.slice(3).every((c) => c === ErrorCode.ClassCodeLocked)).toBe(true);
    expect(app.relay.onlinePins()).not.toContain(id.pin);
  });

  it("the teacher's controls need the admin token, refuse bad PINs and the lab's bots, and reset lets the kicked back in", async () => {
    const app = await classroomRelay();
    const bob = await joined(app, 'Bob');
    for (const [method, path] of [
      ['GET', '/api/lab/classroom'],
      ['POST', '/api/lab/classroom'],
      ['POST', `/api/lab/people/${bob.m.pin}/kick`],
      ['POST', `/api/lab/people/${bob.m.pin}/readmit`],
    ] as const) {
      expect((await api(app, path, { method, body: {}, token: null })).status).toBe(401);
    }
    expect(app.relay.onlinePins()).toContain(bob.m.pin);
    expect((await api(app, '/api/lab/people/not-a-pin/kick', { method: 'POST', body: {} })).status).toBe(400);
    expect((await api(app, '/api/lab/people/0000ABCD/kick', { method: 'POST', body: {} })).status).toBe(404);
    const bot = await app.lab.bot('Alice');
    const kickBot = await api(app, `/api/lab/people/${bot.pin}/kick`, { method: 'POST', body: {} });
    expect(kickBot.status).toBe(409);
    expect(kickBot.body.message).toMatch(/one of the lab's bots/);
    expect(app.relay.onlinePins()).toContain(bot.pin);

    await api(app, `/api/lab/people/${bob.m.pin}/kick`, { method: 'POST', body: {} });
    expect(app.relay.isKicked(bob.m.pin)).toBe(true);
    expect((await api(app, '/api/lab/reset', { method: 'POST', body: { confirm: 'reset' } })).status).toBe(200);
    expect(app.relay.isKicked(bob.m.pin)).toBe(false);
    const back = participant(app, 'Bob', { storage: bob.storage });
    await back.m.start();
    expect(app.relay.onlinePins()).toContain(bob.m.pin);
  });

  it("hiding the class code takes it, the links and the QR code out of the panel's answer; joining with it still works", async () => {
    const app = await classroomRelay();
    const shown = await api(app, '/api/lab/classroom');
    expect(shown.body).toMatchObject({ classroom: true, hidden: false, code: CODE, links: [`${app.url}/#code=${CODE}`] });
    expect(String(shown.body.qr)).toMatch(/^data:image\/svg\+xml;base64,/);
    expect(shown.text.includes(TOKEN)).toBe(false);
    const hidden = await api(app, '/api/lab/classroom', { method: 'POST', body: { hidden: true } });
    expect(hidden.body).toEqual({ classroom: true, hidden: true, code: null, links: [], qr: null, wrongCodes: 0 });
    expect((await api(app, '/api/lab/classroom')).text.includes(CODE)).toBe(false);
    expect((await api(app, '/api/lab/classroom', { method: 'POST', body: { hidden: 'yes' } })).status).toBe(400);
    const late = await joined(app, 'Late');
    expect(late.m.status).toBe('online');
    expect((await api(app, '/api/lab/classroom', { method: 'POST', body: { hidden: false } })).body.code).toBe(CODE);
    // Outside classroom mode there is no code to hide.
    const plain = await startTestRelay();
    cleanups.push(() => plain.close());
    expect((await api(plain as TestRelay, '/api/lab/classroom')).body).toEqual({ classroom: false });
    expect((await api(plain as TestRelay, '/api/lab/classroom', { method: 'POST', body: { hidden: true } })).status).toBe(409);
  });
});

describe('classroom: phones sleep and come back', () => {
  it('a socket dropped after the relay stored a message but before the sender heard it: resent on reconnect, accepted as a duplicate, shown once', async () => {
    const app = await classroomRelay();
    const bob = await joined(app, 'Bob');
    let dropNextAccepted = false;
    const alice = await joined(app, 'Alice', {
      // The sender's socket: the first "accepted" after the switch is swallowed and the socket cut (the phone slept).
      wrap: (ws) =>
        proxy(ws, {
          deliver: (data, socket) => {
            if (!dropNextAccepted || !data.includes('"type":"accepted"')) return true;
            dropNextAccepted = false;
            socket.terminate();
            return false;
          },
        }),
    });
    await until(() => alice.m.directory.has(bob.m.pin), 'Alice knows Bob');
    dropNextAccepted = true;
    const sent = alice.m.sendText(bob.m.pin, 'sent while falling asleep');
    await until(() => alice.sockets.length === 2 && alice.m.status === 'online', 'Alice reconnected');
    // The outbox went again after the login; the relay knew the id and said so.
    await until(() => alice.frames.some((f) => f.type === 'accepted' && f.id === sent.id && f.duplicate), 'the relay answers the resend as a duplicate');
    expect(alice.frames.filter((f) => f.type === 'accepted' && f.id === sent.id).map((f) => (f as { duplicate: boolean }).duplicate)).toEqual([false, true]);
    await until(() => alice.m.messages.get(sent.id)?.state !== 'sending', 'Alice sees it sent');
    expect(alice.m.outboxSize()).toBe(0);
    await until(() => received(bob).has(sent.id), 'Bob gets it');
    await new Promise((r) => setTimeout(r, 300));
    expect(received(bob).get(sent.id)).toBe(1);
    expect(bob.frames.filter((f) => f.type === 'envelope' && f.env.id === sent.id)).toHaveLength(1);
    expect(bob.events.filter((e) => e.type === 'dropped')).toEqual([]);
  });

  it('messages sent while the socket was cut wait in the outbox and go on reconnect; a sleeping recipient gets its queue on wake, in order, none lost', async () => {
    const app = await classroomRelay();
    const alice = await joined(app, 'Alice');
    const bob = await joined(app, 'Bob');
    await until(() => alice.m.directory.has(bob.m.pin) && bob.m.directory.has(alice.m.pin), 'they know each other');
    // Alice's socket dies under her; she writes three messages before the reconnect.
    alice.sockets[0]!.terminate();
    await until(() => alice.m.status === 'offline', 'Alice offline');
    const early = [1, 2, 3].map((n) => alice.m.sendText(bob.m.pin, `offline ${n}`).id);
    expect(early.every((id) => alice.m.messages.get(id)?.state === 'sending')).toBe(true);
    await until(() => early.every((id) => received(bob).has(id)), 'Bob gets the outbox');
    // Bob sleeps: his client stops; Alice writes five more, queued by the relay.
    bob.m.stop();
    await until(() => !app.relay.onlinePins().includes(bob.m.pin), 'Bob offline');
    const queued = [1, 2, 3, 4, 5].map((n) => alice.m.sendText(bob.m.pin, `while you slept ${n}`).id);
    await until(() => queued.every((id) => alice.m.messages.get(id)?.state === 'sent'), 'the relay accepted them');
    const woken = participant(app, 'Bob', { storage: bob.storage });
    await woken.m.start();
    await until(() => queued.every((id) => received(woken).has(id)), 'Bob gets the queue');
    const order = woken.events.flatMap((e) => (e.type === 'message' && queued.includes(e.message.id) ? [e.message.id] : []));
    expect(order).toEqual(queued);
    expect([...received(woken).values()].every((n) => n === 1)).toBe(true);
    // The three sent before he slept are not delivered again.
    expect(woken.frames.filter((f) => f.type === 'envelope' && early.includes(f.env.id))).toEqual([]);
  });

  it('wake() replaces a socket that looks open but is dead (no pong), and what was queued meanwhile arrives', async () => {
    const app = await classroomRelay();
    const deaf = new Set<WebSocket>();
    const bob = await joined(app, 'Bob', { wrap: (ws) => proxy(ws, { deaf }) });
    const alice = await joined(app, 'Alice');
    await until(() => alice.m.directory.has(bob.m.pin) && bob.m.directory.has(alice.m.pin), 'they know each other');
    deaf.add(bob.sockets[0]!);
    const during = alice.m.sendText(bob.m.pin, 'while your screen was off').id;
    await until(() => alice.m.messages.get(during)?.state !== 'sending', 'accepted');
    expect(received(bob).has(during)).toBe(false);
    expect(bob.m.status).toBe('online'); // it still thinks so
    bob.m.wake(); // the screen comes on: the old socket does not answer the ping, so a new one is made
    await until(() => bob.sockets.length === 2, 'a new socket after the unanswered ping');
    await until(() => received(bob).has(during), 'the queued message arrives');
    expect(received(bob).get(during)).toBe(1);
    expect(bob.m.reconnects).toBe(1);
  });
});

describe('classroom: LAN addresses, Host check and start-up', () => {
  const lan = {
    eth0: [{ address: '192.168.1.20', family: 'IPv4', internal: false, netmask: '255.255.255.0', mac: '00:00:00:00:00:00', cidr: '192.168.1.20/24' }],
    lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '255.0.0.0', mac: '00:00:00:00:00:00', cidr: '127.0.0.1/8' }],
  } as unknown as NodeJS.Dict<import('node:os').NetworkInterfaceInfo[]>;

  it('the Host check accepts the printed LAN addresses with the port and refuses any other name', async () => {
    const hosts = allowedHosts({ bind: '0.0.0.0', port: 3000, interfaces: lan });
    expect(hosts.lan).toEqual(['192.168.1.20']);
    const lines = classroomLines({ lan: hosts.lan, port: 3000, code: CODE, fallbackBase: 'http://127.0.0.1:3000' }).join('\n');
    expect(lines).toContain('http://192.168.1.20:3000/#code=K7M2QX');
    expect(lines).toContain('class code:         K7M 2QX');
    // No LAN address (not on a network yet, or --host on loopback): the loopback link, said to work here only.
    const alone = classroomLines({ lan: [], port: 3000, code: CODE, fallbackBase: 'http://127.0.0.1:3000' }).join('\n');
    expect(alone).toMatch(/no LAN address to offer[^\n]*\n\s+http:\/\/127\.0\.0\.1:3000\/#code=K7M2QX/);
    expect(checkHostAndOrigin(hosts, '192.168.1.20:3000', 'http://192.168.1.20:3000')).toEqual({ ok: true });
    expect(checkHostAndOrigin(hosts, '192.168.1.21:3000', undefined).ok).toBe(false);
    expect(checkHostAndOrigin(hosts, '192.168.1.20:3001', undefined).ok).toBe(false);
    expect(checkHostAndOrigin(hosts, 'evil.example:3000', 'http://evil.example:3000').ok).toBe(false);
    expect(checkHostAndOrigin(hosts, '192.168.1.20:3000', 'http://evil.example:3000').ok).toBe(false);
    // A real request to a classroom relay with a Host it does not serve: 403, no page.
    const app = await classroomRelay();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: app.port, path: '/', headers: { Host: `192.168.1.21:${app.port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
  });

  it('class codes are random, six characters of the unambiguous alphabet, and typed codes are normalized', () => {
    const codes = new Set(Array.from({ length: 200 }, () => newClassCode()));
    expect(codes.size).toBeGreaterThan(195);
    for (const code of codes) expect(code).toMatch(/^[23456789ABCDEFGHJKMNPQRSTWXYZ]{6}$/);
    expect(normalizeClassCode(' k7m-2qx ')).toBe('K7M2QX');
    expect(normalizeClassCode('K7M2Q0')).toBeNull();
    expect(normalizeClassCode('K7M2QXX')).toBeNull();
    const guard = new Classroom(CODE);
    expect(guard.check('K7M2QX', '10.0.0.1')).toEqual({ ok: true });
  });

  it('npm start -- --classroom listens on every interface and prints the class code, the join link and a QR code that decodes to it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--classroom', '--ephemeral', '--port', '0', '--quiet'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    cleanups.push(() => child.kill('SIGKILL'));
    const deadline = Date.now() + 30_000;
    while (!out.includes('Press Ctrl-C')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no start banner: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const code = /class code:\s+([A-Z0-9]{3}) ([A-Z0-9]{3})/.exec(out);
    expect(code).not.toBeNull();
    const classCode = `${code![1]}${code![2]}`;
    expect(normalizeClassCode(classCode)).toBe(classCode);
    const port = Number(/Alice's chat:\s+http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)![1]);
    const links = [...out.matchAll(/^\s+(http:\/\/\S+\/#code=[A-Z0-9]{6})$/gm)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(0);
    expect(links.every((l) => l.endsWith(`/#code=${classCode}`) && l.includes(`:${port}/`))).toBe(true);
    // The QR code in the terminal (light modules drawn, for a dark terminal) decodes to the first link.
    const qrLines = out
      .split('\n')
      .filter((l) => /^ {2}[█▀▄ ]{20,}$/.test(l))
      .map((l) => l.slice(2));
    expect(decodeTerminalQr(qrLines)).toBe(links[0]);
    // Only loopback is spoken to: the relay answers there, and wants the code.
    expect((await fetch(`http://127.0.0.1:${port}/api/join`).then((r) => r.json())) as unknown).toEqual({ classCode: true });
  }, 40_000);

  it('--class-code keeps a chosen code (typed loosely) and refuses one that is not a class code, with exit 2', async () => {
    const run = (...args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--ephemeral', '--port', '0', '--host', '127.0.0.1', '--quiet', ...args], {
          cwd: root,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('Press Ctrl-C')) child.kill('SIGTERM');
        });
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('exit', (code) => resolve({ code, out }));
        cleanups.push(() => child.kill('SIGKILL'));
      });
    const bad = await run('--class-code', 'K7M2Q0');
    expect(bad.code).toBe(2);
    expect(bad.out).toMatch(/--class-code must be 6 characters/);
    const kept = await run('--class-code', 'k7m-2qx');
    expect(kept.out).toMatch(/class code:\s+K7M 2QX/);
    expect(kept.out).toMatch(/#code=K7M2QX/);
  }, 40_000);

  it('the terminal QR code of a join link decodes back to it', () => {
    const url = joinUrl('http://10.20.30.40:3000', CODE);
    expect(decodeTerminalQr(terminalQr(url).split('\n').filter(Boolean))).toBe(url);
  });
});

/** Read a QR code drawn in half blocks (a printed character is two light modules, a space two dark) with a real decoder. */
function decodeTerminalQr(lines: string[]): string {
  const rows: boolean[][] = [];
  for (const line of lines) {
    const top: boolean[] = [];
    const bottom: boolean[] = [];
    for (const ch of line) {
      top.push(ch === ' ' || ch === '▄');
      bottom.push(ch === ' ' || ch === '▀');
    }
    rows.push(top, bottom);
  }
  const scale = 6;
  const pad = 4;
  const width = (rows[0]!.length + 2 * pad) * scale;
  const height = (rows.length + 2 * pad) * scale;
  const data = new Uint8Array(width * height * 4).fill(255);
  for (const [y, row] of rows.entries()) {
    for (const [x, dark] of row.entries()) {
      if (!dark) continue;
      for (let dy = 0; dy < scale; dy++)
        for (let dx = 0; dx < scale; dx++) {
          const i = (((y + pad) * scale + dy) * width + (x + pad) * scale + dx) * 4;
          data[i] = 0;
          data[i + 1] = 0;
          data[i + 2] = 0;
        }
    }
  }
  return decodeQR({ width, height, data });
}
