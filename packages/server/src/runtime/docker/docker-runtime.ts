/**
 * DockerRuntime: the Runtime interface over the Docker Engine API (dockerode). One network per
 * environment, named volumes, containers with health checks and limits, labels on everything.
 * dockerode never leaks past this folder.
 */
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import type { BuildPlan, EnvPlan, HealthcheckPlan, WorkloadPlan } from '../../plan/plan.js';
import {
  type ApplyOptions,
  type BuildOptions,
  type BuiltImage,
  DEFAULT_EXEC_OUTPUT_BYTES,
  type Endpoint,
  type ExecOptions,
  type ExecResult,
  LABELS,
  type LogOptions,
  type ManagedObject,
  type ObservedEnv,
  type ObservedWorkload,
  type Runtime,
  RuntimeStepError,
  RuntimeUnavailableError,
  WorkloadNotFoundError,
} from '../runtime.js';
import { filesTar, firstFileFromTar, singleFileTar } from './archive.js';
import { ByteTail, clipMiddle } from './byte-tail.js';
import { type ContainerLogLimits, containerCreateOptions } from './container-spec.js';
import { DockerFrameReader, DockerLogDemuxer } from './log-demux.js';
import {
  BUILT_BY_LABEL,
  envLabels,
  IMAGE_VOLUME_LABEL,
  imageVolumeName,
  labelFilter,
  networkName,
  volumeName,
} from './names.js';
import { freeSubnets, type SubnetPool } from './subnets.js';

export interface DockerRuntimeOptions {
  /** Defaults to `/var/run/docker.sock` (or DOCKER_HOST, as dockerode reads it). */
  socketPath?: string;
  docker?: Docker;
  /** How often container state is polled while waiting for health or exit. */
  pollMs?: number;
  /** How long apply waits for one workload to become healthy or finish. */
  workloadTimeoutMs?: number;
  /** The installation's id (`Store.instanceId`): labelled on every object, and the only objects listed. */
  instance?: string;
  /** Where environment networks get their subnets; default `10.213.0.0/16` in /24s (256 environments). */
  subnetPool?: SubnetPool;
  /** Output the Engine keeps per container; default 10 MiB × 3 files. Older output is dropped. */
  containerLogLimits?: ContainerLogLimits;
  /**
   * A service restarted this many times by its restart policy while apply waits for it fails its
   * step as crash-looping instead of being waited for until the timeout; default 3.
   */
  crashLoopRestarts?: number;
  /**
   * Limits of every container a build runs (each `RUN` step): memory (swap included, so no swap)
   * and CPUs; default 2 GiB and 1 CPU. The Engine's build API has no pids limit.
   */
  buildLimits?: BuildLimits;
}

export interface BuildLimits {
  memoryBytes?: number;
  cpus?: number;
}

const DEFAULT_BUILD_LIMITS = { memoryBytes: 2 * 1024 * 1024 * 1024, cpus: 1 } as const;
/** `/dev/shm` of a build step: the Engine's own default, said explicitly (it counts as the step's memory). */
const BUILD_SHM_BYTES = 64 * 1024 * 1024;
const CPU_PERIOD_US = 100_000;

/** More `VOLUME`s than this in one image is refused rather than made into as many volumes. */
const MAX_IMAGE_VOLUMES = 64;
/** The bytes of log kept for an error message: the end of the output, whatever its line lengths. */
const LOG_TAIL_BYTES = 4096;
/** Output of a health probe kept: only its exit code counts, the end of its output may explain it. */
const PROBE_OUTPUT_BYTES = 4096;
/** Containers of one workload started at once: enough to be quick, few enough that an abort stops them. */
const START_CONCURRENCY = 8;

/** How an existing or new set of containers is brought up by `startWorkload`. */
type Prepared = {
  /** `reuse`: already what the plan wants; `start`: created, not started; `wait`: a job already running. */
  action: 'reuse' | 'start' | 'wait';
  ids: string[];
};

type ContainerInfo = Docker.ContainerInfo;

/** The image a workload runs; a build not resolved yet is a bug of the caller, said as a step error. */
function imageOf(workload: WorkloadPlan): string {
  const ref = workload.image.ref;
  if (!ref) throw new RuntimeStepError(`build:${workload.name}`, 'the image has not been built');
  return ref;
}

const statusCode = (err: unknown): number | undefined => (err as { statusCode?: number })?.statusCode;
const ignore =
  (...codes: number[]) =>
  (err: unknown) => {
    if (!codes.includes(statusCode(err) ?? -1)) throw err;
  };

export class DockerRuntime implements Runtime {
  readonly name = 'docker';
  private readonly docker: Docker;
  private readonly pollMs: number;
  private readonly workloadTimeoutMs: number;
  private readonly subnetPool: SubnetPool;
  private readonly instance: string;
  private readonly logLimits: ContainerLogLimits;
  private readonly crashLoopRestarts: number;
  private readonly buildLimits: Required<BuildLimits>;
  /** Network creation is serialised in this process, so two environments never pick one subnet. */
  private networkQueue: Promise<unknown> = Promise.resolve();

