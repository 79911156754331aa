/**
 * The content key of a seed: what produced a seeded volume's data. Equal keys mean the same seed
 * job (its image by content and its settings) ran against the same services (theirs too), so a
 * snapshot of one is as good as running it again; anything that changes what the job would do —
 * a migration, the seed script, the database's image or password — changes the key.
 */
import { createHash } from 'node:crypto';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';

/** Bumped when what a snapshot holds, or how it is taken, changes: older snapshots then go unused. */
const FORMAT = 1;

/**
 * The key of `volume` seeded by `job` in `plan`: a SHA-256 (hex) over the job and every workload
 * it depends on, directly or not — each one's spec hash (command, environment, mounts…) and its
 * image's identity (`imageId`: the image's content id where the platform knows it, else its
 * reference; a built image's reference is already a hash of its build's content).
 */
export async function seedKey(
  plan: EnvPlan,
  volume: string,
  job: string,
  imageId: (ref: string) => Promise<string | null>,
): Promise<string> {
  const byName = new Map(plan.workloads.map((w) => [w.name, w]));
  const involved = new Map<string, WorkloadPlan>();
  const visit = (name: string) => {
    const workload = byName.get(name);
    if (!workload || involved.has(name)) return;
    involved.set(name, workload);
    for (const dep of workload.dependsOn) visit(dep.name);
  };
  visit(job);
  const parts = await Promise.all(
    [...involved.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map(async (w) => {
        const ref = w.image.ref ?? '';
        return { name: w.name, spec: w.specHash, image: (ref && (await imageId(ref))) || ref };
      }),
  );
  return createHash('sha256')
    .update(JSON.stringify({ format: FORMAT, volume, job, workloads: parts }))
    .digest('hex');
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
