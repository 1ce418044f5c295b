/**
 * Issue 9, findings 2, 4 and 5: what a hostile participant can do to the relay's
 * directory, its offline queues and its output, against a real relay on port 0
 * with real sockets. The directory cannot lock anyone out (bounded welcome,
 * lookup, registration limits, eviction and removal); one recipient's queue has
 * a quota (count and bytes, and a share per sender); a read receipt happens once;
 * a socket's fan-out is charged bytes × recipients. Every assertion is on what
 * the relay answers, stores or counts, never on how long something took.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady, newIdentity, type Identity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { CloseCode, ErrorCode, MAX_RECIPIENTS, type Envelope, type MessageBody, type ServerMessage } from '../../shared/protocol.ts';
import { DEFAULT_LIMITS, addressKey, type RelayLimits } from '../../server/relay.ts';
import type { RelayStore } from '../../server/store.ts';
import { memoryStore, newGroupId } from '../../client/core/messenger.ts';
import { startTestRelay, until, user } from '../helpers/relay.ts';
import { RawClient, reportFigures } from '../reliability/support.ts';

type Relay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
beforeAll(async () => {
  await cryptoReady();
});

async function relay(limits: Partial<RelayLimits> = {}): Promise<Relay> {
  const app = await startTestRelay({ limits });
  cleanup.push(() => app.close());
  return app;
}

/** Every rate budget opened wide, the directory and queue limits left as they are. */
const OPEN_RATES: Partial<RelayLimits> = {
  rateBurst: 1e9,
  ratePerSecond: 1e9,
  inputBurstBytes: 1e15,
  inputBytesPerSecond: 1e15,
  outputBurstBytes: 1e15,
  outputBytesPerSecond: 1e15,
};

async function connect(app: Relay): Promise<RawClient> {
  const c = await RawClient.connect(app.wsUrl);
  cleanup.push(() => c.close());
  return c;
}

/** A raw client logged in as `identity`. */
async function online(app: Relay, identity: Identity, name = 'Raw'): Promise<RawClient> {
  const c = await connect(app);
  await c.login(identity, name);
  return c;
}

/** Register `identity` (log in once) and go offline again. */
async function register(app: Relay, identity: Identity, name = 'Raw'): Promise<void> {
  const c = await online(app, identity, name);
  c.close();
  await until(() => !app.relay.directory(1e6).some((d) => d.pin === identity.pin && d.online), `${identity.pin} offline`);
}

/**
 * A name of 40 characters that JSON escapes to 80, the most a name can take (quotes and
 * backslashes; SQLite stores a lone surrogate as U+FFFD, one character). Against the code before
 * issue 9, 24,000 of them made every welcome over 4.2 MB, past the 4 MiB slow-consumer bound, and
 * every honest login was cut off (4004), again at every reconnect and after a restart.
 */
const ESCAPED_NAME = '"\\'.repeat(20);

/**
 * Throwaway directory entries written straight into the store, as a flood of free identities
 * would leave them (random keys: nobody will ever log in with them).
 */
function fillDirectory(store: RelayStore, n: number, lastSeen: number, name = ESCAPED_NAME): string[] {
  const pins: string[] = [];
  store.db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const pin = randomBytes(4).toString('hex').toUpperCase();
      store.upsertUser(pin, randomBytes(32).toString('base64'), name, lastSeen);
      pins.push(pin);
    }
  })();
  return pins;
}

const sealTo = (sender: Identity, to: Identity[], body: MessageBody = { text: 'hello' }, conv = to.length === 1 ? 'dm' : newGroupId()): Envelope =>
  sealEnvelope({ sender, to: to.map((r) => ({ pin: r.pin, signPk: r.signPk })), conv, body }).env;

/** Send each envelope and wait until every one is answered (accepted, or an error naming it). */
async function sendAll(c: RawClient, envs: Envelope[], ms = 20_000): Promise<{ accepted: string[]; errors: Extract<ServerMessage, { type: 'error' }>[] }> {
  const from = c.frames.length;
  const ids = new Set(envs.map((e) => e.id));
  for (const env of envs) c.send({ type: 'send', env });
  const answered = () => {
    const done = new Set<string>();
    for (const f of c.frames.slice(from)) {
      if (f.type === 'accepted' && ids.has(f.id)) done.add(f.id);
      if (f.type === 'error' && f.ref && ids.has(f.ref)) done.add(f.ref);
    }
    return done.size;
  };
  await c.waitFor(() => answered() === ids.size || c.closed !== null, `answers to ${ids.size} envelopes`, ms);
  const frames = c.frames.slice(from);
  return {
    accepted: frames.flatMap((f) => (f.type === 'accepted' && ids.has(f.id) ? [f.id] : [])),
    errors: frames.filter((f): f is Extract<ServerMessage, { type: 'error' }> => f.type === 'error' && f.ref !== undefined && ids.has(f.ref)),
  };
}

