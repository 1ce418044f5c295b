import type { Scenario } from '../types.ts';

export const tapOn: Scenario = {
  id: 'tap-on',
  title: 'The regulator tap: key escrow for all traffic',
  scene: 2,
  narration: {
    what: "The regulator turns the tap on for all traffic, as Pakistan demanded. From now on every compliant client also seals each message key to the regulator's escrow key — today's form of the Clipper chip's LEAF — and the console reads the messages live. Messages sent before stay closed.",
    look: [
      { page: 'chat', what: 'The banner: "The regulator can read new messages you send"; each new message names the regulator under "Who can read".' },
      { page: 'regulator console', what: 'New intercepts marked READ, with the plaintext; the earlier ones still SEALED.' },
      { page: 'relay view', what: 'The escrow column: "present … cannot check" — the relay cannot tell a genuine field from a forged one.' },
    ],
    source: {
      event: 'The Clipper chip and its Law Enforcement Access Field, announced by the White House',
      date: '1993-04-16',
      link: 'https://www.mattblaze.org/papers/eesproto.pdf',
    },
  },
  async run(ctx) {
    await ctx.room('e2e');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    await ctx.tap(true, { scope: 'all', announced: true });
    const a = await ctx.say(bob, carol, 'Bring the quarterly numbers. They are not public yet.');
    const b = await ctx.say(carol, bob, "Will do. Please don't forward this.");
    const read = ctx.lab.deps.regulator.recent(50).filter((i) => (i.env.id === a.id || i.env.id === b.id) && i.readable);
    return {
      summary: `The tap is on: the regulator read ${read.length} of the 2 new messages.`,
      facts: { messages: 2, 'opened by the regulator': read.length, tap: 'all traffic, announced' },
    };
  },
};
