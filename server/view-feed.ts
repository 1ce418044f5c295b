/**
 * The public relay view's feed (`/ws/relay-view`): what the server sees, live, to anyone.
 *
 * The relay keeps one backlog for all viewers, bounded by count and by bytes. A new viewer gets the
 * directory and then that backlog in parts (`backlog`, then `backlog-more` frames), each sent only
 * while less than half its buffer bound is waiting; once caught up it gets live `traffic` frames,
 * and one that would pass the bound is cut. What one viewer costs is its place in the backlog and
 * at most its bound in unsent bytes, however slowly it reads (or if it never reads at all).
 */
import type { WebSocket } from 'ws';
import type { DirectoryEntry, TrafficEvent, ViewerMessage } from '../shared/protocol.ts';
import type { EdgeLimits } from './edge-limits.ts';
import { FeedSocket, PART_BYTES } from './feed-socket.ts';

export interface ViewSource {
  observe(name: string, observer: (event: TrafficEvent) => void): () => void;
  directory(): DirectoryEntry[];
}

interface Held {
  seq: number;
  event: TrafficEvent;
  /** Serialized when a viewer first needs it (with no viewer, nothing is serialized). */
  json: string | null;
  bytes: number;
}

interface Viewer {
  socket: FeedSocket;
  /** The first frame (`backlog`, which resets the page) has gone out. */
  started: boolean;
  /** Directory entries go out in PIN order; the last PIN sent, or null before the first. */
  dirAfter: string | null;
  dirDone: boolean;
  /** The next backlog event to send. */
  seq: number;
  live: boolean;
}

/** A directory snapshot serves the viewers that start within this time of it. */
const DIRECTORY_SNAPSHOT_MS = 1000;

export class ViewFeed {
  private readonly held: Held[] = [];
  private heldBytes = 0;
  private nextSeq = 1;
  private readonly viewers = new Set<Viewer>();
  private snapshot: { at: number; entries: { pin: string; json: string }[] } | null = null;
  private readonly unobserve: () => void;
  /** Viewers cut as slow consumers. */
  cuts = 0;

  constructor(
    private readonly source: ViewSource,
    private readonly limits: EdgeLimits,
  ) {
    this.unobserve = source.observe('relay view (public)', (event) => this.push(event));
  }

  add(ws: WebSocket): FeedSocket {
    const socket = new FeedSocket(ws, this.limits.feedMaxBufferedBytes, () => (this.cuts += 1));
    const viewer: Viewer = { socket, started: false, dirAfter: null, dirDone: false, seq: this.held[0]?.seq ?? this.nextSeq, live: false };
    this.viewers.add(viewer);
    ws.on('close', () => this.viewers.delete(viewer));
    this.pump(viewer);
    return socket;
  }

  /** Events and bytes held for new viewers (bounded by viewBacklogEvents and viewBacklogBytes). */
  backlogSize(): { events: number; bytes: number } {
    return { events: this.held.length, bytes: this.heldBytes };
  }

  /** Unsent bytes the relay holds for each viewer right now. */
  bufferedAmounts(): number[] {
    return [...this.viewers].map((v) => v.socket.buffered);
  }

  /** The largest unsent backlog any viewer held right after a send. */
  maxBuffered(): number {
    return Math.max(0, ...[...this.viewers].map((v) => v.socket.maxBuffered));
  }

  close(): void {
    this.unobserve();
  }

  private push(event: TrafficEvent): void {
    const item: Held = { seq: this.nextSeq++, event, json: null, bytes: estimateBytes(event) };
    this.held.push(item);
    this.heldBytes += item.bytes;
    while (this.held.length > this.limits.viewBacklogEvents || (this.heldBytes > this.limits.viewBacklogBytes && this.held.length > 1)) {
      this.heldBytes -= this.held.shift()!.bytes;
    }
    if (!this.viewers.size) return;
    let frame: string | null = null;
    for (const viewer of this.viewers) {
      // A viewer still in its backlog gets this event in turn, from the backlog.
      if (!viewer.live) continue;
      frame ??= `{"type":"traffic","event":${json(item)}}`;
      viewer.socket.sendLive(frame);
      viewer.seq = item.seq + 1;
    }
  }

  /** Send the next parts of a viewer's backlog while it has room; then wait for it to drain. */
  private pump(viewer: Viewer): void {
    const socket = viewer.socket;
    while (!viewer.live && socket.open && socket.hasRoom) {
      const directory: string[] = [];
      const events: string[] = [];
      let size = 0;
      if (!viewer.dirDone) {
        const entries = this.directorySnapshot();
        let i = viewer.dirAfter === null ? 0 : firstAfter(entries, viewer.dirAfter);
        for (; i < entries.length && (size === 0 || size + entries[i]!.json.length <= PART_BYTES); i++) {
          directory.push(entries[i]!.json);
          size += entries[i]!.json.length;
          viewer.dirAfter = entries[i]!.pin;
        }
        viewer.dirDone = i >= entries.length;
      }
      if (viewer.dirDone) {
        const first = this.held[0]?.seq ?? this.nextSeq;
        if (viewer.seq < first) viewer.seq = first; // fell out of the backlog while it waited: older than what is kept
        for (let i = viewer.seq - first; i < this.held.length; i++) {
          const text = json(this.held[i]!);
          if (size > 0 && size + text.length > PART_BYTES) break;
          events.push(text);
          size += text.length;
          viewer.seq += 1;
        }
      }
      const type: ViewerMessage['type'] = viewer.started ? 'backlog-more' : 'backlog';
      if (!viewer.started || size > 0) socket.sendPart(`{"type":"${type}","events":[${events.join(',')}],"directory":[${directory.join(',')}]}`);
      viewer.started = true;
      if (viewer.dirDone && viewer.seq >= this.nextSeq) viewer.live = true;
    }
    if (!viewer.live && socket.open) socket.whenDrained(() => this.pump(viewer));
  }

  /**
   * The directory, serialized and in PIN order, shared by every viewer that starts within a second
   * of it: viewers keep only the last PIN they got, so one snapshot is held whatever their number.
   */
  private directorySnapshot(): { pin: string; json: string }[] {
    const now = Date.now();
    if (!this.snapshot || now - this.snapshot.at > DIRECTORY_SNAPSHOT_MS) {
      const entries = this.source.directory().map((d) => ({ pin: d.pin, json: JSON.stringify(d) }));
      entries.sort((a, b) => (a.pin < b.pin ? -1 : a.pin > b.pin ? 1 : 0));
      this.snapshot = { at: now, entries };
    }
    return this.snapshot.entries;
  }
}

function json(item: Held): string {
  item.json ??= JSON.stringify(item.event);
  return item.json;
}

/** Index of the first entry whose PIN sorts after `pin`. */
function firstAfter(entries: { pin: string }[], pin: string): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid]!.pin <= pin) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * An event's serialized size, near enough to bound the backlog by bytes without serializing events
 * nobody may ever ask for. An envelope event is dominated by its envelope, whose size the relay
 * already knows (`bytes`); the rest are small, but for a policy naming many PINs.
 */
function estimateBytes(event: TrafficEvent): number {
  switch (event.kind) {
    case 'envelope':
      return event.bytes + 12 * event.online.length + 160;
    case 'policy':
      return 12 * event.policy.pins.length + 300;
    default:
      return 300;
  }
}
