/**
 * `npm start -- [--classroom] [--port N] [--host H] [--public-host NAME[:PORT]]... [--data DIR | --ephemeral]
 *   [--admin-token T | --admin-token-file FILE] [--archive-max-mib N]` (or BACKDOOR_LAB_ADMIN_TOKEN)
 * Starts the relay and prints the links a teacher opens.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startApp } from './app.ts';
import { DEFAULT_EXPORT_GRADE_BITS, DEFAULT_REGULATOR_LIMITS } from './regulator.ts';
import { adminTokenProblem } from './admin-guard.ts';
import { parsePublicHost } from './hosts.ts';
import { consoleLogger } from './log.ts';
import { classroomLines } from './classroom.ts';
import { CLASS_CODE_ALPHABET, normalizeClassCode } from '../shared/protocol.ts';
import { StoreError } from './store.ts';
import { escrowFingerprint, fromB64 } from '../shared/crypto.ts';

const HELP = `Backdoor Lab relay

Usage: npm start -- [options]

  --classroom              a class joins from its own phones and laptops: listen on every
                           interface (unless --host says otherwise), print the LAN address(es),
                           the join link with a new random class code and its QR code. Joining
                           needs the code (in the link, or typed); see "Running a workshop" in README.md
  --class-code CODE        keep this class code instead of a new random one (six of
                           23456789ABCDEFGHJKMNPQRSTWXYZ), e.g. to restart mid-lesson without
                           every participant typing a new one; implies --classroom
  --port N                 port for pages and WebSocket (default 3000; 0 picks a free one)
  --host H                 address to listen on (default 127.0.0.1; 0.0.0.0 for a class on the LAN)
  --public-host NAME[:PORT]
                           another name browsers may use for this relay, e.g. a TLS proxy's
                           (lab.example:443); repeat for more. Requests naming any other host
                           get 403 (DNS rebinding). Always served: the --host address, and
                           localhost, 127.0.0.1, [::1] when listening on loopback or everywhere,
                           plus the LAN addresses printed below with --host 0.0.0.0
  --data DIR               folder for the SQLite files (default ./data)
  --ephemeral              keep everything in memory; nothing survives a restart
  --archive-max-mib N      the regulator's intercept archive holds at most N MiB (default ${DEFAULT_REGULATOR_LIMITS.archiveMaxBytes / 1048576},
                           in memory with --ephemeral, on disk otherwise); past it the oldest
                           intercepts are deleted, and the console's audit log says so
  --export-grade-bits N    the export-grade escrow key's secret has N bits, 8 to 32 (default
                           ${DEFAULT_EXPORT_GRADE_BITS}: a brute force of about 20-45 s in Chromium on a laptop;
                           one bit less halves it, see docs/attacker.md)
  --admin-token T          the teacher's token, 16 to 200 printable characters
                           (default: a random one, made on the first start and kept in
                           DIR/admin-token, or new each run with --ephemeral). Other processes on
                           this machine can read a command line: prefer one of these two:
  --admin-token-file FILE  read the token from FILE (its first line)
                           or set BACKDOOR_LAB_ADMIN_TOKEN in the environment
  --quiet                  log only errors
  --help                   this text
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
        host: { type: 'string' },
        classroom: { type: 'boolean', default: false },
        'class-code': { type: 'string' },
        data: { type: 'string', default: 'data' },
        ephemeral: { type: 'boolean', default: false },
        'archive-max-mib': { type: 'string' },
        'export-grade-bits': { type: 'string' },
        'admin-token': { type: 'string' },
        'admin-token-file': { type: 'string' },
        'public-host': { type: 'string', multiple: true, default: [] },
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

/**
 * The teacher's token: --admin-token, --admin-token-file or BACKDOOR_LAB_ADMIN_TOKEN (at most one of
 * the two flags; either overrides the variable), or undefined for a random one.
 */
