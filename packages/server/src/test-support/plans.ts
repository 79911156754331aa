/** Hand-made plans for driver tests, with the same defaults and hashes `plan()` would give. */
import { nanoid } from 'nanoid';
import type { EnvPlan, WorkloadPlan } from '../runtime/runtime.js';
import { workloadHash } from '../template/index.js';
import { TESTKIT_IMAGE } from './global-setup.js';

export type WorkloadInput = Partial<Omit<WorkloadPlan, 'specHash'>> & { name: string };

export function workload(input: WorkloadInput): WorkloadPlan {
  const w: Omit<WorkloadPlan, 'specHash'> = {
    kind: 'service',
    image: TESTKIT_IMAGE,
    env: {},
    ports: [],
    dependsOn: [],
    mounts: [],
    resources: {},
    replicas: 1,
    restart: 'no',
    ...input,
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
      test: ['CMD', 'busybox', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:8080/healthz'],
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
