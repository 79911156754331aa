/**
 * The level-triggered reconcile loop: reads what the store wants, converges the runtime to it,
 * records every transition as an event. Safe to kill at any point: every step is idempotent and
 * the next pass (in this process or the next) picks up from the recorded state.
 */
import type { EnvState, Failure } from '@mayfly/contract';
import { needsBuild, resolveBuilds } from '../build/resolve-builds.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { type Runtime, RuntimeStepError, RuntimeUnavailableError } from '../runtime/runtime.js';
import type { EnvironmentRecord, Store } from '../store/store.js';
import { collectGarbage } from './garbage-collector.js';

export interface ReconcilerOptions {
  store: Store;
  runtime: Runtime;
  logger: Logger;
  metrics: Metrics;
  /** Lease owner name of this replica. */
  owner: string;
  leaseMs: number;
  intervalMs: number;
  gcIntervalMs: number;
  /** Environments worked on at once; the rest wait for the next pass. */
  concurrency?: number;
}

const BRINGING_UP: EnvState[] = ['pending', 'building', 'creating'];

class NoLongerWantedError extends Error {
  override name = 'NoLongerWantedError';
}

/** How one reconcile of one environment ended: progress, someone else's lease, or an error. */
type Outcome = 'done' | 'busy' | 'error';

export class Reconciler {
  private readonly inFlight = new Map<string, { done: Promise<void>; abort: AbortController }>();
  private readonly retryAt = new Map<string, { at: number; delayMs: number }>();
  private timer: NodeJS.Timeout | null = null;
  private gcTimer: NodeJS.Timeout | null = null;
  private passRunning: Promise<void> | null = null;
  private passAgain = false;
  private stopped = true;

