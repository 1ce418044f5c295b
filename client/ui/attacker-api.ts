/**
 * The attacker console's answers (GET /api/lab/attacker, POST /api/lab/attacker/found,
 * server/lab/api.ts), parsed once at the page's edge; each schema is typed against the server's own
 * type, so a change on one side that the other does not follow fails `tsc`.
 */
import { z } from 'zod';
import { AnyEnvelope } from '../../shared/protocol.ts';
import { EXPORT_KDF } from '../../shared/export-grade.ts';
import type { AttackerView as ServerView, LootKind } from '../../server/lab/attacker.ts';

const KINDS = ['escrow key', 'archive copy', 'feed copy', 'swapped escrow key', 'broken export key', 'export-grade public key'] as const satisfies readonly LootKind[];

const Loot = z.object({
  id: z.number(),
  kind: z.enum(KINDS),
  label: z.string(),
  scenario: z.string(),
  at: z.number(),
  kid: z.string().exactOptional(),
  envelopes: z.number().exactOptional(),
});

const Target = z.object({
  kid: z.string().regex(/^[0-9a-f]{16}$/),
  pk: z.string(),
  bits: z.number().int().min(8).max(32),
  kdf: z.literal(EXPORT_KDF),
  loot: z.number(),
  scenario: z.string(),
  at: z.number(),
  broken: z.boolean(),
});

const Message = {
  seq: z.number(),
  at: z.number(),
  id: z.string(),
  from: z.string(),
  to: z.array(z.string()),
  env: AnyEnvelope,
};

export const AttackerView: z.ZodType<ServerView> = z.object({
  loot: z.array(Loot),
  targets: z.array(Target),
  opened: z.array(z.object({ ...Message, text: z.string(), group: z.string().exactOptional(), by: z.string() })),
  closed: z.array(z.object({ ...Message, status: z.enum(['end-to-end', 'not-opened']), reason: z.string() })),
  counts: z.object({
    held: z.number(),
    opened: z.number(),
    closed: z.number(),
    endToEnd: z.number(),
    people: z.number(),
    conversations: z.number(),
    earliest: z.number().nullable(),
  }),
});
export type AttackerView = ServerView;
export type Target = z.infer<typeof Target>;

export const Found = z.object({ loot: z.object({ id: z.number(), kind: z.enum(KINDS), label: z.string(), scenario: z.string(), at: z.number(), kid: z.string() }) });
