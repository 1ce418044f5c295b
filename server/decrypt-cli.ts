/**
 * `npm run decrypt -- --archive FILE --key FILE [--json]`
 *
 * Opens an exported intercept archive offline, as an attacker who stole the
 * escrow key would: no relay, no regulator, only the two files. Every line is
 * accounted for: opened, not opened (and why), or unreadable (by line number).
 */
import { type FileHandle, open } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { openArchived, parseArchiveLine, personOf } from '../shared/archive.ts';
import { wordsFor } from '../shared/failures.ts';
import { cryptoReady, escrowKeyPairFromSecret, fromB64, fromHex, toB64, type EscrowKeyPair } from '../shared/crypto.ts';

const HELP = `Backdoor Lab offline decryptor: open an exported intercept archive with an escrow key.

Usage: npm run decrypt -- --archive FILE --key FILE [--json]

  --archive FILE   archive.jsonl as exported from GET /api/regulator/archive.jsonl
                   (one JSON object per line: {"seq","at","senderPk","names","env"};
                   protocol v1 and v2 envelopes, older lines without "names")
  --key FILE       the escrow key: the JSON file from GET /api/regulator/escrow-key,
                   or a file holding only the 32-byte X25519 secret key in base64 (or hex)
  --json           print one JSON object instead of text
  --help           this text

It prints every message the key opens (time, sender -> recipients by name and PIN, text),
every envelope it cannot open with the reason, every unreadable line by number,
and the counts. Blank lines are ignored.

Exit status: 0 when every line was read; 2 when a file or the key cannot be used,
or when some lines could not be read (they are reported; the rest are still opened).
`;

/** A usage or input error: reported on stderr, exit 2. */
class CliError extends Error {}

type Outcome = 'opened' | 'end-to-end' | 'not-opened';

interface Item {
  line: number;
  seq: number;
  id: string;
  at: number;
  ts: number;
  from: string;
  to: string[];
  /** "Name (PIN)" for the sender and each recipient, where the archive line names them. */
  fromName: string;
  toNames: string[];
  conv: string;
  status: Outcome;
  /** Why it did not open: a stable code (shared/failures.ts). */
  code?: string;
  text?: string;
  group?: string;
  reason?: string;
}

interface Report {
  archive: string;
  kid: string;
  envelopes: number;
  opened: number;
  endToEnd: number;
  notOpened: number;
  badLines: number;
  items: Item[];
  errors: { line: number; reason: string }[];
}

const why = (err: unknown): string => {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT') return 'no such file';
  if (e.code === 'EACCES' || e.code === 'EPERM') return 'permission denied';
  if (e.code === 'EISDIR') return 'it is a folder, not a file';
  return e.message ?? String(err);
};

/** The escrow key pair from an exported key file (JSON) or a raw base64/hex secret key. Never echoes key material. */
function readKey(path: string): EscrowKeyPair {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new CliError(`cannot read key file ${path}: ${why(err)}`);
  }
  const expected = 'expected the escrow key JSON file (with "sk") or a 32-byte X25519 secret key in base64 or hex';
  let sk: Uint8Array;
  let claimed: { kid?: unknown; pk?: unknown } = {};
  if (text.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CliError(`wrong key format in ${path}: it starts like JSON but is not valid JSON; ${expected}`);
    }
    const obj = json as { sk?: unknown; kid?: unknown; pk?: unknown };
    if (typeof obj.sk !== 'string') throw new CliError(`wrong key format in ${path}: the JSON has no "sk" string; ${expected}`);
    sk = decodeKey(obj.sk, path, expected);
    claimed = obj;
  } else {
    sk = decodeKey(text, path, expected);
  }
  const key = escrowKeyPairFromSecret(sk);
  if (typeof claimed.kid === 'string' && claimed.kid !== key.kid) {
    throw new CliError(`key file ${path} is inconsistent: it names key id ${claimed.kid}, but its secret key belongs to key id ${key.kid}`);
  }
  if (typeof claimed.pk === 'string' && claimed.pk !== toB64(key.pk)) {
    throw new CliError(`key file ${path} is inconsistent: its "pk" is not the public key of its secret key`);
  }
  return key;
}

function decodeKey(text: string, path: string, expected: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  let bytes: Uint8Array | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(compact)) bytes = fromHex(compact.toLowerCase());
  else if (/^[A-Za-z0-9+/]*={0,2}$/.test(compact) && compact.length % 4 === 0 && compact.length > 0) {
    try {
      bytes = fromB64(compact);
    } catch {
      bytes = null;
    }
  }
  if (!bytes) throw new CliError(`wrong key format in ${path}: ${expected}`);
  if (bytes.length !== 32) throw new CliError(`wrong key format in ${path}: the secret key is ${bytes.length} bytes, not 32; ${expected}`);
  return bytes;
}

