/**
 * HTTP side: the pages, the client bundles (built in memory by esbuild at start, so `npm start`
 * needs no build step: minified, content-hashed, compressed and cached, see assets.ts), security
 * headers, health, and the teacher's regulator API behind the admin token.
 */
import express, { type Request, type Response, type NextFunction } from 'express';
import { createHash, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { Pin, keysOf } from '../shared/protocol.ts';
import type { Relay } from './relay.ts';
import type { Regulator } from './regulator.ts';
import type { RelayStore } from './store.ts';
import type { Logger } from './log.ts';
import { retryAfterSeconds, type AdminGuard } from './admin-guard.ts';
import type { Enterprise } from './enterprise.ts';
import type { Lab } from './lab/lab.ts';
import { labRouter } from './lab/api.ts';
import { buildAssets, sendAsset, type Assets } from './assets.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// A page is its path and its HTML file; the HTML loads /assets/<entry>.js and /assets/style.css,
// names the start rewrites to the hashed ones (assets.ts). A new page: one line here, its entry in ENTRIES.
// brute-worker is the attacker console's Web Worker: its HTML names it in data-worker, rewritten the same way.
export const PAGES = {
  '/': 'chat.html',
  '/relay': 'relay.html',
  '/regulator': 'regulator.html',
  '/teacher': 'teacher.html',
  '/projector': 'projector.html',
  '/attacker': 'attacker.html',
} as const;
export const ENTRIES = ['chat', 'relay-view', 'regulator', 'teacher', 'projector', 'attacker', 'brute-worker'] as const;

/** The Content-Security-Policy every page is served with: no inline script, no other origin. */
export const CSP = [
  "default-src 'none'",
  // libsodium instantiates WebAssembly; 'wasm-unsafe-eval' allows that and nothing else (no eval, no inline).
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  // The attacker console's brute force runs in a Web Worker from this origin (/assets/brute-worker.js):
  // no blob:, no data:, no other origin. Said explicitly rather than left to script-src's fallback.
  "worker-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

let built: Promise<Assets> | null = null;

/** The pages and their assets, built once per process (every relay a test starts shares them). */
export function buildBundles(): Promise<Assets> {
  built ??= buildAssets(root, ENTRIES, PAGES).catch((err: unknown) => {
    built = null;
    throw err;
  });
  return built;
}

/** Constant-time comparison of a presented token with the admin token. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (!presented) return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearer(req: Request): string | undefined {
  const header = req.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  return match?.[1];
}

const TapBody = z
  .object({
    tap: z.boolean(),
    scope: z.enum(['all', 'warrant']).default('all'),
    pins: z.array(Pin).max(1000).default([]),
    announced: z.boolean().default(true),
  })
  .strict();

const DemandBody = z.object({ limit: z.number().int().min(1).max(1000).default(200) }).strict();

export interface HttpDeps {
  relay: Relay;
  store: RelayStore;
  regulator: Regulator;
  adminToken: string;
  /** Wrong-token guesses, slowed per address (shared with the console socket). */
  guard: AdminGuard;
  log: Logger;
  bundles: Assets;
  startedAt: number;
  /** The lab (teacher panel API, at /api/lab) and the operator's handover for a demand. */
  lab: Lab;
  enterprise: Enterprise;
}

export function createHttpApp(deps: HttpDeps): express.Express {
  const { relay, regulator, store, adminToken, bundles } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use((_req, res, next) => {
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Cache-Control', 'no-store');
    next();
  });

  for (const [path, page] of bundles.pages) app.get(path, (req, res) => sendAsset(req, res, page));
  // Only names that were built: the name is a key, never a path on disk.
  app.get('/assets/:file', (req, res) => {
    const file = bundles.files.get(String(req.params.file));
    if (!file) return void res.status(404).json({ error: 'not_found', message: 'no such asset (asset names carry a content hash: reload the page)' });
    sendAsset(req, res, file);
  });

  app.get('/healthz', (_req, res) => {
    res.json({
      ok: true,
      uptimeSeconds: Math.round((Date.now() - deps.startedAt) / 1000),
      online: relay.onlineCount(),
      connections: relay.connectionCount(),
      queued: store.queueDepth(),
      tap: relay.getPolicy().tap,
    });
  });

  app.get('/api/policy', (_req, res) => void res.json(relay.getPolicy()));
  // Whether joining needs the class code (classroom mode), for the chat page's name form: never the code itself.
  app.get('/api/join', (_req, res) => void res.json({ classCode: relay.getClassroom() !== null }));

  // ---- The teacher's regulator API: every route needs the admin token.
  const admin = express.Router();
  const requireAdmin = (req: Request, res: Response, next: NextFunction) => {
    const address = req.socket.remoteAddress ?? '-';
    // Refusals are logged for the teacher, with the path only (never the query string or the presented token).
    const refused = (status: number) => deps.log.info('admin request refused', { status, method: req.method, path: req.path, address });
    const wait = deps.guard.lockedFor(address);
    if (wait > 0) {
      // Locked out after too many wrong tokens: the token is not even compared.
      refused(429);
      const seconds = retryAfterSeconds(wait);
      return void res
        .status(429)
        .setHeader('Retry-After', String(seconds))
        .json({ error: 'too_many_failures', message: `too many wrong admin tokens from your address: try again in ${seconds} s` });
    }
    const token = bearer(req);
    if (!token) {
      refused(401);
      return void res.status(401).setHeader('WWW-Authenticate', 'Bearer').json({ error: 'unauthorized', message: 'send Authorization: Bearer <admin token>' });
    }
    if (!tokenMatches(token, adminToken)) {
      deps.guard.failed(address);
      refused(403);
      return void res.status(403).json({ error: 'forbidden', message: 'wrong admin token' });
    }
    deps.guard.succeeded(address);
    next();
  };
  admin.use(requireAdmin);
  admin.use(express.json({ limit: '64kb' }));
  // "Serve a demand on the operator": what the relay's operator can hand over for each archived
  // envelope, in the key model it was sent under (the regulator never holds the server's key).
  admin.post('/demand', (req, res) => {
    const parsed = DemandBody.safeParse(req.body ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return void res.status(400).json({ error: 'bad_request', message: `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}` });
    }
    const { limit } = parsed.data;
    const items = regulator.archived(regulator.seqBeforeNewest(limit), limit).map((line) => ({
      seq: line.seq,
      at: line.at,
      id: line.env.id,
      from: line.env.from,
      to: line.env.to,
      names: line.names ?? {},
      model: keysOf(line.env).model,
      bytes: line.env.body.length,
      ...deps.enterprise.handOver(line.env),
    }));
    regulator.recordDemand(items.length, items.filter((i) => i.status === 'plaintext').length);
    res.json({ items, plaintext: items.filter((i) => i.status === 'plaintext').length, total: items.length });
  });
  admin.get('/tap', (_req, res) => void res.json({ settings: regulator.tapSettings(), policy: relay.getPolicy() }));
  admin.post('/tap', (req, res) => {
    const parsed = TapBody.safeParse(req.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return void res.status(400).json({ error: 'bad_request', message: `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}` });
    }
    try {
      const policy = regulator.setTap(parsed.data);
      deps.log.info('tap changed', { tap: policy.tap, scope: policy.scope, announced: policy.announced, kid: policy.escrowKid ?? '-' });
      res.json({ settings: regulator.tapSettings(), policy });
    } catch (err) {
      res.status(400).json({ error: 'bad_request', message: (err as Error).message });
    }
  });
  admin.get('/intercepts', (req, res) => {
    const limit = Math.min(1000, Math.max(1, Number(req.query.limit) || 200));
    res.json({ intercepts: regulator.recent(limit), total: regulator.archiveSize(), kid: regulator.kid });
  });
  admin.get('/audit', (_req, res) => void res.json({ audit: regulator.auditLog() }));
  // Client-side scanning: the reports clients sent (the authority's view; the lab keeps the list).
  admin.get('/scan-reports', (_req, res) => void res.json({ reports: deps.lab.scanner.reports(), state: deps.lab.scanner.state() }));
  admin.get('/archive.jsonl', (_req, res) => {
    res.type('application/x-ndjson');
    res.setHeader('Content-Disposition', 'attachment; filename="archive.jsonl"');
    for (const line of regulator.exportArchive()) res.write(line);
    res.end();
  });
  admin.get('/escrow-key', (req, res) => {
    res.setHeader('Content-Disposition', 'attachment; filename="escrow-key.json"');
    const file = regulator.exportKey(req.socket.remoteAddress ?? 'unknown');
    deps.log.info('escrow key exported', { kid: file.kid, address: req.socket.remoteAddress ?? '-' });
    res.json(file);
  });
  app.use('/api/regulator', admin);
  const lab = express.Router();
  lab.use(requireAdmin);
  lab.use(express.json({ limit: '16kb' }));
  lab.use(labRouter(deps.lab));
  app.use('/api/lab', lab);

  app.use((_req, res) => void res.status(404).json({ error: 'not_found', message: 'no such page' }));
  // Malformed JSON bodies and other request errors: a clear 4xx, never a stack trace.
  app.use((err: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    const status = err.status && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) deps.log.error('http handler failed', { error: err.message });
    res.status(status).json({ error: status === 500 ? 'internal' : 'bad_request', message: status === 500 ? 'internal error' : err.message });
  });
  return app;
}
