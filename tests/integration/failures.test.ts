/**
 * The ways a back door fails (issue 12): a forged escrow field, pre-encryption, and a swapped escrow
 * key with a pinned fingerprint. Each scenario runs through the lab's API, real bots on client/core
 * and the real relay; what it claims is checked here with the real keys — the regulator's exported
 * key, the swapped key the attacker holds, the recipients' own keys.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openArchived } from '../../shared/archive.ts';
import { escrowFingerprint, escrowKeyPairFromSecret, fromB64, newEscrowKeyPair, toB64 } from '../../shared/crypto.ts';
import { ErrorCode, keysOf } from '../../shared/protocol.ts';
import { EscrowPinError } from '../../client/core/escrow-pin.ts';
import { newOuterKey, preDecrypt, preEncrypt } from '../../client/bot/pre-encrypt.ts';
import { knows, startTestRelay, until, user } from '../helpers/relay.ts';
import { rawClient } from '../helpers/raw-client.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
async function relay(): Promise<TestRelay> {
  const app = await startTestRelay();
  cleanups.push(() => app.close());
  return app;
}
interface Run {
  id: string;
  result: { summary: string; facts: Record<string, string | number | boolean> };
}
async function run(app: TestRelay, id: string): Promise<Run> {
  const res = await fetch(`${app.url}/api/lab/scenarios/${id}/run`, {
    method: 'POST',
    headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
    body: '{}',
  });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Run;
}
/** The regulator's real key, as its audited export hands it over. */
const regulatorKey = (app: TestRelay) => escrowKeyPairFromSecret(fromB64(app.regulator.exportKey('the failures test').sk));
const regulatorFingerprint = (app: TestRelay) => escrowFingerprint(fromB64(app.regulator.publicKey));

describe('forged escrow field (scene 9)', () => {
  it("forged escrow field is accepted by the relay but flagged by the regulator: the relay stored and delivered all of them, the regulator's key opens 0, the recipient opens all", async () => {
    const app = await relay();
    const { result } = await run(app, 'forged-escrow');
    const mallory = await app.lab.bot('Mallory');
    const trudy = await app.lab.bot('Trudy');
    const sent = [...mallory.m.messages.values()].filter((m) => m.direction === 'out');
    expect(sent.length).toBe(3);
    const key = regulatorKey(app);
    const lines = app.regulator.archived(0, 10_000).filter((l) => l.env.from === mallory.pin);
    expect(lines.length).toBe(sent.length);
    for (const m of sent) {
      // The relay accepted it: stored (its metadata record), and the recipient has it.
      expect(app.store.envelopeMetadata(m.id), m.id).toBeDefined();
      expect(trudy.m.messages.get(m.id)?.text).toBe(m.text);
      expect(trudy.m.messages.get(m.id)?.state).toBe('received');
    }
    for (const line of lines) {
      const keys = keysOf(line.env);
      expect(keys.model).toBe('e2e-escrow');
      // Right shape, right key id: the relay could not tell it from an honest field.
      expect(keys.model === 'e2e-escrow' && keys.escrow.kid).toBe(app.regulator.kid);
      const verdict = openArchived(line, key);
      expect(verdict.status).toBe('not-opened');
      expect(verdict.status === 'not-opened' && verdict.code).toBe('escrow_does_not_open');
    }
    expect(result.facts).toMatchObject({ sent: 3, 'accepted by the relay': 3, 'opened by the regulator': 0, 'read by Trudy': 3 });
  });
});