/** Open every line of the archive with the key. Bad lines are recorded by number; the rest still open. */
async function decryptArchive(path: string, key: EscrowKeyPair): Promise<Report> {
  const report: Report = { archive: path, kid: key.kid, envelopes: 0, opened: 0, endToEnd: 0, notOpened: 0, badLines: 0, items: [], errors: [] };
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    if (!(await handle.stat()).isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
  } catch (err) {
    await handle?.close();
    throw new CliError(`cannot read archive ${path}: ${why(err)}`);
  }
  let lineNo = 0;
  try {
    for await (const raw of handle.readLines({ encoding: 'utf8' })) {
      lineNo += 1;
      // A byte-order mark (from an editor that re-saved the file) is not part of the first line's JSON.
      const text = (lineNo === 1 ? raw.replace(/^\uFEFF/, '') : raw).trim();
      if (text === '') continue;
      const bad = (reason: string) => {
        report.badLines += 1;
        report.errors.push({ line: lineNo, reason });
      };
      const parsed = parseArchiveLine(text);
      if (!parsed.ok) {
        bad(parsed.reason);
        continue;
      }
      const line = parsed.value;
      const { seq, at, env } = line;
      report.envelopes += 1;
      const base = {
        line: lineNo,
        seq,
        id: env.id,
        at,
        ts: env.ts,
        from: env.from,
        to: env.to,
        fromName: personOf(line, env.from),
        toNames: env.to.map((p) => personOf(line, p)),
        conv: env.conv,
      };
      const verdict = openArchived(line, key);
      switch (verdict.status) {
        case 'opened':
          report.opened += 1;
          report.items.push({ ...base, status: 'opened', text: verdict.text, ...(verdict.group !== undefined ? { group: verdict.group } : {}) });
          break;
        case 'end-to-end':
          report.endToEnd += 1;
          report.items.push({ ...base, status: 'end-to-end', code: verdict.code, reason: verdict.reason });
          break;
        case 'not-opened':
          report.notOpened += 1;
          report.items.push({ ...base, status: 'not-opened', code: verdict.code, reason: verdict.reason });
          break;
      }
    }
  } catch (err) {
    throw new CliError(`cannot read archive ${path} after line ${lineNo}: ${why(err)}`);
  } finally {
    await handle.close();
  }
  return report;
}

/** Message text as a quoted literal: a message cannot move the cursor, recolour or reorder the terminal. */
const quote = (s: string): string =>
  JSON.stringify(s).replace(/[\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

function summary(r: Report): string {
  const counts = `opened ${r.opened} of ${r.envelopes} envelopes; ${r.endToEnd} without an escrow field (end-to-end); ${r.notOpened} with a field that did not open (forged or another key)`;
  return r.badLines ? `${counts}; ${r.badLines} unreadable line${r.badLines === 1 ? '' : 's'} (listed above by number)` : counts;
}

function renderText(r: Report): { out: string; err: string } {
  const out = [`archive ${r.archive}, escrow key ${r.kid}`];
  // Envelopes and unreadable lines together, in file order.
  const rows: ({ line: number; item: Item } | { line: number; reason: string })[] = [...r.items.map((item) => ({ line: item.line, item })), ...r.errors].sort(
    (a, b) => a.line - b.line,
  );
  for (const row of rows) {
    if (!('item' in row)) {
      out.push(`UNREADABLE  line ${row.line}: ${row.reason}`);
      continue;
    }
    const item = row.item;
    // Names passed the display-name rules when the line was parsed: no control, bidi or invisible characters.
    const route = `${item.fromName} -> ${item.toNames.join(', ')}`;
    if (item.status === 'opened') {
      const group = item.group !== undefined ? ` [group ${quote(item.group)}]` : '';
      out.push(`OPENED  ${new Date(item.ts).toISOString()}  ${route}${group}: ${quote(item.text ?? '')}`);
    } else {
      out.push(`CLOSED  ${item.id}  ${route}: ${item.code ? `${wordsFor(item.code)} (${item.code})` : (item.reason ?? '')}`);
    }
  }
  out.push(summary(r));
  const err = r.errors.length
    ? `warning: ${r.errors.length} unreadable line${r.errors.length === 1 ? '' : 's'} in ${r.archive} (line ${r.errors.map((e) => e.line).join(', ')}); every other line was read\n`
    : '';
  return { out: `${out.join('\n')}\n`, err };
}

const parseOptions = (argv: string[]) =>
  parseArgs({
    args: argv,
    options: {
      archive: { type: 'string' },
      key: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }).values;

async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parseOptions>;
  try {
    values = parseOptions(argv);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!values.archive) throw new CliError('--archive FILE is required');
  if (!values.key) throw new CliError('--key FILE is required');
  await cryptoReady();
  const key = readKey(values.key);
  const report = await decryptArchive(values.archive, key);
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ ...report, summary: summary(report) }, null, 2)}\n`);
  } else {
    const { out, err } = renderText(report);
    process.stdout.write(out);
    if (err) process.stderr.write(err);
  }
  return report.badLines ? 2 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`error: ${err.message}\n\nRun with --help for usage.\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
