/**
 * What the relay needs of a connection, and nothing more: send a text frame, close it, end it,
 * ping it, stop and resume reading, and how much is still unsent. A `ws` WebSocket is one
 * (wsTransport); an in-memory pair (memoryPair) is another, so bots and protocol tests can talk to
 * a real relay in the same process with no network at all.
 */
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { SocketLike } from '../client/core/messenger.ts';

/** A frame as it arrives: ws hands over Buffers (or fragments); the memory pair hands over text. */
export type FrameData = Buffer | ArrayBuffer | Buffer[] | string;

export interface Transport {
  /** 0 connecting, 1 open, 2 closing, 3 closed (the WebSocket values). */
  readonly readyState: number;
  /** Bytes handed to `send` and not yet written out. */
  readonly bufferedAmount: number;
  readonly isPaused: boolean;
  send(frame: string): void;
  close(code: number, reason: string): void;
  /** End at once, without a closing handshake. */
  terminate(): void;
  ping(): void;
  /** Stop reading (frames already read are still delivered), and read again. */
  pause(): void;
  resume(): void;
  /** Hold writes back so the frames of one turn leave together (a no-op where there is nothing to batch). */
  cork(): void;
  uncork(): void;
  on(event: 'message', listener: (data: FrameData, isBinary: boolean) => void): void;
  on(event: 'close', listener: () => void): void;
  on(event: 'pong', listener: () => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
}

/** A `ws` WebSocket as a Transport. Corking goes to its TCP socket (ws keeps it in `_socket`, outside its typed API). */
export function wsTransport(ws: WebSocket): Transport {
  const tcp = (ws as unknown as { _socket?: unknown })._socket;
  const socket = tcp instanceof Socket ? tcp : null;
  let corked = false;
  return {
    get readyState() {
      return ws.readyState;
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    get isPaused() {
      return ws.isPaused;
    },
    send: (frame) => ws.send(frame),
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
    ping: () => ws.ping(),
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    cork: () => {
      // ws uncorks after each frame, but corks nest: one outer cork holds the turn's frames together.
      if (socket && !socket.writableCorked) {
        socket.cork();
        corked = true;
      }
    },
    uncork: () => {
      if (socket && corked) {
        corked = false;
        socket.uncork();
      }
    },
    on: (event: string, listener: (...args: never[]) => void) => void ws.on(event, listener as never),
  } as Transport;
}

/**
 * Two ends of an in-memory connection: `client` is what client/core's Messenger takes (the
 * browser WebSocket's shape), `server` is what the relay takes. Frames cross on the next
 * microtask, in order, as text. Closing either end closes both, with the code and reason.
 */
export function memoryPair(): { client: SocketLike; server: Transport } {
  const events = new EventEmitter();
  let state = 1;
  let paused = false;
  const held: string[] = [];
  const client: SocketLike = {
    get readyState() {
      return state;
    },
    send(data: string) {
      if (state !== 1) throw new Error('the in-memory socket is closed');
      queueMicrotask(() => {
        if (state === 3) return;
        if (paused) held.push(data);
        else events.emit('message', data, false);
      });
    },
    close(code = 1000, reason = '') {
      end(code, reason);
    },
    onopen: null,
    onmessage: null,
    onclose: null,
    onerror: null,
  };
  const end = (code: number, reason: string) => {
    if (state !== 1) return;
    // Closing until the frames already sent have crossed (they were queued first), as a real socket delivers them before its close.
    state = 2;
    queueMicrotask(() => {
      state = 3;
      events.emit('close');
      client.onclose?.({ code, reason });
    });
  };
  const server: Transport = {
    get readyState() {
      return state;
    },
    bufferedAmount: 0,
    get isPaused() {
      return paused;
    },
    send(frame: string) {
      if (state !== 1) return;
      queueMicrotask(() => {
        if (state !== 3) client.onmessage?.({ data: frame });
      });
    },
    close: (code, reason) => end(code, reason),
    terminate: () => end(1006, ''),
    ping: () => queueMicrotask(() => events.emit('pong')),
    pause: () => {
      paused = true;
    },
    resume: () => {
      paused = false;
      for (const data of held.splice(0)) events.emit('message', data, false);
    },
    cork: () => {},
    uncork: () => {},
    on: (event: string, listener: (...args: never[]) => void) => void events.on(event, listener as never),
  } as Transport;
  queueMicrotask(() => client.onopen?.({}));
  return { client, server };
}
