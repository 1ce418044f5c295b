/**
 * Client-side scanning, the hash side (shared/scan.ts): what counts as the same phrase, the bounds
 * of a list entry, what the salt does and does not hide, and the scan list's shape in the policy.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import sodium from 'libsodium-wrappers';
import { cryptoReady, toB64 } from '../../shared/crypto.ts';
import { MAX_SCAN_ENTRIES, Policy, type ScanPolicy, parseServerMessage } from '../../shared/protocol.ts';
import { MAX_PHRASE_WORDS, hashPhrase, normalisePhrase, scanText, scanWords } from '../../shared/scan.ts';
import { ScanAuthority, MAX_REPORTS } from '../../server/lab/scan-authority.ts';
import type { ScanReport } from '../../server/relay.ts';

beforeAll(cryptoReady);

const salt = () => sodium.randombytes_buf(16);

describe('scan normalisation', () => {
  it('case, runs of spaces, punctuation, accents and full-width letters do not change the words; a different word does', () => {
    const want = ['meet', 'at', 'the', 'square'];
    for (const text of ['meet at the square', 'MEET at the   Square!', ' meet,at-the…square ', 'Meet\tat\nthe square', 'meet at the squáre', 'ｍｅｅｔ at the square'])
      expect(scanWords(text), text).toEqual(want);
    expect(scanWords('meet at the squares')).not.toEqual(want);
    expect(scanWords('🙂 !!! ')).toEqual([]);
  });

  it(`a list phrase has 1 to ${MAX_PHRASE_WORDS} words: an empty or longer one is refused with a reason`, () => {
    expect(normalisePhrase('  Free   the Press! ')).toEqual({ ok: true, value: 'free the press' });
    expect(normalisePhrase('!!!')).toMatchObject({ ok: false, reason: expect.stringMatching(/no letters or digits/) });
    expect(normalisePhrase('one two three four five six seven eight nine')).toMatchObject({ ok: false, reason: expect.stringMatching(/at most 8 words/) });
    expect(() => hashPhrase(salt(), '')).toThrow(/no letters/);
  });
});

describe('scan hashes', () => {
  it('the same phrase hashes alike however it is typed, and differently under another list salt', () => {
    const s = salt();
    expect(hashPhrase(s, 'Meet at the SQUARE')).toBe(hashPhrase(s, 'meet at the square'));
    expect(hashPhrase(salt(), 'meet at the square')).not.toBe(hashPhrase(s, 'meet at the square'));
    expect(Buffer.from(hashPhrase(s, 'x'), 'base64')).toHaveLength(32);
  });

  it('a message matches when a run of its words is a listed phrase, not when the words are only near it', () => {
    const s = salt();
    const list = new Set([hashPhrase(s, 'meet at the square'), hashPhrase(s, 'Sources')]);
    expect(scanText(s, list, 'Are you coming? MEET at the  square at six.')).toEqual([hashPhrase(s, 'meet at the square')]);
    expect(scanText(s, list, 'my sources say so')).toEqual([hashPhrase(s, 'sources')]);
    for (const text of ['meet at the squares', 'meet at a square', 'the square, meet at', 'source', 'meetat the square']) expect(scanText(s, list, text), text).toEqual([]);
    expect(scanText(s, new Set(), 'meet at the square')).toEqual([]);
  });

  it('what a client holds (salt and hashes) does not contain the phrase, yet a guessed phrase can be tested against it: the salt stops precomputed tables, not guessing', () => {
    const s = salt();
    const scan: ScanPolicy = { list: '0123456789abcdef', salt: toB64(s), entries: [hashPhrase(s, 'free the press')], announced: false };
    const json = JSON.stringify(scan);
    for (const word of ['free', 'press', 'FREE THE PRESS']) expect(json.toLowerCase()).not.toContain(word.toLowerCase());
    // A participant with a list of likely slogans finds the one on the list.
    const guesses = ['no war', 'free the press', 'meet at the square'];
    const found = guesses.filter((g) => scan.entries.includes(hashPhrase(s, g)));
    expect(found).toEqual(['free the press']);
  });
});

describe('the scan list in the policy frame', () => {
  const policy = (scan: unknown) => ({
    type: 'policy',
    policy: {
      tap: false,
      scope: 'all',
      pins: [],
      announced: true,
      escrowPk: null,
      escrowKid: null,
      epoch: 3,
      room: { model: 'e2e', serverPk: null, serverKid: null, sealedSender: false },
      scan,
    },
  });
  const s = toB64(new Uint8Array(16));
  const h = (i: number) => toB64(new Uint8Array(32).fill(i));

  it('a valid list parses; without one the policy parses too (scanning off)', () => {
    expect(parseServerMessage(JSON.stringify(policy({ list: '0123456789abcdef', salt: s, entries: [h(1), h(2)], announced: true }))).ok).toBe(true);
    const { scan: _scan, ...off } = policy(undefined).policy;
    expect(Policy.safeParse(off).success).toBe(true);
  });

  it(`bad lists are refused with a message naming the field: too many entries (over ${MAX_SCAN_ENTRIES}), a repeated hash, a short hash, a bad salt, a stray field`, () => {
    const cases: [unknown, RegExp][] = [
      [
        { list: '0123456789abcdef', salt: s, entries: Array.from({ length: MAX_SCAN_ENTRIES + 1 }, (_, i) => h(i)), announced: true },
        /policy\.scan\.entries: a scan list holds at most 64/,
      ],
      [{ list: '0123456789abcdef', salt: s, entries: [h(1), h(1)], announced: true }, /policy\.scan\.entries: entries must not repeat/],
      [{ list: '0123456789abcdef', salt: s, entries: [toB64(new Uint8Array(31))], announced: true }, /policy\.scan\.entries\.0: must decode to 32 bytes/],
      [{ list: '0123456789abcdef', salt: 'not base64!', entries: [], announced: true }, /policy\.scan\.salt/],
      [{ list: 'XYZ', salt: s, entries: [], announced: true }, /policy\.scan\.list/],
      [{ list: '0123456789abcdef', salt: s, entries: [], announced: true, phrases: ['free the press'] }, /policy\.scan/],
    ];
    for (const [scan, message] of cases) {
      const parsed = parseServerMessage(JSON.stringify(policy(scan)));
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.message).toMatch(message);
    }
  });
});

describe('the authority keeps a bounded number of reports', () => {
  it(`past ${MAX_REPORTS} reports the oldest are dropped and counted: a flood cannot grow its memory`, () => {
    let sink: ((r: ScanReport) => void) | null = null;
    const authority = new ScanAuthority(
      {
        setScan: () => ({}) as never,
        setReportSink: (s) => {
          sink = s;
        },
      },
      { recordAction: () => {} },
    );
    for (let i = 0; i < MAX_REPORTS + 100; i++)
      sink!({
        at: i,
        id: i.toString(16).padStart(32, '0'),
        from: { pin: 'AAAAAAAA', name: 'A' },
        to: [{ pin: 'BBBBBBBB', name: 'B' }],
        list: '0123456789abcdef',
        entry: 'x',
        model: 'e2e',
      });
    const state = authority.state();
    expect(state.reports).toEqual({ total: MAX_REPORTS + 100, kept: MAX_REPORTS, dropped: 100 });
    expect(authority.reports()).toHaveLength(MAX_REPORTS);
    expect(authority.reports()[0]!.at).toBe(MAX_REPORTS + 99);
  });
});
