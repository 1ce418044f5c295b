/**
 * The parsers at the edge (shared/protocol.ts): valid frames pass, and every
 * bad one is refused with the right ErrorCode and a message naming the field,
 * without ever throwing. Also: the frame examples in docs/wire-format.md parse,
 * and policyCovers decides who is under the tap.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ClientMessage,
  CloseCode,
  Envelope,
  ErrorCode,
  MAX_FRAME_BYTES,
  MAX_RECIPIENTS,
  PROTOCOL_VERSION,
  ServerMessage,
  parseClientMessage,
  parseServerMessage,
  policyCovers,
  type Parsed,
  type Policy,
} from '../../shared/protocol.ts';

const ROOT = resolve(import.meta.dirname, '../..');

// PINs and byte strings of the right shapes; the parser does no crypto, so they need not be real keys.
const ALICE = '231568D1';
const BOB = 'FAFE7DFC';
const CAROL = '0A0B0C0D';
const DAVE = '11223344';
const bytes = (n: number, fill = 7): string => Buffer.alloc(n, fill).toString('base64');
const ID = '101112131415161718191a1b1c1d1e1f';

type Json = Record<string, unknown>;

/**
 * A v2 envelope of the right shapes. `wraps` and `escrow` overrides go into the key model (`keys`):
 * with an escrow field it is e2e-escrow, without it e2e; a `keys` override replaces the model whole.
 */
function dm(overrides: Json = {}): Json {
  const {
    wraps = [
      { to: ALICE, key: bytes(80, 1) },
      { to: BOB, key: bytes(80, 2) },
    ],
    escrow = null,
    ...rest
  } = overrides;
  const keys = escrow === null ? { model: 'e2e', wraps } : { model: 'e2e-escrow', wraps, escrow };
  return {
    v: 2,
    id: ID,
    from: ALICE,
    to: [BOB],
    conv: 'dm',
    ts: 1700000000000,
    nonce: bytes(24),
    body: bytes(40),
    keys,
    sig: bytes(64),
    ...rest,
  };
}

function group(to: string[], overrides: Json = {}): Json {
  return dm({
    to,
    conv: 'g-0123456789abcdef',
    wraps: [ALICE, ...to].map((pin, i) => ({ to: pin, key: bytes(80, i) })),
    ...overrides,
  });
}

const send = (env: Json): string => JSON.stringify({ type: 'send', env });

const POLICY: Policy = {
  tap: false,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: null,
  escrowKid: null,
  epoch: 0,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};
const TAP: Policy = {
  tap: true,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: bytes(32, 9),
  escrowKid: '9da6ac5719b8cbe9',
  epoch: 1,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};

/** Assert a refusal: the code, and a message that names the field (its dotted path). */
function expectRefused(result: Parsed<unknown>, code: string, field: string | RegExp): void {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.code).toBe(code);
  if (typeof field === 'string') expect(result.message).toContain(field);
  else expect(result.message).toMatch(field);
}

// ---------------------------------------------------------------------------

describe('parseClientMessage accepts valid frames', () => {
  it.each([
    ['hello', { type: 'hello', v: 2, pk: bytes(32), name: 'Alice', sig: bytes(64) }],
    ['send (dm)', { type: 'send', env: dm() }],
    ['send (dm, with escrow field)', { type: 'send', env: dm({ escrow: { kid: '9da6ac5719b8cbe9', key: bytes(80) } }) }],
    ['send (group of 3)', { type: 'send', env: group([BOB, CAROL]) }],
    ['ack', { type: 'ack', qids: [1, 2, 9007199254740991] }],
    ['read', { type: 'read', to: ALICE, ids: [ID] }],
    ['ping', { type: 'ping', t: 1700000000123 }],
  ])('%s', (_name, frame) => {
    const result = parseClientMessage(JSON.stringify(frame));
    expect(result).toEqual({ ok: true, value: frame });
  });

  it(`send with the largest group: ${MAX_RECIPIENTS} recipients and ${MAX_RECIPIENTS + 1} wraps`, () => {
    const to = Array.from({ length: MAX_RECIPIENTS }, (_, i) => (0x10000000 + i).toString(16).toUpperCase());
    expect(parseClientMessage(send(group(to))).ok).toBe(true);
  });

  it('names are trimmed, and may hold any printable Unicode', () => {
    const result = parseClientMessage(JSON.stringify({ type: 'hello', v: 2, pk: bytes(32), name: '  Zoë 🐝  ', sig: bytes(64) }));
    expect(result.ok && result.value.type === 'hello' && result.value.name).toBe('Zoë 🐝');
  });
});

