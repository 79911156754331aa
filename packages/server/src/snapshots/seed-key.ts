/**
 * The content key of a seed: what produced a seeded volume's data. Equal keys mean the same seed
 * jobs (their images by content and their settings) ran against the same services (theirs too),
 * so a snapshot of one is as good as running it again; anything that changes what a job would do
 * — a migration, the seed script, the database's image or password — changes the key.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalJson } from '../plan/hash.js';
import type { EnvPlan } from '../plan/plan.js';
import { seedWorkloads } from '../plan/seeds.js';

/** Bumped when what a snapshot holds, or how it is taken, changes: older snapshots then go unused. */
const FORMAT = 3;
/** File content of a bind source hashed at most; past it, names, sizes and times stand for it. */
const BIND_CONTENT_BYTES = 64 * 1024 * 1024;
/** Entries of a bind source looked at, at most. */
const BIND_ENTRIES = 20_000;

/**
 * The key of `volume` seeded by `job` in `plan`: a SHA-256 (hex) over the seed's workloads — every
 * seed job of the plan and every workload they depend on, directly or not (`seedWorkloads`: all
 * that runs before a snapshot is taken, as `applyPlan` holds the rest) — each one's settings (command, environment, mounts…), its
 * image's identity (`imageId`: the image's content id where the platform knows it, else its
 * reference; a built image's reference is already a hash of its build's content) and the content
 * of the host files it binds (a seed script mounted from the repository). What differs from one
 * environment to the next by itself is left out: where the environment's copy of its build
 * contexts and bind sources lies, and the `MAYFLY_URL_*` variables that give its own URLs.
 */
export async function seedKey(
  plan: EnvPlan,
  volume: string,
  job: string,
  imageId: (ref: string) => Promise<string | null>,
): Promise<string> {
  const seed = seedWorkloads(plan);
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
          env: Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('MAYFLY_URL_'))),
          mounts: await Promise.all(
            mounts.map(async (m) => (m.type === 'bind' ? { ...m, source: await treeHash(m.source) } : m)),
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
 * name, type, mode and size, a file's content and a link's target; links are never followed.
 * Past {@link BIND_CONTENT_BYTES} of content or {@link BIND_ENTRIES} entries, modification times
 * stand for the rest. Something unreadable hashes as such (the seed then is what it is).
 */
async function treeHash(root: string): Promise<string> {
  const hash = createHash('sha256');
  let budget = BIND_CONTENT_BYTES;
  let entries = 0;
  const walk = async (path: string, name: string): Promise<void> => {
    if (++entries > BIND_ENTRIES) return;
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
      if (info.size <= budget) {
        budget -= info.size;
        // Streamed: a large seed file never sits in the control plane's memory.
        try {
          for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
        } catch {
          hash.update('unreadable');
        }
      } else hash.update(String(info.mtimeMs));
    }
  };
  await walk(root, '.');
  return hash.digest('hex');
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
