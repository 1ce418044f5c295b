import type { Scenario } from '../types.ts';

const TEXTS = ['The shipment leaves on Friday.', 'Use the back entrance.', 'Burn this after reading.'];

export const forgedEscrow: Scenario = {
  id: 'forged-escrow',
  title: 'A forged escrow field: the relay accepts it, the regulator reads nothing',
  scene: 9,
  narration: {
    what: "The tap is on for all traffic. Mallory and Trudy run a modified app: it fills the escrow field with random bytes of the right length, under the regulator's key id. The relay checks that the field is there and well formed — without the escrow key it cannot check more — and delivers. Trudy reads every message; the regulator's console says the field does not open. Escrow catches the compliant, not the determined.",
    look: [
      {
        page: 'regulator console',
        what: "Mallory's and Trudy's intercepts: not opened, \"Its escrow field names the regulator's key but does not open with it: forged or corrupted.\"",
      },
      { page: 'relay view', what: 'The same envelopes with an escrow field "present … cannot check", exactly like an honest one.' },
      { page: 'teacher panel', what: 'The result: sent, accepted by the relay, opened by the regulator (0), read by Trudy.' },
    ],
    source: {
      event:
        'Matt Blaze, "Protocol Failure in the Escrowed Encryption Standard" (ACM CCS): the Clipper chip checks only a 16-bit checkword, so a random LEAF passes after about 65,536 tries',
      date: '1994',
      link: 'https://www.mattblaze.org/papers/eesproto.pdf',
    },
  },
  async run(ctx) {
    await ctx.room('e2e');
    await ctx.tap(true, { scope: 'all', announced: true });
    // Both rogue: the modified app forges the field on Trudy's answers too (client/core's sealing policy).
    const mallory = await ctx.bot('Mallory', { escrow: 'forge' });
    const trudy = await ctx.bot('Trudy', { escrow: 'forge' });
    const sent = [];
    for (const text of TEXTS) sent.push(await ctx.say(mallory, trudy, text));
    const ids = new Set(sent.map((m) => m.id));
    const store = ctx.lab.deps.store;
    const accepted = sent.filter((m) => store.envelopeMetadata(m.id) !== undefined && mallory.m.messages.get(m.id)?.state !== 'failed').length;
    const intercepts = ctx.lab.deps.regulator.recent(500).filter((i) => ids.has(i.env.id));
    const opened = intercepts.filter((i) => i.readable).length;
    const read = sent.filter((m, i) => trudy.m.messages.get(m.id)?.text === TEXTS[i]).length;
    const forged = intercepts.filter((i) => i.code === 'escrow_does_not_open').length;
    return {
      summary: `The relay accepted all ${accepted} of Mallory's ${sent.length} messages, each with an escrow field under the regulator's key id; the regulator opened ${opened}; Trudy read ${read}.`,
      facts: {
        sent: sent.length,
        'accepted by the relay': accepted,
        'archived by the regulator': intercepts.length,
        'opened by the regulator': opened,
        'field does not open (forged)': forged,
        'read by Trudy': read,
      },
    };
  },
};