describe('parseClientMessage refuses bad frames with the right code and a message naming the field', () => {
  it.each(['', '{', '{"type":"ping","t":1,}', "{'type':'ping'}", 'undefined', '{"type":"ping","t":01}', '\u0000'])('not JSON (%j) is bad_json', (raw) => {
    expect(parseClientMessage(raw)).toEqual({ ok: false, code: ErrorCode.BadJson, message: 'frame is not valid JSON' });
  });

  it.each(['null', '[]', '"ping"', '42', 'true'])('JSON that is not an object (%s) is bad_frame', (raw) => {
    expectRefused(parseClientMessage(raw), ErrorCode.BadFrame, '(frame)');
  });

  it.each([
    ['unknown type', { type: 'shout', text: 'hi' }],
    ['missing type', { t: 1 }],
    ['type of the wrong kind', { type: 1 }],
    ['a relay-to-client type', { type: 'pong', t: 1 }],
  ])('%s is bad_frame naming type', (_name, frame) => {
    expectRefused(parseClientMessage(JSON.stringify(frame)), ErrorCode.BadFrame, /^type: /);
  });

  it.each([
    ['ping t as a string', { type: 'ping', t: '1' }, 't: '],
    ['ping without t', { type: 'ping' }, 't: '],
    ['ack qids not an array', { type: 'ack', qids: 1 }, 'qids: '],
    ['ack with no qids', { type: 'ack', qids: [] }, 'qids: '],
    ['ack qid 0', { type: 'ack', qids: [0] }, 'qids.0: '],
    ['ack qid not an integer', { type: 'ack', qids: [1.5] }, 'qids.0: '],
    ['ack qid as a string', { type: 'ack', qids: [1, '2'] }, 'qids.1: '],
    ['ack with more than 1000 qids', { type: 'ack', qids: Array.from({ length: 1001 }, (_, i) => i + 1) }, 'qids: '],
    ['read to a lower-case PIN', { type: 'read', to: ALICE.toLowerCase(), ids: [ID] }, 'to: PIN must be 8 upper-case hex digits'],
    ['read with an upper-case id', { type: 'read', to: ALICE, ids: [ID.toUpperCase()] }, 'ids.0: id must be 32 lower-case hex digits'],
    ['read with no ids', { type: 'read', to: ALICE, ids: [] }, 'ids: '],
    ['hello with v 1 (a client of the previous protocol)', { type: 'hello', v: 1, pk: bytes(32), name: 'A', sig: bytes(64) }, 'v: '],
    ['hello with an empty name', { type: 'hello', v: 2, pk: bytes(32), name: '   ', sig: bytes(64) }, 'name: name must not be empty'],
    ['hello with a name of 41 characters', { type: 'hello', v: 2, pk: bytes(32), name: 'x'.repeat(41), sig: bytes(64) }, 'name: name must be at most 40'],
    ['hello with a newline in the name', { type: 'hello', v: 2, pk: bytes(32), name: 'Al\nice', sig: bytes(64) }, 'name: name must not contain control characters'],
    ['hello with a name that is a number', { type: 'hello', v: 2, pk: bytes(32), name: 7, sig: bytes(64) }, 'name: '],
    ['send without env', { type: 'send' }, 'env: '],
    ['env as a string', { type: 'send', env: send(dm()) }, 'env: '],
    ['env.v 1 with a v2 body', { type: 'send', env: dm({ v: 1 }) }, 'env.v: '],
    ['env.v 3', { type: 'send', env: dm({ v: 3 }) }, 'env.v: '],
    ['env.id upper-case', { type: 'send', env: dm({ id: ID.toUpperCase() }) }, 'env.id: id must be 32 lower-case hex digits'],
    ['env.id too short', { type: 'send', env: dm({ id: ID.slice(2) }) }, 'env.id: '],
    ['env.from lower-case', { type: 'send', env: dm({ from: ALICE.toLowerCase() }) }, 'env.from: PIN must be 8 upper-case hex digits'],
    ['env.to a string', { type: 'send', env: dm({ to: BOB }) }, 'env.to: '],
    ['env.to empty', { type: 'send', env: dm({ to: [] }) }, 'env.to: to must name at least one recipient'],
    ['env.to with a bad PIN', { type: 'send', env: dm({ to: ['FAFE7DF'] }) }, 'env.to.0: '],
    ['env.conv unknown', { type: 'send', env: dm({ conv: 'group' }) }, 'env.conv: conv must be "dm" or "g-" + 16 hex digits'],
    ['env.ts a string', { type: 'send', env: dm({ ts: '1700000000000' }) }, 'env.ts: '],
    ['env.ts negative', { type: 'send', env: dm({ ts: -1 }) }, 'env.ts: '],
    ['env.ts fractional', { type: 'send', env: dm({ ts: 1.5 }) }, 'env.ts: '],
    ['env.keys.wraps empty', { type: 'send', env: dm({ wraps: [] }) }, 'env.keys.wraps: '],
    ['env.keys.wraps item not an object', { type: 'send', env: dm({ wraps: ['AAAA'] }) }, 'env.keys.wraps.0: '],
    [
      'env.keys.wraps item with a bad PIN',
      {
        type: 'send',
        env: dm({
          wraps: [
            { to: 'alice', key: bytes(80) },
            { to: BOB, key: bytes(80) },
          ],
        }),
      },
      'env.keys.wraps.0.to: ',
    ],
    ['env.keys missing', { type: 'send', env: (({ keys: _k, ...rest }) => rest)(dm()) }, 'env.keys: '],
    ['env.keys.model unknown', { type: 'send', env: dm({ keys: { model: 'rot13', wraps: [] } }) }, 'env.keys.model: '],
    ['env.keys.model reserved but not implemented (ratchet)', { type: 'send', env: dm({ keys: { model: 'ratchet', header: bytes(40) } }) }, 'env.keys.model: '],
    [
      'env.keys app-key with a short key',
      { type: 'send', env: dm({ keys: { model: 'app-key', kid: '9da6ac5719b8cbe9', nonce: bytes(24), key: bytes(32) } }) },
      'env.keys.key: must decode to 48 bytes',
    ],
    [
      'env.keys server-key with a wrap for a recipient',
      { type: 'send', env: dm({ keys: { model: 'server-key', kid: '9da6ac5719b8cbe9', server: bytes(80), wraps: [{ to: BOB, key: bytes(80) }] } }) },
      'env.keys.wraps: wraps must hold one key, for the sender',
    ],
    [
      'a delivery on an end-to-end envelope',
      { type: 'send', env: dm({ delivery: [{ to: BOB, key: bytes(80) }] }) },
      'env.delivery: only a server-held key envelope has a delivery',
    ],
    [
      'env.keys e2e-escrow without its escrow field',
      {
        type: 'send',
        env: dm({
          keys: {
            model: 'e2e-escrow',
            wraps: [
              { to: ALICE, key: bytes(80) },
              { to: BOB, key: bytes(80) },
            ],
          },
        }),
      },
      'env.keys.escrow: ',
    ],
    [
      'env.keys e2e with an escrow field',
      {
        type: 'send',
        env: dm({
          keys: {
            model: 'e2e',
            wraps: [
              { to: ALICE, key: bytes(80) },
              { to: BOB, key: bytes(80) },
            ],
            escrow: { kid: '9da6ac5719b8cbe9', key: bytes(80) },
          },
        }),
      },
      'env.keys: Unrecognized key: "escrow"',
    ],
    [
      'a v1 envelope (top-level wraps and escrow) in a send',
      {
        type: 'send',
        env: {
          ...(({ keys: _k, ...rest }) => rest)(dm({ v: 1 })),
          wraps: [
            { to: ALICE, key: bytes(80) },
            { to: BOB, key: bytes(80) },
          ],
          escrow: null,
        },
      },
      'env.',
    ],
    [
      'env.keys.escrow.kid upper-case',
      { type: 'send', env: dm({ escrow: { kid: '9DA6AC5719B8CBE9', key: bytes(80) } }) },
      'env.keys.escrow.kid: kid must be 16 lower-case hex digits',
    ],
    ['env.keys.escrow.kid too short', { type: 'send', env: dm({ escrow: { kid: '9da6ac57', key: bytes(80) } }) }, 'env.keys.escrow.kid: '],
    ['env.keys.escrow a string', { type: 'send', env: dm({ escrow: '-' }) }, 'env.keys.escrow: '],
    ['env.sig missing', { type: 'send', env: (({ sig: _s, ...rest }) => rest)(dm()) }, 'env.sig: '],
  ])('%s is bad_frame naming the field', (_name, frame, field) => {
    expectRefused(parseClientMessage(JSON.stringify(frame)), ErrorCode.BadFrame, field);
  });

  it.each([
    ['at the top level', JSON.stringify({ type: 'ping', t: 1, extra: true }), '(frame): Unrecognized key: "extra"'],
    ['in the envelope', send(dm({ extra: 1 })), 'env: Unrecognized key: "extra"'],
    [
      'in a wrap',
      send(
        dm({
          wraps: [
            { to: ALICE, key: bytes(80), extra: 1 },
            { to: BOB, key: bytes(80) },
          ],
        }),
      ),
      'env.keys.wraps.0: Unrecognized key: "extra"',
    ],
    ['in the escrow field', send(dm({ escrow: { kid: '9da6ac5719b8cbe9', key: bytes(80), extra: 1 } })), 'env.keys.escrow: Unrecognized key: "extra"'],
    ['named __proto__', '{"type":"ping","t":1,"__proto__":{"polluted":true}}', '(frame): Unrecognized key: "__proto__"'],
    ['named constructor', '{"type":"ping","t":1,"constructor":{}}', '(frame): Unrecognized key: "constructor"'],
  ])('an extra field %s is bad_frame naming the key', (_name, raw, message) => {
    expectRefused(parseClientMessage(raw), ErrorCode.BadFrame, message);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  describe('bad base64 is bad_frame naming the field', () => {
    const good = bytes(24);
    it.each([
      ['URL-safe alphabet', `${good.slice(0, -2)}-_`],
      ['a space', `${good.slice(0, -1)} `],
      ['a line break', `${good.slice(0, 16)}\n${good.slice(17)}`],
      ['missing padding', bytes(23).replace(/=+$/, '')],
      ['padding in the middle', `AA==${good.slice(4)}`],
      ['three padding characters', `${good.slice(0, -3)}===`],
      ['a non-ASCII letter', `${good.slice(0, -1)}é`],
      ['non-zero padding bits (libsodium would refuse to decode it)', `${bytes(23).slice(0, -2)}B=`],
    ])('nonce with %s', (_name, nonce) => {
      expectRefused(parseClientMessage(send(dm({ nonce }))), ErrorCode.BadFrame, 'env.nonce: ');
    });

    it.each([
      ['body', { body: 'not base64!' }, 'env.body: must be canonical standard base64'],
      ['sig', { sig: '@'.repeat(88) }, 'env.sig: must be canonical standard base64'],
      [
        'a wrap key',
        {
          wraps: [
            { to: ALICE, key: '*'.repeat(108) },
            { to: BOB, key: bytes(80) },
          ],
        },
        'env.keys.wraps.0.key: must be canonical standard base64',
      ],
      ['the escrow key', { escrow: { kid: '9da6ac5719b8cbe9', key: bytes(80).slice(0, -1) } }, 'env.keys.escrow.key: must be canonical standard base64'],
    ])('%s', (_name, overrides, message) => {
      expectRefused(parseClientMessage(send(dm(overrides))), ErrorCode.BadFrame, message);
    });

    it('hello pk without padding', () => {
      const frame = { type: 'hello', v: 2, pk: bytes(32).replace(/=+$/, ''), name: 'A', sig: bytes(64) };
      expectRefused(parseClientMessage(JSON.stringify(frame)), ErrorCode.BadFrame, 'pk: must be canonical standard base64');
    });
  });

  describe('wrong lengths are bad_frame naming the field and the length', () => {
    it.each([
      ['hello pk of 31 bytes', { pk: bytes(31) }, 'pk: must decode to 32 bytes'],
      ['hello pk of 33 bytes', { pk: bytes(33) }, 'pk: must decode to 32 bytes'],
      ['hello pk of 64 bytes (a secret key)', { pk: bytes(64) }, 'pk: must decode to 32 bytes'],
      ['hello sig of 63 bytes', { sig: bytes(63) }, 'sig: must decode to 64 bytes'],
      ['hello sig of 65 bytes', { sig: bytes(65) }, 'sig: must decode to 64 bytes'],
    ])('%s', (_name, overrides, message) => {
      const frame = { type: 'hello', v: 2, pk: bytes(32), name: 'A', sig: bytes(64), ...overrides };
      expectRefused(parseClientMessage(JSON.stringify(frame)), ErrorCode.BadFrame, message);
    });

    it.each([
      ['nonce of 23 bytes', { nonce: bytes(23) }, 'env.nonce: must decode to 24 bytes'],
      ['nonce of 25 bytes', { nonce: bytes(25) }, 'env.nonce: must decode to 24 bytes'],
      ['nonce of 12 bytes (an IETF ChaCha nonce)', { nonce: bytes(12) }, 'env.nonce: must decode to 24 bytes'],
      ['body of 16 bytes (a tag and nothing else)', { body: bytes(16) }, 'env.body: must decode to 17..65536 bytes'],
      ['body over 64 KiB', { body: bytes(MAX_FRAME_BYTES + 1) }, 'env.body: '],
      ['sig of 32 bytes', { sig: bytes(32) }, 'env.sig: must decode to 64 bytes'],
      [
        'a wrap key of 79 bytes',
        {
          wraps: [
            { to: ALICE, key: bytes(79) },
            { to: BOB, key: bytes(80) },
          ],
        },
        'env.keys.wraps.0.key: must decode to 80 bytes',
      ],
      [
        'a wrap key of 81 bytes',
        {
          wraps: [
            { to: ALICE, key: bytes(80) },
            { to: BOB, key: bytes(81) },
          ],
        },
        'env.keys.wraps.1.key: must decode to 80 bytes',
      ],
      [
        'a wrap key of 48 bytes (an unsealed box)',
        {
          wraps: [
            { to: ALICE, key: bytes(48) },
            { to: BOB, key: bytes(80) },
          ],
        },
        'env.keys.wraps.0.key: must decode to 80 bytes',
      ],
      ['an escrow key of 32 bytes', { escrow: { kid: '9da6ac5719b8cbe9', key: bytes(32) } }, 'env.keys.escrow.key: must decode to 80 bytes'],
    ])('%s', (_name, overrides, message) => {
      expectRefused(parseClientMessage(send(dm(overrides))), ErrorCode.BadFrame, message);
    });
  });

  describe('recipients and wraps must agree', () => {
    it('a PIN repeated in to is refused', () => {
      expectRefused(parseClientMessage(send(group([BOB, BOB]))), ErrorCode.BadFrame, 'env.to: to must not repeat a PIN');
    });

    it('the sender in to is refused', () => {
      const env = group([BOB, ALICE], { wraps: [ALICE, BOB].map((to) => ({ to, key: bytes(80) })) });
      expectRefused(parseClientMessage(send(env)), ErrorCode.BadFrame, 'env.to: to must not include the sender');
      expectRefused(parseClientMessage(send(dm({ to: [ALICE], wraps: [{ to: ALICE, key: bytes(80) }] }))), ErrorCode.BadFrame, 'env.to: to must not include the sender');
    });

    it('a dm with 2 recipients is refused', () => {
      expectRefused(parseClientMessage(send(group([BOB, CAROL], { conv: 'dm' }))), ErrorCode.BadFrame, 'env.to: a dm names exactly one recipient');
    });

    it(`more than ${MAX_RECIPIENTS} recipients are refused`, () => {
      const to = Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => (0x10000000 + i).toString(16).toUpperCase());
      expectRefused(parseClientMessage(send(group(to))), ErrorCode.BadFrame, 'env.to: ');
    });

    it.each([
      ['no wrap for the sender', [{ to: BOB, key: bytes(80) }]],
      ['no wrap for the recipient', [{ to: ALICE, key: bytes(80) }]],
      [
        'a wrap for a stranger instead of the recipient',
        [
          { to: ALICE, key: bytes(80) },
          { to: DAVE, key: bytes(80) },
        ],
      ],
      [
        'an extra wrap for a hidden participant (a ghost)',
        [
          { to: ALICE, key: bytes(80) },
          { to: BOB, key: bytes(80) },
          { to: DAVE, key: bytes(80) },
        ],
      ],
      [
        'two wraps for the recipient',
        [
          { to: ALICE, key: bytes(80) },
          { to: BOB, key: bytes(80) },
          { to: BOB, key: bytes(80) },
        ],
      ],
      [
        'two wraps for the sender and none for the recipient',
        [
          { to: ALICE, key: bytes(80) },
          { to: ALICE, key: bytes(80) },
        ],
      ],
    ])('wraps not matching the recipients (%s) are refused', (_name, wraps) => {
      expectRefused(parseClientMessage(send(dm({ wraps }))), ErrorCode.BadFrame, 'env.keys.wraps: wraps must hold one key for the sender and each recipient');
    });

    it('wraps may come in any order', () => {
      expect(
        parseClientMessage(
          send(
            dm({
              wraps: [
                { to: BOB, key: bytes(80) },
                { to: ALICE, key: bytes(80) },
              ],
            }),
          ),
        ).ok,
      ).toBe(true);
    });
  });

  describe('huge numbers are refused, never rounded into range', () => {
    it.each([
      ['ts of 1e400 (Infinity after JSON.parse)', send(dm()).replace('1700000000000', '1e400'), 'env.ts: '],
      ['ts of -1e400', send(dm()).replace('1700000000000', '-1e400'), 'env.ts: '],
      ['ts past year 275760 (8.64e15 + 1)', send(dm({ ts: 8.64e15 + 1 })), 'env.ts: '],
      ['ts of 1e300', send(dm()).replace('1700000000000', '1e300'), 'env.ts: '],
      ['ping t of 1e400', '{"type":"ping","t":1e400}', 't: '],
      ['ack qid of 1e400', '{"type":"ack","qids":[1e400]}', 'qids.0: '],
      ['ack qid past 2^53', '{"type":"ack","qids":[9007199254740993]}', 'qids.0: '],
      ['ack qid of 1e20', '{"type":"ack","qids":[1e20]}', 'qids.0: '],
    ])('%s', (_name, raw, field) => {
      expectRefused(parseClientMessage(raw), ErrorCode.BadFrame, field);
    });

    it('the largest allowed ts (8.64e15) passes', () => {
      expect(parseClientMessage(send(dm({ ts: 8.64e15 }))).ok).toBe(true);
    });
  });

  describe('deeply nested JSON is refused without throwing', () => {
    const depth = 30_000; // about as deep as a 64 KiB frame can nest
    const arrays = '['.repeat(depth) + ']'.repeat(depth);
    const objects = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    it.each([
      ['nested arrays as the frame', arrays, '(frame)'],
      ['nested objects as the frame', objects, 'type: '],
      ['nested arrays in ping t', `{"type":"ping","t":${arrays}}`, 't: '],
      ['nested objects as env', `{"type":"send","env":${objects}}`, 'env.'],
      ['nested arrays in env.to', send(dm({ to: ['X'] })).replace('["X"]', arrays), 'env.to.0: '],
      ['nested objects in a wrap', send(dm({ wraps: ['X'] })).replace('["X"]', `[${objects}]`), 'env.keys.wraps.0'],
      ['nested arrays in ack qids', `{"type":"ack","qids":${arrays}}`, 'qids.0: '],
    ])('%s', (_name, raw, field) => {
      expect(raw.length).toBeLessThan(MAX_FRAME_BYTES * 4);
      let result: Parsed<unknown> | undefined;
      expect(() => {
        result = parseClientMessage(raw);
      }).not.toThrow();
      expectRefused(result!, ErrorCode.BadFrame, field);
    });

    it('deep nesting past what a 64 KiB frame allows (1,000,000 levels) does not throw either', () => {
      const deep = '['.repeat(1_000_000) + ']'.repeat(1_000_000);
      expect(() => parseClientMessage(deep)).not.toThrow();
      expect(() => parseServerMessage(deep)).not.toThrow();
    });
  });

  it('the message names at most three problems, each with its field', () => {
    const result = parseClientMessage(send(dm({ id: 'x', from: 'y', conv: 'z', ts: 'w', nonce: '!' })));
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.message.split('; ')).toHaveLength(3);
      for (const part of result.message.split('; ')) expect(part).toMatch(/^env\.\w+: /);
    }
  });
});

