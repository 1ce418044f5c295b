/**
 * Issue 9, findings 3, 6, 7 and 8: the edges of the relay a hostile workshop goes for first.
 * Relay-view and console sockets (capped, the backlog paced, slow viewers cut), connections that
 * never log in (capped), Host and Origin checked together (DNS rebinding), the teacher's token
 * (long enough, not only on the command line, guesses slowed) and display names and log lines that
 * cannot carry terminal or bidi tricks. Real relays on 127.0.0.1 port 0, real sockets.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { newIdentity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { CloseCode, DisplayName, ErrorCode, parseViewerMessage, type ViewerMessage } from '../../shared/protocol.ts';
import { AdminGuard } from '../../server/admin-guard.ts';
import { DEFAULT_EDGE_LIMITS } from '../../server/edge-limits.ts';
import { PART_BYTES } from '../../server/feed-socket.ts';
import { allowedHosts, checkHostAndOrigin } from '../../server/hosts.ts';
import { consoleLogger, memoryLogger } from '../../server/log.ts';
import { DEFAULT_LIMITS, UNLIMITED } from '../../server/relay.ts';
import { assetPath, relaysPerTest, type startTestRelay } from '../helpers/relay.ts';
import { RawClient, reportFigures, sleep } from '../reliability/support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'test-admin-token';
type TestApp = Awaited<ReturnType<typeof startTestRelay>>;

const { relay, cleanup } = relaysPerTest();

interface Refused {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Try a WebSocket upgrade; resolve with the open socket (closed at cleanup) or the HTTP refusal. */
function upgrade(url: string, opts: { origin?: string; host?: string } = {}): Promise<WebSocket | Refused> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { ...(opts.origin === undefined ? {} : { origin: opts.origin }), ...(opts.host === undefined ? {} : { headers: { host: opts.host } }) });
    cleanup.push(() => ws.terminate());
    ws.on('open', () => resolve(ws));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      ws.on('error', () => {});
    });
    ws.on('error', () => {});
  });
}

const status = (r: WebSocket | Refused): number | 'open' => (r instanceof WebSocket ? 'open' : r.status);

