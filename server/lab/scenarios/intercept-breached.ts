import { keysOf } from '../../../shared/protocol.ts';
import type { Scenario } from '../types.ts';

export const interceptBreached: Scenario = {
  id: 'intercept-breached',
  title: 'The intercept system is breached: harvest now, decrypt later',
  scene: 8,
  narration: {
    what: "Intruders get into the intercept system itself and copy its files: the regulator's database, with the escrow key and the whole archive. With those two they open every message the tap ever covered — including everything sent long before the break-in — while the end-to-end messages stay closed. The regulator's audit log shows nothing: nobody pressed the audited export, a thief copied a file, and copying files is not something the application sees.",
    look: [
      {
        page: 'attacker console',
        what: 'The loot (the key and the archive, from the copied file) and the messages they open, with how many, whose, and since when; below, the end-to-end ones that stay closed.',
      },
      { page: 'regulator console', what: 'The audit log: no entry for the theft. The export button is audited; a break-in is not.' },
    ],
    source: {
      event:
        'Salt Typhoon: FBI and CISA say intruders in US carriers\' networks copied "information that was subject to U.S. law enforcement requests pursuant to court orders"; on 18 Dec 2024 CISA advised "Use only end-to-end encrypted communications"',
      date: '2024-11-13',
      link: 'https://www.fbi.gov/news/press-releases/joint-statement-from-fbi-and-cisa-on-the-peoples-republic-of-china-prc-targeting-of-commercial-telecommunications-infrastructure',
    },
  },
  async run(ctx) {
    const regulator = ctx.lab.deps.regulator;
    const archived = regulator.archived(0, 100_000);
    const escrowed = archived.filter((l) => keysOf(l.env).model === 'e2e-escrow').length;
    const endToEnd = archived.filter((l) => keysOf(l.env).model === 'e2e').length;
    if (escrowed === 0 || endToEnd === 0) {
      // Something to steal, through the real relay: an end-to-end exchange, then traffic under the tap.
      await ctx.room('e2e');
      const bob = await ctx.bot('Bob');
      const carol = await ctx.bot('Carol');
      const dave = await ctx.bot('Dave');
      await ctx.tap(false);
      await ctx.say(bob, carol, 'Before the tap: my new address is 14 Mill Lane.');
      await ctx.tap(true, { scope: 'all', announced: false });
      await ctx.say(carol, bob, 'The source is my cousin at the ministry. Keep her name out of it.');
      await ctx.say(dave, carol, 'Meeting moved to the back room of the library, 6 pm.');
    }
    const auditBefore = regulator.auditLog()[0]?.seq ?? 0;
    // The break-in: regulator.db copied byte for byte, read by the attacker with the shared archive reader.
    const stolen = ctx.lab.attacker.stealFiles(regulator.fileCopy(), 'the intercept system is breached');
    const auditAfter = regulator.auditLog().filter((a) => a.seq > auditBefore).length;
    const stolenKids = new Set(stolen.kids);
    const { lines } = stolen;
    const covered = new Set(
      lines
        .filter((l) => {
          const k = keysOf(l.env);
          return k.model === 'e2e-escrow' && stolenKids.has(k.escrow.kid);
        })
        .map((l) => l.env.id),
    );
    const view = ctx.lab.attacker.view(100_000);
    const openedCovered = view.opened.filter((m) => covered.has(m.id)).length;
    const closedE2e = lines.filter((l) => keysOf(l.env).model === 'e2e').length;
    const openedE2e = view.opened.filter((m) => keysOf(m.env).model === 'e2e').length;
    return {
      summary: `The copied files open ${openedCovered} of the ${covered.size} messages the tap covered, all sent before the break-in; ${closedE2e} end-to-end ones stay closed. The audit log got ${auditAfter} entries for it.`,
      facts: {
        'envelopes in the copy': lines.length,
        'escrow keys in the copy': stolen.kids.length,
        'covered by the tap': covered.size,
        'opened by the attacker': openedCovered,
        'end to end, closed': closedE2e,
        'end to end, opened': openedE2e,
        people: view.counts.people,
        conversations: view.counts.conversations,
        'earliest opened': view.counts.earliest === null ? '-' : new Date(view.counts.earliest).toISOString(),
        'audit entries for the theft': auditAfter,
      },
    };
  },
};
