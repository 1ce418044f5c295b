/**
 * The escrow key pin (client/core/escrow-pin.ts) and pre-encryption (client/bot/pre-encrypt.ts):
 * the pure parts, and the messenger against a scripted relay that swaps the key mid-flight.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { checkEscrowPin, EscrowPinError } from '../../client/core/escrow-pin.ts';
import { newOuterKey, preDecrypt, preEncrypt } from '../../client/bot/pre-encrypt.ts';
import { Messenger, memoryStore, type SocketLike } from '../../client/core/messenger.ts';
import { cryptoReady, escrowFingerprint, escrowKid, fromB64, newEscrowKeyPair, newIdentity, normalizeFingerprint, toB64, type Identity } from '../../shared/crypto.ts';
import { parseClientMessage, type ClientMessage, type Policy, type ServerMessage } from '../../shared/protocol.ts';

beforeAll(cryptoReady);

describe('the escrow key fingerprint', () => {
  it('is BLAKE2b-160 of the public key as ten groups of four hex digits, not the key id, and differs for another key', () => {
    const a = newEscrowKeyPair();
    const b = newEscrowKeyPair();
    const fp = escrowFingerprint(a.pk);
    expect(fp).toMatch(/^([0-9A-F]{4} ){9}[0-9A-F]{4}$/);
    expect(fp.replace(/ /g, '').toLowerCase().startsWith(a.kid)).toBe(false);
    expect(escrowFingerprint(b.pk)).not.toBe(fp);
    expect(escrowFingerprint(a.pk)).toBe(fp);
  });

  it('is read as a person types it: spaces, dashes and case do not matter; anything but 40 hex digits is refused', () => {
    const fp = escrowFingerprint(newEscrowKeyPair().pk);
    expect(normalizeFingerprint(fp.toLowerCase().replace(/ /g, ''))).toBe(fp);
    expect(normalizeFingerprint(fp.replace(/ /g, '-'))).toBe(fp);
    expect(normalizeFingerprint(` ${fp}\n`)).toBe(fp);
    expect(normalizeFingerprint(fp.slice(0, -1))).toBeNull();
    expect(normalizeFingerprint(`${fp}0`)).toBeNull();
    expect(normalizeFingerprint(fp.replace(/^./, 'G'))).toBeNull();
    expect(normalizeFingerprint('')).toBeNull();
  });

  it('checkEscrowPin: not pinned, matching, or differing — always computed from the announced key itself', () => {
    const reg = newEscrowKeyPair();
    const other = newEscrowKeyPair();
    const pin = escrowFingerprint(reg.pk);
    expect(checkEscrowPin(null, other.pk)).toEqual({ status: 'not-pinned', announced: escrowFingerprint(other.pk) });
    expect(checkEscrowPin(pin.toLowerCase(), reg.pk)).toEqual({ status: 'matches', announced: pin });
    expect(checkEscrowPin(pin, other.pk)).toEqual({ status: 'differs', announced: escrowFingerprint(other.pk), pinned: pin });
  });
});

describe('pre-encryption', () => {
  it('round-trips with the shared key; another key, a changed byte or a plain text opens to null (never throws)', () => {
    const key = newOuterKey();
    const text = 'Meet at the north gate at nine. ünïcödé ✓';
    const box = preEncrypt(key, text);
    expect(box).toMatch(/^sbx1:[A-Za-z0-9+/]+=*$/);
    expect(box).not.toContain('north');
    expect(preEncrypt(key, text)).not.toBe(box); // a fresh nonce each time
    expect(preDecrypt(key, box)).toBe(text);
    expect(preDecrypt(newOuterKey(), box)).toBeNull();
    const raw = fromB64(box.slice(5));
    raw[raw.length - 1]! ^= 1;
    expect(preDecrypt(key, `sbx1:${toB64(raw)}`)).toBeNull();
    expect(preDecrypt(key, 'hello')).toBeNull();
    expect(preDecrypt(key, 'sbx1:!!!')).toBeNull();
    expect(preDecrypt(key, 'sbx1:AAAA')).toBeNull();
  });
});

class FakeSocket implements SocketLike {
  readyState = 1;
  sent: ClientMessage[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  send(data: string): void {
    const parsed = parseClientMessage(data);
    if (!parsed.ok) throw new Error(`client sent an invalid frame: ${parsed.message}`);
    this.sent.push(parsed.value);
  }
  close(): void {
    this.readyState = 3;
  }
  deliver(msg: ServerMessage): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  sends() {
    return this.sent.filter((m): m is Extract<ClientMessage, { type: 'send' }> => m.type === 'send');
  }
}

const OFF: Policy = {
  tap: false,
  scope: 'all',
  pins: [],
  announced: true,
  escrowPk: null,
  escrowKid: null,
  epoch: 1,
  room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
};
const tapWith = (key: { pk: Uint8Array; kid: string }, epoch: number): Policy => ({ ...OFF, tap: true, escrowPk: toB64(key.pk), escrowKid: key.kid, epoch });

function loggedIn(policy: Policy, bob: Identity, pinnedEscrow: string | null) {
  const socket = new FakeSocket();
  const m = new Messenger({ name: 'Alice', connect: () => socket, storage: memoryStore(), pinnedEscrow });
  void m.start();
  socket.deliver({ type: 'challenge', v: 2, nonce: Buffer.alloc(32, 7).toString('base64'), policy });
  socket.deliver({
    type: 'welcome',
    pin: m.pin,
    name: 'Alice',
    policy,
    total: 2,
    directory: [
      { pin: m.pin, name: 'Alice', pk: toB64(m.identity.signPk), online: true },
      { pin: bob.pin, name: 'Bob', pk: toB64(bob.signPk), online: true },
    ],
  });
  return { socket, m };
}

describe('a pinned messenger against a relay that swaps the key', () => {
  it('a message in flight when the key is swapped is not sealed again to the new key: it fails, saying why, and nothing more is sent', () => {
    const bob = newIdentity();
    const reg = newEscrowKeyPair();
    const intruder = newEscrowKeyPair();
    const { socket, m } = loggedIn(tapWith(reg, 1), bob, escrowFingerprint(reg.pk));
    const sent = m.sendText([bob.pin], 'in flight');
    expect(socket.sends()).toHaveLength(1);
    socket.deliver({ type: 'policy', policy: tapWith(intruder, 2) });
    socket.deliver({ type: 'error', code: 'escrow_required', message: `the tap is on: add an escrow field for key ${intruder.kid}`, ref: sent.id });
    expect(socket.sends()).toHaveLength(1);
    const state = m.messages.get(sent.id)!;
    expect(state.state).toBe('failed');
    expect(state.error).toContain(escrowFingerprint(intruder.pk));
  });

  it('an unpinned messenger in the same spot seals again to the new key, without a word (the point of the lesson)', () => {
    const bob = newIdentity();
    const reg = newEscrowKeyPair();
    const intruder = newEscrowKeyPair();
    const { socket, m } = loggedIn(tapWith(reg, 1), bob, null);
    const sent = m.sendText([bob.pin], 'in flight');
    socket.deliver({ type: 'policy', policy: tapWith(intruder, 2) });
    socket.deliver({ type: 'error', code: 'escrow_required', message: 'add an escrow field', ref: sent.id });
    const again = socket.sends().at(-1)!.env;
    expect(again.id).toBe(sent.id);
    expect(again.keys.model === 'e2e-escrow' && again.keys.escrow.kid).toBe(intruder.kid);
  });

  it('seals under the key id of the key itself, whatever id the policy claims for it', () => {
    const bob = newIdentity();
    const reg = newEscrowKeyPair();
    const intruder = newEscrowKeyPair();
    const { socket, m } = loggedIn({ ...tapWith(intruder, 1), escrowKid: reg.kid }, bob, null);
    m.sendText([bob.pin], 'which key?');
    const env = socket.sends().at(-1)!.env;
    expect(env.keys.model === 'e2e-escrow' && env.keys.escrow.kid).toBe(escrowKid(intruder.pk));
  });

  it('a pinned messenger refuses before sealing, and sends once the person accepts that key for that message; the pin survives in its storage', () => {
    const bob = newIdentity();
    const reg = newEscrowKeyPair();
    const intruder = newEscrowKeyPair();
    const storage = memoryStore();
    const socket = new FakeSocket();
    const m = new Messenger({ name: 'Alice', connect: () => socket, storage });
    m.pinEscrowKey(escrowFingerprint(reg.pk));
    expect(() => m.pinEscrowKey('not a fingerprint')).toThrow(/40 hex digits/);
    expect(m.pinnedEscrow).toBe(escrowFingerprint(reg.pk));
    expect(new Messenger({ name: 'Alice', connect: () => new FakeSocket(), storage }).pinnedEscrow).toBe(escrowFingerprint(reg.pk));
    void m.start();
    const policy = tapWith(intruder, 1);
    socket.deliver({ type: 'challenge', v: 2, nonce: Buffer.alloc(32, 7).toString('base64'), policy });
    socket.deliver({ type: 'welcome', pin: m.pin, name: 'Alice', policy, total: 2, directory: [{ pin: bob.pin, name: 'Bob', pk: toB64(bob.signPk), online: true }] });
    expect(() => m.sendText([bob.pin], 'no')).toThrow(EscrowPinError);
    expect(socket.sends()).toHaveLength(0);
    expect(() => m.sendText([bob.pin], 'no', { acceptEscrow: escrowFingerprint(newEscrowKeyPair().pk) })).toThrow(EscrowPinError);
    m.sendText([bob.pin], 'yes, knowing', { acceptEscrow: escrowFingerprint(intruder.pk) });
    expect(socket.sends()).toHaveLength(1);
    m.pinEscrowKey(null);
    expect(new Messenger({ name: 'Alice', connect: () => new FakeSocket(), storage }).pinnedEscrow).toBeNull();
  });
});
