/**
 * The insider tap (scene "insider tap with the logs off"): a hidden observer, attached through the
 * relay's own observer interface (`observe(…, { hidden: true })`, the path a rogue insider with
 * access to the relay's process would use), copying every envelope of the feed to an unlisted
 * recipient — here the attacker's loot, as a 'feed copy'. Nothing is written to the regulator's
 * audit log when it is attached, and the teacher panel's normal observer list leaves it out; only a
 * reveal (Lab.revealObservers) lists it, with since when and how many envelopes the relay handed it.
 *
 * The copy is bounded (MAX_COPY envelopes, the oldest dropped first); the relay's own count is not.
 * A room reset detaches it.
 */
import type { ArchiveLine } from '../../shared/archive.ts';
import type { Relay } from '../relay.ts';
import type { Attacker } from './attacker.ts';

export const INSIDER_NAME = 'li-mirror (lawful-intercept subsystem, second handover)';
export const INSIDER_SINK = 'an unlisted recipient outside the operator: the attacker (in Athens, 14 prepaid phones)';
export const MAX_COPY = 10_000;

export class InsiderTap {
  private detachFn: (() => void) | null = null;
  private copy: ArchiveLine[] = [];
  private seq = 0;

  constructor(private readonly relay: Pick<Relay, 'observe'>) {}

  get attached(): boolean {
    return this.detachFn !== null;
  }

  /** Envelopes in the copy now. */
  get copied(): number {
    return this.copy.length;
  }

  /** Attach (once; a second call keeps the one attached) and hand the copy to the attacker. */
  attach(attacker: Attacker, scenario: string): boolean {
    if (this.detachFn) return false;
    this.copy = [];
    this.seq = 0;
    this.detachFn = this.relay.observe(
      INSIDER_NAME,
      (event) => {
        if (event.kind !== 'envelope') return;
        this.copy.push({ seq: ++this.seq, at: event.at, senderPk: event.senderPk, names: event.names, env: event.env });
        if (this.copy.length > MAX_COPY) this.copy.splice(0, this.copy.length - MAX_COPY);
      },
      { hidden: true, sink: INSIDER_SINK },
    );
    attacker.leak({ kind: 'feed copy', label: "the insider's hidden copy of the relay's feed (every envelope since it was attached)", scenario, lines: () => this.copy });
    return true;
  }

  /** The copy's envelope ids, in order (for the scenario's result and the tests). */
  ids(): string[] {
    return this.copy.map((l) => l.env.id);
  }

  /** The copy itself, as archive lines (what the attacker holds). */
  lines(): readonly ArchiveLine[] {
    return this.copy;
  }

  detach(): void {
    this.detachFn?.();
    this.detachFn = null;
    this.copy = [];
  }
}
