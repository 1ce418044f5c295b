/**
 * Seals part of the envelope pool ahead of the timed runs, with the real
 * `sealEnvelope` (fresh key, XChaCha20-Poly1305 body, crypto_box_seal wraps,
 * Ed25519 signature), so that the load generator spends no time on crypto while
 * the relay is measured. bench/run.ts runs one sealer per core.
 *
 * cmd `seal` {senders: [index, count][], file} writes
 *   {"frames": {"<index>": ["{\"type\":\"send\",\"env\":{...}}", ...]}}
 */
import { writeFileSync } from 'node:fs';
import { cryptoReady, sealEnvelope, type Identity } from '../shared/crypto.ts';
import { benchIdentity, peerOf, serve } from './common.ts';

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
  const ids = new Map<number, Identity>();
  const id = (i: number) => {
    let v = ids.get(i);
    if (!v) ids.set(i, (v = benchIdentity(i)));
    return v;
  };
  const frames: Record<string, string[]> = {};
  for (const [i, count] of senders) {
    const sender = id(i);
    const list: string[] = [];
    for (let k = 0; k < count; k++) {
      const peer = id(peerOf(i, k));
      const { env } = sealEnvelope({
        sender,
        to: [{ pin: peer.pin, signPk: peer.signPk }],
        conv: 'dm',
        body: { text: `${TEXTS[k % TEXTS.length]} (#${k})` },
      });
      list.push(JSON.stringify({ type: 'send', env }));
    }
    frames[String(i)] = list;
  }
  writeFileSync(msg.file as string, JSON.stringify({ frames }));
  return { envelopes: senders.reduce((n, [, c]) => n + c, 0) };
});
