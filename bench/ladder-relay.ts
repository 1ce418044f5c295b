/**
 * The rungs of the cost ladder (part of `npm run bench`): servers that do
 * more and more of the relay's work, driven by the same load as the baseline
 * and the relay. None is a relay anyone should run; together they answer one
 * question for the throughput target: which part of the relay's work costs what,
 * and how close to the bare baseline can a server that does that part get?
 *
 * Every rung speaks the relay's wire protocol to the load generator: the signed
 * login (challenge, `verifyLogin`, welcome; once per client, outside the timed
 * part), `accepted` to the sender and `envelope` with a qid to each recipient.
 * Like the relay, each rung writes a socket's frames of one event-loop turn in
 * one go (the TCP socket is corked until setImmediate).
 *
 *   accept-only  JSON.parse; forward + `accepted`; acks parsed and dropped, no
 *                receipts. The least a server can do and still tell a sender
 *                its message arrived.
 *   protocol-raw JSON.parse; the whole protocol in memory: on an envelope's ack
 *                a `delivered` receipt (its own qid) to the sender, whose ack
 *                ends it.
 *   protocol     the same, each frame parsed and validated with the real schema
 *                (`parseClientMessage`), as the relay does.
 *   records      `protocol`, plus the two records the design requires of the
 *                relay whatever its queueing: the metadata log (a row per
 *                envelope and per receipt, as server/store.ts writes) and the
 *                regulator's archive (a row per envelope, as server/regulator.ts
 *                writes), in SQLite files like the relay's (WAL, synchronous
 *                NORMAL), one transaction per turn committed before the turn's
 *                frames leave. No offline queue, no stored envelopes.
 *
 * Started by bench/run.ts as `node --import tsx bench/ladder-relay.ts <rung>`;
 * the same IPC commands as bench/relay-process.ts.
 */
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import Database from 'better-sqlite3';
import { WebSocketServer, type WebSocket } from 'ws';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, parseClientMessage, type ClientMessage, type Envelope } from '../shared/protocol.ts';
import { cryptoReady, fromB64, pinOf, verifyLogin } from '../shared/crypto.ts';
import { LADDER_RUNGS, listenLocal, serveServer, type LadderRung } from './common.ts';

const rung = process.argv[2] as LadderRung;
if (!LADDER_RUNGS.includes(rung)) throw new Error(`unknown rung ${String(rung)}: one of ${LADDER_RUNGS.join(', ')}`);
const validate = rung === 'protocol' || rung === 'records';
const receipts = rung !== 'accept-only';

await cryptoReady();

// ---------------------------------------------------------------------------
// The records rung's two SQLite files (the same tables as the relay's metadata log and the archive)

interface Records {
  db: Database.Database;
  archiveDb: Database.Database;
  metadata: Database.Statement;
  archive: Database.Statement;
  dir: string;
}

function openRecords(): Records {
  const dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-bench-ladder-'));
  const open = (file: string) => {
    const db = new Database(join(dir, file));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('wal_autocheckpoint = 10000');
    return db;
  };
  const db = open('relay.db');
  db.exec(`CREATE TABLE metadata (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL,
    sender TEXT NOT NULL, recipients TEXT NOT NULL, conv TEXT NOT NULL, ref TEXT NOT NULL, bytes INTEGER NOT NULL, escrow INTEGER NOT NULL);
    CREATE INDEX metadata_by_ref ON metadata (ref);`);
  const archiveDb = open('regulator.db');
  archiveDb.exec(`CREATE TABLE archive (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, env_id TEXT NOT NULL,
    sender TEXT NOT NULL, sender_pk TEXT NOT NULL, json TEXT NOT NULL);`);
  return {
    db,
    archiveDb,
    metadata: db.prepare('INSERT INTO metadata (at, kind, sender, recipients, conv, ref, bytes, escrow) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    archive: archiveDb.prepare('INSERT INTO archive (at, env_id, sender, sender_pk, json) VALUES (?, ?, ?, ?, ?)'),
    dir,
  };
}

const records = rung === 'records' ? openRecords() : null;

// ---------------------------------------------------------------------------
// One write per socket per turn (and, for `records`, the commit before it)

const corked = new Set<Socket>();
let turnOpen = false;

function tcpOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}

function openTurn(): void {
  if (turnOpen) return;
  turnOpen = true;
  if (records) {
    records.db.exec('BEGIN');
    records.archiveDb.exec('BEGIN');
  }
  setImmediate(endTurn);
}

