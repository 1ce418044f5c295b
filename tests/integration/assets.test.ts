/**
 * Page weight and caching over real HTTP: hashed asset names, brotli and gzip by Accept-Encoding,
 * immutable caching of assets, revalidated pages, and what a hostile request gets.
 */
import { request } from 'node:http';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGES } from '../../server/http.ts';
import { startTestRelay } from '../helpers/relay.ts';

type TestRelay = Awaited<ReturnType<typeof startTestRelay>>;
let app: TestRelay;

beforeAll(async () => {
  app = await startTestRelay();
});
afterAll(async () => {
  await app?.close();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One raw GET (node:http adds no Accept-Encoding of its own and decompresses nothing). */
function get(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: app.port, path, headers: { Host: `127.0.0.1:${app.port}`, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The /assets/ names a page's HTML loads. */
async function assetsOf(path: string): Promise<string[]> {
  const html = (await get(path)).body.toString('utf8');
  return [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
}

describe('assets', () => {
  it('every page loads its script and stylesheet under a content-hashed name, and the plain names are gone', async () => {
    for (const path of Object.keys(PAGES)) {
      const names = await assetsOf(path);
      expect(
        names.some((n) => /^\/assets\/[a-z-]+-[A-Z0-9]{8}\.js$/.test(n)),
        `${path} loads a hashed script: ${names.join(', ')}`,
      ).toBe(true);
      expect(names, `${path} loads the hashed stylesheet`).toContainEqual(expect.stringMatching(/^\/assets\/style-[A-Z0-9]{8}\.css$/));
      for (const name of names) expect((await get(name)).status, name).toBe(200);
    }
    for (const plain of ['/assets/chat.js', '/assets/relay-view.js', '/assets/style.css']) expect((await get(plain)).status, plain).toBe(404);
  });

  it('an asset comes brotli or gzip as Accept-Encoding asks, with Content-Encoding and Vary, and opens to the same bytes', async () => {
    const [script] = (await assetsOf('/')).filter((n) => n.endsWith('.js'));
    const plain = await get(script!);
    expect(plain.headers['content-encoding'], 'no Accept-Encoding: the plain bytes').toBeUndefined();
    expect(plain.headers.vary).toMatch(/Accept-Encoding/i);
    expect(plain.headers['content-type']).toMatch(/^text\/javascript/);
    const br = await get(script!, { 'Accept-Encoding': 'gzip, deflate, br, zstd' });
    expect(br.headers['content-encoding']).toBe('br');
    expect(br.headers.vary).toMatch(/Accept-Encoding/i);
    expect(Number(br.headers['content-length'])).toBe(br.body.length);
    expect(brotliDecompressSync(br.body).equals(plain.body)).toBe(true);
    const gz = await get(script!, { 'Accept-Encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(gz.body).equals(plain.body)).toBe(true);
    expect(br.body.length, 'brotli is smaller than gzip').toBeLessThan(gz.body.length);
    expect(gz.body.length * 3, 'and gzip is less than a third of the minified bytes').toBeLessThan(plain.body.length);
    expect((await get(script!, { 'Accept-Encoding': 'br;q=0, gzip;q=0.5' })).headers['content-encoding'], 'br;q=0 refuses brotli').toBe('gzip');
    expect((await get(script!, { 'Accept-Encoding': 'br;q=0.2, gzip;q=0.9' })).headers['content-encoding'], 'the higher q wins').toBe('gzip');
    expect((await get(script!, { 'Accept-Encoding': '*' })).headers['content-encoding'], '"*" takes brotli').toBe('br');
    expect((await get(script!, { 'Accept-Encoding': 'identity, deflate' })).headers['content-encoding'], 'nothing we have: plain').toBeUndefined();
    // Pages are compressed the same way.
    const page = await get('/relay', { 'Accept-Encoding': 'br' });
    expect(page.headers['content-encoding']).toBe('br');
    expect(brotliDecompressSync(page.body).toString('utf8')).toContain('Relay view');
  });

  it('hashed assets are cached for a year as immutable; pages are no-cache and answer 304 to their own ETag', async () => {
    for (const name of await assetsOf('/regulator')) {
      const res = await get(name);
      expect(res.headers['cache-control'], name).toBe('public, max-age=31536000, immutable');
    }
    for (const path of Object.keys(PAGES)) {
      const res = await get(path);
      expect(res.headers['cache-control'], path).toBe('no-cache');
      expect(res.headers['content-security-policy'], `${path} keeps its CSP`).toContain("script-src 'self'");
      const etag = String(res.headers.etag);
      expect(etag).toMatch(/^"[0-9a-f]{16}"$/);
      const again = await get(path, { 'If-None-Match': etag });
      expect(again.status, `${path} again`).toBe(304);
      expect(again.body.length).toBe(0);
      expect((await get(path, { 'If-None-Match': '"0000000000000000"' })).status, 'another ETag: the page').toBe(200);
    }
    // What is not an asset or a page stays uncached.
    expect((await get('/api/policy')).headers['cache-control']).toBe('no-store');
    expect((await get('/healthz')).headers['cache-control']).toBe('no-store');
  });

  it('an unknown asset, a path that climbs out of /assets or a huge Accept-Encoding gets a 404 or a plain answer, never a file off disk', async () => {
    for (const path of [
      '/assets/nope-ABCDEFGH.js',
      '/assets/../package.json',
      '/assets/..%2Fpackage.json',
      '/assets/%2e%2e%2fserver%2fhttp.ts',
      '/assets/style-N5FE46VI.css%00',
      '/assets/',
      '/assets//etc/passwd',
    ]) {
      const res = await get(path);
      expect([400, 404], `${path}: ${res.status}`).toContain(res.status);
      expect(res.body.toString('utf8'), path).not.toMatch(/"name": "backdoor-lab"|import express/);
    }
    const [script] = (await assetsOf('/')).filter((n) => n.endsWith('.js'));
    // 14 KB of junk tokens (Node's own header limit is 16 KB): read only as far as it needs, answered plainly.
    const junk = Array.from({ length: 1400 }, (_, i) => `x${i};q=1`).join(', ');
    const t0 = performance.now();
    const res = await get(script!, { 'Accept-Encoding': `${junk}, br` });
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding'], 'a "br" past the first 1,000 characters is not read').toBeUndefined();
    expect(performance.now() - t0).toBeLessThan(5000);
    const bad = await get(script!, { 'Accept-Encoding': 'br;q=NaN, gzip;q=-1, br;q=2' });
    expect(bad.status).toBe(200);
    expect(bad.headers['content-encoding'], 'nonsense q-values count as 0').toBeUndefined();
  });

  it('the relay view, the console, the teacher panel and the projector ship no libsodium; the chat page does', async () => {
    const marker = /libsodium|crypto_box_seal|crypto_aead_xchacha20poly1305/;
    for (const path of ['/relay', '/regulator', '/teacher', '/projector']) {
      for (const name of (await assetsOf(path)).filter((n) => n.endsWith('.js'))) {
        const js = (await get(name)).body.toString('utf8');
        expect(marker.test(js), `${path}: ${name} contains libsodium`).toBe(false);
        expect(js.length, `${path}: ${name} is minified`).toBeGreaterThan(1000);
      }
    }
    const [chat] = (await assetsOf('/')).filter((n) => n.endsWith('.js'));
    expect(marker.test((await get(chat!)).body.toString('utf8')), 'the chat page encrypts: its bundle has libsodium').toBe(true);
  });
});
