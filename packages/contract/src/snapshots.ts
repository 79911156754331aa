/** Snapshots of volumes: seeded data kept and cloned into new environments, or made by hand. */
import { z } from 'zod';

export const Snapshot = z.object({
  id: z.string(),
  project: z.string(),
  /** Unique in its project; what templates (`x-mayfly.data.VOLUME.snapshot`) and `mayfly snapshot rm` name. */
  name: z.string(),
  /** `seed`: kept after a seed job's first success; `manual`: made with `mayfly snapshot create`. */
  kind: z.enum(['seed', 'manual']),
  /** The seed's content key (its job's and dependencies' images and settings); null for a manual one. */
  seedKey: z.string().nullable(),
  /** The template's volume it was taken of, and the environment it was taken from. */
  volume: z.string(),
  sourceEnvironment: z.object({ id: z.string(), name: z.string() }),
  /** `creating`: the copy is under way, nothing clones it yet. */
  state: z.enum(['creating', 'ready']),
  sizeBytes: z.number().nullable(),
  createdAt: z.string(),
  /** The last time an environment was made from it (or when it was made). */
  lastUsedAt: z.string(),
});
export type Snapshot = z.infer<typeof Snapshot>;

/** Shown names and references: what a template's `snapshot:` may name. */
export const SNAPSHOT_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export const CreateSnapshotRequest = z
  .object({
    /** A volume of the environment (as its template names it). */
    volume: z.string().min(1).max(255),
    name: z
      .string()
      .regex(
        SNAPSHOT_NAME_PATTERN,
        'a snapshot name is 1 to 63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
      ),
  })
  .strict();
export type CreateSnapshotRequest = z.infer<typeof CreateSnapshotRequest>;
