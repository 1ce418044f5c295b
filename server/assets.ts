/**
 * The pages' assets, built once at start: the client bundles minified by esbuild with a content
 * hash in their names (`/assets/chat-3F2A9C1B.js`), the stylesheet likewise, and each page's HTML
 * with those names written into it. Every file is compressed once, with brotli and with gzip, and
 * served in the encoding the browser asks for (Accept-Encoding), so thirty phones on one Wi-Fi
 * fetch about a quarter of the bytes, and a reload fetches almost nothing: a hashed name never
 * changes content, so it is cached for a year (`immutable`); a page is revalidated every time
 * (`no-cache` with an ETag: a 304 when it did not change).
 *
 * Brotli at its best quality takes a few seconds for the chat bundle; the compressed files are
 * kept in a cache folder by content hash, so a second start (and every test relay after the
 * first) reuses them. What is read back from that cache is decompressed and compared with the
 * file it claims to be before it is used: a stale or planted file is recomputed, never served.
 */
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { basename, join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync, gzipSync } from 'node:zlib';
import type { Request, Response } from 'express';

export interface Asset {
  /** The name it is served under: `chat-3F2A9C1B.js` for a bundle, the path for a page. */
  name: string;
  type: string;
  body: Buffer;
  br: Buffer;
  gzip: Buffer;
  /** A strong validator: the first 16 hex digits of the body's SHA-256, quoted. */
  etag: string;
  /** Hashed names are cached for a year; pages are revalidated on every load. */
  immutable: boolean;
}

export interface Assets {
  /** Hashed asset name → asset (`chat-3F2A9C1B.js`, `style-7Q2M4X1A.css`). */
  files: Map<string, Asset>;
  /** Page path → its HTML, with the hashed names written in (`/`, `/relay`, …). */
  pages: Map<string, Asset>;
  /** Plain name → hashed name (`chat.js` → `chat-3F2A9C1B.js`), for tests and the bench. */
  names: Map<string, string>;
}

