/**
 * One envelope view for every page that shows one: the chat's wire panel (the sender's or a
 * recipient's copy), the relay view (what the server holds) and the regulator console (what was
 * archived). The header fields, the key model with its own fields, a sealed-sender box, and the
 * escrow label are drawn here once, so a model or a label reads the same on every page and is
 * worded only from the bytes and from what this viewer can actually know of them.
 *
 * Why the hand-written `el` layer (dom.ts) and no view library: every page here is lists and
 * tables rebuilt from parsed frames, drawn with text nodes only, and `el` plus `expandable` does
 * that in 150 lines with no dependency, no build step beyond esbuild, and nothing for the CSP to
 * allow. What a library would buy (diffing) the pages already get where it matters by caching
 * built nodes by key (the wire panel, the message list), and the lazy <details> below keep the
 * relay view and the console cheap with hundreds of rows. If the phone and projector layouts of
 * the next issues need real component state, Preact is the one to take — not before.
 */
import { assertNever, keysOf, type AnyEnvelope } from '../../shared/protocol.ts';
import { b64Bytes, b64ToHex, bytes, clockMs, el, expandable } from './dom.ts';
import { escrowLabel, type EscrowView } from './words.ts';

/** Who is looking: the tab that sealed it, a recipient's tab, the relay, the regulator's console, the attacker's console. */
export type Viewer = EscrowView;

export interface EnvelopeViewContext {
  viewer: Viewer;
  /** "Name (PIN)", as this page knows the PIN. */
  name(pin: string): string;
  /** Which long values are expanded, kept across re-renders by key. */
  expanded: Set<string>;
}

/** What the key model means, from the bytes alone, in words for this viewer. */
export function modelWords(env: AnyEnvelope, viewer: Viewer): string {
  const keys = keysOf(env);
  switch (keys.model) {
    case 'e2e':
      return `end to end: the message key is sealed only to the sender and the recipients (${keys.wraps.length} key wraps)`;
    case 'e2e-escrow':
      return `end to end with an escrow field: ${keys.wraps.length} key wraps, and the message key sealed to an escrow key as well`;
    case 'app-key':
      // The app-key scenario's card quotes the first words: keep them.
      return `the shared app key: anyone with the app can read it${viewer === 'relay' ? ', this relay too' : viewer === 'regulator' ? ', this console too' : ''} (BBM PIN messages: every copy of the app ships the key)`;
    case 'server-key':
      return `server-held key (BES): sealed to the enterprise server (key ${keys.kid}), which opens it and wraps it again for the recipients — the server reads it${viewer === 'regulator' ? "; the escrow key does not, a demand on the server's operator does" : ''}`;
    default:
      return assertNever(keys);
  }
}

/** The escrow field as this viewer can honestly describe it (the full sentence on hover). */
export function escrowBadge(env: AnyEnvelope, viewer: Viewer, testid: string): HTMLElement {
  const label = escrowLabel(env, viewer);
  if (!label.kid) return el('span', { class: 'escrow-no', testid, data: { escrow: label.kind }, title: label.long, text: label.short });
  return el(
    'span',
    { class: 'escrow-yes', testid, data: { escrow: label.kind }, title: label.long },
    label.kind === 'sealed' ? 'sealed' : 'present',
    el('span', { class: 'pin', text: ` key ${label.kid.slice(0, 8)}…` }),
    el('span', { class: 'hint', text: label.kind === 'sealed' ? ' this tab sealed it' : viewer === 'regulator' || viewer === 'attacker' ? ' see the verdict' : ' cannot check' }),
  );
}

/** The ciphertext body, shortened with an "expand" button (data-testid="ciphertext"). */
export function ciphertext(env: AnyEnvelope, ctx: EnvelopeViewContext, key: string, keep = 48): HTMLElement {
  return expandable(b64ToHex(env.body), keep, `${key}:body`, ctx.expanded, 'ciphertext');
}

const row = (label: string, ...value: (Node | string | null)[]) => el('div', { class: 'kv' }, el('span', { class: 'k', text: label }), el('span', { class: 'v' }, ...value));
const hint = (text: string) => el('span', { class: 'hint', text: ` ${text}` });

/**
 * Every field of an envelope: the header, the key model with its own fields (wraps and the escrow
 * field; the app key; the server's key and its delivery wraps), the escrow label for this viewer,
 * the signature. `sealed`: it crossed the wire inside a sealed-sender box.
 */
