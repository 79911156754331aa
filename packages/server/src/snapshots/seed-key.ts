/**
 * The content key of a seed: what produced a seeded volume's data. Equal keys mean the same seed
 * jobs (their images by content and their settings) ran against the same services (theirs too),
 * so a snapshot of one is as good as running it again; anything that changes what a job would do
 * — a migration, the seed script, the database's image or password — changes the key.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalJson } from '../plan/hash.js';
import type { EnvPlan } from '../plan/plan.js';
import { seedWorkloads } from '../plan/seeds.js';

/** Bumped when what a snapshot holds, or how it is taken, changes: older snapshots then go unused. */
const FORMAT = 4;
/** The variables an environment is given its services' URLs in (see `withServiceUrls`). */
const URL_PREFIX = 'MAYFLY_URL_';
/** What stands for the environment's own name in them, in a key. */
const ANY_ENV = '--\0env\0.';
/** File content of the bind sources of a seed hashed at most; past it the seed has no key. */
const BIND_CONTENT_BYTES = 1024 ** 3;
/** Entries of the bind sources of a seed looked at, at most; past it the seed has no key. */
const BIND_ENTRIES = 50_000;

/**
 * What a seed reads cannot all be hashed (bound files past {@link BIND_CONTENT_BYTES} or
 * {@link BIND_ENTRIES}): it is seeded every time and never snapshotted — a key that left some of
 * it out would give a later environment a snapshot of another seed.
 */
export class SeedNotKeyableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SeedNotKeyableError';
  }
}

/**
 * The key of `volume` seeded by `job` in `plan`: a SHA-256 (hex) over the seed's workloads — every
 * seed job of the plan and every workload they depend on, directly or not (`seedWorkloads`: all
 * that runs before a snapshot is taken, as `applyPlan` holds the rest) — each one's settings (command, environment, mounts…), its
 * image's identity (`imageId`: the image's content id where the platform knows it, else its
 * reference; a built image's reference is already a hash of its build's content) and the content
 * of the host files it binds (a seed script mounted from the repository). What differs from one
 * environment to the next by itself is left out: where the environment's copy of its build
 * contexts and bind sources lies, and the environment's own name in the `MAYFLY_URL_*` variables
 * that give its URLs (the rest of their value is kept: a template may set them itself, to anything).
 */
export async function seedKey(
  plan: EnvPlan,
  volume: string,
  job: string,
  imageId: (ref: string) => Promise<string | null>,
  /** Volumes cloned from snapshots the template names: the id of each (its content). */
  inputs: Record<string, string> = {},
): Promise<string> {
  const seed = seedWorkloads(plan);
  // The environment's own host names (`<service>--<env>.<domain>`) in the URLs it is given.
  const own = `--${plan.envName}.`;
  const budget = { bytes: BIND_CONTENT_BYTES, entries: BIND_ENTRIES };
  const parts = await Promise.all(
    plan.workloads
      .filter((w) => seed.has(w.name))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map(async (w) => {
        const { specHash: _spec, image, env, mounts, ...settings } = w;
        const ref = image.ref ?? '';
        return {
          ...settings,
          image: (ref && (await imageId(ref))) || ref,
          env: Object.fromEntries(
            Object.entries(env).map(([k, v]) => [
              k,
              k.startsWith(URL_PREFIX) ? v.split(own).join(ANY_ENV) : v,
            ]),
          ),
          mounts: await Promise.all(
            mounts.map(async (m) =>
              m.type === 'bind'
                ? { ...m, source: await treeHash(m.source, budget) }
                : m.type === 'volume' && inputs[m.source]
                  ? { ...m, snapshot: inputs[m.source] }
                  : m,
            ),
          ),
        };
      }),
  );
  return createHash('sha256')
    .update(canonicalJson({ format: FORMAT, volume, job, workloads: parts }))
    .digest('hex');
}

/**
 * A hash of what is at `root` on the control plane's disk (a bind source): each entry's relative
 * name, type, mode and size, a file's content and a link's target; links are never followed,
 * nor is anything but a regular file read (a FIFO swapped in would block the hash for good).
 * Something unreadable hashes as such (the seed then is what it is). {@link SeedNotKeyableError}
 * past the budget (shared by every bind source of the seed).
 */
async function treeHash(root: string, budget: { bytes: number; entries: number }): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (path: string, name: string): Promise<void> => {
    if (--budget.entries < 0)
      throw new SeedNotKeyableError(`its bound files are more than ${BIND_ENTRIES} entries`);
    let info: Awaited<ReturnType<typeof lstat>>;
    try {
      info = await lstat(path);
    } catch (err) {
      hash.update(`${name}\0missing:${(err as NodeJS.ErrnoException).code}\n`);
      return;
    }
    hash.update(`${name}\0${info.mode}\0${info.size}\n`);
    if (info.isSymbolicLink()) hash.update(await readlink(path).catch(() => ''));
    else if (info.isDirectory()) {
      const children = (await readdir(path).catch(() => [] as string[])).sort();
      for (const child of children) await walk(join(path, child), `${name}/${child}`);
    } else if (info.isFile()) {
      budget.bytes -= info.size;
      if (budget.bytes < 0)
        throw new SeedNotKeyableError(
          `its bound files hold more than ${BIND_CONTENT_BYTES / 1024 ** 3} GiB to hash`,
        );
      await hashFile(hash, path, info.size);
    }
  };
  await walk(root, '.');
  return hash.digest('hex');
}

/**
 * Adds the content of the regular file at `path` (`size` bytes when looked at) to `hash`, read
 * through a descriptor that is that file: opened without following a link or waiting on a FIFO,
 * and checked to be a regular file; at most `size` bytes, streamed (never whole in memory).
 */
async function hashFile(hash: ReturnType<typeof createHash>, path: string, size: number): Promise<void> {
  let file: Awaited<ReturnType<typeof open>> | undefined;
  try {
    file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    if (!(await file.stat()).isFile()) {
      hash.update('not a file');
      return;
    }
    const chunk = Buffer.alloc(1024 * 1024);
    for (let left = size; left > 0; ) {
      const { bytesRead } = await file.read(chunk, 0, Math.min(chunk.length, left));
      if (bytesRead === 0) break;
      hash.update(chunk.subarray(0, bytesRead));
      left -= bytesRead;
    }
  } catch {
    hash.update('unreadable');
  } finally {
    await file?.close();
  }
}

/** The name a seeded snapshot gets in its project: the volume's and the start of its key. */
export function seededSnapshotName(volume: string, key: string): string {
  const base = volume
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 40);
  return `${base || 'data'}-${key.slice(0, 12)}`;
}
