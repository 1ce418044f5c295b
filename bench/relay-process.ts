/**
 * The relay under test, alone in its own process: the real app (`startApp`)
 * with an on-disk SQLite data dir in a fresh temp folder (the default config,
 * WAL), on 127.0.0.1 port 0. The limits are the ones bench/run.ts passes: for the
 * load generator every rate, byte, registration and queue limit is raised (it sends
 * far more than 30 frames per second per connection, from 1,000 identities on one
 * address); for the browser figures none is.
 *
 * Started by bench/run.ts as `node --import tsx bench/relay-process.ts '<limits JSON>'`;
 * answers `start`, `memory`, `cpu`, `stats` and `stop` over IPC.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp, type App } from '../server/app.ts';
import type { AppLimits } from '../server/app.ts';
import { serveServer } from './common.ts';

const limits = JSON.parse(process.argv[2] ?? '{}') as Partial<AppLimits>;
let app: App | null = null;
let dataDir: string | null = null;

serveServer(async (msg) => {
  switch (msg.cmd) {
    case 'start': {
      dataDir = mkdtempSync(join(tmpdir(), 'backdoor-lab-bench-relay-'));
      app = await startApp({ port: 0, host: '127.0.0.1', dataDir, limits, adminToken: 'bench-admin-token' });
      return { url: app.url, wsUrl: `${app.url.replace(/^http/, 'ws')}/ws`, pid: process.pid, dataDir, limits: app.relay.limits };
    }
    case 'stats': {
      const size = (name: string) => {
        try {
          return dataDir ? statSync(join(dataDir, name)).size : 0;
        } catch {
          return 0;
        }
      };
      return {
        online: app?.relay.onlineCount() ?? 0,
        connections: app?.relay.connectionCount() ?? 0,
        queueDepth: app?.store.queueDepth() ?? 0,
        walBytes: { relay: size('relay.db-wal'), regulator: size('regulator.db-wal') },
        dbBytes: { relay: size('relay.db'), regulator: size('regulator.db') },
      };
    }
    case 'stop': {
      await app?.close();
      app = null;
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
      // Exit after the reply has gone out (lets --cpu-prof write its profile).
      setTimeout(() => process.exit(0), 20);
      return { stopped: true };
    }
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
});
