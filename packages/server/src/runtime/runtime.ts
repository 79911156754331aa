/**
 * The Runtime interface: everything the control plane asks of a container platform.
 * Drivers (Docker, Kubernetes) implement it; nothing above `runtime/` imports a driver. A driver
 * makes, starts, watches and removes one workload at a time; the order of workloads, the
 * conditions of `depends_on`, and what counts as success are decided once, above every driver,
 * in `apply-plan.ts`. Images are built by another seam (`images/image-builder.ts`).
 * Every object a driver makes carries the labels in {@link LABELS}, so teardown and garbage
 * collection find them by label, never by remembered ids alone.
 */
import type { Readable } from 'node:stream';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';

export const LABELS = {
  managedBy: 'mayfly.managed-by',
  /** The installation (store) that owns the object; see `Store.instanceId`. */
  instance: 'mayfly.instance',
  env: 'mayfly.env',
  project: 'mayfly.project',
  workload: 'mayfly.service',
  specHash: 'mayfly.spec-hash',
} as const;
export const MANAGED_BY = 'mayfly';

export type ProgressEvent =
  | { type: 'image'; workload: string; message: string }
  /** About a volume's data: restored from a snapshot, a seed job not run because of it. */
  | { type: 'data'; message: string }
  | {
      type: 'workload';
      workload: string;
      /** `healthy`: its health check passed; `listening`: no check, but its HTTP port accepts connections. */
      phase: 'creating' | 'started' | 'healthy' | 'listening' | 'completed' | 'reused';
    };

/** Options of `applyPlan` (`apply-plan.ts`). */
export interface ApplyOptions {
  onProgress?: (event: ProgressEvent) => void;
  /**
   * Aborting stops apply within about a second, wherever it is (pulling, creating or starting
   * containers, waiting): nothing more is created or started, and apply rejects.
   */
  signal?: AbortSignal;
  /**
   * Waking a sleeping environment: services stopped by the sleep (exited at or after `since`,
   * when the sleep began) are started again as they were, not made anew; what had exited before
   * (a one-shot service that was done) stays done.
   */
  resumeStopped?: { since: Date };
  /**
   * A redeploy: every service is made anew (its old containers removed), even one that matches
   * its spec and runs; jobs that ran stay done, volumes stay.
   */
  recreateServices?: boolean;
  /**
   * Where seeded volumes are snapshotted: called once every seed job has succeeded with the
   * volumes to be snapshotted (`takeSnapshot`, see plan/seeds.ts) that this apply made empty and
   * whose job it ran (not found done) — data the seed alone wrote. Nothing outside the seed is
   * even made before this resolves. Without it, nothing is snapshotted and nothing held.
   */
  afterSeed?: (volumes: string[], signal: AbortSignal) => Promise<void>;
  /**
   * Why nothing is snapshotted when `afterSeed` is not given for a reason worth saying (the
   * environment was there already): said for each seed job that runs on volumes that were to be.
   */
  noSnapshot?: string;
  /**
   * Volumes an apply of this plan made empty just before, cut short before anything ran (a clone's
   * snapshot was gone: see `SnapshotsGoneError.madeVolumes`), so counted as made by this one.
   */
  madeBefore?: string[];
}

export interface ObservedWorkload {
  name: string;
  kind: 'service' | 'job';
  /** `running`, `exited`, `created`, `restarting`, `missing`… as the platform reports it. */
  state: string;
  health: 'healthy' | 'unhealthy' | 'starting' | null;
  exitCode: number | null;
}

export interface ObservedEnv {
  envId: string;
  workloads: ObservedWorkload[];
  /** True when at least one labelled object of the environment exists. */
  exists: boolean;
}

export interface ManagedObject {
  kind: 'container' | 'network' | 'volume' | 'namespace' | 'pod' | 'service' | 'other';
  id: string;
  envId: string;
  project: string | null;
}

export interface LogOptions {
  follow?: boolean;
  /** Last N lines only; every line when undefined (callers bound it). */
  tail?: number;
  signal?: AbortSignal;
}

export interface ExecOptions {
  stdin?: string | Buffer;
  env?: Record<string, string>;
  workingDir?: string;
  timeoutMs?: number;
  /**
   * The most bytes kept of each of stdout and stderr; default 1 MiB ({@link DEFAULT_EXEC_OUTPUT_BYTES}).
   * A command may print any amount: the rest is read and dropped, the *last* bytes are kept.
   */
  maxOutputBytes?: number;
}

