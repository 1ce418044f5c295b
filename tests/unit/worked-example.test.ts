/**
 * The worked example of docs/wire-format.md, recomputed byte for byte.
 *
 * Every expected value in tests/fixtures/worked-example.json is rebuilt here
 * from the fixed inputs with libsodium primitives and the layouts as the doc
 * states them (independently of shared/crypto.ts), then compared with the
 * fixture and with what shared/crypto.ts produces. The last block checks that
 * the values printed in the doc are the fixture's, so doc and code cannot drift.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  cryptoReady,
  escrowKeyPairFromSecret,
  escrowKid,
  loginTranscript,
  newEscrowKeyPair,
  pinOf,
  safetyNumber,
  signLogin,
  unwrapKey,
  verifyLogin,
  type Identity,
} from '../../shared/crypto.ts';
import { decryptBody, headerBytes, openEnvelope, openWithEscrow, sealEnvelope, signedBytes, verifyEnvelope } from '../../shared/envelope.ts';
import { AnyEnvelope, Envelope, EnvelopeV1, parseServerMessage } from '../../shared/protocol.ts';
import { headerBytesV1, signedBytesV1 } from '../../shared/envelope-v1.ts';
import { openArchived, parseArchiveLine } from '../../shared/archive.ts';
import { OpenFailure } from '../../shared/failures.ts';

const ROOT = resolve(import.meta.dirname, '../..');

interface Box {
  ephemeralSkHex: string;
  ephemeralPkHex: string;
  sealNonceHex: string;
  sealedHex: string;
  sealedB64: string;
}
interface Party {
  seedHex: string;
  signPkHex: string;
  signPkB64: string;
  boxPkHex: string;
  boxSkHex: string;
  pin: string;
}
interface Fixture {
  inputs: {
    aliceSeedHex: string;
    bobSeedHex: string;
    escrowSkHex: string;
    loginNonceHex: string;
    id: string;
    ts: number;
    conv: string;
    nonceHex: string;
    contentKeyHex: string;
    body: { text: string };
    ephemeralSkHex: { alice: string; bob: string; escrow: string };
  };
  derived: {
    alice: Party;
    bob: Party;
    escrow: { skHex: string; pkHex: string; pkB64: string; kid: string };
    safetyNumber: string;
  };
  login: { nonceB64: string; transcriptText: string; transcriptHex: string; sig: string };
  expected: {
    headerText: string;
    headerHex: string;
    bodyPlaintext: string;
    bodyPlaintextHex: string;
    bodyCiphertextHex: string;
    boxes: { alice: Box; bob: Box; escrow: Box };
    signedText: string;
    signedLength: number;
    sigHex: string;
    envelope: Envelope;
    envelopeJson: string;
  };
}

const fx = JSON.parse(readFileSync(resolve(ROOT, 'tests/fixtures/worked-example.json'), 'utf8')) as Fixture;
const doc = readFileSync(resolve(ROOT, 'docs/wire-format.md'), 'utf8');
const { inputs, derived, expected } = fx;

// Independent helpers: libsodium primitives and the doc's layouts only.
const hex = (b: Uint8Array): string => sodium.to_hex(b);
const unhex = (h: string): Uint8Array => sodium.from_hex(h);
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
};

function identityFromSeed(seedHex: string): Identity {
  const kp = sodium.crypto_sign_seed_keypair(unhex(seedHex));
  return {
    signPk: kp.publicKey,
    signSk: kp.privateKey,
    boxPk: sodium.crypto_sign_ed25519_pk_to_curve25519(kp.publicKey),
    boxSk: sodium.crypto_sign_ed25519_sk_to_curve25519(kp.privateKey),
    pin: hex(sodium.crypto_generichash(4, kp.publicKey, null)).toUpperCase(),
  };
}

/** libsodium's crypto_box_seal with a chosen ephemeral secret key. */
function sealWith(message: Uint8Array, recipientPk: Uint8Array, esk: Uint8Array) {
  const epk = sodium.crypto_scalarmult_base(esk);
  const nonce = sodium.crypto_generichash(24, concat(epk, recipientPk), null);
  return { epk, nonce, sealed: concat(epk, sodium.crypto_box_easy(message, nonce, recipientPk, esk)) };
}