  constructor(options: DockerRuntimeOptions = {}) {
    this.docker =
      options.docker ?? new Docker(options.socketPath ? { socketPath: options.socketPath } : undefined);
    this.pollMs = options.pollMs ?? 150;
    this.workloadTimeoutMs = options.workloadTimeoutMs ?? 300_000;
    this.subnetPool = options.subnetPool ?? { base: '10.213.0.0/16', size: 24 };
    this.instance = options.instance ?? 'default';
    this.logLimits = options.containerLogLimits ?? { maxSizeBytes: 10 * 1024 * 1024, maxFiles: 3 };
    this.crashLoopRestarts = options.crashLoopRestarts ?? 3;
    this.buildLimits = { ...DEFAULT_BUILD_LIMITS, ...options.buildLimits };
    const { memoryBytes, cpus } = this.buildLimits;
    if (!(Number.isInteger(memoryBytes) && memoryBytes >= 6 * 1024 * 1024)) {
      throw new RangeError(
        `buildLimits.memoryBytes must be a whole number of bytes ≥ 6 MiB, not ${memoryBytes}`,
      );
    }
    if (!(cpus > 0 && Math.round(cpus * CPU_PERIOD_US) >= 1000)) {
      throw new RangeError(`buildLimits.cpus must be at least 0.01, not ${cpus}`);
    }
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new RuntimeUnavailableError(`Docker Engine is not reachable: ${(err as Error).message}`);
    }
  }

  async hasImage(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  }

  /**
   * Sends `options.context` (an uncompressed tar) to the Engine's builder. The image is labelled
   * as built by this installation, so {@link listBuiltImages} and {@link removeImage} find it.
   * Aborting `options.signal` closes the request, which makes the Engine stop the build and
   * remove its intermediate container; the promise rejects with the signal's reason at once.
   * Every step runs with {@link DockerRuntimeOptions.buildLimits}.
   */
  async buildImage(tag: string, build: BuildPlan, options: BuildOptions): Promise<void> {
    const { context, onLog, signal } = options;
    try {
      signal?.throwIfAborted();
      const response = (await this.docker.buildImage(context, {
        t: tag,
        dockerfile: build.dockerfile,
        buildargs: build.args,
        ...(build.target ? { target: build.target } : {}),
        labels: { [BUILT_BY_LABEL]: 'mayfly', [LABELS.instance]: this.instance },
        rm: true,
        forcerm: true,
        // The limits below are the legacy builder's (BuildKit ignores them): ask for it by name.
        version: '1',
        memory: this.buildLimits.memoryBytes,
        memswap: this.buildLimits.memoryBytes, // equal to memory: no swap on top
        cpuperiod: CPU_PERIOD_US,
        cpuquota: Math.round(this.buildLimits.cpus * CPU_PERIOD_US),
        shmsize: BUILD_SHM_BYTES,
        abortSignal: signal,
      })) as unknown as IncomingMessage;
      await this.followBuild(response, onLog, signal);
    } catch (err) {
      signal?.throwIfAborted(); // the caller's reason, not whatever the cut connection raised
      throw err;
    } finally {
      // Whatever the builder did not read (it failed early, or we gave up) is not ours to keep open.
      const stream = context as Partial<Readable>;
      if (stream.destroy && !stream.readableEnded) stream.destroy();
    }
  }

  private async followBuild(
    response: IncomingMessage,
    onLog: BuildOptions['onLog'],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    // After the response began, the request's own abort handling is not enough for every Node
    // version: destroying the response is what ends the read below.
    const stop = () => response.destroy();
    signal?.addEventListener('abort', stop, { once: true });
    // The end of the output for the error message: a few KiB, whatever the size of the messages.
    const tail = new ByteTail(LOG_TAIL_BYTES);
    let partial = '';
    let failure: string | undefined;
    let imageId: string | undefined;
    const emit = (text: string) => {
      tail.push(text);
      const lines = (partial + text).split('\n');
      partial = lines.pop()!.slice(-4096);
      for (const line of lines) if (line.trim()) onLog?.(line.trimEnd());
    };
    try {
      for await (const message of jsonMessages(response)) {
        if (typeof message.stream === 'string') emit(message.stream);
        if (message.error || message.errorDetail) {
          failure = message.errorDetail?.message ?? message.error ?? 'build failed';
        }
        if (typeof message.aux?.ID === 'string') imageId = message.aux.ID;
      }
    } catch (err) {
      signal?.throwIfAborted();
      throw err;
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    signal?.throwIfAborted();
    if (partial.trim()) onLog?.(partial.trimEnd());
    const output = `${tail.truncated ? '…' : ''}${tail.text().trim()}`;
    if (failure) throw new Error(`${clipMiddle(failure.trim(), LOG_TAIL_BYTES)}\n${output}`.trim());
    if (!imageId) throw new Error(`the builder ended without producing an image\n${output}`.trim());
  }

  /** Images this installation built, one entry per tag (an untagged one is listed by its id). */
  async listBuiltImages(): Promise<BuiltImage[]> {
    const images = await this.docker.listImages({
      filters: { label: [`${BUILT_BY_LABEL}=mayfly`, `${LABELS.instance}=${this.instance}`] },
    });
    return images.flatMap((image) => {
      const tags = (image.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
      return (tags.length > 0 ? tags : [image.Id]).map((ref) => ({
        ref,
        id: image.Id,
        sizeBytes: image.Size,
        createdAt: new Date(image.Created * 1000),
      }));
    });
  }

  /**
   * Removes a built image, never forcing: false when a container (running or not) still uses it,
   * true when it is gone (or was already). Refuses an image this installation did not build, so a
   * wrong ref cannot delete a base image or another installation's build.
   */
  async removeImage(ref: string): Promise<boolean> {
    let labels: Record<string, string>;
    try {
      labels = (await this.docker.getImage(ref).inspect()).Config?.Labels ?? {};
    } catch (err) {
      if (statusCode(err) === 404) return true;
      throw err;
    }
    if (labels[BUILT_BY_LABEL] !== 'mayfly' || labels[LABELS.instance] !== this.instance) {
      throw new Error(`image ${ref} was not built by this installation; not removing it`);
    }
    try {
      await this.docker.getImage(ref).remove();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return true;
      if (statusCode(err) === 409) return false;
      throw err;
    }
  }

  async apply(plan: EnvPlan, options: ApplyOptions = {}): Promise<void> {
    const progress = options.onProgress ?? (() => {});
    const given = options.signal ?? new AbortController().signal;
    given.throwIfAborted();
    await this.ensureNetwork(plan);
    given.throwIfAborted();
    // Creations are awaited, never given up on: one landing after the teardown that follows an
    // abort would outlive it. Removals and starts may be left to finish on their own.
    await Promise.all(plan.volumes.map((v) => this.ensureVolume(plan, v.name)));
    given.throwIfAborted();

    const existing = await this.listContainers(plan.envId);
    const planned = new Set(plan.workloads.map((w) => w.name));
    // Workloads no longer in the plan go first, so their names and aliases are free.
    await orAbort(
      Promise.all(
        existing
          .filter((c) => !planned.has(c.Labels[LABELS.workload] ?? ''))
          .map((c) => this.removeContainer(c.Id)),
      ),
      given,
    );

    const failure = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, failure.signal]) : failure.signal;
    const stages = new Map<string, WorkloadStages>();
    for (const workload of plan.workloads) stages.set(workload.name, new WorkloadStages());

    const run = async (workload: WorkloadPlan) => {
      const stage = stages.get(workload.name)!;
      try {
        // Containers are created (not started) at once, whatever they wait for: only the start
        // has to follow depends_on, and creating takes a good part of the time.
        const prepared = await this.prepareWorkload(plan, workload, existing, progress, signal);
        for (const dep of workload.dependsOn) {
          const depStage = stages.get(dep.name);
          if (!depStage)
            throw new RuntimeStepError(`start:${workload.name}`, `depends on unknown "${dep.name}"`);
          await depStage.reached(dep.condition);
        }
        signal.throwIfAborted();
        await this.startWorkload(plan, workload, prepared, stage, progress, signal);
      } catch (err) {
        stage.fail(err);
        failure.abort(err);
        throw err;
      }
    };
    const results = await Promise.allSettled(plan.workloads.map(run));
    const firstStepError = results.find(
      (r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason instanceof RuntimeStepError,
    );
    const firstError =
      firstStepError ?? results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (firstError) throw firstError.reason;
  }

  /**
   * Keeps matching containers, removes stale ones and creates what is missing, without starting it.
   * A job with the plan's spec hash is never run twice: running, it is waited for (a control plane
   * restarted while it ran); created, it is started; exited 0, it is done; exited otherwise, its
   * step fails with its output. `signal` is checked between every two Engine calls that may be
   * many (one per replica), so an abort stops the creation of hundreds of containers at once.
   */
  private async prepareWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    existing: ContainerInfo[],
    progress: NonNullable<ApplyOptions['onProgress']>,
    signal: AbortSignal,
  ): Promise<Prepared> {
    const mine = existing.filter((c) => c.Labels[LABELS.workload] === workload.name);
    const same = mine.filter((c) => c.Labels[LABELS.specHash] === workload.specHash);
    if (workload.kind === 'job' && mine.length === 1 && same.length === 1) {
      const job = same[0]!;
      if (job.State === 'running') return { action: 'wait', ids: [job.Id] };
      if (job.State === 'created') return { action: 'start', ids: [job.Id] };
      if (job.State === 'exited') {
        const code = exitCodeOf(job);
        if (code === 0) return { action: 'reuse', ids: [job.Id] };
        throw new RuntimeStepError(
          `job:${workload.name}`,
          `exited with code ${code ?? 'unknown'}${await this.logTail(job.Id)}`,
        );
      }
    }
    if (workload.kind === 'service') {
      const running = same.filter((c) => c.State === 'running');
      if (running.length === workload.replicas && mine.length === workload.replicas) {
        return { action: 'reuse', ids: running.map((c) => c.Id) };
      }
    }
    await orAbort(Promise.all(mine.map((c) => this.removeContainer(c.Id))), signal);
    await this.ensureImage(workload, progress, signal);
    signal.throwIfAborted();
    progress({ type: 'workload', workload: workload.name, phase: 'creating' });
    const imageVolumePaths = await this.uncoveredImageVolumes(workload);
    const replicas = workload.kind === 'job' ? 1 : workload.replicas;
    const ids: string[] = [];
    for (let replica = 1; replica <= replicas; replica++) {
      signal.throwIfAborted();
      const imageVolumes = await Promise.all(
        imageVolumePaths.map((target) => this.ensureImageVolume(plan, workload, replica, target)),
      );
      signal.throwIfAborted();
      const options = containerCreateOptions(this.instance, plan, workload, replica, {
        logLimits: this.logLimits,
        imageVolumes,
      });
      const container = await this.docker.createContainer(options).catch((err: Error) => {
        throw new RuntimeStepError(`create:${workload.name}`, err.message);
      });
      ids.push(container.id);
      if (workload.files.length > 0) {
        // Compose's way for secrets and configs given as content: copied in before the start.
        await container
          .putArchive(await filesTar(workload.files), { path: '/', noOverwriteDirNonDir: true })
          .catch((err: Error) => {
            throw new RuntimeStepError(
              `create:${workload.name}`,
              `cannot put its secrets and configs in place: ${err.message}`,
            );
          });
      }
    }
    return { action: 'start', ids };
  }

  /**
   * The image's `VOLUME`s that no mount of the workload covers. Docker would give each an
   * anonymous volume that dies with the container, so a repair (which recreates it) would lose
   * the data; they get named volumes instead, as Compose keeps them across recreation.
   */
  private async uncoveredImageVolumes(workload: WorkloadPlan): Promise<string[]> {
    const info = await this.docker.getImage(imageOf(workload)).inspect();
    const declared = Object.keys(info.Config?.Volumes ?? {});
    const normalise = (p: string) => path.posix.normalize(p).replace(/(.)\/+$/, '$1');
    const mounted = new Set(workload.mounts.map((m) => normalise(m.target)));
    const uncovered = [...new Set(declared.map(normalise))].filter((p) => !mounted.has(p));
    if (uncovered.length > MAX_IMAGE_VOLUMES) {
      throw new RuntimeStepError(
        `create:${workload.name}`,
        `image ${imageOf(workload)} declares ${uncovered.length} volumes; at most ${MAX_IMAGE_VOLUMES} are supported`,
      );
    }
    return uncovered;
  }

  private async ensureImageVolume(
    plan: EnvPlan,
    workload: WorkloadPlan,
    replica: number,
    target: string,
  ): Promise<{ name: string; target: string }> {
    const name = imageVolumeName(plan.envId, workload.name, replica, target);
    // Labelled like every object of the environment, so destroy and GC find it.
    await this.docker.createVolume({
      Name: name,
      Labels: {
        ...envLabels(this.instance, plan),
        [LABELS.workload]: workload.name,
        [IMAGE_VOLUME_LABEL]: target,
      },
    });
    return { name, target };
  }

  private async startWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    prepared: Prepared,
    stage: WorkloadStages,
    progress: NonNullable<ApplyOptions['onProgress']>,
    signal: AbortSignal,
  ): Promise<void> {
    const { ids } = prepared;
    if (prepared.action === 'reuse') {
      progress({ type: 'workload', workload: workload.name, phase: 'reused' });
      stage.mark('service_started');
      if (workload.kind === 'job') {
        stage.mark('service_completed_successfully');
        return;
      }
      await this.waitHealthy(workload, ids, signal, false);
      stage.mark('service_healthy');
      return;
    }
    if (prepared.action === 'wait') {
      // Started by an earlier apply that did not see it end: adopt it, do not start it again.
      progress({ type: 'workload', workload: workload.name, phase: 'reused' });
    } else {
      // A few at a time, the signal checked before each: an abort leaves the rest unstarted.
      await eachLimited(ids, START_CONCURRENCY, signal, (id) =>
        this.docker
          .getContainer(id)
          .start()
          .catch((err: Error) => {
            throw new RuntimeStepError(`start:${workload.name}`, err.message);
          }),
      );
      progress({ type: 'workload', workload: workload.name, phase: 'started' });
    }
    stage.mark('service_started');

    if (workload.kind === 'job') {
      const code = await this.waitExit(workload.name, ids[0]!, signal);
      if (code !== 0) {
        throw new RuntimeStepError(
          `job:${workload.name}`,
          `exited with code ${code}${await this.logTail(ids[0]!)}`,
        );
      }
      progress({ type: 'workload', workload: workload.name, phase: 'completed' });
      stage.mark('service_completed_successfully');
      return;
    }
    await this.waitHealthy(workload, ids, signal, true);
    if (workload.healthcheck && workload.healthcheck !== 'disabled')
      progress({ type: 'workload', workload: workload.name, phase: 'healthy' });
    else if (await this.waitPortsOpen(plan, workload, ids, signal)) {
      progress({ type: 'workload', workload: workload.name, phase: 'listening' });
    }
    stage.mark('service_healthy');
  }

  /**
   * A service without a health check counts as ready once its HTTP ports accept connections, so a
   * `ready` environment's URLs answer (Kubernetes would use a tcpSocket readiness probe).
   */
  private async waitPortsOpen(
    plan: EnvPlan,
    workload: WorkloadPlan,
    ids: string[],
    signal: AbortSignal,
  ): Promise<boolean> {
    const ports = workload.ports.filter((p) => p.http && p.protocol === 'tcp');
    if (ports.length === 0) return false;
    const deadline = Date.now() + this.workloadTimeoutMs;
    for (const id of ids) {
      signal.throwIfAborted();
      const info = await this.docker.getContainer(id).inspect();
      const ip = info.NetworkSettings.Networks[networkName(plan.envId)]?.IPAddress;
      if (!ip) continue;
      for (const port of ports) {
        while (!(await canConnect(ip, port.container))) {
          await this.throwIfNotStarting(workload, id, await this.docker.getContainer(id).inspect(), 0);
          if (Date.now() > deadline) {
            throw new RuntimeStepError(
              `ready:${workload.name}`,
              `port ${port.container} never accepted connections`,
            );
          }
          await sleep(this.pollMs, undefined, { signal });
        }
      }
    }
    return true;
  }

  private async ensureImage(
    workload: WorkloadPlan,
    progress: NonNullable<ApplyOptions['onProgress']>,
    signal: AbortSignal,
  ) {
    const image = imageOf(workload);
    if (await this.hasImage(image)) return;
    if (workload.image.build) {
      throw new RuntimeStepError(`build:${workload.name}`, `image ${image} has not been built`);
    }
    signal.throwIfAborted();
    progress({ type: 'image', workload: workload.name, message: `pulling ${image}` });
    try {
      // Aborting closes the request, which makes the Engine stop the pull.
      const response = (await this.docker.pull(image, {
        abortSignal: signal,
      })) as unknown as IncomingMessage;
      const stop = () => response.destroy();
      signal.addEventListener('abort', stop, { once: true });
      let failure: string | undefined;
      try {
        // Read as it comes, nothing kept but a failure: a pull reports progress at length.
        for await (const message of jsonMessages(response)) {
          if (message.error || message.errorDetail) {
            failure = message.errorDetail?.message ?? message.error ?? 'pull failed';
          }
        }
      } finally {
        signal.removeEventListener('abort', stop);
      }
      signal.throwIfAborted();
      if (failure) throw new Error(clipMiddle(failure, LOG_TAIL_BYTES));
    } catch (err) {
      signal.throwIfAborted();
      throw new RuntimeStepError(
        `image:${workload.name}`,
        `image ${image} is not present and could not be pulled: ${(err as Error).message}`,
      );
    }
  }

  /**
   * Resolves once every container of a service is running, and healthy when it has a health check.
   * `fresh`: the containers were just started, so every restart so far counts towards a crash
   * loop; for containers found running, only restarts seen while waiting do.
   */
  private async waitHealthy(
    workload: WorkloadPlan,
    ids: string[],
    signal: AbortSignal,
    fresh: boolean,
  ): Promise<void> {
    const deadline = Date.now() + this.workloadTimeoutMs;
    const check = workload.healthcheck === 'disabled' ? undefined : workload.healthcheck;
    const pending = new Set(ids);
    const probes = new Map<string, Promise<boolean>>();
    const restartsBefore = new Map<string, number>();
    while (pending.size > 0) {
      for (const id of [...pending]) {
        signal.throwIfAborted();
        const info = await this.docker.getContainer(id).inspect();
        if (!restartsBefore.has(id)) restartsBefore.set(id, fresh ? 0 : info.RestartCount);
        await this.throwIfNotStarting(workload, id, info, restartsBefore.get(id)!);
        // Docker runs the first check one interval after start (its start_interval needs API 1.44).
        // Running the same check ourselves meanwhile sees readiness sooner; Docker's verdict still
        // decides failure.
        const probe = probes.get(id);
        if (check && !probe) probes.set(id, this.probeHealth(id, check));
        if (probe && (await settledValue(probe)) !== undefined) {
          probes.delete(id);
          if (await probe) {
            pending.delete(id);
            continue;
          }
        }
        const { Health } = info.State;
        // No check in the template: the image's own HEALTHCHECK, if it has one, still counts;
        // without any, running (not between two crashes) is as ready as it gets.
        const running = info.State.Status === 'running';
        if ((!check && !Health && running) || Health?.Status === 'healthy') {
          pending.delete(id);
        } else if (Health?.Status === 'unhealthy' && running) {
          // Only a running container's verdict counts: Docker also reports `unhealthy` for one
          // that died, and a restarting one is judged by the crash-loop check above.
          const last = Health.Log?.at(-1)?.Output?.trim();
          throw new RuntimeStepError(
            `health:${workload.name}`,
            `health check failed${last ? `: ${last}` : ''}`,
          );
        }
      }
      if (pending.size === 0) return;
      if (Date.now() > deadline) {
        throw new RuntimeStepError(
          `health:${workload.name}`,
          `not healthy after ${Math.round(this.workloadTimeoutMs / 1000)}s`,
        );
      }
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  /**
   * A service that stopped while we waited for it, or that its restart policy keeps bringing back,
   * failed to start: say so at once with its last output rather than wait for the timeout.
   */
  private async throwIfNotStarting(
    workload: WorkloadPlan,
    id: string,
    info: Docker.ContainerInspectInfo,
    restartsBefore: number,
  ): Promise<void> {
    const { State } = info;
    if (State.Status === 'exited' || State.Status === 'dead') {
      throw new RuntimeStepError(
        `start:${workload.name}`,
        `exited with code ${State.ExitCode} while starting${await this.logTail(id)}`,
      );
    }
    const restarts = info.RestartCount - restartsBefore;
    if (restarts >= this.crashLoopRestarts) {
      throw new RuntimeStepError(
        `start:${workload.name}`,
        `keeps crashing (restarted ${restarts} times, last exit code ${State.ExitCode})${await this.logTail(id)}`,
      );
    }
  }

  /**
   * Runs the health check's test once inside the container; true when it exits 0. Its output
   * (which the test may make as long as it likes) is read and dropped but for a few KiB.
   */
  private async probeHealth(id: string, healthcheck: HealthcheckPlan): Promise<boolean> {
    const probe = healthcheck.command;
    const command = 'shell' in probe ? ['/bin/sh', '-c', probe.shell] : probe.exec;
    if (command.length === 0) return false;
    try {
      const result = await this.execIn(this.docker.getContainer(id), command, {
        timeoutMs: healthcheck.timeoutMs,
        maxOutputBytes: PROBE_OUTPUT_BYTES,
      });
      return result.exitCode === 0;
    } catch {
      return false;
    }
  }

  private async waitExit(name: string, id: string, signal: AbortSignal): Promise<number> {
    const deadline = Date.now() + this.workloadTimeoutMs;
    for (;;) {
      signal.throwIfAborted();
      const info = await this.docker.getContainer(id).inspect();
      if (info.State.Status === 'exited' || info.State.Status === 'dead') return info.State.ExitCode;
      if (Date.now() > deadline) throw new RuntimeStepError(`job:${name}`, 'did not finish in time');
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  /** The end of a container's output for an error message: last lines, and at most a few KiB. */
  private async logTail(id: string, lines = 10): Promise<string> {
    try {
      const stream = await this.openLogStream(id, { tail: lines });
      // A single line can be huge: keep a bounded window of the end, not everything.
      const kept = new ByteTail(LOG_TAIL_BYTES);
      for await (const chunk of stream) kept.push(chunk as Buffer);
      const text = kept.text().trim();
      return text ? `\n${text}` : '';
    } catch {
      return '';
    }
  }

  private ensureNetwork(plan: EnvPlan): Promise<void> {
    const next = this.networkQueue.then(() => this.createNetworkIfMissing(plan));
    this.networkQueue = next.catch(() => {});
    return next;
  }

  private async createNetworkIfMissing(plan: EnvPlan): Promise<void> {
    const name = networkName(plan.envId);
    const networks = await this.docker.listNetworks();
    if (networks.some((n) => n.Name === name)) return;
    const used = networks.flatMap((n) =>
      (n.IPAM?.Config ?? []).map((c) => c.Subnet).filter((s): s is string => !!s),
    );
    // Another control plane (or a user) may take a subnet between our look and our create: try the next.
    for (const subnet of freeSubnets(this.subnetPool, used)) {
      try {
        await this.docker.createNetwork({
          Name: name,
          Driver: 'bridge',
          Labels: envLabels(this.instance, plan),
          CheckDuplicate: true,
          IPAM: { Driver: 'default', Config: [{ Subnet: subnet }] },
        });
        return;
      } catch (err) {
        if (statusCode(err) === 409) return; // created meanwhile under our name
        if (!/overlap/i.test((err as Error).message)) throw err;
      }
    }
    throw new RuntimeStepError(
      'network',
      `no free subnet left in ${this.subnetPool.base} for another environment network (each takes a /${this.subnetPool.size})`,
    );
  }

  private async ensureVolume(plan: EnvPlan, volume: string): Promise<void> {
    // Creating a volume that exists is a no-op in the Engine API, which makes this idempotent.
    await this.docker.createVolume({
      Name: volumeName(plan.envId, volume),
      Labels: envLabels(this.instance, plan),
    });
  }

  private listContainers(envId?: string, workload?: string): Promise<ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: labelFilter(this.instance, envId, workload) });
  }

  private async removeContainer(id: string): Promise<void> {
    // Ephemeral by definition: kill, no grace period. `v` also drops anonymous volumes of the image.
    await this.docker.getContainer(id).remove({ force: true, v: true }).catch(ignore(404, 409));
  }

  async observe(envId: string): Promise<ObservedEnv> {
    const containers = await this.listContainers(envId);
    const networks = await this.docker.listNetworks({ filters: labelFilter(this.instance, envId) });
    const workloads: ObservedWorkload[] = containers.map((c) => ({
      name: c.Labels[LABELS.workload] ?? c.Names[0] ?? c.Id,
      kind: c.Labels['mayfly.kind'] === 'job' ? 'job' : 'service',
      state: c.State,
      health: healthOf(c),
      exitCode: c.State === 'exited' ? exitCodeOf(c) : null,
    }));
    return { envId, workloads, exists: containers.length > 0 || networks.length > 0 };
  }

  async destroy(envId: string): Promise<void> {
    if (!envId) throw new Error('destroy needs an environment id'); // an empty id would match every environment
    const deadline = Date.now() + 120_000;
    for (;;) {
      const containers = await this.listContainers(envId);
      await Promise.all(containers.map((c) => this.removeContainer(c.Id)));
      const networks = await this.docker.listNetworks({ filters: labelFilter(this.instance, envId) });
      await Promise.all(
        networks.map((n) =>
          this.docker
            .getNetwork(n.Id)
            .remove()
            .catch(ignore(403, 404, 409)),
        ),
      );
      const { Volumes } = await this.docker.listVolumes({ filters: labelFilter(this.instance, envId) });
      await Promise.all(
        (Volumes ?? []).map((v) => this.docker.getVolume(v.Name).remove().catch(ignore(404, 409))),
      );
      const left = (await this.listManaged()).filter((o) => o.envId === envId);
      if (left.length === 0) return;
      if (Date.now() > deadline) {
        throw new Error(`objects of ${envId} remain: ${left.map((o) => `${o.kind} ${o.id}`).join(', ')}`);
      }
      await sleep(200);
    }
  }

  async listManaged(): Promise<ManagedObject[]> {
    const filters = labelFilter(this.instance);
    const [containers, networks, volumes] = await Promise.all([
      this.docker.listContainers({ all: true, filters }),
      this.docker.listNetworks({ filters }),
      this.docker.listVolumes({ filters }),
    ]);
    const ref = (
      kind: ManagedObject['kind'],
      id: string,
      labels: Record<string, string> | null | undefined,
    ) => ({
      kind,
      id,
      envId: labels?.[LABELS.env] ?? '',
      project: labels?.[LABELS.project] ?? null,
    });
    return [
      ...containers.map((c) => ref('container', c.Id, c.Labels)),
      ...networks.map((n) => ref('network', n.Id, n.Labels)),
      ...(volumes.Volumes ?? []).map((v) => ref('volume', v.Name, v.Labels)),
    ];
  }

  private async containerOf(envId: string, workload: string, running = false): Promise<Docker.Container> {
    const containers = (await this.listContainers(envId, workload)).filter(
      (c) => !running || c.State === 'running',
    );
    const first = containers.sort((a, b) => (a.Names[0] ?? '').localeCompare(b.Names[0] ?? ''))[0];
    if (!first)
      throw new WorkloadNotFoundError(
        `no ${running ? 'running ' : ''}container for "${workload}" in ${envId}`,
      );
    return this.docker.getContainer(first.Id);
  }

  async logs(envId: string, workload: string, options: LogOptions = {}): Promise<Readable> {
    const container = await this.containerOf(envId, workload);
    return this.openLogStream(container.id, options);
  }

  /**
   * The Engine's log endpoint as a stream, in both modes: frames are demultiplexed as they come
   * and piped with backpressure, so a reader that stops reading stops the socket (nothing piles
   * up in this process). Aborting `signal` ends the stream (a clean end, not an error) and closes
   * the connection; so does destroying the returned stream.
   */
  private async openLogStream(id: string, options: LogOptions): Promise<Readable> {
    const { signal } = options;
    signal?.throwIfAborted();
    const query: Record<string, unknown> = { stdout: true, stderr: true, follow: !!options.follow };
    if (options.tail !== undefined) query.tail = options.tail;
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      this.docker.modem.dial(
        {
          path: `/containers/${id}/logs?`,
          method: 'GET',
          options: query,
          isStream: true,
          abortSignal: signal,
          statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
        },
        (err, result) => (err ? reject(err) : resolve(result as IncomingMessage)),
      );
    }).catch((err: unknown) => {
      signal?.throwIfAborted();
      if (statusCode(err) === 404) throw new WorkloadNotFoundError(`container ${id} is gone`);
      throw err;
    });
    const demuxer = new DockerLogDemuxer();
    const close = () => response.destroy();
    signal?.addEventListener('abort', close, { once: true });
    // A reader that gives up destroys the demuxer; the socket must close then even if the
    // container is silent (the pipeline only notices at the next chunk).
    demuxer.once('close', close);
    pipeline(untilAborted(response, signal), demuxer, () => {
      signal?.removeEventListener('abort', close);
      // An error is already on `demuxer` (the pipeline destroys it with the error).
    });
    return demuxer;
  }

  async exec(
    envId: string,
    workload: string,
    command: string[],
    options: ExecOptions = {},
  ): Promise<ExecResult> {
    return this.execIn(await this.containerOf(envId, workload, true), command, options);
  }

  private async execIn(
    container: Docker.Container,
    command: string[],
    options: ExecOptions = {},
  ): Promise<ExecResult> {
    // Read as fast as it comes and dropped but for the end: a command may print gigabytes.
    const limit = options.maxOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES;
    const out = new ByteTail(limit);
    const err = new ByteTail(limit);
    const exec = await container.exec({
      Cmd: command,
      AttachStdout: true,
      AttachStderr: true,
      AttachStdin: options.stdin !== undefined,
      Env: options.env ? Object.entries(options.env).map(([k, v]) => `${k}=${v}`) : undefined,
      WorkingDir: options.workingDir,
    });
    const stream = await exec.start({ hijack: true, stdin: options.stdin !== undefined });
    const frames = new DockerFrameReader((data, which) => (which === 'stderr' ? err : out).push(data));
    stream.on('data', (chunk: Buffer) => frames.write(chunk));
    stream.on('end', () => frames.end());
    stream.on('close', () => frames.end());
    if (options.stdin !== undefined) {
      stream.write(options.stdin);
      (stream as unknown as { end(): void }).end();
    }
    const finished = new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    if (options.timeoutMs) {
      const timeout = new AbortController();
      const timer = sleep(options.timeoutMs, undefined, { signal: timeout.signal }).then(() => {
        // The Engine cannot kill an exec; closing our end at least frees the connection.
        (stream as unknown as { destroy(): void }).destroy();
        throw new Error(`command timed out after ${options.timeoutMs} ms`);
      });
      timer.catch(() => {});
      try {
        await Promise.race([finished, timer]);
      } finally {
        timeout.abort();
      }
    } else {
      await finished;
    }
    const info = await exec.inspect();
    return {
      exitCode: info.ExitCode ?? -1,
      stdout: out.text(),
      stderr: err.text(),
      stdoutTruncated: out.truncated,
      stderrTruncated: err.truncated,
    };
  }

  async readFile(envId: string, workload: string, filePath: string): Promise<Buffer> {
    const container = await this.containerOf(envId, workload);
    const archive = (await container.getArchive({ path: filePath })) as unknown as Readable;
    return firstFileFromTar(archive);
  }

  async writeFile(
    envId: string,
    workload: string,
    filePath: string,
    content: Buffer | string,
  ): Promise<void> {
    const container = await this.containerOf(envId, workload);
    const archive = await singleFileTar(filePath, Buffer.isBuffer(content) ? content : Buffer.from(content));
    await container.putArchive(archive, { path: path.posix.dirname(filePath) });
  }

  async resolveEndpoint(envId: string, workload: string, port: number): Promise<Endpoint | null> {
    const running = (await this.listContainers(envId, workload)).filter((c) => c.State === 'running');
    if (running.length === 0) return null;
    // Spread requests over replicas.
    const pick = running[Math.floor(Math.random() * running.length)]!;
    const ip = pick.NetworkSettings?.Networks?.[networkName(envId)]?.IPAddress;
    return ip ? { host: ip, port } : null;
  }
}

