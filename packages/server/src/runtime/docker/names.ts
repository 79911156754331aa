/** Names and labels of the Docker objects of one environment. Names are for humans; labels are the truth. */
import type { EnvPlan, WorkloadPlan } from '../runtime.js';
import { LABELS, MANAGED_BY } from '../runtime.js';

export const networkName = (envId: string) => `mayfly-${envId}`;
export const volumeName = (envId: string, volume: string) => `mayfly-${envId}-${volume}`;
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
