/**
 * DockerRuntime: the Runtime interface over the Docker Engine API (dockerode). One network per
 * environment, named volumes, containers with health checks and limits, labels on everything.
 * dockerode never leaks past this folder.
 */
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import { tryConnect } from '../../net/tcp-connect.js';
import { type EnvPlan, type HealthcheckPlan, isRestored, type WorkloadPlan } from '../../plan/plan.js';
import { eachLimited, orAbort } from '../abort.js';
import { clipMiddle } from '../byte-tail.js';
import {
  type Endpoint,
  type ExecOptions,
  type ExecResult,
  LABELS,
  type LogOptions,
  type ManagedObject,
  type ObservedEnv,
  type ObservedWorkload,
  type PreparedEnvironment,
  type PreparedWorkload,
  type PrepareOptions,
  type ProgressEvent,
  type ReadyOutcome,
  type Runtime,
  RuntimeStepError,
  RuntimeUnavailableError,
  WorkloadNotFoundError,
} from '../runtime.js';
import { filesTar, firstFileFromTar, singleFileTar } from './archive.js';
import { execIn, logTail, openLogStream } from './container-io.js';
import { type ContainerLogLimits, containerCreateOptions } from './container-spec.js';
import { DockerVolumeSnapshots, SNAPSHOT_LABEL } from './docker-volume-snapshots.js';
import { engineClient, ignore, imageExists, jsonMessages, statusCode } from './engine-api.js';
import {
  envLabels,
  IMAGE_VOLUME_LABEL,
  imageVolumeName,
  labelFilter,
  networkName,
  volumeName,
} from './names.js';
import {
  effectiveArgv,
  GATED_LABEL,
  gatedCreateOptions,
  ReleaseFiles,
  type StartGateOptions,
  unhealthySinceRelease,
  worthGating,
} from './start-gate.js';
import { freeSubnets, type SubnetPool } from './subnets.js';

/** The end of a failed pull's message kept. */
const PULL_ERROR_BYTES = 4096;

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
   * Start gates (see start-gate.ts): containers that wait for others are started at once and held
   * until released. Without it they are started only when what they wait for is ready.
   */
  startGate?: StartGateOptions;
  /** The static agent binary: volume snapshots copy with it. Without it there are no snapshots. */
  agentBinary?: string;
}

/** More `VOLUME`s than this in one image is refused rather than made into as many volumes. */
const MAX_IMAGE_VOLUMES = 64;
/** Output of a health probe kept: only its exit code counts, the end of its output may explain it. */
const PROBE_OUTPUT_BYTES = 4096;
/** Containers of one workload started at once: enough to be quick, few enough that an abort stops them. */
const START_CONCURRENCY = 8;

type ContainerInfo = Docker.ContainerInfo;

/** The image a workload runs; a build not resolved yet is a bug of the caller, said as a step error. */
function imageOf(workload: WorkloadPlan): string {
  const ref = workload.image.ref;
  if (!ref) throw new RuntimeStepError(`build:${workload.name}`, 'the image has not been built');
  return ref;
}

export class DockerRuntime implements Runtime {
  readonly name = 'docker';
  readonly snapshots: DockerVolumeSnapshots | undefined;
  private readonly docker: Docker;
  private readonly pollMs: number;
  private readonly workloadTimeoutMs: number;
  private readonly subnetPool: SubnetPool;
  private readonly instance: string;
  private readonly logLimits: ContainerLogLimits;
  private readonly crashLoopRestarts: number;
  private readonly startGate: StartGateOptions | undefined;
  private readonly releases: ReleaseFiles | undefined;
  /** Per environment, gated workloads whose held containers are to be started early. */
  private readonly earlyStarts = new Map<string, Set<string>>();
  /** `<env>/<workload>` released since last held: an early start keeps off (a job runs once). */
  private readonly released = new Set<string>();
  /** Network creation is serialised in this process, so two environments never pick one subnet. */
  private networkQueue: Promise<unknown> = Promise.resolve();

