/**
 * `npm run decrypt`, run as a child process the way a student (or an attacker)
 * would, on an archive and an escrow key exported over HTTP from a live relay.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import sodium from 'libsodium-wrappers';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { newEscrowKeyPair, newIdentity, signLogin, toB64, toHex } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { PROTOCOL_VERSION, parseServerMessage, type Envelope, type Policy, type ServerMessage } from '../../shared/protocol.ts';
import type { EscrowKeyFile } from '../../server/regulator.ts';
import type { ChatMessage } from '../../client/core/messenger.ts';
import { startTestRelay, until, user, type TestUser } from '../helpers/relay.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'test-admin-token';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `tsx server/decrypt-cli.ts ...args` in the repository, as `npm run decrypt -- ...args` runs it. */
function decrypt(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(root, 'node_modules/.bin/tsx'), ['server/decrypt-cli.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface JsonReport {
  kid: string;
  envelopes: number;
  opened: number;
  endToEnd: number;
  notOpened: number;
  badLines: number;
  items: { line: number; id: string; from: string; to: string[]; status: string; text?: string; group?: string; reason?: string }[];
  errors: { line: number; reason: string }[];
  summary: string;
}

/** A raw client that sends one hand-made envelope: here, one with a forged escrow field. */
async function sendRaw(wsUrl: string, build: (me: ReturnType<typeof newIdentity>) => Envelope): Promise<Envelope> {
  const me = newIdentity();
  const ws = new WebSocket(wsUrl);
  const frames: ServerMessage[] = [];
  ws.on('message', (d) => {
    const p = parseServerMessage(d.toString());
    if (p.ok) frames.push(p.value);
  });
  await until(() => frames.some((f) => f.type === 'challenge'), 'challenge');
  const challenge = frames.find((f) => f.type === 'challenge') as Extract<ServerMessage, { type: 'challenge' }>;
  ws.send(JSON.stringify({ type: 'hello', v: PROTOCOL_VERSION, pk: toB64(me.signPk), name: 'Forger', sig: signLogin(challenge.nonce, me) }));
  await until(() => frames.some((f) => f.type === 'welcome'), 'welcome');
  const env = build(me);
  ws.send(JSON.stringify({ type: 'send', env }));
  await until(() => frames.some((f) => (f.type === 'accepted' && f.id === env.id) || f.type === 'error'), 'an answer');
  expect(frames.find((f) => f.type === 'error')).toBeUndefined();
  ws.close();
  return env;
}

describe.concurrent('npm run decrypt on an archive exported from a live relay', () => {
  let dir: string;
  let archiveFile: string;
  let keyFile: string;
  let rawKeyFile: string;
  let keyJson: EscrowKeyFile;
  /** What was sent, by envelope id: the text and whether the escrow key must open it. */
  const sent = new Map<string, { text: string; opens: boolean; escrow: boolean; from: string; to: string[]; group?: string }>();
  /** Display names by PIN, as the relay knew them: the decrypt command names people, not PINs alone. */
  const names = new Map<string, string>();
  const person = (pin: string) => (names.has(pin) ? `${names.get(pin)} (${pin})` : pin);
  const expected = () => {
    const list = [...sent.values()];
    return { m: list.length, n: list.filter((s) => s.opens).length, k: list.filter((s) => !s.escrow).length, j: list.filter((s) => s.escrow && !s.opens).length };
  };
  const summaryOf = (n: number, m: number, k: number, j: number) =>
    `opened ${n} of ${m} envelopes; ${k} without an escrow field (end-to-end); ${j} with a field that did not open (forged or another key)`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-cli-'));
    const app = await startTestRelay();
    const users: TestUser[] = [];
    try {
      const alice = await user(app.wsUrl, 'Alice');
      const bob = await user(app.wsUrl, 'Bob');
      const carol = await user(app.wsUrl, 'Carol');
      users.push(alice, bob, carol);
      for (const u of users) names.set(u.m.pin, u.m.name);
      await until(() => users.every((u) => users.every((v) => u.m.directory.has(v.m.pin))), 'everyone knows everyone');
      const send = async (from: TestUser, to: TestUser[], text: string, opens: boolean, group?: string) => {
        let msg: ChatMessage;
        if (group !== undefined) {
          // The group note that announces its signed member list is an envelope of its own.
          const made = from.m.createGroup(
            group,
            to.map((u) => u.m.pin),
          );
          for (const u of to) await until(() => u.m.messages.has(made.message.id), `${u.m.name} gets the group note`);
          const members = [from, ...to].map((u) => u.m.pin).sort();
          sent.set(made.message.id, { text: `[group created: "${group}", members ${members.join(', ')}]`, opens, escrow: opens, from: from.m.pin, to: made.message.to, group });
          msg = from.m.sendGroup(made.id, text);
        } else {
          msg = from.m.sendText(
            to.map((u) => u.m.pin),
            text,
          );
        }
        for (const u of to) await until(() => u.m.messages.get(msg.id)?.text === text, `${u.m.name} reads "${text}"`);
        sent.set(msg.id, { text, opens, escrow: opens, from: from.m.pin, to: msg.to, ...(group !== undefined ? { group } : {}) });
      };
      const tap = async (body: unknown) => {
        const res = await fetch(`${app.url}/api/regulator/tap`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        expect(res.status).toBe(200);
        const { policy } = (await res.json()) as { policy: Policy };
        await until(() => users.every((u) => u.m.policy?.epoch === policy.epoch), 'policy reached every client');
        return policy;
      };

      await send(alice, [bob], 'cli: end-to-end, the regulator never sees this', false);
      await send(bob, [alice], 'cli: end-to-end reply', false);
      const policy = await tap({ tap: true, scope: 'all', announced: true });
      await send(alice, [bob], 'cli: escrowed, opened offline', true);
      await send(bob, [alice], 'cli: "quoted", ünïcödé\nand a second line \u001b[31mred?', true);
      await send(carol, [alice, bob], 'cli: a group under the tap', true, 'Tapped group');
      // A sender who puts 80 random bytes in the escrow field under the right key id.
      const forged = await sendRaw(
        app.wsUrl,
        (me) =>
          sealEnvelope({
            sender: me,
            to: [{ pin: bob.m.pin, signPk: bob.m.identity.signPk }],
            conv: 'dm',
            body: { text: 'cli: forged escrow field' },
            plan: { model: 'e2e-escrow', forged: { kid: policy.escrowKid! } },
          }).env,
      );
      sent.set(forged.id, { text: 'cli: forged escrow field', opens: false, escrow: true, from: forged.from, to: forged.to });
      names.set(forged.from, 'Forger');
      await tap({ tap: false });
      await send(carol, [bob], 'cli: after the tap, end-to-end again', false);

      const auth = { headers: { authorization: `Bearer ${TOKEN}` } };
      archiveFile = join(dir, 'archive.jsonl');
      writeFileSync(archiveFile, await (await fetch(`${app.url}/api/regulator/archive.jsonl`, auth)).text());
      keyJson = (await (await fetch(`${app.url}/api/regulator/escrow-key`, auth)).json()) as EscrowKeyFile;
      keyFile = join(dir, 'escrow-key.json');
      writeFileSync(keyFile, JSON.stringify(keyJson));
      rawKeyFile = join(dir, 'escrow-key.b64');
      writeFileSync(rawKeyFile, `${keyJson.sk}\n`);
    } finally {
      for (const u of users) u.m.stop();
      await app.close();
    }
    expect(readFileSync(archiveFile, 'utf8').trim().split('\n')).toHaveLength(sent.size);
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('opens with the exported key exactly the escrowed messages, prints their texts and routes, and counts the rest', async () => {
    const run = await decrypt('--archive', archiveFile, '--key', keyFile);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const { m, n, k, j } = expected();
    expect([m, n, k, j]).toEqual([8, 4, 3, 1]);
    expect(run.stdout).toContain(summaryOf(n, m, k, j));
    for (const [id, s] of sent) {
      if (s.opens) {
        // Printed as a quoted literal, so control characters in a message cannot reach the terminal raw.
        expect(run.stdout).toContain(`${person(s.from)} -> ${s.to.map(person).join(', ')}${s.group ? ` [group ${JSON.stringify(s.group)}]` : ''}: ${JSON.stringify(s.text)}`);
      } else {
        expect(run.stdout).not.toContain(s.text);
        const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        expect(run.stdout).toMatch(
          new RegExp(`CLOSED +${id} +${esc(person(s.from))} -> ${esc(s.to.map(person).join(', '))}: .*\\((${s.escrow ? 'escrow_does_not_open' : 'no_escrow_field'})\\)`),
        );
      }
    }
    expect(run.stdout).not.toContain('\u001b');
    expect(run.stdout).not.toContain(keyJson.sk);
  });

  it('--json reports every envelope with its status and the exact texts that were sent', async () => {
    const run = await decrypt('--json', '--archive', archiveFile, '--key', keyFile);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as JsonReport;
    const { m, n, k, j } = expected();
    expect(report).toMatchObject({ kid: keyJson.kid, envelopes: m, opened: n, endToEnd: k, notOpened: j, badLines: 0, errors: [], summary: summaryOf(n, m, k, j) });
    expect(report.items.map((i) => i.id)).toEqual([...sent.keys()]);
    for (const item of report.items) {
      const s = sent.get(item.id)!;
      expect(item.status).toBe(s.opens ? 'opened' : s.escrow ? 'not-opened' : 'end-to-end');
      expect(item.text).toBe(s.opens ? s.text : undefined);
      expect(item.group).toBe(s.opens ? s.group : undefined);
      expect([item.from, item.to]).toEqual([s.from, s.to]);
    }
  });

  it('a raw base64 secret key file opens the same messages as the exported key file', async () => {
    const [fromJson, fromRaw] = await Promise.all([
      decrypt('--json', '--archive', archiveFile, '--key', keyFile),
      decrypt('--json', '--archive', archiveFile, '--key', rawKeyFile),
    ]);
    expect(fromRaw.code).toBe(0);
    const a = JSON.parse(fromJson.stdout) as JsonReport;
    const b = JSON.parse(fromRaw.stdout) as JsonReport;
    expect(b.opened).toBe(expected().n);
    expect({ ...b, archive: null }).toEqual({ ...a, archive: null });
  });

  it("another regulator's key opens nothing: every escrowed envelope counts as a field that did not open", async () => {
    const other = newEscrowKeyPair();
    const file = join(dir, 'other-key.hex');
    writeFileSync(file, toHex(other.sk));
    const run = await decrypt('--archive', archiveFile, '--key', file);
    expect(run.code).toBe(0);
    const { m, k } = expected();
    expect(run.stdout).toContain(summaryOf(0, m, k, m - k));
    expect(run.stdout).toContain('Its escrow field is sealed to another escrow key. (escrow_kid_unknown)');
    for (const s of sent.values()) expect(run.stdout).not.toContain(s.text);
  });

  it('an archive written under protocol version 1 (before the key model was in the envelope) still opens with the decrypt command', async () => {
    const v1 = JSON.parse(readFileSync(join(root, 'tests/fixtures/worked-example-v1.json'), 'utf8')) as {
      inputs: { escrowSkHex: string; body: { text: string } };
      derived: { alice: { signPkB64: string; pin: string }; bob: { pin: string } };
      expected: { envelope: unknown };
    };
    const file = join(dir, 'archive-v1.jsonl');
    writeFileSync(file, `${JSON.stringify({ seq: 1, at: 1700000000001, senderPk: v1.derived.alice.signPkB64, env: v1.expected.envelope })}\n`);
    const keyHex = join(dir, 'escrow-v1.hex');
    writeFileSync(keyHex, v1.inputs.escrowSkHex);
    const run = await decrypt('--archive', file, '--key', keyHex);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`${v1.derived.alice.pin} -> ${v1.derived.bob.pin}: ${JSON.stringify(v1.inputs.body.text)}`);
    expect(run.stdout).toContain(summaryOf(1, 1, 0, 0));
  });

  it('a missing archive or key file exits 2 with a message naming the file', async () => {
    const missing = join(dir, 'no-such-archive.jsonl');
    const [noArchive, noKey, noFlag] = await Promise.all([
      decrypt('--archive', missing, '--key', keyFile),
      decrypt('--archive', archiveFile, '--key', join(dir, 'no-such-key.json')),
      decrypt('--archive', archiveFile),
    ]);
    expect(noArchive.code).toBe(2);
    expect(noArchive.stderr).toContain(`cannot read archive ${missing}: no such file`);
    expect(noArchive.stdout).toBe('');
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain(`cannot read key file ${join(dir, 'no-such-key.json')}: no such file`);
    expect(noFlag.code).toBe(2);
    expect(noFlag.stderr).toContain('--key FILE is required');
  });

  it('a key file in the wrong format exits 2 with a clear message and echoes no key material', async () => {
    const short = join(dir, 'short.b64');
    writeFileSync(short, toB64(sodium.randombytes_buf(16)));
    const lying = join(dir, 'lying.json');
    writeFileSync(lying, JSON.stringify({ ...keyJson, kid: '0000000000000000' }));
    const garbage = join(dir, 'garbage.txt');
    writeFileSync(garbage, 'this is not a key at all');
    const runs = await Promise.all([
      decrypt('--archive', archiveFile, '--key', short),
      decrypt('--archive', archiveFile, '--key', lying),
      decrypt('--archive', archiveFile, '--key', garbage),
    ]);
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).not.toContain(keyJson.sk);
    }
    expect(runs[0]!.stderr).toContain('16 bytes, not 32');
    expect(runs[1]!.stderr).toContain('inconsistent');
    expect(runs[2]!.stderr).toContain('wrong key format');
  });

  it('a corrupted line is reported by its number and the rest are still opened', async () => {
    const lines = readFileSync(archiveFile, 'utf8').trim().split('\n');
    const ids = [...sent.keys()];
    // Line 3 (an escrowed message) cut in half; line 5 valid JSON but not an envelope; a blank line in between.
    expect(sent.get(ids[2]!)?.opens).toBe(true);
    const damaged = [...lines];
    damaged[2] = lines[2]!.slice(0, 60);
    damaged[4] = JSON.stringify({ ...JSON.parse(lines[4]!), env: { ...JSON.parse(lines[4]!).env, body: 'not base64!' } });
    const file = join(dir, 'damaged.jsonl');
    writeFileSync(file, `${damaged.slice(0, 5).join('\n')}\n\n${damaged.slice(5).join('\n')}\n`);

    const run = await decrypt('--archive', file, '--key', keyFile);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`2 unreadable lines in ${file} (line 3, 5)`);
    expect(run.stdout).toContain('UNREADABLE  line 3: not valid JSON');
    expect(run.stdout).toMatch(/UNREADABLE {2}line 5: not an archive line: env\.body/);
    // In file order: line 3 is reported between the envelopes of lines 2 and 4.
    const order = run.stdout
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((w) => w === 'OPENED' || w === 'CLOSED' || w === 'UNREADABLE');
    expect(order).toHaveLength(sent.size);
    expect([order[2], order[4]]).toEqual(['UNREADABLE', 'UNREADABLE']);
    const intact = ids.filter((_, i) => i !== 2 && i !== 4).map((id) => sent.get(id)!);
    const n = intact.filter((s) => s.opens).length;
    const k = intact.filter((s) => !s.escrow).length;
    const j = intact.filter((s) => s.escrow && !s.opens).length;
    expect(run.stdout).toContain(`${summaryOf(n, intact.length, k, j)}; 2 unreadable lines (listed above by number)`);
    for (const s of intact.filter((x) => x.opens)) expect(run.stdout).toContain(JSON.stringify(s.text));

    const json = JSON.parse((await decrypt('--json', '--archive', file, '--key', keyFile)).stdout) as JsonReport;
    expect(json.errors.map((e) => e.line)).toEqual([3, 5]);
    expect(json.items.map((i) => i.line)).toEqual([1, 2, 4, ...Array.from({ length: sent.size - 5 }, (_, i) => i + 7)]);
  });

  it('--help prints the usage and exits 0', async () => {
    const run = await decrypt('--help');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('npm run decrypt -- --archive FILE --key FILE');
  });
});
