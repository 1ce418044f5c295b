/**
 * Wires the parts together on one port: HTTP pages and API, the relay's
 * WebSocket (`/ws`), the public relay view (`/ws/relay-view`) and the
 * regulator console feed (`/ws/regulator`, admin token required).
 * Used by `main.ts`, the tests and the benchmark alike.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { cryptoReady } from '../shared/crypto.ts';
import { CloseCode, DisplayName, NAME_REFUSALS } from '../shared/protocol.ts';
import { Relay, type RelayLimits } from './relay.ts';
import { DEFAULT_REGULATOR_LIMITS, REGULATOR_LIMIT_KEYS, Regulator, type RegulatorLimits } from './regulator.ts';
import { RelayStore, StoreError } from './store.ts';
import { buildBundles, createHttpApp } from './http.ts';
import { silentLogger, type Logger } from './log.ts';
import { AdminGuard, adminTokenProblem, retryAfterSeconds } from './admin-guard.ts';
import { DEFAULT_EDGE_LIMITS, EDGE_LIMIT_KEYS, FairCaps, type EdgeLimits, type Refusal } from './edge-limits.ts';
import { allowedHosts, checkHostAndOrigin, parsePublicHost, type AllowedHosts, type HostCheck } from './hosts.ts';
import { ViewFeed } from './view-feed.ts';
import { ConsoleFeed } from './console-feed.ts';
import { closeToMakeRoom, type FeedSocket } from './feed-socket.ts';
import { wsTransport } from './transport.ts';
import { Enterprise, type RoomModel } from './enterprise.ts';
import { Lab } from './lab/lab.ts';
import type { ClassCode, Policy } from '../shared/protocol.ts';
import { Classroom, joinUrl, type ClassCodeLimits, newClassCode } from './classroom.ts';

/** Every limit `startApp` takes: the relay's own (per session), the edge's (other sockets, the token) and the regulator's (its archive). */
export type AppLimits = RelayLimits & EdgeLimits & RegulatorLimits;

export interface AppOptions {
  port?: number;
  host?: string;
  /** Folder for the SQLite files; null keeps everything in memory (`--ephemeral`). */
  dataDir?: string | null;
  /** The teacher's token, 16 to 200 printable characters; a random one when left out. */
  adminToken?: string;
  /** More names the relay answers to (`--public-host NAME[:PORT]`): a TLS proxy, a DNS name. */
  publicHosts?: string[];
  log?: Logger;
  limits?: Partial<AppLimits>;
  /**
   * Classroom mode: every login but the lab's bots' must carry the class code (a random one unless
   * given). `main.ts --classroom` also listens on every interface; the tests turn the check on
   * while staying on 127.0.0.1.
   */
  classroom?: boolean | { code?: ClassCode; limits?: Partial<ClassCodeLimits> };
  /** Bits of the export-grade escrow key's secret (the lab's scene 13); fewer in tests, so a search is quick. */
  exportGradeBits?: number;
}

/** Refusals at the edge, for the tests and the figures. */
export interface EdgeStats {
  /** TCP connections destroyed at once by the cap on connections not upgraded (per address or in total). */
  refusedConnections: number;
  /** Connections closed to make room for another address when a total was full (every kind). */
  madeRoom: number;
  /** Requests and upgrades refused for their Host or Origin (403). */
  refusedHost: number;
  /** Upgrades refused by a connection cap (503), by kind. */
  refusedViewers: number;
  refusedConsoles: number;
  refusedPendingLogins: number;
  /** Admin requests and console upgrades or logins answered 429 during a lockout. */
  lockedOut: number;
}