// ---------------------------------------------------------------------------

describe('parseServerMessage', () => {
  const entry = { pin: BOB, name: 'Bob', pk: bytes(32), online: true };
  const valid: Array<[string, Json]> = [
    ['challenge', { type: 'challenge', v: 2, nonce: bytes(32), policy: POLICY }],
    ['welcome', { type: 'welcome', pin: ALICE, name: 'Alice', directory: [entry], total: 1, policy: TAP }],
    ['welcome with an empty directory', { type: 'welcome', pin: ALICE, name: 'Alice', directory: [], total: 0, policy: POLICY }],
    ['presence', { type: 'presence', users: [entry, { ...entry, pin: CAROL, online: false }] }],
    ['policy (warrant)', { type: 'policy', policy: { ...TAP, scope: 'warrant', pins: [BOB] } }],
    ['accepted', { type: 'accepted', id: ID, duplicate: false }],
    ['accepted (duplicate)', { type: 'accepted', id: ID, duplicate: true }],
    ['envelope', { type: 'envelope', qid: 17, env: dm() }],
    ['receipt delivered', { type: 'receipt', qid: 18, id: ID, by: BOB, state: 'delivered', at: 1 }],
    ['receipt read', { type: 'receipt', qid: 19, id: ID, by: BOB, state: 'read', at: 2 }],
    ['pong', { type: 'pong', t: 5 }],
    ['error', { type: 'error', code: ErrorCode.BadFrame, message: 'env.nonce: must decode to 24 bytes' }],
    ['error with ref', { type: 'error', code: ErrorCode.EscrowRequired, message: 'the tap is on', ref: ID }],
  ];
  it.each(valid)('accepts %s', (_name, frame) => {
    expect(parseServerMessage(JSON.stringify(frame))).toEqual({ ok: true, value: frame });
  });

  it.each([
    ['a receipt state other than delivered or read', { type: 'receipt', qid: 1, id: ID, by: BOB, state: 'seen', at: 1 }, 'state: '],
    ['a receipt with qid 0', { type: 'receipt', qid: 0, id: ID, by: BOB, state: 'read', at: 1 }, 'qid: '],
    ['a receipt at 1e400', `{"type":"receipt","qid":1,"id":"${ID}","by":"${BOB}","state":"read","at":1e400}`, 'at: '],
    ['accepted without duplicate', { type: 'accepted', id: ID }, 'duplicate: '],
    ['accepted with duplicate as a string', { type: 'accepted', id: ID, duplicate: 'true' }, 'duplicate: '],
    ['an envelope frame with qid past 2^53', `{"type":"envelope","qid":9007199254740993,"env":${JSON.stringify(dm())}}`, 'qid: '],
    ['an envelope frame with a bad envelope', { type: 'envelope', qid: 1, env: dm({ to: [BOB, BOB], conv: 'g-0123456789abcdef' }) }, 'env.'],
    ['a challenge nonce of 24 bytes', { type: 'challenge', v: 2, nonce: bytes(24), policy: POLICY }, 'nonce: must decode to 32 bytes'],
    ['a policy scope other than all or warrant', { type: 'policy', policy: { ...POLICY, scope: 'some' } }, 'policy.scope: '],
    ['a policy escrow key of 31 bytes', { type: 'policy', policy: { ...TAP, escrowPk: bytes(31) } }, 'policy.escrowPk: must decode to 32 bytes'],
    ['a policy kid in upper case', { type: 'policy', policy: { ...TAP, escrowKid: '9DA6AC5719B8CBE9' } }, 'policy.escrowKid: '],
    ['a policy with a negative epoch', { type: 'policy', policy: { ...POLICY, epoch: -1 } }, 'policy.epoch: '],
    ['a policy with an extra field', { type: 'policy', policy: { ...POLICY, ghost: true } }, 'policy: Unrecognized key: "ghost"'],
    ['a directory name with a control character', { type: 'presence', users: [{ ...entry, name: 'Bob\u0007' }] }, 'users.0.name: '],
    ['a directory key of 33 bytes', { type: 'presence', users: [{ ...entry, pk: bytes(33) }] }, 'users.0.pk: must decode to 32 bytes'],
    ['a welcome with a lower-case PIN', { type: 'welcome', pin: 'abcdef12', name: 'A', directory: [], total: 0, policy: POLICY }, 'pin: '],
    ['an error without a message', { type: 'error', code: 'x' }, 'message: '],
    ['a client-to-relay type', { type: 'ping', t: 1 }, 'type: '],
  ])('refuses %s, naming the field', (_name, frame, field) => {
    const raw = typeof frame === 'string' ? frame : JSON.stringify(frame);
    expectRefused(parseServerMessage(raw), ErrorCode.BadFrame, field);
  });

  it('refuses a frame that is not JSON with bad_json', () => {
    expect(parseServerMessage('{"type":')).toEqual({ ok: false, code: ErrorCode.BadJson, message: 'frame is not valid JSON' });
  });
});

