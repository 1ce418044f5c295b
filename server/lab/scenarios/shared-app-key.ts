import { openWithAppKey } from '../../../shared/envelope.ts';
import type { Envelope } from '../../../shared/protocol.ts';
import type { Scenario } from '../types.ts';

export const sharedAppKey: Scenario = {
  id: 'shared-app-key',
  title: 'BBM PIN messages: one key in every copy of the app',
  scene: 6,
  narration: {
    what: 'The room switches to consumer BBM\'s model: each message key is encrypted with one global key that every copy of the app ships. Bob writes to Carol. Dave was never sent the message — but he has the app, takes the envelope from the public relay view, and reads it. "Consider PIN messages as scrambled, but not encrypted."',
    look: [
      { page: 'relay view', what: '"the shared app key: anyone with the app can read it".' },
      { page: 'teacher panel', what: 'The result: what Dave read of a message sent to Carol.' },
      { page: 'regulator console', what: 'READ without any tap: the regulator has the app too.' },
    ],
    source: {
      event: "Project Clemenza: Canada's RCMP used BlackBerry's global PIN key to read more than a million messages (2010–12), reported by Motherboard",
      date: '2016-04-14',
      link: 'https://motherboard.vice.com/en_us/article/mg77vv/rcmp-blackberry-project-clemenza-global-encryption-key-canada',
    },
  },
  async run(ctx) {
    await ctx.tap(false);
    await ctx.room('app-key');
    const bob = await ctx.bot('Bob');
    const carol = await ctx.bot('Carol');
    const dave = await ctx.bot('Dave');
    // Dave watches the public relay view (here, the relay's observer feed that page shows).
    const seen: Envelope[] = [];
    const off = ctx.lab.deps.relay.observe('relay view watcher (the app-key scenario)', (e) => {
      if (e.kind === 'envelope') seen.push(e.env);
    });
    try {
      const sent = await ctx.say(bob, carol, 'PIN to PIN: meet at the harbour at six.');
      const env = seen.find((e) => e.id === sent.id);
      const read = env ? openWithAppKey(env, undefined, bob.m.identity.signPk) : null;
      return {
        summary: read?.ok ? `Dave, who was never sent it, read: "${read.value.text}"` : 'Dave could not read it.',
        facts: { 'sent to': carol.name, 'read by Dave': Boolean(read?.ok), 'Dave was a recipient': env ? env.to.includes(dave.pin) : false, model: 'app-key' },
      };
    } finally {
      off();
    }
  },
};
