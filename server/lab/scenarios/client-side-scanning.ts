import { fromB64 } from '../../../shared/crypto.ts';
import { hashPhrase, scanText } from '../../../shared/scan.ts';
import type { Scenario } from '../types.ts';

/** The scenario's own list entry, if the teacher has not put it there: an ordinary phrase, as a protest slogan would be. */
export const SCENARIO_PHRASE = 'meet at the square';
const WHO = 'the client-side scanning scenario (as the list supplier)';

async function until(check: () => boolean, what: string, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const clientSideScanning: Scenario = {
  id: 'client-side-scanning',
  title: 'Client-side scanning: end to end, and reported all the same',
  scene: 14,
  narration: {
    what: "Instead of escrow, every client checks each message against the authority's list before encrypting it, and reports a match. The list holds only hashes: no client can tell what it targets. The message stays end to end — the regulator cannot read it — yet the authority learns who wrote what, when and to whom. Whoever controls the list decides what is reported; a client without the scanner is never reported.",
    look: [
      {
        page: 'chat',
        what: 'The notice "Scanning is on": the client checks what you type against a list it cannot read. Type the phrase on the teacher panel\'s list and you are reported.',
      },
      {
        page: 'regulator console',
        what: 'Scanner reports: who wrote a listed phrase, when, to whom, which entry matched — and the message itself "end to end", closed to the regulator.',
      },
      { page: 'teacher panel', what: "Client-side scanning: add the hash of an ordinary phrase (a slogan, a source's name); the list shows hashes only." },
    ],
    source: {
      event:
        'Apple announced on-device matching of iCloud Photos against a hash list (5 Aug 2021) and paused it on 3 Sep 2021; "Bugs in our Pockets: The Risks of Client-Side Scanning" (Abelson et al., Oct 2021, arXiv:2110.07450); the EU "chat control" proposal (11 May 2022)',
      date: '2021-08-05',
      link: 'https://arxiv.org/abs/2110.07450',
    },
  },
  async run(ctx) {
    const lab = ctx.lab;
    await ctx.room('e2e');
    await ctx.tap(false); // instead of escrow
    const nadia = await lab.bot('Nadia', { script: { echo: false } });
    const omar = await lab.bot('Omar', { script: { echo: false } });
    const rogue = await lab.bot('Rogue', { script: { echo: false } });
    nadia.m.scanner.enabled = true;
    omar.m.scanner.enabled = true;
    rogue.m.scanner.enabled = false; // a patched client: scans nothing, reports nothing
    const scanner = lab.scanner;
    let state = scanner.state();
    if (!state.salt || !state.entries.some((e) => e.hash === hashPhrase(fromB64(state.salt!), SCENARIO_PHRASE))) scanner.addPhrase(SCENARIO_PHRASE, WHO);
    if (!scanner.state().on) scanner.set({ on: true, announced: true }, WHO);
    state = scanner.state();
    const epoch = lab.deps.relay.getPolicy().epoch;
    await until(() => [nadia, omar, rogue].every((b) => (b.m.policy?.epoch ?? -1) >= epoch), 'every bot to have the scan list');
    const before = state.reports.total;
    const sent = [
      { by: nadia, m: await ctx.say(nadia, omar, 'Are you coming tonight? Meet at the square at six.') },
      { by: omar, m: await ctx.say(omar, nadia, 'Maybe. I have to finish my homework first.') },
      { by: rogue, m: await ctx.say(rogue, omar, 'MEET at the   Square — and bring a banner!') },
    ];
    // Which of them the list matches, worked out here with the same hash the clients use.
    const entries = new Set(state.entries.map((e) => e.hash));
    const matching = sent.filter((s) => scanText(fromB64(state.salt!), entries, s.m.text).length > 0);
    const scanning = matching.filter((s) => s.by.m.scanner.enabled);
    await until(() => scanner.state().reports.total - before >= scanning.length, 'the reports of the scanning clients');
    const reports = scanner.reports().filter((r) => sent.some((s) => s.m.id === r.id));
    const closed = lab.deps.regulator.recent(100).filter((i) => reports.some((r) => r.id === i.env.id) && i.status === 'end-to-end').length;
    return {
      summary: `${matching.length} of ${sent.length} messages contained a listed phrase; ${reports.length} were reported (by the clients that scan) and ${matching.length - reports.length} not (a client without the scanner). The regulator can read none of them: ${closed} of the ${reports.length} reported messages are end to end.`,
      facts: {
        'messages sent': sent.length,
        'matching the list': matching.length,
        reported: reports.length,
        'not reported (no scanner)': matching.length - reports.length,
        'reported, yet end to end': closed,
        'list entries (hashes)': state.entries.length,
        announced: state.announced,
      },
    };
  },
};