// ---------------------------------------------------------------------------

describe('the frame examples in docs/wire-format.md', () => {
  const doc = readFileSync(resolve(ROOT, 'docs/wire-format.md'), 'utf8');
  const fixture = JSON.parse(readFileSync(resolve(ROOT, 'tests/fixtures/worked-example.json'), 'utf8')) as { expected: { envelopeJson: string } };
  const examples = (info: string): string[] =>
    [...doc.matchAll(new RegExp(`^\`\`\`json ${info}\\n([\\s\\S]*?)\\n\`\`\`$`, 'gm'))].map((m) => (m[1] ?? '').replace('<envelope>', fixture.expected.envelopeJson));
  const typesOf = (schema: typeof ClientMessage | typeof ServerMessage): string[] => schema.options.map((o) => o.shape.type.value);

  it('every client-frame example parses with parseClientMessage, and every client frame type has one', () => {
    const frames = examples('client-frame');
    const seen = new Set<string>();
    for (const raw of frames) {
      const result = parseClientMessage(raw);
      expect(result.ok ? '' : result.message, raw).toBe('');
      if (result.ok) seen.add(result.value.type);
    }
    expect([...seen].sort()).toEqual(typesOf(ClientMessage).sort());
  });

  it('every server-frame example parses with parseServerMessage, and every server frame type has one', () => {
    const frames = examples('server-frame');
    const seen = new Set<string>();
    for (const raw of frames) {
      const result = parseServerMessage(raw);
      expect(result.ok ? '' : result.message, raw).toBe('');
      if (result.ok) seen.add(result.value.type);
    }
    expect([...seen].sort()).toEqual(typesOf(ServerMessage).sort());
  });

  it('the doc lists every error code and close code', () => {
    for (const code of Object.values(ErrorCode)) expect(doc).toContain(`| \`${code}\` |`);
    for (const code of Object.values(CloseCode)) expect(doc).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
  });

  it('the doc states the protocol version and the frame size limit', () => {
    expect(doc).toContain(`protocol version ${PROTOCOL_VERSION}`);
    expect(doc).toContain(`\`MAX_FRAME_BYTES\` = ${MAX_FRAME_BYTES}`);
  });
});

