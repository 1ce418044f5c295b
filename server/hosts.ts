/**
 * Which Host and Origin headers the relay answers (DNS rebinding, cross-site WebSocket hijacking).
 *
 * A page on evil.example whose name is made to resolve to 127.0.0.1 sends `Host: evil.example:3000`
 * with a matching `Origin: http://evil.example:3000`: comparing the two only proves the request came
 * from a page on that same name, not that the name is ours. So the Host must be one this relay
 * serves, and the Origin (when a browser sends one) must then be exactly that scheme, host and port.
 *
 * The set is computed once at start (`allowedHosts`, a pure function the tests call directly) from
 * the bind address, the listening port, the machine's LAN addresses (when bound to all interfaces)
 * and the `--public-host` names; the classroom mode adds its names the same way.
 */
import type { NetworkInterfaceInfo } from 'node:os';

/** A name and port a client may use: `port` null is a Host header without a port (the scheme's default). */
export interface HostName {
  name: string;
  port: number | null;
}

export interface AllowedHosts {
  /** Each allowed name, with the ports it may carry and whether an https: Origin is allowed on it. */
  readonly rules: ReadonlyMap<string, ReadonlyMap<number | null, { tls: boolean }>>;
  /** The LAN addresses included (the ones `main.ts` prints), in order. */
  readonly lan: readonly string[];
  /** Every allowed host as `name:port` (or `name` alone for a default port), for messages and `--help`. */
  readonly list: readonly string[];
}

export interface AllowedHostsInput {
  /** The address the server listens on (`--host`). */
  bind: string;
  /** The port it listens on (the real one, after port 0 was resolved). */
  port: number;
  /** `--public-host NAME[:PORT]` values, e.g. a TLS proxy's name. */
  publicHosts?: readonly string[];
  /** `os.networkInterfaces()`; read only when bound to all interfaces. */
  interfaces?: NodeJS.Dict<NetworkInterfaceInfo[]>;
}

export type HostCheck = { ok: true } | { ok: false; reason: string };

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const ALL_INTERFACES = new Set(['0.0.0.0', '::', '[::]', '']);
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const IPV6_BRACKETED = /^\[[0-9a-f:.]+\]$/;

export function isLoopback(bind: string): boolean {
  return bind === 'localhost' || bind === '::1' || bind === '[::1]' || /^127\./.test(bind);
}

/** An address as it appears in a Host header: IPv6 in brackets, names in lower case. */
function hostForm(address: string): string {
  const a = address.toLowerCase();
  return a.includes(':') && !a.startsWith('[') ? `[${a}]` : a;
}

/** The machine's own IPv4 addresses on its networks (not loopback): the class network links `main.ts` prints. */
export function lanAddresses(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string[] {
  const out: string[] = [];
  for (const list of Object.values(interfaces)) for (const addr of list ?? []) if (addr.family === 'IPv4' && !addr.internal && !out.includes(addr.address)) out.push(addr.address);
  return out;
}

/**
 * Parse a Host header (or a `--public-host` value): `name`, `name:port`, `[v6]`, `[v6]:port`.
 * Returns null for anything else (two colons outside brackets, a port that is not 1–65535).
 */
export function parseHostHeader(value: string): HostName | null {
  const v = value.trim().toLowerCase();
  const m = /^(\[[^\]]*\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(v);
  if (!m) return null;
  const port = m[2] === undefined ? null : Number(m[2]);
  if (port !== null && (port < 1 || port > 65535)) return null;
  return { name: m[1]!, port };
}

/** Validate one `--public-host NAME[:PORT]` value; throws an Error whose message says what is wrong. */
export function parsePublicHost(value: string): HostName {
  const parsed = parseHostHeader(value);
  if (!parsed || !(DNS_NAME.test(parsed.name) || IPV4.test(parsed.name) || IPV6_BRACKETED.test(parsed.name))) {
    throw new Error(`--public-host must be NAME or NAME:PORT (a DNS name, an IPv4 address or a [bracketed] IPv6 address; port 1-65535), not "${value}"`);
  }
  return parsed;
}

/** The Host names and ports this relay answers, computed once at start. */
export function allowedHosts(input: AllowedHostsInput): AllowedHosts {
  const rules = new Map<string, Map<number | null, { tls: boolean }>>();
  const allow = (name: string, port: number | null, tls: boolean) => {
    const ports = rules.get(name) ?? new Map<number | null, { tls: boolean }>();
    ports.set(port, { tls: tls || (ports.get(port)?.tls ?? false) });
    rules.set(name, ports);
  };
  // Our own names with our own port; a browser leaves the port out of Host only when it is 80.
  const own = (name: string) => {
    allow(name, input.port, false);
    if (input.port === 80) allow(name, null, false);
  };
  const bind = input.bind.toLowerCase();
  const all = ALL_INTERFACES.has(bind);
  const lan = all ? lanAddresses(input.interfaces ?? {}) : [];
  if (all || isLoopback(bind)) for (const name of LOOPBACK_NAMES) own(name);
  if (!all) own(hostForm(bind));
  for (const address of lan) own(address);
  // A public host (a TLS proxy in front, a DNS name for the laptop): the port the client sees, which
  // may differ from ours; without one, the default ports and ours. https: Origins are allowed here only.
  for (const raw of input.publicHosts ?? []) {
    const { name, port } = parsePublicHost(raw);
    if (port === null) {
      allow(name, null, true);
      allow(name, input.port, true);
    } else {
      allow(name, port, true);
      if (port === 80 || port === 443) allow(name, null, true);
    }
  }
  const list = [...rules].flatMap(([name, ports]) => [...ports.keys()].map((p) => (p === null ? name : `${name}:${p}`)));
  return { rules, lan, list };
}

const defaultPort = (scheme: 'http:' | 'https:') => (scheme === 'https:' ? 443 : 80);

/**
 * Check a request's Host and Origin headers together. The Host must be allowed; an Origin, when
 * present, must be http: (or https: on a public host) with exactly the Host's name and port.
 * No Origin at all (Node bots, curl, the tests) passes: it does not come from a web page.
 */
export function checkHostAndOrigin(allowed: AllowedHosts, host: string | undefined, origin: string | undefined): HostCheck {
  if (host === undefined || host === '') return { ok: false, reason: 'no Host header' };
  const parsed = parseHostHeader(host);
  const rule = parsed ? allowed.rules.get(parsed.name)?.get(parsed.port) : undefined;
  if (!parsed || !rule)
    return { ok: false, reason: `Host ${JSON.stringify(host)} is not a name this relay serves (it serves ${allowed.list.join(', ')}; add others with --public-host)` };
  if (origin === undefined) return { ok: true };
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return { ok: false, reason: `Origin ${JSON.stringify(origin)} is not a web origin` };
  }
  const scheme = url.protocol;
  if (scheme !== 'http:' && (scheme !== 'https:' || !rule.tls)) {
    return { ok: false, reason: `Origin ${JSON.stringify(origin)}: scheme ${scheme} is not served on ${host} (http:, and https: only on a --public-host)` };
  }
  const originPort = url.port === '' ? defaultPort(scheme) : Number(url.port);
  const hostPort = parsed.port ?? defaultPort(scheme);
  if (url.hostname !== parsed.name || originPort !== hostPort || origin !== url.origin) {
    return { ok: false, reason: `Origin ${JSON.stringify(origin)} does not match Host ${JSON.stringify(host)}: a page from another site` };
  }
  return { ok: true };
}
