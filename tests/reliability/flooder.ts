/**
 * A flooding client, run as its own process so that its CPU is not the test's:
 * `tsx tests/reliability/flooder.ts WS_URL TARGET_PIN TARGET_PK_B64`.
 * It logs in, seals a stock of real envelopes to the target, and on "on" sends
 * them as fast as its socket takes them (reconnecting when the relay closes it);
 * "off" stops, "stats" prints a JSON line, "quit" (or the end of stdin) exits.
 * It exits by itself after 5 minutes whatever happens.
 */
import WebSocket from 'ws';
import { createInterface } from 'node:readline';
import { cryptoReady, fromB64, newIdentity, sealEnvelope, signLogin, toB64 } from '../../shared/crypto.ts';
import { parseServerMessage } from '../../shared/protocol.ts';

const [wsUrl, targetPin, targetPk] = process.argv.slice(2);
if (!wsUrl || !targetPin || !targetPk) {
  process.stderr.write('usage: flooder.ts WS_URL TARGET_PIN TARGET_PK_B64\n');
  process.exit(2);
}
setTimeout(() => process.exit(0), 5 * 60_000).unref();

await cryptoReady();
const me = newIdentity();
const target = { pin: targetPin, signPk: fromB64(targetPk) };
const STOCK = 1500;
const frames: string[] = [];
for (let i = 0; i < STOCK; i++) {
  const { env } = sealEnvelope({ sender: me, to: [target], conv: 'dm', body: { text: `flood ${i}` } });
  frames.push(JSON.stringify({ type: 'send', env }));
}

const stats = { sent: 0, accepted: 0, rateLimited: 0, otherErrors: 0, closes: {} as Record<string, number>, connections: 0 };
let on = false;
let ws: WebSocket | null = null;
let ready = false;
let next = 0;

function connect(): void {
  ready = false;
  stats.connections += 1;
  const socket = new WebSocket(wsUrl!);
  ws = socket;
  socket.on('message', (data) => {
    const parsed = parseServerMessage(data.toString());
    if (!parsed.ok) return;
    const msg = parsed.value;
    if (msg.type === 'challenge') socket.send(JSON.stringify({ type: 'hello', v: 1, pk: toB64(me.signPk), name: 'Flooder', sig: signLogin(msg.nonce, me) }));
    else if (msg.type === 'welcome') {
      if (!ready) process.stdout.write('ready\n');
      ready = true;
      pump();
    } else if (msg.type === 'accepted') stats.accepted += 1;
    else if (msg.type === 'error') {
      if (msg.code === 'rate_limited') stats.rateLimited += 1;
      else stats.otherErrors += 1;
    }
  });
  socket.on('close', (code) => {
    stats.closes[code] = (stats.closes[code] ?? 0) + 1;
    if (ws === socket) setTimeout(connect, 10);
  });
  socket.on('error', () => {});
}

function pump(): void {
  const socket = ws;
  if (!on || !ready || !socket || socket.readyState !== WebSocket.OPEN) return;
  // As fast as the socket takes it; when the relay stops reading, wait a little instead of spinning.
  for (let k = 0; k < 500 && socket.bufferedAmount < 256 * 1024; k++) {
    socket.send(frames[next++ % STOCK]!);
    stats.sent += 1;
  }
  if (socket.bufferedAmount < 256 * 1024) setImmediate(pump);
  else setTimeout(pump, 2);
}

connect();
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'on') {
    on = true;
    pump();
  } else if (cmd === 'off') on = false;
  else if (cmd === 'stats') process.stdout.write(`${JSON.stringify(stats)}\n`);
  else if (cmd === 'quit') process.exit(0);
});
rl.on('close', () => process.exit(0));