/** Code blocks of the doc, by info string. */
function blocks(info: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`^\`\`\`${info.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n([\\s\\S]*?)\\n\`\`\`$`, 'gm');
  for (const m of doc.matchAll(re)) out.push(m[1] ?? '');
  return out;
}

let alice: Identity;
let bob: Identity;
let escrowPk: Uint8Array;
let key: Uint8Array;
let header: Uint8Array;

beforeAll(async () => {
  await cryptoReady();
  alice = identityFromSeed(inputs.aliceSeedHex);
  bob = identityFromSeed(inputs.bobSeedHex);
  escrowPk = sodium.crypto_scalarmult_base(unhex(inputs.escrowSkHex));
  key = unhex(inputs.contentKeyHex);
  header = utf8(['backdoor-lab/v2', `id=${inputs.id}`, `from=${alice.pin}`, `to=${bob.pin}`, `conv=${inputs.conv}`, `ts=${inputs.ts}`, 'model=e2e-escrow'].join('\n'));
});

describe('worked example: keys', () => {
  it("Alice's and Bob's Ed25519 and X25519 keys follow from their seeds", () => {
    for (const [who, id] of [
      ['alice', alice],
      ['bob', bob],
    ] as const) {
      const want = derived[who];
      expect(hex(id.signPk)).toBe(want.signPkHex);
      expect(b64(id.signPk)).toBe(want.signPkB64);
      expect(hex(id.boxPk)).toBe(want.boxPkHex);
      expect(hex(id.boxSk)).toBe(want.boxSkHex);
      expect(hex(sodium.crypto_scalarmult_base(id.boxSk))).toBe(want.boxPkHex);
    }
  });

  it('the PINs are BLAKE2b-32 of the Ed25519 public keys, and pinOf agrees', () => {
    expect(alice.pin).toBe(derived.alice.pin);
    expect(bob.pin).toBe(derived.bob.pin);
    expect(pinOf(alice.signPk)).toBe(derived.alice.pin);
    expect(pinOf(bob.signPk)).toBe(derived.bob.pin);
  });

  it('the escrow public key and kid follow from the escrow secret key', () => {
    expect(hex(escrowPk)).toBe(derived.escrow.pkHex);
    expect(b64(escrowPk)).toBe(derived.escrow.pkB64);
    expect(hex(sodium.crypto_generichash(8, escrowPk, null))).toBe(derived.escrow.kid);
    expect(escrowKid(escrowPk)).toBe(derived.escrow.kid);
    const pair = escrowKeyPairFromSecret(unhex(inputs.escrowSkHex));
    expect(hex(pair.pk)).toBe(derived.escrow.pkHex);
    expect(pair.kid).toBe(derived.escrow.kid);
  });

  it('the safety number of Alice and Bob is the documented construction, from both sides', () => {
    const fingerprint = (pk: Uint8Array): string => {
      const h = sodium.crypto_generichash(30, pk, null);
      let out = '';
      for (let i = 0; i < 30; i += 5) {
        const n = Buffer.from(h.subarray(i, i + 5)).readUIntBE(0, 5);
        out += String(n % 100000).padStart(5, '0');
      }
      return out;
    };
    const [first, second] = alice.pin <= bob.pin ? [alice, bob] : [bob, alice];
    const digits = fingerprint(first.signPk) + fingerprint(second.signPk);
    const want = digits.match(/.{5}/g)!.join(' ');
    expect(want).toBe(derived.safetyNumber);
    expect(safetyNumber(alice.signPk, bob.signPk)).toBe(derived.safetyNumber);
    expect(safetyNumber(bob.signPk, alice.signPk)).toBe(derived.safetyNumber);
  });
});

