import type { Scenario } from '../types.ts';

export const metadataOnly: Scenario = {
  id: 'metadata-only',
  title: 'Metadata only: what the relay knows without any tap',
  scene: 4,
  narration: {
    what: "No tap, no key: every message is end to end. Yet the relay's own log says who talked to whom, when, how often and how much. Bob and Carol talk a lot; Dave writes to Bob once, late. The picture on the teacher panel is built from that log alone.",
    look: [
      { page: 'teacher panel', what: 'The metadata picture: who wrote to whom, how many messages and bytes, first and last time.' },
      { page: 'relay view', what: 'Every row has a sender, a recipient, a time and a size in clear.' },
    ],
    source: {
      event:
        'After the Salt Typhoon breach of US carriers, CISA\'s Mobile Communications Best Practice Guidance: "Use only end-to-end encrypted communications" — the content is protected; who, when and how much are not',
      date: '2024-12-18',
      link: 'https://www.cisa.gov/sites/default/files/2024-12/guidance-mobile-communications-best-practices.pdf',
    },
  },
  async run(ctx) {
    await ctx.tap(false);
    await ctx.room('e2e');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const dave = await ctx.bot('Dave');
    for (let i = 0; i < 3; i++) {
      await ctx.say(bob, carol, `Meeting note ${i + 1}.`);
      await ctx.say(carol, bob, `Got it (${i + 1}).`);
    }
    await ctx.say(dave, bob, 'Can we talk? Not on the phone.');
    const picture = ctx.lab.metadata();
    const bobCarol = picture.pairs.find((p) => p.from === bob.pin && p.to === carol.pin)?.count ?? 0;
    return {
      summary: `Without opening a single message the relay knows Bob wrote to Carol ${bobCarol} times and that Dave wrote to Bob.`,
      facts: {
        envelopes: picture.envelopes,
        pairs: picture.pairs.length,
        'Bob → Carol': bobCarol,
        'Dave → Bob': picture.pairs.find((p) => p.from === dave.pin && p.to === bob.pin)?.count ?? 0,
      },
    };
  },
};
