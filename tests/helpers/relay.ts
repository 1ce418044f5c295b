/**
 * Test helpers: a real relay on 127.0.0.1 port 0, and messengers built on
 * client/core talking to it over real WebSockets.
 */
import { afterEach, beforeAll } from 'vitest';
import WebSocket from 'ws';
import { startApp, type App, type AppOptions } from '../../server/app.ts';
import { Messenger, memoryStore, type KeyValueStore, type MessengerEvent, type SealingPolicy, type SocketLike } from '../../client/core/messenger.ts';
import { cryptoReady } from '../../shared/crypto.ts';

export async function startTestRelay(options: AppOptions = {}): Promise<App & { wsUrl: string }> {
  await cryptoReady();
  const app = await startApp({ port: 0, host: '127.0.0.1', dataDir: null, adminToken: 'test-admin-token', ...options });
  return Object.assign(app, { wsUrl: `${app.url.replace('http', 'ws')}/ws` });
}

/**
 * For a test file: `relay()` starts a test relay that is closed after the test, and `cleanup` takes
 * anything else to undo after it (run newest first, awaited). libsodium is made ready before all.
 */
export function relaysPerTest(): { relay: (options?: AppOptions) => Promise<App & { wsUrl: string }>; cleanup: (() => unknown)[] } {
  const cleanup: (() => unknown)[] = [];
  beforeAll(async () => {
    await cryptoReady();
  });
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });
  const relay = async (options: AppOptions = {}) => {
    const app = await startTestRelay(options);
    cleanup.push(() => app.close());
    return app;
  };
  return { relay, cleanup };
}

export function connectTo(wsUrl: string): () => SocketLike {
  return () => new WebSocket(wsUrl) as unknown as SocketLike;
}

export interface TestUser {
  m: Messenger;
  events: MessengerEvent[];
  storage: KeyValueStore;
}

/** A logged-in user. Pass `storage` again to come back as the same identity. */
export async function user(wsUrl: string, name: string, storage: KeyValueStore = memoryStore(), sealing?: SealingPolicy): Promise<TestUser> {
  const m = new Messenger({ name, connect: connectTo(wsUrl), storage, backoff: { minMs: 50, maxMs: 500 }, ...(sealing ? { sealing } : {}) });
  const events: MessengerEvent[] = [];
  m.on((e) => events.push(e));
  await m.start();
  return { m, events, storage };
}

/** Wait until `check` is true, polling; fails with `what` after `ms`. */
export async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Wait until `u` knows every PIN in `pins` (presence is batched). */
export const knows = (u: TestUser, ...pins: string[]) => until(() => pins.every((p) => u.m.directory.has(p)), `${u.m.name} knows ${pins.join(',')}`);

/** The path a page loads an asset under (its content-hashed name): `assetPath('chat.js')` → `/assets/chat-3F2A9C1B.js`. */
export async function assetPath(plain: string): Promise<string> {
  const { buildBundles } = await import('../../server/http.ts');
  const hashed = (await buildBundles()).names.get(plain);
  if (!hashed) throw new Error(`no asset ${plain} is built`);
  return `/assets/${hashed}`;
}
