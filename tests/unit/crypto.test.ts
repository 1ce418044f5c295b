/**
 * Properties of the envelope crypto in shared/crypto.ts: who can open what,
 * and that every byte and every header field is bound by the signature and
 * (for the body) by the AEAD.
 */
import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  boxKeyOf,
  cryptoReady,
  escrowKeyPairFromSecret,
  escrowKid,
  fromB64,
  identityFromSigningKey,
  loginTranscript,
  newEscrowKeyPair,
  newIdentity,
  pinOf,
  safetyNumber,
  signLogin,
  toB64,
  toHex,
  unwrapKey,
  verifyLogin,
  type EscrowKeyPair,
  type Identity,
} from '../../shared/crypto.ts';
import { bodyPlainLength, decryptBody, headerBytes, openEnvelope, openWithEscrow, sealEnvelope, signedBytes, verifyEnvelope, type SealInput } from '../../shared/envelope.ts';
import { Envelope, type E2eKeys, type EscrowField, type EscrowKeys, type KeyWrap, type MessageBody } from '../../shared/protocol.ts';
import { OpenFailure } from '../../shared/failures.ts';

/**
 * Identities built from libsodium primitives (crypto_sign_seed_keypair and the
 * Ed25519 → X25519 conversions), so that these tests do not depend on
 * newIdentity, which has its own test below.
 */
function identity(seed?: Uint8Array): Identity {
  const kp = seed ? sodium.crypto_sign_seed_keypair(seed) : sodium.crypto_sign_keypair();
  return {
    signPk: kp.publicKey,
    signSk: kp.privateKey,
    boxPk: sodium.crypto_sign_ed25519_pk_to_curve25519(kp.publicKey),
    boxSk: sodium.crypto_sign_ed25519_sk_to_curve25519(kp.privateKey),
    pin: pinOf(kp.publicKey),
  };
}

const recipient = (id: Identity) => ({ pin: id.pin, signPk: id.signPk });
const seed = (byte: number): Uint8Array => new Uint8Array(32).fill(byte);

/** Decode base64, XOR one byte with `mask`, encode again. */
function flipB64(text: string, index: number, mask = 0x01): string {
  const bytes = fromB64(text);
  bytes[index] = (bytes[index] ?? 0) ^ mask;
  return toB64(bytes);
}

/** Sign an (altered) envelope as its sender would, so only the alteration itself is tested. */
function resign(env: Envelope, sender: Identity): Envelope {
  const { sig: _sig, ...unsigned } = env;
  return { ...unsigned, sig: toB64(sodium.crypto_sign_detached(signedBytes(unsigned), sender.signSk)) };
}

/** Refused at the signature (or at the key/PIN binding of the sender), before anything is decrypted. */
const rejectedBySignature = (result: { ok: boolean; code?: string }): boolean =>
  !result.ok && (result.code === OpenFailure.BadSignature || result.code === OpenFailure.SenderKeyMismatch);

/** The envelope's wraps and escrow field, and copies with them replaced (the key model is one signed field). */
const e2eKeys = (env: Envelope): E2eKeys | EscrowKeys => {
  if (env.keys.model !== 'e2e' && env.keys.model !== 'e2e-escrow') throw new Error(`not an end-to-end envelope: ${env.keys.model}`);
  return env.keys;
};
const wrapsOf = (env: Envelope): KeyWrap[] => e2eKeys(env).wraps;
const escrowOf = (env: Envelope): EscrowField | null => (env.keys.model === 'e2e-escrow' ? env.keys.escrow : null);
const withWraps = (env: Envelope, wraps: KeyWrap[]): Envelope => ({ ...env, keys: { ...e2eKeys(env), wraps } });
const withEscrow = (env: Envelope, escrow: EscrowField | null): Envelope => ({
  ...env,
  keys: escrow ? { model: 'e2e-escrow', wraps: wrapsOf(env), escrow } : { model: 'e2e', wraps: wrapsOf(env) },
});