export function envelopeFields(env: AnyEnvelope, ctx: EnvelopeViewContext, key: string, options: { sealed?: boolean } = {}): HTMLElement {
  const keys = keysOf(env);
  const wrapList = (label: string, wraps: { to: string; key: string }[], what: string) =>
    row(
      label,
      el('ul', { class: 'wraps' }, ...wraps.map((w) => el('li', null, `→ ${ctx.name(w.to)}: `, expandable(b64ToHex(w.key), 24, `${key}:${label}:${w.to}`, ctx.expanded)))),
      hint(what),
    );
  let modelFields: HTMLElement[];
  switch (keys.model) {
    case 'e2e':
    case 'e2e-escrow':
      modelFields = [wrapList('wraps', keys.wraps, "the message key sealed to each one's key")];
      break;
    case 'app-key':
      modelFields = [
        row(
          'app key',
          `${keys.kid}: `,
          expandable(b64ToHex(keys.key), 24, `${key}:app`, ctx.expanded),
          hint('the message key, encrypted with the key every copy of the app ships'),
        ),
      ];
      break;
    case 'server-key':
      modelFields = [
        row('server', `${keys.kid}: `, expandable(b64ToHex(keys.server), 24, `${key}:server`, ctx.expanded), hint('the message key, sealed to the enterprise server')),
        wrapList('wraps', keys.wraps, "the sender's own copy"),
        env.v === 2 && env.delivery
          ? wrapList('delivery', env.delivery, "the server's re-wraps for the recipients (added by the server, not signed)")
          : row('delivery', hint('none yet: the server adds one wrap per recipient once it has opened the key')),
      ];
      break;
    default:
      return assertNever(keys);
  }
  return el(
    'div',
    { class: 'envelope-fields' },
    options.sealed ? row('sealed', el('span', { class: 'sealed-note', testid: 'wire-sealed', text: SEALED_SENDER })) : null,
    row('id', el('code', { class: 'mono', text: env.id })),
    row('from', ctx.name(env.from)),
    row('to', env.to.map((pin) => ctx.name(pin)).join(', ')),
    row('conv', env.conv),
    row('ts', `${env.ts} (${clockMs(env.ts)})`, hint("the sender's clock")),
    row(
      'model',
      el('code', { class: 'mono', testid: 'wire-model', text: keys.model }),
      hint(modelWords(env, ctx.viewer)),
      env.v === 1 ? hint('(protocol version 1: the model is implicit in the escrow field)') : null,
    ),
    row('nonce', el('code', { class: 'mono', text: b64ToHex(env.nonce) })),
    row('body', ciphertext(env, ctx, key, 64), hint(`${b64Bytes(env.body)} B hex, XChaCha20-Poly1305`)),
    ...modelFields,
    row(
      'escrow',
      escrowBadge(env, ctx.viewer, 'wire-escrow'),
      keys.model === 'e2e-escrow' ? el('span', null, ' ', expandable(b64ToHex(keys.escrow.key), 24, `${key}:escrow`, ctx.expanded)) : null,
    ),
    row('sig', expandable(b64ToHex(env.sig), 24, `${key}:sig`, ctx.expanded), hint('Ed25519 over all of the above')),
  );
}

/**
 * The fields behind a disclosure, built the first time it opens: a relay view or a console with
 * hundreds of rows builds only the ones someone looks at. It stays open across re-renders by key.
 */
export function envelopeDetails(label: string, env: AnyEnvelope, ctx: EnvelopeViewContext, key: string): HTMLDetailsElement {
  const details = el('details', { class: 'envelope-details', testid: 'envelope-details' }, el('summary', { text: label }));
  const openKey = `${key}:details`;
  const fill = () => {
    if (details.childElementCount === 1) details.append(envelopeFields(env, ctx, key));
  };
  details.addEventListener('toggle', () => {
    if (details.open) {
      ctx.expanded.add(openKey);
      fill();
    } else ctx.expanded.delete(openKey);
  });
  if (ctx.expanded.has(openKey)) {
    details.open = true;
    fill();
  }
  return details;
}

/** What a sealed-sender box hides from the relay and what it does not: one sentence for every page. */
export const SEALED_SENDER =
  'Sealed sender: the whole envelope, its sender and signature with it, travels inside a box only the recipient opens. The relay still sees to whom, when and how much.';

/** "Alice (PIN) → Bob (PIN), Carol (PIN)", for a line above an envelope. */
export const route = (env: AnyEnvelope, name: (pin: string) => string): string => `${name(env.from)} → ${env.to.map(name).join(', ')}`;

/** "1:1 · 312 B body", or "group g-1a2b… · …". */
export const convAndSize = (env: AnyEnvelope): string => `${env.conv === 'dm' ? '1:1' : `group ${env.conv.slice(0, 8)}…`} · ${bytes(b64Bytes(env.body))} body`;
