/**
 * The lab's JSON API, behind the admin token like the regulator's (server/http.ts mounts it at
 * /api/lab). A workshop leader can script a lesson with it; the teacher panel uses nothing else.
 *
 *   GET  /api/lab/scenarios              id, title, scene and narration of each scenario
 *   POST /api/lab/scenarios/<id>/run     run one; its result and narration card
 *   GET  /api/lab/current                the last scenario run (or null)
 *   GET  /api/lab/people                 everyone in the directory: name, PIN, online, last seen, bot
 *   POST /api/lab/bots {name}            start a bot participant; DELETE /api/lab/bots/<name> stops it
 *   POST /api/lab/room {model, sealedSender}   the room's key model
 *   GET  /api/lab/metadata               the metadata picture
 *   POST /api/lab/forget-offline         forget the directory entries of everyone offline
 *   POST /api/lab/reset {confirm: "reset"}     reset the room (the audit log records it)
 *   GET  /api/lab/escrow                 the regulator key's fingerprint, the key the relay announces, swapped or not
 *   GET  /api/lab/observers              the relay's observers, as the normal view lists them (hidden ones left out)
 *   POST /api/lab/observers/reveal       every observer, hidden ones marked, with since, envelopes handed and sink (audited)
 *   GET  /api/lab/scan                   client-side scanning: on/off, announced, the list (id, salt, hashes), report counts
 *   POST /api/lab/scan {on, announced}   turn scanning on or off (audited); the policy goes to every client
 *   POST /api/lab/scan/entries {phrase} | {hash}   add a list entry: a phrase is hashed and forgotten (audited)
 *   GET  /api/lab/scan/reports           the reports clients sent, newest first (also /api/regulator/scan-reports)
 *   GET  /api/lab/classroom              classroom mode: the class code, join links, QR code (none while hidden)
 *   POST /api/lab/classroom {hidden}     hide the class code from the panel and projector (joining still works), or show it
 *   POST /api/lab/people/<pin>/kick      remove a person: their tab is closed (4008) and their PIN refused until readmitted or reset
 *   POST /api/lab/people/<pin>/readmit   let a removed person back in
 *   GET/POST /api/lab/projector          what the projector shows (server/lab/projector.ts)
 *   GET  /api/lab/attacker               the attacker's loot and what it opens (docs/attacker.md): plaintext
 *   POST /api/lab/attacker/found {kid, secret} the brute force's answer for an export-grade key: checked
 *                                        (the secret must derive that key), then its private key is loot;
 *                                        a wrong one is 400 wrong_key and leaks nothing
 */
import express, { type Request, type Response } from 'express';
import { z } from 'zod';
import { AttackerError } from './attacker.ts';
import { LabError, type Lab } from './lab.ts';
import { Pin } from '../../shared/protocol.ts';
import { Projector, projectorRouter } from './projector.ts';

const Room = z.object({ model: z.enum(['e2e', 'app-key', 'server-key']), sealedSender: z.boolean().default(false) }).strict();
const BotBody = z.object({ name: z.string().min(1).max(20) }).strict();
const Reset = z.object({ confirm: z.literal('reset') }).strict();
const ScanSwitch = z.object({ on: z.boolean(), announced: z.boolean().default(true) }).strict();
const ScanEntryBody = z.union([
  z.object({ phrase: z.string().min(1).max(400) }).strict(),
  z.object({ hash: z.string().regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, 'hash must be 32 bytes in canonical standard base64 (44 characters)') }).strict(),
]);
const who = (req: Request) => `the teacher (${req.socket.remoteAddress ?? 'unknown address'})`;
const HideCode = z.object({ hidden: z.boolean() }).strict();
const Found = z
  .object({
    kid: z.string().regex(/^[0-9a-f]{16}$/, 'kid must be 16 lower-case hex digits'),
    secret: z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 1),
  })
  .strict();

function fail(res: Response, err: unknown): void {
  if (err instanceof LabError)
    return void res.status(err.status).json({ error: err.status === 404 ? 'not_found' : err.status === 409 ? 'conflict' : 'bad_request', message: err.message });
  res.status(400).json({ error: 'bad_request', message: (err as Error).message });
}

