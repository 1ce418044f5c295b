/**
 * Issue 4, item 3: identity and access. Speaking as another PIN, replaying a
 * captured login, reusing a challenge, taking a PIN registered to another key,
 * cross-site WebSocket hijacking, the teacher's token (required, compared in
 * constant time), and no key, token or plaintext ever written to a log.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { cryptoReady, fromB64, newIdentity, toB64, type Identity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { CloseCode, Envelope, ErrorCode } from '../../shared/protocol.ts';
import { tokenMatches } from '../../server/http.ts';
import { memoryLogger } from '../../server/log.ts';
import type { EscrowKeyFile } from '../../server/regulator.ts';
import type { ChatMessage } from '../../client/core/messenger.ts';
import { startTestRelay, until, user, knows, type TestUser } from '../helpers/relay.ts';
import { findSecret } from '../helpers/scan.ts';
import { RawClient, reportFigures, sleep } from '../reliability/support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
type Relay = Awaited<ReturnType<typeof startTestRelay>>;

let app: Relay;
const TOKEN = 'test-admin-token';
beforeAll(async () => {
  await cryptoReady();
  // Many wrong tokens from one address in a row: the lockout (tested in hostile-edges.test.ts) is pushed out of the way.
  app = await startTestRelay({ limits: { adminFreeFailures: 1000 } });
});
afterAll(async () => {
  await app?.close();
});
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A raw client logged in as a fresh identity. */
async function loggedIn(name: string, id: Identity = newIdentity()): Promise<{ c: RawClient; id: Identity }> {
  const c = await RawClient.connect(app.wsUrl);
  cleanup.push(() => c.close());
  await c.login(id, name);
  return { c, id };
}

// ---------------------------------------------------------------------------

describe('identity: no one speaks as another PIN', () => {
  it('an envelope whose sender is another PIN is refused with "impersonation", never stored and never delivered', async () => {
    const alice = await loggedIn('Alice');
    const bob = await loggedIn('Bob');
    const mallory = await loggedIn('Mallory');
    // Bob is in Mallory's welcome page, or in a presence frame if his own login's batch went out after hers.
    const seesBob = (f: (typeof mallory.c.frames)[number]) => (f.type === 'welcome' ? f.directory : f.type === 'presence' ? f.users : []).some((u) => u.pin === bob.id.pin);
    await mallory.c.waitFor(() => mallory.c.frames.some(seesBob), 'Mallory to see Bob');
    const queued = app.store.queueDepth();
    // Sealed by Mallory's keys but naming Alice as the sender (and signed by Mallory, not Alice).
    const { env } = sealEnvelope({ sender: { ...mallory.id, pin: alice.id.pin }, to: [{ pin: bob.id.pin, signPk: bob.id.signPk }], conv: 'dm', body: { text: 'I am Alice' } });
    const from = mallory.c.frames.length;
    mallory.c.send({ type: 'send', env });
    const error = await mallory.c.next('error', from);
    expect(error).toMatchObject({ code: ErrorCode.Impersonation, ref: env.id });
    expect(mallory.c.frames.slice(from).some((f) => f.type === 'accepted')).toBe(false);
    expect(app.store.seenSender(env.id)).toBeUndefined();
    expect(app.store.queueDepth()).toBe(queued);
    await sleep(100);
    expect(bob.c.frames.some((f) => f.type === 'envelope')).toBe(false);
  });

  it('an envelope really signed by Alice, captured from the wire and sent again by Mallory, is refused and not delivered a second time', async () => {
    const a: TestUser = await user(app.wsUrl, 'Alice2');
    const b: TestUser = await user(app.wsUrl, 'Bob2');
    cleanup.push(() => {
      a.m.stop();
      b.m.stop();
    });
    await knows(a, b.m.pin);
    const sent = a.m.sendText([b.m.pin], 'only once');
    await until(() => b.m.messages.has(sent.id), 'Bob2 to get it');
    const captured = Envelope.parse(b.m.wire.find((w) => w.env.id === sent.id)!.env);
    const mallory = await loggedIn('Mallory2');
    const from = mallory.c.frames.length;
    mallory.c.send({ type: 'send', env: captured });
    const error = await mallory.c.next('error', from);
    expect(error.code).toBe(ErrorCode.Impersonation);
    await sleep(100);
    expect(b.m.wire.filter((w) => w.env.id === sent.id && w.direction === 'in')).toHaveLength(1);
  });
});