function adminToken(flag: string | undefined, file: string | undefined): string | undefined {
  if (flag !== undefined && file !== undefined) fail('give --admin-token or --admin-token-file, not both');
  let token: string | undefined;
  let where: string;
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      return fail(`cannot read --admin-token-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    token = text.split(/\r?\n/, 1)[0]!.trim();
    where = `the token in --admin-token-file ${file}`;
  } else if (flag !== undefined) {
    token = flag;
    where = '--admin-token';
  } else {
    const env = process.env.BACKDOOR_LAB_ADMIN_TOKEN;
    if (env === undefined || env === '') return undefined;
    token = env;
    where = 'BACKDOOR_LAB_ADMIN_TOKEN';
  }
  const problem = adminTokenProblem(token);
  if (problem) fail(`${where} ${problem}`);
  return token;
}

async function main(): Promise<void> {
  const opts = options();
  if (opts.help) {
    process.stdout.write(HELP);
    return;
  }
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be a whole number from 0 to 65535, not "${opts.port}"`);
  const token = adminToken(opts['admin-token'], opts['admin-token-file']);
  const archiveMib = opts['archive-max-mib'] === undefined ? undefined : Number(opts['archive-max-mib']);
  if (archiveMib !== undefined && !(Number.isFinite(archiveMib) && archiveMib >= 1 && archiveMib <= 1_048_576))
    fail(`--archive-max-mib must be a number of MiB from 1 to 1048576, not "${opts['archive-max-mib']}"`);
  const exportGradeBits = opts['export-grade-bits'] === undefined ? undefined : Number(opts['export-grade-bits']);
  if (exportGradeBits !== undefined && !(Number.isInteger(exportGradeBits) && exportGradeBits >= 8 && exportGradeBits <= 32))
    fail(`--export-grade-bits must be a whole number from 8 to 32, not "${opts['export-grade-bits']}"`);
  const publicHosts = opts['public-host'];
  for (const name of publicHosts) {
    try {
      parsePublicHost(name);
    } catch (err) {
      fail((err as Error).message);
    }
  }

  const typedCode = opts['class-code'];
  const classCode = typedCode === undefined ? undefined : normalizeClassCode(typedCode);
  if (classCode === null) fail(`--class-code must be 6 characters from ${CLASS_CODE_ALPHABET} (no 0, 1, I, L, O, U or V), not "${typedCode}"`);
  const classroom = opts.classroom || classCode !== undefined ? (classCode ? { code: classCode } : true) : false;
  // Classroom mode listens on the LAN; otherwise the relay stays on this machine.
  const host = opts.host ?? (classroom ? '0.0.0.0' : '127.0.0.1');

  const base = consoleLogger();
  const log = opts.quiet ? { info: () => {}, error: base.error } : base;
  let app: Awaited<ReturnType<typeof startApp>>;
  try {
    const limits = archiveMib === undefined ? {} : { archiveMaxBytes: Math.round(archiveMib * 1048576) };
    app = await startApp({
      port,
      host,
      classroom,
      publicHosts,
      dataDir: opts.ephemeral ? null : opts.data,
      ...(token ? { adminToken: token } : {}),
      ...(exportGradeBits === undefined ? {} : { exportGradeBits }),
      log,
      limits,
    });
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

  // The LAN addresses the relay answers to (server/hosts.ts computed them once, at start).
  const bases = [app.url, ...app.hosts.lan.map((a) => `http://${a}:${app.port}`)];
  const lines = [
    '',
    'Backdoor Lab is running.',
    `  storage:            ${opts.ephemeral ? 'in memory (--ephemeral): nothing survives a restart' : `${opts.data}/ (SQLite)`}`,
    `  admin token:        ${token ? 'the one you chose' : opts.ephemeral ? 'new for this run (--ephemeral)' : `kept in ${opts.data}/admin-token: the console link below stays valid after a restart`}`,
    `  intercept archive:  at most ${(app.regulator.limits.archiveMaxBytes / 1048576).toFixed(0)} MiB; past it the oldest intercepts are deleted (--archive-max-mib)`,
    `  escrow key:         ${opts.ephemeral ? 'new for this run (--ephemeral)' : `kept in ${opts.data}/regulator.db since the first start, until that folder is deleted`}`,
    `  its fingerprint:    ${escrowFingerprint(fromB64(app.regulator.publicKey))}`,
    '                      (the out-of-band value: write it on the board; a chat tab that pins it warns if the relay swaps the key)',
    '',
    'Open each link in its own browser tab; every tab is a different person:',
    `  Alice's chat:       ${app.url}/?name=Alice`,
    `  Bob's chat:         ${app.url}/?name=Bob`,
    `  Carol's chat:       ${app.url}/?name=Carol`,
    `  Relay view:         ${app.url}/relay        (what the server sees; anyone may open it)`,
    `  Teacher panel:      ${app.url}/teacher#token=${app.adminToken}`,
    `  Regulator console:  ${app.url}/regulator#token=${app.adminToken}`,
    `  Attacker console:   ${app.url}/attacker    (what a scene leaked or stolen; open it from the teacher panel, it takes that tab's token)`,
    "                      (the teacher's links: the token after # is the admin token; keep them off the projector)",
    ...(app.classroom
      ? classroomLines({ lan: app.hosts.lan, port: app.port, code: app.classroom.code, fallbackBase: app.url })
      : bases.length > 1
        ? ['', 'On the class network, students open:', ...bases.slice(1).map((b) => `  ${b}/?name=YourName`)]
        : []),
    ...(publicHosts.length ? ['', 'Also served under (--public-host; http or https, e.g. through a TLS proxy):', ...publicHosts.map((h) => `  ${h}`)] : []),
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