describe('worked example: login', () => {
  it('the login transcript and Alice’s signature over it are reproduced byte for byte', () => {
    const nonceB64 = b64(unhex(inputs.loginNonceHex));
    expect(nonceB64).toBe(fx.login.nonceB64);
    const transcript = utf8(`backdoor-lab/v2 login\nnonce=${nonceB64}\npk=${b64(alice.signPk)}`);
    expect(hex(transcript)).toBe(fx.login.transcriptHex);
    expect(new TextDecoder().decode(transcript)).toBe(fx.login.transcriptText);
    expect(hex(loginTranscript(nonceB64, b64(alice.signPk)))).toBe(fx.login.transcriptHex);
    expect(b64(sodium.crypto_sign_detached(transcript, alice.signSk))).toBe(fx.login.sig);
    expect(signLogin(nonceB64, alice)).toBe(fx.login.sig);
    expect(verifyLogin(nonceB64, b64(alice.signPk), fx.login.sig)).toBe(true);
  });
});

describe('worked example: envelope bytes', () => {
  it('the header (associated data) is the seven documented lines, the key model last, and headerBytes agrees', () => {
    expect(hex(header)).toBe(expected.headerHex);
    expect(new TextDecoder().decode(header)).toBe(expected.headerText);
    expect(hex(headerBytes(expected.envelope))).toBe(expected.headerHex);
  });

  it('the body is XChaCha20-Poly1305-IETF of the body JSON under K, the nonce and the header', () => {
    const plain = utf8(JSON.stringify(inputs.body));
    expect(hex(plain)).toBe(expected.bodyPlaintextHex);
    expect(new TextDecoder().decode(plain)).toBe(expected.bodyPlaintext);
    const ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, header, null, unhex(inputs.nonceHex), key);
    expect(ct.length).toBe(plain.length + 16);
    expect(hex(ct)).toBe(expected.bodyCiphertextHex);
    expect(b64(ct)).toBe(expected.envelope.body);
    expect(b64(unhex(inputs.nonceHex))).toBe(expected.envelope.nonce);
  });

  it('sealEnvelope with the fixed id, ts, nonce and K produces the same routing fields and body', () => {
    const { env } = sealEnvelope({
      sender: alice,
      to: [{ pin: bob.pin, signPk: bob.signPk }],
      conv: inputs.conv,
      body: inputs.body,
      escrow: { pk: escrowPk, kid: derived.escrow.kid },
      fixed: { id: inputs.id, ts: inputs.ts, nonce: unhex(inputs.nonceHex), key },
    });
    const { keys, sig, ...rest } = env;
    const { keys: want, sig: _s, ...wantRest } = expected.envelope;
    expect(rest).toEqual(wantRest);
    // Its wraps are sealed with random ephemeral keys, so they differ from the example but open to the same K.
    expect(keys.model).toBe(want.model);
    expect(('wraps' in keys ? keys.wraps : []).map((w) => w.to)).toEqual([alice.pin, bob.pin]);
    expect(keys.model === 'e2e-escrow' && keys.escrow.kid).toBe(derived.escrow.kid);
    expect(sig).not.toBe(expected.envelope.sig);
    const opened = openEnvelope(env, bob, alice.signPk);
    expect(opened).toEqual({ ok: true, value: inputs.body });
  });

  it.each(['alice', 'bob', 'escrow'] as const)('the %s sealed box is epk || crypto_box_easy(K, BLAKE2b-192(epk || pk), pk, esk)', (name) => {
    const recipientPk = name === 'alice' ? alice.boxPk : name === 'bob' ? bob.boxPk : escrowPk;
    const box = expected.boxes[name];
    const { epk, nonce, sealed } = sealWith(key, recipientPk, unhex(inputs.ephemeralSkHex[name]));
    expect(box.ephemeralSkHex).toBe(inputs.ephemeralSkHex[name]);
    expect(hex(epk)).toBe(box.ephemeralPkHex);
    expect(hex(nonce)).toBe(box.sealNonceHex);
    expect(sealed.length).toBe(80);
    expect(hex(sealed)).toBe(box.sealedHex);
    expect(b64(sealed)).toBe(box.sealedB64);
    // Layout: epk (32) || tag (16) || K encrypted (32); the first 32 bytes are the ephemeral public key.
    expect(hex(sealed.subarray(0, 32))).toBe(box.ephemeralPkHex);
  });

  it('crypto_box_seal_open opens each sealed box to K: they are real sealed boxes', () => {
    const pairs = [
      [expected.boxes.alice, alice.boxPk, alice.boxSk],
      [expected.boxes.bob, bob.boxPk, bob.boxSk],
      [expected.boxes.escrow, escrowPk, unhex(inputs.escrowSkHex)],
    ] as const;
    for (const [box, pk, sk] of pairs) {
      expect(hex(sodium.crypto_box_seal_open(unhex(box.sealedHex), pk, sk))).toBe(inputs.contentKeyHex);
      const unwrapped = unwrapKey(box.sealedB64, pk, sk);
      expect(unwrapped.ok && hex(unwrapped.value)).toBe(inputs.contentKeyHex);
    }
    // ...and only to their own recipient.
    expect(() => sodium.crypto_box_seal_open(unhex(expected.boxes.bob.sealedHex), alice.boxPk, alice.boxSk)).toThrow();
  });

  it('the key model of the envelope is e2e-escrow, its wraps and escrow field those sealed boxes', () => {
    expect(expected.envelope.keys).toEqual({
      model: 'e2e-escrow',
      wraps: [
        { to: alice.pin, key: expected.boxes.alice.sealedB64 },
        { to: bob.pin, key: expected.boxes.bob.sealedB64 },
      ],
      escrow: { kid: derived.escrow.kid, key: expected.boxes.escrow.sealedB64 },
    });
  });

  it('the signed bytes are the documented lines, and signedBytes agrees', () => {
    const env = expected.envelope;
    const text = [
      'backdoor-lab/v2 signature',
      new TextDecoder().decode(header),
      `nonce=${b64(unhex(inputs.nonceHex))}`,
      `body=${expected.envelope.body}`,
      `wraps=${alice.pin}:${expected.boxes.alice.sealedB64},${bob.pin}:${expected.boxes.bob.sealedB64}`,
      `escrow=${derived.escrow.kid}:${expected.boxes.escrow.sealedB64}`,
    ].join('\n');
    expect(text).toBe(expected.signedText);
    expect(utf8(text).length).toBe(expected.signedLength);
    const { sig: _sig, ...unsigned } = env;
    expect(new TextDecoder().decode(signedBytes(unsigned))).toBe(expected.signedText);
  });

  it('the signature is Alice’s Ed25519 signature over the signed bytes', () => {
    const sig = sodium.crypto_sign_detached(utf8(expected.signedText), alice.signSk);
    expect(hex(sig)).toBe(expected.sigHex);
    expect(b64(sig)).toBe(expected.envelope.sig);
    expect(sodium.crypto_sign_verify_detached(sig, utf8(expected.signedText), alice.signPk)).toBe(true);
    expect(verifyEnvelope(expected.envelope, alice.signPk)).toBe(true);
    expect(verifyEnvelope(expected.envelope, bob.signPk)).toBe(false);
  });

  it('the whole envelope JSON is reproduced from the inputs, key order included', () => {
    const env = {
      v: 2,
      id: inputs.id,
      from: alice.pin,
      to: [bob.pin],
      conv: inputs.conv,
      ts: inputs.ts,
      nonce: b64(unhex(inputs.nonceHex)),
      body: b64(unhex(expected.bodyCiphertextHex)),
      keys: {
        model: 'e2e-escrow',
        wraps: [
          { to: alice.pin, key: b64(sealWith(key, alice.boxPk, unhex(inputs.ephemeralSkHex.alice)).sealed) },
          { to: bob.pin, key: b64(sealWith(key, bob.boxPk, unhex(inputs.ephemeralSkHex.bob)).sealed) },
        ],
        escrow: { kid: derived.escrow.kid, key: b64(sealWith(key, escrowPk, unhex(inputs.ephemeralSkHex.escrow)).sealed) },
      },
      sig: b64(sodium.crypto_sign_detached(utf8(expected.signedText), alice.signSk)),
    };
    expect(JSON.stringify(env)).toBe(expected.envelopeJson);
    expect(JSON.stringify(expected.envelope)).toBe(expected.envelopeJson);
  });

  it('the envelope parses with the Envelope schema and inside an envelope frame', () => {
    const parsed = Envelope.safeParse(JSON.parse(expected.envelopeJson));
    expect(parsed.success).toBe(true);
    const frame = parseServerMessage(`{"type":"envelope","qid":1,"env":${expected.envelopeJson}}`);
    expect(frame.ok).toBe(true);
  });
});