/** Log in as `identity`, take every queued envelope (acking each), and return their ids. */
async function drain(app: Relay, identity: Identity, expected: number): Promise<{ c: RawClient; ids: string[] }> {
  const c = await online(app, identity, 'Drainer');
  const envelopes = () => c.frames.filter((f): f is Extract<ServerMessage, { type: 'envelope' }> => f.type === 'envelope');
  await c.waitFor(() => envelopes().length >= expected, `${expected} envelopes`, 20_000);
  const list = envelopes();
  for (let i = 0; i < list.length; i += 1000) c.send({ type: 'ack', qids: list.slice(i, i + 1000).map((f) => f.qid) });
  return { c, ids: list.map((f) => f.env.id) };
}

// ---------------------------------------------------------------------------

describe('directory: no number of identities locks anyone out', () => {
  it('with 24,000 stored users of 40 escaped characters, an honest Messenger still logs in: its welcome is a bounded page with the total, and it opens an envelope from a sender beyond the page by lookup', async () => {
    const app = await relay({ maxUsers: 50_000 });
    const storage = memoryStore();
    // Honest registers, then goes away; Far, whom Honest has never seen, writes to it meanwhile.
    const honest = await user(app.wsUrl, 'Honest', storage);
    honest.m.stop();
    const far = newIdentity();
    const farClient = await online(app, far, 'Far');
    const env = sealTo(far, [honest.m.identity], { text: 'from beyond the page' });
    farClient.send({ type: 'send', env });
    await farClient.next('accepted');
    farClient.close();
    await until(() => app.relay.onlineCount() === 0, 'everyone offline');

    // Then 24,000 throwaway identities, all seen after Far, and all of them senders more recent than
    // Far (offline users are ordered by their last envelope sent): Far is beyond the page.
    fillDirectory(app.store, 24_000, Date.now() + 1000);
    app.store.db.prepare('UPDATE users SET last_sent = ? WHERE pin NOT IN (?, ?)').run(Date.now() + 1000, far.pin, honest.m.pin);
    const total = app.store.userCount();
    const wholeDirectory = JSON.stringify(app.store.allUsers().map((u) => ({ pin: u.pin, name: u.name, pk: u.pk, online: false }))).length;

    // Honest comes back: the welcome must arrive, and the envelope from Far must open.
    const back = await user(app.wsUrl, 'Honest', storage);
    cleanup.push(() => back.m.stop());
    await until(() => back.m.messages.get(env.id)?.state === 'received', 'the envelope from Far opened');
    expect(back.m.messages.get(env.id)?.text).toBe('from beyond the page');
    expect(back.m.directory.get(far.pin)?.name).toBe('Far');

    // A brand-new identity logs in too, and a raw client sees the welcome's shape.
    const fresh = await connect(app);
    const rawWelcome: string[] = [];
    fresh.ws.on('message', (d) => {
      const s = d.toString();
      if (s.startsWith('{"type":"welcome"')) rawWelcome.push(s);
    });
    const welcome = await fresh.login(newIdentity(), 'Fresh');
    expect(welcome.total).toBe(total + 1);
    expect(welcome.directory.length).toBe(DEFAULT_LIMITS.welcomeDirectory);
    expect(welcome.directory.slice(0, 2).map((d) => d.online)).toEqual([true, true]); // online first: Honest and Fresh
    expect(welcome.directory.some((d) => d.pin === far.pin)).toBe(false);
    const welcomeBytes = rawWelcome[0]?.length ?? Infinity;
    expect(welcomeBytes).toBeLessThan(200_000);
    expect(app.relay.stats.maxWelcomeBytes).toBeLessThan(200_000);

    // lookup finds Far beyond the page, and names a PIN nobody has.
    const from = fresh.frames.length;
    fresh.send({ type: 'lookup', pins: [far.pin, '0BADF00D'] });
    const users = await fresh.next('users', from);
    expect(users.users).toEqual([{ pin: far.pin, name: 'Far', pk: expect.any(String), online: false }]);
    expect(users.unknown).toEqual(['0BADF00D']);

    // The entries Honest has seen are kept in its storage: after a restart Far is still a contact it can write to.
    back.m.stop();
    const again = await user(app.wsUrl, 'Honest', storage);
    cleanup.push(() => again.m.stop());
    expect(again.m.directory.has(far.pin)).toBe(true);
    const reply = again.m.sendText([far.pin], 'got it');
    await until(() => again.m.messages.get(reply.id)?.state === 'sent', 'the reply to Far accepted');

    reportFigures('directory lockout', {
      'users in the directory': total,
      name: `40 characters, ${JSON.stringify(ESCAPED_NAME).length - 2} as JSON`,
      'the whole directory as JSON (what every welcome carried before)': wholeDirectory,
      'slow-consumer bound': DEFAULT_LIMITS.maxBufferedBytes,
      'welcome entries / bytes now': `${welcome.directory.length} / ${welcomeBytes}`,
      'honest login': 'completes; envelope from beyond the page opened by lookup',
    });
    expect(wholeDirectory).toBeGreaterThan(DEFAULT_LIMITS.maxBufferedBytes); // what locked everyone out before
  }, 60_000);

  it('a name the protocol now refuses, stored under older rules, is sent as the PIN so that the welcome still parses', async () => {
    const app = await relay();
    const [pin] = fillDirectory(app.store, 1, Date.now(), 'bell\u0007');
    const c = await connect(app);
    const welcome = await c.login(newIdentity(), 'Newcomer');
    expect(c.unparsed).toEqual([]);
    expect(welcome.directory.find((d) => d.pin === pin)?.name).toBe(pin);
  });

  it('registrations are limited per address: the 301st new identity from one address within the hour gets registration_limited and close 4001, while identities already registered there still log in', async () => {
    const app = await relay();
    const limit = DEFAULT_LIMITS.registrationsPerAddress;
    const first = newIdentity();
    await register(app, first);
    for (let i = 1; i < limit; i++) {
      const c = await connect(app);
      await c.login(newIdentity(), `Tab ${i}`);
      c.close();
    }
    expect(app.store.userCount()).toBe(limit);

    const refused = await connect(app);
    refused.send(refused.hello(newIdentity(), 'One too many'));
    const closed = await refused.waitClosed();
    const error = refused.frames.find((f) => f.type === 'error');
    expect(error).toMatchObject({ code: ErrorCode.RegistrationLimited });
    expect(error?.type === 'error' && error.message).toMatch(/at most 300 per 60 minutes/);
    expect(closed.code).toBe(CloseCode.LoginFailed);
    expect(refused.frames.some((f) => f.type === 'welcome')).toBe(false);
    expect(app.store.userCount()).toBe(limit);

    const returning = await connect(app);
    const welcome = await returning.login(first, 'Still me');
    expect(welcome.pin).toBe(first.pin);
    expect(app.relay.stats.registrationsLimited).toBe(1);
  }, 60_000);

  it('registrations count by IPv4 address (also IPv4-mapped) and by the /64 of an IPv6 address', () => {
    expect(addressKey('127.0.0.1')).toBe('127.0.0.1');
    expect(addressKey('::ffff:10.0.0.7')).toBe('10.0.0.7');
    expect(addressKey('2001:db8:1:2:aaaa:bbbb:cccc:1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2::9')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });

  it('a full directory evicts the stalest offline entries with nothing queued to make room, never one with queued items, and refuses a newcomer with directory_full (close 4001) once none is left, while a registered user still logs in', async () => {
    const maxUsers = 20;
    const app = await relay({ maxUsers });
    const now = Date.now();
    // Alice wrote to Bob while he was offline: both are kept, however old (Bob needs Alice's key to open it).
    const alice = newIdentity();
    const bob = newIdentity();
    await register(app, bob, 'Bob');
    const a = await online(app, alice, 'Alice');
    a.send({ type: 'send', env: sealTo(alice, [bob]) });
    await a.next('accepted');
    a.close();
    await until(() => app.relay.onlineCount() === 0, 'everyone offline');
    app.store.touchUser(alice.pin, now - 3 * 3600_000);
    app.store.touchUser(bob.pin, now - 3 * 3600_000);
    const stale = fillDirectory(app.store, 10, now - 3600_000, 'Stale');
    fillDirectory(app.store, 8, now, 'Recent');
    expect(app.store.userCount()).toBe(maxUsers);

    for (let i = 0; i < 10; i++) {
      const c = await connect(app);
      await c.login(newIdentity(), `Newcomer ${i}`);
      c.close();
    }
    expect(app.relay.stats.evictions).toBe(10);
    expect(stale.filter((pin) => app.store.getUser(pin))).toEqual([]);
    expect(app.store.getUser(alice.pin)).toBeDefined();
    expect(app.store.getUser(bob.pin)).toBeDefined();
    expect(app.store.userCount()).toBe(maxUsers);

    const refused = await connect(app);
    refused.send(refused.hello(newIdentity(), 'No room'));
    const closed = await refused.waitClosed();
    expect(refused.frames.find((f) => f.type === 'error')).toMatchObject({ code: ErrorCode.DirectoryFull });
    expect(closed.code).toBe(CloseCode.LoginFailed);

    // Bob, registered, still logs in, and gets what Alice sent.
    const b = await connect(app);
    await b.login(bob, 'Bob');
    await b.next('envelope');
    expect(app.store.userCount()).toBe(maxUsers);
  }, 30_000);

  it('removeUser takes a user and its queue out of the directory and disconnects it with 4007; forgetOffline forgets every offline user and keeps the online ones', async () => {
    const app = await relay();
    const [alice, bob, carol, dave] = [newIdentity(), newIdentity(), newIdentity(), newIdentity()];
    await register(app, bob, 'Bob');
    await register(app, carol, 'Carol');
    const a = await online(app, alice, 'Alice');
    const d = await online(app, dave, 'Dave');
    a.send({ type: 'send', env: sealTo(alice, [bob]) });
    await a.next('accepted');
    expect(app.store.queueDepth()).toBe(1);

    expect(app.relay.removeUser(alice.pin)).toBe(true);
    const closed = await a.waitClosed();
    expect(closed).toEqual({ code: CloseCode.Removed, reason: 'removed from the directory' });
    expect(app.store.getUser(alice.pin)).toBeUndefined();
    expect(app.store.queueDepth()).toBe(0); // Alice's envelope to Bob went with her: nobody could check it now
    expect(app.relay.removeUser(alice.pin)).toBe(false);

    expect(app.relay.forgetOffline()).toBe(2); // Bob and Carol
    expect(app.store.userCount()).toBe(1);
    const from = d.frames.length;
    d.send({ type: 'lookup', pins: [alice.pin, bob.pin, carol.pin, dave.pin] });
    const users = await d.next('users', from);
    expect(users.users.map((u) => u.pin)).toEqual([dave.pin]);
    expect(users.unknown.sort()).toEqual([alice.pin, bob.pin, carol.pin].sort());
    expect(app.relay.onlineCount()).toBe(1);
  });
});

// ---------------------------------------------------------------------------

describe("queue quota: one participant cannot fill another's queue", () => {
  it("one sender's share of an offline recipient's queue is 250 envelopes: the 251st gets queue_full naming the recipient with ref, and the recipient later receives all 250, none lost", async () => {
    const app = await relay(OPEN_RATES);
    const bob = newIdentity();
    await register(app, bob, 'Bob');
    const malloryId = newIdentity();
    const mallory = await online(app, malloryId, 'Mallory');
    const envs = Array.from({ length: DEFAULT_LIMITS.queuePairEnvelopes + 1 }, (_, i) => sealTo(malloryId, [bob], { text: `spam ${i}` }));
    const result = await sendAll(mallory, envs);
    expect(result.accepted.length).toBe(DEFAULT_LIMITS.queuePairEnvelopes);
    const refusedId = envs[envs.length - 1]!.id;
    expect(result.errors).toEqual([{ type: 'error', code: ErrorCode.QueueFull, message: expect.stringContaining(bob.pin), ref: refusedId }]);
    expect(app.store.seenSender(refusedId)).toBeUndefined();
    expect(app.relay.stats.queueFull).toBe(1);

    const { ids } = await drain(app, bob, DEFAULT_LIMITS.queuePairEnvelopes);
    expect(new Set(ids)).toEqual(new Set(result.accepted));
    // Once Bob has read them, Mallory's share is free again.
    await until(() => app.store.queueLoad(bob.pin).envelopes === 0, 'Bob acked everything');
    const retry = await sendAll(mallory, [sealTo(malloryId, [bob], { text: 'again' })]);
    expect(retry.accepted.length).toBe(1);
  }, 30_000);

  it("a recipient's whole queue is bounded in count and in bytes whoever sends, and a group envelope with one full recipient is accepted for no one", async () => {
    const app = await relay({ ...OPEN_RATES, queueMaxEnvelopes: 10, queuePairEnvelopes: 4 });
    const [bob, carol] = [newIdentity(), newIdentity()];
    await register(app, bob, 'Bob');
    await register(app, carol, 'Carol');
    const senders = [newIdentity(), newIdentity(), newIdentity()];
    const clients = await Promise.all(senders.map((s, i) => online(app, s, `Sender ${i}`)));
    const accepted: string[] = [];
    for (const [i, c] of clients.entries()) {
      const r = await sendAll(
        c,
        Array.from({ length: 4 }, (_, k) => sealTo(senders[i]!, [bob], { text: `${i}.${k}` })),
      );
      accepted.push(...r.accepted);
      if (i < 2) expect(r.errors).toEqual([]);
      else expect(r.errors.map((e) => e.code)).toEqual([ErrorCode.QueueFull, ErrorCode.QueueFull]);
    }
    expect(accepted.length).toBe(10);
    expect(app.store.queueLoad(bob.pin).envelopes).toBe(10);

    // A group envelope to Bob (full) and Carol (empty): all or nothing.
    const group = sealTo(senders[0]!, [bob, carol]);
    const r = await sendAll(clients[0]!, [group]);
    expect(r.errors[0]).toMatchObject({ code: ErrorCode.QueueFull, ref: group.id });
    expect(r.errors[0]?.message).toContain(bob.pin);
    expect(app.store.queueLoad(carol.pin).envelopes).toBe(0);

    // Bytes: a 20 KB cap takes two 8 KB envelopes, not three.
    const small = await relay({ ...OPEN_RATES, queueMaxBytes: 20_000 });
    const dan = newIdentity();
    await register(small, dan, 'Dan');
    const eve = newIdentity();
    const e = await online(small, eve, 'Eve');
    const big = Array.from({ length: 3 }, (_, k) => sealTo(eve, [dan], { text: `${k}${'b'.repeat(5800)}` }));
    const rb = await sendAll(e, big);
    expect(rb.accepted.length).toBe(2);
    expect(rb.errors.map((x) => x.code)).toEqual([ErrorCode.QueueFull]);
    expect(small.store.queueLoad(dan.pin).envelopeBytes).toBeLessThanOrEqual(20_000);

    const { ids } = await drain(app, bob, 10);
    expect(new Set(ids)).toEqual(new Set(accepted));
  }, 30_000);
});

// ---------------------------------------------------------------------------

describe('read receipts', () => {
  it('a read receipt happens once per message and reader: the same read sent 50 times leaves one receipt for the sender, which replaces the delivered receipt still waiting', async () => {
    const app = await relay(OPEN_RATES);
    const [alice, bob] = [newIdentity(), newIdentity()];
    await register(app, bob, 'Bob');
    const a = await online(app, alice, 'Alice');
    const env = sealTo(alice, [bob]);
    a.send({ type: 'send', env });
    await a.next('accepted');
    a.close();
    await until(() => app.relay.onlineCount() === 0, 'Alice offline');

    const b = await online(app, bob, 'Bob');
    const delivered = await b.next('envelope');
    b.send({ type: 'ack', qids: [delivered.qid] });
    await until(() => app.store.queueLoad(alice.pin).receipts === 1, 'the delivered receipt queued for Alice');
    for (let i = 0; i < 50; i++) b.send({ type: 'read', to: alice.pin, ids: [env.id, env.id] });
    const t = Math.random();
    b.send({ type: 'ping', t });
    await b.waitFor(() => b.frames.some((f) => f.type === 'pong' && f.t === t), 'the pong after the reads');
    expect(b.frames.filter((f) => f.type === 'error')).toEqual([]);
    expect(app.relay.stats.repeatedReads).toBe(49);
    expect(app.store.queueLoad(alice.pin).receipts).toBe(1);

    const back = await online(app, alice, 'Alice');
    await back.next('receipt');
    const t2 = Math.random();
    back.send({ type: 'ping', t: t2 });
    await back.waitFor(() => back.frames.some((f) => f.type === 'pong' && f.t === t2), 'the pong');
    const receipts = back.frames.filter((f) => f.type === 'receipt');
    expect(receipts).toEqual([expect.objectContaining({ id: env.id, by: bob.pin, state: 'read' })]);
  });

  it('receipts waiting for one user are bounded: beyond queueMaxReceipts a receipt is not queued, and the messages themselves are all delivered', async () => {
    const app = await relay({ ...OPEN_RATES, queueMaxReceipts: 3 });
    const [alice, bob] = [newIdentity(), newIdentity()];
    await register(app, bob, 'Bob');
    const a = await online(app, alice, 'Alice');
    const envs = Array.from({ length: 5 }, (_, i) => sealTo(alice, [bob], { text: `m${i}` }));
    expect((await sendAll(a, envs)).accepted.length).toBe(5);
    a.close();
    await until(() => app.relay.onlineCount() === 0, 'Alice offline');
    const { ids } = await drain(app, bob, 5);
    expect(ids.length).toBe(5);
    await until(() => app.relay.stats.receiptsDropped === 2, 'two receipts not queued');
    expect(app.store.queueLoad(alice.pin).receipts).toBe(3);
  });
});

// ---------------------------------------------------------------------------

describe('fan-out: a socket is charged bytes × recipients', () => {
  /** 63 recipients, registered and offline (the output is charged whether they are online or not). */
  async function recipients(app: Relay): Promise<Identity[]> {
    const ids = Array.from({ length: MAX_RECIPIENTS }, () => newIdentity());
    for (const id of ids) await register(app, id, 'Member');
    return ids;
  }

  it('sending 16 KB envelopes to 63 recipients as fast as it can, a socket gets rate_limited with the envelope id and a retry time once past its output burst, and what the relay accepted from it stays within burst + rate × elapsed', async () => {
    // The default burst; a slow refill, so the outcome does not depend on how fast this machine is.
    const perSecond = 64 * 1024;
    const app = await relay({ outputBytesPerSecond: perSecond });
    const members = await recipients(app);
    const sender = newIdentity();
    const t0 = performance.now();
    const c = await online(app, sender, 'Fanout');
    const envs = Array.from({ length: 8 }, (_, i) => sealTo(sender, members, { text: `${i}${'x'.repeat(11_000)}`, group: 'Flood' }));
    const cost = JSON.stringify(envs[0]).length * members.length;
    const result = await sendAll(c, envs);
    const elapsed = (performance.now() - t0) / 1000;
    const budget = DEFAULT_LIMITS.outputBurstBytes + perSecond * elapsed;
    reportFigures('fan-out budget (integration)', {
      'envelope bytes × recipients': `${JSON.stringify(envs[0]).length} × ${members.length} = ${cost}`,
      'output burst / refill in this test': `${DEFAULT_LIMITS.outputBurstBytes} / ${perSecond} B/s`,
      'sent / accepted / rate_limited': `${envs.length} / ${result.accepted.length} / ${result.errors.length}`,
      'output charged by the relay': app.relay.stats.outputCharged,
      'budget (burst + rate × elapsed)': Math.round(budget),
    });
    expect(result.accepted.length).toBeGreaterThanOrEqual(Math.floor(DEFAULT_LIMITS.outputBurstBytes / cost));
    expect(result.errors.length).toBeGreaterThan(0);
    for (const e of result.errors) {
      expect(e.code).toBe(ErrorCode.RateLimited);
      expect(envs.some((env) => env.id === e.ref)).toBe(true);
      expect(e.retryAfterMs).toBeGreaterThan(0);
    }
    expect(app.relay.stats.outputLimited).toBe(result.errors.length);
    expect(app.relay.stats.outputCharged).toBe(result.accepted.length * cost);
    expect(app.relay.stats.outputCharged).toBeLessThanOrEqual(budget);
    expect(c.closed).toBeNull();
  }, 60_000);

  it('an honest 4,000-character group message with group state in its body (about 25 KB) goes to 63 recipients at once, twice in a row, at the default limits', async () => {
    const app = await relay();
    const members = await recipients(app);
    const sender = newIdentity();
    const c = await online(app, sender, 'Teacher');
    // 4,000 three-byte characters, and 2 KB standing in for the group's signed state.
    const body = { text: '€'.repeat(4000), group: 'Whole class', state: 's'.repeat(2000) } as unknown as MessageBody;
    const envs = [sealTo(sender, members, body), sealTo(sender, members, body)];
    const frameBytes = JSON.stringify({ type: 'send', env: envs[0] }).length;
    const result = await sendAll(c, envs);
    reportFigures('honest group message', { 'frame bytes': frameBytes, recipients: members.length, 'accepted at once': result.accepted.length });
    expect(frameBytes).toBeGreaterThan(20_000);
    expect(result.errors).toEqual([]);
    expect(result.accepted.length).toBe(2);
  }, 60_000);
});
