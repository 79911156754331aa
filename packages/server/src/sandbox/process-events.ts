/**
 * The sandbox agent's event streams (a command's output, a directory watch): NDJSON read line by
 * line, and a command's events checked — the sandbox, and so its agent, is not trusted.
 */
import type { Readable } from 'node:stream';
import * as z from 'zod';

/** Longest line of the agent's event stream read (it sends output in 32 KiB pieces, base64). */
const MAX_EVENT_LINE = 256 * 1024;

/** The lines of an agent's NDJSON stream; throws on a line longer than any the agent sends. */
export async function* ndjsonLines(stream: Readable): AsyncGenerator<string> {
  let buffered = '';
  for await (const chunk of stream) {
    buffered += (chunk as Buffer).toString('utf8');
    if (buffered.length > MAX_EVENT_LINE && !buffered.includes('\n'))
      throw new Error('the sandbox sent an event longer than any it sends');
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line) yield line;
      newline = buffered.indexOf('\n');
    }
  }
  if (buffered) yield buffered;
}

/** One event of a command's stream, as the agent sends it (`data` is base64). */
export const AgentProcessEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('start'), pid: z.number().int() }),
  z.object({ type: z.enum(['stdout', 'stderr', 'pty']), data: z.string() }),
  z.object({
    type: z.literal('end'),
    exitCode: z.number().int(),
    signal: z.string().max(16).optional(),
    timedOut: z.boolean().optional(),
  }),
]);
export type AgentProcessEvent = z.output<typeof AgentProcessEvent>;
