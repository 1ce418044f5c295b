/**
 * A small structured logger. Fields are whitelisted by the call sites: keys,
 * signatures, ciphertext and the admin token are never passed in, and any
 * field whose name suggests a secret is masked as a second line of defence.
 */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const SECRET_FIELD = /token|secret|key|sig|password|authorization/i;

function render(level: string, message: string, fields: Record<string, unknown> = {}): string {
  const parts = Object.entries(fields).map(([k, v]) => `${k}=${SECRET_FIELD.test(k) ? '[redacted]' : JSON.stringify(v)}`);
  return [new Date().toISOString(), level, message, ...parts].join(' ');
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