// ---------------------------------------------------------------------------

describe('policyCovers', () => {
  const warrant = (pins: string[]): Policy => ({ ...TAP, scope: 'warrant', pins });

  it('the tap off covers nothing, whatever the scope and pins', () => {
    expect(policyCovers(POLICY, ALICE, [BOB])).toBe(false);
    expect(policyCovers({ ...POLICY, scope: 'warrant', pins: [ALICE, BOB] }, ALICE, [BOB])).toBe(false);
    expect(policyCovers({ ...TAP, tap: false }, ALICE, [BOB])).toBe(false);
  });

  it('the tap on without an escrow key covers nothing (there is nothing to seal to)', () => {
    expect(policyCovers({ ...TAP, escrowPk: null }, ALICE, [BOB])).toBe(false);
  });

  it('scope all covers every message', () => {
    expect(policyCovers(TAP, ALICE, [BOB])).toBe(true);
    expect(policyCovers(TAP, CAROL, [DAVE, BOB])).toBe(true);
  });

  it('a warrant covers messages from a named PIN', () => {
    expect(policyCovers(warrant([ALICE]), ALICE, [BOB])).toBe(true);
  });

  it('a warrant covers messages to a named PIN, also as one of several group recipients', () => {
    expect(policyCovers(warrant([BOB]), ALICE, [BOB])).toBe(true);
    expect(policyCovers(warrant([DAVE]), ALICE, [BOB, CAROL, DAVE])).toBe(true);
  });

  it('a warrant does not cover messages between people it does not name', () => {
    expect(policyCovers(warrant([DAVE]), ALICE, [BOB, CAROL])).toBe(false);
    expect(policyCovers(warrant([]), ALICE, [BOB])).toBe(false);
  });

  it('parsed Envelope values keep their shape (schema sanity for the policy check)', () => {
    const env = Envelope.parse(dm());
    expect(policyCovers(warrant([BOB]), env.from, env.to)).toBe(true);
  });
});
