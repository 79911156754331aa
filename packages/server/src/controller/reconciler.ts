/**
 * The level-triggered reconcile loop: reads what the store wants, converges the runtime to it,
 * records every transition as an event. Safe to kill at any point: every step is idempotent and
 * the next pass (in this process or the next) picks up from the recorded state.
 *
 * Bounded: a failing attempt is retried with backoff, recorded in the store (`attempts`,
 * `retryAt`), so replicas and restarts share it; after `maxAttempts` the environment is `failed`
 * with the step and the reason. Fenced: a replica works on an environment only while it holds the
 * lease — its writes are conditional on it, and it stops before the lease could have expired.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DEFAULT_TEMPLATES, type EnvState, type Failure } from '@mayfly/contract';
import type { ImageBuilder } from '../images/image-builder.js';
import { needsBuild, resolveBuilds } from '../images/resolve-builds.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import { applyPlan, mayExitCleanly } from '../runtime/apply-plan.js';
import {
  type ApplyOptions,
  type ObservedWorkload,
  type ProgressEvent,
  type Runtime,
  RuntimeStepError,
  RuntimeUnavailableError,
} from '../runtime/runtime.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import { checkoutCommit, GitSourceError } from '../sources/git-checkout.js';
import type { Workspaces } from '../sources/workspaces.js';
import { type EnvironmentRecord, LeaseLostError, type Store } from '../store/store.js';
import { TemplateError } from '../template/index.js';
import { REDEPLOY_MESSAGE } from './environment-service.js';
import { InvalidRequestError } from './errors.js';
import { collectGarbage } from './garbage-collector.js';
import { collectImages } from './image-collector.js';
import { readKeptLogs } from './kept-logs.js';
import { checkBindSources, type HostPathPolicy } from './plan-policy.js';
import { type PlanTemplateDeps, planTemplate, readTemplateFile } from './plan-template.js';
import { applyRetention } from './retention.js';

export interface ReconcilerOptions {
  store: Store;
  runtime: Runtime;
  /** Builds the images of `build:` workloads (the Docker Engine's builder, a registry builder…). */
  images: ImageBuilder;
  workspaces: Workspaces;
  policy: HostPathPolicy;
  /** What planning a template checked out of git needs (previews): URLs and default limits. */
  planner: PlanTemplateDeps;
  /** Checks a commit out (the real git in production). */
  checkout?: typeof checkoutCommit;
  logger: Logger;
  metrics: Metrics;
  /** Lease owner name of this replica. */
  owner: string;
  /** Seeded volumes snapshotted and cloned (see `snapshots/`); without it every seed job runs. */
  snapshots?: SnapshotService;
  leaseMs: number;
  intervalMs: number;
  gcIntervalMs: number;
  /** Environments worked on at once; the rest wait for the next pass. */
  concurrency?: number;
  /** Failed attempts at a step before the environment is `failed`; default 5. */
  maxAttempts?: number;
  /** How long a bring-up waits for an unreachable runtime before it fails; default 10 minutes. */
  runtimeUnavailableFailAfterMs?: number;
  /** How often in-flight work re-reads the desired state (a destroy sent to another replica); default 1 s. */
  desiredPollMs?: number;
  /** Lines of each workload's output kept in the store when an environment fails; default 200. */
  keptLogLines?: number;
  /** Mayfly-built images may take this much disk; least recently used ones go first. */
  imageBudgetBytes?: number;
  /** Built images used more recently than this are never collected. */
  imageGcGraceMs?: number;
  /** Destroyed environments (and their timelines) are deleted from the store after this long. */
  destroyedRetentionMs?: number;
  /** Events kept per environment; older ones are pruned. */
  maxEventsPerEnv?: number;
  /** One bring-up attempt (builds included) may take this long before it fails; default 30 minutes. */
  bringUpTimeoutMs?: number;
  /** Called once an environment is verified gone (the gateway forgets its routes). */
  onDestroyed?: (env: EnvironmentRecord) => void;
  /** Called after an environment became ready, failed, or was updated (previews report it). */
  onSettled?: (env: EnvironmentRecord) => void;
}

const BRINGING_UP: EnvState[] = ['pending', 'building', 'creating'];
const MAX_BACKOFF_MS = 60_000;
/** Repairs counted to tell a crash-looping service from one that stopped once. */
const REPAIR_WINDOW_MS = 10 * 60_000;
/** After teardown has failed `maxAttempts` times it is retried this rarely (by this loop and by GC). */
const SLOW_TEARDOWN_RETRY_MS = 5 * 60_000;

/** The event written just before a sleep stops an environment's containers. */
const SLEEP_STARTED = 'going to sleep: stopping its containers';

/** A ready environment asked to move to a newer revision that has not been made, nor failed. */
function updateWanted(env: EnvironmentRecord): boolean {
  return env.revision > env.plannedRevision && env.revision > env.failedRevision;
}

/** A failure's reason is shown and stored: at most this much of it (its end, where the cause is). */
export const FAILURE_REASON_MAX_CHARS = 8 * 1024;

/** NUL-free (container output may hold some) and at most {@link FAILURE_REASON_MAX_CHARS} long. */
function boundReason(reason: string): string {
  const clean = reason.replaceAll('\0', '\uFFFD');
  return clean.length <= FAILURE_REASON_MAX_CHARS ? clean : `…${clean.slice(-FAILURE_REASON_MAX_CHARS)}`;
}

