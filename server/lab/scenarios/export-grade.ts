import type { Scenario } from '../types.ts';

export const exportGrade: Scenario = {
  id: 'export-grade',
  title: 'Export-grade escrow: a short key, broken on the spot',
  scene: 13,
  narration: {
    what: 'The regulator\'s escrow key is now "export-grade": derived from a secret short enough to search, by a published rule, as 1990s export rules and a police-radio standard once required. Compliant clients seal to it as before. The attacker gets only what is public — the key id, the public key, the rule — and a copy of the archive; the attacker console tries every secret, live, until one gives that public key, and then reads the messages.',
    look: [
      { page: 'attacker console', what: 'Press "Start the search": the progress bar, keys per second and time taken; then the key found and the messages it opens.' },
      { page: 'regulator console', what: 'The audit log: "escrow key weakened", with the key id and its size in bits; the key id at the top has changed.' },
      { page: 'chat', what: 'Nothing looks different to a user: the banner still says the regulator can read new messages. Who else can is not on the screen.' },
    ],
    source: {
      event:
        "TETRA:BURST: the police-radio cipher TEA1's 80-bit key is effectively 32 bits, for export approval, and falls in about a minute on a laptop (FREAK, 2015: 1990s export RSA keys, about 7 hours and $100 of cloud computing)",
      date: '2023-07-24',
      link: 'https://cryptomuseum.com/radio/tetra/burst.htm',
    },
  },
  async run(ctx) {
    const regulator = ctx.lab.deps.regulator;
    await ctx.room('e2e');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    // The regulator's own switch (its private key stays in its module); the tap change waits for every bot to have the new policy.
    regulator.useExportGrade(true);
    await ctx.tap(true, { scope: 'all', announced: true });
    const target = regulator.exportGradeTarget();
    if (!target || ctx.lab.deps.relay.getPolicy().escrowKid !== target.kid) throw new Error("the export-grade key is not in the relay's policy");
    const sent = [await ctx.say(bob, carol, 'The shipment leaves from dock 7 on Thursday.'), await ctx.say(carol, bob, 'Understood. Use the side gate, the code is 4471.')];
    const lines = regulator.archived(0, 100_000);
    const scenario = 'export-grade escrow';
    ctx.lab.attacker.leak({
      kind: 'export-grade public key',
      label: `the export-grade escrow public key ${target.kid} (${target.bits}-bit secret, derivation published)`,
      scenario,
      target,
    });
    ctx.lab.attacker.leak({ kind: 'archive copy', label: `a copy of the intercept archive (${lines.length} envelopes, no key)`, scenario, lines: () => lines });
    const sealedToIt = lines.filter((l) => l.env.v === 2 && l.env.keys.model === 'e2e-escrow' && l.env.keys.escrow.kid === target.kid).length;
    return {
      summary: `The escrow key ${target.kid} comes from a ${target.bits}-bit secret: ${2 ** target.bits} to try. The attacker holds its public key and ${lines.length} archived envelopes, ${sealedToIt} sealed to it, and no private key; the attacker console's search finds it.`,
      facts: {
        'escrow key': target.kid,
        'secret bits': target.bits,
        'secrets to try': 2 ** target.bits,
        'sent under it': sent.length,
        'sealed to it in the copy': sealedToIt,
        'private key held by the attacker': false,
      },
    };
  },
};
