/**
 * How the relay tells participants apart: by network address, as far as it can see them. Every
 * per-address limit (registrations, logins, connections of each kind, admin-token guesses) counts
 * by `addressKey`, so one host cannot multiply its share by taking more addresses inside its IPv6
 * /64, and an IPv4 client on a dual-stack socket counts once, whichever form its address takes.
 */

/**
 * The key an address is counted by: an IPv4 address (also when it arrives IPv4-mapped on a
 * dual-stack socket), or the /64 of an IPv6 address, since one host can take any number of
 * addresses inside its /64.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const bare = address.split('%')[0]!.toLowerCase();
  const [head = '', tail] = bare.split('::');
  const left = head ? head.split(':') : [];
  const right = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/**
 * The teacher's own machine: exactly 127.0.0.1 or ::1 (also IPv4-mapped). Each total keeps a share
 * for it, so the laptop's projector view and console get in whatever the network holds. Other
 * 127.x.y.z addresses are counted like any network address (the tests use them to stand for
 * several machines on the class network). Behind a TLS proxy on the laptop every participant
 * arrives from here, and the share is the class's (docs/security.md says so).
 */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  return a === '127.0.0.1' || a === '::1' || a === '::ffff:127.0.0.1';
}
