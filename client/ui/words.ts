/**
 * Plain words for the stable codes (shared/failures.ts) and honest labels for what an envelope's
 * key model lets each party see. Every page words a code through here, so a code means the same
 * sentence everywhere, and each label says only what that party can actually know from the bytes.
 */
import { wordsFor } from '../../shared/failures.ts';
import { keysOf, type AnyEnvelope } from '../../shared/protocol.ts';

export { wordsFor };

/**
 * What an escrow field means to whoever looks at an envelope. Only the escrow key's holder can tell
 * whether a field opens; the relay and a recipient see only that one is present and well formed,
 * and the sender knows what it sealed.
 */
export type EscrowView = 'relay' | 'recipient' | 'sender' | 'regulator' | 'attacker';

export interface EscrowLabel {
  /** 'none' (end to end), 'present' (a field the viewer cannot check), 'sealed' (the viewer sealed it). */
  kind: 'none' | 'present' | 'sealed';
  short: string;
  long: string;
  kid: string | null;
}

export function escrowLabel(env: AnyEnvelope, view: EscrowView): EscrowLabel {
  const keys = keysOf(env);
  switch (keys.model) {
    case 'e2e':
      return { kind: 'none', short: 'none: end-to-end', long: 'No escrow field: the message key is sealed only to the people in the wraps.', kid: null };
    case 'app-key':
      // No escrow field, and none needed: "none: end-to-end" would be a lie here.
      return {
        kind: 'none',
        short: 'none: the app key opens it',
        long: 'No escrow field, and none is needed: the message key is encrypted with the key every copy of the app ships, so anyone with the app reads it.',
        kid: null,
      };
    case 'server-key':
      return {
        kind: 'none',
        short: 'none: the server holds the key',
        long: "No escrow field: the message key is sealed to the enterprise server, which opens it; a demand on the server's operator reads it.",
        kid: null,
      };
    case 'e2e-escrow':
      break;
  }
  const kid = keys.escrow.kid;
  if (view === 'sender')
    return { kind: 'sealed', short: `sealed to ${kid}`, long: `This tab sealed the message key to the escrow key ${kid}: whoever holds that key can read it.`, kid };
  if (view === 'attacker')
    return {
      kind: 'present',
      short: `present, key ${kid.slice(0, 8)}…`,
      long: `An escrow field for key ${kid}. Only that key can tell whether it opens (it may be forged): this console says whether the keys the attacker holds did.`,
      kid,
    };
  if (view === 'regulator')
    return {
      kind: 'present',
      short: `present, key ${kid.slice(0, 8)}…`,
      long: `An escrow field for key ${kid}. Only an escrow key can tell whether it opens: this console's verdict on the envelope says what its key did.`,
      kid,
    };
  return {
    kind: 'present',
    short: `present, key ${kid.slice(0, 8)}…`,
    long: `An escrow field for key ${kid}, well formed. ${view === 'relay' ? 'The relay' : 'This tab'} cannot tell whether it opens: only the holder of the escrow key can (it may be forged, or sealed to another key).`,
    kid,
  };
}