  constructor(private readonly o: ReconcilerOptions) {}

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
    this.inFlight.get(envId)?.abort.abort(new Error('desired state changed'));
    this.retryAt.delete(envId); // a destroy must not wait out the backoff of a failing create
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
      if (this.inFlight.has(env.id) || this.inFlight.size >= limit) continue;
      if ((this.retryAt.get(env.id)?.at ?? 0) > Date.now()) continue;
      const abort = new AbortController();
      const done = this.reconcile(env.id, abort.signal).then((outcome) => {
        this.inFlight.delete(env.id);
        this.scheduleRetry(env.id, outcome);
        // Only progress earns an immediate next pass; failures wait for their backoff.
        if (outcome === 'done' && !this.stopped) this.kick();
      });
      this.inFlight.set(env.id, { done, abort });
    }
  }

  private scheduleRetry(envId: string, outcome: Outcome): void {
    if (outcome === 'done') {
      this.retryAt.delete(envId);
      return;
    }
    // Another replica holds the lease: look again soon. An error: back off, up to a minute.
    const previous = this.retryAt.get(envId)?.delayMs ?? 0;
    const delayMs = outcome === 'busy' ? 2_000 : Math.min(Math.max(previous * 2, 1_000), 60_000);
    this.retryAt.set(envId, { at: Date.now() + delayMs, delayMs });
  }

  private async reconcile(envId: string, signal: AbortSignal): Promise<Outcome> {
    const { store, owner, leaseMs, logger } = this.o;
    const work = new AbortController();
    const aborted = AbortSignal.any([signal, work.signal]);
    try {
      if (!(await store.environments.claim(envId, owner, leaseMs))) return 'busy';
    } catch (err) {
      logger.warn({ envId, err }, 'could not claim; will retry');
      return 'error';
    }
    const heartbeat = setInterval(() => void this.renewLease(envId, work), Math.max(1_000, leaseMs / 3));
    try {
      let env = await store.environments.get(envId);
      if (!env) return 'done';
      if (env.desired === 'present' && env.expiresAt && env.expiresAt.getTime() <= Date.now()) {
        env = await store.environments.update(env.id, { desired: 'absent' });
        await store.events.append({ envId, type: 'ttl', state: null, message: 'time to live ran out' });
      }
      if (env.desired === 'absent') {
        if (env.state !== 'destroyed') await this.teardown(env);
      } else if (BRINGING_UP.includes(env.state)) {
        await this.bringUp(env, aborted);
      }
      return 'done';
    } catch (err) {
      // The desired state changed: the next pass acts on it.
      if (signal.aborted || err instanceof NoLongerWantedError) return 'done';
      if (work.signal.aborted) {
        logger.warn({ envId }, 'lost the work lease to another replica; stopped');
        return 'busy';
      }
      if (err instanceof RuntimeUnavailableError)
        logger.warn({ envId, err: err.message }, 'runtime unavailable');
      else {
        this.o.metrics.reconcileErrors.inc();
        logger.error({ envId, err }, 'reconcile failed; will retry');
      }
      return 'error';
    } finally {
      clearInterval(heartbeat);
      await store.environments.release(envId, owner).catch(() => {});
    }
  }

  /** Keeps the lease alive; if another replica has taken it over, stops this replica's work. */
  private async renewLease(envId: string, work: AbortController): Promise<void> {
    const { store, owner, leaseMs } = this.o;
    try {
      if (await store.environments.claim(envId, owner, leaseMs)) return;
      // A false claim can also mean the row is locked for a moment (our own update, on PostgreSQL).
      const env = await store.environments.get(envId);
      if (env && env.leaseOwner !== owner) work.abort(new Error('lease lost'));
    } catch {
      // The store is unreachable for a moment; the lease outlives a few missed renewals.
    }
  }

  private async bringUp(env: EnvironmentRecord, signal: AbortSignal): Promise<void> {
    const { store, runtime } = this.o;
    let plan = env.plan;
    if (!plan) throw new Error(`environment ${env.id} has no plan`);
    // Was it ready once? Then this is a repair: a failure must not throw its data away.
    const wasReady = (await store.events.list(env.id)).some((e) => e.state === 'ready');
    try {
      await runtime.ping();
      if (needsBuild(plan)) {
        env = await this.transition(env, 'building', 'building images');
        plan = await resolveBuilds(
          plan,
          runtime,
          (e) =>
            void this.event(
              env.id,
              'progress',
              e.status === 'step'
                ? `${e.workload}: ${e.step}`
                : `${e.workload}: image ${e.status} (${e.image})`,
            ),
          signal,
        );
        env = await store.environments.update(env.id, { plan });
      }
      await this.throwIfNoLongerWanted(env.id, signal);
      if (env.state === 'creating') await this.event(env.id, 'progress', 'resuming: applying the plan again');
      else env = await this.transition(env, 'creating', 'creating services');
      await runtime.apply(plan, {
        signal,
        onProgress: (e) =>
          void this.event(
            env.id,
            'progress',
            e.type === 'image' ? `${e.workload}: ${e.message}` : `${e.workload}: ${e.phase}`,
          ),
      });
      await this.throwIfNoLongerWanted(env.id, signal);
      await this.transition(env, 'ready', 'ready');
      // A repair is not a create: only the first time ready counts towards create latency.
      if (!wasReady) {
        this.o.metrics.createSeconds.observe(
          { outcome: 'ready' },
          (Date.now() - env.createdAt.getTime()) / 1000,
        );
      }
    } catch (err) {
      if (signal.aborted || !(err instanceof RuntimeStepError)) throw err;
      if (wasReady) {
        // Keep volumes and whatever still runs; try again with backoff until it heals or is destroyed.
        await this.event(env.id, 'error', `repair failed at ${err.step}: ${err.reason}; will retry`);
        throw err;
      }
      // A failed environment keeps nothing running: the reason and the step are the record.
      await this.transition(env, 'failed', `failed at ${err.step}`, { step: err.step, reason: err.reason });
      this.o.metrics.createSeconds.observe(
        { outcome: 'failed' },
        (Date.now() - env.createdAt.getTime()) / 1000,
      );
      await runtime.destroy(env.id);
    }
  }

  /** A destroy may have been asked of another replica meanwhile: stop building what is not wanted. */
  private async throwIfNoLongerWanted(envId: string, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const current = await this.o.store.environments.get(envId);
    if (current?.desired !== 'present') throw new NoLongerWantedError();
  }

  private async teardown(env: EnvironmentRecord): Promise<void> {
    const started = Date.now();
    if (env.state !== 'destroying') env = await this.transition(env, 'destroying', 'destroying');
    await this.o.runtime.destroy(env.id);
    await this.transition(env, 'destroyed', 'destroyed; no labelled object remains');
    this.o.metrics.destroySeconds.observe((Date.now() - started) / 1000);
  }

  private async transition(
    env: EnvironmentRecord,
    state: EnvState,
    message: string,
    failure?: Failure,
  ): Promise<EnvironmentRecord> {
    const updated = await this.o.store.environments.update(env.id, {
      state,
      ...(failure ? { failure } : {}),
    });
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

  private async gc(): Promise<void> {
    if (this.stopped) return;
    try {
      await collectGarbage({ ...this.o, busy: (id) => this.inFlight.has(id) });
      await this.repairDrift();
    } catch (err) {
      this.o.logger.warn({ err }, 'garbage collection failed; will retry');
    }
  }

  /**
   * Level-triggered all the way: a ready environment whose services are no longer all running
   * (a container removed or crashed behind our back) goes back to `creating`, and the next pass
   * re-applies its plan, which keeps what still runs and replaces the rest.
   */
  private async repairDrift(): Promise<void> {
    const { store, runtime, owner, leaseMs } = this.o;
    for (const listed of await store.environments.list({ states: ['ready'] })) {
      if (this.inFlight.has(listed.id) || listed.desired !== 'present' || !listed.plan) continue;
      if (!(await store.environments.claim(listed.id, owner, leaseMs))) continue;
      try {
        // Re-read under the lease: a destroy may have started since the listing.
        const env = await store.environments.get(listed.id);
        if (!env?.plan || env.state !== 'ready' || env.desired !== 'present') continue;
        const observed = await runtime.observe(env.id);
        const missing = env.plan.workloads
          .filter((w) => w.kind === 'service')
          .filter(
            (w) =>
              observed.workloads.filter((o) => o.name === w.name && o.state === 'running').length <
              w.replicas,
          )
          .map((w) => w.name);
        if (missing.length === 0) continue;
        await this.transition(env, 'creating', `repairing: ${missing.join(', ')} not running`);
        this.kick();
      } finally {
        await store.environments.release(listed.id, owner).catch(() => {});
      }
    }
  }
}
