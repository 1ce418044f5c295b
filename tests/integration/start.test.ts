/**
 * `npm start` as a teacher runs it: through npm, stopped by a signal sent to npm alone (as a
 * process manager, a terminal closing, or a test harness does). Before, npm's shell and tsx's
 * wrapper sat between npm and the server, and the server kept running with the port taken.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApp } from '../../server/app.ts';
import { knows, until, user } from '../helpers/relay.ts';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The pids of `pid`'s children, from /proc (Linux). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function waitFor<T>(get: () => T | undefined, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('npm start', () => {
  it('stops the server, port and all, when only npm is sent SIGTERM', async () => {
    const npm = spawn('npm', ['start', '--silent', '--', '--ephemeral', '--port', '0', '--quiet'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    npm.stdout.on('data', (d: Buffer) => (out += d.toString()));
    npm.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const url = await waitFor(() => /Alice's chat:\s+(http:\/\/127\.0\.0\.1:\d+)\//.exec(out)?.[1], `the start banner (${out})`);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      // The regulator key's fingerprint is printed at start: the out-of-band value the teacher panel shows too.
      const printed = await waitFor(() => /its fingerprint:\s+((?:[0-9A-F]{4} ){9}[0-9A-F]{4})/.exec(out)?.[1], `the fingerprint (${out})`);
      const token = /teacher#token=(\S+)/.exec(out)?.[1];
      const keys = (await (await fetch(`${url}/api/lab/escrow`, { headers: { authorization: `Bearer ${token}` } })).json()) as { regulator: { fingerprint: string } };
      expect(keys.regulator.fingerprint).toBe(printed);
      // Everything npm started, down to the server process itself.
      const tree: number[] = [];
      const walk = (pid: number) => {
        for (const child of childrenOf(pid)) {
          tree.push(child);
          walk(child);
        }
      };
      walk(npm.pid!);
      expect(tree.length).toBeGreaterThan(0);

      process.kill(npm.pid!, 'SIGTERM');
      await waitFor(() => (tree.every((pid) => !alive(pid)) ? true : undefined), `every process npm started to exit (${tree.join(', ')})`, 15_000);
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
      expect(out).toContain('SIGTERM: closing connections and the database');
    } finally {
      if (npm.exitCode === null) npm.kill('SIGKILL');
    }
  }, 60_000);
});

describe('what survives a restart', () => {
  it('the generated admin token and the escrow key are kept in the data folder, so the console link still works after a restart; --ephemeral keeps neither', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-restart-'));
    try {
      const first = await startApp({ port: 0, host: '127.0.0.1', dataDir: dir });
      const token = first.adminToken;
      const kid = first.regulator.kid;
      expect(token).toMatch(/^[0-9a-f]{32}$/);
      expect(statSync(join(dir, 'admin-token')).mode & 0o077).toBe(0); // readable by its owner only
      await first.close();
      const second = await startApp({ port: 0, host: '127.0.0.1', dataDir: dir });
      try {
        expect(second.adminToken).toBe(token);
        expect(second.regulator.kid).toBe(kid);
        const res = await fetch(`${second.url}/api/regulator/tap`, { headers: { authorization: `Bearer ${token}` } });
        expect(res.status).toBe(200);
      } finally {
        await second.close();
      }
      const a = await startApp({ port: 0, host: '127.0.0.1', dataDir: null });
      const b = await startApp({ port: 0, host: '127.0.0.1', dataDir: null });
      expect(a.adminToken).not.toBe(b.adminToken);
      expect(a.regulator.kid).not.toBe(b.regulator.kid);
      await Promise.all([a.close(), b.close()]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('npm run bot', () => {
  it('a bot started from a terminal logs in, answers a person through the real relay with its script, then echoes, and stops on SIGTERM', async () => {
    const app = await startApp({ port: 0, host: '127.0.0.1', dataDir: null });
    const dir = mkdtempSync(join(tmpdir(), 'backdoor-lab-bot-'));
    const scriptFile = join(dir, 'bob.txt');
    writeFileSync(scriptFile, 'Hello Alice!\nSee you at six.\n');
    const bot = spawn('npm', ['run', '--silent', 'bot', '--', '--name', 'Bob', '--url', `${app.url.replace('http', 'ws')}/ws`, '--script', scriptFile], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    bot.stdout.on('data', (d: Buffer) => (out += d.toString()));
    bot.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const alice = await user(`${app.url.replace('http', 'ws')}/ws`, 'Alice');
    try {
      const pin = await waitFor(() => /online as PIN ([0-9A-F]{8})/.exec(out)?.[1], `the bot to log in (${out})`);
      await knows(alice, pin);
      const replies = () => [...alice.m.messages.values()].filter((m) => m.direction === 'in' && m.from === pin).map((m) => m.text);
      const first = alice.m.sendText([pin], 'Hi Bob');
      await until(() => replies().length === 1, 'the first reply', 15_000);
      await until(() => alice.m.messages.get(first.id)?.state === 'read', 'Bob read it (R)');
      alice.m.sendText([pin], 'Are you coming?');
      await until(() => replies().length === 2, 'the second reply', 15_000);
      alice.m.sendText([pin], 'Bring the map');
      await until(() => replies().length === 3, 'the echo', 15_000);
      expect(replies()).toEqual(['↩ Hello Alice!', '↩ See you at six.', '↩ Bob got it: "Bring the map"']);
      expect(out).toContain('Alice');
      const children = childrenOf(bot.pid!);
      process.kill(bot.pid!, 'SIGTERM');
      await waitFor(() => ([bot.pid!, ...children].every((p) => !alive(p)) ? true : undefined), 'the bot to stop', 10_000);
      await until(() => alice.m.directory.get(pin)?.online === false, 'the bot goes offline');
    } finally {
      if (bot.exitCode === null) bot.kill('SIGKILL');
      alice.m.stop();
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