/** A plain HTTP request with any Host and Origin (fetch would not let a test set Host). */
function get(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A relay-view socket that completes the upgrade and then never reads another byte. */
async function neverReadingViewer(port: number): Promise<Socket> {
  const socket = netConnect(port, '127.0.0.1');
  socket.on('error', () => {});
  cleanup.push(() => socket.destroy());
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(
    `GET /ws/relay-view HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  let head = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause(); // and never resumed: whatever the relay sends from now on waits on its side
      if (head.startsWith('HTTP/1.1 101')) resolve();
      else reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
    };
    socket.on('data', onData);
  });
  return socket;
}

/** Fill the relay view's backlog with big envelopes (about 61 KB each): the relay does not open bodies. */
async function bigTraffic(app: TestApp, count: number): Promise<void> {
  const sender = await RawClient.connect(app.wsUrl);
  cleanup.push(() => sender.close());
  const me = newIdentity();
  await sender.login(me, 'Sender');
  const other = newIdentity();
  const receiver = await RawClient.connect(app.wsUrl);
  await receiver.login(other, 'Receiver');
  receiver.close(); // offline: everything is queued for it, nothing is pushed anywhere but the viewers
  const { env } = sealEnvelope({ sender: me, to: [{ pin: other.pin, signPk: other.signPk }], conv: 'dm', body: { text: 'x' } });
  const body = randomBytes(45_000).toString('base64');
  const from = sender.frames.length;
  for (let i = 0; i < count; i++) sender.send({ type: 'send', env: { ...env, id: randomBytes(16).toString('hex'), body } });
  await sender.waitFor(() => sender.frames.slice(from).filter((f) => f.type === 'accepted').length === count, `${count} accepted`, 30_000);
}

// ---------------------------------------------------------------------------
// Finding 3: relay-view (and console) sockets

describe('relay view: a bounded, paced backlog and slow viewers cut', () => {
  it('sixty relay-view sockets that never read hold the relay to its buffer bound: at most feedMaxBufferedBytes unsent per viewer, never the whole backlog', async () => {
    const app = await relay({ limits: { ...UNLIMITED, viewersPerAddress: 100 } });
    const bound = DEFAULT_EDGE_LIMITS.feedMaxBufferedBytes;
    await bigTraffic(app, 200); // 200 envelopes of 61 KB: 12 MB if the backlog were bounded by count alone

    // Sixty that never read. The relay's unsent bytes per socket are read from the server side.
    const serverSide = new Map<number, Socket>();
    app.server.on('connection', (s: Socket) => serverSide.set(s.remotePort ?? 0, s));
    const before = process.memoryUsage();
    const viewers: Socket[] = [];
    for (let i = 0; i < 60; i++) viewers.push(await neverReadingViewer(app.port));
    const unsent = () => viewers.map((v) => serverSide.get(v.localPort ?? -1)?.writableLength ?? 0);
    // Wait until the relay has done what it will do (its unsent total stops changing).
    let last = -1;
    const deadline = Date.now() + 20_000;
    for (let stable = 0; stable < 3 && Date.now() < deadline; await sleep(100)) {
      const total = unsent().reduce((a, b) => a + b, 0);
      stable = total === last ? stable + 1 : 0;
      last = total;
    }
    const held = unsent();
    const after = process.memoryUsage();
    expect(Math.max(...held)).toBeLessThanOrEqual(bound);
    expect(held.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(60 * bound);

    // The backlog itself is bounded by bytes, not only by count.
    const backlog = app.edge.views.backlogSize();
    expect(backlog.bytes).toBeLessThanOrEqual(app.edge.limits.viewBacklogBytes);
    expect(backlog.bytes).toBeGreaterThan(bound); // bigger than one viewer's bound: the pacing matters

    // A viewer that reads gets the whole backlog, in parts that each fit the bound.
    const frames: ViewerMessage[] = [];
    const sizes: number[] = [];
    const reader = new WebSocket(`${app.wsUrl}/relay-view`);
    cleanup.push(() => reader.terminate());
    reader.on('message', (d) => {
      const parsed = parseViewerMessage(d.toString());
      if (parsed.ok) frames.push(parsed.value);
      sizes.push(d.toString().length);
    });
    const backlogEvents = () => frames.flatMap((f) => (f.type === 'backlog' || f.type === 'backlog-more' ? f.events : [])).length;
    while (backlogEvents() < backlog.events && Date.now() < deadline) await sleep(20);
    expect(backlogEvents()).toBe(backlog.events);
    expect(frames[0]?.type).toBe('backlog');
    expect(frames.slice(1).every((f) => f.type === 'backlog-more')).toBe(true);
    const parts = frames.length;
    expect(parts).toBeGreaterThan(1);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(PART_BYTES + 70_000);

    // Then live traffic on top, far more than the kernel's socket buffers take: every viewer that would
    // pass its bound is cut (4004), never buffered further.
    let heldLive = 0;
    const sample = setInterval(() => (heldLive = Math.max(heldLive, ...unsent())), 5);
    await bigTraffic(app, 150);
    clearInterval(sample);
    heldLive = Math.max(heldLive, ...unsent());
    reportFigures('relay view: 60 sockets that never read', {
      'backlog held for new viewers': `${backlog.events} events, ${(backlog.bytes / 1e6).toFixed(2)} MB (bounds ${app.edge.limits.viewBacklogEvents} / ${(app.edge.limits.viewBacklogBytes / 1e6).toFixed(2)} MB)`,
      'parts a reading viewer got the backlog in': parts,
      'unsent per never-reading viewer, max': `${Math.max(...held)} B (bound ${bound} B)`,
      'unsent for all 60, total': `${(held.reduce((a, b) => a + b, 0) / 1e6).toFixed(2)} MB`,
      'during 150 more live envelopes (9 MB), max unsent sampled': `${heldLive} B`,
      'viewers cut as slow consumers (of 61)': app.edge.views.cuts,
      'process memory growth (relay and clients, in process)': `${((after.rss - before.rss) / 1e6).toFixed(1)} MB rss, ${((after.heapUsed + after.external - before.heapUsed - before.external) / 1e6).toFixed(1)} MB heap+external`,
    });
    expect(heldLive).toBeLessThanOrEqual(bound);
    expect(app.edge.views.maxBuffered()).toBeLessThanOrEqual(bound);
    // Every never-reading viewer was cut, and its socket ended after the grace period. (The reading
    // viewer may be cut too: in this one process it cannot read while the relay pushes 9 MB at it.)
    expect(app.edge.views.cuts).toBeGreaterThanOrEqual(60);
    const ended = () => viewers.filter((v) => serverSide.get(v.localPort ?? -1)?.destroyed === true).length;
    const endBy = Date.now() + 5000;
    while (ended() < 60 && Date.now() < endBy) await sleep(50);
    expect(ended()).toBe(60);
  }, 60_000);

  it('a live viewer that stops reading is cut with 4004 "slow consumer" once the relay would hold more than the bound for it', async () => {
    const bound = 256 * 1024;
    const app = await relay({ limits: { ...UNLIMITED, feedMaxBufferedBytes: bound } });
    const ws = new WebSocket(`${app.wsUrl}/relay-view`);
    cleanup.push(() => ws.terminate());
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    await new Promise((r) => ws.once('message', r)); // the (empty) backlog: it is live now
    // Stop reading: pause the client's TCP socket, so the relay's buffer for it grows.
    const tcp = (ws as unknown as { _socket: Socket })._socket;
    tcp.pause();
    await bigTraffic(app, 150);
    expect(app.edge.views.cuts).toBe(1);
    expect(app.edge.views.maxBuffered()).toBeLessThanOrEqual(bound);
    // Reading again: the close frame (behind the unread data) arrives, or the end of the socket,
    // which the relay terminates after its grace period.
    tcp.resume();
    const close = await closed;
    expect([CloseCode.SlowConsumer, 1006]).toContain(close.code);
  }, 30_000);

  it('relay-view sockets are capped at 20 per address by default (the 21st upgrade gets 503 with a reason) and in total; a closed one frees its place', async () => {
    const app = await relay();
    const url = `${app.wsUrl}/relay-view`;
    const open: WebSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await upgrade(url);
      expect(status(r), `viewer ${i + 1}`).toBe('open');
      open.push(r as WebSocket);
    }
    const refused = (await upgrade(url)) as Refused;
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/too many relay-view sockets open from your address \(20 at most\)/);
    open[0]!.close();
    await new Promise((r) => open[0]!.once('close', r));
    expect(status(await upgrade(url))).toBe('open');

    const small = await relay({ limits: { viewersPerAddress: 10, viewersTotal: 3 } });
    for (let i = 0; i < 3; i++) expect(status(await upgrade(`${small.wsUrl}/relay-view`))).toBe('open');
    const full = (await upgrade(`${small.wsUrl}/relay-view`)) as Refused;
    expect(full.status).toBe(503);
    expect(full.body).toMatch(/too many relay-view sockets open on this relay \(3 at most\)/);
    expect(small.edge.stats.refusedViewers).toBe(1);
    expect(app.edge.limits).toMatchObject({ viewersPerAddress: 20, viewersTotal: 200 });
  });

  it('regulator-console sockets are capped at 3 per address while they wait for the token, and at 5 per address once they sent it', async () => {
    const app = await relay();
    const url = `${app.wsUrl}/regulator`;
    const waiting: WebSocket[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await upgrade(url);
      expect(status(r), `console ${i + 1}`).toBe('open');
      waiting.push(r as WebSocket);
    }
    const refused = (await upgrade(url)) as Refused;
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/too many regulator-console sockets waiting for the admin token from your address \(3 at most\)/);
    // Sending the token moves a socket to the consoles' own cap.
    const consoles = [...waiting];
    for (const ws of waiting) ws.send(JSON.stringify({ type: 'auth', token: TOKEN }));
    for (let i = 0; i < 2; i++) {
      const r = (await upgrade(url)) as WebSocket;
      expect(status(r)).toBe('open');
      r.send(JSON.stringify({ type: 'auth', token: TOKEN }));
      consoles.push(r);
    }
    await sleep(200);
    expect(app.edge.consoles.open.size()).toBe(5);
    const sixth = (await upgrade(url)) as WebSocket;
    const error = new Promise<{ code: string; message: string }>((r) => sixth.once('message', (d) => r(JSON.parse(d.toString()))));
    sixth.send(JSON.stringify({ type: 'auth', token: TOKEN }));
    expect((await error).message).toMatch(/too many regulator consoles open from your address \(5 at most\)/);
    expect(app.edge.limits).toMatchObject({ consolesPerAddress: 5, consolesTotal: 20, consolesWaitingPerAddress: 3 });
  });

  it('a console gets its snapshot within the buffer bound: the newest intercepts in parts (snapshot, then intercept frames), all of them, in order', async () => {
    const app = await relay({ limits: { ...UNLIMITED, consoleSnapshotItems: 50 } });
    await bigTraffic(app, 60);
    const ws = new WebSocket(`${app.wsUrl}/regulator`);
    cleanup.push(() => ws.terminate());
    const frames: { type: string; intercepts?: { seq: number }[]; item?: { seq: number } }[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'auth', token: TOKEN }));
    const seqs = () => frames.flatMap((f) => (f.type === 'snapshot' ? (f.intercepts ?? []).map((i) => i.seq) : f.type === 'intercept' && f.item ? [f.item.seq] : []));
    const deadline = Date.now() + 10_000;
    while (seqs().length < 50 && Date.now() < deadline) await sleep(20);
    expect(frames[0]?.type).toBe('snapshot');
    expect(frames[0]?.intercepts?.length).toBeLessThan(50); // not all in one frame
    const total = app.regulator.archiveSize();
    expect(seqs()).toEqual(Array.from({ length: 50 }, (_, i) => total - 49 + i));
  });
});

// ---------------------------------------------------------------------------
// Finding 7: connections that never log in

describe('connections that never log in', () => {
  it('are capped at 50 per address by default: the 51st upgrade on /ws gets 503 with a reason, and a login or a close frees a place', async () => {
    const app = await relay();
    const waiting: RawClient[] = [];
    for (let i = 0; i < 50; i++) {
      const c = await RawClient.connect(app.wsUrl);
      cleanup.push(() => c.close());
      waiting.push(c);
    }
    const refused = (await upgrade(app.wsUrl)) as Refused;
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/too many connections waiting to log in from your address \(50 at most\)/);
    expect(app.edge.stats.refusedPendingLogins).toBe(1);
    // A login frees a place (the cap is on connections not logged in, not on users).
    await waiting[0]!.login(newIdentity(), 'Finally');
    expect(status(await upgrade(app.wsUrl))).toBe('open');
    expect((await upgrade(app.wsUrl)) as Refused).toMatchObject({ status: 503 });
    waiting[1]!.close();
    await new Promise<void>((r) => waiting[1]!.ws.once('close', () => r()));
    await sleep(50);
    expect(status(await upgrade(app.wsUrl))).toBe('open');
    expect(app.relay.pendingLogins()).toBe(50);
    expect(app.edge.limits).toMatchObject({ pendingLoginsPerAddress: 50, pendingLoginsTotal: 500 });
    expect(DEFAULT_LIMITS.loginTimeoutMs).toBe(10_000); // the login timeout stays
  });

  it('are capped in total too, and one that never logs in is still closed by the login timeout (4002), which frees its place', async () => {
    const app = await relay({ limits: { pendingLoginsTotal: 3, loginTimeoutMs: 300 } });
    const waiting = await Promise.all([0, 1, 2].map(() => RawClient.connect(app.wsUrl)));
    for (const c of waiting) cleanup.push(() => c.close());
    const refused = (await upgrade(app.wsUrl)) as Refused;
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/too many connections waiting to log in on this relay \(3 at most\)/);
    const closes = await Promise.all(waiting.map((c) => c.waitClosed()));
    expect(closes.map((c) => c.code)).toEqual([CloseCode.LoginTimeout, CloseCode.LoginTimeout, CloseCode.LoginTimeout]);
    await sleep(50);
    expect(app.relay.pendingLogins()).toBe(0);
    expect(status(await upgrade(app.wsUrl))).toBe('open');
  });
});

// ---------------------------------------------------------------------------
// Finding 6: DNS rebinding

describe('Host and Origin checked together', () => {
  it('a DNS-rebinding page (Host and Origin both evil.example:PORT) gets 403 on /ws, /ws/relay-view, /ws/regulator and on every page and API route', async () => {
    const log = memoryLogger();
    const app = await relay({ log });
    const port = app.port;
    const evil = { host: `evil.example:${port}`, origin: `http://evil.example:${port}` };
    for (const path of ['/ws', '/ws/relay-view', '/ws/regulator']) {
      const r = await upgrade(`ws://127.0.0.1:${port}${path}`, evil);
      expect(status(r), path).toBe(403);
      expect((r as Refused).body).toMatch(/Host "evil\.example:\d+" is not a name this relay serves/);
      // Without an Origin (a script, not a page) the Host is checked all the same.
      expect(status(await upgrade(`ws://127.0.0.1:${port}${path}`, { host: evil.host })), `${path} without Origin`).toBe(403);
    }
    for (const path of ['/', '/?name=Alice', '/relay', '/regulator', await assetPath('chat.js'), await assetPath('style.css'), '/healthz', '/api/policy', '/api/regulator/tap']) {
      const page = await get(port, path, evil);
      expect(page.status, path).toBe(403);
      expect(JSON.parse(page.body)).toMatchObject({ error: 'forbidden' });
      expect(page.body).not.toContain('<html');
      // The same request under our own name is served (so the 403 is about the name).
      const own = await get(port, path, { host: `127.0.0.1:${port}` });
      expect(own.status, `${path} under 127.0.0.1`).toBe(path === '/api/regulator/tap' ? 401 : 200);
    }
    expect(app.edge.stats.refusedHost).toBeGreaterThanOrEqual(15);
    expect(log.lines.some((l) => l.includes('refused request: host or origin') && l.includes('evil.example'))).toBe(true);
  });

  it('the names the relay prints are accepted with exactly their scheme and port: localhost names when on loopback, the LAN addresses when on all interfaces, --public-host names (https: only there)', async () => {
    const interfaces = {
      lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4' as const, mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
      wlan0: [
        { address: '192.168.1.23', netmask: '255.255.255.0', family: 'IPv4' as const, mac: '02:00:00:00:00:01', internal: false, cidr: '192.168.1.23/24' },
        { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6' as const, mac: '02:00:00:00:00:01', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
      ],
    };
    const everywhere = allowedHosts({ bind: '0.0.0.0', port: 3000, interfaces, publicHosts: ['lab.example:443'] });
    expect(everywhere.lan).toEqual(['192.168.1.23']); // what main.ts prints under "On the class network"
    const ok = (h: typeof everywhere, host: string, origin?: string) => checkHostAndOrigin(h, host, origin).ok;
    expect(ok(everywhere, '192.168.1.23:3000', 'http://192.168.1.23:3000')).toBe(true);
    expect(ok(everywhere, 'localhost:3000', 'http://localhost:3000')).toBe(true);
    expect(ok(everywhere, '[::1]:3000', 'http://[::1]:3000')).toBe(true);
    expect(ok(everywhere, 'lab.example', 'https://lab.example')).toBe(true);
    expect(ok(everywhere, 'lab.example:443', 'https://lab.example')).toBe(true);
    expect(ok(everywhere, '192.168.1.23:3001', 'http://192.168.1.23:3001')).toBe(false); // another port
    expect(ok(everywhere, '192.168.1.23:3000', 'https://192.168.1.23:3000')).toBe(false); // https: only on a public host
    expect(ok(everywhere, '192.168.1.23:3000', 'http://localhost:3000')).toBe(false); // Origin names another host
    expect(ok(everywhere, '10.0.0.9:3000')).toBe(false); // not an address of this machine
    expect(ok(everywhere, 'lab.example:3000', 'https://lab.example:3000')).toBe(false); // the public host's port is 443
    const loopback = allowedHosts({ bind: '127.0.0.1', port: 3000, interfaces });
    expect(loopback.lan).toEqual([]);
    expect(ok(loopback, '192.168.1.23:3000')).toBe(false); // not listening there
    const oneAddress = allowedHosts({ bind: '192.168.1.23', port: 3000, interfaces });
    expect(ok(oneAddress, '192.168.1.23:3000', 'http://192.168.1.23:3000')).toBe(true);
    expect(ok(oneAddress, 'localhost:3000')).toBe(false);

    // And live: a relay started with --public-host names (startApp's publicHosts).
    const app = await relay({ publicHosts: ['lab.example:8443', 'classroom.example'] });
    const url = `${app.wsUrl}/relay-view`;
    const cases: [string, { host?: string; origin?: string }, number | 'open'][] = [
      ['a TLS proxy on 8443', { host: 'lab.example:8443', origin: 'https://lab.example:8443' }, 'open'],
      ['the same name over http', { host: 'lab.example:8443', origin: 'http://lab.example:8443' }, 'open'],
      ['another port of it', { host: 'lab.example:9443', origin: 'https://lab.example:9443' }, 403],
      ['a name without port, default https', { host: 'classroom.example', origin: 'https://classroom.example' }, 'open'],
      ['a name without port, on our port', { host: `classroom.example:${app.port}`, origin: `http://classroom.example:${app.port}` }, 'open'],
      ['localhost', { host: `localhost:${app.port}`, origin: `http://localhost:${app.port}` }, 'open'],
      ['a name not given', { host: `other.example:${app.port}`, origin: `http://other.example:${app.port}` }, 403],
    ];
    for (const [what, opts, want] of cases) expect(status(await upgrade(url, opts)), what).toBe(want);
    expect(app.hosts.list).toEqual(expect.arrayContaining([`localhost:${app.port}`, `127.0.0.1:${app.port}`, `[::1]:${app.port}`, 'lab.example:8443', 'classroom.example']));
  });
});