let alice: Identity;
let bob: Identity;
let carol: Identity;
let mallory: Identity;
let regulator: EscrowKeyPair;

beforeAll(async () => {
  await cryptoReady();
  alice = identity(seed(1));
  bob = identity(seed(2));
  carol = identity(seed(3));
  mallory = identity(seed(4));
  regulator = escrowKeyPairFromSecret(seed(5));
});

function seal(input: Partial<SealInput> & { body: MessageBody }) {
  return sealEnvelope({ sender: alice, to: [recipient(bob)], conv: 'dm', ...input });
}

// ---------------------------------------------------------------------------

describe('identities', () => {
  it('newIdentity(seed) derives the Ed25519 pair of crypto_sign_seed_keypair, its X25519 conversion and its PIN', () => {
    const want = identity(seed(9));
    const got = newIdentity(seed(9));
    expect(toHex(got.signPk)).toBe(toHex(want.signPk));
    expect(toHex(got.signSk)).toBe(toHex(want.signSk));
    expect(toHex(got.boxPk)).toBe(toHex(want.boxPk));
    expect(toHex(got.boxSk)).toBe(toHex(want.boxSk));
    expect(got.pin).toBe(want.pin);
    const again = identityFromSigningKey(want.signSk);
    expect(toHex(again.signPk)).toBe(toHex(want.signPk));
    expect(again.pin).toBe(want.pin);
    expect(newIdentity().pin).toMatch(/^[0-9A-F]{8}$/);
  });

  it('the X25519 pair derived from an identity is a matching pair, and boxKeyOf(signPk) gives its public key', () => {
    for (const id of [alice, bob, identity()]) {
      expect(toHex(sodium.crypto_scalarmult_base(id.boxSk))).toBe(toHex(id.boxPk));
      expect(toHex(boxKeyOf(id.signPk))).toBe(toHex(id.boxPk));
    }
  });
});

describe('PINs', () => {
  it('a PIN is BLAKE2b with a 4-byte output over the Ed25519 public key, as 8 upper-case hex digits', () => {
    for (const id of [alice, bob, identity()]) {
      expect(id.pin).toMatch(/^[0-9A-F]{8}$/);
      expect(pinOf(id.signPk)).toBe(toHex(sodium.crypto_generichash(4, id.signPk, null)).toUpperCase());
      // Not a truncation of a longer BLAKE2b: the output length is part of the hash.
      expect(pinOf(id.signPk)).not.toBe(
        toHex(sodium.crypto_generichash(32, id.signPk, null))
          .slice(0, 8)
          .toUpperCase(),
      );
    }
  });

  it('a PIN is stable for a key and differs between keys (200 random keys, no collision)', () => {
    expect(pinOf(alice.signPk)).toBe(pinOf(Uint8Array.from(alice.signPk)));
    const pins = new Set(Array.from({ length: 200 }, () => pinOf(sodium.crypto_sign_keypair().publicKey)));
    expect(pins.size).toBe(200);
  });
});

describe('safety numbers', () => {
  it('a safety number is 12 groups of 5 decimal digits', () => {
    expect(safetyNumber(alice.signPk, bob.signPk)).toMatch(/^\d{5}( \d{5}){11}$/);
  });

  it('a safety number is the same from both sides', () => {
    for (let i = 0; i < 20; i++) {
      const a = sodium.crypto_sign_keypair().publicKey;
      const b = sodium.crypto_sign_keypair().publicKey;
      expect(safetyNumber(a, b)).toBe(safetyNumber(b, a));
    }
  });

  it('a safety number changes when either key changes (a swapped key is visible)', () => {
    const real = safetyNumber(alice.signPk, bob.signPk);
    expect(safetyNumber(alice.signPk, mallory.signPk)).not.toBe(real);
    expect(safetyNumber(mallory.signPk, bob.signPk)).not.toBe(real);
    // Each half is one user's fingerprint: swapping Bob's key changes Bob's half and keeps Alice's.
    const halves = (s: string) => [s.slice(0, 35), s.slice(36)];
    const [a1, b1] = halves(real);
    const swapped = halves(safetyNumber(alice.signPk, mallory.signPk));
    expect(swapped).toContain(alice.pin < bob.pin ? a1 : b1);
  });
});

