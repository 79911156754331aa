/** Names and labels of the Docker objects of one environment. Names are for humans; labels are the truth. */
import { createHash } from 'node:crypto';
import type { EnvPlan, WorkloadPlan } from '../../plan/plan.js';
import { LABELS, MANAGED_BY } from '../runtime.js';

/**
 * On images this installation built. Not managed-by: containers inherit image labels, and only
 * ours may carry that one (a user's `docker run` of a built image must not look like ours).
 */
export const BUILT_BY_LABEL = 'mayfly.built-by';
/** On the volume that stands in for an image's `VOLUME`: the path it is mounted at. */
export const IMAGE_VOLUME_LABEL = 'mayfly.image-volume';

export const networkName = (envId: string) => `mayfly-${envId}`;
export const volumeName = (envId: string, volume: string) => `mayfly-${envId}-${volume}`;
/**
 * The named volume that replaces the anonymous one Docker would make for an image's `VOLUME
 * target`, so the data outlives the container. Readable (`mayfly-<env>-<workload>-<slug>`), and
 * a hash of workload, replica and exact path keeps `/a-b` and `/a/b`, or two replicas, apart.
 */
export function imageVolumeName(envId: string, workload: string, replica: number, target: string): string {
  const slug = target
    .toLowerCase()
    .replace(/[^a-z0-9._]+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '')
    .slice(0, 40)
    .replace(/[-.]+$/, '');
  const hash = createHash('sha256').update(`${workload}\0${replica}\0${target}`).digest('hex').slice(0, 8);
  return `mayfly-${envId}-${workload}-${slug ? `${slug}-` : ''}${hash}`;
}
export const containerName = (envId: string, workload: string, replica: number) =>
  `mayfly-${envId}-${workload}-${replica}`;

export function envLabels(
  instance: string,
  plan: Pick<EnvPlan, 'envId' | 'project'>,
): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.instance]: instance,
    [LABELS.env]: plan.envId,
    [LABELS.project]: plan.project,
  };
}

export function workloadLabels(
  instance: string,
  plan: EnvPlan,
  workload: WorkloadPlan,
): Record<string, string> {
  return {
    // The template's own first: Mayfly's labels always win (templates may not set mayfly.*).
    ...Object.fromEntries(Object.entries(workload.labels).filter(([key]) => !key.startsWith('mayfly.'))),
    ...envLabels(instance, plan),
    [LABELS.workload]: workload.name,
    [LABELS.specHash]: workload.specHash,
    'mayfly.kind': workload.kind,
  };
}

/** Docker `filters` for this installation's objects: of one environment, or of all of them. */
export function labelFilter(instance: string, envId?: string, workload?: string): { label: string[] } {
  const label = [`${LABELS.managedBy}=${MANAGED_BY}`, `${LABELS.instance}=${instance}`];
  if (envId) label.push(`${LABELS.env}=${envId}`);
  if (workload) label.push(`${LABELS.workload}=${workload}`);
  return { label };
}
