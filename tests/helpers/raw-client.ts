/**
 * A hand-driven WebSocket client for integration tests: it logs in by itself
 * (unless told not to) and then sends exactly the frames the test builds, so a
 * test can do what no honest Messenger would (impersonate, skip acks, forge).
 */
import WebSocket from 'ws';
import { newIdentity, signLogin, toB64, type Identity } from '../../shared/crypto.ts';
import { PROTOCOL_VERSION, parseServerMessage, type ServerMessage } from '../../shared/protocol.ts';
import { until } from './relay.ts';

export interface RawClient {
  ws: WebSocket;
  identity: Identity;
  /** Every frame received that parsed, in order. */
  frames: ServerMessage[];
  /** Every frame received, as text. */
  raw: string[];
  /** The login challenge's nonce. */
  nonce: string;
  closed: Promise<{ code: number; reason: string }>;
  send(frame: unknown): void;
  next<T extends ServerMessage['type']>(type: T, match?: (f: Extract<ServerMessage, { type: T }>) => boolean): Promise<Extract<ServerMessage, { type: T }>>;
}

export interface RawOptions {
  identity?: Identity;
  name?: string;
  /** false: stop after the challenge, without logging in. */
  login?: boolean;
  /** Called with the client's teardown, for the test's cleanup list. */
  onCleanup?: (fn: () => void) => void;
}

export async function rawClient(wsUrl: string, opts: RawOptions = {}): Promise<RawClient> {
  const identity = opts.identity ?? newIdentity();
  const ws = new WebSocket(wsUrl);
  const frames: ServerMessage[] = [];
  const rawFrames: string[] = [];
  ws.on('message', (data) => {
    rawFrames.push(data.toString());
    const parsed = parseServerMessage(data.toString());
    if (parsed.ok) frames.push(parsed.value);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  opts.onCleanup?.(() => ws.terminate());
  const client: RawClient = {
    ws,
    identity,
    frames,
    raw: rawFrames,
    nonce: '',
    closed,
    send: (frame) => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
    async next(type, match) {
      let found: ServerMessage | undefined;
      await until(() => {
        found = frames.find((f) => f.type === type && (!match || match(f as never)));
        return found !== undefined;
      }, `a "${type}" frame`);
      return found as never;
    },
  };
  const challenge = await client.next('challenge');
  client.nonce = challenge.nonce;
  if (opts.login !== false) {
    client.send({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(identity.signPk), name: opts.name ?? 'Raw', sig: signLogin(challenge.nonce, identity) });
    await client.next('welcome');
  }
  return client;
}
