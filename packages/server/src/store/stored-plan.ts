/**
 * Plans as the store keeps them (JSON), read back in the current shape. Plans written by earlier
 * versions (an image string with an optional `build` beside it, a Docker-style health check test,
 * none of the later fields) are upgraded on read, so an environment created before an upgrade is
 * still repaired and destroyed. Their spec hashes are kept: the next apply replaces the workload
 * only if its hash differs, as for any change.
 */
import { type EnvPlan, type ProbeCommand, WORKLOAD_DEFAULTS, type WorkloadPlan } from '../plan/plan.js';

/** Fields added since the first stored plans. */
type Added = 'labels' | 'files' | 'ulimits' | 'aliases' | 'extraHosts' | 'capDrop' | 'readOnlyRootFilesystem';

type LegacyWorkload = Omit<WorkloadPlan, 'image' | 'healthcheck' | Added> &
  Partial<Pick<WorkloadPlan, Added>> & {
    image: WorkloadPlan['image'] | string;
    build?: NonNullable<WorkloadPlan['image']['build']>;
    healthcheck?:
      | WorkloadPlan['healthcheck']
      | (Omit<Exclude<WorkloadPlan['healthcheck'], string | undefined>, 'command'> & { test: string[] });
  };

export function readStoredPlan(json: string): EnvPlan {
  const plan = JSON.parse(json) as Omit<EnvPlan, 'workloads'> & { workloads: LegacyWorkload[] };
  return { ...plan, workloads: plan.workloads.map(upgradeWorkload) };
}

function upgradeWorkload(stored: LegacyWorkload): WorkloadPlan {
  const { build, image, healthcheck, ...rest } = stored;
  return {
    ...WORKLOAD_DEFAULTS,
    ...rest,
    image:
      typeof image !== 'string'
        ? image
        : build
          ? { build, ...(image !== '' ? { ref: image } : {}) }
          : { ref: image },
    ...(healthcheck === undefined ? {} : { healthcheck: upgradeHealthcheck(healthcheck) }),
  };
}

function upgradeHealthcheck(stored: NonNullable<LegacyWorkload['healthcheck']>): WorkloadPlan['healthcheck'] {
  if (stored === 'disabled' || !('test' in stored)) return stored;
  const { test, ...timings } = stored;
  const [kind, ...rest] = test;
  if (kind === 'NONE') return 'disabled';
  const command: ProbeCommand = kind === 'CMD-SHELL' ? { shell: rest.join(' ') } : { exec: rest };
  return { command, ...timings };
}
