/** Pure translation of a planned workload into Docker Engine create options. */
import type Docker from 'dockerode';
import type { EnvPlan, HealthcheckPlan, WorkloadPlan } from '../../plan/plan.js';
import { RuntimeStepError } from '../runtime.js';
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
  /** The image's own labels: any under `mayfly.` are blanked on the container (see below). */
  imageLabels?: Record<string, string> | null;
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
  const image = workload.image.ref;
  if (!image) throw new RuntimeStepError(`build:${workload.name}`, 'the image has not been built');
  return {
    name: containerName(plan.envId, workload.name, replica),
    Hostname: workload.hostname ?? (workload.replicas > 1 ? `${workload.name}-${replica}` : workload.name),
    Image: image,
    Cmd: workload.command,
    Entrypoint: workload.entrypoint,
    Env: Object.entries(workload.env).map(([k, v]) => `${k}=${v}`),
    // An image from a pull request's Dockerfile may carry Mayfly's labels (`LABEL mayfly.helper=…`),
    // and a container inherits its image's: each is blanked, so only what Mayfly set says anything.
    Labels: {
      ...Object.fromEntries(
        Object.keys(extras.imageLabels ?? {})
          .filter((key) => key.startsWith('mayfly.'))
          .map((key) => [key, '']),
      ),
      ...workloadLabels(instance, plan, workload),
    },
    WorkingDir: workload.workingDir,
    User: workload.user,
    ExposedPorts: exposed,
    Healthcheck: healthcheck(workload.healthcheck),
    StopSignal: workload.stopSignal,
    StopTimeout:
      workload.stopGracePeriodMs === undefined ? undefined : Math.ceil(workload.stopGracePeriodMs / 1000),
    HostConfig: {
      NetworkMode: network,
      // Mayfly's default is an init (zombies reaped, signals forwarded); `init: false` opts out.
      Init: workload.init ?? true,
      ReadonlyRootfs: workload.readOnlyRootFilesystem,
      CapDrop: workload.capDrop.length > 0 ? workload.capDrop : undefined,
      ExtraHosts:
        workload.extraHosts.length > 0 ? workload.extraHosts.map((h) => `${h.host}:${h.ip}`) : undefined,
      Ulimits:
        workload.ulimits.length > 0
          ? workload.ulimits.map((u) => ({ Name: u.name, Soft: u.soft, Hard: u.hard }))
          : undefined,
      ShmSize: workload.resources.shmBytes,
      Mounts: [
        ...workload.mounts.map((m) =>
          m.type === 'tmpfs'
            ? {
                Type: 'tmpfs' as const,
                Source: '',
                Target: m.target,
                ...(m.sizeBytes ? { TmpfsOptions: { SizeBytes: m.sizeBytes, Mode: 0o1777 } } : {}),
              }
            : {
                Type: m.type,
                Source: m.type === 'volume' ? volumeName(plan.envId, m.source) : m.source,
                Target: m.target,
                ReadOnly: m.readOnly,
              },
        ),
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
      EndpointsConfig: { [network]: { Aliases: [workload.name, ...workload.aliases] } },
    },
  };
}

function healthcheck(hc: HealthcheckPlan | 'disabled' | undefined): Docker.HealthConfig | undefined {
  if (hc === undefined) return undefined;
  if (hc === 'disabled') return { Test: ['NONE'] };
  return {
    Test: 'shell' in hc.command ? ['CMD-SHELL', hc.command.shell] : ['CMD', ...hc.command.exec],
    Interval: hc.intervalMs * MS_TO_NS,
    Timeout: hc.timeoutMs * MS_TO_NS,
    Retries: hc.retries,
    StartPeriod: hc.startPeriodMs * MS_TO_NS,
    // Probe often while starting so readiness is seen fast, whatever the steady interval.
    StartInterval: Math.min(hc.intervalMs, 500) * MS_TO_NS,
  };
}