/** A progress event as a line of the timeline. */
function progressText(e: ProgressEvent): string {
  if (e.type === 'data') return e.message;
  return e.type === 'image' ? `${e.workload}: ${e.message}` : `${e.workload}: ${e.phase}`;
}

/**
 * Progress events of one bring-up, written in order one at a time. The driver reports progress
 * synchronously and as fast as it likes; past a bound, lines are counted and dropped instead of
 * queueing inserts ahead of everyone else's queries.
 */
class ProgressLog {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private dropped = 0;
  private static readonly MAX_PENDING = 100;

  constructor(
    private readonly store: Store,
    private readonly envId: string,
  ) {}

  add(message: string): void {
    if (this.pending >= ProgressLog.MAX_PENDING) {
      this.dropped++;
      return;
    }
    this.pending++;
    const dropped = this.dropped;
    this.dropped = 0;
    this.chain = this.chain.then(async () => {
      const text = dropped > 0 ? `(${dropped} progress lines dropped) ${message}` : message;
      await this.store.events
        .append({ envId: this.envId, type: 'progress', state: null, message: text.slice(0, 1_000) })
        .catch(() => {});
      this.pending--;
    });
  }

  /** Resolves once every accepted line is written. */
  flush(): Promise<void> {
    return this.chain;
  }
}

/** Work was stopped on purpose: the user changed their mind, or the lease can no longer be trusted. */
class StopWork extends Error {
  constructor(readonly why: 'no-longer-wanted' | 'lease-lost') {
    super(why);
    this.name = 'StopWork';
  }
}

/** How one reconcile of one environment ended: progress, someone else's lease, or an error. */
type Outcome = 'done' | 'busy' | 'error';

export class Reconciler {
  private readonly inFlight = new Map<
    string,
    { done: Promise<void>; abort: AbortController; bringUp: boolean }
  >();
  private timer: NodeJS.Timeout | null = null;
  private gcTimer: NodeJS.Timeout | null = null;
  private passRunning: Promise<void> | null = null;
  private passAgain = false;
  private stopped = true;

  constructor(private readonly o: ReconcilerOptions) {}

