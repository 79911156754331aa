/**
 * Applying a plan, decided once for every driver: the order of `depends_on` and its three
 * conditions, when a job has succeeded, when a service that stops counts as done (Compose's rule),
 * and what step a failure is named after. A driver only prepares, starts and watches one
 * workload at a time (see {@link Runtime}); a Kubernetes driver gets all of this for free.
 */
import { type DependencyCondition, type EnvPlan, isRestored, type WorkloadPlan } from '../plan/plan.js';
import { seedWorkloads, snapshottingVolumes } from '../plan/seeds.js';
import { orAbort } from './abort.js';
import {
  type ApplyOptions,
  type PreparedWorkload,
  type ProgressEvent,
  type Runtime,
  RuntimeStepError,
  SnapshotGoneError,
} from './runtime.js';

/**
 * A workload whose containers may stop for good without being a failure: a job, or a service
 * whose restart policy would not bring it back after a clean exit (`no`, `on-failure`). Compose
 * treats such a service's exit 0 as done, not as a crash.
 */
export function mayExitCleanly(workload: Pick<WorkloadPlan, 'kind' | 'restart'>): boolean {
  return workload.kind === 'job' || workload.restart === 'no' || workload.restart === 'on-failure';
}

/**
 * Volumes the plan says are clones of snapshots that no longer exist (removed between the
 * decision and the clone). Nothing was cloned into them; `volumes` names them.
 */
export class SnapshotsGoneError extends RuntimeStepError {
  /** The volumes the apply had made empty when it stopped (nothing had run): see `madeBefore`. */
  madeVolumes: string[] = [];

  constructor(
    readonly volumes: string[],
    snapshotName: string,
  ) {
    super(`restore:${volumes[0]}`, `snapshot "${snapshotName}" was removed before it could be cloned`);
    this.name = 'SnapshotsGoneError';
  }
}

/**
 * Converges the platform to `plan` through `runtime`. Idempotent: what already matches is kept,
 * the rest replaced, workloads no longer planned removed. Resolves when every service is started
 * (and healthy if it has a health check, or listening on its HTTP port) or has exited 0 where
 * Compose would not restart it, and every job has exited 0 — in `dependsOn` order, independent
 * workloads in parallel. A job already run with the same spec is never run again.
 * Throws {@link RuntimeStepError} naming the step that failed; aborting `options.signal` stops
 * it within about a second, nothing more created or started.
 */
