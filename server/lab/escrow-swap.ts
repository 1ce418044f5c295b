/**
 * The swapped escrow key (Juniper ScreenOS 2015; PGP's additional decryption keys, 2000): whoever
 * controls the relay's configuration makes a key pair of its own and has the relay announce its
 * public key in the tap policy, in place of the regulator's (Relay.setEscrowOverride). Compliant
 * clients then seal every message key to it. The same party keeps a copy of the relay's feed from
 * then on. Both go to the attacker (attacker.ts): the key and the copy, which the attacker console
 * opens with the shared archive reader.
 *
 * The regulator's own key never moves (server/regulator.ts keeps it); the secret half of the
 * swapped key lives here and in the attacker's loot, never in the relay. The lab undoes the swap
 * before every scenario it runs and on reset: the relay announces the regulator's key again.
 */
import type { ArchiveLine } from '../../shared/archive.ts';
import { escrowFingerprint, fromB64, newEscrowKeyPair, toB64, type EscrowKeyPair } from '../../shared/crypto.ts';
import type { Policy } from '../../shared/protocol.ts';
import type { Regulator } from '../regulator.ts';
import type { Relay } from '../relay.ts';
import type { Attacker } from './attacker.ts';

/** Envelopes the attacker's copy of the feed keeps, at most (the oldest are kept: the copy simply stops). */
const FEED_COPY_MAX = 5000;

/** What the teacher panel shows: the regulator key's fingerprint (the out-of-band value) and the key the relay announces. */
export interface EscrowKeys {
  regulator: { kid: string; fingerprint: string };
  /** The escrow key in the policy the relay announces now; null while the tap is off. */
  announced: { kid: string; fingerprint: string } | null;
  /** The relay announces another key than the regulator's. */
  swapped: boolean;
  /** The regulator's key in force is export-grade (scene 13): its secret has this many bits; null at full strength. */
  exportGradeBits: number | null;
}

export class EscrowSwap {
  private active: { key: EscrowKeyPair; stop: () => void } | null = null;

  constructor(
    private readonly relay: Relay,
    private readonly regulator: Regulator,
    private readonly attacker: Attacker,
  ) {}

  /**
   * Swap: a fresh key pair, its public half put in the relay's policy, a copy of the feed from now
   * on; both leaked to the attacker. Returns the key and the policy now announced.
   */
  swap(scenario: string): { key: EscrowKeyPair; policy: Policy; copy: () => ArchiveLine[] } {
    this.undo();
    const key = newEscrowKeyPair();
    const lines: ArchiveLine[] = [];
    let seq = 0;
    const stop = this.relay.observe(
      "a copy of the feed for whoever swapped the escrow key (the relay's configuration)",
      (event) => {
        if (event.kind !== 'envelope' || lines.length >= FEED_COPY_MAX) return;
        lines.push({ seq: ++seq, at: event.at, senderPk: event.senderPk, ...(Object.keys(event.names).length ? { names: event.names } : {}), env: event.env });
      },
      { hidden: true },
    );
    this.active = { key, stop };
    const policy = this.relay.setEscrowOverride({ pk: toB64(key.pk), kid: key.kid });
    const copy = () => lines.slice();
    this.attacker.leak({ kind: 'swapped escrow key', label: `the escrow key put in the relay's policy in place of the regulator's (${key.kid})`, scenario, key, kid: key.kid });
    this.attacker.leak({ kind: 'feed copy', label: "a copy of the relay's feed since the swap", scenario, lines: copy });
    return { key, policy, copy };
  }

  /** Put the regulator's key back in the policy and stop copying the feed (the attacker keeps what it has). */
  undo(): boolean {
    const active = this.active;
    if (!active) return false;
    this.active = null;
    active.stop();
    this.relay.setEscrowOverride(null);
    return true;
  }

  get swapped(): boolean {
    return this.active !== null;
  }

  keys(): EscrowKeys {
    const policy = this.relay.getPolicy();
    const regulator = { kid: this.regulator.kid, fingerprint: escrowFingerprint(fromB64(this.regulator.publicKey)) };
    const announced = policy.tap && policy.escrowPk && policy.escrowKid ? { kid: policy.escrowKid, fingerprint: escrowFingerprint(fromB64(policy.escrowPk)) } : null;
    const exportGradeBits = this.regulator.exportGradeTarget()?.bits ?? null;
    return { regulator, announced, swapped: announced !== null && announced.fingerprint !== regulator.fingerprint, exportGradeBits };
  }
}
