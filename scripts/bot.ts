/**
 * `npm run bot -- --name Bob [--url ws://127.0.0.1:3000/ws] [--script FILE]`
 *
 * A bot participant from a terminal: a real client on client/core over a WebSocket. Its keys are
 * made in this process and live only in its memory; it logs in, reads what it is sent (the sender
 * sees D and R), and answers — with the script's replies in order, then by echoing. Ctrl-C stops it.
 *
 * The script file is JSON ({"replies": ["…"], "echo": true, "delayMs": 300}) or plain lines of replies.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { Bot, parseScript, type BotScript } from '../client/bot/bot.ts';
import type { SocketLike } from '../client/core/messenger.ts';
import { cryptoReady } from '../shared/crypto.ts';
import { DisplayName } from '../shared/protocol.ts';

const HELP = `Backdoor Lab bot

Usage: npm run bot -- --name NAME [--url URL] [--script FILE]

  --name NAME     the bot's display name (required)
  --url URL       the relay's WebSocket (default ws://127.0.0.1:3000/ws)
  --script FILE   replies: JSON {"replies": [...], "echo": true|false, "delayMs": N} or lines of text
  --help          this text
`;

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n\n${HELP}`);
  process.exit(2);
}

const parseOptions = () =>
  parseArgs({
    options: { name: { type: 'string' }, url: { type: 'string', default: 'ws://127.0.0.1:3000/ws' }, script: { type: 'string' }, help: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: false,
  }).values;

async function main(): Promise<void> {
  let values: ReturnType<typeof parseOptions>;
  try {
    values = parseOptions();
  } catch (err) {
    return fail((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const name = DisplayName.safeParse(values.name ?? '');
  if (!values.name || !name.success) fail(`--name: ${name.success ? 'required' : (name.error.issues[0]?.message ?? 'invalid')}`);
  if (!/^wss?:\/\//.test(values.url)) fail(`--url must be a ws:// or wss:// address, not "${values.url}"`);
  let script: BotScript | undefined;
  if (values.script) {
    try {
      script = parseScript(readFileSync(values.script, 'utf8'));
    } catch (err) {
      fail(`--script ${values.script}: ${(err as Error).message}`);
    }
  }
  await cryptoReady();
  const url = values.url;
  const bot = new Bot({ name: name.data, connect: () => new WebSocket(url) as unknown as SocketLike, ...(script ? { script } : {}) });
  bot.m.on((event) => {
    if (event.type === 'message' && event.message.direction === 'in' && event.message.state === 'received' && !event.message.note)
      process.stdout.write(`${bot.m.nameOf(event.message.from)} (${event.message.from}): ${JSON.stringify(event.message.text)}\n`);
    if (event.type === 'error' && !event.ref) process.stderr.write(`relay: ${event.code}: ${event.message}\n`);
  });
  try {
    await bot.start();
  } catch (err) {
    process.stderr.write(`error: cannot log in at ${url}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${bot.name} is online as PIN ${bot.pin} (keys in this process's memory only). Ctrl-C to stop.\n`);
  const stop = () => {
    bot.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