/** The three gates of `depends_on`, as promises other workloads can wait for. */
class WorkloadStages {
  private readonly gates = new Map<
    string,
    { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void }
  >();

  constructor() {
    for (const name of ['service_started', 'service_healthy', 'service_completed_successfully']) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // a gate nobody waits for must not become an unhandled rejection
      this.gates.set(name, { promise, resolve, reject });
    }
  }

  reached(condition: string): Promise<void> {
    return this.gates.get(condition)!.promise;
  }

  mark(condition: string): void {
    this.gates.get(condition)?.resolve();
  }

  fail(err: unknown): void {
    for (const gate of this.gates.values()) gate.reject(err);
  }
}

/**
 * Runs `fn` on every item, at most `limit` at once, checking `signal` before each. On an abort
 * nothing more starts and the promise rejects with the signal's reason at once: the calls under
 * way finish on their own (so `fn` must not create objects a teardown right after could miss).
 * On a failure nothing more starts either, and the promise rejects with it.
 */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed && !signal.aborted) {
      await fn(items[next++]!).catch((err: unknown) => {
        failed = true;
        throw err;
      });
    }
  };
  await orAbort(Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker)), signal);
  signal.throwIfAborted();
}

/**
 * `promise`, or a rejection with the signal's reason as soon as `signal` aborts: for Engine calls
 * that cannot be cancelled (their requests are sent), so that an abort is not held up by them.
 * Never for a call that creates an object: it could land after the teardown that follows.
 */
