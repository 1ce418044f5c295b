/**
 * The projector's answers (GET/POST /api/lab/projector, server/lab/projector.ts), parsed once at
 * the page's edge and typed against the server's own types, as lab-api.ts does for the panel.
 */
import { z } from 'zod';
import type { Conversation as ServerConversation, Layout as ServerLayout, ProjectorView as ServerView } from '../../server/lab/projector.ts';

export const LAYOUTS = ['relay-console', 'three-panes', 'metadata', 'narration'] as const satisfies readonly ServerLayout[];
export type Layout = ServerLayout;

/** The layouts in words, for the teacher's select and the projector's title line. */
export const LAYOUT_WORDS: Record<Layout, string> = {
  'relay-console': 'Relay view + regulator console',
  'three-panes': 'Sender | relay | recipient',
  metadata: 'The metadata picture',
  narration: "The scene's narration card",
};

const Pane = z.object({
  name: z.string(),
  pin: z.string(),
  messages: z.array(
    z.object({ id: z.string(), direction: z.enum(['in', 'out']), text: z.string(), ts: z.number(), state: z.string(), readers: z.string(), escrowed: z.boolean() }),
  ),
});
const Conversation: z.ZodType<ServerConversation> = z.object({ picked: z.boolean(), left: Pane, right: Pane });

export const ProjectorView: z.ZodType<ServerView> = z.object({
  layout: z.enum(LAYOUTS),
  receipts: z.boolean(),
  pair: z.tuple([z.string(), z.string()]).nullable(),
  bots: z.array(z.string()),
  conversation: Conversation.nullable(),
  why: z.string().nullable(),
});
export type ProjectorView = ServerView;
