/**
 * The relay in its enterprise role: the server-held key model (BlackBerry Enterprise Service).
 * The enterprise server has its own key pair; a device wraps each message key to it, and the
 * server opens the key, reads the message, and wraps the key again for each recipient before it
 * stores and fans the envelope out — through the relay's in-path hook. Here, and only here, the
 * relay does crypto per message: that is the point of the model, and what Pakistan could demand
 * of an operator who holds such a key (and what BlackBerry did not hold for BES: the enterprise did).
 *
 * The server key is the operator's own, kept in relay.db: never a user's key, never the escrow key.
 */
import { fromB64, toB64 } from '../shared/crypto.ts';
import { serverKeyModel, newServerKeyPair, serverKeyPairFromSecret, type ServerKeyPair } from '../shared/crypto/server-key.ts';
import { decryptBody, openAs, openKey, verifyEnvelope } from '../shared/envelope.ts';
import { appKey } from '../shared/crypto/app-key.ts';
import { describeBody, groupNameOf, keysOf, type AnyEnvelope, type Envelope, type Policy } from '../shared/protocol.ts';
import type { InPathHook } from './relay.ts';
import type { RelayStore } from './store.ts';

export type RoomModel = Policy['room']['model'];

export class Enterprise {
  readonly key: ServerKeyPair;

  constructor(private readonly store: RelayStore) {
    const row = store.serverKey();
    if (row) this.key = serverKeyPairFromSecret(fromB64(row.sk));
    else {
      this.key = newServerKeyPair();
      store.putServerKey(this.key.kid, toB64(this.key.pk), toB64(this.key.sk), Date.now());
    }
  }

  /** The room's part of the policy for a key model: the server's public key only where it is used. */
  room(model: RoomModel, sealedSender = false): Policy['room'] {
    if (sealedSender && model !== 'e2e')
      throw new Error('sealed sender is a mode of end-to-end rooms: the app key and the server-held key models show the sender to whoever holds their key anyway');
    return model === 'server-key' ? { model, serverPk: toB64(this.key.pk), serverKid: this.key.kid, sealedSender } : { model, serverPk: null, serverKid: null, sealedSender };
  }

  /**
   * The in-path hook: every server-key envelope is opened with the server key (after checking the
   * sender's signature, as the server is the one that reads it now), and gets one delivery wrap per
   * recipient. Anything else passes untouched.
   */
  hook(): InPathHook {
    return (env, sender) => {
      if (env.keys.model !== 'server-key') return { action: 'pass' };
      if (env.keys.kid !== this.key.kid)
        return { action: 'refuse', code: 'wrong_model', message: `wrapped to another enterprise server (${env.keys.kid}); this one is ${this.key.kid}` };
      if (!verifyEnvelope(env, fromB64(sender.pk)))
        return { action: 'refuse', code: 'bad_signature', message: "the envelope's signature does not verify: the server will not pass it" };
      const key = openKey(env, { kind: 'server', key: this.key });
      if (!key.ok) return { action: 'refuse', code: 'bad_frame', message: `the server cannot open the message key: ${key.reason}` };
      const body = decryptBody(env, key.value);
      if (!body.ok) return { action: 'refuse', code: 'bad_frame', message: `the server cannot decrypt the body: ${body.reason}` };
      const to = env.to.map((pin) => {
        const user = this.store.getUser(pin);
        return { pin, signPk: fromB64(user!.pk) };
      });
      const delivery = serverKeyModel.deliver(key.value, to);
      const group = groupNameOf(body.value);
      return { action: 'replace', env: { ...env, delivery } satisfies Envelope, read: { text: describeBody(body.value), ...(group !== undefined ? { group } : {}) } };
    };
  }

  /**
   * What the operator can hand over for one envelope, when served a demand: plaintext where it
   * holds a key that opens it (the server key; the app key, which every copy of the app ships),
   * nothing but metadata and ciphertext for end to end (with or without an escrow field: the escrow
   * key is the regulator's, not the operator's).
   */
  handOver(env: AnyEnvelope): { status: 'plaintext'; by: 'server key' | 'app key'; text: string; group?: string } | { status: 'ciphertext only'; why: string } {
    const keys = keysOf(env);
    const opened = keys.model === 'server-key' ? openAs(env, { kind: 'server', key: this.key }) : keys.model === 'app-key' ? openAs(env, { kind: 'app', key: appKey().key }) : null;
    if (!opened)
      return {
        status: 'ciphertext only',
        why:
          keys.model === 'e2e-escrow'
            ? "end to end with an escrow field: the operator holds no key that opens it (the escrow key is the regulator's)"
            : 'end to end: the operator holds no key that opens it',
      };
    if (!opened.ok) return { status: 'ciphertext only', why: opened.reason };
    const group = groupNameOf(opened.value);
    return { status: 'plaintext', by: keys.model === 'server-key' ? 'server key' : 'app key', text: describeBody(opened.value), ...(group !== undefined ? { group } : {}) };
  }
}