describe('pre-encryption (scene 10)', () => {
  it('the regulator opens the compliant envelope and gets bytes that are not the inner text; the recipient bot decrypts the inner text', async () => {
    const app = await relay();
    const { result } = await run(app, 'pre-encryption');
    const erin = await app.lab.bot('Erin');
    const frank = await app.lab.bot('Frank');
    const sent = [...erin.m.messages.values()].find((m) => m.direction === 'out')!;
    const line = app.regulator.archived(0, 10_000).find((l) => l.env.id === sent.id)!;
    const verdict = openArchived(line, regulatorKey(app));
    expect(verdict.status).toBe('opened');
    const seen = verdict.status === 'opened' ? verdict.text : '';
    expect(seen).toMatch(/^sbx1:[A-Za-z0-9+/=]+$/);
    expect(seen).not.toContain('north gate');
    expect(frank.m.messages.get(sent.id)?.text).toBe(seen);
    expect(result.facts).toMatchObject({
      'sealed to the regulator': true,
      'envelope opened by the regulator': true,
      'regulator read the text': false,
      'Frank read the text': true,
    });
  });

  it('through the real relay under the tap: the escrow key opens only the outer layer, the shared key opens the text, another key opens nothing', async () => {
    const app = await relay();
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    const alice = await user(app.wsUrl, 'Alice');
    const bob = await user(app.wsUrl, 'Bob');
    await knows(alice, bob.m.pin);
    const shared = newOuterKey();
    const inner = 'The source is in the finance department.';
    const sent = alice.m.sendText(bob.m.pin, preEncrypt(shared, inner));
    await until(() => bob.m.messages.has(sent.id), 'Bob gets it');
    const line = app.regulator.archived(0, 100).find((l) => l.env.id === sent.id)!;
    const verdict = openArchived(line, regulatorKey(app));
    expect(verdict.status).toBe('opened');
    const outer = verdict.status === 'opened' ? verdict.text : '';
    expect(outer).not.toContain(inner);
    expect(preDecrypt(newOuterKey(), outer)).toBeNull();
    expect(preDecrypt(shared, bob.m.messages.get(sent.id)!.text)).toBe(inner);
  });
});

