/**
 * The messages a tab holds (client/core/history.ts), counted rather than timed: how many message
 * fields the messenger reads to list the chats, as the chat page does two or three times for every
 * frame it receives. Counting is deterministic on a busy machine; a timing is not.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady } from '../../shared/crypto.ts';
import { Messenger, memoryStore, type ChatMessage, type SocketLike } from '../../client/core/messenger.ts';
import { KEEP_PER_CHAT } from '../../client/core/history.ts';

beforeAll(() => cryptoReady());

const CHAT = 'g-0123456789abcdef';
let reads = 0;
/** A message whose every field read is counted. */
function counted(n: number, chat = CHAT): ChatMessage {
  const msg: ChatMessage = {
    id: n.toString(16).padStart(32, '0'),
    chat,
    from: 'AAAAAAAA',
    to: ['BBBBBBBB'],
    ts: 1e12 + n,
    at: 1e12 + n,
    direction: 'in',
    text: 'spam',
    state: 'received',
    deliveredTo: [],
    readBy: [],
    readers: { model: 'e2e', participants: ['AAAAAAAA', 'BBBBBBBB'], escrowKid: null },
    seen: false,
  };
  return new Proxy(msg, {
    get(target, key, receiver) {
      reads += 1;
      return Reflect.get(target, key, receiver);
    },
  });
}

const offline = (keepPerChat?: number) => new Messenger({ name: 'Victim', connect: () => ({}) as SocketLike, storage: memoryStore(), ...(keepPerChat ? { keepPerChat } : {}) });

describe('the messages a tab holds', () => {
  it('with 20,000 messages in one chat, listing the chats reads as many message fields as with 1,000, and 20,000 arrivals each followed by what the page does per frame read a bounded number of fields per message', () => {
    const m = offline(25_000);
    let perMessageMax = 0;
    let total = 0;
    let listAt1000 = 0;
    for (let n = 0; n < 20_000; n++) {
      reads = 0;
      m.history.add(counted(n));
      // The page per incoming frame: the sidebar, the open chat's entry, marking it read.
      m.chats();
      m.chats();
      m.markChatRead(CHAT);
      total += reads;
      perMessageMax = Math.max(perMessageMax, reads);
      if (n === 999) {
        reads = 0;
        m.chats();
        listAt1000 = reads;
      }
    }
    reads = 0;
    m.chats();
    const listAt20000 = reads;
    reads = 0;
    const thread = m.messagesIn(CHAT);
    const threadReads = reads;
    m.stop();
    console.log(
      `[figures] fields read: chats() at 1,000 messages ${listAt1000}, at 20,000 ${listAt20000}; per arrival + page work at most ${perMessageMax}, in all ${total} for 20,000 (${(total / 20_000).toFixed(1)} each)`,
    );
    expect(thread).toHaveLength(20_000);
    expect(threadReads, 'fields read to hand out a chat of 20,000').toBe(0);
    expect(listAt20000, 'chats() at 20,000 messages against 1,000').toBe(listAt1000);
    // Quadratic (today's main) would read every message per call: 3 × 20,000 × 20,000 / 2 = 6e8.
    expect(total, "fields read for 20,000 arrivals with the page's work after each").toBeLessThanOrEqual(40 * 20_000);
  });

  it('a chat keeps at most KEEP_PER_CHAT (+ a quarter of slack) messages in memory: a flood of 20,000 drops the oldest, counts them, and keeps a message still being sent', () => {
    const m = offline();
    const flood = 20_000;
    for (let n = 0; n < flood; n++) m.history.add(counted(n));
    const line = m.chats().find((c) => c.chat === CHAT)!;
    m.stop();
    expect(line.held).toBeLessThanOrEqual(KEEP_PER_CHAT + KEEP_PER_CHAT / 4);
    expect(line.held + line.dropped).toBe(flood);
    expect(m.messages.size).toBe(line.held);
    expect(m.messagesIn(CHAT).at(-1)?.id, 'the newest is kept').toBe((flood - 1).toString(16).padStart(32, '0'));
    expect(line.unread).toBe(line.held);
  });
});
