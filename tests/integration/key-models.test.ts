/**
 * BlackBerry's key models as rooms on a real relay (issue 11): the teacher chooses the room's key
 * model, every client seals under it, and what each party can read is true of the bytes — the
 * enterprise server reads every server-held key message (and the relay view shows it reading), a
 * participant who was never sent a shared-app-key message opens it from the public relay view,
 * and a demand on the operator hands over plaintext exactly where the operator holds a key.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpSqlite } from '../helpers/scan.ts';
import WebSocket from 'ws';
import { openWithAppKey } from '../../shared/envelope.ts';
import { OpenFailure } from '../../shared/failures.ts';
import { ErrorCode, keysOf, parseViewerMessage, type Envelope, type TrafficEvent } from '../../shared/protocol.ts';
import { knows, startTestRelay, until, user, type TestUser } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function room(): Promise<{ app: TestRelay; alice: TestUser; bob: TestUser; carol: TestUser; traffic: TrafficEvent[] }> {
  const app = await startTestRelay();
  cleanups.push(() => app.close());
  const traffic: TrafficEvent[] = [];
  app.relay.observe('test: traffic', (e) => traffic.push(e));
  const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => user(app.wsUrl, n)));
  for (const u of [alice!, bob!, carol!]) cleanups.push(() => u.m.stop());
  await knows(alice!, bob!.m.pin, carol!.m.pin);
  await knows(bob!, alice!.m.pin);
  return { app, alice: alice!, bob: bob!, carol: carol!, traffic };
}

const policyModel = (users: TestUser[], model: string) => until(() => users.every((u) => u.m.policy?.room.model === model), `every client is in a ${model} room`);

describe("the room's key model, chosen by the teacher", () => {
  it('server-held keys (BES): clients seal to the enterprise server, the server reads every message (the relay view shows it) and wraps the key for the recipient, who reads it; the regulator alone cannot, a demand on the operator can', async () => {
    const { app, alice, bob, carol, traffic } = await room();
    app.setRoom('server-key');
    await policyModel([alice, bob, carol], 'server-key');
    expect(alice.m.policy?.room).toMatchObject({ model: 'server-key', serverKid: app.enterprise.key.kid });
    const sent = alice.m.sendText([bob.m.pin], 'quarterly numbers, via the enterprise server');
    expect(sent.readers).toMatchObject({ serverKid: app.enterprise.key.kid });
    await until(() => bob.m.messages.get(sent.id)?.text === 'quarterly numbers, via the enterprise server', 'Bob reads it');
    const event = traffic.find((e): e is Extract<TrafficEvent, { kind: 'envelope' }> => e.kind === 'envelope' && e.env.id === sent.id)!;
    expect(event.env.keys.model).toBe('server-key');
    expect(event.env.delivery?.map((w) => w.to)).toEqual([bob.m.pin]);
    expect(event.serverRead).toEqual({ text: 'quarterly numbers, via the enterprise server', group: null });
    // Carol was not sent it and has no wrap: she cannot open it.
    expect(carol.m.messages.has(sent.id)).toBe(false);
    // The regulator's escrow key does not open it; the operator, served a demand, hands over the plaintext.
    const line = app.regulator.archived().find((l) => l.env.id === sent.id)!;
    expect(app.regulator.open(line)).toMatchObject({ status: 'not-opened', code: OpenFailure.ServerHeld });
    expect(app.enterprise.handOver(line.env)).toEqual({ status: 'plaintext', by: 'server key', text: 'quarterly numbers, via the enterprise server' });
  });

  it('the shared app key (BBM PIN messages): a participant who was never sent a message opens it from the public relay view with the key every copy of the app ships', async () => {
    const { app, alice, bob, carol } = await room();
    const frames: string[] = [];
    const viewer = new WebSocket(`${app.url.replace('http', 'ws')}/ws/relay-view`);
    viewer.on('message', (d) => frames.push(d.toString()));
    cleanups.push(() => viewer.terminate());
    app.setRoom('app-key');
    await policyModel([alice, bob, carol], 'app-key');
    const sent = alice.m.sendText([bob.m.pin], 'PIN to PIN: scrambled, not encrypted');
    await until(() => bob.m.messages.has(sent.id), 'Bob gets it');
    expect(carol.m.messages.has(sent.id)).toBe(false);
    const seen = () =>
      frames
        .map((f) => parseViewerMessage(f))
        .flatMap((p) => (p.ok ? (p.value.type === 'traffic' ? [p.value.event] : p.value.events) : []))
        .find((e): e is Extract<TrafficEvent, { kind: 'envelope' }> => e.kind === 'envelope' && e.env.id === sent.id);
    await until(() => seen() !== undefined, 'the relay view shows the envelope');
    const env: Envelope = seen()!.env;
    expect(keysOf(env).model).toBe('app-key');
    expect(openWithAppKey(env, undefined, alice.m.identity.signPk)).toMatchObject({ ok: true, value: { text: 'PIN to PIN: scrambled, not encrypted' } });
    // The regulator has the app too: its console reads it; the operator hands it over.
    const line = app.regulator.archived().find((l) => l.env.id === sent.id)!;
    expect(app.regulator.open(line)).toMatchObject({ status: 'opened', text: 'PIN to PIN: scrambled, not encrypted' });
    expect(app.enterprise.handOver(line.env)).toMatchObject({ status: 'plaintext', by: 'app key' });
  });

  it('end to end: the operator served a demand has metadata and ciphertext only, and a room change in flight makes the client seal again under the new model', async () => {
    const { app, alice, bob } = await room();
    const first = alice.m.sendText([bob.m.pin], 'end to end');
    await until(() => bob.m.messages.has(first.id), 'delivered');
    const line = app.regulator.archived().find((l) => l.env.id === first.id)!;
    expect(app.enterprise.handOver(line.env)).toMatchObject({ status: 'ciphertext only' });
    // The relay's room changes before Alice has heard of it: her e2e envelope is refused, and she seals it again.
    app.setRoom('server-key');
    const second = alice.m.sendText([bob.m.pin], 'sent as the room changed');
    await until(() => bob.m.messages.get(second.id)?.text === 'sent as the room changed', 'Bob reads the resealed message');
    expect(alice.events.some((e) => e.type === 'error' && e.code === ErrorCode.WrongModel && e.ref === second.id)).toBe(true);
    expect(alice.m.messages.get(second.id)?.readers).toMatchObject({ serverKid: app.enterprise.key.kid });
  });
});

describe('sealed sender', () => {
  it('the relay delivers a sealed-sender message and its stored records name no sender — not the metadata log, the queue, the stored box nor what it tells its observers — while the recipient still learns and verifies who wrote', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-sealed-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const app = await startTestRelay({ dataDir });
    cleanups.push(() => app.close());
    const traffic: TrafficEvent[] = [];
    app.relay.observe('test: traffic', (e) => traffic.push(e));
    const alice = await user(app.wsUrl, 'Alice');
    const bob = await user(app.wsUrl, 'Bob');
    cleanups.push(
      () => alice.m.stop(),
      () => bob.m.stop(),
    );
    await knows(alice, bob.m.pin);
    await knows(bob, alice.m.pin);
    app.setRoom('e2e', true);
    await until(() => alice.m.policy?.room.sealedSender === true, 'Alice is in a sealed-sender room');
    const sent = alice.m.sendText([bob.m.pin], 'who sent this? the relay cannot say');
    await until(() => bob.m.messages.get(sent.id)?.text === 'who sent this? the relay cannot say', 'Bob reads it');
    expect(bob.m.messages.get(sent.id)).toMatchObject({ from: alice.m.pin, state: 'received', sealedSender: true });
    await until(() => alice.m.messages.get(sent.id)?.state === 'sent', 'Alice has the ✓ (and no receipt can come back)');

    expect(traffic.filter((e) => e.kind === 'envelope' && e.env.id === sent.id)).toEqual([]);
    const sealed = traffic.find((e) => e.kind === 'sealed' && e.id === sent.id);
    expect(sealed).toMatchObject({ kind: 'sealed', to: bob.m.pin });
    expect(JSON.stringify(sealed)).not.toContain(alice.m.pin);
    const meta = app.store.envelopeMetadata(sent.id)!;
    expect(meta).toMatchObject({ sender: '', recipients: bob.m.pin });
    // The whole relay database: Alice's PIN is there (she is in the directory), never next to this message.
    const dump = dumpSqlite(join(dataDir, 'relay.db'));
    const rows = JSON.stringify(
      [...(dump.tables.metadata ?? []), ...(dump.tables.envelopes ?? []), ...(dump.tables.queue ?? [])].filter((r) => JSON.stringify(r).includes(sent.id)),
    );
    expect(rows).toContain(sent.id);
    expect(rows).not.toContain(alice.m.pin);
    expect(rows).not.toContain('who sent this');
  });

  it('under the tap a sealed box is refused (the relay could not see an escrow field inside), and a compliant client sends the message unsealed and escrowed instead', async () => {
    const { app, alice, bob } = await room();
    app.setRoom('e2e', true);
    const res = await fetch(`${app.url}/api/regulator/tap`, {
      method: 'POST',
      headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tap: true, scope: 'all', announced: true }),
    });
    expect(res.status).toBe(200);
    await until(() => alice.m.policy?.tap === true && alice.m.policy.room.sealedSender, 'Alice has both');
    const sent = alice.m.sendText([bob.m.pin], 'tapped, so not sealed');
    await until(() => bob.m.messages.has(sent.id), 'Bob reads it');
    expect(bob.m.messages.get(sent.id)?.sealedSender).toBeUndefined();
    expect(app.regulator.open(app.regulator.archived().find((l) => l.env.id === sent.id)!)).toMatchObject({ status: 'opened' });
  });

  it('sealed sender is a mode of end-to-end rooms only', async () => {
    const { app } = await room();
    expect(() => app.setRoom('server-key', true)).toThrow(/end-to-end rooms/);
    expect(app.relay.getPolicy().room.model).toBe('e2e');
  });
});