describe('swapped escrow key (scene 11)', () => {
  it("the swapped key opens N of N messages sent under the swap, the regulator's opens 0 of them, and the pinned bot refused to send", async () => {
    const app = await relay();
    const { result } = await run(app, 'swapped-escrow-key');
    const swappedKid = app.relay.getPolicy().escrowKid!;
    expect(swappedKid).not.toBe(app.regulator.kid);
    const key = regulatorKey(app);
    // Every archived envelope sealed to the swapped key: the attacker opens each, the regulator none.
    // (The attacker's view is taken after: the bots' answers may still be arriving, and the copy gets each one with the archive.)
    const underSwap = app.regulator.archived(0, 10_000).filter((l) => {
      const keys = keysOf(l.env);
      return keys.model === 'e2e-escrow' && keys.escrow.kid === swappedKid;
    });
    const view = app.lab.attacker.view();
    expect(view.loot.map((l) => l.kind)).toEqual(expect.arrayContaining(['swapped escrow key', 'feed copy']));
    expect(underSwap.length).toBeGreaterThanOrEqual(2);
    const openedByAttacker = new Set(view.opened.map((o) => o.id));
    for (const line of underSwap) {
      expect(openedByAttacker.has(line.env.id), line.env.id).toBe(true);
      const verdict = openArchived(line, key);
      expect(verdict.status === 'not-opened' && verdict.code).toBe('escrow_kid_unknown');
    }
    const texts = view.opened.map((o) => o.text);
    expect(texts).toEqual(expect.arrayContaining(['The merger is off. Tell nobody until Monday.', 'Understood. I will shred the draft.']));
    // Bob and Carol were never warned; Grace refused.
    const grace = await app.lab.bot('Grace');
    expect([...grace.m.messages.values()].filter((m) => m.direction === 'out')).toEqual([]);
    expect(grace.refusals.length).toBe(1);
    expect(grace.refusals[0]).toContain(regulatorFingerprint(app));
    expect(result.facts).toMatchObject({
      'sent under the swap': 2,
      'opened by the swapped key': 2,
      'opened by the regulator': 0,
      'sealed to another key (console)': 2,
      'regulator read the message before the swap': true,
      'Grace (pinned) refused to send': true,
      'regulator key fingerprint': regulatorFingerprint(app),
    });
    expect(app.lab.escrowKeys()).toMatchObject({ swapped: true, regulator: { kid: app.regulator.kid, fingerprint: regulatorFingerprint(app) } });
  });

  it("the next scenario, and a reset, put the regulator's key back in the policy; the attacker keeps what it copied until the reset", async () => {
    const app = await relay();
    await run(app, 'swapped-escrow-key');
    expect(app.relay.getPolicy().escrowKid).not.toBe(app.regulator.kid);
    const { result } = await run(app, 'tap-on');
    expect(app.relay.getPolicy().escrowKid).toBe(app.regulator.kid);
    expect(app.relay.escrowOverrideKey()).toBeNull();
    expect(result.facts['opened by the regulator']).toBe(2);
    expect(app.lab.escrowKeys().swapped).toBe(false);
    await run(app, 'swapped-escrow-key');
    expect(app.lab.escrowKeys().swapped).toBe(true);
    const res = await fetch(`${app.url}/api/lab/reset`, {
      method: 'POST',
      headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
      body: '{"confirm":"reset"}',
    });
    expect(res.status).toBe(200);
    expect(app.relay.escrowOverrideKey()).toBeNull();
    expect(app.lab.attacker.view().loot).toEqual([]);
    // The tap on again after the reset: the regulator's key, not the swapped one.
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    expect(app.relay.getPolicy().escrowKid).toBe(app.regulator.kid);
  });

  it('the swapped policy reaches every client in the same validated policy frame; an unpinned client seals to it without a word, a pinned one refuses before sealing, and the person may accept it for one message', async () => {
    const app = await relay();
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    const pinned = regulatorFingerprint(app);
    const alice = await user(app.wsUrl, 'Alice');
    const bob = await user(app.wsUrl, 'Bob');
    await knows(alice, bob.m.pin);
    await knows(bob, alice.m.pin);
    alice.m.pinEscrowKey(pinned.replace(/ /g, '').toLowerCase()); // as typed: spaces and case do not matter
    expect(alice.m.pinnedEscrow).toBe(pinned);
    expect(alice.m.escrowPin()).toMatchObject({ status: 'matches' });
    // Under the regulator's key, the pinned client sends as usual.
    const ok = alice.m.sendText(bob.m.pin, 'under the real key');
    await until(() => bob.m.messages.has(ok.id), 'Bob gets the first');

    const intruder = newEscrowKeyPair();
    app.relay.setEscrowOverride({ pk: toB64(intruder.pk), kid: intruder.kid });
    await until(() => alice.m.policy?.escrowKid === intruder.kid && bob.m.policy?.escrowKid === intruder.kid, 'both have the swapped policy');
    expect(alice.events.some((e) => e.type === 'error')).toBe(false); // it passed the same parser as every policy frame

    // Unpinned Bob: sealed to the intruder, no warning.
    const bobEvents = bob.events.length;
    const quiet = bob.m.sendText(alice.m.pin, 'the intruder reads this');
    await until(() => alice.m.messages.has(quiet.id), "Alice gets Bob's");
    expect(bob.events.slice(bobEvents).some((e) => e.type === 'error')).toBe(false);
    const line = app.regulator.archived(0, 100).find((l) => l.env.id === quiet.id)!;
    expect(openArchived(line, intruder).status).toBe('opened');
    expect(openArchived(line, regulatorKey(app)).status).toBe('not-opened');

    // Pinned Alice: refused before anything is sealed or sent.
    expect(alice.m.escrowPin()).toMatchObject({ status: 'differs', announced: escrowFingerprint(intruder.pk), pinned });
    const before = alice.m.messages.size;
    const wireOut = () => alice.m.wire.filter((w) => w.direction === 'out').length;
    const outBefore = wireOut();
    let refusal: unknown;
    try {
      alice.m.sendText(bob.m.pin, 'should not leave');
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toBeInstanceOf(EscrowPinError);
    expect((refusal as EscrowPinError).announced).toBe(escrowFingerprint(intruder.pk));
    expect(alice.m.messages.size).toBe(before);
    expect(wireOut()).toBe(outBefore);
    // A group is refused the same way (nothing changes, no note goes out).
    expect(() => alice.m.createGroup('Secret', [bob.m.pin])).toThrow(EscrowPinError);
    expect(alice.m.groups.all().length).toBe(0);
    expect(wireOut()).toBe(outBefore);

    // The person chooses to send this one anyway: it goes, sealed to the announced key.
    const chosen = alice.m.sendText(bob.m.pin, 'sent knowing', { acceptEscrow: escrowFingerprint(intruder.pk) });
    await until(() => bob.m.messages.has(chosen.id), 'Bob gets the accepted one');
    const chosenLine = app.regulator.archived(0, 100).find((l) => l.env.id === chosen.id)!;
    expect(openArchived(chosenLine, intruder).status).toBe('opened');
    // Accepting one message does not accept the next.
    expect(() => alice.m.sendText(bob.m.pin, 'and another')).toThrow(EscrowPinError);
    // The swap undone: the pinned client sends again without a word.
    app.relay.setEscrowOverride(null);
    await until(() => alice.m.policy?.escrowKid === app.regulator.kid, "the regulator's key is back");
    expect(alice.m.escrowPin()).toMatchObject({ status: 'matches' });
    const back = alice.m.sendText(bob.m.pin, 'back to normal');
    await until(() => bob.m.messages.has(back.id), 'Bob gets it');
  });

  it("a policy that names the regulator's key id with another key cannot make a pinned client skip its warning, nor an unpinned one seal a field that names one key and opens with another", async () => {
    const app = await relay();
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    const alice = await user(app.wsUrl, 'Alice');
    const bob = await user(app.wsUrl, 'Bob');
    await knows(alice, bob.m.pin);
    alice.m.pinEscrowKey(regulatorFingerprint(app));
    const intruder = newEscrowKeyPair();
    // The kid is the regulator's; the key is the intruder's.
    app.relay.setEscrowOverride({ pk: toB64(intruder.pk), kid: app.regulator.kid });
    await until(() => alice.m.policy?.escrowPk === toB64(intruder.pk) && bob.m.policy?.escrowPk === toB64(intruder.pk), 'both have the lying policy');
    expect(alice.m.policy?.escrowKid).toBe(app.regulator.kid);
    expect(() => alice.m.sendText(bob.m.pin, 'no')).toThrow(EscrowPinError);
    // Bob (unpinned) seals under the key id of the key itself: the relay refuses it, visibly.
    await knows(bob, alice.m.pin);
    const sent = bob.m.sendText(alice.m.pin, 'refused, not silently mislabelled');
    await until(() => bob.m.messages.get(sent.id)?.state === 'failed', "Bob's message fails");
    expect(bob.events.some((e) => e.type === 'error' && e.code === ErrorCode.EscrowRequired)).toBe(true);
    expect(app.store.envelopeMetadata(sent.id)).toBeUndefined();
  });

  it("a participant cannot swap the key: there is no client frame or route for it without the admin token, and a pin lives only in its own tab's storage", async () => {
    const app = await relay();
    app.regulator.setTap({ tap: true, scope: 'all', pins: [], announced: true });
    const epoch = app.relay.getPolicy().epoch;
    const intruder = newEscrowKeyPair();
    const raw = await rawClient(app.wsUrl, { onCleanup: (close) => cleanups.push(close) });
    raw.send({ type: 'policy', policy: { ...app.relay.getPolicy(), escrowPk: toB64(intruder.pk), escrowKid: intruder.kid } });
    raw.send({ type: 'set-policy', escrowPk: toB64(intruder.pk) });
    const errors = () => raw.frames.filter((f) => f.type === 'error');
    await until(() => errors().length === 2, 'both frames answered');
    expect(errors().map((f) => f.type === 'error' && f.code)).toEqual([ErrorCode.BadFrame, ErrorCode.BadFrame]);
    expect(app.relay.getPolicy().epoch).toBe(epoch);
    expect(app.relay.getPolicy().escrowKid).toBe(app.regulator.kid);
    for (const [method, path] of [
      ['GET', '/api/lab/escrow'],
      ['POST', '/api/lab/escrow'],
      ['POST', '/api/lab/scenarios/swapped-escrow-key/run'],
    ] as const) {
      const res = await fetch(`${app.url}${path}`, { method, headers: { 'content-type': 'application/json' }, ...(method === 'POST' ? { body: '{}' } : {}) });
      expect(res.status, `${method} ${path}`).toBe(401);
    }
    expect(app.relay.escrowOverrideKey()).toBeNull();
    expect(app.lab.attacker.view().loot).toEqual([]);
    // With the token, the panel reads the fingerprints (and cannot set one: there is no such route).
    const keys = (await (await fetch(`${app.url}/api/lab/escrow`, { headers: { authorization: `Bearer ${app.adminToken}` } })).json()) as {
      regulator: { fingerprint: string };
      swapped: boolean;
    };
    expect(keys).toMatchObject({ regulator: { fingerprint: regulatorFingerprint(app) }, swapped: false });
    expect(
      (await fetch(`${app.url}/api/lab/escrow`, { method: 'POST', headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' }, body: '{}' })).status,
    ).toBe(404);
  });
});