export const IMMUTABLE = 'public, max-age=31536000, immutable';

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** Where compressed files are kept between starts (per user; verified on every read, so sharing it is harmless). */
function cacheDir(): string | null {
  try {
    const dir = join(tmpdir(), `backdoor-lab-assets-${userInfo().uid}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  } catch {
    return null;
  }
}

function compressed(body: Buffer, kind: 'br' | 'gz', dir: string | null): Buffer {
  const file = dir ? join(dir, `${sha256(body)}.${kind}`) : null;
  const unpack = (data: Buffer) => (kind === 'br' ? brotliDecompressSync(data, { maxOutputLength: body.length + 1 }) : gunzipSync(data, { maxOutputLength: body.length + 1 }));
  if (file) {
    try {
      const cached = readFileSync(file);
      if (unpack(cached).equals(body)) return cached;
    } catch {
      // Not cached yet, or not what it claims to be: made again below.
    }
  }
  const made =
    kind === 'br'
      ? brotliCompressSync(body, {
          params: {
            [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
            [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
            [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
          },
        })
      : gzipSync(body, { level: 9 });
  if (file) {
    try {
      // Written aside and renamed: two relays starting at once never read half a file.
      const temp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
      writeFileSync(temp, made, { mode: 0o600 });
      renameSync(temp, file);
    } catch {
      // A read-only or full disk: the relay serves what it made, it just makes it again next start.
    }
  }
  return made;
}

function asset(name: string, type: string, body: Buffer, immutable: boolean, dir: string | null): Asset {
  return { name, type, body, br: compressed(body, 'br', dir), gzip: compressed(body, 'gz', dir), etag: `"${sha256(body).slice(0, 16)}"`, immutable };
}

/**
 * Build every bundle (one per entry, `client/ui/<entry>.ts`) and the stylesheet, and every page
 * with the hashed names written where it says `/assets/<entry>.js` or `/assets/style.css`. A page
 * that names an asset that was not built stops the start with the page's and the asset's name.
 */
export async function buildAssets(root: string, entries: readonly string[], pages: Readonly<Record<string, string>>): Promise<Assets> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: { ...Object.fromEntries(entries.map((e) => [e, `client/ui/${e}.ts`])), style: 'client/ui/style.css' },
    entryNames: '[name]-[hash]',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    outdir: 'assets',
    minify: true,
    metafile: true,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'silent',
  });
  const dir = cacheDir();
  const files = new Map<string, Asset>();
  const names = new Map<string, string>();
  for (const out of result.outputFiles) {
    const name = basename(out.path);
    const meta = result.metafile.outputs[`assets/${name}`];
    if (!meta?.entryPoint) throw new Error(`esbuild wrote ${name}, which is no entry point (code splitting is off)`);
    const ext = name.endsWith('.css') ? 'css' : 'js';
    names.set(`${basename(meta.entryPoint).replace(/\.(ts|css)$/, '')}.${ext}`, name);
    files.set(name, asset(name, ext === 'css' ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8', Buffer.from(out.contents), true, dir));
  }
  const pageAssets = new Map<string, Asset>();
  for (const [path, file] of Object.entries(pages)) {
    const html = readFileSync(join(root, 'client/ui', file), 'utf8').replace(/\/assets\/([a-z0-9-]+\.(?:js|css))/g, (_whole, plain: string) => {
      const hashed = names.get(plain);
      if (!hashed) throw new Error(`client/ui/${file} loads /assets/${plain}, which is not built: add its entry to ENTRIES in server/http.ts`);
      return `/assets/${hashed}`;
    });
    pageAssets.set(path, asset(path, 'text/html; charset=utf-8', Buffer.from(html), false, dir));
  }
  return { files, pages: pageAssets, names };
}

/**
 * The encoding to answer with for an Accept-Encoding header: `br` or `gzip` when the browser
 * accepts it (a q-value above 0; the higher one, brotli on a tie), else the plain bytes. Only the
 * first 1,000 characters and 30 entries are read: a header of any length costs nothing more.
 */
export function pickEncoding(header: string | string[] | undefined): 'br' | 'gzip' | 'identity' {
  const text = (Array.isArray(header) ? header.join(',') : (header ?? '')).slice(0, 1000).toLowerCase();
  const q = { br: 0, gzip: 0, star: 0 };
  const named = new Set<string>();
  for (const part of text.split(',').slice(0, 30)) {
    const [token = '', ...params] = part.split(';').map((s) => s.trim());
    const qParam = params.find((p) => p.startsWith('q='));
    const value = qParam ? Number(qParam.slice(2)) : 1;
    const quality = Number.isFinite(value) && value >= 0 && value <= 1 ? value : 0;
    if (token === 'br') q.br = quality;
    else if (token === 'gzip' || token === 'x-gzip') q.gzip = quality;
    else if (token === '*') q.star = quality;
    named.add(token === 'x-gzip' ? 'gzip' : token);
  }
  // "*" stands for any encoding not named.
  if (!named.has('br')) q.br = q.star;
  if (!named.has('gzip')) q.gzip = q.star;
  if (q.br > 0 && q.br >= q.gzip) return 'br';
  if (q.gzip > 0) return 'gzip';
  return 'identity';
}

/** Answer with an asset or a page: compressed as asked, cached as its kind is, 304 when the browser has it. */
export function sendAsset(req: Request, res: Response, file: Asset): void {
  res.setHeader('Vary', 'Accept-Encoding');
  res.setHeader('Cache-Control', file.immutable ? IMMUTABLE : 'no-cache');
  res.setHeader('ETag', file.etag);
  res.setHeader('Content-Type', file.type);
  const known = req.headers['if-none-match'];
  if (known?.split(',').some((tag) => tag.trim().replace(/^W\//, '') === file.etag)) {
    res.status(304).end();
    return;
  }
  const encoding = pickEncoding(req.headers['accept-encoding']);
  const body = encoding === 'br' ? file.br : encoding === 'gzip' ? file.gzip : file.body;
  if (encoding !== 'identity') res.setHeader('Content-Encoding', encoding);
  res.setHeader('Content-Length', String(body.length));
  res.status(200).end(req.method === 'HEAD' ? undefined : body);
}