export async function applyPlan(runtime: Runtime, plan: EnvPlan, options: ApplyOptions = {}): Promise<void> {
  const progress = options.onProgress ?? (() => {});
  const given = options.signal ?? new AbortController().signal;
  given.throwIfAborted();
  const prepared = await runtime.prepareEnvironment(plan, given);
  const madeVolumes = [...prepared.madeVolumes, ...(options.madeBefore ?? [])];
  given.throwIfAborted();
  const skipped = await restoreVolumes(runtime, plan, progress, given).catch((err: unknown) => {
    if (err instanceof SnapshotsGoneError) err.madeVolumes = madeVolumes;
    throw err;
  });

  const failure = new AbortController();
  const signal = AbortSignal.any([given, failure.signal]);
  const stages = new Map(plan.workloads.map((w) => [w.name, new WorkloadStages()]));
  const seed = new SeedHold(plan, stages, progress, options.afterSeed ? madeVolumes : options.noSnapshot);

  const run = async (workload: WorkloadPlan) => {
    const stage = stages.get(workload.name)!;
    const restored = skipped.get(workload.name);
    if (restored) {
      // Its work is in the snapshot: whoever waits for it goes on as if it had just succeeded.
      progress({ type: 'data', message: `${workload.name}: not run: ${restored}` });
      seed.prepared(workload.name, false);
      for (const condition of [
        'service_started',
        'service_healthy',
        'service_completed_successfully',
      ] as const)
        stage.mark(condition);
      return;
    }
    try {
      // Held while the seed's snapshot is taken: not even made before (making a container puts
      // its image's files and its own into empty volumes it mounts). Whether anything is held is
      // known once the seed's jobs are prepared (found done already, nothing is).
      if (seed.holds(workload.name) && (await orAbort(seed.snapshotting, signal)))
        await orAbort(seed.taken, signal);
      // Made (not started) at once, whatever it waits for (held ones once the snapshot is taken):
      // only the start follows depends_on, and making containers takes a good part of the time.
      const prepared = await runtime.prepareWorkload(plan, workload, {
        keepExited: workload.kind === 'job' ? 'any' : mayExitCleanly(workload) ? 'clean' : 'none',
        ...(options.resumeStopped ? { resumeStopped: options.resumeStopped } : {}),
        ...(options.recreateServices && workload.kind === 'service' ? { recreate: true } : {}),
        onProgress: progress,
        signal,
      });
      seed.prepared(workload.name, prepared.state !== 'exited');
      for (const dep of workload.dependsOn) {
        const depStage = stages.get(dep.name);
        if (!depStage)
          throw new RuntimeStepError(`start:${workload.name}`, `depends on unknown "${dep.name}"`);
        await orAbort(depStage.reached(dep.condition), signal);
      }
      signal.throwIfAborted();
      await bringUp(runtime, plan, workload, prepared, stage, progress, signal);
    } catch (err) {
      stage.fail(err);
      failure.abort(err);
      throw err;
    }
  };
  const snapshot = async () => {
    try {
      await seed.snapshotAfterSeed(signal, options.afterSeed);
    } catch (err) {
      failure.abort(err);
      throw err;
    }
  };
  const results = await Promise.allSettled([...plan.workloads.map(run), snapshot()]);
  given.throwIfAborted();
  const firstStepError = results.find(
    (r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason instanceof RuntimeStepError,
  );
  const firstError =
    firstStepError ?? results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (firstError) throw firstError.reason;
}

async function bringUp(
  runtime: Runtime,
  plan: EnvPlan,
  workload: WorkloadPlan,
  prepared: PreparedWorkload,
  stage: WorkloadStages,
  progress: (event: ProgressEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const phase = (p: Extract<ProgressEvent, { type: 'workload' }>['phase']) =>
    progress({ type: 'workload', workload: workload.name, phase: p });
  if (prepared.state === 'created') {
    await runtime.startWorkload(plan, workload, signal);
    phase('started');
  } else {
    // Started by an earlier apply (a control plane restarted meanwhile): adopted, never started twice.
    phase('reused');
  }
  stage.mark('service_started');

  if (workload.kind === 'job') {
    const ended = prepared.state === 'exited' ? prepared : await runtime.waitForExit(plan, workload, signal);
    if (ended.exitCode !== 0) {
      throw new RuntimeStepError(`job:${workload.name}`, `exited with code ${ended.exitCode}${ended.output}`);
    }
    if (prepared.state !== 'exited') phase('completed');
    stage.mark('service_completed_successfully');
    return;
  }

  const outcome =
    prepared.state === 'exited'
      ? prepared
      : await runtime.waitForReady(plan, workload, { fresh: prepared.state === 'created', signal });
  if (outcome.state === 'exited') {
    if (outcome.exitCode !== 0 || !mayExitCleanly(workload)) {
      throw new RuntimeStepError(
        `start:${workload.name}`,
        `exited with code ${outcome.exitCode} while starting${outcome.output}`,
      );
    }
    // Done, as Compose sees it: whoever waits for it to start, be healthy or complete may go on.
    if (prepared.state !== 'exited') phase('completed');
    stage.mark('service_healthy');
    stage.mark('service_completed_successfully');
    return;
  }
  // A service found running was reported reused: its readiness is checked again, not announced.
  if (prepared.state === 'created') {
    if (outcome.by === 'healthcheck') phase('healthy');
    else if (outcome.by === 'port') phase('listening');
  }
  stage.mark('service_healthy');
}

/**
 * Makes the volumes the plan says are clones of snapshots (see `VolumeOrigin`), all at once.
 * Returns the seed jobs not to run, each with why: their work is in the snapshots.
 * {@link SnapshotsGoneError} naming every volume whose snapshot was gone (the others are done).
 */
async function restoreVolumes(
  runtime: Runtime,
  plan: EnvPlan,
  progress: (event: ProgressEvent) => void,
  signal: AbortSignal,
): Promise<Map<string, string>> {
  const skipped = new Map<string, string>();
  const gone: { volume: string; snapshotName: string }[] = [];
  const results = await Promise.allSettled(
    plan.volumes.map(async (volume) => {
      const origin = volume.origin;
      if (!origin || !('restored' in origin)) return;
      const { snapshotId, snapshotName } = origin.restored;
      const step = `restore:${volume.name}`;
      if (!runtime.snapshots)
        throw new RuntimeStepError(step, `the ${runtime.name} runtime keeps no snapshots`);
      if (volume.data && 'seededBy' in volume.data)
        skipped.set(volume.data.seededBy, `${volume.name} restored from snapshot ${snapshotName}`);
      try {
        const outcome = await runtime.snapshots.restore(plan, volume.name, snapshotId, signal);
        if (outcome === 'restored')
          progress({ type: 'data', message: `${volume.name}: restored from snapshot ${snapshotName}` });
      } catch (err) {
        if (!(err instanceof SnapshotGoneError)) throw err;
        gone.push({ volume: volume.name, snapshotName });
      }
    }),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  if (gone.length > 0)
    throw new SnapshotsGoneError(
      gone.map((g) => g.volume),
      gone[0]!.snapshotName,
    );
  return skipped;
}

/**
 * While this apply snapshots seeded data (shared with later environments: see plan/seeds.ts),
 * only the seed's workloads run: the rest are made and started once every seed job has succeeded
 * and the snapshots are taken. A volume is snapshotted only when this apply made it (empty) and
 * ran its job — with all the other volumes that job seeds — so the data is the seed's alone: a
 * job run again on data that lived (a job remade on an update, a repair, a wake) never is.
 * Whether anything is snapshotted is known once those jobs are prepared: a job found done
 * already is not run again, so nothing is snapshotted and nothing held.
 */
class SeedHold {
  /** Volumes to be snapshotted by the job that seeds them, for the jobs that may be snapshotted. */
  private readonly snapshottingJobs = new Map<string, string[]>();
  /** The same for jobs whose volumes were to be snapshotted but cannot be here, with why. */
  private readonly notKept = new Map<string, { volumes: string[]; why: string }>();
  /** Of those, the jobs this apply runs. */
  private readonly running = new Set<string>();
  private readonly toPrepare: Set<string>;
  private readonly seed: Set<string>;
  private readonly seedJobs: string[];
  private readonly held: string[];
  private decide!: (snapshotting: boolean) => void;
  private open!: () => void;
  /** Whether the workloads outside the seed are held: resolves once the snapshotting jobs are prepared. */
  readonly snapshotting = new Promise<boolean>((resolve) => {
    this.decide = resolve;
  });
  /** Resolves once the snapshots are taken, or at once when none are. */
  readonly taken = new Promise<void>((resolve) => {
    this.open = resolve;
  });

  constructor(
    plan: EnvPlan,
    private readonly stages: Map<string, WorkloadStages>,
    private readonly progress: (event: ProgressEvent) => void,
    /** Volumes this apply made empty; or why nothing is snapshotted (none: nothing said). */
    madeVolumes: string[] | string | undefined,
  ) {
    this.seed = seedWorkloads(plan);
    const made = new Set(Array.isArray(madeVolumes) ? madeVolumes : []);
    const restored = new Set(plan.volumes.filter(isRestored).map((v) => v.name));
    // Every volume the seed mounts: one that held data before would carry it into the snapshot.
    const read = plan.workloads
      .filter((w) => this.seed.has(w.name))
      .flatMap((w) => w.mounts.flatMap((m) => (m.type === 'volume' ? [m.source] : [])));
    const lived = read.find((v) => !made.has(v) && !restored.has(v));
    const byJob = new Map<string, string[]>();
    for (const { volume, job } of snapshottingVolumes(plan))
      byJob.set(job, [...(byJob.get(job) ?? []), volume.name]);
    for (const [job, volumes] of byJob) {
      if (!stages.has(job) || madeVolumes === undefined) continue;
      const why =
        typeof madeVolumes === 'string'
          ? madeVolumes
          : lived !== undefined
            ? `volume ${lived} was there before this bring-up`
            : undefined;
      if (why) this.notKept.set(job, { volumes, why });
      else this.snapshottingJobs.set(job, volumes);
    }
    this.toPrepare = new Set(this.snapshottingJobs.keys());
    this.seedJobs = [...this.seed].filter((name) =>
      plan.workloads.some((w) => w.name === name && w.kind === 'job'),
    );
    this.held = plan.workloads
      .filter((w) => !this.seed.has(w.name))
      .map((w) => w.name)
      .sort();
    if (this.toPrepare.size === 0) this.decide(false);
  }

  /** Whether `workload` is outside the seed, so held while a snapshot is taken. */
  holds(workload: string): boolean {
    return this.snapshottingJobs.size > 0 && !this.seed.has(workload);
  }

  /** `workload` is prepared: `runs` when this apply runs it (not found done, not restored). */
  prepared(workload: string, runs: boolean): void {
    const lost = this.notKept.get(workload);
    if (lost && runs)
      this.progress({
        type: 'data',
        message: `${workload}: seeds ${lost.volumes.join(', ')}; no snapshot kept: ${lost.why}`,
      });
    if (!this.toPrepare.delete(workload)) return;
    if (runs) this.running.add(workload);
    if (this.toPrepare.size > 0) return;
    const snapshotting = this.running.size > 0;
    if (snapshotting && this.held.length > 0)
      this.progress({
        type: 'data',
        message: `${this.held.join(', ')}: held until the seed's snapshot is taken (only the seed runs before it)`,
      });
    this.decide(snapshotting);
  }

  /**
   * Once every seed job has succeeded (all of them: one may write what another seeds), takes the
   * snapshots of the volumes of the jobs this apply ran through `afterSeed`, then lets the held
   * workloads be made and start.
   */
  async snapshotAfterSeed(signal: AbortSignal, afterSeed: ApplyOptions['afterSeed']): Promise<void> {
    if (await orAbort(this.snapshotting, signal)) {
      for (const job of this.seedJobs)
        await orAbort(this.stages.get(job)!.reached('service_completed_successfully'), signal);
      const volumes = [...this.running].flatMap((job) => this.snapshottingJobs.get(job) ?? []);
      await afterSeed?.(volumes.sort(), signal);
    }
    this.open();
  }
}

/** The three gates of `depends_on`, as promises other workloads can wait for. */
class WorkloadStages {
  private readonly gates = new Map<
    DependencyCondition,
    { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void }
  >();

  constructor() {
    for (const name of ['service_started', 'service_healthy', 'service_completed_successfully'] as const) {
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

  reached(condition: DependencyCondition): Promise<void> {
    return this.gates.get(condition)!.promise;
  }

  mark(condition: DependencyCondition): void {
    this.gates.get(condition)?.resolve();
  }

  fail(err: unknown): void {
    for (const gate of this.gates.values()) gate.reject(err);
  }
}