  constructor(options: DockerRuntimeOptions = {}) {
    this.docker = engineClient(options);
    this.pollMs = options.pollMs ?? 150;
    this.workloadTimeoutMs = options.workloadTimeoutMs ?? 300_000;
    this.subnetPool = options.subnetPool ?? { base: '10.213.0.0/16', size: 24 };
    this.instance = options.instance ?? 'default';
    this.logLimits = options.containerLogLimits ?? { maxSizeBytes: 10 * 1024 * 1024, maxFiles: 3 };
    this.crashLoopRestarts = options.crashLoopRestarts ?? 3;
    this.startGate = options.startGate;
    this.releases = options.startGate ? new ReleaseFiles(options.startGate.dir) : undefined;
    const agentBinary = options.agentBinary ?? options.startGate?.agentBinary;
    this.snapshots = agentBinary
      ? new DockerVolumeSnapshots({ docker: this.docker, instance: this.instance, agentBinary })
      : undefined;
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new RuntimeUnavailableError(`Docker Engine is not reachable: ${(err as Error).message}`);
    }
  }

  async prepareEnvironment(plan: EnvPlan, signal: AbortSignal): Promise<PreparedEnvironment> {
    signal.throwIfAborted();
    await this.ensureNetwork(plan);
    signal.throwIfAborted();
    // Creations are awaited, never given up on: one landing after the teardown that follows an
    // abort would outlive it. Removals may be left to finish on their own.
    // A volume made as a clone of a snapshot is made by `snapshots.restore` (apply-plan.ts).
    const volumes = plan.volumes.filter((v) => !isRestored(v));
    const made = await Promise.all(volumes.map((v) => this.ensureVolume(plan, v.name)));
    signal.throwIfAborted();
    // Stopped only while a snapshot is taken: a control plane that died meanwhile left them so.
    await this.snapshots?.resumeWriters(plan.envId);
    const planned = new Set(plan.workloads.map((w) => w.name));
    // Workloads no longer in the plan go first, so their names and aliases are free.
    const stale = (await this.listContainers(plan.envId)).filter(
      (c) => !planned.has(c.Labels[LABELS.workload] ?? ''),
    );
    await orAbort(Promise.all(stale.map((c) => this.removeContainer(c.Id))), signal);
    return { madeVolumes: volumes.filter((_, i) => made[i]).map((v) => v.name) };
  }

  /**
   * A job with the plan's spec hash is never run twice: running, it is reported running (a
   * control plane restarted while it ran); created, it is to be started; exited, its exit code is
   * reported. A service's containers with the plan's spec hash are kept too: created ones are
   * started, not made again. `signal` is checked between every two Engine calls that may be many (one per
   * replica), so an abort stops the creation of hundreds of containers at once.
   */
  async prepareWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    options: PrepareOptions,
  ): Promise<PreparedWorkload> {
    const { signal } = options;
    const progress = options.onProgress ?? (() => {});
    const mine = await this.listContainers(plan.envId, workload.name);
    const same = mine.filter((c) => c.Labels[LABELS.specHash] === workload.specHash);
    const count = workload.kind === 'job' ? 1 : workload.replicas;
    if (!options.recreate && same.length === count && mine.length === count) {
      const gated = same.some((c) => c.Labels[GATED_LABEL] === 'true');
      // Gated containers need gates to be released: made again when gates were turned off since.
      const usable = !gated || this.releases !== undefined;
      if (usable && same.every((c) => c.State === 'running')) {
        // Held at their gate (started by an apply that stopped before releasing them): to be released.
        if (gated && (await this.releases?.releasedAt(plan.envId, workload.name)) === null)
          return { state: 'created' };
        return { state: 'running' };
      }
      // Created by an apply that stopped before starting them (aborted, or the control plane
      // restarted): started now, not made again (what was put in them stays).
      if (usable && same.every((c) => c.State === 'running' || c.State === 'created')) {
        if (gated) await this.holdAndStartEarly(plan, workload);
        return { state: 'created' };
      }
      const exited = same.every((c) => c.State === 'exited');
      // Put to sleep: started again as they are (their writable layers kept), not made anew —
      // whatever their restart policy, since it was Mayfly that stopped them.
      if (options.resumeStopped && workload.kind === 'service' && exited) {
        const since = options.resumeStopped.since.getTime();
        const finished = await Promise.all(
          same.map(async (c) =>
            Date.parse((await this.docker.getContainer(c.Id).inspect()).State.FinishedAt),
          ),
        );
        if (usable && finished.every((at) => at >= since)) {
          if (gated) await this.holdAndStartEarly(plan, workload);
          return { state: 'created' };
        }
      }
      const clean = exited && same.every((c) => exitCodeOf(c) === 0);
      if (options.keepExited === 'any' ? exited : options.keepExited === 'clean' && clean) {
        const failed = same.find((c) => exitCodeOf(c) !== 0);
        // Only a failure's output is ever shown: a clean exit's is not read.
        return failed
          ? {
              state: 'exited',
              exitCode: exitCodeOf(failed) ?? -1,
              output: await logTail(this.docker, failed.Id),
            }
          : { state: 'exited', exitCode: 0, output: '' };
      }
    }
    await orAbort(Promise.all(mine.map((c) => this.removeContainer(c.Id))), signal);
    await this.ensureImage(workload, progress, signal);
    signal.throwIfAborted();
    progress({ type: 'workload', workload: workload.name, phase: 'creating' });
    const image = await this.docker.getImage(imageOf(workload)).inspect();
    const imageVolumePaths = uncoveredImageVolumes(workload, image);
    const argv = effectiveArgv(workload, image.Config ?? {});
    // Without a command Docker's own error at start says more than a gate could.
    const gate =
      this.startGate && worthGating(plan, workload) && argv.length > 0 ? this.startGate : undefined;
    // Held before it exists: nothing may let it through before startWorkload.
    const releaseDir = gate && (await this.releases!.hold(plan.envId, workload.name));
    for (let replica = 1; replica <= count; replica++) {
      signal.throwIfAborted();
      const imageVolumes = await Promise.all(
        imageVolumePaths.map((target) => this.ensureImageVolume(plan, workload, replica, target)),
      );
      signal.throwIfAborted();
      const plain = containerCreateOptions(this.instance, plan, workload, replica, {
        logLimits: this.logLimits,
        imageVolumes,
        imageLabels: image.Config?.Labels,
      });
      const options = gate && releaseDir ? gatedCreateOptions(plain, argv, gate, releaseDir) : plain;
      const container = await this.docker.createContainer(options).catch((err: Error) => {
        throw new RuntimeStepError(`create:${workload.name}`, err.message);
      });
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
    if (gate) this.startEarly(plan.envId, workload.name);
    return { state: 'created' };
  }

  /**
   * Holds a gated workload's stopped containers and queues them to be started early (see
   * {@link startEarlyInBackground}); {@link startWorkload} only has to release them then.
   */
  private async holdAndStartEarly(plan: EnvPlan, workload: WorkloadPlan): Promise<void> {
    if (!this.releases) return; // gates turned off since: startWorkload starts them as usual
    await this.releases.hold(plan.envId, workload.name);
    this.startEarly(plan.envId, workload.name);
  }

  private startEarly(envId: string, workload: string): void {
    this.released.delete(`${envId}/${workload}`);
    const queued = this.earlyStarts.get(envId) ?? new Set<string>();
    queued.add(workload);
    this.earlyStarts.set(envId, queued);
  }

  /**
   * Starts the environment's held containers, one at a time, once a workload that waits for
   * nothing has been started: starting them all at once would slow that first start (the one
   * everything else waits for) as much as it speeds theirs. Best effort: whatever is not started
   * early, startWorkload starts.
   */
  private startEarlyInBackground(plan: EnvPlan): void {
    const queued = this.earlyStarts.get(plan.envId);
    if (!queued) return;
    this.earlyStarts.delete(plan.envId);
    void (async () => {
      for (const workload of plan.workloads) {
        // Released meanwhile: its own startWorkload starts it (a job must never be started twice).
        if (!queued.has(workload.name) || this.releasedSinceQueued(plan.envId, workload.name)) continue;
        await this.startStopped(plan, workload, new AbortController().signal, () =>
          this.releasedSinceQueued(plan.envId, workload.name),
        ).catch(() => {});
      }
    })();
  }

  private releasedSinceQueued(envId: string, workload: string): boolean {
    return this.released.has(`${envId}/${workload}`);
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
    // A volume of that name made otherwise (the template names one so) is kept by the create:
    // it is not this one, and its data must not stand in for the image's.
    const labels = (await this.docker.getVolume(name).inspect()).Labels ?? {};
    if (labels[IMAGE_VOLUME_LABEL] !== target || labels[LABELS.workload] !== workload.name)
      throw new RuntimeStepError(
        `create:${workload.name}`,
        `the volume for its image's VOLUME ${target} would be ${name}, which is a volume of the template: rename that one`,
      );
    return { name, target };
  }

  async startWorkload(plan: EnvPlan, workload: WorkloadPlan, signal: AbortSignal): Promise<void> {
    // Released first, so gated containers started below go straight through.
    if (this.releases && worthGating(plan, workload)) {
      this.released.add(`${plan.envId}/${workload.name}`);
      await this.releases.release(plan.envId, workload.name);
    }
    await this.startStopped(plan, workload, signal);
    this.startEarlyInBackground(plan);
  }

  private async startStopped(
    plan: EnvPlan,
    workload: WorkloadPlan,
    signal: AbortSignal,
    skip: () => boolean = () => false,
  ): Promise<void> {
    // Exited ones too: a service woken from sleep is started again as it was (a job never is:
    // an exited job has run).
    const created = (await this.listContainers(plan.envId, workload.name)).filter(
      (c) => c.State === 'created' || (c.State === 'exited' && workload.kind !== 'job'),
    );
    if (skip()) return;
    // A few at a time, the signal checked before each: an abort leaves the rest unstarted.
    await eachLimited(created, START_CONCURRENCY, signal, (c) =>
      this.docker
        .getContainer(c.Id)
        .start()
        // Already started: by a start of an apply that was given up on while its request was out.
        .catch(ignore(304))
        .catch((err: Error) => {
          throw new RuntimeStepError(`start:${workload.name}`, err.message);
        }),
    );
  }

  async waitForExit(
    plan: EnvPlan,
    workload: WorkloadPlan,
    signal: AbortSignal,
  ): Promise<{ exitCode: number; output: string }> {
    const [job] = await this.listContainers(plan.envId, workload.name);
    if (!job) throw new RuntimeStepError(`job:${workload.name}`, 'its container is gone');
    // No deadline of its own: a migration may take long; the bring-up's time limit (the signal) bounds it.
    for (;;) {
      signal.throwIfAborted();
      const info = await this.docker.getContainer(job.Id).inspect();
      if (info.State.Status === 'exited' || info.State.Status === 'dead') {
        const exitCode = info.State.ExitCode;
        return { exitCode, output: exitCode === 0 ? '' : await logTail(this.docker, job.Id) };
      }
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  async waitForReady(
    plan: EnvPlan,
    workload: WorkloadPlan,
    options: { fresh: boolean; signal: AbortSignal },
  ): Promise<ReadyOutcome> {
    const { signal } = options;
    const ids = (await this.listContainers(plan.envId, workload.name)).map((c) => c.Id).sort();
    try {
      await this.waitHealthy(plan, workload, ids, signal, options.fresh);
      if (workload.healthcheck && workload.healthcheck !== 'disabled')
        return { state: 'ready', by: 'healthcheck' };
      return (await this.waitPortsOpen(plan, workload, ids, signal))
        ? { state: 'ready', by: 'port' }
        : { state: 'ready', by: 'running' };
    } catch (err) {
      if (err instanceof ContainerExited)
        return { state: 'exited', exitCode: err.exitCode, output: err.output };
      throw err;
    }
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
        while ((await tryConnect(ip, port.container)) !== 'connected') {
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
    progress: (event: ProgressEvent) => void,
    signal: AbortSignal,
  ) {
    const image = imageOf(workload);
    if (await imageExists(this.docker, image)) return;
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
      if (failure) throw new Error(clipMiddle(failure, PULL_ERROR_BYTES));
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
    plan: EnvPlan,
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
    // A gated workload's checks that ran while it was held do not count (see start-gate.ts).
    const releasedAt = this.releases ? await this.releases.releasedAt(plan.envId, workload.name) : null;
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
        } else if (
          Health?.Status === 'unhealthy' &&
          running &&
          (info.Config.Labels?.[GATED_LABEL] !== 'true' ||
            releasedAt === null ||
            unhealthySinceRelease(Health.Log, releasedAt, check))
        ) {
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
      // A probe that passes is seen at once (a failed one is run again a poll later).
      await Promise.race([sleep(this.pollMs, undefined, { signal }), ...probes.values()]);
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
      // Whether that is a failure (Compose's rules) is decided above the driver.
      throw new ContainerExited(State.ExitCode, await logTail(this.docker, id));
    }
    const restarts = info.RestartCount - restartsBefore;
    if (restarts >= this.crashLoopRestarts) {
      throw new RuntimeStepError(
        `start:${workload.name}`,
        `keeps crashing (restarted ${restarts} times, last exit code ${State.ExitCode})${await logTail(this.docker, id)}`,
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
      const result = await execIn(this.docker.getContainer(id), command, {
        timeoutMs: healthcheck.timeoutMs,
        maxOutputBytes: PROBE_OUTPUT_BYTES,
      });
      return result.exitCode === 0;
    } catch {
      return false;
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

  /** Makes the volume if missing; true when it did (so the volume is empty). */
  private async ensureVolume(plan: EnvPlan, volume: string): Promise<boolean> {
    const name = volumeName(plan.envId, volume);
    const found = await this.docker.getVolume(name).inspect().catch(ignore(404));
    const image = found?.Labels?.[IMAGE_VOLUME_LABEL];
    if (image !== undefined)
      throw new RuntimeStepError(
        `volume:${volume}`,
        `volume "${volume}" would be ${name}, which stands for the VOLUME ${image} of an image: rename it`,
      );
    if (found) return false;
    // Creating a volume that exists is a no-op in the Engine API: one made meanwhile is kept.
    await this.docker.createVolume({ Name: name, Labels: envLabels(this.instance, plan) });
    return true;
  }

  private listContainers(envId?: string, workload?: string): Promise<ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: labelFilter(this.instance, envId, workload) });
  }

  private async removeContainer(id: string): Promise<void> {
    // Ephemeral by definition: kill, no grace period. `v` also drops anonymous volumes of the image.
    await this.docker.getContainer(id).remove({ force: true, v: true }).catch(ignore(404, 409));
  }

  async observe(envId: string): Promise<ObservedEnv> {
    // A snapshot's helper is no workload of the environment.
    const containers = (await this.listContainers(envId)).filter((c) => !c.Labels[SNAPSHOT_LABEL]);
    const networks = await this.docker.listNetworks({ filters: labelFilter(this.instance, envId) });
    // A container held at its start gate has not run its workload yet: it is reported created.
    const held = new Set<string>();
    for (const c of containers) {
      const name = c.Labels[LABELS.workload] ?? '';
      if (c.Labels[GATED_LABEL] === 'true' && c.State === 'running' && !held.has(name))
        if ((await this.releases?.releasedAt(envId, name)) === null) held.add(name);
    }
    const workloads: ObservedWorkload[] = containers.map((c) => ({
      name: c.Labels[LABELS.workload] ?? c.Names[0] ?? c.Id,
      kind: c.Labels['mayfly.kind'] === 'job' ? 'job' : 'service',
      state: held.has(c.Labels[LABELS.workload] ?? '') ? 'created' : c.State,
      health: healthOf(c),
      exitCode: c.State === 'exited' ? exitCodeOf(c) : null,
    }));
    return { envId, workloads, exists: containers.length > 0 || networks.length > 0 };
  }

  async stop(envId: string): Promise<void> {
    if (!envId) throw new Error('stop needs an environment id'); // an empty id would match every environment
    const running = (await this.listContainers(envId)).filter(
      (c) => c.State === 'running' || c.State === 'restarting',
    );
    // Each with its own stop signal and grace period (set on the container when it was made).
    await eachLimited(running, START_CONCURRENCY, new AbortController().signal, (c) =>
      this.docker.getContainer(c.Id).stop().catch(ignore(304, 404)),
    );
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
      if (left.length === 0) {
        await this.releases?.forget(envId);
        this.earlyStarts.delete(envId);
        for (const key of this.released) if (key.startsWith(`${envId}/`)) this.released.delete(key);
        return;
      }
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
    // Snapshots (and the helpers that fill them) are no environment's: see `snapshots`.
    const environment = (labels: Record<string, string> | null | undefined) => !labels?.[SNAPSHOT_LABEL];
    return [
      ...containers.filter((c) => environment(c.Labels)).map((c) => ref('container', c.Id, c.Labels)),
      ...networks.map((n) => ref('network', n.Id, n.Labels)),
      ...(volumes.Volumes ?? [])
        .filter((v) => environment(v.Labels))
        .map((v) => ref('volume', v.Name, v.Labels)),
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
    return openLogStream(this.docker, container.id, options);
  }

  async exec(
    envId: string,
    workload: string,
    command: string[],
    options: ExecOptions = {},
  ): Promise<ExecResult> {
    return execIn(await this.containerOf(envId, workload, true), command, options);
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

/**
 * The image's `VOLUME`s that no mount of the workload covers. Docker would give each an
 * anonymous volume that dies with the container, so a repair (which recreates it) would lose
 * the data; they get named volumes instead, as Compose keeps them across recreation.
 */
function uncoveredImageVolumes(workload: WorkloadPlan, image: Docker.ImageInspectInfo): string[] {
  const declared = Object.keys(image.Config?.Volumes ?? {});
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

/** The value of a settled promise, or undefined while it is pending. */
async function settledValue<T>(promise: Promise<T>): Promise<T | undefined> {
  const pending = Symbol('pending');
  const winner = await Promise.race([promise, Promise.resolve(pending)]);
  return winner === pending ? undefined : (winner as T);
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

/** A container stopped while it was waited for: reported to the caller, who decides what it means. */
class ContainerExited extends Error {
  constructor(
    readonly exitCode: number,
    readonly output: string,
  ) {
    super(`exited with code ${exitCode}`);
  }
}