async function orAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  promise.catch(() => {}); // once given up on, its failure is nobody's to handle
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** The value of a settled promise, or undefined while it is pending. */
async function settledValue<T>(promise: Promise<T>): Promise<T | undefined> {
  const pending = Symbol('pending');
  const winner = await Promise.race([promise, Promise.resolve(pending)]);
  return winner === pending ? undefined : (winner as T);
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 1_000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

function healthOf(c: ContainerInfo): ObservedWorkload['health'] {
  const status = c.Status ?? '';
  if (status.includes('(healthy)')) return 'healthy';
  if (status.includes('(unhealthy)')) return 'unhealthy';
  if (status.includes('(health: starting)')) return 'starting';
  return null;
}

function exitCodeOf(c: ContainerInfo): number | null {
  const match = /Exited \((-?\d+)\)/.exec(c.Status ?? '');
  return match ? Number(match[1]) : null;
}

/**
 * The chunks of `source` until it ends, or until `signal` aborts: the read that the abort cuts
 * short then ends normally, so the stream built on it ends instead of failing.
 */
async function* untilAborted(source: Readable, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of source) yield chunk as Buffer;
  } catch (err) {
    if (!signal?.aborted) throw err;
  }
}

interface BuildMessage {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** The builder's newline-delimited JSON messages; a line that is not JSON is skipped. */
async function* jsonMessages(source: Readable): AsyncGenerator<BuildMessage> {
  // A decoder, not chunk.toString(): a character may be split over two chunks.
  const decoder = new StringDecoder('utf8');
  let pending = '';
  for await (const chunk of source) {
    pending += decoder.write(chunk as Buffer);
    // The Engine sends one small message per write; a line this long is not from it.
    if (pending.length > 8 * 1024 * 1024) throw new Error('the builder sent an oversized message');
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const message = parseJson(line);
      if (message) yield message;
    }
  }
  const last = parseJson(pending + decoder.end());
  if (last) yield last;
}

function parseJson(line: string): BuildMessage | undefined {
  if (!line.trim()) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === 'object' ? (value as BuildMessage) : undefined;
  } catch {
    return undefined;
  }
}
