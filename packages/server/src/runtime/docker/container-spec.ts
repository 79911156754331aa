/** Pure translation of a planned workload into Docker Engine create options. */
import type Docker from 'dockerode';
import type { EnvPlan, WorkloadPlan } from '../runtime.js';
import { containerName, networkName, volumeName, workloadLabels } from './names.js';

const MS_TO_NS = 1_000_000;

/** How much output the Engine keeps per container (json-file rotation): size of one file, files kept. */
export interface ContainerLogLimits {
  maxSizeBytes: number;
  maxFiles: number;
}

/** What a container gets beyond its plan: decided by the driver's settings and the image. */
export interface ContainerExtras {
  logLimits: ContainerLogLimits;
  /** Named volumes standing in for the image's `VOLUME`s that no mount of the plan covers. */
  imageVolumes: { name: string; target: string }[];
}

export function containerCreateOptions(
  instance: string,
  plan: EnvPlan,
  workload: WorkloadPlan,
  replica: number,
  extras: ContainerExtras,
): Docker.ContainerCreateOptions {
  const network = networkName(plan.envId);
  const exposed: Record<string, object> = {};
  for (const port of workload.ports) exposed[`${port.container}/${port.protocol}`] = {};
  const hc = workload.healthcheck;
  return {
    name: containerName(plan.envId, workload.name, replica),
    Hostname: workload.replicas > 1 ? `${workload.name}-${replica}` : workload.name,
    Image: workload.image,
    Cmd: workload.command,
    Entrypoint: workload.entrypoint,
    Env: Object.entries(workload.env).map(([k, v]) => `${k}=${v}`),
    Labels: workloadLabels(instance, plan, workload),
    WorkingDir: workload.workingDir,
    User: workload.user,
    ExposedPorts: exposed,
    Healthcheck: hc
      ? {
          Test: hc.test,
          Interval: hc.intervalMs * MS_TO_NS,
          Timeout: hc.timeoutMs * MS_TO_NS,
          Retries: hc.retries,
          StartPeriod: hc.startPeriodMs * MS_TO_NS,
          // Probe often while starting so readiness is seen fast, whatever the steady interval.
          StartInterval: Math.min(hc.intervalMs, 500) * MS_TO_NS,
        }
      : undefined,
    HostConfig: {
      NetworkMode: network,
      Init: true,
      Mounts: [
        ...workload.mounts.map((m) => ({
          Type: m.type,
          Source: m.type === 'volume' ? volumeName(plan.envId, m.source) : m.source,
          Target: m.target,
          ReadOnly: m.readOnly,
        })),
        ...extras.imageVolumes.map((v) => ({
          Type: 'volume' as const,
          Source: v.name,
          Target: v.target,
          ReadOnly: false,
        })),
      ],
      // A container printing forever must not fill the disk: the Engine rotates and drops old output.
      LogConfig: {
        Type: 'json-file',
        Config: {
          'max-size': String(extras.logLimits.maxSizeBytes),
          'max-file': String(extras.logLimits.maxFiles),
        },
      },
      Memory: workload.resources.memoryBytes,
      NanoCpus: workload.resources.cpus ? Math.round(workload.resources.cpus * 1e9) : undefined,
      PidsLimit: workload.resources.pids,
      RestartPolicy: {
        Name: workload.kind === 'job' ? 'no' : workload.restart === 'no' ? '' : workload.restart,
      },
      Runtime: plan.isolation === 'gvisor' ? 'runsc' : undefined,
    },
    NetworkingConfig: {
      EndpointsConfig: { [network]: { Aliases: [workload.name] } },
    },
  };
}
