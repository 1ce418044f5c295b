import type { Scenario } from '../types.ts';

export const serverHeldKeys: Scenario = {
  id: 'server-held-keys',
  title: 'BES: the enterprise server holds the keys — a demand can be met',
  scene: 7,
  narration: {
    what: "The room switches to BlackBerry Enterprise Service's model: each device shares a key with its enterprise server, which opens every message key and wraps it again for the recipient. The server reads everything — so whoever runs it, or compels it, does. BlackBerry could refuse Pakistan because, for BES, it did not run that server: the enterprise did.",
    look: [
      { page: 'relay view', what: '"The enterprise server read it: …" under each message.' },
      { page: 'regulator console', what: '"Serve a demand on the operator": plaintext for server-held and app-key messages, metadata and ciphertext only for end to end.' },
    ],
    source: {
      event: 'Pakistan rescinds its shutdown order, "accepting BlackBerry\'s position that we cannot provide the content of our customers\' BES traffic"',
      date: '2015-12-31',
      link: 'https://www.reuters.com/article/pakistan-telecoms-idUSL3N14K2WB20151231',
    },
  },
  async run(ctx) {
    await ctx.tap(false);
    await ctx.room('server-key');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const sent = await ctx.say(bob, carol, 'Board meeting moved to Tuesday. Confidential.');
    const line = ctx.lab.deps.regulator.archived(0, 100_000).find((l) => l.env.id === sent.id);
    const handed = line ? ctx.lab.deps.enterprise.handOver(line.env) : null;
    return {
      summary: handed?.status === 'plaintext' ? `The enterprise server read it, and hands it over on demand: "${handed.text}"` : 'Nothing to hand over.',
      facts: {
        model: 'server-key',
        'Carol read it': carol.m.messages.get(sent.id)?.text === 'Board meeting moved to Tuesday. Confidential.',
        'operator hands over': handed?.status ?? '-',
      },
    };
  },
};
