/**
 * The fuzz corpus: malformed frames of every kind the issue names (random bytes
 * as binary and as text, truncated JSON, wrong types, huge numbers, deep nesting,
 * unknown types, valid-looking envelopes with one bad field, prototype-pollution
 * keys, oversize frames, bad logins), generated from a seed.
 */
import { isUtf8 } from 'node:buffer';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, parseClientMessage, type Envelope } from '../../shared/protocol.ts';
import { newIdentity, toB64, type Identity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import type { Rng } from './support.ts';

export interface FuzzFrame {
  kind: string;
  data: string | Buffer;
  binary: boolean;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** A real envelope and frames to mutate (built once per run). */
export interface Templates {
  env: Envelope;
  sender: Identity;
  target: Identity;
  frames: Record<'hello' | 'send' | 'ack' | 'read' | 'ping', Record<string, Json>>;
}

export function makeTemplates(sender: Identity, target: Identity): Templates {
  const { env } = sealEnvelope({ sender, to: [{ pin: target.pin, signPk: target.signPk }], conv: 'dm', body: { text: 'fuzz template' } });
  const stranger = newIdentity();
  return {
    env,
    sender,
    target,
    frames: {
      hello: { type: 'hello', v: PROTOCOL_VERSION, pk: toB64(stranger.signPk), name: 'Fuzz', sig: toB64(new Uint8Array(64).fill(1)) },
      send: { type: 'send', env: env as unknown as Json },
      ack: { type: 'ack', qids: [1, 2, 3] },
      read: { type: 'read', to: target.pin, ids: [env.id] },
      ping: { type: 'ping', t: 1 },
    },
  };
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

function randomScalar(rng: Rng): Json {
  return rng.pick<() => Json>([
    () => null,
    () => rng.next() < 0.5,
    () => rng.int(-1e6, 1e6),
    () => rng.next() * 1e308,
    () => -rng.next() * 1e308,
    () => rng.hex(rng.int(0, 40)),
    () => '',
    () => '\u0000\u202e\ud800',
    () => 'x'.repeat(rng.int(100, 5000)),
  ])();
}

function randomJson(rng: Rng, depth: number): Json {
  if (depth <= 0 || rng.next() < 0.4) return randomScalar(rng);
  if (rng.next() < 0.5) return Array.from({ length: rng.int(0, 4) }, () => randomJson(rng, depth - 1));
  const obj: Record<string, Json> = {};
  for (let i = rng.int(0, 4); i > 0; i--) obj[rng.pick(['type', 'env', 'qids', 't', 'to', 'ids', 'pk', 'sig', 'name', 'v', rng.hex(4)])] = randomJson(rng, depth - 1);
  return obj;
}

/** A value of a different JSON type than `x`. */
function wrongType(rng: Rng, x: unknown): Json {
  const options: Json[] = [null, true, 0, -1, 1.5, 'string', '', [], {}, [1, 2], { a: 1 }];
  for (let i = 0; i < 10; i++) {
    const v = rng.pick(options);
    if (typeof v !== typeof x || Array.isArray(v) !== Array.isArray(x) || (v === null) !== (x === null)) return v;
  }
  return null;
}

const b64Of = (n: number, fill = 7): string => toB64(new Uint8Array(n).fill(fill));

/** One broken field of a real envelope: each a mistake a buggy or hostile client could make. */
function mutateEnvelope(rng: Rng, t: Templates): Record<string, Json> {
  const env = clone(t.env) as unknown as Record<string, Json>;
  const pin = t.env.from;
  const field = rng.pick(['id', 'from', 'to', 'conv', 'ts', 'nonce', 'body', 'wraps', 'escrow', 'keys', 'sig', 'v', 'extra', 'missing', 'semantic']);
  const keys = env.keys as Record<string, Json>;
  const set = (v: Json) => {
    env[field] = v;
  };
  switch (field) {
    case 'id':
      set(rng.pick<Json>(['', 'ABC', rng.hex(31), rng.hex(33), rng.hex(32).toUpperCase(), 12345, null, `${rng.hex(30)}zz`]));
      break;
    case 'from':
      set(rng.pick<Json>([pin.toLowerCase(), pin.slice(1), `${pin}0`, 0xdeadbeef, 'ZZZZZZZZ', t.target.pin]));
      break;
    case 'to':
      set(rng.pick<Json>([[], [t.target.pin, t.target.pin], [pin], Array.from({ length: 64 }, (_, i) => i.toString(16).toUpperCase().padStart(8, '0')), ['zz'], t.target.pin]));
      break;
    case 'conv':
      set(rng.pick<Json>(['group', 'g-123', '', 5, `g-${rng.hex(16).toUpperCase()}`, 'dm ']));
      break;
    case 'ts':
      set(rng.pick<Json>([-1, 1.5, 1e300, '123', null, 8.64e15 + 1]));
      break;
    case 'nonce':
      set(rng.pick<Json>([b64Of(23), b64Of(25), 'not base64!!', '', b64Of(24).replace(/=*$/, '')]));
      break;
    case 'body':
      set(rng.pick<Json>(['', 'AAAA', 'AAAAA', 7, b64Of(16)]));
      break;
    case 'wraps': {
      const wraps = keys.wraps as { to: string; key: string }[];
      keys.wraps = rng.pick<Json>([
        [],
        wraps.slice(1),
        [...wraps, { to: 'ABCDEF01', key: b64Of(80) }],
        wraps.map((w) => ({ ...w, key: b64Of(79) })),
        wraps.map((w) => ({ ...w, key: '!!!!' })),
        wraps.map((w) => ({ ...w, extra: 1 })),
        'wraps',
      ]);
      break;
    }
    case 'escrow':
      // The escrow field lives in the key model: malformed ones, and one in a model that has none.
      keys.model = rng.pick<Json>(['e2e-escrow', 'e2e']);
      keys.escrow = rng.pick<Json>([{}, { kid: 'x', key: b64Of(80) }, 'yes', [], { kid: rng.hex(16).toUpperCase(), key: b64Of(80) }, { kid: rng.hex(16), key: b64Of(81) }]);
      break;
    case 'keys':
      // Another or no model name, a model of the lab not implemented yet, or no key model at all.
      if (rng.next() < 0.2) delete env.keys;
      else keys.model = rng.pick<Json>(['', 'E2E', 'app-key', 'server-key', 'ratchet', 'ghost', 'rot13', null, 7]);
      break;
    case 'sig':
      set(rng.pick<Json>([b64Of(63), b64Of(65), '', null]));
      break;
    case 'v':
      set(rng.pick<Json>([1, 3, '2', 0, null]));
      break;
    case 'extra':
      // JSON.parse makes these own properties; the strict schema must refuse them, never merge them.
      return JSON.parse(
        `${JSON.stringify(env).slice(0, -1)},${rng.pick(['"__proto__":{"polluted":"yes"}', '"constructor":{"prototype":{"polluted":"yes"}}', '"x":1'])}}`,
      ) as Record<string, Json>;
    case 'missing':
      delete env[rng.pick(Object.keys(env))];
      break;
    case 'semantic':
      // Schema-valid but refused by the relay: an unknown recipient, or a sender that is not the session.
      if (rng.next() < 0.5) {
        env.to = ['0BADF00D'];
        keys.wraps = [
          { to: pin, key: b64Of(80) },
          { to: '0BADF00D', key: b64Of(80) },
        ];
      }
      break;
  }
  return env;
}

/** One malformed frame. */
export function fuzzFrame(rng: Rng, t: Templates): FuzzFrame {
  const text = (kind: string, data: string): FuzzFrame => ({ kind, data, binary: false });
  const kind = rng.pick([
    'binary',
    'random-bytes-text',
    'random-ascii',
    'truncated-json',
    'wrong-type',
    'huge-number',
    'deep-nesting',
    'unknown-type',
    'bad-envelope',
    'bad-envelope',
    'bad-envelope',
    'prototype-pollution',
    'random-json',
    'bad-hello',
    'bad-read',
    'oversize',
  ]);
  switch (kind) {
    case 'binary':
      return { kind, data: rng.bytes(rng.int(0, 2048)), binary: true };
    case 'random-bytes-text':
      // Sent as a text frame whatever the bytes: often not valid UTF-8.
      return { kind, data: rng.bytes(rng.int(1, 2048)), binary: false };
    case 'random-ascii': {
      let s = '';
      for (let i = rng.int(0, 500); i > 0; i--) s += String.fromCharCode(rng.int(32, 126));
      return text(kind, s);
    }
    case 'truncated-json': {
      const full = JSON.stringify(t.frames[rng.pick(['hello', 'send', 'ack', 'read', 'ping'] as const)]);
      return text(kind, full.slice(0, rng.int(0, full.length - 1)));
    }
    case 'wrong-type': {
      const which = rng.pick(['hello', 'send', 'ack', 'read', 'ping'] as const);
      const frame = clone(t.frames[which]);
      const key = rng.pick(Object.keys(frame));
      frame[key] = wrongType(rng, frame[key]);
      return text(kind, JSON.stringify(frame));
    }
    case 'huge-number':
      return text(
        kind,
        rng.pick([
          '{"type":"ping","t":1e999}',
          '{"type":"ping","t":-1e999}',
          `{"type":"ping","t":1${'0'.repeat(400)}}`,
          '{"type":"ack","qids":[1e308]}',
          '{"type":"ack","qids":[9007199254740993]}',
          '{"type":"ack","qids":[-1]}',
          '{"type":"ack","qids":[0.5]}',
          `{"type":"send","env":${JSON.stringify({ ...t.env, ts: 1e308 })}}`,
          `{"type":"ack","qids":[${Array.from({ length: 1001 }, (_, i) => i + 1).join(',')}]}`,
        ]),
      );
    case 'deep-nesting': {
      const n = rng.int(1000, 30000);
      return text(
        kind,
        rng.pick([
          '['.repeat(2 * n),
          '['.repeat(n) + ']'.repeat(n),
          `{"type":"send","env":${'['.repeat(n)}${']'.repeat(n)}}`,
          `${'{"a":'.repeat(Math.floor(n / 3))}1${'}'.repeat(Math.floor(n / 3))}`,
          `{"type":"ack","qids":${'['.repeat(n)}1${']'.repeat(n)}}`,
          `{"type":"read","to":"${t.target.pin}","ids":${'['.repeat(n)}`,
        ]),
      );
    }
    case 'unknown-type':
      return text(
        kind,
        JSON.stringify(
          rng.pick<Json>([
            { type: rng.hex(6) },
            { type: '__proto__' },
            { type: 'constructor' },
            { type: 'toString' },
            { type: 'HELLO' },
            { type: 'welcome', pin: t.target.pin },
            { type: 'envelope', qid: 1, env: t.env as unknown as Json },
            { t: 1 },
            { type: 7 },
            { type: null },
            [],
            'ping',
            42,
            null,
          ]),
        ),
      );
    case 'bad-envelope':
      return text(kind, JSON.stringify({ type: 'send', env: mutateEnvelope(rng, t) }));
    case 'prototype-pollution':
      return text(
        kind,
        rng.pick([
          '{"type":"ping","t":1,"__proto__":{"polluted":"yes"}}',
          '{"__proto__":{"type":"ping","t":1}}',
          '{"type":"ack","qids":[1],"constructor":{"prototype":{"polluted":"yes"}}}',
          '{"type":"send","env":{"__proto__":{"v":1}}}',
          `{"type":"hello","v":2,"pk":"${t.frames.hello.pk}","name":"x","sig":"${t.frames.hello.sig}","__proto__":{"isAdmin":true}}`,
          '{"type":"read","to":"ABCDEF01","ids":[],"__proto__":[]}',
        ]),
      );
    case 'random-json':
      return text(kind, JSON.stringify(randomJson(rng, 5)));
    case 'bad-hello': {
      const frame = clone(t.frames.hello);
      const mutation = rng.int(0, 4);
      if (mutation === 0) frame.sig = b64Of(64, rng.int(0, 255));
      else if (mutation === 1) frame.name = '';
      else if (mutation === 2) frame.name = 'x'.repeat(41);
      else if (mutation === 3) frame.name = 'evil\nlog line';
      else frame.pk = b64Of(31);
      return text(kind, JSON.stringify(frame));
    }
    case 'bad-read':
      return text(kind, JSON.stringify({ type: 'read', to: t.target.pin, ids: Array.from({ length: rng.int(1, 1000) }, () => rng.hex(32)) }));
    case 'oversize':
      return text(kind, `{"type":"ping","t":1,"pad":"${'x'.repeat(MAX_FRAME_BYTES + rng.int(0, 1000))}"}`);
    default:
      throw new Error(`no generator for ${kind}`);
  }
}

/**
 * What the relay must do with a frame: refuse it (an error reply, or a close with a named
 * reason), or nothing in particular when the generator happened to make a valid ping, ack or
 * lookup (a ping is answered with a pong, an ack of unknown items is ignored, a lookup is
 * answered with what the directory holds; none is bad).
 * Schema-valid hellos, sends and reads from the corpus are still refused: a random login
 * signature, an unknown recipient, a sender that is not the session, ids of no message.
 */
export function mustRefuse(frame: FuzzFrame): boolean {
  if (frame.binary) return true;
  const bytes = typeof frame.data === 'string' ? Buffer.from(frame.data) : frame.data;
  if (bytes.length > MAX_FRAME_BYTES || !isUtf8(bytes)) return true;
  const parsed = parseClientMessage(bytes.toString('utf8'));
  return !parsed.ok || (parsed.value.type !== 'ping' && parsed.value.type !== 'ack' && parsed.value.type !== 'lookup');
}