describe('login: challenges are fresh and single-use', () => {
  it('every connection gets a different 32-byte challenge', async () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const c = await RawClient.connect(app.wsUrl);
      nonces.add(c.challenge!.nonce);
      expect(fromB64(c.challenge!.nonce)).toHaveLength(32);
      c.close();
    }
    expect(nonces.size).toBe(30);
  });

  it('a login signature captured from one connection and replayed on a new one is refused: bad_signature, close 4001 with a reason, no welcome', async () => {
    const alice = newIdentity();
    const first = await RawClient.connect(app.wsUrl);
    const captured = first.hello(alice, 'Alice');
    first.send(captured);
    await first.next('welcome');
    first.close();

    const attacker = await RawClient.connect(app.wsUrl);
    attacker.send(captured);
    const error = await attacker.next('error');
    const closed = await attacker.waitClosed();
    expect(error.code).toBe(ErrorCode.BadSignature);
    expect(closed).toEqual({ code: CloseCode.LoginFailed, reason: 'login failed: bad signature' });
    expect(attacker.frames.some((f) => f.type === 'welcome')).toBe(false);
  });

  it('a second hello on a logged-in connection is refused with already_logged_in and does not change who the connection is', async () => {
    const alice = newIdentity();
    const bob = newIdentity();
    const c = await RawClient.connect(app.wsUrl);
    cleanup.push(() => c.close());
    await c.login(alice, 'Alice3');
    const from = c.frames.length;
    c.send(c.hello(bob, 'Bob3')); // signed by Bob over this connection's (already used) challenge
    const error = await c.next('error', from);
    expect(error.code).toBe(ErrorCode.AlreadyLoggedIn);
    expect(c.frames.slice(from).some((f) => f.type === 'welcome')).toBe(false);
    expect(app.relay.directory().some((d) => d.pin === bob.pin)).toBe(false);
  });

  it('after a failed hello the challenge is spent: a correct signature over the same challenge, sent right behind it, gets no welcome', async () => {
    const alice = newIdentity();
    const c = await RawClient.connect(app.wsUrl);
    const good = c.hello(alice, 'Alice4');
    const bad = { ...good, sig: toB64(new Uint8Array(64).fill(9)) };
    c.send(bad);
    c.send(good); // same challenge, valid signature: must not log in
    const closed = await c.waitClosed();
    expect(c.frames.filter((f) => f.type === 'error').map((f) => (f as { code: string }).code)).toEqual([ErrorCode.BadSignature]);
    expect(c.frames.some((f) => f.type === 'welcome')).toBe(false);
    expect(closed.code).toBe(CloseCode.LoginFailed);
    expect(app.relay.directory().some((d) => d.pin === alice.pin)).toBe(false);
  });

  it('a login whose PIN is already registered to another public key is refused with key_mismatch and close 4001, and the directory keeps the first key', async () => {
    const victim = newIdentity(); // the key that "owns" the PIN first
    const claimant = newIdentity();
    // Simulate a PIN collision (2^32 keygens to find for real): the claimant's PIN, registered to the victim's key.
    app.store.upsertUser(claimant.pin, toB64(victim.signPk), 'First owner', Date.now());
    const c = await RawClient.connect(app.wsUrl);
    c.send(c.hello(claimant, 'Claimant'));
    const error = await c.next('error');
    const closed = await c.waitClosed();
    expect(error.code).toBe(ErrorCode.KeyMismatch);
    expect(closed).toEqual({ code: CloseCode.LoginFailed, reason: 'login failed: PIN registered to another key' });
    expect(c.frames.some((f) => f.type === 'welcome')).toBe(false);
    expect(app.store.getUser(claimant.pin)?.pk).toBe(toB64(victim.signPk));
  });
});

// ---------------------------------------------------------------------------

/** Try a WebSocket upgrade; resolve with 'open' or the HTTP status that refused it. */
function upgrade(url: string, origin?: string, host?: string): Promise<'open' | number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { ...(origin === undefined ? {} : { origin }), ...(host === undefined ? {} : { headers: { host } }) });
    ws.on('open', () => {
      ws.terminate();
      resolve('open');
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.on('error', () => {});
  });
}

