/** What a server has room for and what it holds now: the dashboard's overview. */
import { z } from 'zod';

export const Capacity = z.object({
  environments: z.object({
    /** Environments that exist (every state but destroyed): what `maxEnvironments` counts. */
    used: z.number().int(),
    max: z.number().int(),
    byState: z.record(z.string(), z.number().int()),
  }),
  /** Null where the server runs no sandboxes. */
  sandboxes: z
    .object({
      /** Running and paused: what `maxSandboxes` counts. */
      used: z.number().int(),
      max: z.number().int(),
      /** Their memory limits added up, in MiB. */
      memoryMb: z.number().int(),
      pools: z.array(
        z.object({
          template: z.string(),
          size: z.number().int(),
          ready: z.number().int(),
          starting: z.number().int(),
        }),
      ),
    })
    .nullable(),
  /** Images Mayfly built and keeps, against the disk budget past which the least used go. */
  images: z.object({ count: z.number().int(), bytes: z.number(), budgetBytes: z.number() }),
  /** The control plane's machine. */
  host: z.object({ memoryBytes: z.number(), availableMemoryBytes: z.number() }),
});
export type Capacity = z.infer<typeof Capacity>;
