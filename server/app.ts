/**
 * Wires the parts together on one port: HTTP pages and API, the relay's
 * WebSocket (`/ws`), the public relay view (`/ws/relay-view`) and the
 * regulator console feed (`/ws/regulator`, admin token required).
 * Used by `main.ts`, the tests and the benchmark alike.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { cryptoReady } from '../shared/crypto.ts';
import { CloseCode, parseConsoleClientMessage, type ConsoleMessage, type TrafficEvent, type ViewerMessage } from '../shared/protocol.ts';
import { Relay, type RelayLimits } from './relay.ts';
import { Regulator } from './regulator.ts';
import { RelayStore } from './store.ts';
import { buildBundles, createHttpApp, tokenMatches } from './http.ts';
import { silentLogger, type Logger } from './log.ts';

export interface AppOptions {
  port?: number;
  host?: string;
  /** Folder for the SQLite files; null keeps everything in memory (`--ephemeral`). */
  dataDir?: string | null;
  adminToken?: string;
  log?: Logger;
  limits?: Partial<RelayLimits>;
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
  close(): Promise<void>;
}

const VIEW_BACKLOG = 200;

/** True when a browser's Origin header names this same host (or there is none: bots, tests, curl). */
export function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`);
}

export async function startApp(options: AppOptions = {}): Promise<App> {
  await cryptoReady();
  const log = options.log ?? silentLogger;
  const dataDir = options.dataDir === undefined ? 'data' : options.dataDir;
  const adminToken = options.adminToken ?? randomBytes(16).toString('hex');

  const store = new RelayStore(dataDir === null ? ':memory:' : join(dataDir, 'relay.db'));
  let regulator: Regulator;
  const relay = new Relay(store, log, options.limits);
  try {
    regulator = new Regulator(dataDir === null ? ':memory:' : join(dataDir, 'regulator.db'), relay);
  } catch (err) {
    relay.close();
    store.close();
    throw err;
  }
  const bundles = await buildBundles();
  const startedAt = Date.now();
  const http = createHttpApp({ relay, store, regulator, adminToken, log, bundles, startedAt });
  const server = createServer(http);

  const maxPayload = relay.limits.maxFrameBytes;
  // The relay checks UTF-8 itself and answers a bad text frame with an error reply; ws's own check
  // would close the socket with 1007 and no reason (see Relay.onFrame).
  const relayWss = new WebSocketServer({ noServer: true, maxPayload, skipUTF8Validation: true });
  const viewWss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  const consoleWss = new WebSocketServer({ noServer: true, maxPayload: 1024 });

  // ---- The public relay view: what the server sees, live.
  const backlog: TrafficEvent[] = [];
  const viewers = new Set<WebSocket>();
  const unobserve = relay.observe((event) => {
    backlog.push(event);
    if (backlog.length > VIEW_BACKLOG) backlog.shift();
    if (!viewers.size) return;
    const frame = JSON.stringify({ type: 'traffic', event } satisfies ViewerMessage);
    for (const viewer of viewers) if (viewer.bufferedAmount < 1 << 20) viewer.send(frame);
  });
  viewWss.on('connection', (ws) => {
    viewers.add(ws);
    ws.on('close', () => viewers.delete(ws));
    ws.on('error', () => ws.terminate());
    ws.send(JSON.stringify({ type: 'backlog', events: backlog, directory: relay.directory() } satisfies ViewerMessage));
  });

  // ---- The regulator console: authenticate, then a snapshot and live intercepts.
  const consoles = new Set<WebSocket>();
  const stateFrame = () =>
    JSON.stringify({ type: 'state', audit: regulator.auditLog(), settings: regulator.tapSettings(), policy: relay.getPolicy() } satisfies ConsoleMessage);
  // Subscribed only while a console is connected: each intercept handed to a listener is first
  // opened with the escrow key (an Ed25519 verify and an unwrap), which nobody needs otherwise.
  let unlisten: (() => void) | null = null;
  const listen = () =>
    (unlisten ??= regulator.onIntercept((item) => {
      const frame = JSON.stringify({ type: 'intercept', item, total: regulator.archiveSize() } satisfies ConsoleMessage);
      for (const ws of consoles) ws.send(frame);
    }));
  const offIntercept = () => {
    unlisten?.();
    unlisten = null;
  };
  const offAudit = regulator.onAudit(() => {
    if (!consoles.size) return;
    // Deferred: the policy changes right after the audit entry is written.
    setImmediate(() => {
      const frame = stateFrame();
      for (const ws of consoles) ws.send(frame);
    });
  });
  consoleWss.on('connection', (ws) => {
    ws.on('error', () => ws.terminate());
    const timer = setTimeout(() => ws.close(CloseCode.LoginTimeout, 'send the admin token first'), 5000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      const parsed = parseConsoleClientMessage(data.toString());
      if (!parsed.ok || !tokenMatches(parsed.value.token, adminToken)) {
        ws.send(JSON.stringify({ type: 'error', code: 'forbidden', message: 'wrong admin token' } satisfies ConsoleMessage));
        ws.close(CloseCode.PolicyViolation, 'wrong admin token');
        return;
      }
      consoles.add(ws);
      listen();
      ws.on('close', () => {
        consoles.delete(ws);
        if (!consoles.size) offIntercept();
      });
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          intercepts: regulator.recent(200),
          total: regulator.archiveSize(),
          audit: regulator.auditLog(),
          settings: regulator.tapSettings(),
          policy: relay.getPolicy(),
          kid: regulator.kid,
        } satisfies ConsoleMessage),
      );
    });
  });

  relayWss.on('connection', (ws, req) => relay.handleConnection(ws, req.socket.remoteAddress ?? 'unknown'));

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    if (!sameOrigin(req)) {
      // Cross-site WebSocket hijacking: another site's page must not act as a logged-in tab.
      log.info('refused cross-origin websocket', { origin: req.headers.origin ?? '' });
      return refuseUpgrade(socket, 403, 'Forbidden: cross-origin WebSocket');
    }
    const path = (req.url ?? '').split('?')[0];
    const wss = path === '/ws' ? relayWss : path === '/ws/relay-view' ? viewWss : path === '/ws/regulator' ? consoleWss : null;
    if (!wss) return refuseUpgrade(socket, 404, 'Not Found');
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
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
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      unobserve();
      offIntercept();
      offAudit();
      relay.close();
      for (const ws of [...viewers, ...consoles]) ws.close(CloseCode.GoingAway, 'relay shutting down');
      for (const wss of [relayWss, viewWss, consoleWss]) wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      regulator.close();
      store.close();
    })());

  return { url: `http://${urlHost}:${port}`, port, host, adminToken, relay, regulator, store, server, close };
}
