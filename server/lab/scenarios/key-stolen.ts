import { openArchived } from '../../../shared/archive.ts';
import { escrowKeyPairFromSecret, fromB64 } from '../../../shared/crypto.ts';
import type { Scenario } from '../types.ts';

export const keyStolen: Scenario = {
  id: 'key-stolen',
  title: 'The escrow key is stolen: the whole archive opens',
  scene: 3,
  narration: {
    what: 'Someone copies the escrow key and the intercept archive. Offline, with nothing but those two files, they open every message the tap ever covered — including those sent long before the theft — while the end-to-end messages stay closed. A fixed escrow key undoes forward secrecy: one key opens the past.',
    look: [
      { page: 'regulator console', what: 'The audit log: "escrow key exported". Anyone who has that file reads what the console reads.' },
      { page: 'terminal', what: 'npm run decrypt -- --archive archive.jsonl --key escrow-key.json opens the same messages offline.' },
    ],
    source: {
      event: '"Keys Under Doormats": exceptional access would reverse forward secrecy (Abelson et al., MIT-CSAIL-TR-2015-026)',
      date: '2015-07-06',
      link: 'https://doi.org/10.1093/cybsec/tyv009',
    },
  },
  async run(ctx) {
    const regulator = ctx.lab.deps.regulator;
    if (regulator.archiveSize() === 0) {
      // Something to steal: an end-to-end exchange, then one under the tap.
      await ctx.room('e2e');
      const bob = await ctx.bot('Bob');
      const carol = await ctx.bot('Carol');
      await ctx.tap(false);
      await ctx.say(bob, carol, 'Before the tap: nobody else reads this.');
      await ctx.tap(true, { scope: 'all', announced: false });
      await ctx.say(carol, bob, 'Under the tap: the archive keeps this for ever.');
    }
    // The theft: the key file (audited) and the archive, opened with the shared archive reader only.
    const file = regulator.exportKey('the key-stolen scenario (a thief)');
    const key = escrowKeyPairFromSecret(fromB64(file.sk));
    const lines = regulator.archived(0, 100_000);
    let opened = 0;
    let endToEnd = 0;
    let earliest: number | null = null;
    for (const line of lines) {
      const verdict = openArchived(line, key);
      if (verdict.status === 'opened') {
        opened += 1;
        earliest = earliest === null ? line.env.ts : Math.min(earliest, line.env.ts);
      } else if (verdict.status === 'end-to-end') endToEnd += 1;
    }
    return {
      summary: `With the stolen key, ${opened} of ${lines.length} archived messages open offline; ${endToEnd} end-to-end ones stay closed.`,
      facts: { archived: lines.length, opened, 'end to end, closed': endToEnd, 'earliest opened': earliest === null ? '-' : new Date(earliest).toISOString() },
    };
  },
};
