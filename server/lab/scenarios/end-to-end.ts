import type { Scenario } from '../types.ts';

export const endToEnd: Scenario = {
  id: 'end-to-end',
  title: 'End to end: the server has only ciphertext',
  scene: 1,
  narration: {
    what: "Bob and Carol write to each other. Each message key is sealed only to the two of them, so the relay — BlackBerry's server in the 2015 story — passes bytes it cannot open. It still sees who wrote to whom, when and how much.",
    look: [
      { page: 'relay view', what: 'The two envelopes: sender, recipient, size in clear; the body as hex; "none: end-to-end" in the escrow column.' },
      { page: 'regulator console', what: 'Both archived, both SEALED: no escrow field, nothing to open.' },
    ],
    source: {
      event: 'Pakistan demands access to every BES e-mail and BES BBM message; BlackBerry refuses to build a back door and says it will leave (COO Marty Beard)',
      date: '2015-11-30',
      link: 'https://www.theverge.com/2015/11/30/9818502/blackberry-pakistan-ends-service-government',
    },
  },
  async run(ctx) {
    await ctx.tap(false);
    await ctx.room('e2e');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const a = await ctx.say(bob, carol, 'Are we still on for Friday?');
    const b = await ctx.say(carol, bob, 'Yes, 7 pm at the usual place.');
    const opened = ctx.lab.deps.regulator.recent(50).filter((i) => (i.env.id === a.id || i.env.id === b.id) && i.readable).length;
    return {
      summary: "Two end-to-end messages passed the relay; the regulator's key opens neither.",
      facts: { messages: 2, 'opened by the regulator': opened, model: 'e2e' },
    };
  },
};
