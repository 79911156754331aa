/**
 * What a template's seeded data comes from, decided once for the seed's key and for applying.
 * A snapshot of seeded data is shared with every later environment of the project (other pull
 * requests included), so it may hold only what its key names: the key covers every seed job and
 * everything they depend on (the seed's workloads), and while a snapshot is to be taken nothing
 * else of the environment runs — another service of a pull request's template could otherwise
 * write the database during the seed and plant its data in every later clone.
 */
import type { EnvPlan, VolumePlan } from './plan.js';

/** Every job a volume of the plan is `seededBy`, and every workload they depend on, directly or not. */
export function seedWorkloads(plan: Pick<EnvPlan, 'workloads' | 'volumes'>): Set<string> {
  const byName = new Map(plan.workloads.map((w) => [w.name, w]));
  const seed = new Set<string>();
  const visit = (name: string) => {
    const workload = byName.get(name);
    if (!workload || seed.has(name)) return;
    seed.add(name);
    for (const dep of workload.dependsOn) visit(dep.name);
  };
  for (const volume of plan.volumes)
    if (volume.data && 'seededBy' in volume.data) visit(volume.data.seededBy);
  return seed;
}

/** A seeded volume this apply snapshots once its job has succeeded (see `VolumeOrigin`). */
export interface SnapshottingVolume {
  volume: VolumePlan;
  job: string;
  key: string;
}

/** The plan's volumes to be snapshotted after their seed job, with the job and the seed's key. */
export function snapshottingVolumes(plan: Pick<EnvPlan, 'volumes'>): SnapshottingVolume[] {
  const found: SnapshottingVolume[] = [];
  for (const volume of plan.volumes) {
    const { data, origin } = volume;
    if (data && 'seededBy' in data && origin && 'seeded' in origin && origin.seeded.takeSnapshot)
      found.push({ volume, job: data.seededBy, key: origin.seeded.key });
  }
  return found;
}
