import { openArchived } from '../../../shared/archive.ts';
import { escrowFingerprint, fromB64 } from '../../../shared/crypto.ts';
import type { Scenario } from '../types.ts';

const UNDER_SWAP: [from: 'Bob' | 'Carol', text: string][] = [
  ['Bob', 'The merger is off. Tell nobody until Monday.'],
  ['Carol', 'Understood. I will shred the draft.'],
];

export const swappedEscrowKey: Scenario = {
  id: 'swapped-escrow-key',
  title: 'The escrow key is swapped: someone else reads, the regulator cannot',
  scene: 11,
  narration: {
    what: "The tap is on. Then whoever controls the relay's configuration puts a key of its own in the policy, in place of the regulator's. Bob's and Carol's apps comply, as they always do: every message key is now sealed to the intruder, who reads them, while the regulator's key opens nothing new. Nobody is told. Only Grace notices: she pinned the regulator key's fingerprint, read out in class, and her app refuses to seal to any other key.",
    look: [
      { page: 'regulator console', what: 'The new intercepts: not opened, "Its escrow field is sealed to another escrow key."' },
      { page: 'attacker console', what: 'The swapped key and the copy of the feed: the messages the regulator can no longer read, in plaintext.' },
      { page: 'teacher panel', what: '"In force": the announced escrow key is not the regulator\'s; compare the fingerprints.' },
      { page: 'chat', what: "A tab that pinned the regulator key's fingerprint warns before sending and lets the person choose." },
    ],
    source: {
      event:
        'Juniper discloses unauthorized code in ScreenOS: someone had replaced the Dual_EC constant — the back door\'s key — with their own (Checkoway et al.; compare PGP\'s unsigned "additional decryption keys", CERT VU#747124, 2000)',
      date: '2015-12-17',
      link: 'https://eprint.iacr.org/2016/376',
    },
  },
  async run(ctx) {
    const regulator = ctx.lab.deps.regulator;
    const pinned = escrowFingerprint(fromB64(regulator.publicKey));
    await ctx.room('e2e');
    await ctx.tap(true, { scope: 'all', announced: true });
    // Bob and Carol comply and pinned nothing; Grace pinned the regulator key's fingerprint.
    const bob = await ctx.lab.bot('Bob', { sealing: { escrow: 'comply' }, pinnedEscrow: null });
    const carol = await ctx.lab.bot('Carol', { sealing: { escrow: 'comply' }, pinnedEscrow: null });
    const grace = await ctx.lab.bot('Grace', { sealing: { escrow: 'comply' }, pinnedEscrow: pinned, script: { echo: false } });
    const before = await ctx.say(bob, carol, 'Before the swap: the regulator reads this one.');

    const { key, copy } = await ctx.lab.swapEscrowKey('swapped-escrow-key');
    const sent = [];
    for (const [from, text] of UNDER_SWAP) sent.push(from === 'Bob' ? await ctx.say(bob, carol, text) : await ctx.say(carol, bob, text));
    // Grace is asked to seal to the announced key: it is not the one she pinned.
    const deadline = Date.now() + 8000;
    while (!grace.m.directory.has(bob.pin) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const graceTry = grace.trySend(bob.pin, 'Grace here: is this still only for the regulator?');

    const ids = new Set(sent.map((m) => m.id));
    const lines = copy().filter((l) => ids.has(l.env.id));
    const byAttacker = lines.filter((l) => openArchived(l, key).status === 'opened').length;
    const intercepts = regulator.recent(500);
    const byRegulator = intercepts.filter((i) => ids.has(i.env.id) && i.readable).length;
    const otherKey = intercepts.filter((i) => ids.has(i.env.id) && i.code === 'escrow_kid_unknown').length;
    const beforeRead = intercepts.some((i) => i.env.id === before.id && i.readable);
    const announced = ctx.lab.escrowKeys().announced;
    return {
      summary: `Under the swapped key the intruder opened ${byAttacker} of ${sent.length} new messages and the regulator ${byRegulator}; Bob and Carol were told nothing. ${'refused' in graceTry ? "Grace pinned the regulator's key, so her app refused to send." : "Grace's message went out."}`,
      facts: {
        'sent under the swap': sent.length,
        'opened by the swapped key': byAttacker,
        'opened by the regulator': byRegulator,
        'sealed to another key (console)': otherKey,
        'regulator read the message before the swap': beforeRead,
        'Grace (pinned) refused to send': 'refused' in graceTry,
        'regulator key fingerprint': pinned,
        'announced key fingerprint': announced?.fingerprint ?? '-',
      },
    };
  },
};