// ---------------------------------------------------------------------------
// Finding 8: the teacher's token

/** `node --import tsx server/main.ts ...args`; resolves when it exits or prints its links. */
function runMain(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; stop: () => Promise<void>; port: number | null }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  };
  cleanup.push(stop);
  return new Promise((resolve) => {
    const started = setInterval(() => {
      const m = /Alice's chat: +http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) {
        clearInterval(started);
        resolve({ code: null, out, stop, port: Number(m[1]) });
      }
    }, 50);
    child.once('exit', (code) => {
      clearInterval(started);
      resolve({ code, out, stop, port: null });
    });
  });
}

describe("the teacher's token", () => {
  it('main.ts refuses a chosen token shorter than 16 characters, from the flag, the file or the environment, with exit code 2 and a clear message', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bdl-token-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'short'), 'tooshort\n');
    const runs: [string[], Record<string, string>, RegExp][] = [
      [['--admin-token', 'short'], {}, /error: --admin-token must be at least 16 characters \(this one has 5\)/],
      [['--admin-token-file', join(dir, 'short')], {}, /error: the token in --admin-token-file .* must be at least 16 characters \(this one has 8\)/],
      [['--admin-token-file', join(dir, 'missing')], {}, /error: cannot read --admin-token-file .*missing: ENOENT/],
      [[], { BACKDOOR_LAB_ADMIN_TOKEN: 'short' }, /error: BACKDOOR_LAB_ADMIN_TOKEN must be at least 16 characters/],
      [['--admin-token', 'a'.repeat(20), '--admin-token-file', join(dir, 'short')], {}, /error: give --admin-token or --admin-token-file, not both/],
    ];
    for (const [args, env, message] of runs) {
      const run = await runMain(['--ephemeral', '--port', '0', ...args], env);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.out).toMatch(message);
      expect(run.out).not.toContain('tooshort');
    }
  }, 60_000);

  it('a token from BACKDOOR_LAB_ADMIN_TOKEN or from --admin-token-file is the one the relay accepts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bdl-token-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const fromEnv = `env-${randomBytes(12).toString('hex')}`;
    const fromFile = `file-${randomBytes(12).toString('hex')}`;
    writeFileSync(join(dir, 'token'), `${fromFile}\n`);
    for (const [args, env, token] of [
      [[], { BACKDOOR_LAB_ADMIN_TOKEN: fromEnv }, fromEnv],
      [['--admin-token-file', join(dir, 'token')], { BACKDOOR_LAB_ADMIN_TOKEN: fromEnv }, fromFile],
    ] as [string[], Record<string, string>, string][]) {
      const run = await runMain(['--ephemeral', '--port', '0', '--quiet', ...args], env);
      expect(run.port, run.out).not.toBeNull();
      const call = (t: string) => fetch(`http://127.0.0.1:${run.port}/api/regulator/tap`, { headers: { authorization: `Bearer ${t}` } });
      expect((await call(token)).status).toBe(200);
      expect((await call(`${token}x`)).status).toBe(403);
      expect(run.out).toContain(`/regulator#token=${token}`);
      await run.stop();
    }
  }, 60_000);

  it('after 5 wrong tokens an address gets 429 with Retry-After, even with the right token and on the console socket, until the lockout (1 s, then doubling) passes; a success forgets the failures', async () => {
    const app = await relay();
    const call = (token: string) => fetch(`${app.url}/api/regulator/tap`, { headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 5; i++) expect((await call(`wrong-token-number-${i}`)).status, `wrong token ${i + 1}`).toBe(403);
    const locked = await call(TOKEN);
    expect(locked.status).toBe(429);
    expect(locked.headers.get('retry-after')).toBe('1');
    expect((await locked.json()) as { message: string }).toMatchObject({
      error: 'too_many_failures',
      message: expect.stringMatching(/too many wrong admin tokens from your address: try again in 1 s/),
    });
    const console_ = (await upgrade(`${app.wsUrl}/regulator`)) as Refused;
    expect(console_.status).toBe(429);
    expect(console_.headers['retry-after']).toBe('1');
    // The lockout passes; the next wrong token locks for twice as long.
    await sleep(1100);
    expect((await call('wrong-token-again')).status).toBe(403);
    const longer = await call(TOKEN);
    expect(longer.status).toBe(429);
    expect(longer.headers.get('retry-after')).toBe('2');
    await sleep(2100);
    // The right token works again, and wipes the record: five free failures again.
    expect((await call(TOKEN)).status).toBe(200);
    expect(app.edge.guard.failures('127.0.0.1') + app.edge.guard.failures('::ffff:127.0.0.1')).toBe(0);
    for (let i = 0; i < 4; i++) expect((await call(`wrong-${i}`)).status).toBe(403);
    expect((await call(TOKEN)).status).toBe(200);
  }, 20_000);

  it('wrong tokens on the console socket count as well: five of them lock the address out of the API', async () => {
    const app = await relay();
    for (let i = 0; i < 5; i++) {
      const ws = (await upgrade(`${app.wsUrl}/regulator`)) as WebSocket;
      const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
      ws.send(JSON.stringify({ type: 'auth', token: `not-the-token-${i}xxxxxx` }));
      expect(await closed).toBe(CloseCode.PolicyViolation);
    }
    const r = await fetch(`${app.url}/api/regulator/tap`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(r.status).toBe(429);
  });

  it('the lockout doubles from 1 s to at most 5 minutes and is forgotten after a quiet spell (a fake clock)', () => {
    let now = 0;
    const guard = new AdminGuard(DEFAULT_EDGE_LIMITS, () => now);
    const locks: number[] = [];
    for (let i = 0; i < 15; i++) {
      locks.push(guard.failed('10.0.0.5'));
      now += guard.lockedFor('10.0.0.5'); // wait out each lockout before the next guess
    }
    expect(locks).toEqual([0, 0, 0, 0, 1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]);
    expect(guard.lockedFor('10.0.0.6')).toBe(0); // per address
    now += DEFAULT_EDGE_LIMITS.adminForgetMs;
    expect(guard.lockedFor('10.0.0.5')).toBe(0);
    expect(guard.failures('10.0.0.5')).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// Finding 8: display names and the log

describe('display names and the log', () => {
  const refusals: [string, string, RegExp][] = [
    ['a C0 control (escape)', 'Al\u001b[31mice', /control characters/],
    ['a C1 control (CSI)', 'Al\u009bice', /control characters/],
    ['DEL', 'Al\u007fice', /control characters/],
    ['a right-to-left override', 'Carol\u202egnp.exe', /bidirectional controls/],
    ['a left-to-right embedding', '\u202aCarol', /bidirectional controls/],
    ['an isolate', 'Ca\u2067rol\u2069', /bidirectional controls/],
    ['a right-to-left mark', 'Carol\u200f', /bidirectional controls/],
    ['an Arabic letter mark', 'Carol\u061c', /bidirectional controls/],
    ['a line separator', 'Carol\u2028Teacher', /line or paragraph separators/],
    ['a paragraph separator', 'Carol\u2029', /line or paragraph separators/],
    ['a zero-width space', 'Ca\u200brol', /invisible format characters/],
    ['a zero-width joiner', 'Ca\u200drol', /invisible format characters/],
    ['a word joiner', 'Ca\u2060rol', /invisible format characters/],
    ['a byte order mark', '\ufeffCarol', /invisible format characters/],
    ['a soft hyphen', 'Ca\u00adrol', /invisible format characters/],
    ['a lone surrogate', 'Carol\ud800', /lone surrogates/],
    ['a tab', 'Carol\tB', /control characters/],
    ['a no-break space', 'Carol\u00a0B', /whitespace other than a plain space/],
    ['an ideographic space', 'Carol\u3000B', /whitespace other than a plain space/],
  ];

  it('every class of bad display name is refused at login with its own error, and no welcome', async () => {
    const app = await relay();
    for (const [what, name, message] of refusals) {
      const parsed = DisplayName.safeParse(name);
      expect(parsed.success, what).toBe(false);
      expect(parsed.error?.issues[0]?.message, what).toMatch(message);
      const c = await RawClient.connect(app.wsUrl);
      cleanup.push(() => c.close());
      const from = c.frames.length;
      c.send(c.hello(newIdentity(), name));
      const error = await c.next('error', from);
      expect(error.code, what).toBe(ErrorCode.BadFrame);
      expect(error.message, what).toMatch(/^name: name must not contain/);
      expect(error.message, what).toMatch(message);
      expect(
        c.frames.some((f) => f.type === 'welcome'),
        what,
      ).toBe(false);
    }
    // Plain names, accents, emoji and inner plain spaces are fine.
    for (const name of ['Zoë 🐝', 'Ana María', '李雷', 'Ørjan', "O'Brien-Smith"]) expect(DisplayName.safeParse(name).success, name).toBe(true);
  });

  it('a hostile value (C0 and C1 controls, bidi overrides, U+2028, zero-width, a lone surrogate) reaches the log line only escaped', async () => {
    const hostile = 'a\u001b[2J\u009b31m\u0085\u202eevil\u2066\u2028\u2029\u200b\u200d\ufeff\u00a0\u2000\udb40\udc41\ud800b\n';
    const lines: string[] = [];
    consoleLogger((l) => lines.push(l)).info('login', { name: hostile, 'k\u202ey': 1 });
    const bad = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]|(?! )\p{Zs}/u;
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toMatch(bad);
    // Escaped, not dropped: the field still reads back as the same string.
    const value = / name=(".*") k/.exec(lines[0]!)?.[1];
    expect(JSON.parse(value!)).toBe(hostile);

    // Through the real server: a header with C1 bytes (a terminal's CSI and NEL, as latin1) on a refused upgrade.
    const log = memoryLogger();
    const app = await relay({ log });
    const socket = netConnect(app.port, '127.0.0.1');
    cleanup.push(() => socket.destroy());
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const head = Buffer.concat([
      Buffer.from(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${app.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x`,
      ),
      Buffer.from([0x9b, 0x33, 0x31, 0x6d, 0x85, 0xe2, 0x80, 0xae]),
      Buffer.from('.example\r\n\r\n'),
    ]);
    socket.write(head);
    const answer = await new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString('latin1'))));
    expect(answer).toMatch(/^HTTP\/1\.1 403 /);
    const line = log.lines.find((l) => l.includes('refused request: host or origin'));
    expect(line).toBeDefined();
    expect(line).toContain('\\u009b31m\\u0085');
    expect(line).not.toMatch(bad);
  });

  it('the chat page shows the refusal of a bad ?name= in plain words', async () => {
    // The page runs DisplayName.safeParse and shows issues[0].message (client/ui/chat.ts): the message is the schema's.
    const parsed = DisplayName.safeParse('Mallory\u202e');
    expect(parsed.error?.issues[0]?.message).toBe(
      'name must not contain bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C): they reorder the text around the name',
    );
  });
});
