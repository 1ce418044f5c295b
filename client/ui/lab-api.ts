/**
 * The answers of the lab's JSON API (server/lab/api.ts) and of the operator's demand
 * (server/http.ts), parsed once at the page's edge: the teacher panel and the console trust what
 * passed these schemas and nothing else. Each schema is typed against the server's own type, so a
 * change on one side that the other does not follow fails `tsc`, not a lesson.
 */
import { z } from 'zod';
import { DeviceKind, Policy, TapSettings } from '../../shared/protocol.ts';
import type { ClassroomView as ServerClassroomView, Person as ServerPerson, RunRecord as ServerRunRecord, ScenarioInfo as ServerScenarioInfo } from '../../server/lab/lab.ts';
import type { MetadataPicture as ServerMetadataPicture } from '../../server/lab/metadata.ts';
import type { EscrowKeys as ServerEscrowKeys } from '../../server/lab/escrow-swap.ts';
import type { Page as ServerPage } from '../../server/lab/types.ts';
import type { Enterprise } from '../../server/enterprise.ts';

const PAGES = ['chat', 'relay view', 'regulator console', 'teacher panel', 'attacker console', 'projector', 'terminal'] as const satisfies readonly ServerPage[];

const Narration = z.object({
  what: z.string(),
  look: z.array(z.object({ page: z.enum(PAGES), what: z.string() })),
  source: z.object({ event: z.string(), date: z.string(), link: z.string() }),
});

export const ScenarioInfo: z.ZodType<ServerScenarioInfo> = z.object({ id: z.string(), title: z.string(), scene: z.number(), narration: Narration });
export type ScenarioInfo = ServerScenarioInfo;

export const RunRecord: z.ZodType<ServerRunRecord> = z.object({
  id: z.string(),
  title: z.string(),
  at: z.number(),
  result: z.object({ summary: z.string(), facts: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])) }),
  narration: Narration,
});
export type RunRecord = ServerRunRecord;

const Person: z.ZodType<ServerPerson> = z.object({
  pin: z.string(),
  name: z.string(),
  online: z.boolean(),
  lastSeen: z.number(),
  bot: z.boolean(),
  device: DeviceKind.nullable(),
  kicked: z.boolean(),
});
export type Person = ServerPerson;

export const Scenarios = z.object({ scenarios: z.array(ScenarioInfo) });
export const Current = z.object({ current: RunRecord.nullable() });
export const People = z.object({ people: z.array(Person), bots: z.array(z.string()), room: Policy.shape.room, tap: TapSettings });
export type People = z.infer<typeof People>;
export const Tap = z.object({ settings: TapSettings, policy: Policy });
export const Room = z.object({ room: Policy.shape.room });
export const Bot = z.object({ name: z.string(), pin: z.string() });
export const Stopped = z.object({ stopped: z.string() });
export const Forgotten = z.object({ forgotten: z.number() });
const KeyPrint = z.object({ kid: z.string(), fingerprint: z.string() });
/** The regulator key's fingerprint (the out-of-band value) and the key the relay announces. */
export const EscrowKeys: z.ZodType<ServerEscrowKeys> = z.object({
  regulator: KeyPrint,
  announced: KeyPrint.nullable(),
  swapped: z.boolean(),
  exportGradeBits: z.number().int().min(1).max(64).nullable(),
});
export type EscrowKeys = ServerEscrowKeys;
export const ResetDone = z.object({ users: z.number(), intercepts: z.number(), bots: z.number() });
export const Kicked = z.object({ kicked: z.string(), sessions: z.number() });
export const Readmitted = z.object({ readmitted: z.string() });

