import { keysOf } from '../../../shared/protocol.ts';
import { INSIDER_NAME } from '../insider.ts';
import type { Scenario } from '../types.ts';

export const insiderTap: Scenario = {
  id: 'insider-tap',
  title: 'An insider tap with the logs off',
  scene: 12,
  narration: {
    what: "Someone with access to the relay attaches a second, hidden copy of the feed — through the same interface the lawful tap uses — and sends it to a recipient nobody listed. The regulator's audit log shows nothing, and the operator's list of observers does not show it. Only a reveal lists it: where the copy goes, since when, and how many envelopes it took.",
    look: [
      {
        page: 'teacher panel',
        what: 'Observers on the relay: the normal list shows the relay view and the regulator tap only. "Reveal hidden observers" lists the insider\'s copy too: where it goes, since when, how many envelopes.',
      },
      { page: 'regulator console', what: 'The audit log: nothing about the copy while it runs; after the reveal, an "observers revealed" entry.' },
      {
        page: 'attacker console',
        what: 'The feed copy: every envelope since it was attached — who wrote to whom, when, how big. End-to-end ones stay closed; escrowed ones open for whoever also holds the escrow key.',
      },
    ],
    source: {
      event:
        'The Athens affair (Vodafone Greece, Aug 2004 – Mar 2005): rogue software activated the lawful-intercept function of four Ericsson switches, bypassed its logging and copied calls of the Prime Minister and 100+ others to 14 prepaid phones (EDRi, 15 Feb 2006)',
      date: '2006-02-15',
      link: 'https://edri.org/our-work/edrigramnumber4-3wiretapping/',
    },
  },
  async run(ctx) {
    await ctx.room('e2e');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const regulator = ctx.lab.deps.regulator;
    const auditBefore = regulator.auditLog()[0]?.seq ?? 0;
    ctx.lab.insider.attach(ctx.lab.attacker, 'insider-tap');
    const sent = [
      await ctx.say(bob, carol, 'The contract goes to the board on Friday. Keep it between us.'),
      await ctx.say(carol, bob, 'Understood. I will call you from the office line.'),
      await ctx.say(bob, carol, 'Good. Nobody else is on this thread.'),
    ];
    const copy = new Set(ctx.lab.insider.ids());
    const copied = sent.filter((m) => copy.has(m.id)).length;
    const audited = regulator.auditLog().filter((a) => a.seq > auditBefore).length;
    const listed = ctx.lab.observers().some((o) => o.name === INSIDER_NAME);
    const revealed = ctx.lab.deps.relay.observerList().find((o) => o.name === INSIDER_NAME);
    return {
      summary: `A hidden observer copied all ${copied} of the ${sent.length} new messages (${revealed?.envelopes ?? 0} envelopes since it was attached) to an unlisted recipient. The audit log gained ${audited} entries, and the normal observer list ${listed ? 'shows' : 'does not show'} it: "Reveal hidden observers" does.`,
      facts: {
        'messages sent': sent.length,
        'copied by the hidden observer': copied,
        'envelopes handed to it': revealed?.envelopes ?? 0,
        'audit entries since it was attached': audited,
        'in the normal observer list': listed,
        'with an escrow field (open with a stolen escrow key)': ctx.lab.insider.lines().filter((l) => keysOf(l.env).model === 'e2e-escrow').length,
      },
    };
  },
};
