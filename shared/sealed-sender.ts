/**
 * Sealed sender: the whole signed envelope, sealed (crypto_box_seal) to the recipient's X25519 key,
 * so the relay carries a box that names only its recipient. The sender's identity and signature
 * travel inside, as Signal has sent them since 2018 (signal.org/blog/sealed-sender, 29 Oct 2018).
 * The relay still learns the recipient, the time, the size and the network address.
 */
import sodium from 'libsodium-wrappers';
import { boxKeyOf, fromB64, toB64, type Identity } from './crypto.ts';
import { OpenFailure, fail, type Outcome } from './failures.ts';
import { AnyEnvelope, type Envelope } from './protocol.ts';

/** The box for one recipient: base64 of crypto_box_seal(UTF-8 JSON of the envelope, recipient's X25519 key). */
export function sealForRecipient(env: Envelope, recipientSignPk: Uint8Array): string {
  return toB64(sodium.crypto_box_seal(sodium.from_string(JSON.stringify(env)), boxKeyOf(recipientSignPk)));
}

/** Open a box with this device's keys: the envelope inside, if it parses, has the outer id and names this device. */
export function openSealedBox(box: string, id: string, me: Identity): Outcome<AnyEnvelope> {
  let json: unknown;
  try {
    json = JSON.parse(sodium.to_string(sodium.crypto_box_seal_open(fromB64(box), me.boxPk, me.boxSk)));
  } catch {
    return fail(OpenFailure.SealedBoxDoesNotOpen, "the box does not open with this device's key");
  }
  const parsed = AnyEnvelope.safeParse(json);
  if (!parsed.success || parsed.data.id !== id || !parsed.data.to.includes(me.pin))
    return fail(OpenFailure.SealedBoxDoesNotOpen, 'the box holds no envelope for this device under that id');
  return { ok: true, value: parsed.data };
}
