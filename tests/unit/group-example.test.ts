/**
 * The group worked example of docs/wire-format.md (section 8), recomputed byte for byte from its
 * fixed inputs with libsodium primitives and the layouts as the doc states them — independently of
 * shared/groups.ts — then compared with the fixture, with shared/groups.ts, and with the doc.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';
import { cryptoReady, fromHex, newIdentity } from '../../shared/crypto.ts';
import { createGroup, verifyGroupState } from '../../shared/groups.ts';
import { GroupState } from '../../shared/protocol.ts';
import { GROUP_DOC_BEGIN, GROUP_DOC_END, buildGroupExample, type GroupExample } from '../../scripts/make-group-example.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const fx = JSON.parse(readFileSync(resolve(ROOT, 'tests/fixtures/group-example.json'), 'utf8')) as GroupExample;
const doc = readFileSync(resolve(ROOT, 'docs/wire-format.md'), 'utf8');
const section = doc.slice(doc.indexOf(GROUP_DOC_BEGIN), doc.indexOf(GROUP_DOC_END));

const b64 = (bytes: Uint8Array) => sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
const pinOf = (pk: Uint8Array) => sodium.to_hex(sodium.crypto_generichash(4, pk, null)).toUpperCase();

beforeAll(cryptoReady);

describe('the group worked example', () => {
  it('every value follows from the fixed inputs with libsodium primitives and the documented layouts', () => {
    const { inputs } = fx;
    const keys = [inputs.aliceSeedHex, inputs.bobSeedHex, inputs.carolSeedHex].map((h) => sodium.crypto_sign_seed_keypair(sodium.from_hex(h)));
    const alice = keys[0]!;
    const creator = b64(alice.publicKey);
    const salt = b64(sodium.from_hex(inputs.saltHex));
    const idInput = `backdoor-lab group id\ncreator=${creator}\nsalt=${salt}`;
    const id = `g-${sodium.to_hex(sodium.crypto_generichash(8, sodium.from_string(idInput), null))}`;
    const members = keys.map((k) => ({ pin: pinOf(k.publicKey), pk: b64(k.publicKey) })).sort((a, b) => (a.pin < b.pin ? -1 : 1));
    const signed = [
      'backdoor-lab group state',
      `id=${id}`,
      `name=${JSON.stringify(inputs.name)}`,
      'version=1',
      `creator=${creator}`,
      `salt=${salt}`,
      `members=${members.map((m) => `${m.pin}:${m.pk}`).join(',')}`,
    ].join('\n');
    const sig = b64(sodium.crypto_sign_detached(sodium.from_string(signed), alice.privateKey));

    expect(fx.expected).toMatchObject({ saltB64: salt, idInputText: idInput, id, signedText: signed, signedLength: sodium.from_string(signed).length, sigB64: sig });
    expect(fx.expected.state).toEqual({ id, name: inputs.name, version: 1, creator, salt, members, sig });
    expect(sodium.crypto_sign_verify_detached(sodium.from_base64(sig, sodium.base64_variants.ORIGINAL), sodium.from_string(signed), alice.publicKey)).toBe(true);
  });

  it('shared/groups.ts builds the same list from the same inputs, and it verifies and parses', () => {
    expect(buildGroupExample()).toEqual(fx);
    expect(GroupState.parse(fx.expected.state)).toEqual(fx.expected.state);
    expect(verifyGroupState(fx.expected.state)).toEqual({ ok: true });
    const again = createGroup(newIdentity(fromHex(fx.inputs.aliceSeedHex)), fx.inputs.name, [fx.members.bob, fx.members.carol], fromHex(fx.inputs.saltHex));
    expect(again).toEqual(fx.expected.state);
  });

  it('the doc prints the inputs, the id input, the signed bytes, the signature and the list', () => {
    expect(section.length).toBeGreaterThan(500);
    for (const value of [
      fx.inputs.aliceSeedHex,
      fx.inputs.bobSeedHex,
      fx.inputs.carolSeedHex,
      fx.inputs.saltHex,
      fx.expected.saltB64,
      fx.expected.id,
      fx.expected.sigB64,
      fx.members.alice.pin,
      fx.members.bob.pin,
      fx.members.carol.pin,
    ]) {
      expect(section).toContain(`\`${value}\``);
    }
    expect(section).toContain(`\`\`\`text\n${fx.expected.idInputText}\n\`\`\``);
    expect(section).toContain(`\`\`\`text\n${fx.expected.signedText}\n\`\`\``);
    expect(section).toContain(`${fx.expected.signedLength} bytes`);
    expect(section).toContain(`\`\`\`json\n${JSON.stringify(fx.expected.state, null, 2)}\n\`\`\``);
  });
});
