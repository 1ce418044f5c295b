/**
 * A small structured logger. Fields are whitelisted by the call sites: keys,
 * signatures, ciphertext and the admin token are never passed in, and any
 * field whose name suggests a secret is masked as a second line of defence.
 *
 * Nothing raw reaches the terminal: values are JSON-quoted, and every control,
 * format or separator character left after that (C1 controls, bidi overrides,
 * zero-width characters, U+2028, a lone surrogate...) is written as a \uXXXX
 * escape, so a name, a header or an error message can neither move the cursor,
 * recolour the terminal, reorder the line nor forge another line.
 */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const SECRET_FIELD = /token|secret|key|sig|password|authorization/i;

/** Characters never written raw: controls, format characters, line and paragraph separators, lone surrogates, and any space but U+0020. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]|(?! )\p{Zs}/gu;

/** Write each unsafe character as JSON \uXXXX escapes (two for a character outside the BMP), keeping the line valid JSON where it was. */
export function escapeForLog(text: string): string {
  return text.replace(UNSAFE, (c) => [...Array(c.length).keys()].map((i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));
}

function render(level: string, message: string, fields: Record<string, unknown> = {}): string {
  const parts = Object.entries(fields).map(([k, v]) => `${escapeForLog(k)}=${SECRET_FIELD.test(k) ? '[redacted]' : escapeForLog(String(JSON.stringify(v)))}`);
  return [new Date().toISOString(), level, escapeForLog(message), ...parts].join(' ');
}

export function consoleLogger(write: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Logger {
  return {
    info: (message, fields) => write(render('info', message, fields)),
    error: (message, fields) => write(render('error', message, fields)),
  };
}

/** Collects lines in memory: tests use it to prove no secret is ever logged. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, ...consoleLogger((line) => lines.push(line)) };
}

export const silentLogger: Logger = { info: () => {}, error: () => {} };