export interface App {
  url: string;
  port: number;
  host: string;
  adminToken: string;
  relay: Relay;
  regulator: Regulator;
  store: RelayStore;
  server: Server;
  /** The Host names this relay answers (bind address, localhost names, LAN addresses, public hosts). */
  hosts: AllowedHosts;
  edge: {
    limits: EdgeLimits;
    stats: EdgeStats;
    views: ViewFeed;
    consoles: ConsoleFeed;
    guard: AdminGuard;
    caps: { connections: FairCaps; viewers: FairCaps; pendingLogins: FairCaps };
  };
  /** The relay in its enterprise role: the server-held key model's server key, and what the operator can hand over. */
  enterprise: Enterprise;
  /** The lab: scenarios, bots, people, the metadata picture, reset (the teacher panel's API). */
  lab: Lab;
  /** Classroom mode's class code and its guard, or null outside classroom mode. */
  classroom: Classroom | null;
  /** The links participants open: each LAN address's (or this relay's own URL when it has none), with the class code. */
  joinLinks(): string[];
  /** Choose the room's key model (end to end, BBM's shared app key, BES's server-held keys); kept across restarts. */
  setRoom(model: RoomModel, sealedSender?: boolean): Policy;
  close(): Promise<void>;
}

function splitLimits(limits: Partial<AppLimits> = {}): { relay: Partial<RelayLimits>; edge: EdgeLimits; regulator: RegulatorLimits } {
  const relay: Partial<AppLimits> = { ...limits };
  const edge: EdgeLimits = { ...DEFAULT_EDGE_LIMITS };
  const regulator: RegulatorLimits = { ...DEFAULT_REGULATOR_LIMITS };
  for (const key of EDGE_LIMIT_KEYS) {
    const value = limits[key];
    if (value !== undefined) edge[key] = value;
    delete relay[key];
  }
  for (const key of REGULATOR_LIMIT_KEYS) {
    const value = limits[key];
    if (value !== undefined) regulator[key] = value;
    delete relay[key];
  }
  return { relay, edge, regulator };
}