/** Classroom mode (GET/POST /api/lab/classroom). The QR code must be an SVG data: URL, nothing else, before it becomes an image. */
export const ClassroomView: z.ZodType<ServerClassroomView> = z.union([
  z.object({ classroom: z.literal(false) }),
  z.object({ classroom: z.literal(true), hidden: z.literal(true), code: z.null(), links: z.tuple([]), qr: z.null(), wrongCodes: z.number() }),
  z.object({
    classroom: z.literal(true),
    hidden: z.literal(false),
    code: z.string(),
    links: z.array(z.string()),
    qr: z.string().regex(/^(data:image\/svg\+xml;base64,[A-Za-z0-9+/=]+)?$/),
    wrongCodes: z.number(),
  }),
]);
export type ClassroomView = ServerClassroomView;

export const MetadataPicture: z.ZodType<ServerMetadataPicture> = z.object({
  people: z.array(z.object({ pin: z.string(), name: z.string() })),
  pairs: z.array(z.object({ from: z.string().nullable(), to: z.string(), count: z.number(), bytes: z.number(), first: z.number(), last: z.number() })),
  envelopes: z.number(),
  sealed: z.number(),
  bytes: z.number(),
  since: z.number().nullable(),
});
export type MetadataPicture = ServerMetadataPicture;

/** What the operator hands over for one archived envelope (Enterprise.handOver), with its metadata. */
type HandOver = ReturnType<Enterprise['handOver']>;
const HandOver: z.ZodType<HandOver> = z.union([
  z.object({ status: z.literal('plaintext'), by: z.enum(['server key', 'app key']), text: z.string(), group: z.string().exactOptional() }),
  z.object({ status: z.literal('ciphertext only'), why: z.string() }),
]);
const DemandMeta = z.object({
  seq: z.number(),
  at: z.number(),
  id: z.string(),
  from: z.string(),
  to: z.array(z.string()),
  names: z.record(z.string(), z.string()),
  model: z.string(),
  bytes: z.number(),
});
export const DemandItem = z.intersection(DemandMeta, HandOver);
export type DemandItem = z.infer<typeof DemandItem>;
export const Demand = z.object({ items: z.array(DemandItem), plaintext: z.number(), total: z.number() });
export type Demand = z.infer<typeof Demand>;

/** Parse an API answer; a shape the page does not expect is said in words, never half-drawn. */
export function parseAnswer<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new Error(`the relay's answer to ${what} is not what this page expects (${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'})`);
}

// ---------------------------------------------------------------------------
// Lab part 2: the relay's observers (the insider scene) and client-side scanning.

const ObserverInfo: z.ZodType<import('../../server/relay.ts').ObserverInfo> = z.object({
  name: z.string(),
  hidden: z.boolean(),
  since: z.number(),
  envelopes: z.number(),
  sink: z.string().exactOptional(),
});
export type ObserverInfo = z.infer<typeof ObserverInfo>;
export const Observers = z.object({ observers: z.array(z.object({ name: z.string(), since: z.number() })) });
export const Revealed = z.object({ observers: z.array(ObserverInfo), hidden: z.number() });

const ScanEntry = z.object({ n: z.number(), hash: z.string(), at: z.number() });
export const ScanState: z.ZodType<import('../../server/lab/scan-authority.ts').ScanState> = z.object({
  on: z.boolean(),
  announced: z.boolean(),
  list: z.string().nullable(),
  salt: z.string().nullable(),
  entries: z.array(ScanEntry),
  reports: z.object({ total: z.number(), kept: z.number(), dropped: z.number() }),
});
export type ScanState = z.infer<typeof ScanState>;
export const ScanEntryAdded = z.object({ entry: ScanEntry, state: ScanState });
const Named = z.object({ pin: z.string(), name: z.string() });
export const ScanReport: z.ZodType<import('../../server/lab/scan-authority.ts').ReportView> = z.object({
  seq: z.number(),
  n: z.number(),
  at: z.number(),
  id: z.string(),
  from: Named,
  to: z.array(Named),
  list: z.string(),
  entry: z.string(),
  model: z.enum(['e2e', 'e2e-escrow', 'app-key', 'server-key', 'sealed']),
});
export type ScanReport = z.infer<typeof ScanReport>;
export const ScanReports = z.object({ reports: z.array(ScanReport), state: ScanState });
