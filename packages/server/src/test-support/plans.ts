/** Hand-made plans for driver tests, with the same defaults and hashes `plan()` would give. */
import { nanoid } from 'nanoid';
import { workloadHash } from '../plan/hash.js';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import { TESTKIT_IMAGE } from './global-setup.js';

export type WorkloadInput = Partial<Omit<WorkloadPlan, 'specHash' | 'image'>> & {
  name: string;
  /** An image reference, or the whole source. */
  image?: string | WorkloadPlan['image'];
};

export function workload(input: WorkloadInput): WorkloadPlan {
  const { image = TESTKIT_IMAGE, ...rest } = input;
  const w: Omit<WorkloadPlan, 'specHash'> = {
    kind: 'service',
    env: {},
    labels: {},
    ports: [],
    dependsOn: [],
    mounts: [],
    files: [],
    resources: {},
    ulimits: [],
    replicas: 1,
    restart: 'no',
    aliases: [],
    extraHosts: [],
    capDrop: [],
    readOnlyRootFilesystem: false,
    ...rest,
    image: typeof image === 'string' ? { ref: image } : image,
  };
  return { ...w, specHash: workloadHash(w) };
}

/** An HTTP service of the test image, healthy once it answers on /healthz. */
export function httpService(name: string, extra: Partial<WorkloadInput> = {}): WorkloadPlan {
  return workload({
    name,
    command: ['testkit', 'http', '--port', '8080', '--text', `hello from ${name}`],
    ports: [{ container: 8080, protocol: 'tcp', http: true }],
    healthcheck: {
      command: { exec: ['busybox', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:8080/healthz'] },
      intervalMs: 1_000,
      timeoutMs: 3_000,
      retries: 30,
      startPeriodMs: 0,
    },
    ...extra,
  });
}

export function envPlan(workloads: WorkloadPlan[], extra: Partial<EnvPlan> = {}): EnvPlan {
  const envId = `t${nanoid(8)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, 'x')}`;
  return { envId, envName: envId, project: 'test', workloads, volumes: [], isolation: 'runc', ...extra };
}
