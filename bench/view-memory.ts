/**
 * Memory per relay-view socket, measured on the relay in its own process (bench/relay-process.ts,
 * with --expose-gc so each sample follows two full collections):
 *
 * 1. idle: N viewers that read, on a relay with no traffic yet;
 * 2. never reading: after 200 envelopes of about 61 KB (the backlog is then full, by bytes),
 *    M viewers that complete the upgrade and never read again.
 *
 * `node --import tsx bench/view-memory.ts [N=200] [M=60]`. Prints one line per figure (RSS and
 * heap+external+arrayBuffers, per socket). Not part of `npm run bench`.
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import WebSocket from 'ws';
import { cryptoReady, newIdentity, signLogin, toB64 } from '../shared/crypto.ts';
import { sealEnvelope } from '../shared/envelope.ts';
import { spawnTs, sleep, type MemorySample } from './common.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';

const idleCount = Number(process.argv[2] ?? 200);
const stalledCount = Number(process.argv[3] ?? 60);

await cryptoReady();
const limits = { rateBurst: 1e9, ratePerSecond: 1e9, viewersPerAddress: 100_000, viewersTotal: 100_000 };
const server = spawnTs('relay-process.ts', [JSON.stringify(limits)], ['--expose-gc']);
const started = await server.request<{ url: string; wsUrl: string }>({ cmd: 'start' });
const port = Number(new URL(started.url).port);
const memory = () => server.request<MemorySample>({ cmd: 'memory' });
const heap = (m: MemorySample) => m.heapUsed + m.external + m.arrayBuffers;
const rss = (m: MemorySample) => m.vmRss ?? m.rss;
const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const report = (what: string, before: MemorySample, after: MemorySample, n: number) =>
  process.stdout.write(
    `${what}: ${n} sockets, per socket ${kb((rss(after) - rss(before)) / n)} RSS, ${kb((heap(after) - heap(before)) / n)} heap+external (total ${((rss(after) - rss(before)) / 1e6).toFixed(1)} MB RSS)\n`,
  );

// 1. Idle viewers that read.
const base = await memory();
const idle: WebSocket[] = [];
for (let i = 0; i < idleCount; i++) {
  const ws = new WebSocket(`${started.wsUrl}/relay-view`);
  await new Promise((r) => ws.once('message', r));
  idle.push(ws);
}
await sleep(200);
report('idle viewers (reading, empty backlog)', base, await memory(), idleCount);
for (const ws of idle) ws.terminate();
await sleep(500);

// 2. A full backlog, then viewers that never read.
const me = newIdentity();
const other = newIdentity();
const login = async (id: ReturnType<typeof newIdentity>, name: string) => {
  const ws = new WebSocket(started.wsUrl);
  const frames: { type: string; nonce?: string }[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  while (!frames.some((f) => f.type === 'challenge')) await sleep(5);
  const nonce = frames.find((f) => f.type === 'challenge')!.nonce!;
  ws.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(id.signPk), name, sig: signLogin(nonce, id) }));
  while (!frames.some((f) => f.type === 'welcome')) await sleep(5);
  return { ws, frames };
};
const sender = await login(me, 'Sender');
(await login(other, 'Receiver')).ws.terminate();
const { env } = sealEnvelope({ sender: me, to: [{ pin: other.pin, signPk: other.signPk }], conv: 'dm', body: { text: 'x' } });
const body = randomBytes(45_000).toString('base64');
for (let i = 0; i < 200; i++) sender.ws.send(JSON.stringify({ type: 'send', env: { ...env, id: randomBytes(16).toString('hex'), body } }));
while (sender.frames.filter((f) => f.type === 'accepted').length < 200) await sleep(20);
await sleep(300);

const before = await memory();
const stalled: Socket[] = [];
for (let i = 0; i < stalledCount; i++) {
  const socket = netConnect(port, '127.0.0.1');
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.write(
    `GET /ws/relay-view HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise<void>((r) => socket.once('data', () => r()));
  socket.pause();
  stalled.push(socket);
}
await sleep(1000);
report('never-reading viewers (full backlog)', before, await memory(), stalledCount);

for (const s of stalled) s.destroy();
sender.ws.terminate();
await server.request({ cmd: 'stop' });