describe('escrow key pairs', () => {
  it('the kid is BLAKE2b-64 of the escrow public key, and escrowKeyPairFromSecret rebuilds a generated pair', () => {
    const pair = newEscrowKeyPair();
    expect(pair.kid).toMatch(/^[0-9a-f]{16}$/);
    expect(pair.kid).toBe(toHex(sodium.crypto_generichash(8, pair.pk, null)));
    expect(escrowKid(pair.pk)).toBe(pair.kid);
    const again = escrowKeyPairFromSecret(pair.sk);
    expect(toHex(again.pk)).toBe(toHex(pair.pk));
    expect(again.kid).toBe(pair.kid);
    expect(newEscrowKeyPair().kid).not.toBe(pair.kid);
  });
});

describe('login', () => {
  const nonceA = toB64(new Uint8Array(32).fill(0x61));
  const nonceB = toB64(new Uint8Array(32).fill(0x62));

  it('the login transcript is the three documented lines', () => {
    const pk = toB64(alice.signPk);
    expect(sodium.to_string(loginTranscript(nonceA, pk))).toBe(`backdoor-lab/v2 login\nnonce=${nonceA}\npk=${pk}`);
  });

  it('a login signature verifies for its nonce and key', () => {
    expect(verifyLogin(nonceA, toB64(alice.signPk), signLogin(nonceA, alice))).toBe(true);
  });

  it('a login signature for one nonce fails for another nonce (no replay across challenges)', () => {
    expect(verifyLogin(nonceB, toB64(alice.signPk), signLogin(nonceA, alice))).toBe(false);
  });

  it('a login signature fails for another public key (no PIN theft with a signature)', () => {
    expect(verifyLogin(nonceA, toB64(mallory.signPk), signLogin(nonceA, alice))).toBe(false);
    expect(verifyLogin(nonceA, toB64(alice.signPk), signLogin(nonceA, mallory))).toBe(false);
  });

  it('flipping any byte of a login signature makes it fail', () => {
    const sig = signLogin(nonceA, alice);
    for (let i = 0; i < 64; i++) expect(verifyLogin(nonceA, toB64(alice.signPk), flipB64(sig, i))).toBe(false);
  });

  it('malformed base64 or wrong lengths make verifyLogin return false, never throw', () => {
    const pk = toB64(alice.signPk);
    const sig = signLogin(nonceA, alice);
    for (const [n, p, s] of [
      [nonceA, pk, 'not base64!'],
      [nonceA, 'AAAA', sig],
      [nonceA, pk, ''],
      [nonceA, pk, sig.slice(0, -4)],
      [nonceA, pk.replace(/=$/, 'B'), sig],
    ] as const) {
      expect(() => verifyLogin(n, p, s)).not.toThrow();
      expect(verifyLogin(n, p, s)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------

describe('round trips', () => {
  it('1:1: the recipient and the sender (its own copy) read the message', () => {
    const body = { text: 'hello Bob' };
    const { env } = seal({ body });
    expect(Envelope.safeParse(env).success).toBe(true);
    expect(wrapsOf(env).map((w) => w.to)).toEqual([alice.pin, bob.pin]);
    expect(openEnvelope(env, bob, alice.signPk)).toEqual({ ok: true, value: body });
    expect(openEnvelope(env, alice, alice.signPk)).toEqual({ ok: true, value: body });
  });

  it('group of 3: every member reads the text and the group name, which is only inside the ciphertext', () => {
    const body = { text: 'hello group', group: 'Study group' };
    const { env } = seal({ to: [recipient(bob), recipient(carol)], conv: 'g-0123456789abcdef', body });
    expect(Envelope.safeParse(env).success).toBe(true);
    expect(wrapsOf(env).map((w) => w.to)).toEqual([alice.pin, bob.pin, carol.pin]);
    for (const reader of [alice, bob, carol]) expect(openEnvelope(env, reader, alice.signPk)).toEqual({ ok: true, value: body });
    expect(JSON.stringify(env)).not.toContain('Study group');
  });

  it('a non-recipient cannot open the envelope: it has no wrap, and no wrap opens with its key', () => {
    const { env } = seal({ to: [recipient(bob), recipient(carol)], conv: 'g-0123456789abcdef', body: { text: 'not for Mallory' } });
    expect(openEnvelope(env, mallory, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.NotAddressedToMe });
    for (const wrap of wrapsOf(env)) expect(unwrapKey(wrap.key, mallory.boxPk, mallory.boxSk).ok).toBe(false);
    // Relabelling a wrap with Mallory's PIN (and re-signing) still gives Mallory nothing.
    const relabelled = resign(
      withWraps(
        env,
        wrapsOf(env).map((w) => (w.to === bob.pin ? { ...w, to: mallory.pin } : w)),
      ),
      alice,
    );
    expect(openEnvelope(relabelled, mallory, alice.signPk).ok).toBe(false);
  });

  it('each message gets a fresh key, nonce and id', () => {
    const a = seal({ body: { text: 'same' } });
    const b = seal({ body: { text: 'same' } });
    expect(toHex(a.key)).not.toBe(toHex(b.key));
    expect(a.env.nonce).not.toBe(b.env.nonce);
    expect(a.env.id).not.toBe(b.env.id);
    expect(a.env.body).not.toBe(b.env.body);
  });

  it('every wrap and the escrow field are 80-byte sealed boxes that open to the message key', () => {
    const { env, key } = seal({ body: { text: 'sizes' }, escrow: regulator });
    for (const wrap of wrapsOf(env)) expect(fromB64(wrap.key).length).toBe(80);
    expect(fromB64(escrowOf(env)!.key).length).toBe(80);
    const own = unwrapKey(wrapsOf(env)[0]!.key, alice.boxPk, alice.boxSk);
    expect(own.ok && toHex(own.value)).toBe(toHex(key));
  });

  it('bodyPlainLength is the UTF-8 length of the body JSON (the relay learns the length, not the text)', () => {
    const body = { text: 'café ☕' };
    const { env } = seal({ body });
    expect(bodyPlainLength(env)).toBe(new TextEncoder().encode(JSON.stringify(body)).length);
  });

  it('a body that is not a valid MessageBody is refused after decryption', () => {
    const { env, key } = seal({ body: { text: 'x' } });
    const header = headerBytes(env);
    const nonce = fromB64(env.nonce);
    for (const plain of ['not json', '{"text":""}', '{"text":"x","extra":1}', '[]']) {
      const body = toB64(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, header, null, nonce, key));
      const result = decryptBody({ ...env, body }, key);
      expect(result.ok).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------

describe('tampering', () => {
  // A group message under the tap: three wraps and an escrow field, and a body of a few hundred bytes.
  const body = { text: 'Tamper with me. '.repeat(16).trim(), group: 'Tamper club' };
  let env: Envelope;
  let key: Uint8Array;

  beforeAll(() => {
    ({ env, key } = seal({ to: [recipient(bob), recipient(carol)], conv: 'g-00112233445566ff', body, escrow: regulator }));
    expect(fromB64(env.body).length).toBeGreaterThanOrEqual(250);
  });

  it('the untampered envelope opens for every member and the regulator (control)', () => {
    for (const reader of [alice, bob, carol]) expect(openEnvelope(env, reader, alice.signPk)).toEqual({ ok: true, value: body });
    expect(openWithEscrow(env, regulator, alice.signPk)).toEqual({ ok: true, value: body });
  });

  it('flipping any byte of the body is rejected before decryption (bad signature)', () => {
    const n = fromB64(env.body).length;
    for (let i = 0; i < n; i++) {
      const bad = { ...env, body: flipB64(env.body, i) };
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk)), `body byte ${i}`).toBe(true);
    }
  });

  it('flipping any byte of the body also fails AEAD decryption with the right key', () => {
    const n = fromB64(env.body).length;
    for (let i = 0; i < n; i++) expect(decryptBody({ ...env, body: flipB64(env.body, i) }, key).ok, `body byte ${i}`).toBe(false);
  });

  it('flipping any byte of the nonce is rejected by the signature and by the AEAD', () => {
    for (let i = 0; i < 24; i++) {
      const bad = { ...env, nonce: flipB64(env.nonce, i) };
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk)), `nonce byte ${i}`).toBe(true);
      expect(decryptBody(bad, key).ok, `nonce byte ${i}`).toBe(false);
    }
  });

  it('flipping any byte of any wrap is rejected by the signature, and the flipped wrap does not unseal', () => {
    const owners = [alice, bob, carol];
    wrapsOf(env).forEach((wrap, w) => {
      const owner = owners[w]!;
      expect(wrap.to).toBe(owner.pin);
      for (let i = 0; i < 80; i++) {
        const flipped = flipB64(wrap.key, i);
        const bad = withWraps(
          env,
          wrapsOf(env).map((x, j) => (j === w ? { ...x, key: flipped } : x)),
        );
        expect(rejectedBySignature(openEnvelope(bad, owner, alice.signPk)), `wrap ${w} byte ${i}`).toBe(true);
        expect(unwrapKey(flipped, owner.boxPk, owner.boxSk).ok, `wrap ${w} byte ${i}`).toBe(false);
      }
    });
  });

  it('flipping any byte of the escrow key is rejected by recipients and by the regulator', () => {
    for (let i = 0; i < 80; i++) {
      const flipped = flipB64(escrowOf(env)!.key, i);
      const bad: Envelope = withEscrow(env, { kid: escrowOf(env)!.kid, key: flipped });
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk)), `escrow byte ${i}`).toBe(true);
      expect(openWithEscrow(bad, regulator, alice.signPk).ok, `escrow byte ${i}`).toBe(false);
      // Even without checking the signature, a flipped escrow box does not open.
      expect(openWithEscrow(bad, regulator).ok, `escrow byte ${i}`).toBe(false);
    }
  });

  it('changing the escrow kid is rejected by the signature', () => {
    const bad: Envelope = withEscrow(env, { kid: '0000000000000000', key: escrowOf(env)!.key });
    expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk))).toBe(true);
  });

  it('flipping any byte (and any single bit) of the signature is rejected', () => {
    for (let i = 0; i < 64; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bad = { ...env, sig: flipB64(env.sig, i, mask) };
        expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk)), `sig byte ${i} mask ${mask}`).toBe(true);
      }
    }
  });

  describe('changing a header field is rejected by the signature and, for the body, by the AEAD', () => {
    const cases: Array<[string, (e: Envelope) => Envelope]> = [
      ['id', (e) => ({ ...e, id: (e.id[0] === '0' ? '1' : '0') + e.id.slice(1) })],
      ['from', (e) => ({ ...e, from: mallory.pin })],
      ['to (a recipient replaced)', (e) => ({ ...e, to: [bob.pin, mallory.pin] })],
      ['to (recipients reordered)', (e) => ({ ...e, to: [...e.to].reverse() })],
      ['to (a recipient dropped)', (e) => ({ ...e, to: [bob.pin] })],
      ['conv', (e) => ({ ...e, conv: 'g-ffeeddccbbaa9988' })],
      ['ts (+1 ms)', (e) => ({ ...e, ts: e.ts + 1 })],
      ['ts (-1 ms)', (e) => ({ ...e, ts: e.ts - 1 })],
      ['v', (e) => ({ ...e, v: 3 as unknown as 2 })],
      ['the key model (e2e-escrow relabelled e2e, field kept aside)', (e) => ({ ...e, keys: { model: 'e2e', wraps: wrapsOf(e) } })],
    ];
    it.each(cases)('changing %s is rejected', (_name, change) => {
      const bad = change(env);
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk))).toBe(true);
      expect(verifyEnvelope(bad, alice.signPk)).toBe(false);
      // The header is the AEAD's associated data: even with the right key the body does not decrypt.
      expect(decryptBody(bad, key).ok).toBe(false);
    });

    it('a changed from fails both with the claimed sender key (PIN mismatch) and with the real one', () => {
      const bad = { ...env, from: mallory.pin };
      expect(verifyEnvelope(bad, mallory.signPk)).toBe(false);
      expect(verifyEnvelope(bad, alice.signPk)).toBe(false);
      // A sender key whose PIN does not match `from` is refused even for an untouched envelope.
      expect(verifyEnvelope(env, mallory.signPk)).toBe(false);
    });
  });

  it('a valid signature with one wrap swapped for a wrap of another envelope is rejected', () => {
    const other = seal({ to: [recipient(bob), recipient(carol)], conv: 'g-00112233445566ff', body: { text: 'other' }, escrow: regulator }).env;
    for (let w = 0; w < wrapsOf(env).length; w++) {
      const bad = withWraps(
        env,
        wrapsOf(env).map((x, j) => (j === w ? wrapsOf(other)[w]! : x)),
      );
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk)), `wrap ${w}`).toBe(true);
    }
  });

  it('reordering, relabelling, dropping or duplicating wraps under the original signature is rejected', () => {
    const [a, b, c] = wrapsOf(env) as [KeyWrap, KeyWrap, KeyWrap];
    const variants: KeyWrap[][] = [
      [b, a, c],
      [a, { to: b.to, key: c.key }, { to: c.to, key: b.key }],
      [a, b],
      [a, b, c, c],
    ];
    for (const wraps of variants) expect(rejectedBySignature(openEnvelope(withWraps(env, wraps), bob, alice.signPk))).toBe(true);
  });

  it('a wrap whose key is swapped for another key, even re-signed by the sender, does not decrypt the body', () => {
    const otherKey = sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
    const bad = resign(
      withWraps(
        env,
        wrapsOf(env).map((w) => (w.to === bob.pin ? { ...w, key: toB64(sodium.crypto_box_seal(otherKey, bob.boxPk)) } : w)),
      ),
      alice,
    );
    expect(verifyEnvelope(bad, alice.signPk)).toBe(true);
    const result = openEnvelope(bad, bob, alice.signPk);
    expect(result.ok).toBe(false);
    expect(result).toMatchObject({ ok: false, code: OpenFailure.BodyDoesNotDecrypt });
  });

  it('an envelope signed by someone else than from (a forged sender) is rejected', () => {
    const forged = resign(env, mallory);
    expect(rejectedBySignature(openEnvelope(forged, bob, alice.signPk))).toBe(true);
    expect(rejectedBySignature(openEnvelope(forged, bob, mallory.signPk))).toBe(true);
  });
});

