/**
 * `npm start -- [--port N] [--host H] [--data DIR | --ephemeral] [--admin-token T]`
 * Starts the relay and prints the links a teacher opens.
 */
import { networkInterfaces } from 'node:os';
import { parseArgs } from 'node:util';
import { startApp } from './app.ts';
import { consoleLogger } from './log.ts';
import { StoreError } from './store.ts';

const HELP = `Backdoor Lab relay

Usage: npm start -- [options]

  --port N            port for pages and WebSocket (default 3000; 0 picks a free one)
  --host H            address to listen on (default 127.0.0.1; 0.0.0.0 for a class on the LAN)
  --data DIR          folder for the SQLite files (default ./data)
  --ephemeral         keep everything in memory; nothing survives a restart
  --admin-token T     the teacher's token (default: a fresh random one, printed below)
  --quiet             log only errors
  --help              this text
`;

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n\n${HELP}`);
  process.exit(2);
}

function options() {
  try {
    return parseArgs({
      options: {
        port: { type: 'string', default: '3000' },
        host: { type: 'string', default: '127.0.0.1' },
        data: { type: 'string', default: 'data' },
        ephemeral: { type: 'boolean', default: false },
        'admin-token': { type: 'string' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    return fail((err as Error).message);
  }
}

async function main(): Promise<void> {
  const opts = options();
  if (opts.help) {
    process.stdout.write(HELP);
    return;
  }
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be a whole number from 0 to 65535, not "${opts.port}"`);
  const token = opts['admin-token'];
  if (token !== undefined && !/^[\x21-\x7e]{8,200}$/.test(token)) fail('--admin-token must be 8 to 200 printable characters without spaces');

  const base = consoleLogger();
  const log = opts.quiet ? { info: () => {}, error: base.error } : base;
  let app;
  try {
    app = await startApp({ port, host: opts.host, dataDir: opts.ephemeral ? null : opts.data, ...(token ? { adminToken: token } : {}), log });
  } catch (err) {
    if (err instanceof StoreError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exit(1);
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(`error: port ${port} is already in use. Is Backdoor Lab already running? Try --port ${port + 1}.\n`);
      process.exit(1);
    }
    if (typeof (err as NodeJS.ErrnoException).syscall === 'string') {
      // A file-system or network refusal at start (e.g. --data names a file, not a folder): one line, no stack.
      process.stderr.write(`error: cannot start: ${(err as Error).message}. Check --data and --port (or use --ephemeral).\n`);
      process.exit(1);
    }
    throw err;
  }

  const bases = [app.url];
  if (opts.host === '0.0.0.0' || opts.host === '::') {
    for (const list of Object.values(networkInterfaces())) {
      for (const addr of list ?? []) if (addr.family === 'IPv4' && !addr.internal) bases.push(`http://${addr.address}:${app.port}`);
    }
  }
  const lines = [
    '',
    'Backdoor Lab is running.',
    `  storage:            ${opts.ephemeral ? 'in memory (--ephemeral): nothing survives a restart' : `${opts.data}/ (SQLite)`}`,
    '',
    'Open each link in its own browser tab; every tab is a different person:',
    `  Alice's chat:       ${app.url}/?name=Alice`,
    `  Bob's chat:         ${app.url}/?name=Bob`,
    `  Carol's chat:       ${app.url}/?name=Carol`,
    `  Relay view:         ${app.url}/relay        (what the server sees; anyone may open it)`,
    `  Regulator console:  ${app.url}/regulator#token=${app.adminToken}`,
    '                      (the teacher\'s link: the token after # is the admin token; keep it off the projector)',
    ...(bases.length > 1 ? ['', 'On the class network, students open:', ...bases.slice(1).map((b) => `  ${b}/?name=YourName`)] : []),
    '',
    'Press Ctrl-C to stop.',
    '',
  ];
  process.stdout.write(lines.join('\n'));

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: closing connections and the database...\n`);
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
    setTimeout(() => process.exit(1), 5000).unref();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