describe('worked example: opening', () => {
  it('Bob opens it with openEnvelope', () => {
    expect(openEnvelope(expected.envelope, bob, alice.signPk)).toEqual({ ok: true, value: inputs.body });
  });

  it('Alice opens her own copy with openEnvelope', () => {
    expect(openEnvelope(expected.envelope, alice, alice.signPk)).toEqual({ ok: true, value: inputs.body });
  });

  it('the regulator opens it with openWithEscrow, with and without the sender key', () => {
    const escrow = escrowKeyPairFromSecret(unhex(inputs.escrowSkHex));
    expect(openWithEscrow(expected.envelope, escrow, alice.signPk)).toEqual({ ok: true, value: inputs.body });
    expect(openWithEscrow(expected.envelope, escrow)).toEqual({ ok: true, value: inputs.body });
  });

  it('K from the escrow field decrypts the body with decryptBody', () => {
    expect(decryptBody(expected.envelope, key)).toEqual({ ok: true, value: inputs.body });
  });

  it('a third party with neither wrap nor escrow key cannot open it', () => {
    const carol = identityFromSeed('04'.repeat(32));
    expect(openEnvelope(expected.envelope, carol, alice.signPk).ok).toBe(false);
  });
});

describe('worked example: docs/wire-format.md shows the fixture', () => {
  const section = ((): string => {
    const from = doc.indexOf('<!-- worked-example:begin');
    const to = doc.indexOf('<!-- worked-example:end -->');
    return from >= 0 && to > from ? doc.slice(from, to) : '';
  })();

  it('the doc has a generated worked-example section', () => {
    expect(section.length).toBeGreaterThan(1000);
  });

  it('the doc prints the complete envelope JSON of the fixture', () => {
    expect(blocks('json')).toContain(JSON.stringify(expected.envelope, null, 2));
    expect(section).toContain(`\`\`\`json\n${JSON.stringify(expected.envelope, null, 2)}\n\`\`\``);
  });

  it('the doc prints every fixed input', () => {
    for (const value of [
      inputs.aliceSeedHex,
      inputs.bobSeedHex,
      inputs.escrowSkHex,
      inputs.loginNonceHex,
      inputs.id,
      String(inputs.ts),
      inputs.nonceHex,
      inputs.contentKeyHex,
      JSON.stringify(inputs.body),
      inputs.ephemeralSkHex.alice,
      inputs.ephemeralSkHex.bob,
      inputs.ephemeralSkHex.escrow,
    ]) {
      expect(section).toContain(`\`${value}\``);
    }
  });

  it('the doc prints every derived key, PIN, kid and the safety number', () => {
    for (const p of [derived.alice, derived.bob]) {
      for (const value of [p.signPkHex, p.signPkB64, p.boxPkHex, p.boxSkHex, p.pin]) expect(section).toContain(`\`${value}\``);
    }
    for (const value of [derived.escrow.pkHex, derived.escrow.pkB64, derived.escrow.kid, derived.safetyNumber]) {
      expect(section).toContain(`\`${value}\``);
    }
  });

  it('the doc prints the login transcript and signature', () => {
    expect(blocks('text')).toContain(fx.login.transcriptText);
    expect(section).toContain(`\`${fx.login.sig}\``);
    expect(section).toContain(`\`${fx.login.nonceB64}\``);
  });

  it('the doc prints the header bytes as text and hex, the body, and the signed bytes', () => {
    const text = blocks('text');
    const hexBlock = (h: string): string => h.match(/.{1,64}/g)!.join('\n');
    expect(text).toContain(expected.headerText);
    expect(text).toContain(hexBlock(expected.headerHex));
    expect(text).toContain(expected.bodyPlaintext);
    expect(text).toContain(hexBlock(expected.bodyPlaintextHex));
    expect(text).toContain(hexBlock(expected.bodyCiphertextHex));
    expect(text).toContain(expected.signedText);
    expect(section).toContain(`${expected.signedLength} bytes`);
    expect(section).toContain(`\`${expected.sigHex}\``);
  });

  it('the doc prints each sealed box with its ephemeral key and box nonce', () => {
    for (const box of Object.values(expected.boxes)) {
      for (const value of [box.ephemeralPkHex, box.sealNonceHex, box.sealedHex, box.sealedB64]) expect(section).toContain(`\`${value}\``);
    }
  });

  it("the doc's challenge and hello frame examples form a valid login for Alice", () => {
    const frames = blocks('json client-frame')
      .concat(blocks('json server-frame'))
      .map((t) => JSON.parse(t.replace('<envelope>', 'null')) as { type: string; nonce?: string; pk?: string; sig?: string });
    const challenge = frames.find((f) => f.type === 'challenge');
    const hello = frames.find((f) => f.type === 'hello');
    expect(challenge?.nonce).toBe(fx.login.nonceB64);
    expect(hello?.pk).toBe(derived.alice.signPkB64);
    expect(hello?.sig).toBe(fx.login.sig);
    expect(verifyLogin(challenge?.nonce ?? '', hello?.pk ?? '', hello?.sig ?? '')).toBe(true);
  });
});

