/**
 * One relay-view or regulator-console socket, seen as a feed: a backlog sent in parts while the
 * socket has room, then live frames within a bound on what the relay holds for it unsent. A socket
 * whose unread data would pass the bound is cut (4004, then terminated after a grace period), so a
 * viewer that never reads costs the relay at most the bound, not the whole feed.
 */
import { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { CloseCode } from '../shared/protocol.ts';
import { MAKE_ROOM_CLOSE } from './edge-limits.ts';

/** How long a cut socket gets to finish the closing handshake before it is ended for good. */
export const CUT_GRACE_MS = 1000;
/** A backlog part aims at this size (one item more when a single item is bigger). */
export const PART_BYTES = 64 * 1024;

export class FeedSocket {
  /** The largest unsent backlog (bytes) seen right after a send. */
  maxBuffered = 0;
  private alive = true;
  private cutting = false;
  private waiting: (() => void) | null = null;
  private readonly tcp: Socket | undefined;

  constructor(
    readonly ws: WebSocket,
    private readonly bound: number,
    private readonly onCut: () => void,
  ) {
    this.tcp = tcpOf(ws);
    ws.on('pong', () => {
      this.alive = true;
    });
    // 'drain' comes once the TCP socket has written out everything it held (it follows every write
    // that filled it past its high-water mark, which a stalled backlog part always does).
    this.tcp?.on('drain', () => this.wake());
  }

  get open(): boolean {
    return this.ws.readyState === 1 && !this.cutting;
  }

  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  /** Room for another backlog part: less than half the bound waiting. */
  get hasRoom(): boolean {
    return this.ws.bufferedAmount < this.bound / 2;
  }

  /** A backlog part: the caller paces these with `hasRoom` and `whenDrained`. */
  sendPart(frame: string): void {
    if (!this.open) return;
    this.ws.send(frame);
    this.note();
  }

  /** A live frame: sent if it fits in the bound, else the socket is cut as a slow consumer. */
  sendLive(frame: string): boolean {
    if (!this.open) return false;
    if (this.ws.bufferedAmount + frame.length > this.bound) {
      this.cut();
      return false;
    }
    this.ws.send(frame);
    this.note();
    return true;
  }

  /** Call `fn` once the socket has drained (or a moment later, when no 'drain' is due). */
  whenDrained(fn: () => void): void {
    this.waiting = fn;
    if (!this.tcp?.writableNeedDrain) setTimeout(() => this.wake(), 20).unref();
  }

  cut(): void {
    if (this.cutting) return;
    this.cutting = true;
    this.waiting = null;
    this.onCut();
    this.ws.close(CloseCode.SlowConsumer, 'slow consumer: too much unread data');
    this.tcp?.pause();
    setTimeout(() => this.ws.terminate(), CUT_GRACE_MS).unref();
  }

  /** One heartbeat: a socket that did not answer the last ping is ended (it is gone, or never reads). */
  beat(): void {
    if (this.ws.readyState !== 1) return;
    if (!this.alive) {
      this.ws.terminate();
      return;
    }
    this.alive = false;
    try {
      this.ws.ping();
    } catch {
      this.ws.terminate();
    }
  }

  private wake(): void {
    const fn = this.waiting;
    this.waiting = null;
    if (fn && this.open) fn();
  }

  private note(): void {
    if (this.ws.bufferedAmount > this.maxBuffered) this.maxBuffered = this.ws.bufferedAmount;
  }
}

/**
 * Close a socket to make room for another address (FairCaps): "try again later", and ended for
 * good after the grace period, since a socket that never reads would never answer the close.
 */
export function closeToMakeRoom(ws: WebSocket): void {
  ws.close(MAKE_ROOM_CLOSE, 'the relay is full: closed to make room for another address (yours holds the most); try again later');
  setTimeout(() => ws.terminate(), CUT_GRACE_MS).unref();
}

/** The TCP socket under a ws WebSocket (ws keeps it in `_socket`; not part of its typed API). */
function tcpOf(socket: WebSocket): Socket | undefined {
  const tcp = (socket as unknown as { _socket?: unknown })._socket;
  return tcp instanceof Socket ? tcp : undefined;
}
