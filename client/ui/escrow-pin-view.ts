/**
 * The chat page's side of the escrow key pin (client/core/escrow-pin.ts): a setting where the
 * person types the regulator key's fingerprint they got out of band (the teacher's board or
 * panel), and the warning shown instead of sending when the relay's policy names another escrow
 * key. The warning says what is at stake in plain words and lets the person choose: send this one
 * anyway, or not. Nothing is sent while it is up. Text reaches the page only as text nodes.
 */
import type { Messenger } from '../core/messenger.ts';
import type { EscrowPinError } from '../core/escrow-pin.ts';
import { el } from './dom.ts';

/** A message held back by the pin: where it was going, and the key it would have been sealed to. */
export interface HeldMessage {
  chat: string;
  text: string;
  announced: string;
  pinned: string;
}

export class EscrowPinView {
  /** The setting (in the sidebar). */
  readonly form = el('details', { class: 'escrow-pin', testid: 'escrow-pin' });
  /** The warning (above the composer); empty unless a message is held. */
  readonly warning = el('div', { class: 'escrow-warning-slot', testid: 'escrow-warning-slot' });
  private readonly summary = el('summary', { testid: 'escrow-pin-summary' });
  private readonly current = el('p', { class: 'hint', testid: 'escrow-pin-current' });
  private readonly input = el('input', {
    testid: 'escrow-pin-input',
    attrs: { autocomplete: 'off', spellcheck: 'false', placeholder: '40 hex digits, e.g. 1A2B 3C4D …', 'aria-label': "The regulator key's fingerprint" },
  });
  private readonly error = el('p', { class: 'error', testid: 'escrow-pin-error' });
  held: HeldMessage | null = null;
  /** The held message the warning was last drawn for: the page redraws often, the warning only when this changes. */
  private drawn: HeldMessage | null | undefined = undefined;

  constructor(
    private readonly m: Messenger,
    private readonly send: (held: HeldMessage) => void,
    private readonly changed: () => void,
  ) {
    const save = el('button', { text: 'Pin', testid: 'escrow-pin-save', attrs: { type: 'button' } });
    const clear = el('button', { text: 'Forget the pin', class: 'secondary', testid: 'escrow-pin-clear', attrs: { type: 'button' } });
    save.addEventListener('click', () => {
      try {
        m.pinEscrowKey(this.input.value);
        this.input.value = '';
        this.error.textContent = '';
      } catch (err) {
        this.error.textContent = err instanceof Error ? err.message : String(err);
      }
      this.changed();
    });
    clear.addEventListener('click', () => {
      m.pinEscrowKey(null);
      this.changed();
    });
    this.form.append(
      this.summary,
      el('p', {
        class: 'hint',
        text: "Your teacher shows the regulator key's fingerprint. Type it here: if the relay ever asks this tab to seal your messages to another escrow key, it warns you before sending.",
      }),
      this.current,
      this.input,
      save,
      ' ',
      clear,
      this.error,
    );
    this.render();
  }

  /** A message the pin held back: shown as a choice, sent only if the person says so. */
  hold(chat: string, text: string, err: EscrowPinError): void {
    this.held = { chat, text, announced: err.announced, pinned: err.pinned };
    this.render();
  }

  /** Let go of a held message without sending it (the person moved to another chat). */
  drop(): void {
    this.held = null;
    this.render();
  }

  render(): void {
    const pinned = this.m.pinnedEscrow;
    const summary = pinned ? "Regulator's key: pinned" : "Regulator's key: not pinned";
    if (this.summary.textContent !== summary) this.summary.textContent = summary;
    this.form.dataset.pinned = String(pinned !== null);
    const current = pinned ? `Pinned: ${pinned}` : 'Nothing pinned: this tab seals to whatever escrow key the relay names, without a word.';
    if (this.current.textContent !== current) this.current.textContent = current;
    const held = this.held;
    if (held === this.drawn) return;
    this.drawn = held;
    if (!held) {
      this.warning.replaceChildren();
      return;
    }
    const sendAnyway = el('button', { text: 'Send anyway, to that key', class: 'danger', testid: 'escrow-send-anyway', attrs: { type: 'button' } });
    const dontSend = el('button', { text: "Don't send", testid: 'escrow-dont-send', attrs: { type: 'button' } });
    sendAnyway.addEventListener('click', () => {
      this.held = null;
      this.send(held);
      this.render();
    });
    dontSend.addEventListener('click', () => {
      this.held = null;
      this.render();
      this.changed();
    });
    this.warning.replaceChildren(
      el(
        'div',
        { class: 'flag escrow-warning', testid: 'escrow-warning', attrs: { role: 'alert' } },
        el('strong', { text: "Not sent: this is not the regulator's key. " }),
        "The relay asks this tab to seal your message's key to an escrow key with the fingerprint ",
        el('span', { class: 'fingerprint', testid: 'escrow-announced', text: held.announced }),
        ". You pinned the regulator's key, ",
        el('span', { class: 'fingerprint', testid: 'escrow-pinned', text: held.pinned }),
        '. Someone who controls the relay may have swapped the key: whoever holds it could read this message, and the regulator could not. ',
        el('br'),
        sendAnyway,
        ' ',
        dontSend,
      ),
    );
  }
}