describe('the version 1 worked example: an archive of the previous protocol still opens', () => {
  const v1 = JSON.parse(readFileSync(resolve(ROOT, 'tests/fixtures/worked-example-v1.json'), 'utf8')) as {
    inputs: Fixture['inputs'];
    derived: Fixture['derived'];
    expected: Omit<Fixture['expected'], 'envelope'> & { envelope: unknown };
  };

  it('its envelope parses as a v1 envelope (and as an envelope of either version), not as a v2 one', () => {
    expect(EnvelopeV1.safeParse(v1.expected.envelope).success).toBe(true);
    expect(AnyEnvelope.safeParse(v1.expected.envelope).success).toBe(true);
    expect(Envelope.safeParse(v1.expected.envelope).success).toBe(false);
  });

  it('its v1 header and signed bytes are rebuilt from the documented v1 layouts, and its signature verifies', () => {
    const env = EnvelopeV1.parse(v1.expected.envelope);
    const head = ['backdoor-lab/v1', `id=${env.id}`, `from=${env.from}`, `to=${env.to.join(',')}`, `conv=${env.conv}`, `ts=${env.ts}`].join('\n');
    expect(head).toBe(v1.expected.headerText);
    expect(new TextDecoder().decode(headerBytesV1(env))).toBe(head);
    const signed = [
      'backdoor-lab/v1 signature',
      head,
      `nonce=${env.nonce}`,
      `body=${env.body}`,
      `wraps=${env.wraps.map((w) => `${w.to}:${w.key}`).join(',')}`,
      `escrow=${env.escrow ? `${env.escrow.kid}:${env.escrow.key}` : '-'}`,
    ].join('\n');
    expect(signed).toBe(v1.expected.signedText);
    const { sig: _sig, ...unsigned } = env;
    expect(new TextDecoder().decode(signedBytesV1(unsigned))).toBe(signed);
    expect(verifyEnvelope(env, unhex(v1.derived.alice.signPkHex))).toBe(true);
  });

  it('Bob and the regulator open it, and as an archive line it opens with the escrow key through the shared archive reader', () => {
    const env = EnvelopeV1.parse(v1.expected.envelope);
    const alicePk = unhex(v1.derived.alice.signPkHex);
    const bobV1 = identityFromSeed(v1.inputs.bobSeedHex);
    const escrow = escrowKeyPairFromSecret(unhex(v1.inputs.escrowSkHex));
    expect(openEnvelope(env, bobV1, alicePk)).toEqual({ ok: true, value: v1.inputs.body });
    expect(openWithEscrow(env, escrow, alicePk)).toEqual({ ok: true, value: v1.inputs.body });
    const line = parseArchiveLine(JSON.stringify({ seq: 1, at: 1700000000001, senderPk: v1.derived.alice.signPkB64, env }));
    expect(line.ok).toBe(true);
    if (!line.ok) return;
    expect(openArchived(line.value, escrow)).toMatchObject({ status: 'opened', text: v1.inputs.body.text });
    expect(openArchived(line.value, newEscrowKeyPair())).toMatchObject({ status: 'not-opened', code: OpenFailure.EscrowKidUnknown });
  });
});
