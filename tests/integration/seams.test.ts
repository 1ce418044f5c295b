/**
 * The seams the lab builds on (issue 10, item 6), each used for real: bots on an in-memory socket
 * pair, named (and hidden) observers, the in-path hook, and the sealing policy through which a bot
 * complies with the tap, omits, forges or redirects the escrow field — on the real client core,
 * against the real relay, with the real keys.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Messenger, memoryStore, type SealingPolicy } from '../../client/core/messenger.ts';
import { escrowKeyPairFromSecret, fromB64, newEscrowKeyPair } from '../../shared/crypto.ts';
import { openWithEscrow } from '../../shared/envelope.ts';
import { OpenFailure } from '../../shared/failures.ts';
import { ErrorCode, type Envelope, type TrafficEvent } from '../../shared/protocol.ts';
import { memoryPair } from '../../server/transport.ts';
import { knows, startTestRelay, until, user, type TestUser } from '../helpers/relay.ts';

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

/** A bot on client/core whose socket is an in-memory pair handed straight to the relay. */
async function memoryBot(app: TestRelay, name: string, sealing?: SealingPolicy): Promise<Messenger> {
  const m = new Messenger({
    name,
    storage: memoryStore(),
    ...(sealing ? { sealing } : {}),
    connect: () => {
      const { client, server } = memoryPair();
      app.relay.handleConnection(server, 'memory');
      return client;
    },
  });
  await m.start();
  cleanups.push(() => m.stop());
  return m;
}

async function person(app: TestRelay, name: string, sealing?: SealingPolicy): Promise<TestUser> {
  const u = await user(app.wsUrl, name, memoryStore(), sealing);
  cleanups.push(() => u.m.stop());
  return u;
}

async function tapOn(app: TestRelay): Promise<void> {
  const res = await fetch(`${app.url}/api/regulator/tap`, {
    method: 'POST',
    headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ tap: true, scope: 'all', announced: true }),
  });
  expect(res.status).toBe(200);
}

describe('the transport seam', () => {
  it('a bot on an in-memory socket pair logs in to the real relay and talks with a WebSocket client: messages, receipts and presence, no network for the bot', async () => {
    const app = await relay();
    const bot = await memoryBot(app, 'Bot');
    const alice = await person(app, 'Alice');
    await knows(alice, bot.pin);
    await until(() => bot.directory.has(alice.m.pin), 'the bot knows Alice');
    const hello = alice.m.sendText([bot.pin], 'hello, bot');
    await until(() => bot.messages.get(hello.id)?.text === 'hello, bot', 'the bot reads it');
    bot.markRead([hello.id]);
    await until(() => alice.m.messages.get(hello.id)?.state === 'read', 'Alice sees R');
    const reply = bot.sendText([alice.m.pin], 'hello, human');
    await until(() => alice.m.messages.get(reply.id)?.text === 'hello, human', 'Alice reads the reply');
    expect(app.relay.directory().find((d) => d.pin === bot.pin)?.online).toBe(true);
    bot.stop();
    await until(() => alice.m.directory.get(bot.pin)?.online === false, 'the bot goes offline when it stops');
  });
});

describe('named observers', () => {
  it("every observer attached is listed by name — the regulator's tap, the relay view, and a hidden one marked hidden — until it is detached, and a hidden one gets every envelope", async () => {
    const app = await relay();
    const names = () => app.relay.observerList().map((o) => `${o.name}${o.hidden ? ' (hidden)' : ''}`);
    expect(names()).toEqual(expect.arrayContaining(['regulator tap (lawful-intercept handover)', 'relay view (public)']));
    const copied: TrafficEvent[] = [];
    const detach = app.relay.observe('insider copy', (e) => copied.push(e), { hidden: true });
    expect(names()).toContain('insider copy (hidden)');
    expect(app.relay.observerList().find((o) => o.name === 'insider copy')?.since).toBeLessThanOrEqual(Date.now());
    const alice = await person(app, 'Alice');
    const bob = await person(app, 'Bob');
    await knows(alice, bob.m.pin);
    const sent = alice.m.sendText([bob.m.pin], 'who else is listening?');
    await until(() => copied.some((e) => e.kind === 'envelope' && e.env.id === sent.id), 'the hidden observer gets the envelope');
    detach();
    expect(names()).not.toContain('insider copy (hidden)');
  });
});

