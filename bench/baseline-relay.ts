/**
 * The baseline: a bare `ws` relay that only parses JSON and forwards by
 * recipient id. No login check, no schema, no store, no receipts, no observers:
 * the floor that any relay on Node and `ws` pays for moving the same frames.
 *
 *   hello {pin}      → remember this socket as that PIN, answer welcome
 *   send {env}       → forward the frame as received to every PIN in env.to
 *   anything else    → parsed, then dropped (the recipients' acks)
 *
 * Same process shape as bench/relay-process.ts (its own process, 127.0.0.1,
 * port 0, path /ws, same maxPayload) and the same IPC commands.
 */
import { createServer } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { MAX_FRAME_BYTES } from '../shared/protocol.ts';
import { listenLocal, serveServer } from './common.ts';

const server = createServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: MAX_FRAME_BYTES });
const byPin = new Map<string, WebSocket>();

wss.on('connection', (ws) => {
  let pin: string | null = null;
  ws.on('error', () => ws.terminate());
  ws.on('close', () => {
    if (pin && byPin.get(pin) === ws) byPin.delete(pin);
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg: { type?: unknown; pin?: unknown; env?: { to?: unknown } };
    try {
      msg = JSON.parse(data.toString()) as typeof msg;
    } catch {
      return;
    }
    if (msg.type === 'send' && Array.isArray(msg.env?.to)) {
      for (const to of msg.env.to) {
        const target = typeof to === 'string' ? byPin.get(to) : undefined;
        if (target && target.readyState === 1) target.send(data, { binary: false });
      }
    } else if (msg.type === 'hello' && typeof msg.pin === 'string') {
      pin = msg.pin;
      byPin.set(pin, ws);
      ws.send(JSON.stringify({ type: 'welcome', pin }));
    }
  });
});

serveServer(async (msg) => {
  switch (msg.cmd) {
    case 'start': {
      return { ...(await listenLocal(server)) };
    }
    case 'stats':
      return { online: byPin.size, connections: wss.clients.size, queueDepth: 0 };
    case 'stop': {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => server.close(() => resolve())));
      setTimeout(() => process.exit(0), 20);
      return { stopped: true };
    }
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
});
