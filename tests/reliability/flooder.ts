/**
 * A flooding client, run as its own process so that its CPU is not the test's:
 * `tsx tests/reliability/flooder.ts WS_URL TARGET_PIN TARGET_PK_B64`, or
 * `tsx tests/reliability/flooder.ts WS_URL fanout N` for the fan-out flood.
 * It logs in, seals a stock of real envelopes to the target, and on "on" sends
 * them as fast as its socket takes them (reconnecting when the relay closes it);
 * "off" stops, "stats" prints a JSON line, "quit" (or the end of stdin) exits.
 * It exits by itself after 5 minutes whatever happens.
 *
 * Fan-out: it first logs in N recipients of its own, which stay online, read
 * and acknowledge everything (so the relay really pushes every copy), then
 * sends group envelopes of the largest size a frame allows to all N. One
 * envelope is sealed; each send gets a fresh id (the relay checks no
 * signature, and these recipients open nothing), so none is a cheap duplicate.
 */
import WebSocket from 'ws';
import { createInterface } from 'node:readline';
import { cryptoReady, fromB64, newIdentity, signLogin, toB64 } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, parseServerMessage } from '../../shared/protocol.ts';
import { newGroupId } from '../../client/core/messenger.ts';

const [wsUrl, targetPin, targetPk] = process.argv.slice(2);
const fanout = targetPin === 'fanout' ? Number(targetPk) : 0;
if (!wsUrl || !targetPin || !targetPk || (targetPin === 'fanout' && !(fanout >= 1 && fanout <= 63))) {
  process.stderr.write('usage: flooder.ts WS_URL TARGET_PIN TARGET_PK_B64 | flooder.ts WS_URL fanout N (1..63)\n');
  process.exit(2);
}
setTimeout(() => process.exit(0), 5 * 60_000).unref();

await cryptoReady();
const me = newIdentity();
const STOCK = 1500;
const frames: string[] = [];
const stats = { sent: 0, accepted: 0, rateLimited: 0, otherErrors: 0, closes: {} as Record<string, number>, connections: 0, receivedByRecipients: 0, recipientBytes: 0 };

/** A recipient of the fan-out flood: logged in, reading, acknowledging what it gets every 50 ms. */
function recipient(identity: ReturnType<typeof newIdentity>): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl!);
    const acks: string[] = [];
    const flush = () => {
      if (socket.readyState === WebSocket.OPEN && acks.length) socket.send(`{"type":"ack","qids":[${acks.splice(0, 1000).join(',')}]}`);
      if (acks.length) setTimeout(flush, 50);
    };
    socket.on('message', (data) => {
      const text = data.toString();
      stats.recipientBytes += text.length;
      const qid = /^\{"type":"(?:envelope|receipt)","qid":(\d+)/.exec(text)?.[1];
      if (qid) {
        if (text.startsWith('{"type":"envelope"')) stats.receivedByRecipients += 1;
        if (!acks.length) setTimeout(flush, 50);
        acks.push(qid);
        return;
      }
      const parsed = parseServerMessage(text);
      if (!parsed.ok) return;
      if (parsed.value.type === 'challenge') {
        socket.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(identity.signPk), name: 'Fanout target', sig: signLogin(parsed.value.nonce, identity) }));
      } else if (parsed.value.type === 'welcome') resolve();
    });
    socket.on('error', reject);
  });
}

if (fanout) {
  const ids = Array.from({ length: fanout }, () => newIdentity());
  // In batches: more than pendingLoginsPerAddress (50) sockets from one address still logging in
  // at once are refused 503, which on a busy machine (slow logins) 63 at once can reach.
  for (let i = 0; i < ids.length; i += 20) await Promise.all(ids.slice(i, i + 20).map(recipient));
  const to = ids.map((id) => ({ pin: id.pin, signPk: id.signPk }));
  const conv = newGroupId();
  // The largest group envelope a frame holds: grow the text until the frame is just under the limit.
  let textLength = 30_000;
  let template = '';
  for (let round = 0; round < 4; round++) {
    const { env } = sealEnvelope({ sender: me, to, conv, body: { text: 'f'.repeat(textLength), group: 'Flood' } });
    template = JSON.stringify({ type: 'send', env });
    textLength += Math.floor(((MAX_FRAME_BYTES - 64 - template.length) * 3) / 4);
  }
  if (template.length > MAX_FRAME_BYTES) throw new Error(`fan-out frame of ${template.length} bytes is over the limit`);
  frames.push(template);
} else {
  const target = { pin: targetPin, signPk: fromB64(targetPk) };
  for (let i = 0; i < STOCK; i++) {
    const { env } = sealEnvelope({ sender: me, to: [target], conv: 'dm', body: { text: `flood ${i}` } });
    frames.push(JSON.stringify({ type: 'send', env }));
  }
}

/** The next frame: from the stock in turn, or (fan-out) the one template with a fresh envelope id. */
let serial = 0;
function nextFrame(): string {
  if (!fanout) return frames[next++ % STOCK]!;
  const template = frames[0]!;
  const at = template.indexOf('"id":"') + 6;
  serial += 1;
  const id = `${process.pid.toString(16).padStart(8, '0')}${serial.toString(16).padStart(24, '0')}`;
  return template.slice(0, at) + id + template.slice(at + 32);
}
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
    if (msg.type === 'challenge') socket.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(me.signPk), name: 'Flooder', sig: signLogin(msg.nonce, me) }));
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
    socket.send(nextFrame());
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
