/**
 * The Runtime interface: everything the control plane asks of a container platform.
 * Drivers (Docker, Kubernetes) implement it; nothing above `runtime/` imports a driver.
 * Every object a driver makes carries the labels in {@link LABELS}, so teardown and garbage
 * collection find them by label, never by remembered ids alone.
 */
import type { Readable } from 'node:stream';
import type { BuildPlan, EnvPlan } from '../plan/plan.js';

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
  | {
      type: 'workload';
      workload: string;
      /** `healthy`: its health check passed; `listening`: no check, but its HTTP port accepts connections. */
      phase: 'creating' | 'started' | 'healthy' | 'listening' | 'completed' | 'reused';
    };

export interface ApplyOptions {
  onProgress?: (event: ProgressEvent) => void;
  /**
   * Aborting stops apply within about a second, wherever it is (pulling, creating or starting
   * containers, waiting): nothing more is created or started, and apply rejects.
   */
  signal?: AbortSignal;
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

export interface BuildOptions {
  /**
   * The build context as the builder must get it: an uncompressed tar of exactly the files to
   * send (`.dockerignore` already applied above the driver, see `images/context-files.ts`).
   */
  context: NodeJS.ReadableStream;
  /** Every line of output, as it comes. A failed build's error message keeps only the last few KiB. */
  onLog?: (line: string) => void;
  /** Aborting stops the build (the request to the builder is cancelled). */
  signal?: AbortSignal;
}

/** An image this installation built (see {@link Runtime.buildImage}). */
export interface BuiltImage {
  /** The tag it was built as, e.g. `mayfly-build/shop:0123abcd…`. */
  ref: string;
  id: string;
  sizeBytes: number;
  createdAt: Date;
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

export interface Runtime {
  readonly name: string;
  /** Throws {@link RuntimeUnavailableError} when the platform does not answer. */
  ping(): Promise<void>;
  /** True when the image is present where workloads will run. */
  hasImage(ref: string): Promise<boolean>;
  /** Builds `tag` from `build`, sending `options.context` as the context. */
  buildImage(tag: string, build: BuildPlan, options: BuildOptions): Promise<void>;
  /** Images built by {@link buildImage} that are still present. */
  listBuiltImages(): Promise<BuiltImage[]>;
  /** Removes a built image; false (and nothing removed) when a container still uses it. */
  removeImage(ref: string): Promise<boolean>;
  /**
   * Converges the platform to `plan`. Idempotent: objects that already match (same spec hash)
   * are kept, missing ones created, changed ones replaced, ones no longer planned removed.
   * Resolves when every service is started (and healthy if it has a health check) and every job
   * has exited 0, in `dependsOn` order, independent workloads in parallel.
   * A job that is already running with the same spec (a control plane restarted during it) is
   * waited for, never started twice; a service that keeps crashing fails its step instead of
   * being waited for until the timeout.
   * Throws {@link RuntimeStepError} naming the step that failed.
   */
  apply(plan: EnvPlan, options?: ApplyOptions): Promise<void>;
  observe(envId: string): Promise<ObservedEnv>;
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
