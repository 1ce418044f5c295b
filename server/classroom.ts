/**
 * Classroom mode (`npm start -- --classroom`): a class joins from its own phones and laptops over
 * the LAN. Joining needs the class code: a short random code printed in the terminal, in the join
 * link's QR code and on the teacher panel. The relay checks it in the login (`hello.code`) before
 * the signature, the directory or the registration budget are touched, so a wrong or missing code
 * registers nothing. Wrong codes are slowed per network address, as wrong admin tokens are.
 *
 * The code travels in the join link's fragment (`/#code=…`): a browser never sends a fragment to a
 * server, so it is in no request line, no log and no Referer; the chat page keeps it in this
 * browser's storage and takes it out of the address bar.
 */
import { randomInt, timingSafeEqual } from 'node:crypto';
import { renderSVG, renderUnicodeCompact } from 'uqr';
import { CLASS_CODE_ALPHABET, CLASS_CODE_LENGTH, ErrorCode, type ClassCode } from '../shared/protocol.ts';
import { AdminGuard, retryAfterSeconds } from './admin-guard.ts';

/** How wrong class codes are slowed per address: a few typos free, then a lockout doubling from 2 s to 5 min. */
export interface ClassCodeLimits {
  /** Wrong codes from one address answered at once (people mistype). */
  freeFailures: number;
  lockoutMinMs: number;
  lockoutMaxMs: number;
  /** A quiet spell this long forgets an address's wrong codes. */
  forgetMs: number;
}

export const DEFAULT_CLASS_CODE_LIMITS: ClassCodeLimits = { freeFailures: 5, lockoutMinMs: 2000, lockoutMaxMs: 5 * 60_000, forgetMs: 15 * 60_000 };

/** A new random class code (6 of 29 characters: about 5.9 × 10^8 codes). */
export function newClassCode(): ClassCode {
  let code = '';
  for (let i = 0; i < CLASS_CODE_LENGTH; i++) code += CLASS_CODE_ALPHABET[randomInt(CLASS_CODE_ALPHABET.length)];
  return code;
}

export type CodeVerdict = { ok: true } | { ok: false; code: ErrorCode; message: string; retryAfterMs?: number };

export class Classroom {
  /** Hidden from the teacher panel and the projector (joining with it still works). */
  hidden = false;
  /** Wrong codes refused, from every address together (for the teacher and the tests). */
  wrongCodes = 0;
  private readonly guard: AdminGuard;
  readonly limits: ClassCodeLimits;

  constructor(
    readonly code: ClassCode,
    limits: Partial<ClassCodeLimits> = {},
    now: () => number = Date.now,
  ) {
    this.limits = { ...DEFAULT_CLASS_CODE_LIMITS, ...limits };
    const l = this.limits;
    this.guard = new AdminGuard({ adminFreeFailures: l.freeFailures, adminLockoutMinMs: l.lockoutMinMs, adminLockoutMaxMs: l.lockoutMaxMs, adminForgetMs: l.forgetMs }, now);
  }

  /**
   * Check the code a login carries, from `address`. An address locked out for wrong codes is not
   * even compared; a missing code is not counted as a guess (it costs a login like any other).
   */
  check(presented: string | undefined, address: string): CodeVerdict {
    const wait = this.guard.lockedFor(address);
    if (wait > 0) {
      const seconds = retryAfterSeconds(wait);
      return { ok: false, code: ErrorCode.ClassCodeLocked, message: `too many wrong class codes from your address: try again in ${seconds} s`, retryAfterMs: wait };
    }
    if (presented === undefined)
      return { ok: false, code: ErrorCode.ClassCodeRequired, message: 'this room needs the class code: scan the QR code on the projector, or type the code the teacher shows' };
    if (presented.length !== this.code.length || !timingSafeEqual(Buffer.from(presented), Buffer.from(this.code))) {
      this.wrongCodes += 1;
      const lock = this.guard.failed(address);
      const more = lock > 0 ? ` Too many wrong codes: wait ${retryAfterSeconds(lock)} s before the next try.` : '';
      return { ok: false, code: ErrorCode.ClassCodeWrong, message: `that is not this room's class code: check it on the projector.${more}` };
    }
    return { ok: true };
  }

  /** Count a refused attempt that is not a wrong code (a removed person trying again) toward the same lockout. */
  strike(address: string): void {
    this.guard.failed(address);
  }

  /** Wrong codes on record for an address (tests). */
  failures(address: string): number {
    return this.guard.failures(address);
  }
}

/** The link a participant opens: the chat page, with the class code in the fragment (never sent to the server). */
export function joinUrl(base: string, code: ClassCode): string {
  return `${base}/#code=${code}`;
}

/** The QR code of a link for a terminal: two modules per character, light modules drawn (a dark terminal). */
export function terminalQr(url: string): string {
  return renderUnicodeCompact(url, { ecc: 'M', border: 2 });
}

/** The QR code of a link as an SVG image in a data: URL, for an <img> on the teacher panel (the CSP allows img-src data:). */
export function qrDataUrl(url: string): string {
  const svg = renderSVG(url, { ecc: 'M', border: 2, pixelSize: 8 });
  return `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}`;
}

/**
 * What `npm start -- --classroom` prints for the class: the LAN address(es), the join link of
 * each, the QR code of the first and the class code. With no LAN address (no network, or bound
 * to one address), the links use `fallbackBase` and say so.
 */
export function classroomLines(input: { lan: readonly string[]; port: number; code: ClassCode; fallbackBase: string }): string[] {
  const bases = input.lan.map((a) => `http://${a}:${input.port}`);
  const first = bases[0] ?? input.fallbackBase;
  const lines = [
    '',
    'Classroom mode: the class joins on this network with the class code.',
    `  class code:         ${input.code.slice(0, 3)} ${input.code.slice(3)}   (spaces do not matter; also on the teacher panel)`,
  ];
  if (bases.length) {
    lines.push(`  this laptop's LAN address${bases.length > 1 ? 'es' : ''}: ${input.lan.join(', ')}`);
    lines.push('  participants open (or scan the QR code below):');
    for (const base of bases) lines.push(`    ${joinUrl(base, input.code)}`);
  } else if (/^http:\/\/(127\.|\[::1\]|localhost)/.test(first)) {
    lines.push('  no LAN address to offer: is this laptop on the class network (or was --host set to loopback)? Until then the link works on this machine only:');
    lines.push(`    ${joinUrl(first, input.code)}`);
  } else {
    lines.push('  participants open (or scan the QR code below):');
    lines.push(`    ${joinUrl(first, input.code)}`);
  }
  lines.push(
    '',
    ...terminalQr(joinUrl(first, input.code))
      .split('\n')
      .map((l) => `  ${l}`),
  );
  lines.push('  If a phone on the same Wi-Fi cannot open the link, the network isolates its devices: see "Running a workshop" in README.md.');
  return lines;
}
