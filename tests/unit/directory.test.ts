/**
 * The client's side of the bounded directory (client/core/directory.ts and the
 * Messenger's use of it), on an in-memory socket: the test plays the relay.
 * The welcome carries only a page, so the Messenger looks up what it lacks,
 * keeps what it has seen, and waits as long as the relay asks before a retry.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Messenger, memoryStore, type KeyValueStore, type SocketLike } from '../../client/core/messenger.ts';
import { Lookups, MAX_DIRECTORY_ENTRIES, loadDirectory, mergeDirectory, saveDirectory, trimDirectory } from '../../client/core/directory.ts';
import { cryptoReady, newIdentity, toB64, type Identity } from '../../shared/crypto.ts';
import { sealEnvelope } from '../../shared/envelope.ts';
import { ErrorCode, MAX_LOOKUP_PINS, parseClientMessage, type ClientMessage, type DirectoryEntry, type Policy, type ServerMessage } from '../../shared/protocol.ts';

class FakeSocket implements SocketLike {
  readyState = 1;
  sent: ClientMessage[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  send(data: string): void {
    const parsed = parseClientMessage(data);
    if (!parsed.ok) throw new Error(`client sent an invalid frame: ${parsed.message}`);
    this.sent.push(parsed.value);
  }
  close(): void {
    this.readyState = 3;
  }
  deliver(msg: ServerMessage): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  all<T extends ClientMessage['type']>(type: T): Extract<ClientMessage, { type: T }>[] {
    return this.sent.filter((m): m is Extract<ClientMessage, { type: T }> => m.type === type);
  }
}

const OFF: Policy = {
  tap: false,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: null,
  escrowKid: null,
  epoch: 1,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};
const NONCE = Buffer.alloc(32, 7).toString('base64');
const entry = (id: Identity, name: string, online = false): DirectoryEntry => ({ pin: id.pin, name, pk: toB64(id.signPk), online });

let bob: Identity;
beforeAll(async () => {
  await cryptoReady();
  bob = newIdentity();
});
afterEach(() => {
  vi.useRealTimers();
});

/** A messenger logged in to the fake relay with a welcome page of `page` (itself added first), of `total` users. */
function loggedIn(page: DirectoryEntry[] = [], storage: KeyValueStore = memoryStore(), total = page.length + 1) {
  const socket = new FakeSocket();
  const m = new Messenger({ name: 'Alice', connect: () => socket, storage });
  void m.start();
  socket.deliver({ type: 'challenge', v: 2, nonce: NONCE, policy: OFF });
  socket.deliver({
    type: 'welcome',
    pin: m.pin,
    name: 'Alice',
    policy: OFF,
    total,
    directory: [{ pin: m.pin, name: 'Alice', pk: toB64(m.identity.signPk), online: true }, ...page],
  });
  return { socket, m, storage };
}

describe('the messenger with a bounded directory', () => {
  it('looks up the sender of an envelope it cannot place, then opens and acknowledges it', () => {
    const { socket, m } = loggedIn([], memoryStore(), 24_001);
    const { env } = sealEnvelope({ sender: bob, to: [{ pin: m.pin, signPk: m.identity.signPk }], conv: 'dm', body: { text: 'from beyond the page' } });
    socket.deliver({ type: 'envelope', qid: 9, env });
    expect(m.messages.has(env.id)).toBe(false);
    expect(socket.all('lookup')).toEqual([{ type: 'lookup', pins: [bob.pin] }]);
    expect(socket.all('ack')).toEqual([]);
    // A second envelope from the same sender does not ask again while the first lookup is out.
    const second = sealEnvelope({ sender: bob, to: [{ pin: m.pin, signPk: m.identity.signPk }], conv: 'dm', body: { text: 'and again' } }).env;
    socket.deliver({ type: 'envelope', qid: 10, env: second });
    expect(socket.all('lookup').length).toBe(1);

    socket.deliver({ type: 'users', users: [entry(bob, 'Bob')], unknown: [] });
    expect(m.messages.get(env.id)).toMatchObject({ state: 'received', text: 'from beyond the page' });
    expect(m.messages.get(second.id)).toMatchObject({ state: 'received', text: 'and again' });
    expect(socket.all('ack').flatMap((a) => a.qids)).toEqual([9, 10]);
    expect(m.directory.get(bob.pin)?.name).toBe('Bob');
  });

  it('shows an envelope from a sender the relay does not know as unreadable, and acknowledges it instead of asking for ever', () => {
    const { socket, m } = loggedIn();
    const { env } = sealEnvelope({ sender: bob, to: [{ pin: m.pin, signPk: m.identity.signPk }], conv: 'dm', body: { text: 'from a removed user' } });
    socket.deliver({ type: 'envelope', qid: 3, env });
    socket.deliver({ type: 'users', users: [], unknown: [bob.pin] });
    expect(m.messages.get(env.id)).toMatchObject({ state: 'unreadable', text: '' });
    expect(m.messages.get(env.id)?.error).toMatch(/does not know the sender/);
    expect(socket.all('ack').flatMap((a) => a.qids)).toEqual([3]);
  });

  it('keeps the entries it has seen in its storage: after a restart a contact beyond the welcome page is still there, shown offline, and asked for', () => {
    vi.useFakeTimers();
    const storage = memoryStore();
    const first = loggedIn([entry(bob, 'Bob', true)], storage);
    first.m.sendText([bob.pin], 'hello Bob');
    first.m.stop();

    // Back, with a welcome page that does not hold Bob (and holds someone offline: everyone online fits in it).
    const carol = newIdentity();
    const again = loggedIn([entry(carol, 'Carol', false)], storage, 3000);
    expect(again.m.directory.get(bob.pin)).toMatchObject({ name: 'Bob', online: false });
    expect(again.socket.all('lookup')).toEqual([{ type: 'lookup', pins: [bob.pin] }]);
    again.socket.deliver({ type: 'users', users: [entry(bob, 'Bob', true)], unknown: [] });
    expect(again.m.directory.get(bob.pin)?.online).toBe(true);
    expect(() => again.m.sendText([bob.pin], 'still here?')).not.toThrow();
  });

  it('after rate_limited it sends the envelope again no sooner than 1 s, and later when the relay says it needs longer', () => {
    vi.useFakeTimers();
    const { socket, m } = loggedIn([entry(bob, 'Bob', true)]);
    const quick = m.sendText([bob.pin], 'one');
    const slow = m.sendText([bob.pin], 'two');
    socket.deliver({ type: 'error', code: ErrorCode.RateLimited, message: 'rate limit', ref: quick.id, retryAfterMs: 30 });
    socket.deliver({ type: 'error', code: ErrorCode.RateLimited, message: 'output limit', ref: slow.id, retryAfterMs: 3500 });
    const sends = (id: string) => socket.all('send').filter((f) => f.env.id === id).length;
    vi.advanceTimersByTime(999);
    expect([sends(quick.id), sends(slow.id)]).toEqual([1, 1]);
    vi.advanceTimersByTime(2);
    expect([sends(quick.id), sends(slow.id)]).toEqual([2, 1]);
    vi.advanceTimersByTime(2500);
    expect(sends(slow.id)).toBe(2);
  });
});

