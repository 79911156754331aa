/**
 * DockerRuntime: the Runtime interface over the Docker Engine API (dockerode). One network per
 * environment, named volumes, containers with health checks and limits, labels on everything.
 * dockerode never leaks past this folder.
 */
import net from 'node:net';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import tarFs from 'tar-fs';
import {
  type ApplyOptions,
  type BuildPlan,
  type Endpoint,
  type EnvPlan,
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
  type WorkloadPlan,
} from '../runtime.js';
import { firstFileFromTar, singleFileTar } from './archive.js';
import { containerCreateOptions } from './container-spec.js';
import { envLabels, labelFilter, networkName, volumeName } from './names.js';
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
}

type ContainerInfo = Docker.ContainerInfo;

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
  /** Network creation is serialised in this process, so two environments never pick one subnet. */
  private networkQueue: Promise<unknown> = Promise.resolve();

  constructor(options: DockerRuntimeOptions = {}) {
    this.docker =
      options.docker ?? new Docker(options.socketPath ? { socketPath: options.socketPath } : undefined);
    this.pollMs = options.pollMs ?? 150;
    this.workloadTimeoutMs = options.workloadTimeoutMs ?? 300_000;
    this.subnetPool = options.subnetPool ?? { base: '10.213.0.0/16', size: 24 };
    this.instance = options.instance ?? 'default';
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

  async buildImage(tag: string, build: BuildPlan, onLog?: (line: string) => void): Promise<void> {
    const context = tarFs.pack(build.context) as unknown as NodeJS.ReadableStream;
    const stream = await this.docker.buildImage(context, {
      t: tag,
      dockerfile: build.dockerfile,
      buildargs: build.args,
      target: build.target,
      // Not managed-by: containers inherit image labels, and only ours may carry that one.
      labels: { 'mayfly.built-by': 'mayfly' },
      rm: true,
      forcerm: true,
    });
    const tail: string[] = [];
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null, output: { error?: string; errorDetail?: { message?: string } }[]) => {
          const failed = err?.message ?? output.find((o) => o.error)?.error;
          if (failed) reject(new Error(`${failed.trim()}\n${tail.join('')}`.trim()));
          else resolve();
        },
        (event: { stream?: string }) => {
          if (!event.stream) return;
          tail.push(event.stream);
          if (tail.length > 20) tail.shift();
          onLog?.(event.stream.trimEnd());
        },
      );
    });
  }

  async apply(plan: EnvPlan, options: ApplyOptions = {}): Promise<void> {
    const progress = options.onProgress ?? (() => {});
    await this.ensureNetwork(plan);
    await Promise.all(plan.volumes.map((v) => this.ensureVolume(plan, v.name)));

    const existing = await this.listContainers(plan.envId);
    const planned = new Set(plan.workloads.map((w) => w.name));
    // Workloads no longer in the plan go first, so their names and aliases are free.
    await Promise.all(
      existing
        .filter((c) => !planned.has(c.Labels[LABELS.workload] ?? ''))
        .map((c) => this.removeContainer(c.Id)),
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
        const prepared = await this.prepareWorkload(plan, workload, existing, progress);
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

  /** Keeps matching containers, removes stale ones and creates what is missing, without starting it. */
  private async prepareWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    existing: ContainerInfo[],
    progress: NonNullable<ApplyOptions['onProgress']>,
  ): Promise<{ reused: boolean; ids: string[] }> {
    const mine = existing.filter((c) => c.Labels[LABELS.workload] === workload.name);
    const reusable = mine.filter(
      (c) =>
        c.Labels[LABELS.specHash] === workload.specHash &&
        (workload.kind === 'job' ? c.State === 'exited' && exitCodeOf(c) === 0 : c.State === 'running'),
    );
    const replicas = workload.kind === 'job' ? 1 : workload.replicas;
    if (reusable.length === replicas && mine.length === replicas) {
      return { reused: true, ids: reusable.map((c) => c.Id) };
    }
    await Promise.all(mine.map((c) => this.removeContainer(c.Id)));
    await this.ensureImage(workload, progress);
    progress({ type: 'workload', workload: workload.name, phase: 'creating' });
    const ids: string[] = [];
    for (let replica = 1; replica <= replicas; replica++) {
      const container = await this.docker
        .createContainer(containerCreateOptions(this.instance, plan, workload, replica))
        .catch((err: Error) => {
          throw new RuntimeStepError(`create:${workload.name}`, err.message);
        });
      ids.push(container.id);
    }
    return { reused: false, ids };
  }

  private async startWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    prepared: { reused: boolean; ids: string[] },
    stage: WorkloadStages,
    progress: NonNullable<ApplyOptions['onProgress']>,
    signal: AbortSignal,
  ): Promise<void> {
    const { ids } = prepared;
    if (prepared.reused) {
      progress({ type: 'workload', workload: workload.name, phase: 'reused' });
      stage.mark('service_started');
      if (workload.kind === 'job') {
        stage.mark('service_completed_successfully');
        return;
      }
      await this.waitHealthy(workload, ids, signal);
      stage.mark('service_healthy');
      return;
    }
    await Promise.all(
      ids.map((id) =>
        this.docker
          .getContainer(id)
          .start()
          .catch((err: Error) => {
            throw new RuntimeStepError(`start:${workload.name}`, err.message);
          }),
      ),
    );
    progress({ type: 'workload', workload: workload.name, phase: 'started' });
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
    await this.waitHealthy(workload, ids, signal);
    if (workload.healthcheck) progress({ type: 'workload', workload: workload.name, phase: 'healthy' });
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
      const info = await this.docker.getContainer(id).inspect();
      const ip = info.NetworkSettings.Networks[networkName(plan.envId)]?.IPAddress;
      if (!ip) continue;
      for (const port of ports) {
        while (!(await canConnect(ip, port.container))) {
          await this.throwIfExited(workload, id, (await this.docker.getContainer(id).inspect()).State);
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

  private async ensureImage(workload: WorkloadPlan, progress: NonNullable<ApplyOptions['onProgress']>) {
    if (await this.hasImage(workload.image)) return;
    if (workload.build) {
      throw new RuntimeStepError(`build:${workload.name}`, `image ${workload.image} has not been built`);
    }
    progress({ type: 'image', workload: workload.name, message: `pulling ${workload.image}` });
    try {
      const stream = await this.docker.pull(workload.image);
      await new Promise<void>((resolve, reject) =>
        this.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())),
      );
    } catch (err) {
      throw new RuntimeStepError(
        `image:${workload.name}`,
        `image ${workload.image} is not present and could not be pulled: ${(err as Error).message}`,
      );
    }
  }

  /** Resolves once every container of a service is running, and healthy when it has a health check. */
  private async waitHealthy(workload: WorkloadPlan, ids: string[], signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.workloadTimeoutMs;
    const pending = new Set(ids);
    const probes = new Map<string, Promise<boolean>>();
    while (pending.size > 0) {
      for (const id of [...pending]) {
        // Docker runs the first check one interval after start (its start_interval needs API 1.44).
        // Running the same check ourselves meanwhile sees readiness sooner; Docker's verdict still
        // decides failure.
        const probe = probes.get(id);
        if (workload.healthcheck && !probe) probes.set(id, this.probeHealth(id, workload.healthcheck));
        if (probe && (await settledValue(probe)) !== undefined) {
          probes.delete(id);
          if (await probe) {
            pending.delete(id);
            continue;
          }
        }
        const info = await this.docker.getContainer(id).inspect();
        const { Health } = info.State;
        await this.throwIfExited(workload, id, info.State);
        // No check in the template: the image's own HEALTHCHECK, if it has one, still counts.
        if ((!workload.healthcheck && !Health) || Health?.Status === 'healthy') pending.delete(id);
        else if (Health?.Status === 'unhealthy') {
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

  /** A service whose container stopped while we waited for it failed to start: say so, with its last logs. */
  private async throwIfExited(
    workload: WorkloadPlan,
    id: string,
    state: { Status: string; ExitCode: number },
  ): Promise<void> {
    if (state.Status !== 'exited' && state.Status !== 'dead') return;
    throw new RuntimeStepError(
      `start:${workload.name}`,
      `exited with code ${state.ExitCode} while starting${await this.logTail(id)}`,
    );
  }

  /** Runs the health check's test once inside the container; true when it exits 0. */
  private async probeHealth(
    id: string,
    healthcheck: NonNullable<WorkloadPlan['healthcheck']>,
  ): Promise<boolean> {
    const [kind, ...rest] = healthcheck.test;
    const command = kind === 'CMD-SHELL' ? ['/bin/sh', '-c', rest.join(' ')] : kind === 'CMD' ? rest : [];
    if (command.length === 0) return false;
    try {
      const result = await this.execIn(this.docker.getContainer(id), command, {
        timeoutMs: healthcheck.timeoutMs,
      });
      return result.exitCode === 0;
    } catch {
      return false;
    }
  }

  private async waitExit(name: string, id: string, signal: AbortSignal): Promise<number> {
    const deadline = Date.now() + this.workloadTimeoutMs;
    for (;;) {
      const info = await this.docker.getContainer(id).inspect();
      if (info.State.Status === 'exited' || info.State.Status === 'dead') return info.State.ExitCode;
      if (Date.now() > deadline) throw new RuntimeStepError(`job:${name}`, 'did not finish in time');
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  private async logTail(id: string, lines = 10): Promise<string> {
    try {
      const buf = (await this.docker
        .getContainer(id)
        .logs({ stdout: true, stderr: true, tail: lines, follow: false })) as unknown as Buffer;
      const text = demuxBuffer(buf).trim();
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
    const out = new PassThrough();
    const base = {
      stdout: true,
      stderr: true,
      ...(options.tail !== undefined ? { tail: options.tail } : {}),
    };
    if (!options.follow) {
      const buf = (await container.logs({ ...base, follow: false })) as unknown as Buffer;
      out.end(demuxBuffer(buf));
      return out;
    }
    const stream = (await container.logs({ ...base, follow: true })) as unknown as Readable;
    this.docker.modem.demuxStream(stream, out, out);
    stream.on('end', () => out.end());
    stream.on('error', (err) => out.destroy(err));
    const stop = () => (stream as Readable & { destroy(): void }).destroy();
    options.signal?.addEventListener('abort', stop, { once: true });
    out.on('close', stop);
    return out;
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
    const exec = await container.exec({
      Cmd: command,
      AttachStdout: true,
      AttachStderr: true,
      AttachStdin: options.stdin !== undefined,
      Env: options.env ? Object.entries(options.env).map(([k, v]) => `${k}=${v}`) : undefined,
      WorkingDir: options.workingDir,
    });
    const stream = await exec.start({ hijack: true, stdin: options.stdin !== undefined });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const collected = { out: [] as Buffer[], err: [] as Buffer[] };
    stdout.on('data', (d: Buffer) => collected.out.push(d));
    stderr.on('data', (d: Buffer) => collected.err.push(d));
    this.docker.modem.demuxStream(stream, stdout, stderr);
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
      stdout: Buffer.concat(collected.out).toString('utf8'),
      stderr: Buffer.concat(collected.err).toString('utf8'),
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

/** Splits the Engine's multiplexed (non-TTY) log format: 8-byte header, then the payload. */
function demuxBuffer(buf: Buffer): string {
  if (!Buffer.isBuffer(buf)) return String(buf ?? '');
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buf.length) {
    const size = buf.readUInt32BE(offset + 4);
    parts.push(buf.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}