describe('cross-site WebSocket hijacking', () => {
  it('an upgrade from another origin is refused with 403 on every socket path, while same-origin and no-origin upgrades open: the Origin must be exactly http:// the Host, and the Host one the relay serves', async () => {
    const port = app.port;
    const results: Record<string, 'open' | number> = {};
    for (const path of ['/ws', '/ws/relay-view', '/ws/regulator']) {
      const url = `ws://127.0.0.1:${port}${path}`;
      results[`${path} same origin`] = await upgrade(url, `http://127.0.0.1:${port}`);
      results[`${path} localhost, same origin`] = await upgrade(url, `http://localhost:${port}`, `localhost:${port}`);
      results[`${path} no origin`] = await upgrade(url);
      results[`${path} evil.example`] = await upgrade(url, 'http://evil.example');
      results[`${path} other port`] = await upgrade(url, `http://127.0.0.1:${port + 1}`);
      results[`${path} null`] = await upgrade(url, 'null');
      results[`${path} other host, same port`] = await upgrade(url, `http://localhost:${port}`);
      // Same host and port, other scheme: https: is only for a --public-host (a TLS proxy in front).
      results[`${path} https same host`] = await upgrade(url, `https://127.0.0.1:${port}`);
      // DNS rebinding: Host and Origin agree, but the name is not one this relay serves.
      results[`${path} rebinding`] = await upgrade(url, `http://evil.example:${port}`, `evil.example:${port}`);
      results[`${path} rebinding, no origin`] = await upgrade(url, undefined, `evil.example:${port}`);
    }
    for (const [k, v] of Object.entries(results)) {
      if (k.endsWith('same origin') || (k.endsWith('no origin') && !k.includes('rebinding'))) expect(v, k).toBe('open');
      else expect(v, k).toBe(403);
    }
  });
});

// ---------------------------------------------------------------------------

