/**
 * The driver-neutral model of an environment: what it is made of (workloads, volumes, routes),
 * with no platform's vocabulary in it. Templates produce it (`template/`), the store keeps it,
 * image building resolves its images (`images/`), and a runtime driver makes it real.
 */

export type DependencyCondition = 'service_started' | 'service_healthy' | 'service_completed_successfully';

/** A health check's command: run directly (`exec`), or as a script of `/bin/sh -c` (`shell`). */
export type ProbeCommand = { exec: string[] } | { shell: string };

export interface HealthcheckPlan {
  command: ProbeCommand;
  intervalMs: number;
  timeoutMs: number;
  retries: number;
  startPeriodMs: number;
}

export interface PortPlan {
  /** Port the process listens on inside the container. */
  container: number;
  protocol: 'tcp' | 'udp';
  /** Routed by the gateway as `<service>--<env>.<domain>`; the first http port of a service wins. */
  http: boolean;
}

export type MountPlan =
  | {
      /** A volume of this plan (see {@link EnvPlan.volumes}), or for `bind` an absolute host path. */
      source: string;
      target: string;
      type: 'volume' | 'bind';
      readOnly: boolean;
    }
  | {
      /** A file system in memory, empty at every start. */
      type: 'tmpfs';
      target: string;
      sizeBytes?: number;
      readOnly: false;
    };

/**
 * A file put into the container before it starts (Compose `configs` and `secrets` given as
 * `content` or `environment`), readable by the workload and owned by `uid:gid` with `mode`.
 */
export interface FilePlan {
  target: string;
  content: string;
  mode: number;
  uid?: string;
  gid?: string;
}

export interface BuildPlan {
  /** Absolute path of the build context. */
  context: string;
  /** Dockerfile path relative to the context. */
  dockerfile: string;
  args: Record<string, string>;
  target?: string;
}

/**
 * Where a workload's image comes from: a reference given by the template, or a build. A build's
 * `ref` is its content-addressed tag, absent until the image builder has resolved it.
 */
export type ImageSource = { ref: string; build?: undefined } | { build: BuildPlan; ref?: string };

/** The image reference to run, or null while a build has not been resolved. */
export function imageRef(workload: Pick<WorkloadPlan, 'image'>): string | null {
  return workload.image.ref ?? null;
}

export interface WorkloadPlan {
  name: string;
  /** A service runs until torn down; a job runs once and must exit 0. */
  kind: 'service' | 'job';
  image: ImageSource;
  command?: string[];
  entrypoint?: string[];
  env: Record<string, string>;
  /** The template's own labels, kept beside Mayfly's (which they may not override). */
  labels: Record<string, string>;
  ports: PortPlan[];
  /** `disabled`: no check at all, not even the image's own. */
  healthcheck?: HealthcheckPlan | 'disabled';
  dependsOn: { name: string; condition: DependencyCondition }[];
  mounts: MountPlan[];
  files: FilePlan[];
  resources: { cpus?: number; memoryBytes?: number; pids?: number; shmBytes?: number };
  ulimits: { name: string; soft: number; hard: number }[];
  replicas: number;
  restart: 'no' | 'always' | 'on-failure' | 'unless-stopped';
  workingDir?: string;
  user?: string;
  /** Run an init process as PID 1 that reaps zombies and forwards signals (default: true). */
  init?: boolean;
  stopSignal?: string;
  stopGracePeriodMs?: number;
  hostname?: string;
  /** More names the other workloads of the environment reach this one by (Compose `container_name`). */
  aliases: string[];
  /** Extra `/etc/hosts` entries: a name and an IP address. */
  extraHosts: { host: string; ip: string }[];
  /** Linux capabilities removed (`ALL` for every one). */
  capDrop: string[];
  readOnlyRootFilesystem: boolean;
  /** Hash of everything above: a workload whose hash is unchanged is left alone on re-apply. */
  specHash: string;
}

/** A workload as a template describes it: a {@link WorkloadPlan} before hashing. */
export type WorkloadSpec = Omit<WorkloadPlan, 'specHash'>;

/** What a workload has when nothing says otherwise (a template, or a plan stored before they existed). */
export const WORKLOAD_DEFAULTS = {
  labels: {},
  files: [],
  ulimits: [],
  aliases: [],
  extraHosts: [],
  capDrop: [],
  readOnlyRootFilesystem: false,
} as const satisfies Partial<WorkloadSpec>;

/**
 * Where a volume's data comes from (`x-mayfly.data`): the run-once job whose success makes it
 * ready (`seededBy`), or a snapshot a user made by hand and named (`snapshot`).
 */
export type VolumeData = { seededBy: string } | { snapshot: string };

/**
 * What the controller decided, at the environment's first bring-up, about a volume with data:
 * made as a clone of a snapshot (the seed job then not run), or seeded by its job (and a
 * snapshot taken of it after, when `takeSnapshot`). Kept with the plan, so a repair, a wake or a
 * restart of the control plane never decides again (and never seeds a restored volume twice).
 */
export type VolumeOrigin =
  | {
      restored: {
        /** The snapshot's id (what the driver knows it by) and its name (what users do). */
        snapshotId: string;
        snapshotName: string;
      };
      /** The seed's key; null for a snapshot named by the template. */
      key: string | null;
    }
  | { seeded: { key: string; takeSnapshot: boolean } };

export interface VolumePlan {
  name: string;
  data?: VolumeData;
  /** Seed from scratch even when a snapshot of the same seed exists (`mayfly up --no-snapshot`). */
  ignoreSnapshots?: boolean;
  /** Set by the controller before the volume is first made (see {@link VolumeOrigin}). */
  origin?: VolumeOrigin;
}

/** The concrete resources of one environment, produced by the pure `plan()` of `template/`. */
export interface EnvPlan {
  envId: string;
  envName: string;
  project: string;
  workloads: WorkloadPlan[];
  volumes: VolumePlan[];
  isolation: 'runc' | 'gvisor';
}

/** A volume made as a clone of a snapshot (rather than empty): see {@link VolumeOrigin}. */
export function isRestored(volume: VolumePlan): boolean {
  return volume.origin !== undefined && 'restored' in volume.origin;
}
