/**
 * Key model "server-key": BlackBerry Enterprise Service. Each device shares a key with its
 * enterprise server; the message key is wrapped to the server, the server opens it and wraps it
 * again for each recipient, and so the server — and whoever runs it, compels or breaches it — can
 * read every message. (BES Security Technical Overview; RIM, 2012: it "is not ever in possession of
 * the encryption keys" — the enterprise running the server is.)
 *
 * Here the device-to-server key is the server's X25519 public key (crypto_box_seal), which gives
 * the same "who can read" as BES's per-device shared master key. The sender also keeps its own
 * wrap; the server adds the recipients' in the envelope's `delivery`, which the sender cannot sign
 * (it is made later) and the header binds all the same: a wrong delivery wrap only fails to
 * decrypt.
 */
import sodium from 'libsodium-wrappers';
import { boxKeyOf, escrowKid, toB64, unwrapKey, type Identity } from '../crypto.ts';
import { OpenFailure, fail, type Outcome } from '../failures.ts';
import type { Envelope, KeyWrap, ServerKeys } from '../protocol.ts';
import { openOwnWrap, sealWraps, wrapsLine } from './e2e.ts';
import type { Reader, Recipient, WhoCanRead } from './model.ts';

/** The enterprise server's key pair: an X25519 pair, its kid as for an escrow key. */
export interface ServerKeyPair {
  pk: Uint8Array;
  sk: Uint8Array;
  kid: string;
}

export function newServerKeyPair(): ServerKeyPair {
  const kp = sodium.crypto_box_keypair();
  return { pk: kp.publicKey, sk: kp.privateKey, kid: escrowKid(kp.publicKey) };
}

export function serverKeyPairFromSecret(sk: Uint8Array): ServerKeyPair {
  const pk = sodium.crypto_scalarmult_base(sk);
  return { pk, sk, kid: escrowKid(pk) };
}

export const serverKeyModel = {
  model: 'server-key',
  /** The sender seals K to the server and to itself; the server wraps it for the recipients. */
  seal(key: Uint8Array, sender: Identity, server: { pk: Uint8Array; kid: string }): ServerKeys {
    return { model: 'server-key', kid: server.kid, server: toB64(sodium.crypto_box_seal(key, server.pk)), wraps: sealWraps(key, sender, []) };
  },
  signedLines(keys: ServerKeys): string[] {
    return [`server=${keys.kid}:${keys.server}`, wrapsLine(keys.wraps)];
  },
  open(keys: ServerKeys, env: Pick<Envelope, 'delivery'>, reader: Reader): Outcome<Uint8Array> {
    switch (reader.kind) {
      case 'escrow':
        return fail(OpenFailure.NoEscrowField, 'no escrow field: the server-held key model');
      case 'app':
        return fail(OpenFailure.WrapDoesNotOpen, 'not an app-key envelope');
      case 'server': {
        if (reader.key.kid !== keys.kid) return fail(OpenFailure.WrapDoesNotOpen, `wrapped to another server (${keys.kid})`);
        const key = unwrapKey(keys.server, reader.key.pk, reader.key.sk);
        return key.ok ? key : fail(OpenFailure.WrapDoesNotOpen, 'the server field does not open with the server key');
      }
      case 'member': {
        const own = openOwnWrap(keys.wraps, reader.identity);
        if (own.ok || own.code !== OpenFailure.NotAddressedToMe) return own;
        return openOwnWrap(env.delivery ?? [], reader.identity);
      }
    }
  },
  /** The server's re-wraps, one per recipient: what the server adds after opening the key. */
  deliver(key: Uint8Array, to: readonly Recipient[]): KeyWrap[] {
    return to.map((r) => ({ to: r.pin, key: toB64(sodium.crypto_box_seal(key, boxKeyOf(r.signPk))) }));
  },
  whoCanRead(keys: ServerKeys, env: Pick<Envelope, 'delivery' | 'to'>): WhoCanRead {
    return { members: [...keys.wraps.map((w) => w.to), ...(env.delivery ? env.delivery.map((w) => w.to) : env.to)], escrowKid: null, appKid: null, serverKid: keys.kid };
  },
} as const;
