/**
 * Seals part of the envelope pool ahead of the timed runs, with the real
 * `sealEnvelope` (fresh key, XChaCha20-Poly1305 body, crypto_box_seal wraps,
 * Ed25519 signature), so that the load generator spends no time on crypto while
 * the relay is measured. bench/run.ts runs one sealer per core.
 *
 * cmd `seal` {senders: [index, count][], kind: 'dm' | 'group', file} writes
 *   {"frames": {"<index>": ["{\"type\":\"send\",\"env\":{...}}", ...]}}
 * `dm`: 1:1 envelopes, round robin to the sender's class of ten (peerOf). `group`: each envelope
 * to the other 29 members of the sender's group of 30 (groupOf), the group's name in the body.
 */
import { writeFileSync } from 'node:fs';
import { cryptoReady, type Identity } from '../shared/crypto.ts';
import { sealEnvelope } from '../shared/envelope.ts';
import { benchIdentity, groupOf, peerOf, serve } from './common.ts';

const TEXTS = [
  'Are we still on for the lab at three?',
  'Bring the BlackBerry, the old one with the trackball.',
  'The regulator asked for the escrow key again today.',
  'ok',
  'Meet at the library steps after class, I have the notes from Tuesday.',
];

serve(async (msg) => {
  if (msg.cmd !== 'seal') throw new Error(`unknown command ${msg.cmd}`);
  await cryptoReady();
  const senders = msg.senders as [number, number][];
  const kind = (msg.kind as string | undefined) ?? 'dm';
  if (kind !== 'dm' && kind !== 'group') throw new Error(`unknown pool kind ${kind}`);
  const ids = new Map<number, Identity>();
  const id = (i: number) => {
    let v = ids.get(i);
    if (!v) {
      v = benchIdentity(i);
      ids.set(i, v);
    }
    return v;
  };
  const frames: Record<string, string[]> = {};
  for (const [i, count] of senders) {
    const sender = id(i);
    const list: string[] = [];
    const group = groupOf(i);
    const groupPeers = group.members.filter((j) => j !== i).map((j) => id(j));
    for (let k = 0; k < count; k++) {
      const text = `${TEXTS[k % TEXTS.length]} (#${k})`;
      const { env } =
        kind === 'group'
          ? sealEnvelope({ sender, to: groupPeers.map((p) => ({ pin: p.pin, signPk: p.signPk })), conv: group.conv, body: { text, group: group.name } })
          : (() => {
              const peer = id(peerOf(i, k));
              return sealEnvelope({ sender, to: [{ pin: peer.pin, signPk: peer.signPk }], conv: 'dm', body: { text } });
            })();
      list.push(JSON.stringify({ type: 'send', env }));
    }
    frames[String(i)] = list;
  }
  writeFileSync(msg.file as string, JSON.stringify({ frames }));
  return { envelopes: senders.reduce((n, [, c]) => n + c, 0) };
});
