import { keysOf } from '../../../shared/protocol.ts';
import { newOuterKey, preDecrypt, preEncrypt } from '../../../client/bot/pre-encrypt.ts';
import type { Scenario } from '../types.ts';

const INNER = 'Meet at the north gate at nine. Bring the documents.';

export const preEncryption: Scenario = {
  id: 'pre-encryption',
  title: 'Pre-encryption: the regulator opens the envelope and finds noise',
  scene: 10,
  narration: {
    what: "The tap is on, and Erin's app complies: every message key is sealed to the regulator. But Erin and Frank agreed a key of their own, face to face, and Erin encrypts her text with it before the app sees it. The regulator opens the envelope — and reads ciphertext. Frank decrypts it with the shared key. Escrow catches the compliant, not the determined: anyone with a reason to hide adds a layer the escrow key does not open.",
    look: [
      { page: 'regulator console', what: 'Erin\'s intercept: READ, and the "plaintext" is a line of base64 starting "sbx1:" — a second layer of encryption.' },
      { page: 'teacher panel', what: 'The result: the regulator opened the envelope but not the text; Frank read the text.' },
    ],
    source: {
      event: 'Matt Blaze, "Protocol Failure in the Escrowed Encryption Standard" (ACM CCS): two rogue parties can skip the LEAF entirely — escrow binds only those who comply',
      date: '1994',
      link: 'https://www.mattblaze.org/papers/eesproto.pdf',
    },
  },
  async run(ctx) {
    await ctx.room('e2e');
    await ctx.tap(true, { scope: 'all', announced: true });
    // Both comply with the tap; neither echoes (an echo would only repeat the outer layer).
    const erin = await ctx.lab.bot('Erin', { sealing: { escrow: 'comply' }, script: { echo: false } });
    const frank = await ctx.lab.bot('Frank', { sealing: { escrow: 'comply' }, script: { echo: false } });
    // The key they share out of band: real libsodium secretbox, in the two bots' hands only.
    const key = newOuterKey();
    const sent = await ctx.say(erin, frank, preEncrypt(key, INNER));
    const item = ctx.lab.deps.regulator.recent(500).find((i) => i.env.id === sent.id);
    const regulatorText = item?.readable ? (item.text ?? '') : null;
    const frankRead = preDecrypt(key, frank.m.messages.get(sent.id)?.text ?? '');
    return {
      summary: `The regulator opened the envelope and read ${regulatorText === null ? 'nothing' : `"${regulatorText.slice(0, 32)}…"`}; Frank decrypted it with the key he shares with Erin: "${frankRead ?? '-'}"`,
      facts: {
        'sealed to the regulator': item ? keysOf(item.env).model === 'e2e-escrow' : false,
        'envelope opened by the regulator': regulatorText !== null,
        'regulator read the text': regulatorText === null ? false : regulatorText.includes(INNER),
        'Frank read the text': frankRead === INNER,
      },
    };
  },
};
