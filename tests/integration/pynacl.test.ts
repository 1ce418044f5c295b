/**
 * A decryptor written from the page alone: the Python (PyNaCl) script printed in
 * docs/wire-format.md, taken out of the page as it is and run with Debian's python3 and
 * python3-nacl (.ci/run installs them). It must open the worked examples of both protocol
 * versions, and open exactly what the project's own archive reader opens in an archive exported
 * from a live relay.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escrowKeyPairFromSecret, fromB64 } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { openArchived, parseArchiveLine } from '../../shared/archive.ts';
import { knows, startTestRelay, until, user } from '../helpers/relay.ts';
import { rawClient } from '../helpers/raw-client.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const PYTHON = '/usr/bin/python3';
let dir: string;
let script: string;

/** Run the doc's script; a missing python3-nacl is a failure that says how to fix it. */
function python(...args: string[]): string {
  const probe = spawnSync(PYTHON, ['-c', 'import nacl.bindings'], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error(`${PYTHON} with PyNaCl is needed for this test: apt-get install -y python3-nacl (${probe.stderr || probe.error?.message})`);
  return execFileSync(PYTHON, [script, ...args], { cwd: root, encoding: 'utf8' });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-pynacl-'));
  const doc = readFileSync(join(root, 'docs/wire-format.md'), 'utf8');
  const block = /## A Python decryptor \(PyNaCl\)[\s\S]*?```python\n([\s\S]*?)\n```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/wire-format.md has no python block under "A Python decryptor (PyNaCl)"');
  script = join(dir, 'decrypt.py');
  writeFileSync(script, block);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the PyNaCl decryptor printed in docs/wire-format.md', () => {
  it.each(['worked-example.json', 'worked-example-v1.json'])('opens the worked example %s as Bob, Alice and the regulator', (fixture) => {
    const out = python(join('tests/fixtures', fixture));
    for (const who of ['Bob reads:', 'Alice reads:', 'regulator reads:']) expect(out).toContain(`${who}`);
    expect(out.match(/'text': 'Meet me at the café at 6\.'/g)).toHaveLength(3);
  });

  it("opens exactly what the project's archive reader opens in an archive exported from a live relay: end-to-end, tapped, group, forged and a version 1 line", async () => {
    const app = await startTestRelay();
    try {
      const alice = await user(app.wsUrl, 'Alice');
      const bob = await user(app.wsUrl, 'Bob');
      const carol = await user(app.wsUrl, 'Carol');
      await knows(alice, bob.m.pin, carol.m.pin);
      await knows(carol, alice.m.pin, bob.m.pin);
      const wait = (u: typeof bob, id: string) => until(() => u.m.messages.has(id), 'delivered');
      await wait(bob, alice.m.sendText([bob.m.pin], 'end to end: nobody else').id);
      const auth = { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json' };
      expect((await fetch(`${app.url}/api/regulator/tap`, { method: 'POST', headers: auth, body: JSON.stringify({ tap: true, scope: 'all', announced: true }) })).status).toBe(200);
      await until(() => [alice, bob, carol].every((u) => u.m.policy?.tap === true), 'the tap reaches everyone');
      await wait(alice, bob.m.sendText([alice.m.pin], 'tapped: the regulator reads this').id);
      const group = carol.m.createGroup('Tapped club', [alice.m.pin, bob.m.pin]);
      await wait(bob, group.message.id);
      await wait(bob, carol.m.sendGroup(group.id, 'tapped group: all of us, and the regulator').id);
      const forger = await rawClient(app.wsUrl, { name: 'Forger' });
      await until(() => bob.m.directory.has(forger.identity.pin), 'Bob knows the forger');
      const forged = sealEnvelope({
        sender: forger.identity,
        to: [{ pin: bob.m.pin, signPk: bob.m.identity.signPk }],
        conv: 'dm',
        body: { text: 'forged: noise for the regulator' },
        plan: { model: 'e2e-escrow', forged: { kid: app.regulator.kid } },
      }).env;
      forger.send({ type: 'send', env: forged });
      await forger.next('accepted', (f) => f.id === forged.id);
      forger.ws.terminate();

      const archive = await (await fetch(`${app.url}/api/regulator/archive.jsonl`, { headers: auth })).text();
      const keyFile = await (await fetch(`${app.url}/api/regulator/escrow-key`, { headers: auth })).text();
      // A line of an archive begun under protocol version 1 (sealed to another escrow key: it stays closed here).
      const v1 = JSON.parse(readFileSync(join(root, 'tests/fixtures/worked-example-v1.json'), 'utf8')) as {
        derived: { alice: { signPkB64: string } };
        expected: { envelope: unknown };
      };
      const lines = `${archive}${JSON.stringify({ seq: 999, at: 1700000000001, senderPk: v1.derived.alice.signPkB64, env: v1.expected.envelope })}\n`;
      writeFileSync(join(dir, 'archive.jsonl'), lines);
      writeFileSync(join(dir, 'escrow-key.json'), keyFile);

      const out = python('--archive', join(dir, 'archive.jsonl'), '--key', join(dir, 'escrow-key.json'));
      const key = escrowKeyPairFromSecret(fromB64((JSON.parse(keyFile) as { sk: string }).sk));
      const parsed = lines
        .split('\n')
        .filter(Boolean)
        .map((l) => parseArchiveLine(l));
      const want = new Set(parsed.flatMap((p) => (p.ok && openArchived(p.value, key).status === 'opened' ? [p.value.env.id] : [])));
      const got = new Set([...out.matchAll(/^OPENED ([0-9a-f]{32}) /gm)].map((m) => m[1]!));
      expect(parsed.every((p) => p.ok)).toBe(true);
      expect(got).toEqual(want);
      expect(want.size).toBe(3); // the tapped 1:1, the group note and the tapped group message
      expect(out).toContain(`CLOSED ${forged.id}`);
      expect(out).toMatch(new RegExp(`CLOSED ${forged.id} .*escrow_does_not_open`));
      expect(out).toMatch(/: no_escrow_field/);
      expect(out).toMatch(/escrow_kid_unknown/); // the version 1 line, sealed to the worked example's key
      expect(out).toContain(`Bob (${bob.m.pin}) -> Alice (${alice.m.pin}): "tapped: the regulator reads this"`);
      expect(out).toContain(`opened 3 of ${parsed.length} envelopes`);
      for (const u of [alice, bob, carol]) u.m.stop();
    } finally {
      await app.close();
    }
  }, 60_000);
});