describe('client/core/directory.ts', () => {
  it('asks for each PIN once per connection, in frames of at most 100, until the relay answers', () => {
    const lookups = new Lookups();
    const pins = Array.from({ length: 250 }, (_, i) => i.toString(16).toUpperCase().padStart(8, '0'));
    const frames = lookups.frames([...pins, ...pins]);
    expect(frames.map((f) => f.length)).toEqual([MAX_LOOKUP_PINS, MAX_LOOKUP_PINS, 50]);
    expect(lookups.frames(pins)).toEqual([]);
    lookups.answered(pins.slice(0, 3));
    expect(lookups.frames(pins)).toEqual([pins.slice(0, 3)]);
    lookups.reset();
    expect(lookups.frames(pins).flat().length).toBe(250);
  });

  it('keeps at most MAX_DIRECTORY_ENTRIES in memory, dropping the oldest offline entries that are no contact', () => {
    const directory = new Map<string, DirectoryEntry>();
    const contact = { pin: '0000000A', name: 'Contact', pk: toB64(bob.signPk), online: false };
    mergeDirectory(directory, [contact], new Set());
    const many = Array.from({ length: MAX_DIRECTORY_ENTRIES + 10 }, (_, i) => ({
      pin: (0x10000000 + i).toString(16).toUpperCase(),
      name: `U${i}`,
      pk: contact.pk,
      online: i === 0,
    }));
    mergeDirectory(directory, many, new Set([contact.pin]));
    expect(directory.size).toBe(MAX_DIRECTORY_ENTRIES);
    expect(directory.has(contact.pin)).toBe(true);
    expect(directory.has(many[0]!.pin)).toBe(true); // online
    expect(directory.has(many[1]!.pin)).toBe(false); // the oldest offline one
    trimDirectory(directory, new Set(), 0);
    expect([...directory.keys()]).toEqual([many[0]!.pin]);
  });

  it("saves contacts first and at most 1,000 entries, and loads only entries that pass the schema and whose PIN is their key's, all offline", () => {
    const storage = memoryStore();
    const directory = new Map<string, DirectoryEntry>();
    const people = Array.from({ length: 1500 }, () => newIdentity());
    for (const [i, p] of people.entries()) directory.set(p.pin, entry(p, `U${i}`, true));
    const contact = people[700]!.pin;
    saveDirectory(storage, directory, new Set([contact]));
    const loaded = loadDirectory(storage);
    expect(loaded.length).toBe(1000);
    expect(loaded[0]?.pin).toBe(contact);
    expect(loaded.every((e) => !e.online)).toBe(true);
    const wrongPin = { ...loaded[2]!, pin: '0BADF00D' }; // well formed, but the PIN is not its key's
    storage.setItem('backdoor-lab.directory', JSON.stringify([{ pin: 'bad', name: 'x', pk: 'y', online: true }, wrongPin, loaded[1]]));
    expect(loadDirectory(storage).map((e) => e.pin)).toEqual([loaded[1]!.pin]);
    storage.setItem('backdoor-lab.directory', '{not json');
    expect(loadDirectory(storage)).toEqual([]);
  });
});