  private get maxAttempts(): number {
    return this.o.maxAttempts ?? 5;
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.o.intervalMs);
    this.gcTimer = setInterval(() => void this.gc(), this.o.gcIntervalMs);
    void this.gc().finally(() => this.kick());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.gcTimer) clearInterval(this.gcTimer);
    for (const { abort } of this.inFlight.values()) abort.abort(new Error('control plane stopping'));
    await this.passRunning;
    await Promise.allSettled([...this.inFlight.values()].map((f) => f.done));
  }

  /** Runs a pass now (or right after the one running). */
  kick(): void {
    if (this.stopped) return;
    if (this.passRunning) {
      this.passAgain = true;
      return;
    }
    this.passRunning = this.pass()
      .catch((err) => {
        this.o.metrics.reconcileErrors.inc();
        this.o.logger.error({ err }, 'reconcile pass failed');
      })
      .finally(() => {
        this.passRunning = null;
        if (this.passAgain) {
          this.passAgain = false;
          this.kick();
        }
      });
  }

  /** A user changed what they want: stop work that no longer applies, and act now. */
  changed(envId: string): void {
    this.inFlight.get(envId)?.abort.abort(new StopWork('no-longer-wanted'));
    this.kick();
  }

  /** Resolves when no environment is being worked on (for tests and orderly shutdown). */
  async idle(): Promise<void> {
    while (this.passRunning || this.inFlight.size > 0) {
      await this.passRunning;
      await Promise.allSettled([...this.inFlight.values()].map((f) => f.done));
    }
  }

  private async pass(): Promise<void> {
    const envs = await this.o.store.environments.listNeedingWork(new Date());
    const limit = this.o.concurrency ?? 8;
    for (const env of envs) {
      if (this.inFlight.has(env.id)) continue;
      // Bring-ups share the slots; a teardown never waits behind them (eight builds that never
      // end must not keep a destroy from running).
      const tearingDown =
        env.desired === 'absent' || (env.expiresAt !== null && env.expiresAt.getTime() <= Date.now());
      if (!tearingDown && this.bringUpsInFlight() >= limit) continue;
      const abort = new AbortController();
      const done = this.reconcile(env.id, abort.signal).then((outcome) => {
        this.inFlight.delete(env.id);
        // Only progress earns an immediate next pass; failures wait for their recorded backoff.
        if (outcome === 'done' && !this.stopped) this.kick();
      });
      this.inFlight.set(env.id, { done, abort, bringUp: !tearingDown });
    }
  }

  /**
   * Runs `work` on the environment as this replica's reconciliation would: with its work lease
   * (renewed while it runs; a destroy asked meanwhile aborts it) and with no other work of this
   * process on it, so nothing brings it up, updates, repairs or sleeps it meanwhile (a snapshot
   * made by hand stops its writers). `busy` when other work has it, here or on another replica.
   */
  async exclusively<T>(envId: string, work: (signal: AbortSignal) => Promise<T>): Promise<T | 'busy'> {
    const { store, owner, leaseMs } = this.o;
    const occupied = this.occupy(envId);
    if (!occupied) return 'busy';
    const { abort, finished } = occupied;
    try {
      const claimSent = performance.now();
      if (!(await store.environments.claim(envId, owner, leaseMs))) return 'busy';
      const lease = new AbortController();
      const guard = this.guardLease(envId, lease, claimSent);
      guard.watchDesired('present');
      try {
        return await work(AbortSignal.any([abort.signal, lease.signal]));
      } finally {
        guard.stop();
        await store.environments.release(envId, owner).catch(() => {});
      }
    } finally {
      finished();
      this.kick();
    }
  }

  /**
   * Marks the environment worked on by this process until `finished` (null: it is already, or
   * the reconciler is stopped). Taken before anything is awaited, so work that checks first
   * (a pass, a drift repair, `exclusively`) skips it — the lease alone would not keep them
   * apart: this replica's own claims succeed while it holds it.
   */
  private occupy(envId: string): { abort: AbortController; finished: () => void } | null {
    if (this.inFlight.has(envId) || this.stopped) return null;
    const abort = new AbortController();
    let resolve!: () => void;
    const done = new Promise<void>((r) => {
      resolve = r;
    });
    this.inFlight.set(envId, { done, abort, bringUp: false });
    return {
      abort,
      finished: () => {
        this.inFlight.delete(envId);
        resolve();
      },
    };
  }

  private bringUpsInFlight(): number {
    let n = 0;
    for (const work of this.inFlight.values()) if (work.bringUp) n++;
    return n;
  }

  private async reconcile(envId: string, signal: AbortSignal): Promise<Outcome> {
    const { store, owner, logger } = this.o;
    const claimSent = performance.now();
    try {
      if (!(await store.environments.claim(envId, owner, this.o.leaseMs))) return 'busy';
    } catch (err) {
      logger.warn({ envId, err }, 'could not claim; will retry');
      return 'error';
    }
    const work = new AbortController();
    const guard = this.guardLease(envId, work, claimSent);
    const aborted = AbortSignal.any([signal, work.signal]);
    let env: EnvironmentRecord | null = null;
    try {
      env = await store.environments.get(envId);
      if (!env) return 'done';
      guard.watchDesired(env.desired);
      if (env.desired === 'present' && env.expiresAt && env.expiresAt.getTime() <= Date.now()) {
        env = await this.update(env, { desired: 'absent', attempts: 0, retryAt: null });
        await store.events.append({ envId, type: 'ttl', state: null, message: 'time to live ran out' });
        guard.watchDesired('absent');
      }
      if (env.desired === 'absent') {
        if (env.state !== 'destroyed') await this.teardown(env, aborted);
      } else if (env.sleep && env.state === 'ready') {
        // Asked while it came up (or woke): it finishes first, then sleeps (a job half-run by a
        // stop would be a failure on the next wake).
        await this.putToSleep(env, aborted);
      } else if (BRINGING_UP.includes(env.state) || (env.state === 'sleeping' && !env.sleep)) {
        await this.bringUp(env, aborted);
      } else if (env.state === 'ready' && updateWanted(env)) {
        await this.updateInPlace(env, aborted);
      }
      return 'done';
    } catch (err) {
      const stop = aborted.reason instanceof StopWork ? aborted.reason : err instanceof StopWork ? err : null;
      if (stop?.why === 'no-longer-wanted' || (signal.aborted && !(signal.reason instanceof StopWork))) {
        return 'done'; // the desired state changed (or this process is stopping): the next pass acts on it
      }
      if (stop?.why === 'lease-lost' || err instanceof LeaseLostError) {
        logger.warn({ envId }, 'lost the work lease; stopped working on it');
        return 'busy';
      }
      if (env)
        await this.attemptFailed(env, err).catch((e) =>
          logger.error({ envId, err: e }, 'could not record a failed attempt'),
        );
      return 'error';
    } finally {
      guard.stop();
      await store.environments.release(envId, owner).catch(() => {});
    }
  }

  /**
   * Keeps the lease while work runs: renews it every third of its length, and aborts the work
   * (a) when a renewal finds another owner, (b) before the lease could have expired without a
   * successful renewal — measured on this process's monotonic clock from the moment the last
   * successful claim was sent, which is never later than the database's start of the lease — and
   * (c) when the desired state read from the store is no longer what the work started for.
   */
  private guardLease(envId: string, work: AbortController, claimSent: number) {
    const { store, owner, leaseMs } = this.o;
    const pollMs = this.o.desiredPollMs ?? 1_000;
    let validUntil = claimSent + leaseMs;
    let lastRenewal = claimSent;
    let desired: 'present' | 'absent' | null = null;
    let busy = false;
    const safety = Math.min(leaseMs / 4, 5_000);
    const tick = async () => {
      if (work.signal.aborted) return;
      // Checked on every tick, whatever the store calls below are doing: one that hangs (a network
      // partition) must not keep this replica working past its lease.
      if (performance.now() >= validUntil - safety) {
        work.abort(new StopWork('lease-lost'));
        return;
      }
      if (busy) return;
      busy = true;
      try {
        if (performance.now() - lastRenewal >= leaseMs / 3) {
          const sent = performance.now();
          try {
            if (await store.environments.claim(envId, owner, leaseMs)) {
              validUntil = sent + leaseMs;
              lastRenewal = sent;
            } else {
              // A false claim can also mean the row is locked for a moment (our own update, on PostgreSQL).
              const env = await store.environments.get(envId);
              if (env && env.leaseOwner !== owner) work.abort(new StopWork('lease-lost'));
            }
          } catch {
            // The store is unreachable for a moment; the check above decides when to give up.
          }
        }
        if (desired !== null) {
          const env = await store.environments.get(envId).catch(() => undefined);
          if (env === null || (env && env.desired !== desired)) work.abort(new StopWork('no-longer-wanted'));
        }
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void tick(), Math.min(pollMs, leaseMs / 6));
    return {
      watchDesired: (value: 'present' | 'absent') => {
        desired = value;
      },
      stop: () => clearInterval(timer),
    };
  }

  /**
   * Records a failed attempt: backoff in the store, an event the user sees, and after too many (or
   * after the runtime has been unreachable too long) the `failed` state with step and reason.
   */
  private async attemptFailed(env: EnvironmentRecord, err: unknown): Promise<void> {
    const { store, logger, metrics } = this.o;
    const fresh = (await store.environments.get(env.id)) ?? env;
    const attempts = fresh.attempts + 1;
    const delayMs = Math.min(1_000 * 2 ** (attempts - 1), MAX_BACKOFF_MS);
    const unavailable = err instanceof RuntimeUnavailableError;
    const step =
      err instanceof RuntimeStepError ? err.step : fresh.desired === 'absent' ? 'destroy' : 'reconcile';
    const reason = err instanceof RuntimeStepError ? err.reason : ((err as Error)?.message ?? String(err));
    if (unavailable) logger.warn({ envId: env.id, err: reason }, 'runtime unavailable');
    else {
      metrics.reconcileErrors.inc();
      logger.error({ envId: env.id, err }, 'reconcile attempt failed');
    }
    const tearingDown = fresh.desired === 'absent';
    // An environment that was up is never failed (and destroyed) because the runtime cannot be
    // reached for a while (a wake, a repair): it waits, with backoff, for the runtime to return.
    const wasReady = unavailable && (await store.events.list(env.id)).some((e) => e.state === 'ready');
    const giveUp = unavailable
      ? !tearingDown &&
        !wasReady &&
        Date.now() - fresh.createdAt.getTime() >= (this.o.runtimeUnavailableFailAfterMs ?? 10 * 60_000)
      : attempts >= this.maxAttempts;
    if (!giveUp) {
      await this.update(fresh, { attempts, retryAt: new Date(Date.now() + delayMs) });
      // The first wait for an unreachable runtime is said once; every other failure each time.
      if (!unavailable || attempts === 1) {
        await this.event(
          env.id,
          unavailable ? 'waiting' : 'error',
          unavailable
            ? `waiting for the runtime: ${reason}`
            : `attempt ${attempts} of ${this.maxAttempts} failed at ${step}: ${reason}; retrying in ${Math.round(delayMs / 1000)} s`,
        );
      }
      return;
    }
    if (tearingDown) {
      // Giving up on a destroy would leak: say it failed, keep trying rarely (GC tries too).
      await this.transition(fresh, 'failed', 'destroy keeps failing', { step: 'destroy', reason });
      await this.update(fresh, { attempts, retryAt: new Date(Date.now() + SLOW_TEARDOWN_RETRY_MS) });
      return;
    }
    await this.fail(fresh, { step: unavailable ? 'runtime' : step, reason });
  }

  private async bringUp(env: EnvironmentRecord, outer: AbortSignal): Promise<void> {
    const { store, runtime } = this.o;
    let plan = env.plan;
    if (!plan && !env.source) throw new Error(`environment ${env.id} has no plan`);
    const events = await store.events.list(env.id);
    // Was it ready once? Then this is a repair: a failure must not throw its data away.
    const wasReady = events.some((e) => e.state === 'ready');
    // Woken from sleep (this attempt or one before it that did not finish): what the sleep
    // stopped is started again as it was; what had exited before it stays done.
    const lastState = events.filter((e) => e.type === 'state').at(-1);
    const sleptAt = events.filter((e) => e.type === 'sleep' && e.message === SLEEP_STARTED).at(-1)?.at;
    const waking =
      sleptAt !== undefined &&
      (env.state === 'sleeping' || (env.state === 'creating' && lastState?.message === 'waking up'));
    // Redeployed (and not ready since): every service is made anew rather than kept running;
    // jobs that ran stay done, volumes stay.
    const redeploying =
      events.findLastIndex((e) => e.type === 'state' && e.message === REDEPLOY_MESSAGE) >
      events.findLastIndex((e) => e.type === 'state' && e.state === 'ready');
    // One attempt may take this long, builds included; a build that never ends fails its step.
    const timeoutMs = this.o.bringUpTimeoutMs ?? 30 * 60_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([outer, deadline]);
    const progress = new ProgressLog(this.o.store, env.id);
    let step = 'build';
    let checkout: string | null = null;
    try {
      await runtime.ping();
      // From git, a new revision is planned here only on a first bring-up (or one after a
      // failure); an environment that was up (waking, repaired) comes back on the plan it had, and
      // moves to the new revision by an update in place, which keeps it if the new one fails.
      // A redeploy stays on the plan it has (after a failed update: the version that runs).
      const replan =
        env.source !== null &&
        env.plannedRevision < env.revision &&
        (!plan || ((env.state === 'pending' || env.state === 'building') && !redeploying));
      // The plan's own commit checked out again when its images are not built yet (a crash).
      const rebuild =
        env.source !== null &&
        !replan &&
        plan !== null &&
        env.plannedRevision === env.revision &&
        (await this.contextNeeded(plan));
      if (replan || rebuild) {
        const revision = env.revision;
        step = 'checkout';
        checkout = await this.checkOut(env, revision, signal);
        if (replan) {
          step = 'template';
          const planned = await this.planCheckout(env, checkout, signal);
          env = await this.update(env, {
            plan: planned.plan,
            plannedRevision: env.revision,
            templateContent: planned.content,
            templateFile: planned.filename,
          });
          plan = planned.plan;
          for (const warning of planned.warnings) await this.event(env.id, 'warning', warning);
        }
        step = 'build';
      }
      if (!plan) throw new Error(`environment ${env.id} has no plan`);
      if (needsBuild(plan)) {
        // Waking: its images were there when it slept (checked below, built again if gone).
        if (env.state !== 'building' && !waking)
          env = await this.transition(env, 'building', 'building images');
        plan = await this.buildImages(env, plan, progress, signal, outer, (building) => {
          step = building;
        });
        env = await this.update(env, { plan });
      }
      signal.throwIfAborted();
      if (checkout) {
        // Built: nothing reads the checkout any more (bind sources and files were copied).
        await rm(checkout, { recursive: true, force: true });
        checkout = null;
      }
      step = 'mounts';
      await checkBindSources(plan, this.o.workspaces.mountsDir(env.id), this.o.policy);
      if (env.state === 'creating') progress.add('resuming: applying the plan again');
      else env = await this.transition(env, 'creating', waking ? 'waking up' : 'creating services');
      step = 'apply';
      // Objects already there (an earlier attempt's, or an older commit's bring-up that failed
      // and a newer one brought up in its place; or this one waking, repaired, redeployed) may
      // run beside a seed: what it makes is then not the seed's alone, so nothing is snapshotted.
      const leftBehind =
        this.o.snapshots !== undefined &&
        plan.volumes.some((v) => v.data) &&
        (await runtime.observe(env.id)).exists;
      if (this.o.snapshots && plan.volumes.some((v) => v.data && !v.origin)) {
        step = 'data';
        plan = await this.o.snapshots.decide(plan, null, (message) => progress.add(message), {
          fork: env.origin?.fromFork === true,
          besideOthers: leftBehind,
        });
        env = await this.update(env, { plan });
      }
      await this.applyWithData(runtime, plan, env, progress, {
        signal,
        ...(waking ? { resumeStopped: { since: new Date(sleptAt.getTime() - 1_000) } } : {}),
        ...(redeploying ? { recreateServices: true } : {}),
        onProgress: (e) => {
          if (e.type === 'workload') step = `${e.phase === 'creating' ? 'create' : 'start'}:${e.workload}`;
          progress.add(progressText(e));
        },
        besideOthers: leftBehind,
        // Kept at once: a crash during the seeding that replaces a clone must not clone again.
        replanned: async (replanned) => {
          plan = replanned;
          env = await this.update(env, { plan });
        },
      });
      signal.throwIfAborted();
      await progress.flush();
      // Becoming ready counts as use: idle policies count from here, not from a long build's start.
      env = await this.transition(env, 'ready', 'ready', undefined, { lastActiveAt: new Date() });
      if (env.attempts > 0) env = await this.update(env, { attempts: 0, retryAt: null });
      this.o.onSettled?.(env);
      // A repair is not a create: only the first time ready counts towards create latency.
      if (!wasReady) {
        this.o.metrics.createSeconds.observe(
          { outcome: 'ready' },
          (Date.now() - env.createdAt.getTime()) / 1000,
        );
      }
    } catch (err) {
      // Stopped from outside (lease lost, destroy, shutdown): leave at once, even if the store
      // does not answer; otherwise the failure's event comes after the progress before it.
      if (outer.aborted) throw err;
      await progress.flush();
      if (deadline.aborted) {
        // Out of time: a step that never ends is a failed step, repair or not.
        await this.fail(env, {
          step,
          reason: `did not finish within ${Math.round(timeoutMs / 60_000)} minutes`,
        });
        return;
      }
      if (!(err instanceof RuntimeStepError) || wasReady) throw err;
      // A newer commit came while this one was being brought up: it is built instead (its
      // push may be the fix), rather than the environment failing on the older one.
      const fresh = await store.environments.get(env.id);
      if (fresh && fresh.revision > fresh.plannedRevision && fresh.desired === 'present') {
        await this.transition(
          fresh,
          'pending',
          `failed at ${err.step}; a newer commit is waiting: building it`,
        );
        return;
      }
      // A step of a first bring-up failed: the template's fault, not worth retrying.
      await this.fail(env, { step: err.step, reason: err.reason });
    } finally {
      if (checkout) await rm(checkout, { recursive: true, force: true }).catch(() => {});
    }
  }

  /**
   * Applies the plan with its seeded data: snapshots taken after the seed (`afterSeed`), and a
   * volume whose snapshot was removed between the decision and the clone seeded by its job
   * instead (the plan changed so, given to `replanned` before it is applied again).
   */
  private async applyWithData(
    runtime: Runtime,
    plan: EnvPlan,
    env: EnvironmentRecord,
    progress: ProgressLog,
    options: Omit<ApplyOptions, 'afterSeed'> & {
      replanned: (plan: EnvPlan) => Promise<void>;
      besideOthers: boolean;
    },
  ): Promise<void> {
    const report = (message: string) => progress.add(message);
    if (!this.o.snapshots) {
      const { replanned: _, besideOthers: __, ...rest } = options;
      await applyPlan(runtime, plan, rest);
      return;
    }
    await this.o.snapshots.apply(runtime, plan, env, report, options);
  }

  /** Sleep: every container stopped, nothing removed; the next request (or `wake`) starts them again. */
  private async putToSleep(env: EnvironmentRecord, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    // Before the stop: what exits from now on was stopped by the sleep, and a wake resumes it.
    await this.o.store.events.append({ envId: env.id, type: 'sleep', state: null, message: SLEEP_STARTED });
    await this.o.runtime.stop(env.id);
    env = await this.transition(env, 'sleeping', 'asleep: containers stopped, volumes kept');
    this.o.onSettled?.(env);
  }

  /** True when some image of the plan must be built (not built yet, or gone since): the build context is needed. */
  private async contextNeeded(plan: EnvPlan): Promise<boolean> {
    for (const w of plan.workloads) {
      if (w.image.build && (!w.image.ref || !(await this.o.images.hasImage(w.image.ref)))) return true;
    }
    return false;
  }

  /**
   * Builds (or finds) the images of a plan, the builds' progress in the timeline and their output
   * kept; `onStep` learns which build runs, so a failure names it.
   */
  private buildImages(
    env: EnvironmentRecord,
    plan: EnvPlan,
    progress: ProgressLog,
    signal: AbortSignal,
    outer: AbortSignal,
    onStep: (step: string) => void,
  ): Promise<EnvPlan> {
    return resolveBuilds(plan, this.o.images, {
      signal,
      onProgress: (e) => {
        if (e.status === 'building') onStep(`build:${e.workload}`);
        progress.add(
          e.status === 'step' ? `${e.workload}: ${e.step}` : `${e.workload}: image ${e.status} (${e.image})`,
        );
      },
      onImageUsed: (image) => this.o.store.images.touch(image, env.project),
      onBuildOutput: this.keepBuildOutput(env.id, outer),
    });
  }

  /** Checks the environment's commit out into a fresh folder of its workspace (step `checkout`). */
  private async checkOut(env: EnvironmentRecord, revision: number, signal: AbortSignal): Promise<string> {
    const source = env.source!;
    const dir = await this.o.workspaces.prepareCheckout(env.id, revision);
    const project = await this.o.store.projects.get(env.project);
    try {
      await (this.o.checkout ?? checkoutCommit)({
        repoUrl: source.repoUrl,
        commit: source.commit,
        ...(source.ref ? { ref: source.ref } : {}),
        dir,
        ...(project?.forgeToken ? { token: project.forgeToken } : {}),
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw err instanceof GitSourceError ? new RuntimeStepError('checkout', err.message) : err;
    }
    return dir;
  }

  /** Plans the template of a checkout (step `template`): a bad template fails that step with its issues. */
  private async planCheckout(env: EnvironmentRecord, dir: string, signal: AbortSignal) {
    const source = env.source!;
    const filename =
      source.templateFile ?? DEFAULT_TEMPLATES.find((name) => existsSync(path.join(dir, name)));
    if (!filename) {
      throw new RuntimeStepError(
        'template',
        `commit ${source.commit.slice(0, 12)} has none of ${DEFAULT_TEMPLATES.join(', ')} at the top of the repository: name the template with the project's --template`,
      );
    }
    try {
      const content = await readTemplateFile(dir, filename);
      signal.throwIfAborted();
      const planned = await planTemplate(this.o.planner, {
        envId: env.id,
        project: env.project,
        filename,
        content,
        sourceDir: dir,
        inputs: env.inputs,
        name: env.name,
      });
      const warnings = planned.template.warnings.map(
        (w) => `${w.file}:${w.line ?? '?'}:${w.column ?? '?'} ${w.path}: ${w.message}`,
      );
      return { plan: planned.plan, content, filename, warnings };
    } catch (err) {
      if (err instanceof TemplateError) {
        const issues = err.issues.map(
          (i) => `${i.file}:${i.line ?? '?'}:${i.column ?? '?'} ${i.path}: ${i.message}`,
        );
        throw new RuntimeStepError('template', issues.join('\n'));
      }
      if (err instanceof InvalidRequestError) throw new RuntimeStepError('template', err.message);
      throw err;
    }
  }

  /**
   * Moves a ready environment to the revision asked for, in place: the new commit is checked out,
   * planned and built while the environment keeps serving; then only workloads whose spec changed
   * are replaced (volumes stay). If anything fails, the previous plan is applied again, so the
   * previous version keeps running, and the failure is recorded for that revision (not retried:
   * the next push is).
   */
  private async updateInPlace(env: EnvironmentRecord, outer: AbortSignal): Promise<void> {
    const { store, runtime } = this.o;
    const previous = env.plan;
    const revision = env.revision;
    const commit = env.source?.commit ?? null;
    const short = commit ? commit.slice(0, 12) : `revision ${revision}`;
    if (!previous || !env.source) {
      await this.update(env, { plannedRevision: revision });
      return;
    }
    const timeoutMs = this.o.bringUpTimeoutMs ?? 30 * 60_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([outer, deadline]);
    const progress = new ProgressLog(store, env.id);
    let step = 'checkout';
    let checkout: string | null = null;
    await this.event(env.id, 'update', `updating to ${short}`);
    try {
      await runtime.ping();
      checkout = await this.checkOut(env, revision, signal);
      step = 'template';
      const planned = await this.planCheckout(env, checkout, signal);
      for (const warning of planned.warnings) await this.event(env.id, 'warning', warning);
      step = 'build';
      let plan = planned.plan;
      if (needsBuild(plan)) {
        plan = await this.buildImages(env, plan, progress, signal, outer, (building) => {
          step = building;
        });
      }
      await rm(checkout, { recursive: true, force: true });
      checkout = null;
      step = 'mounts';
      await checkBindSources(plan, this.o.workspaces.mountsDir(env.id), this.o.policy);
      const before = new Map(previous.workloads.map((w) => [w.name, w.specHash]));
      const changed = plan.workloads.filter((w) => before.get(w.name) !== w.specHash).map((w) => w.name);
      const removed = previous.workloads.filter((w) => !plan.workloads.some((n) => n.name === w.name));
      if (this.o.snapshots) {
        step = 'data';
        plan = await this.o.snapshots.decide(plan, previous, (message) => progress.add(message), {
          fork: env.origin?.fromFork === true,
        });
      }
      step = 'apply';
      await this.applyWithData(runtime, plan, env, progress, {
        signal,
        onProgress: (e) => {
          if (e.type === 'workload') step = `${e.phase === 'creating' ? 'create' : 'start'}:${e.workload}`;
          progress.add(progressText(e));
        },
        besideOthers: true,
        // Kept with the rest of the update once it is applied.
        replanned: async (replanned) => {
          plan = replanned;
        },
      });
      await progress.flush();
      env = await this.update(env, {
        plan,
        plannedRevision: revision,
        updateFailure: null,
        templateContent: planned.content,
        templateFile: planned.filename,
        attempts: 0,
        retryAt: null,
        lastActiveAt: new Date(), // as when it first became ready
      });
      const what = [
        changed.length > 0 ? `replaced ${changed.join(', ')}` : 'nothing changed',
        ...(removed.length > 0 ? [`removed ${removed.map((w) => w.name).join(', ')}`] : []),
      ].join('; ');
      await this.event(env.id, 'update', `updated to ${short}: ${what}`);
      this.o.onSettled?.(env);
    } catch (err) {
      if (outer.aborted) throw err;
      await progress.flush();
      const failure: Failure = deadline.aborted
        ? { step, reason: `did not finish within ${Math.round(timeoutMs / 60_000)} minutes` }
        : err instanceof RuntimeStepError
          ? { step: err.step, reason: err.reason }
          : { step, reason: (err as Error)?.message ?? String(err) };
      if (err instanceof LeaseLostError) throw err; // another replica owns it now: hands off
      let kept = 'the previous version keeps running';
      // Always: an update interrupted earlier (a crash, a newer push) may have left some workloads
      // at a newer spec; applying the previous plan, which is idempotent, puts them back.
      try {
        await applyPlan(runtime, previous, { signal: outer });
      } catch (rollbackErr) {
        if (outer.aborted) throw rollbackErr;
        // The previous version does not come back either: repaired like any broken environment.
        kept = 'the previous version did not come back; repairing it';
        await this.transition(env, 'creating', 'repairing after a failed update');
      }
      env = await this.update(env, {
        failedRevision: revision,
        updateFailure: {
          ...failure,
          reason: boundReason(failure.reason),
          revision,
          commit,
          at: new Date().toISOString(),
        },
      });
      await this.event(
        env.id,
        'update',
        `update to ${short} failed at ${failure.step}: ${boundReason(failure.reason)}; ${kept}`,
      );
      this.o.onSettled?.(env);
    } finally {
      if (checkout) await rm(checkout, { recursive: true, force: true }).catch(() => {});
    }
  }

  /**
   * `failed`: the step and reason recorded, the last lines of every workload's output kept in
   * the store (they outlive the containers), then nothing left running.
   */
  private async fail(env: EnvironmentRecord, failure: Failure): Promise<void> {
    const { store, runtime, logger } = this.o;
    const lines = this.o.keptLogLines ?? 200;
    for (const workload of env.plan?.workloads ?? []) {
      const text = await readKeptLogs(runtime, env.id, workload.name, lines).catch(() => null);
      if (text)
        await store.logs
          .save(env.id, workload.name, text)
          .catch((err) => logger.warn({ err }, 'could not keep logs'));
    }
    const failed = await this.transition(env, 'failed', `failed at ${failure.step}`, failure);
    this.o.onSettled?.(failed);
    this.o.metrics.createSeconds.observe(
      { outcome: 'failed' },
      (Date.now() - env.createdAt.getTime()) / 1000,
    );
    // Best effort: what this leaves, garbage collection removes (failed environments own nothing).
    await runtime
      .destroy(env.id)
      .catch((err) => logger.warn({ envId: env.id, err }, 'cleanup after failure incomplete'));
  }

  private async teardown(env: EnvironmentRecord, signal: AbortSignal): Promise<void> {
    const started = Date.now();
    if (env.state !== 'destroying') env = await this.transition(env, 'destroying', 'destroying');
    signal.throwIfAborted();
    await this.o.runtime.destroy(env.id);
    await this.o.workspaces.remove(env.id);
    env = await this.transition(env, 'destroyed', 'destroyed; no labelled object remains');
    if (env.attempts > 0) await this.update(env, { attempts: 0, retryAt: null });
    this.o.metrics.destroySeconds.observe((Date.now() - started) / 1000);
    this.o.onDestroyed?.(env);
    this.o.onSettled?.(env);
  }

  /** A fenced write: only while this replica holds the lease (else {@link LeaseLostError}). */
  private update(env: EnvironmentRecord, patch: Parameters<Store['environments']['update']>[1]) {
    return this.o.store.environments.update(env.id, patch, { owner: this.o.owner });
  }

  private async transition(
    env: EnvironmentRecord,
    state: EnvState,
    message: string,
    failure?: Failure,
    patch: Parameters<Store['environments']['update']>[1] = {},
  ): Promise<EnvironmentRecord> {
    // Container output may hold NUL characters (quoted in a failure's reason): never stored or shown.
    if (failure) failure = { ...failure, reason: boundReason(failure.reason) };
    const updated = await this.update(env, { ...patch, state, ...(failure ? { failure } : {}) });
    await this.o.store.events.append({
      envId: env.id,
      type: 'state',
      state,
      message: failure ? `${message}: ${failure.reason}` : message,
    });
    this.o.logger.info({ envId: env.id, name: env.name, state }, message);
    return updated;
  }

  private async event(envId: string, type: string, message: string): Promise<void> {
    await this.o.store.events.append({ envId, type, state: null, message }).catch(() => {});
  }

  /**
   * Keeps each build's output as the kept log `build:<workload>` (`mayfly logs NAME --build`),
   * replacing the previous build's. Not when the work was taken away (destroy, lease lost,
   * shutdown): a build stopped by the attempt's deadline or a sibling's failure is kept.
   */
  private keepBuildOutput(envId: string, outer: AbortSignal) {
    return async (workload: string, text: string): Promise<void> => {
      if (outer.aborted) return;
      await this.o.store.logs
        .save(envId, `build:${workload}`, text)
        .catch((err) => this.o.logger.warn({ envId, workload, err }, 'could not keep build output'));
    };
  }

  private async gc(): Promise<void> {
    if (this.stopped) return;
    const { logger } = this.o;
    const busy = (id: string) => this.inFlight.has(id);
    const steps: [string, () => Promise<unknown>][] = [
      ['garbage collection', () => collectGarbage({ ...this.o, busy })],
      ['drift repair', () => this.repairDrift()],
      [
        'retention',
        () =>
          applyRetention({
            store: this.o.store,
            workspaces: this.o.workspaces,
            destroyedRetentionMs: this.o.destroyedRetentionMs ?? 7 * 86_400_000,
            maxEventsPerEnv: this.o.maxEventsPerEnv ?? 2_000,
          }),
      ],
      ['snapshot collection', async () => this.o.snapshots?.collect()],
      [
        'image collection',
        () =>
          collectImages({
            store: this.o.store,
            images: this.o.images,
            logger,
            budgetBytes: this.o.imageBudgetBytes ?? 20 * 1024 ** 3,
            graceMs: this.o.imageGcGraceMs ?? 10 * 60_000,
          }),
      ],
    ];
    for (const [what, run] of steps) {
      if (this.stopped) return;
      try {
        await run();
      } catch (err) {
        logger.warn({ err }, `${what} failed; will retry`);
      }
    }
  }

  /**
   * Level-triggered all the way: a ready environment whose services are no longer all running
   * (a container removed or crashed behind our back) goes back to `creating`, and the next pass
   * re-applies its plan, which keeps what still runs and replaces the rest.
   */
  private async repairDrift(): Promise<void> {
    const { store, owner, leaseMs } = this.o;
    for (const listed of await store.environments.list({ states: ['ready'] })) {
      if (listed.desired !== 'present' || !listed.plan) continue;
      // In flight includes a snapshot made by hand (its writers stopped: see `exclusively`).
      const occupied = this.occupy(listed.id);
      if (!occupied) continue;
      let repairing = false;
      try {
        if (!(await store.environments.claim(listed.id, owner, leaseMs))) continue;
        try {
          repairing = await this.repairIfDrifted(listed.id);
        } finally {
          await store.environments.release(listed.id, owner).catch(() => {});
        }
      } finally {
        occupied.finished();
      }
      // Once no longer occupied: a pass would skip the environment while it is.
      if (repairing) this.kick();
    }
  }

  /**
   * Under the lease: back to `creating` when a service is missing (true: to be repaired), failed
   * when it keeps stopping.
   */
  private async repairIfDrifted(envId: string): Promise<boolean> {
    const { store, runtime } = this.o;
    // Re-read under the lease: a destroy may have started since the listing.
    const env = await store.environments.get(envId);
    if (!env?.plan || env.state !== 'ready' || env.desired !== 'present') return false;
    const observed = await runtime.observe(env.id);
    // A service that ran to a clean end where Compose would not restart it is done, not missing.
    const settled = (w: WorkloadPlan, o: ObservedWorkload) =>
      o.state === 'running' || (o.state === 'exited' && o.exitCode === 0 && mayExitCleanly(w));
    const missing = env.plan.workloads
      .filter((w) => w.kind === 'service')
      .filter((w) => observed.workloads.filter((o) => o.name === w.name && settled(w, o)).length < w.replicas)
      .map((w) => w.name);
    if (missing.length === 0) return false;
    // A service that keeps stopping right after every repair is crash-looping: bounded too.
    const since = Date.now() - REPAIR_WINDOW_MS;
    const recentRepairs = (await store.events.list(env.id)).filter(
      (e) => e.state === 'creating' && e.message.startsWith('repairing') && e.at.getTime() >= since,
    ).length;
    if (recentRepairs >= this.maxAttempts) {
      const service = missing[0]!;
      const tail = await readKeptLogs(runtime, env.id, service, 10).catch(() => null);
      await this.fail(env, {
        step: `start:${service}`,
        reason: `keeps stopping: repaired ${recentRepairs} times in ${REPAIR_WINDOW_MS / 60_000} minutes${tail ? `\n${tail.trim()}` : ''}`,
      });
      return false;
    }
    await this.transition(env, 'creating', `repairing: ${missing.join(', ')} not running`);
    return true;
  }
}