function body<T>(schema: z.ZodType<T>, req: Request, res: Response): T | null {
  const parsed = schema.safeParse(req.body ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  res.status(400).json({ error: 'bad_request', message: `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}` });
  return null;
}

export function labRouter(lab: Lab): express.Router {
  const r = express.Router();
  r.get('/scenarios', (_req, res) => void res.json({ scenarios: lab.list() }));
  r.post('/scenarios/:id/run', async (req, res) => {
    try {
      res.json(await lab.run(String(req.params.id)));
    } catch (err) {
      fail(res, err);
    }
  });
  r.get('/current', (_req, res) => void res.json({ current: lab.current }));
  r.get('/people', (_req, res) => void res.json({ people: lab.people(), bots: lab.botNames(), room: lab.deps.relay.getPolicy().room, tap: lab.deps.regulator.tapSettings() }));
  r.post('/bots', async (req, res) => {
    const b = body(BotBody, req, res);
    if (!b) return;
    try {
      const bot = await lab.bot(b.name);
      res.json({ name: bot.name, pin: bot.pin });
    } catch (err) {
      fail(res, err);
    }
  });
  r.delete('/bots/:name', (req, res) => {
    if (!lab.stopBot(String(req.params.name))) return void res.status(404).json({ error: 'not_found', message: `no bot "${req.params.name}"` });
    res.json({ stopped: req.params.name });
  });
  r.post('/room', (req, res) => {
    const b = body(Room, req, res);
    if (!b) return;
    try {
      res.json({ room: lab.deps.setRoom(b.model, b.sealedSender).room });
    } catch (err) {
      fail(res, err);
    }
  });
  r.get('/metadata', (_req, res) => void res.json(lab.metadata()));
  r.get('/escrow', (_req, res) => void res.json(lab.escrowKeys()));
  r.post('/forget-offline', (_req, res) => void res.json({ forgotten: lab.forgetOffline() }));
  r.post('/reset', (req, res) => {
    if (!body(Reset, req, res)) return;
    res.json(lab.reset(`the teacher (${req.socket.remoteAddress ?? 'unknown address'})`));
  });
  r.get('/observers', (_req, res) => void res.json({ observers: lab.observers() }));
  r.post('/observers/reveal', (req, res) => {
    const observers = lab.revealObservers(who(req));
    res.json({ observers, hidden: observers.filter((o) => o.hidden).length });
  });
  r.get('/scan', (_req, res) => void res.json(lab.scanner.state()));
  r.post('/scan', (req, res) => {
    const b = body(ScanSwitch, req, res);
    if (!b) return;
    lab.scanner.set(b, who(req));
    res.json(lab.scanner.state());
  });
  r.post('/scan/entries', (req, res) => {
    const b = body(ScanEntryBody, req, res);
    if (!b) return;
    try {
      const entry = 'phrase' in b ? lab.scanner.addPhrase(b.phrase, who(req)) : lab.scanner.addHash(b.hash, who(req));
      res.json({ entry, state: lab.scanner.state() });
    } catch (err) {
      fail(res, err);
    }
  });
  r.get('/classroom', (_req, res) => void res.json(lab.classroomView()));
  r.post('/classroom', (req, res) => {
    const b = body(HideCode, req, res);
    if (!b) return;
    try {
      res.json(lab.hideClassCode(b.hidden));
    } catch (err) {
      fail(res, err);
    }
  });
  const pinParam = (req: Request, res: Response): string | null => {
    const pin = Pin.safeParse(req.params.pin);
    if (pin.success) return pin.data;
    res.status(400).json({ error: 'bad_request', message: 'pin: a PIN is 8 upper-case hex digits' });
    return null;
  };
  r.post('/people/:pin/kick', (req, res) => {
    const pin = pinParam(req, res);
    if (!pin) return;
    try {
      res.json({ kicked: pin, ...lab.kick(pin) });
    } catch (err) {
      fail(res, err);
    }
  });
  r.post('/people/:pin/readmit', (req, res) => {
    const pin = pinParam(req, res);
    if (!pin) return;
    try {
      lab.readmit(pin);
      res.json({ readmitted: pin });
    } catch (err) {
      fail(res, err);
    }
  });
  r.get('/scan/reports', (_req, res) => void res.json({ reports: lab.scanner.reports(), state: lab.scanner.state() }));
  r.use(projectorRouter(new Projector(lab)));
  r.get('/attacker', (_req, res) => void res.json(lab.attacker.view(200)));
  r.post('/attacker/found', (req, res) => {
    const b = body(Found, req, res);
    if (!b) return;
    try {
      const loot = lab.attacker.found(b.kid, b.secret);
      res.json({ loot: { id: loot.id, kind: loot.kind, label: loot.label, scenario: loot.scenario, at: loot.at, kid: b.kid }, counts: lab.attacker.view(0).counts });
    } catch (err) {
      if (err instanceof AttackerError) return void res.status(err.code === 'no_target' ? 404 : 400).json({ error: err.code, message: err.message });
      fail(res, err);
    }
  });
  return r;
}