describe('the in-path hook', () => {
  it('sees each envelope before it is stored: a refusal reaches the sender as an error naming the envelope, and nothing is stored, archived or delivered', async () => {
    const app = await relay();
    const alice = await person(app, 'Alice');
    const bob = await person(app, 'Bob');
    await knows(alice, bob.m.pin);
    const seen: string[] = [];
    app.relay.setInPath((env) => {
      seen.push(env.id);
      return env.to.includes(bob.m.pin) && seen.length === 1 ? { action: 'refuse', code: ErrorCode.EscrowRequired, message: 'held in path' } : { action: 'pass' };
    });
    const first = alice.m.sendText([bob.m.pin], 'stopped in path');
    await until(() => alice.m.messages.get(first.id)?.state === 'failed', 'the sender learns it was refused');
    expect(alice.m.messages.get(first.id)?.error).toBe('held in path');
    expect(app.store.seenSender(first.id)).toBeUndefined();
    expect(app.regulator.archived().some((l) => l.env.id === first.id)).toBe(false);
    const second = alice.m.sendText([bob.m.pin], 'let through');
    await until(() => bob.m.messages.has(second.id), 'the next one passes');
    expect(seen).toEqual([first.id, second.id]);
    expect(bob.m.messages.has(first.id)).toBe(false);
  });

  it('a hook that throws, or replaces an envelope with one for other recipients, is refused as internal and never takes the relay down', async () => {
    const app = await relay();
    const alice = await person(app, 'Alice');
    const bob = await person(app, 'Bob');
    const carol = await person(app, 'Carol');
    await knows(alice, bob.m.pin, carol.m.pin);
    app.relay.setInPath(() => {
      throw new Error('hook bug');
    });
    const a = alice.m.sendText([bob.m.pin], 'into a broken hook');
    await until(() => alice.m.messages.get(a.id)?.state === 'failed', 'refused');
    const carolEnv = await new Promise<Envelope>((resolve) => {
      const off = app.relay.observe('test: catch one', (e) => {
        if (e.kind === 'envelope') {
          off();
          resolve(e.env);
        }
      });
      app.relay.setInPath(null);
      carol.m.sendText([alice.m.pin], 'an envelope to reuse');
    });
    app.relay.setInPath(() => ({ action: 'replace', env: carolEnv }));
    const b = alice.m.sendText([bob.m.pin], 'rerouted?');
    await until(() => alice.m.messages.get(b.id)?.state === 'failed', 'refused');
    expect(alice.events.filter((e) => e.type === 'message' && e.message.id === b.id && e.message.state === 'failed')).not.toHaveLength(0);
    app.relay.setInPath(null);
    const c = alice.m.sendText([bob.m.pin], 'and the relay still works');
    await until(() => bob.m.messages.has(c.id), 'delivered');
  });
});

describe('the sealing policy: bots answer the tap through the real client code', () => {
  it('under the tap a compliant client is read by the regulator; one that omits the field is refused; a forger and a redirector pass the relay and the regulator reads neither — the redirect key reads the redirected one', async () => {
    const app = await relay();
    const bob = await person(app, 'Bob');
    const elsewhere = newEscrowKeyPair(); // whoever the redirector seals to instead
    const honest = await memoryBot(app, 'Honest');
    const omitter = await memoryBot(app, 'Omitter', { escrow: 'omit' });
    const forger = await memoryBot(app, 'Forger', { escrow: 'forge' });
    const redirector = await memoryBot(app, 'Redirector', { escrow: 'redirect', to: { pk: elsewhere.pk } });
    const bots = [honest, omitter, forger, redirector];
    await knows(bob, ...bots.map((b) => b.pin));
    for (const b of bots) await until(() => b.directory.has(bob.m.pin), `${b.name} knows Bob`);
    await tapOn(app);
    await until(() => bots.every((b) => b.policy?.tap === true), 'every bot has the tap policy');
    const sent = new Map(bots.map((b) => [b.name, b.sendText([bob.m.pin], `${b.name} writes`)]));
    await until(() => bots.every((b) => b.messages.get(sent.get(b.name)!.id)?.state !== 'sending'), 'the relay answered every bot');

    // The omitter's envelope has no escrow field: the relay refuses it under the tap, and it fails.
    expect(omitter.messages.get(sent.get('Omitter')!.id)).toMatchObject({ state: 'failed' });
    // The other three reach Bob, who reads them all: the escrow field costs the sender nothing.
    for (const name of ['Honest', 'Forger', 'Redirector']) await until(() => bob.m.messages.get(sent.get(name)!.id)?.text === `${name} writes`, `Bob reads ${name}`);

    // What the escrow keys open, from the archive's bytes.
    const archived = new Map(app.regulator.archived().map((l) => [l.env.id, l]));
    expect(archived.has(sent.get('Omitter')!.id)).toBe(false);
    const key = (await (await fetch(`${app.url}/api/regulator/escrow-key`, { headers: { authorization: `Bearer ${app.adminToken}` } })).json()) as { sk: string };
    const regulator = escrowKeyPairFromSecret(fromB64(key.sk));
    const open = (name: string, k = regulator) => openWithEscrow(archived.get(sent.get(name)!.id)!.env, k);
    expect(open('Honest')).toMatchObject({ ok: true, value: { text: 'Honest writes' } });
    expect(open('Forger')).toMatchObject({ ok: false, code: OpenFailure.EscrowDoesNotOpen });
    expect(open('Redirector')).toMatchObject({ ok: false, code: OpenFailure.EscrowDoesNotOpen });
    // The redirected field names the regulator's key id, but opens for the other key.
    expect(open('Redirector', { ...elsewhere, kid: regulator.kid })).toMatchObject({ ok: true, value: { text: 'Redirector writes' } });
  });
});