export const DEFAULT_EXEC_OUTPUT_BYTES = 1024 * 1024;

export interface ExecResult {
  exitCode: number;
  /** The end of the command's stdout: at most `maxOutputBytes` bytes of it. */
  stdout: string;
  stderr: string;
  /** True when stdout printed more than was kept (its start was dropped). */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface Endpoint {
  host: string;
  port: number;
}

/**
 * A step of apply that failed: the controller records `step` and `reason` on the environment.
 * `step` reads like `build:web`, `start:api`, `health:db`, `job:migrate`.
 */
export class RuntimeStepError extends Error {
  constructor(
    readonly step: string,
    readonly reason: string,
  ) {
    super(`${step}: ${reason}`);
    this.name = 'RuntimeStepError';
  }
}

/** The environment has no (running) workload of that name: for logs, exec and files. */
export class WorkloadNotFoundError extends Error {
  override name = 'WorkloadNotFoundError';
}

/** The platform itself cannot be reached (daemon down, API server unreachable). */
export class RuntimeUnavailableError extends Error {
  override name = 'RuntimeUnavailableError';
}

/**
 * What a driver found, or made, of one workload before it is started (see
 * {@link Runtime.prepareWorkload}). `output` is the end of its output, for an error message: ''
 * or a newline followed by the last lines.
 */
export type PreparedWorkload =
  | { state: 'created' }
  | { state: 'running' }
  | { state: 'exited'; exitCode: number; output: string };

/** How a started service turned out (see {@link Runtime.waitForReady}). */
export type ReadyOutcome =
  | {
      state: 'ready';
      /** `healthcheck`: its check passed; `port`: no check, its HTTP port accepts connections; `running`: neither applies. */
      by: 'healthcheck' | 'port' | 'running';
    }
  | { state: 'exited'; exitCode: number; output: string };

export interface PrepareOptions {
  /**
   * Which containers with the same spec that have exited are kept and reported rather than
   * replaced: `any` (a job: it is never run twice), `clean` (a service Compose would not restart
   * after it exited 0: it is done; one that crashed is made again), `none`.
   */
  keepExited: 'any' | 'clean' | 'none';
  /**
   * A service's containers with the same spec that were stopped by a sleep (exited at or after
   * `since`) are reported `created`, to be started again as they are, rather than made anew.
   */
  resumeStopped?: { since: Date };
  /** Made anew even when what is there matches the spec (a redeploy): the old containers removed. */
  recreate?: boolean;
  onProgress?: (event: ProgressEvent) => void;
  signal: AbortSignal;
}

/** What {@link Runtime.prepareEnvironment} did. */
export interface PreparedEnvironment {
  /**
   * The plan's volumes this call made, so empty (one to be a clone of a snapshot included where the
   * driver makes it here rather than in `snapshots.restore`): only a seed run on volumes made so
   * is the seed's alone.
   */
  madeVolumes: string[];
}

/** A snapshot as a driver knows it: its id names its objects, project and name are labelled on them. */
export interface SnapshotRef {
  id: string;
  project: string;
  name: string;
}

/** A snapshot object a driver finds (for garbage collection of those the store no longer knows). */
export interface SnapshotObject {
  id: string;
  project: string | null;
}

/**
 * Snapshots of volumes, kept apart from every environment (labelled as snapshots, never as an
 * environment's objects: teardown and environment garbage collection never see them), and cloned
 * into new environments' volumes.
 */
export interface VolumeSnapshots {
  /**
   * Copies the environment's `volume` into a new snapshot, the workloads that mount it stopped
   * for the copy (as their stop signal and grace period say: a database writes out what it holds
   * in memory) and started again after, running (and healthy, with a check) before it resolves —
   * even after a crash: the next apply of the environment starts them. A failure or an abort
   * leaves no snapshot object. Refused, before anything is copied, when the volume holds more
   * than `maxBytes` or the disk it would go to has no room for it (a seed may fill its volume).
   */
  take(
    plan: EnvPlan,
    volume: string,
    snapshot: SnapshotRef,
    signal: AbortSignal,
    maxBytes?: number,
  ): Promise<{ sizeBytes: number; reflinked: boolean }>;
  /**
   * Makes the environment's `volume` a clone of the snapshot, unless a call before did
   * (`present`). One cut short (a crash, an abort) is never taken for a clone: the next call
   * starts it over. {@link SnapshotGoneError} when the snapshot no longer exists. Refused when
   * the disk the clone goes to has no room for it.
   */
  restore(
    plan: EnvPlan,
    volume: string,
    snapshotId: string,
    signal: AbortSignal,
  ): Promise<'restored' | 'present'>;
  /** Removes a snapshot's objects; false (nothing removed) while a clone is being made of it. */
  remove(snapshotId: string): Promise<boolean>;
  /** Every snapshot object of this installation. */
  list(): Promise<SnapshotObject[]>;
  /** Whether the snapshot's objects are there (someone may have pruned them behind our back). */
  exists(snapshotId: string): Promise<boolean>;
  /** What identifies an image's content here (a seed's key names images by it); null when unknown. */
  imageId(ref: string): Promise<string | null>;
}

/** The snapshot a volume was to be restored from no longer exists (removed meanwhile). */
export class SnapshotGoneError extends Error {
  constructor(readonly snapshotId: string) {
    super(`snapshot ${snapshotId} no longer exists`);
    this.name = 'SnapshotGoneError';
  }
}

export interface Runtime {
  readonly name: string;
  /** Volume snapshots, where the driver has them (without: a seeded volume is seeded every time). */
  readonly snapshots?: VolumeSnapshots;
  /** Throws {@link RuntimeUnavailableError} when the platform does not answer. */
  ping(): Promise<void>;
  /**
   * The objects every workload of the environment shares (network, volumes), made if missing; the
   * objects of workloads the plan no longer has, removed. Idempotent.
   */
  prepareEnvironment(plan: EnvPlan, signal: AbortSignal): Promise<PreparedEnvironment>;
  /**
   * Keeps what already matches `workload` (same spec hash; every replica running, or exited when
   * as `keepExited` says) and reports it; otherwise removes what there is,
   * makes its image present (pulled when given by reference), and creates it without starting it.
   * `signal` is checked between platform calls, so an abort stops the creation of many replicas.
   */
  prepareWorkload(plan: EnvPlan, workload: WorkloadPlan, options: PrepareOptions): Promise<PreparedWorkload>;
  /** Starts what {@link prepareWorkload} created; an abort leaves the rest unstarted. */
  startWorkload(plan: EnvPlan, workload: WorkloadPlan, signal: AbortSignal): Promise<void>;
  /** Waits for a started job to end, however long it takes (the caller's signal bounds it). */
  waitForExit(
    plan: EnvPlan,
    workload: WorkloadPlan,
    signal: AbortSignal,
  ): Promise<{ exitCode: number; output: string }>;
  /**
   * Waits for a started service: every replica running, and healthy when it has a health check,
   * or (no check) its HTTP ports accepting connections. Reports a replica that exited. A service
   * that keeps being restarted (`fresh`: count every restart; else only those seen while waiting)
   * or never gets healthy fails its `start:` / `health:` / `ready:` step.
   */
  waitForReady(
    plan: EnvPlan,
    workload: WorkloadPlan,
    options: { fresh: boolean; signal: AbortSignal },
  ): Promise<ReadyOutcome>;
  observe(envId: string): Promise<ObservedEnv>;
  /**
   * Puts the environment to sleep: every workload stopped (its stop signal and grace period
   * honoured), nothing removed — volumes and containers stay, so applying the plan again with
   * `resumeStopped` starts them as they were. Idempotent.
   */
  stop(envId: string): Promise<void>;
  /** Removes every object labelled with `envId`; resolves only once none remains. */
  destroy(envId: string): Promise<void>;
  /** Every object this driver labelled as this installation's, whatever environment it belongs to. */
  listManaged(): Promise<ManagedObject[]>;
  /**
   * The workload's output (stdout and stderr interleaved, as bytes). The stream honours
   * backpressure: a slow reader slows the read from the platform, nothing piles up in memory.
   */
  logs(envId: string, workload: string, options?: LogOptions): Promise<Readable>;
  exec(envId: string, workload: string, command: string[], options?: ExecOptions): Promise<ExecResult>;
  readFile(envId: string, workload: string, path: string): Promise<Buffer>;
  writeFile(envId: string, workload: string, path: string, content: Buffer | string): Promise<void>;
  /** Where the gateway connects for `port` of `workload`; null when it is not running. */
  resolveEndpoint(envId: string, workload: string, port: number): Promise<Endpoint | null>;
}