// ---------------------------------------------------------------------------

describe('escrow (the regulator tap)', () => {
  it('without an escrow field the regulator cannot open the message (end-to-end only)', () => {
    const { env } = seal({ body: { text: 'private' } });
    expect(env.keys.model).toBe('e2e');
    expect(escrowOf(env)).toBeNull();
    expect(openWithEscrow(env, regulator, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.NoEscrowField });
    expect(sodium.to_string(signedBytes(env))).not.toContain('escrow=');
    expect(sodium.to_string(headerBytes(env)).endsWith('\nmodel=e2e')).toBe(true);
  });

  it('with the escrow field the regulator opens the message, and so do the participants', () => {
    const body = { text: 'tapped' };
    const { env } = seal({ body, escrow: regulator });
    expect(env.keys.model).toBe('e2e-escrow');
    expect(escrowOf(env)?.kid).toBe(regulator.kid);
    expect(openWithEscrow(env, regulator, alice.signPk)).toEqual({ ok: true, value: body });
    expect(openWithEscrow(env, regulator)).toEqual({ ok: true, value: body });
    expect(openEnvelope(env, bob, alice.signPk)).toEqual({ ok: true, value: body });
  });

  it('another escrow key pair (another kid) cannot open the escrow field', () => {
    const { env } = seal({ body: { text: 'tapped' }, escrow: regulator });
    const other = newEscrowKeyPair();
    expect(openWithEscrow(env, other, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.EscrowKidUnknown });
  });

  it('another key pair that claims the regulator kid still cannot open the escrow field', () => {
    const { env } = seal({ body: { text: 'tapped' }, escrow: regulator });
    const impostor = { ...newEscrowKeyPair(), kid: regulator.kid };
    expect(openWithEscrow(env, impostor, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.EscrowDoesNotOpen });
  });

  it('a forged random 80-byte escrow field passes the schema and the signature, but does not open; recipients still read', () => {
    const body = { text: 'the regulator gets nothing' };
    const { env: honest } = seal({ body, escrow: regulator });
    const forged = resign(withEscrow(honest, { kid: regulator.kid, key: toB64(sodium.randombytes_buf(80)) }), alice);
    expect(Envelope.safeParse(forged).success).toBe(true);
    expect(verifyEnvelope(forged, alice.signPk)).toBe(true);
    expect(openWithEscrow(forged, regulator, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.EscrowDoesNotOpen });
    expect(openEnvelope(forged, bob, alice.signPk)).toEqual({ ok: true, value: body });
  });

  it('an escrow field that seals a wrong message key opens but does not decrypt the body; recipients still read', () => {
    const body = { text: 'LEAF with a wrong key' };
    const { env: honest } = seal({ body, escrow: regulator });
    const wrongKey = sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
    const forged = resign(withEscrow(honest, { kid: regulator.kid, key: toB64(sodium.crypto_box_seal(wrongKey, regulator.pk)) }), alice);
    expect(openWithEscrow(forged, regulator, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.BodyDoesNotDecrypt });
    expect(openEnvelope(forged, bob, alice.signPk)).toEqual({ ok: true, value: body });
  });

  it('adding, stripping or replacing the escrow field after signing breaks the signature', () => {
    const { env: plain } = seal({ body: { text: 'e2e' } });
    const { env: tapped } = seal({ body: { text: 'tapped' }, escrow: regulator });
    const added: Envelope = withEscrow(plain, { kid: regulator.kid, key: toB64(sodium.crypto_box_seal(new Uint8Array(32), regulator.pk)) });
    const stripped: Envelope = withEscrow(tapped, null);
    const replaced: Envelope = withEscrow(tapped, { kid: regulator.kid, key: toB64(sodium.crypto_box_seal(new Uint8Array(32), regulator.pk)) });
    for (const bad of [added, stripped, replaced]) {
      expect(rejectedBySignature(openEnvelope(bad, bob, alice.signPk))).toBe(true);
      expect(openWithEscrow(bad, regulator, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.BadSignature });
    }
  });

  it('openWithEscrow checks the signature when given the sender key, and the PIN of that key', () => {
    const { env } = seal({ body: { text: 'tapped' }, escrow: regulator });
    expect(openWithEscrow(env, regulator, mallory.signPk)).toMatchObject({ ok: false, code: OpenFailure.SenderKeyMismatch });
    expect(openWithEscrow({ ...env, ts: env.ts + 1 }, regulator, alice.signPk)).toMatchObject({ ok: false, code: OpenFailure.BadSignature });
    // Without the sender key it still cannot be fooled into decrypting an altered header.
    expect(openWithEscrow({ ...env, ts: env.ts + 1 }, regulator).ok).toBe(false);
  });
});