function endTurn(): void {
  turnOpen = false;
  if (records) {
    records.archiveDb.exec('COMMIT');
    records.db.exec('COMMIT');
  }
  for (const socket of corked) socket.uncork();
  corked.clear();
}

function send(ws: WebSocket, frame: string): void {
  if (ws.readyState !== 1) return;
  const socket = tcpOf(ws);
  if (!corked.has(socket)) {
    socket.cork();
    corked.add(socket);
  }
  ws.send(frame);
}

// ---------------------------------------------------------------------------
// The protocol

const server = createServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: MAX_FRAME_BYTES });
const byPin = new Map<string, WebSocket>();
const pkOf = new Map<string, string>();

/** What an unacknowledged qid stands for: an envelope (its sender gets a receipt on ack) or a receipt. */
interface Pending {
  to: string;
  sender: string | null;
  id: string;
}
const pending = new Map<number, Pending>();
let nextQid = 1;

function parse(raw: string): ClientMessage | null {
  if (validate) {
    const parsed = parseClientMessage(raw);
    return parsed.ok ? parsed.value : null;
  }
  try {
    return JSON.parse(raw) as ClientMessage;
  } catch {
    return null;
  }
}

function onSend(ws: WebSocket, pin: string, env: Envelope): void {
  if (env.from !== pin) return;
  const json = JSON.stringify(env); // serialized once, fanned out as is
  const at = Date.now();
  if (records) {
    records.metadata.run(at, 'envelope', env.from, env.to.join(','), env.conv, env.id, json.length, env.keys.model === 'e2e-escrow' ? 1 : 0);
    records.archive.run(at, env.id, env.from, pkOf.get(pin) ?? '', json);
  }
  send(ws, `{"type":"accepted","id":"${env.id}","duplicate":false}`);
  for (const to of env.to) {
    const qid = nextQid++;
    if (receipts) pending.set(qid, { to, sender: pin, id: env.id });
    const target = byPin.get(to);
    if (target) send(target, `{"type":"envelope","qid":${qid},"env":${json}}`);
  }
}

function onAck(pin: string, qids: number[]): void {
  const at = Date.now();
  for (const qid of qids) {
    const item = pending.get(qid);
    if (!item || item.to !== pin) continue;
    pending.delete(qid);
    if (item.sender === null) continue; // a receipt's ack: done
    const rqid = nextQid++;
    const payload = `"id":"${item.id}","by":"${pin}","state":"delivered","at":${at}`;
    records?.metadata.run(at, 'receipt:delivered', pin, item.sender, '', item.id, payload.length + 2, 0);
    pending.set(rqid, { to: item.sender, sender: null, id: item.id });
    const target = byPin.get(item.sender);
    if (target) send(target, `{"type":"receipt","qid":${rqid},${payload}}`);
  }
}

wss.on('connection', (ws) => {
  let pin: string | null = null;
  const nonce = randomBytes(32).toString('base64');
  ws.on('error', () => ws.terminate());
  ws.on('close', () => {
    if (pin && byPin.get(pin) === ws) byPin.delete(pin);
  });
  ws.send(JSON.stringify({ type: 'challenge', v: PROTOCOL_VERSION, nonce }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    openTurn();
    const msg = parse(data.toString());
    if (!msg) return;
    if (msg.type === 'hello') {
      if (pin || !verifyLogin(nonce, msg.pk, msg.sig)) return ws.close(4002, 'login failed');
      pin = pinOf(fromB64(msg.pk));
      byPin.set(pin, ws);
      pkOf.set(pin, msg.pk);
      send(ws, JSON.stringify({ type: 'welcome', pin, name: msg.name, directory: [] }));
      return;
    }
    if (!pin) return;
    if (msg.type === 'send') onSend(ws, pin, msg.env);
    else if (msg.type === 'ack' && receipts) onAck(pin, msg.qids);
  });
});

serveServer(async (msg) => {
  switch (msg.cmd) {
    case 'start': {
      return { ...(await listenLocal(server)), rung };
    }
    case 'stats':
      return { online: byPin.size, connections: wss.clients.size, queueDepth: pending.size };
    case 'stop': {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => server.close(() => resolve())));
      if (records) {
        records.db.close();
        records.archiveDb.close();
        rmSync(records.dir, { recursive: true, force: true });
      }
      setTimeout(() => process.exit(0), 20);
      return { stopped: true };
    }
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
});