function refuseUpgrade(socket: Duplex, status: number, reason: string, headers: Record<string, string> = {}): void {
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n${extra}Content-Length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`,
  );
}

/**
 * Names stored before the display-name rules refused bidi controls, zero-width characters and the
 * like would make every client refuse the directory (and so every login): cleaned once at start.
 */
function cleanStoredNames(store: RelayStore, log: Logger): void {
  for (const user of store.allUsers()) {
    if (DisplayName.safeParse(user.name).success) continue;
    let name = user.name;
    for (const { chars } of NAME_REFUSALS) name = name.replace(new RegExp(chars.source, 'gu'), (c) => (/\s/u.test(c) ? ' ' : ''));
    const cleaned = DisplayName.safeParse(name.slice(0, 40));
    store.upsertUser(user.pin, user.pk, cleaned.success ? cleaned.data : `user ${user.pin}`, user.last_seen);
    log.info('stored name cleaned', { pin: user.pin });
  }
}

/**
 * The total of logged-in relay sessions: what `maxConnections` leaves once every other kind of
 * connection has its total (connections before the upgrade, connections waiting to log in, relay
 * views, consoles with and without the token), and at least a tenth of it.
 */
export function sessionsTotalFor(limits: EdgeLimits, rawTotal: number): number {
  const others = rawTotal + limits.pendingLoginsTotal + limits.viewersTotal + limits.consolesTotal + limits.consolesWaitingTotal;
  return Math.max(1, Math.floor(limits.maxConnections / 10), limits.maxConnections - others);
}

/** The file in the data folder that keeps the generated admin token across restarts. */
export const ADMIN_TOKEN_FILE = 'admin-token';

/** The admin token kept in `dataDir`, made (random, 32 hex digits, readable by the owner only) on first use. */
export function storedAdminToken(dataDir: string): string {
  const file = join(dataDir, ADMIN_TOKEN_FILE);
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').split(/\r?\n/, 1)[0]!.trim();
    const problem = adminTokenProblem(token);
    if (problem) throw new StoreError(`the admin token kept in ${file} ${problem}. Delete the file to get a new one, or choose one with --admin-token-file.`);
    return token;
  }
  mkdirSync(dataDir, { recursive: true });
  const token = randomBytes(16).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

export async function startApp(options: AppOptions = {}): Promise<App> {
  await cryptoReady();
  const log = options.log ?? silentLogger;
  const dataDir = options.dataDir === undefined ? 'data' : options.dataDir;
  if (options.adminToken !== undefined) {
    const problem = adminTokenProblem(options.adminToken);
    if (problem) throw new Error(`admin token ${problem}`);
  }
  // A chosen token wins; otherwise the one kept in the data folder (made on the first start), so the
  // console link still works after a restart. --ephemeral keeps a fresh one in memory only.
  const adminToken = options.adminToken ?? (dataDir === null ? randomBytes(16).toString('hex') : storedAdminToken(dataDir));
  const publicHosts = options.publicHosts ?? [];
  for (const name of publicHosts) parsePublicHost(name); // throws with a clear message before anything starts
  const { relay: relayLimits, edge: limits, regulator: regulatorLimits } = splitLimits(options.limits);

  // Every kind of connection has a fair total; together they must stay below maxConnections, where
  // Node drops a newcomer before the caps ever see it (so no address could be made room for).
  const rawTotal = Math.max(1, Math.min(limits.rawConnectionsTotal, Math.floor(limits.maxConnections / 2)));
  if (relayLimits.sessionsTotal === undefined) relayLimits.sessionsTotal = sessionsTotalFor(limits, rawTotal);

  const store = new RelayStore(dataDir === null ? ':memory:' : join(dataDir, 'relay.db'));
  cleanStoredNames(store, log);
  let regulator: Regulator;
  const relay = new Relay(store, log, relayLimits);
  try {
    regulator = new Regulator(dataDir === null ? ':memory:' : join(dataDir, 'regulator.db'), relay, {
      limits: regulatorLimits,
      log,
      ...(options.exportGradeBits === undefined ? {} : { exportGradeBits: options.exportGradeBits }),
    });
  } catch (err) {
    relay.close();
    store.close();
    throw err;
  }
  const enterprise = new Enterprise(store);
  relay.setInPath(enterprise.hook());
  const savedRoom = store.setting('room.model');
  const setRoom = (model: RoomModel, sealedSender = false): Policy => {
    const room = enterprise.room(model, sealedSender); // throws on a combination that cannot be
    store.putSetting('room.model', model);
    store.putSetting('room.sealedSender', String(sealedSender));
    return relay.setRoom(room);
  };
  if (savedRoom === 'e2e' || savedRoom === 'app-key' || savedRoom === 'server-key') {
    relay.setRoom(enterprise.room(savedRoom, savedRoom === 'e2e' && store.setting('room.sealedSender') === 'true'));
  }
  const guard = new AdminGuard(limits);
  const stats: EdgeStats = { refusedConnections: 0, madeRoom: 0, refusedHost: 0, refusedViewers: 0, refusedConsoles: 0, refusedPendingLogins: 0, lockedOut: 0 };
  const bundles = await buildBundles();
  const startedAt = Date.now();
  const classroomOption = options.classroom === true ? {} : options.classroom || null;
  const classroom = classroomOption ? new Classroom(classroomOption.code ?? newClassCode(), classroomOption.limits) : null;
  relay.setClassroom(classroom);
  // Known once the server listens (the port may be 0 until then).
  let joinLinks = (): string[] => [];
  const lab = new Lab({ relay, regulator, store, enterprise, setRoom, log, joinLinks: () => joinLinks() });
  const http = createHttpApp({ relay, store, regulator, adminToken, guard, log, bundles, startedAt, lab, enterprise });

  // Known once the server listens (the port may be 0 until then); nothing is answered before that.
  let hosts: AllowedHosts | null = null;
  const hostCheck = (req: IncomingMessage): HostCheck => {
    const origin = req.headers.origin;
    const check = hosts ? checkHostAndOrigin(hosts, req.headers.host, origin) : { ok: false as const, reason: 'the relay is starting' };
    if (!check.ok) {
      stats.refusedHost += 1;
      log.info('refused request: host or origin', {
        host: req.headers.host ?? '',
        origin: origin ?? '',
        path: (req.url ?? '').split('?')[0],
        address: req.socket.remoteAddress ?? '-',
      });
    }
    return check;
  };
  // Slow requests: Node checks these every connectionsCheckingInterval (30 s by default, which with
  // its 60 s headersTimeout let a connection that never finishes its request line live 60-90 s).
  const headersTimeout = limits.headersTimeoutMs;
  const server = createServer(
    {
      headersTimeout,
      requestTimeout: Math.max(headersTimeout, limits.requestTimeoutMs),
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(headersTimeout / 2))),
    },
    (req, res) => {
      const check = hostCheck(req);
      if (check.ok) return void http(req, res);
      // DNS rebinding: a page on another name that resolves to this machine gets nothing, not even a page.
      res.writeHead(403, { 'Content-Type': 'application/json; charset=utf-8', 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify({ error: 'forbidden', message: check.reason }));
    },
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  // Below the open-file limit (edge-limits.ts): past it Node drops a newcomer before it reads a
  // byte, so the relay's own files never meet EMFILE. Half of it may be connections not upgraded.
  server.maxConnections = limits.maxConnections;
  // An address at its own cap loses its oldest such connection to the newcomer (replaceOldest): an
  // honest request needs a moment, one that never finishes has held its place longest.
  const rawCaps = new FairCaps('connections open', limits.rawConnectionsPerAddress, rawTotal, limits.loopbackReservePercent, true);
  const rawRelease = new WeakMap<Socket, () => void>();
  const refusalLogged = new Map<string, number>();
  /** A refusal at the edge, logged at most once every 10 s per kind and address (a flood must not flood the terminal). */
  const logRefusal = (what: string, address: string, refusal: Refusal) => {
    const key = `${what} ${refusal.scope} ${address}`;
    const now = Date.now();
    if (now - (refusalLogged.get(key) ?? -Infinity) < 10_000) return;
    refusalLogged.delete(key);
    refusalLogged.set(key, now);
    if (refusalLogged.size > 1000) refusalLogged.delete(refusalLogged.keys().next().value!);
    log.info(`refused ${what}: connection cap`, { scope: refusal.scope, address });
  };
  let madeRoom = 0;
  const noteRoomMade = (caps: FairCaps, before: number, what: string, address: string) => {
    if (caps.evictions === before) return;
    stats.madeRoom += caps.evictions - before;
    madeRoom += 1;
    if (madeRoom === 1 || madeRoom % 100 === 0)
      log.info(`${what}: full, so an older one was closed to make room (the oldest of the address holding the most)`, { for: address, times: madeRoom });
  };
  server.on('connection', (socket: Socket) => {
    // Before a byte is read: one address cannot hold more than its share of the relay's sockets
    // with connections that never finish a request (or hold keep-alive connections idle).
    const address = socket.remoteAddress ?? 'unknown';
    const before = rawCaps.evictions;
    const full = rawCaps.admit(address);
    if (full) {
      stats.refusedConnections += 1;
      logRefusal('connection', address, full);
      socket.destroy();
      return;
    }
    noteRoomMade(rawCaps, before, 'connections', address);
    const release = rawCaps.add(address, () => socket.destroy());
    rawRelease.set(socket, release);
    socket.once('close', release);
  });

  const maxPayload = relay.limits.maxFrameBytes;
  // The relay checks UTF-8 itself and answers a bad text frame with an error reply; ws's own check
  // would close the socket with 1007 and no reason (see Relay.onFrame).
  const relayWss = new WebSocketServer({ noServer: true, maxPayload, skipUTF8Validation: true });
  const viewWss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  const consoleWss = new WebSocketServer({ noServer: true, maxPayload: 1024 });

  // The public relay view and the regulator console: capped, paced, bounded (view-feed.ts, console-feed.ts).
  const views = new ViewFeed(relay, limits);
  const consoles = new ConsoleFeed({ regulator, policy: () => relay.getPolicy(), adminToken, guard, limits, log });
  const viewerCaps = new FairCaps('relay-view sockets open', limits.viewersPerAddress, limits.viewersTotal, limits.loopbackReservePercent);
  const pendingCaps = new FairCaps('connections waiting to log in', limits.pendingLoginsPerAddress, limits.pendingLoginsTotal, limits.loopbackReservePercent);
  const feeds = new Set<FeedSocket>();
  const track = (feed: FeedSocket, release: () => void) => {
    feeds.add(feed);
    feed.ws.on('error', () => feed.ws.terminate());
    feed.ws.on('close', () => {
      feeds.delete(feed);
      release();
    });
  };
  const heartbeat = setInterval(() => {
    for (const feed of feeds) feed.beat();
  }, relay.limits.heartbeatMs);
  heartbeat.unref();

  /** Admit one more connection of a kind (making room if the total is full), or refuse it with 503. */
  const admit = (caps: FairCaps, what: string, address: string): Refusal | null => {
    const before = caps.evictions;
    const full = caps.admit(address);
    if (!full) noteRoomMade(caps, before, what, address);
    return full;
  };

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    // From here the WebSocket caps count it (or it is refused and ends).
    rawRelease.get(req.socket)?.();
    const address = req.socket.remoteAddress ?? 'unknown';
    const check = hostCheck(req);
    // Cross-site WebSocket hijacking and DNS rebinding: another site's page must not act as a tab here.
    if (!check.ok) return refuseUpgrade(socket, 403, `Forbidden: ${check.reason}`);
    const path = (req.url ?? '').split('?')[0];
    const capped = (kind: keyof Pick<EdgeStats, 'refusedViewers' | 'refusedConsoles' | 'refusedPendingLogins'>, full: Refusal) => {
      stats[kind] += 1;
      logRefusal(`websocket ${path}`, address, full);
      refuseUpgrade(socket, 503, full.reason, { 'Retry-After': '10' });
    };
    if (path === '/ws') {
      const full = admit(pendingCaps, 'connections waiting to log in', address);
      if (full) return capped('refusedPendingLogins', full);
      return relayWss.handleUpgrade(req, socket, head, (ws) => {
        const release = pendingCaps.add(address, () => closeToMakeRoom(ws));
        ws.once('close', release);
        relay.handleConnection(wsTransport(ws), address, { onLogin: release });
      });
    }
    if (path === '/ws/relay-view') {
      const full = admit(viewerCaps, 'relay-view sockets', address);
      if (full) return capped('refusedViewers', full);
      return viewWss.handleUpgrade(req, socket, head, (ws) =>
        track(
          views.add(ws),
          viewerCaps.add(address, () => closeToMakeRoom(ws)),
        ),
      );
    }
    if (path === '/ws/regulator') {
      const wait = guard.lockedFor(address);
      if (wait > 0) {
        stats.lockedOut += 1;
        const seconds = retryAfterSeconds(wait);
        return refuseUpgrade(socket, 429, `too many wrong admin tokens from your address: try again in ${seconds} s`, { 'Retry-After': String(seconds) });
      }
      const full = admit(consoles.waiting, 'regulator-console sockets waiting for the token', address);
      if (full) return capped('refusedConsoles', full);
      return consoleWss.handleUpgrade(req, socket, head, (ws) => track(consoles.add(ws, address), () => {}));
    }
    refuseUpgrade(socket, 404, 'Not Found');
  });

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 3000, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 3000);
  const urlHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  hosts = allowedHosts({ bind: host, port, publicHosts, interfaces: networkInterfaces() });
  const ownUrl = `http://${urlHost}:${port}`;
  const lan = hosts.lan;
  joinLinks = () => (classroom ? (lan.length ? lan.map((a) => `http://${a}:${port}`) : [ownUrl]).map((base) => joinUrl(base, classroom.code)) : []);

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      clearInterval(heartbeat);
      views.close();
      consoles.close();
      lab.close();
      relay.close();
      for (const feed of feeds) feed.ws.close(CloseCode.GoingAway, 'relay shutting down');
      for (const wss of [relayWss, viewWss, consoleWss]) wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      regulator.close();
      store.close();
    })());

  return {
    url: ownUrl,
    port,
    host,
    adminToken,
    relay,
    regulator,
    store,
    server,
    hosts,
    edge: { limits, stats, views, consoles, guard, caps: { connections: rawCaps, viewers: viewerCaps, pendingLogins: pendingCaps } },
    enterprise,
    lab,
    classroom,
    joinLinks: () => joinLinks(),
    setRoom,
    close,
  };
}
