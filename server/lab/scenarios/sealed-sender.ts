import type { Scenario } from '../types.ts';

export const sealedSender: Scenario = {
  id: 'sealed-sender',
  title: 'Sealed sender: the relay delivers without knowing who sent',
  scene: 5,
  narration: {
    what: "The room turns on sealed sender: a direct message travels as a box sealed to its recipient, with the sender's identity and signature inside. The relay still delivers it — and records no sender. It still knows the recipient, the time, the size and the network address; and under a tap it must refuse sealed boxes, because it cannot see an escrow field inside one.",
    look: [
      { page: 'relay view', what: '"sealed" rows: the sender column says hidden; recipient, time and size are still there.' },
      { page: 'teacher panel', what: 'The metadata picture: new rows with an unknown sender.' },
    ],
    source: { event: 'Signal moves the sender\'s identity inside the encryption ("sealed sender")', date: '2018-10-29', link: 'https://signal.org/blog/sealed-sender/' },
  },
  async run(ctx) {
    await ctx.tap(false);
    await ctx.room('e2e', true);
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const sent = await ctx.say(bob, carol, 'Who sent this? The relay cannot say.');
    const meta = ctx.lab.deps.store.envelopeMetadata(sent.id);
    const hidden = meta?.sender === '';
    return {
      summary: hidden ? "Delivered with no sender in the relay's records; Carol still knows it was Bob (his signature is inside)." : 'The message went unsealed.',
      facts: {
        "sender in the relay's log": hidden ? 'none' : (meta?.sender ?? '-'),
        recipient: carol.pin,
        'Carol verified the sender': carol.m.messages.get(sent.id)?.from === bob.pin,
      },
    };
  },
};