describe("the teacher's token", () => {
  const routes: [string, string][] = [
    ['GET', '/api/regulator/tap'],
    ['POST', '/api/regulator/tap'],
    ['GET', '/api/regulator/intercepts'],
    ['GET', '/api/regulator/audit'],
    ['GET', '/api/regulator/archive.jsonl'],
    ['GET', '/api/regulator/escrow-key'],
  ];
  const call = (method: string, path: string, auth?: string) =>
    fetch(`${app.url}${path}`, {
      method,
      headers: { ...(auth ? { authorization: auth } : {}), 'content-type': 'application/json' },
      ...(method === 'POST' ? { body: JSON.stringify({ tap: true, scope: 'all', announced: false }) } : {}),
    });

  it('every teacher endpoint answers 401 without a token and 403 with a wrong one, and nothing changes: no tap, no export in the audit log', async () => {
    const auditBefore = app.regulator.auditLog().length;
    for (const [method, path] of routes) {
      const none = await call(method, path);
      expect(none.status, `${method} ${path} without a token`).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe('Bearer');
      expect((await call(method, path, 'Basic dGVzdDp0ZXN0')).status, `${method} ${path} basic auth`).toBe(401);
      expect((await call(method, path, `Bearer ${TOKEN}x`)).status, `${method} ${path} wrong token`).toBe(403);
      expect((await call(method, path, `Bearer ${TOKEN.slice(0, -1)}`)).status, `${method} ${path} token prefix`).toBe(403);
      expect((await call(method, path, `Bearer ${TOKEN.toUpperCase()}`)).status, `${method} ${path} other case`).toBe(403);
    }
    expect(app.relay.getPolicy().tap).toBe(false);
    expect(app.regulator.auditLog().length).toBe(auditBefore);
    // And the right token works (so the refusals above are about the token, not a broken route).
    expect((await call('GET', '/api/regulator/tap', `Bearer ${TOKEN}`)).status).toBe(200);
  });

  it('the regulator console socket closes with 1008 on a wrong token and sends no intercept', async () => {
    const ws = new WebSocket(`${app.wsUrl}/regulator`);
    const frames: string[] = [];
    ws.on('message', (d) => frames.push(d.toString()));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'auth', token: `${TOKEN}!` }));
    const code = await new Promise<number>((r) => ws.once('close', (c) => r(c)));
    expect(code).toBe(CloseCode.PolicyViolation);
    expect(frames.map((f) => JSON.parse(f).type)).toEqual(['error']);
  });

  it('tokenMatches accepts only the exact token, and never throws on a missing, longer, shorter or non-ASCII one', () => {
    const t = 'a3f9c2e17b5d40a8a3f9c2e17b5d40a8';
    expect(tokenMatches(t, t)).toBe(true);
    expect(tokenMatches(`${t}`.slice(0), t)).toBe(true);
    for (const wrong of [undefined, '', t.slice(0, -1), `${t}0`, t.toUpperCase(), ` ${t}`, `${t.slice(0, -1)}9`, 'x'.repeat(10_000), 'ä'.repeat(32)]) {
      expect(tokenMatches(wrong, t), JSON.stringify(wrong)?.slice(0, 40)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------
// Logs: a whole session, then a search of every log line for every secret.

interface SessionSecrets {
  token: string;
  secrets: { what: string; value: string | Uint8Array }[];
}

/** Logins, a tap turned on, messages (1:1 and group), key and archive export, bad tokens, tap off. */
async function fullSession(baseUrl: string, token: string): Promise<SessionSecrets> {
  const wsUrl = `${baseUrl.replace('http', 'ws')}/ws`;
  const a = await user(wsUrl, 'Ada');
  const b = await user(wsUrl, 'Ben');
  const c = await user(wsUrl, 'Cy');
  await knows(a, b.m.pin, c.m.pin);
  await knows(b, a.m.pin, c.m.pin);
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const texts = ['plain secret before the tap 7f3a', 'plain secret under the tap 91bc', 'group secret under the tap 22de', 'reply secret 5e5e'];
  const sendAndWait = async (from: TestUser, to: TestUser[], text: string, group?: string) => {
    let msg: ChatMessage;
    if (group !== undefined) {
      const made = from.m.createGroup(
        group,
        to.map((u) => u.m.pin),
      );
      await until(() => to.every((u) => u.m.messages.has(made.message.id)), `the group note of "${group}" delivered`);
      msg = from.m.sendGroup(made.id, text);
    } else {
      msg = from.m.sendText(
        to.map((u) => u.m.pin),
        text,
      );
    }
    await until(() => to.every((u) => u.m.messages.get(msg.id)?.text === text), `"${text}" delivered`);
  };
  await sendAndWait(a, [b], texts[0]!);
  const on = await fetch(`${baseUrl}/api/regulator/tap`, { method: 'POST', headers: auth, body: JSON.stringify({ tap: true, scope: 'all', announced: true }) });
  expect(on.status).toBe(200);
  await until(() => a.m.policy?.tap === true && b.m.policy?.tap === true && c.m.policy?.tap === true, 'the tap policy to reach everyone');
  await sendAndWait(a, [b], texts[1]!);
  await sendAndWait(b, [a, c], texts[2]!, 'Secret club');
  await sendAndWait(c, [a], texts[3]!);
  const key = (await (await fetch(`${baseUrl}/api/regulator/escrow-key`, { headers: auth })).json()) as EscrowKeyFile;
  const archive = await (await fetch(`${baseUrl}/api/regulator/archive.jsonl`, { headers: auth })).text();
  expect(archive.split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(4);
  // Wrong tokens, as a curious student would try them.
  for (const bad of [`${token}x`, token.slice(1), 'admin'])
    await fetch(`${baseUrl}/api/regulator/tap`, { method: 'POST', headers: { ...auth, authorization: `Bearer ${bad}` }, body: '{"tap":false}' });
  await fetch(`${baseUrl}/api/regulator/tap`, { headers: { authorization: `Bearer ${token}` }, method: 'POST', body: 'not json' });
  const console = new WebSocket(`${wsUrl}/regulator`);
  await new Promise((r) => console.once('open', r));
  console.send(JSON.stringify({ type: 'auth', token }));
  await new Promise((r) => console.once('message', r));
  console.close();
  const off = await fetch(`${baseUrl}/api/regulator/tap`, { method: 'POST', headers: auth, body: JSON.stringify({ tap: false }) });
  expect(off.status).toBe(200);
  for (const u of [a, b, c]) u.m.stop();

  const secrets: SessionSecrets['secrets'] = [{ what: 'escrow secret key', value: fromB64(key.sk) }];
  for (const u of [a, b, c]) {
    secrets.push({ what: `${u.m.name} signing secret key`, value: u.m.identity.signSk });
    secrets.push({ what: `${u.m.name} signing seed`, value: u.m.identity.signSk.slice(0, 32) });
    secrets.push({ what: `${u.m.name} box secret key`, value: u.m.identity.boxSk });
  }
  for (const text of texts) secrets.push({ what: `plaintext "${text}"`, value: text });
  return { token, secrets };
}

function scan(log: string, session: SessionSecrets): string[] {
  const found: string[] = [];
  for (const s of session.secrets) if (findSecret(log, s.value).length) found.push(s.what);
  return found;
}

describe('logs', () => {
  it('a whole session (logins, tap on, messages, key and archive export, wrong tokens) writes no key, token or plaintext to the relay log', async () => {
    const log = memoryLogger();
    const token = toB64(newIdentity().signPk.slice(0, 24)).replace(/[+/=]/g, 'x');
    const dir = mkdtempSync(join(tmpdir(), 'bdl-logs-'));
    const relay = await startTestRelay({ log, adminToken: token, dataDir: dir });
    cleanup.push(async () => {
      await relay.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const session = await fullSession(relay.url, token);
    const text = log.lines.join('\n');
    const leaks = scan(text, session);
    const tokenHits = findSecret(text, token);
    reportFigures('log scan (in process, memoryLogger)', {
      'log lines': log.lines.length,
      'secrets searched (each in hex and base64)': session.secrets.length + 1,
      'secrets found': leaks.length + tokenHits.length,
    });
    // It did log, and the lines a careless logger would fill with secrets are there: logins, the tap,
    // the key export, refused admin requests.
    for (const line of [' login ', ' tap changed ', ' escrow key exported ', ' admin request refused ']) expect(text).toContain(line);
    expect(leaks).toEqual([]);
    expect(tokenHits).toEqual([]);
    // The scan itself finds a leak when there is one (a key in base64 or hex, the token).
    const escrow = session.secrets[0]!.value as Uint8Array;
    expect(scan(`${text}\nkey=${toB64(escrow)}`, session)).toEqual(['escrow secret key']);
    expect(scan(`${text}\nkey=${Buffer.from(escrow).toString('hex')}`, session)).toEqual(['escrow secret key']);
    expect(findSecret(`${text} Bearer ${token}`, token)).not.toEqual([]);
  });

  it("the real server's output holds the admin token exactly once, in the teacher's console link, and no key or plaintext", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bdl-main-'));
    const token = `tok-${toB64(newIdentity().signPk.slice(0, 18)).replace(/[+/=]/g, 'y')}`;
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', '--data', dir, '--admin-token', token], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanup.push(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 20_000;
    while (!/Alice's chat: +http:\/\/127\.0\.0\.1:(\d+)\//.test(out)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start: ${out}`);
      await sleep(50);
    }
    const port = Number(/Alice's chat: +http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)![1]);
    const session = await fullSession(`http://127.0.0.1:${port}`, token);
    await sleep(200);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));

    const lines = out.split('\n');
    const withToken = lines.filter((l) => findSecret(l, token).length > 0);
    const leaks = scan(out, session);
    reportFigures('log scan (server/main.ts stdout+stderr)', {
      'output lines': lines.length,
      'lines holding the admin token': withToken.length,
      'those lines': withToken.map((l) => l.replace(token, '<token>').trim()).join(' | ') || '-',
      'keys or plaintexts found': leaks.length,
    });
    // Not --quiet: the info log ran through the session.
    for (const line of [' login ', ' tap changed ', ' escrow key exported ', ' admin request refused ']) expect(out).toContain(line);
    // The one deliberate place: the teacher's two links printed at start (the token after #, never sent to the server in a URL).
    expect(withToken).toHaveLength(2);
    expect(withToken[0]).toMatch(new RegExp(`^ +Teacher panel: +http://127\\.0\\.0\\.1:${port}/teacher#token=${token}$`));
    expect(withToken[1]).toMatch(new RegExp(`^ +Regulator console: +http://127\\.0\\.0\\.1:${port}/regulator#token=${token}$`));
    expect(leaks).toEqual([]);
  }, 60_000);
});
