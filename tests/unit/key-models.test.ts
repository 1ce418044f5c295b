/**
 * The key models the 2015 story turns on, with the real keys: for each model, who opens a message
 * and who cannot — the sender, the recipient, another user, the relay's operator (the enterprise
 * server's key, and the app that every copy ships), the regulator (its escrow key), and an outsider
 * who took the key out of the app — and that "who can read" (whoCanRead), read from the bytes,
 * says exactly that.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady, newEscrowKeyPair, newIdentity, type EscrowKeyPair, type Identity } from '../../shared/crypto.ts';
import { appKey } from '../../shared/crypto/app-key.ts';
import { newServerKeyPair, serverKeyModel, type ServerKeyPair } from '../../shared/crypto/server-key.ts';
import { openAs, openKey, sealEnvelope, verifyEnvelope, whoCanRead, type Reader, type SealPlan } from '../../shared/envelope.ts';
import { Envelope } from '../../shared/protocol.ts';

let alice: Identity, bob: Identity, carol: Identity;
let regulator: EscrowKeyPair;
let server: ServerKeyPair;
beforeAll(async () => {
  await cryptoReady();
  [alice, bob, carol] = [newIdentity(), newIdentity(), newIdentity()];
  regulator = newEscrowKeyPair();
  server = newServerKeyPair();
});

type Party = 'sender' | 'recipient' | 'another user' | 'operator (server key)' | 'operator (the app)' | 'regulator (escrow key)' | 'outsider with the app key';
const PARTIES: Party[] = ['sender', 'recipient', 'another user', 'operator (server key)', 'operator (the app)', 'regulator (escrow key)', 'outsider with the app key'];

function reader(party: Party): Reader {
  switch (party) {
    case 'sender':
      return { kind: 'member', identity: alice };
    case 'recipient':
      return { kind: 'member', identity: bob };
    case 'another user':
      return { kind: 'member', identity: carol };
    case 'operator (server key)':
      return { kind: 'server', key: server };
    case 'operator (the app)':
    case 'outsider with the app key':
      return { kind: 'app', key: appKey().key };
    case 'regulator (escrow key)':
      return { kind: 'escrow', key: regulator };
  }
}

/** Seal Alice → Bob under a plan; for server-held keys, do what the enterprise server does: open the key and wrap it for Bob. */
function sealed(plan: SealPlan): Envelope {
  const { env } = sealEnvelope({ sender: alice, to: [{ pin: bob.pin, signPk: bob.signPk }], conv: 'dm', body: { text: `sealed as ${plan.model}` }, plan });
  if (env.keys.model !== 'server-key') return env;
  const key = openKey(env, { kind: 'server', key: server });
  if (!key.ok) throw new Error(key.reason);
  return Envelope.parse({ ...env, delivery: serverKeyModel.deliver(key.value, [{ pin: bob.pin, signPk: bob.signPk }]) });
}

const MATRIX: [string, () => SealPlan, Party[]][] = [
  ['end to end', () => ({ model: 'e2e' }), ['sender', 'recipient']],
  ['end to end with escrow (the tap)', () => ({ model: 'e2e-escrow', escrow: regulator }), ['sender', 'recipient', 'regulator (escrow key)']],
  ['the shared app key (BBM PIN messages)', () => ({ model: 'app-key' }), ['sender', 'recipient', 'another user', 'operator (the app)', 'outsider with the app key']],
  ['server-held keys (BES)', () => ({ model: 'server-key', server }), ['sender', 'recipient', 'operator (server key)']],
];

describe('who opens a message, by key model, with the real keys', () => {
  it.each(MATRIX)('%s: exactly the parties listed open it, and every other party gets a refusal', (_name, plan, readers) => {
    const env = sealed(plan());
    expect(verifyEnvelope(env, alice.signPk)).toBe(true);
    for (const party of PARTIES) {
      const opened = openAs(env, reader(party), alice.signPk);
      expect(opened.ok, `${party}${opened.ok ? ' opens it' : ` cannot: ${opened.reason}`}`).toBe(readers.includes(party));
      if (opened.ok) expect(opened.value.text).toBe(`sealed as ${plan().model}`);
    }
  });

  it.each(MATRIX)('%s: whoCanRead, from the bytes alone, names exactly who opened it', (_name, plan, readers) => {
    const env = sealed(plan());
    const who = whoCanRead(env);
    const members = [alice, bob, carol].filter((id) => who.members.includes(id.pin) || Boolean(who.appKid)).map((id) => id.pin);
    const memberParties: [Party, Identity][] = [
      ['sender', alice],
      ['recipient', bob],
      ['another user', carol],
    ];
    for (const [party, id] of memberParties) expect(members.includes(id.pin), party).toBe(readers.includes(party));
    expect(who.escrowKid !== null, 'the regulator').toBe(readers.includes('regulator (escrow key)'));
    expect(Boolean(who.serverKid), 'the enterprise server').toBe(readers.includes('operator (server key)'));
    expect(Boolean(who.appKid), 'anyone with the app').toBe(readers.includes('outsider with the app key'));
  });

  it('a server-held key envelope opens for its recipient only once the server has wrapped the key for them, and a server that wraps a wrong key is caught by the body', () => {
    const { env } = sealEnvelope({
      sender: alice,
      to: [{ pin: bob.pin, signPk: bob.signPk }],
      conv: 'dm',
      body: { text: 'through the server' },
      plan: { model: 'server-key', server },
    });
    expect(openAs(env, { kind: 'member', identity: bob }, alice.signPk)).toMatchObject({ ok: false, code: 'not_addressed_to_me' });
    const wrongKey = new Uint8Array(32).fill(9);
    const lying = Envelope.parse({ ...env, delivery: serverKeyModel.deliver(wrongKey, [{ pin: bob.pin, signPk: bob.signPk }]) });
    expect(verifyEnvelope(lying, alice.signPk)).toBe(true); // the delivery is not signed by the sender...
    expect(openAs(lying, { kind: 'member', identity: bob }, alice.signPk)).toMatchObject({ ok: false, code: 'body_does_not_decrypt' }); // ...but the body gives it away
  });

  it('relabelling an envelope as another key model breaks the signature and the associated data', () => {
    const env = sealed({ model: 'app-key' });
    const relabelled = {
      ...env,
      keys: {
        model: 'e2e' as const,
        wraps: [
          { to: alice.pin, key: env.keys.model === 'app-key' ? `${'A'.repeat(106)}==` : '' },
          { to: bob.pin, key: `${'A'.repeat(106)}==` },
        ],
      },
    };
    expect(verifyEnvelope(relabelled, alice.signPk)).toBe(false);
  });
});
