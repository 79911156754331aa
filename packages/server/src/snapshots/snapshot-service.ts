/**
 * Seeded data, once: a volume a template marks `seededBy` a job is snapshotted after the job's
 * first success, and every later environment of the project with the same seed (by content key,
 * see `seed-key.ts`) starts from a clone of that snapshot instead of running the job. Snapshots
 * made by hand (`mayfly snapshot create`) can be named by a template instead. Decided once per
 * volume, at an environment's first bring-up, and kept in its plan (see `VolumeOrigin`).
 */
import { customAlphabet } from 'nanoid';
import { type Access, canSee, FULL_ACCESS } from '../access/access.js';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  QuotaExceededError,
} from '../controller/errors.js';
import type { Logger } from '../observability/logger.js';
import type { EnvPlan, VolumePlan } from '../plan/plan.js';
import { snapshottingVolumes } from '../plan/seeds.js';
import { applyPlan, SnapshotsGoneError } from '../runtime/apply-plan.js';
import { formatBytes } from '../runtime/format-bytes.js';
import {
  type ApplyOptions,
  type Runtime,
  RuntimeStepError,
  type VolumeSnapshots,
} from '../runtime/runtime.js';
import {
  type EnvironmentRecord,
  SnapshotNameTakenError,
  type SnapshotRecord,
  type Store,
} from '../store/store.js';
import { SNAPSHOT_NAME } from '../template/normalize.js';
import { SeedNotKeyableError, seededSnapshotName, seedKey } from './seed-key.js';

const newSnapshotId = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 12);

export interface SnapshotServiceDeps {
  store: Store;
  runtime: Runtime;
  logger: Logger;
  /** This replica's lease owner name: recorded on snapshots it is making. */
  owner: string;
  /** Ready snapshots may take this many bytes; past it the least recently used go. */
  budgetBytes?: number;
  /** Snapshots made by hand a project may keep (default 20): one more is refused with 429. */
  manualPerProject?: number;
  /** Seeded snapshots a project keeps (default 10): past it the least recently used go. */
  seedsPerProject?: number;
  /** A snapshot another replica started making is taken for abandoned after this long. */
  abandonedAfterMs?: number;
  /**
   * Runs work on an environment that nothing else may work on meanwhile (the reconciler's work
   * lease: see `Reconciler.exclusively`); `busy` when something else is. Without it, this
   * process's own snapshots of one environment are made one at a time.
   */
  exclusively?: <T>(envId: string, work: (signal: AbortSignal) => Promise<T>) => Promise<T | 'busy'>;
}

/** Where a volume's data came from, in words for the timeline; `report` writes one line. */
type Report = (message: string) => void;

export class SnapshotService {
  /** Snapshots this process is making right now: their `creating` rows are alive. */
  private readonly making = new Set<string>();
  /** Environments a snapshot by hand is being taken of here (without `exclusively`). */
  private readonly byHand = new Set<string>();

  constructor(private readonly deps: SnapshotServiceDeps) {}

  /** What ready snapshots may take together, and so one snapshot at most. */
  private get budgetBytes(): number {
    return this.deps.budgetBytes ?? 20 * 1024 ** 3;
  }

  private get snapshots(): VolumeSnapshots | undefined {
    return this.deps.runtime.snapshots;
  }

  /**
   * The plan with every volume that has data given its origin: kept from `previous` (the plan
   * the environment runs) when that volume was decided there with the same seed; otherwise a
   * clone of a ready snapshot when there is one for every volume its job seeds (and the plan
   * does not ignore snapshots), or seeded by the job — with a snapshot taken after it only on
   * a first bring-up on nothing (`previous` null and not `from.besideOthers`: nothing else of the
   * environment runs then, see `SeedHold`), so a snapshot only ever holds what the seed alone made.
   * {@link RuntimeStepError} when a volume names a snapshot that its project does not have, or
   * that a pull request from a fork (`from.fork`) may not have.
   */
  async decide(
    plan: EnvPlan,
    previous: EnvPlan | null,
    report: Report,
    from: { fork?: boolean; besideOthers?: boolean } = {},
  ): Promise<EnvPlan> {
    const pending = plan.volumes.filter((v) => v.data && !v.origin);
    if (pending.length === 0) return plan;
    const snapshots = this.snapshots;
    const before = new Map((previous?.volumes ?? []).map((v) => [v.name, v]));
    const decided = new Map<string, VolumePlan['origin']>();
    const keys = new Map<string, string>();
    /** Why a seed has no key (so no snapshot), by volume. */
    const unkeyable = new Map<string, string>();
    // Volumes cloned from snapshots named by the template first: a seed that reads one (its
    // database restored from a dump, say) is keyed by which snapshot that is.
    const ordered = [
      ...pending.filter((v) => v.data && 'snapshot' in v.data),
      ...pending.filter((v) => !(v.data && 'snapshot' in v.data)),
    ];
    const inputs = () => {
      const ids: Record<string, string> = {};
      for (const v of plan.volumes) {
        const origin = decided.get(v.name) ?? v.origin ?? before.get(v.name)?.origin;
        if (v.data && 'snapshot' in v.data && origin && 'restored' in origin)
          ids[v.name] = origin.restored.snapshotId;
      }
      return ids;
    };
    for (const volume of ordered) {
      const data = volume.data!;
      if ('snapshot' in data) {
        const kept = before.get(volume.name)?.origin;
        if (kept && 'restored' in kept && kept.restored.snapshotName === data.snapshot) {
          decided.set(volume.name, kept);
          continue;
        }
        if (before.has(volume.name)) continue; // its data is there already: left as it is
        if (!snapshots) throw new RuntimeStepError(`restore:${volume.name}`, this.noSnapshots());
        if (from.fork)
          throw new RuntimeStepError(
            `restore:${volume.name}`,
            `a pull request from a fork is given no snapshot made by hand ("${data.snapshot}"), as it is given none of the project's secret inputs`,
          );
        const found = await this.usable(
          await this.deps.store.snapshots.findByName(plan.project, data.snapshot),
        );
        if (found?.state !== 'ready')
          throw new RuntimeStepError(
            `restore:${volume.name}`,
            `project "${plan.project}" has no snapshot named "${data.snapshot}" (make one with mayfly snapshot create)`,
          );
        decided.set(volume.name, {
          restored: { snapshotId: found.id, snapshotName: found.name },
          key: null,
        });
        continue;
      }
      const job = plan.workloads.find((w) => w.name === data.seededBy);
      if (!job) continue; // a plan a template made always has it
      let key = '';
      if (snapshots) {
        try {
          key = await seedKey(plan, volume.name, job.name, (ref) => snapshots.imageId(ref), inputs());
        } catch (err) {
          if (!(err instanceof SeedNotKeyableError)) throw err;
          unkeyable.set(volume.name, err.message);
        }
      }
      keys.set(volume.name, key);
      const kept = before.get(volume.name);
      if (kept) {
        // The environment has this volume: its data stays. Same seed: as decided then; another
        // seed runs on it as Compose would run a changed job, and is no snapshot's source.
        const origin = kept.origin;
        const sameSeed = origin && ('seeded' in origin ? origin.seeded.key : origin.key) === key;
        decided.set(volume.name, sameSeed ? origin : { seeded: { key, takeSnapshot: false } });
      }
    }
    // A job runs for all its volumes or for none: restored only when each has a ready snapshot.
    const byJob = new Map<string, VolumePlan[]>();
    for (const volume of pending) {
      if (decided.has(volume.name) || !volume.data || !('seededBy' in volume.data)) continue;
      byJob.set(volume.data.seededBy, [...(byJob.get(volume.data.seededBy) ?? []), volume]);
    }
    for (const [job, volumes] of byJob) {
      const found: SnapshotRecord[] = [];
      const why = volumes.map((v) => unkeyable.get(v.name)).find(Boolean);
      for (const volume of volumes) {
        if (!snapshots || volume.ignoreSnapshots || why) break;
        const key = keys.get(volume.name)!;
        const snapshot = await this.usable(
          await this.deps.store.snapshots.findByName(plan.project, seededSnapshotName(volume.name, key)),
        );
        if (snapshot?.state !== 'ready' || snapshot.seedKey !== key) break;
        found.push(snapshot);
      }
      const restore = found.length === volumes.length;
      // An update seeds beside the version that runs (its services may write the database the
      // seed fills), as does a bring-up over what an older one left: what it makes is not the
      // seed's alone, so no snapshot of it is kept.
      const beside = previous !== null || from.besideOthers === true;
      const keep = snapshots !== undefined && !why && !beside;
      for (const [i, volume] of volumes.entries()) {
        const key = keys.get(volume.name)!;
        const snapshot = found[i];
        decided.set(
          volume.name,
          restore && snapshot
            ? { restored: { snapshotId: snapshot.id, snapshotName: snapshot.name }, key }
            : { seeded: { key, takeSnapshot: keep } },
        );
      }
      if (!snapshots) report(`${job}: seeds ${volumes.map((v) => v.name).join(', ')}: ${this.noSnapshots()}`);
      else if (why) report(`${job}: seeds ${volumes.map((v) => v.name).join(', ')} every time: ${why}`);
      else if (!restore && volumes.some((v) => v.ignoreSnapshots))
        report(`${job}: seeds ${volumes.map((v) => v.name).join(', ')} from scratch (snapshots ignored)`);
      else if (!restore && beside)
        report(
          `${job}: seeds ${volumes.map((v) => v.name).join(', ')}; no snapshot kept: other services of the environment run already and could write to it`,
        );
    }
    for (const origin of decided.values())
      if (origin && 'restored' in origin) await this.deps.store.snapshots.touch(origin.restored.snapshotId);
    return {
      ...plan,
      volumes: plan.volumes.map((v) => {
        const origin = decided.get(v.name);
        return origin ? { ...v, origin } : v;
      }),
    };
  }

  /**
   * Applies `plan` on `runtime` with its seeded data: snapshots taken after seed jobs
   * (`afterSeed`), and a volume whose snapshot was removed between the decision and the clone
   * seeded by its job instead (see {@link seedInstead}): the plan changed so is given to
   * `replanned` (to be kept) before it is applied again. `besideOthers` as for {@link decide}
   * (an update, or objects of the environment found there): nothing is snapshotted.
   */
  async apply(
    runtime: Runtime,
    plan: EnvPlan,
    env: Pick<EnvironmentRecord, 'id' | 'name'>,
    report: Report,
    options: Omit<ApplyOptions, 'afterSeed' | 'noSnapshot' | 'madeBefore'> & {
      replanned: (plan: EnvPlan) => Promise<void>;
      besideOthers: boolean;
    },
  ): Promise<void> {
    const { replanned, besideOthers, ...rest } = options;
    const apply = (p: EnvPlan, madeBefore: string[] = []) =>
      applyPlan(runtime, p, {
        ...rest,
        ...(besideOthers
          ? { noSnapshot: 'the environment was there already, and what runs of it could write to it' }
          : { afterSeed: this.afterSeed(p, env, report), madeBefore }),
      });
    try {
      await apply(plan);
    } catch (err) {
      const fallback =
        err instanceof SnapshotsGoneError && this.seedInstead(plan, err.volumes, report, !besideOthers);
      if (!fallback) throw err;
      await replanned(fallback);
      await apply(fallback, err.madeVolumes);
    }
  }

  /**
   * The plan with the seeded volumes whose snapshots were gone when they were to be cloned
   * (`SnapshotsGoneError`) seeded by their job instead, a new snapshot taken after it when
   * `keepSnapshot` — or null
   * when that cannot be: a volume that names a snapshot has no seed to fall back on, and a job
   * that seeds other volumes too would run on the clones made of those.
   */
  seedInstead(plan: EnvPlan, gone: string[], report: Report, keepSnapshot: boolean): EnvPlan | null {
    const byName = new Map(plan.volumes.map((v) => [v.name, v]));
    const jobs = new Set<string>();
    for (const name of gone) {
      const data = byName.get(name)?.data;
      if (!data || !('seededBy' in data)) return null;
      jobs.add(data.seededBy);
    }
    const fallback = plan.volumes.filter((v) => v.data && 'seededBy' in v.data && jobs.has(v.data.seededBy));
    if (fallback.some((v) => !gone.includes(v.name))) return null;
    const seeded = new Map<string, VolumePlan>();
    for (const volume of fallback) {
      const origin = volume.origin;
      if (!origin || !('restored' in origin) || origin.key === null) return null;
      seeded.set(volume.name, {
        ...volume,
        origin: { seeded: { key: origin.key, takeSnapshot: keepSnapshot } },
      });
      report(
        `${volume.name}: snapshot ${origin.restored.snapshotName} was removed before it could be cloned: seeded instead`,
      );
    }
    return { ...plan, volumes: plan.volumes.map((v) => seeded.get(v.name) ?? v) };
  }

  /**
   * For `applyPlan`'s `afterSeed`: once the seed is done, takes the snapshots of `volumes` (seeded
   * by jobs this apply ran on volumes it made). A snapshot that fails is reported and dropped (the
   * environment goes on; the next one seeds again); an abort stops it and is passed on.
   */
  afterSeed(plan: EnvPlan, env: Pick<EnvironmentRecord, 'id' | 'name'>, report: Report) {
    return async (volumes: string[], signal: AbortSignal): Promise<void> => {
      for (const { volume, key } of snapshottingVolumes(plan).filter((s) =>
        volumes.includes(s.volume.name),
      )) {
        const name = seededSnapshotName(volume.name, key);
        const taken = await this.take(plan, env, volume.name, name, key, signal, report, {
          replace: volume.ignoreSnapshots === true,
        });
        if (!taken) continue;
        report(`${volume.name}: snapshot ${name} kept for later environments`);
        for (const old of await this.pruneSeeds(plan.project, taken.id))
          report(
            `snapshot ${old} removed: the project keeps its ${this.deps.seedsPerProject ?? 10} most recently used seeds`,
          );
      }
    };
  }

  /**
   * A snapshot made by hand of a ready environment's volume (after loading a dump, say), which
   * templates can then name (`x-mayfly.data.VOLUME.snapshot: NAME`).
   */
  async create(
    env: EnvironmentRecord,
    volume: string,
    name: string,
    access: Access = FULL_ACCESS,
  ): Promise<SnapshotRecord> {
    if (!canSee(access, env.project)) throw new NotFoundError(`environment "${env.name}" not found`);
    if (!SNAPSHOT_NAME.test(name))
      throw new InvalidRequestError(
        'a snapshot name is 1 to 63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
      );
    if (!this.snapshots) throw new InvalidRequestError(this.noSnapshots());
    const plan = env.plan;
    if (!plan?.volumes.some((v) => v.name === volume)) {
      const names = plan?.volumes.map((v) => v.name).join(', ') || 'none';
      throw new InvalidRequestError(
        `environment "${env.name}" has no volume "${volume}" (its volumes: ${names})`,
      );
    }
    await this.withinManualQuota(env.project);
    const notReady = (state: string) =>
      new ConflictError(`environment "${env.name}" is ${state}: a snapshot is taken of a ready one`);
    if (env.state !== 'ready') throw notReady(env.state);
    // Its writers are stopped for the copy: nothing else may work on the environment meanwhile
    // (an update, a repair, a sleep, another snapshot), on any replica.
    const outcome = await this.exclusively(env.id, async (signal) => {
      const current = await this.deps.store.environments.get(env.id);
      if (current?.state !== 'ready' || current.desired !== 'present' || !current.plan)
        throw notReady(current?.desired === 'absent' ? 'being destroyed' : (current?.state ?? 'gone'));
      const deadline = AbortSignal.any([signal, AbortSignal.timeout(30 * 60_000)]);
      return this.take(current.plan, current, volume, name, null, deadline, () => {}, { manual: true });
    });
    if (outcome === 'busy')
      throw new ConflictError(
        `environment "${env.name}" is busy (being brought up, updated, repaired, put to sleep or snapshotted): try again once it is done`,
      );
    if (!outcome) throw new ConflictError(`project "${env.project}" already has a snapshot named "${name}"`);
    return outcome;
  }

  async list(access: Access = FULL_ACCESS, project?: string): Promise<SnapshotRecord[]> {
    const all = await this.deps.store.snapshots.list(project);
    return all.filter((s) => canSee(access, s.project));
  }

  /** Removes a snapshot; environments cloned from it keep their data. 409 while a clone is made of it. */
  async remove(project: string, name: string, access: Access = FULL_ACCESS): Promise<SnapshotRecord> {
    const snapshot = await this.deps.store.snapshots.findByName(project, name);
    if (!snapshot || !canSee(access, snapshot.project))
      throw new NotFoundError(`project "${project}" has no snapshot named "${name}"`);
    if (snapshot.state === 'creating' && this.making.has(snapshot.id))
      throw new ConflictError(`snapshot "${name}" is being made; remove it once it is ready`);
    if (this.snapshots && !(await this.snapshots.remove(snapshot.id)))
      throw new ConflictError(`snapshot "${name}" is being cloned right now; try again in a moment`);
    await this.deps.store.snapshots.delete(snapshot.id);
    return snapshot;
  }

  /**
   * Garbage collection: snapshots whose making was abandoned (a crash: this process's own
   * `creating` rows it is not working on, or another replica's older than `abandonedAfterMs`),
   * snapshot objects the store does not know, and past the disk budget the least recently used
   * ready ones that no environment being brought up is about to clone. Returns the ids removed.
   */
  async collect(now = Date.now()): Promise<string[]> {
    const snapshots = this.snapshots;
    if (!snapshots) return [];
    const removed: string[] = [];
    const rows = await this.deps.store.snapshots.list();
    const abandonedAfter = this.deps.abandonedAfterMs ?? 30 * 60_000;
    for (const row of rows) {
      if (row.state !== 'creating' || this.making.has(row.id)) continue;
      const mine = row.owner === this.deps.owner;
      if (!mine && now - row.createdAt.getTime() < abandonedAfter) continue;
      if (!(await snapshots.remove(row.id))) continue;
      await this.deps.store.snapshots.delete(row.id);
      this.deps.logger.warn(
        { snapshot: row.name, project: row.project },
        'removed a snapshot left half made',
      );
      removed.push(row.id);
    }
    const known = new Set(rows.map((r) => r.id));
    for (const object of await snapshots.list()) {
      if (known.has(object.id) || this.making.has(object.id)) continue;
      // Made between the listing of rows and this one? Its row exists now: left for next time.
      if (await this.deps.store.snapshots.get(object.id)) continue;
      if (await snapshots.remove(object.id)) removed.push(object.id);
    }
    const budget = this.budgetBytes;
    const ready = rows.filter((r) => r.state === 'ready' && !removed.includes(r.id));
    let total = ready.reduce((sum, r) => sum + (r.sizeBytes ?? 0), 0);
    if (total <= budget) return removed;
    const cloning = await this.aboutToClone();
    // Seeds first (the next environment seeds again), least recently used first; snapshots made
    // by hand (a dump loaded, nothing can make them again) only when no seed is left.
    const byHand = (r: SnapshotRecord) => (r.seedKey === null ? 1 : 0);
    const order = (a: SnapshotRecord, b: SnapshotRecord) =>
      byHand(a) - byHand(b) || a.lastUsedAt.getTime() - b.lastUsedAt.getTime();
    for (const row of ready.sort(order)) {
      if (total <= budget) break;
      if (cloning.has(row.id) || !(await snapshots.remove(row.id))) continue;
      await this.deps.store.snapshots.delete(row.id);
      total -= row.sizeBytes ?? 0;
      removed.push(row.id);
      this.deps.logger.info(
        { snapshot: row.name, project: row.project, sizeBytes: row.sizeBytes },
        'removed a snapshot past the disk budget',
      );
    }
    return removed;
  }

  /**
   * Removes the project's least recently used seeded snapshots past `seedsPerProject` (never
   * `keep`, one being made, or one an environment being brought up is about to clone). Returns
   * the names removed.
   */
  private async pruneSeeds(project: string, keep: string): Promise<string[]> {
    const most = this.deps.seedsPerProject ?? 10;
    const seeds = (await this.deps.store.snapshots.list(project))
      .filter((s) => s.seedKey !== null && s.state === 'ready' && s.id !== keep)
      .sort((a, b) => b.lastUsedAt.getTime() - a.lastUsedAt.getTime());
    const removed: string[] = [];
    if (seeds.length < most) return removed;
    const cloning = await this.aboutToClone();
    for (const old of seeds.slice(most - 1)) {
      if (cloning.has(old.id) || !(await this.snapshots!.remove(old.id))) continue;
      await this.deps.store.snapshots.delete(old.id);
      removed.push(old.name);
    }
    return removed;
  }

  /** Snapshots an environment being brought up is about to clone (so not to be removed). */
  private async aboutToClone(): Promise<Set<string>> {
    const cloning = new Set<string>();
    for (const env of await this.deps.store.environments.list({
      states: ['pending', 'building', 'creating'],
    }))
      for (const v of env.plan?.volumes ?? [])
        if (v.origin && 'restored' in v.origin) cloning.add(v.origin.restored.snapshotId);
    return cloning;
  }

  /**
   * Takes one snapshot, recorded `creating` until the copy is done. With `replace`, one of that
   * name is removed first (a seed run again on purpose); otherwise a name taken means another
   * environment snapshotted the same seed first, and null is returned.
   */
  private async take(
    plan: EnvPlan,
    env: Pick<EnvironmentRecord, 'id' | 'name'>,
    volume: string,
    name: string,
    seedKey: string | null,
    signal: AbortSignal,
    report: Report,
    options: { replace?: boolean; manual?: boolean } = {},
  ): Promise<SnapshotRecord | null> {
    const snapshots = this.snapshots!;
    const { store } = this.deps;
    const existing = await store.snapshots.findByName(plan.project, name);
    // One being made by another replica (of another environment with the same seed) is theirs,
    // until it is old enough to be taken for abandoned (as garbage collection takes it).
    const abandoned =
      existing?.state === 'creating' &&
      !this.making.has(existing.id) &&
      (existing.owner === this.deps.owner ||
        Date.now() - existing.createdAt.getTime() >= (this.deps.abandonedAfterMs ?? 30 * 60_000));
    if (existing?.state === 'creating' && !abandoned) return null;
    if (existing && (options.replace || abandoned)) {
      // Not while another environment clones it (it keeps the older one) or it is being made here.
      if (this.making.has(existing.id) || !(await snapshots.remove(existing.id))) return null;
      await store.snapshots.delete(existing.id);
    }
    const id = newSnapshotId();
    let record: SnapshotRecord;
    try {
      record = await store.snapshots.create({
        id,
        project: plan.project,
        name,
        seedKey,
        volume,
        sourceEnv: { id: env.id, name: env.name },
        owner: this.deps.owner,
      });
    } catch (err) {
      if (err instanceof SnapshotNameTakenError) return null;
      throw err;
    }
    // Marked at once: collection takes this process's own `creating` rows it is not making for
    // abandoned, and the recount below awaits.
    this.making.add(id);
    if (options.manual) {
      // Counted again with its own record in: two made at once (of two environments) cannot
      // both pass the count made before either was.
      await this.withinManualQuota(plan.project, record).catch(async (err) => {
        await store.snapshots.delete(id);
        this.making.delete(id);
        throw err;
      });
    }
    const started = performance.now();
    report(`${volume}: taking snapshot ${name} (what writes it stopped for the copy)`);
    try {
      // One snapshot may take at most the whole budget (past it, it would only be collected).
      const { sizeBytes, reflinked } = await snapshots.take(
        plan,
        volume,
        { id, project: plan.project, name },
        signal,
        this.budgetBytes,
      );
      if (!(await store.snapshots.markReady(id, sizeBytes)))
        throw new Error('its record was removed while it was made (taken for abandoned by another replica)');
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      report(
        `${volume}: snapshot ${name} taken: ${formatBytes(sizeBytes)} in ${seconds} s${reflinked ? ' (cloned, no data copied)' : ''}`,
      );
      return { ...record, state: 'ready', owner: null, sizeBytes };
    } catch (err) {
      await snapshots.remove(id).catch(() => {});
      await store.snapshots.delete(id).catch(() => {});
      if (signal.aborted) throw err;
      const reason = (err as Error)?.message ?? String(err);
      report(`${volume}: snapshot ${name} failed, later environments seed again: ${reason.slice(0, 500)}`);
      this.deps.logger.warn({ err, volume, name }, 'snapshot failed');
      if (seedKey === null) throw err;
      return null;
    } finally {
      this.making.delete(id);
    }
  }

  /**
   * {@link QuotaExceededError} unless the project keeps fewer snapshots made by hand than it may,
   * `mine` (the one being made, recorded) left out. Every other one counts, being made or not, by
   * whichever replica: of several made at once none can pass a count that missed the others
   * (orders by time would, across replicas' clocks and uncommitted rows); at worst all of them are
   * refused, and one asked again goes on.
   */
  private async withinManualQuota(project: string, mine?: SnapshotRecord): Promise<void> {
    const kept = (await this.deps.store.snapshots.list(project)).filter(
      (s) => s.seedKey === null && s.id !== mine?.id,
    );
    const most = this.deps.manualPerProject ?? 20;
    if (kept.length >= most)
      throw new QuotaExceededError(
        `project "${project}" keeps ${kept.length} snapshots made by hand, the most it may: remove one first (mayfly snapshot rm)`,
      );
  }

  /**
   * The snapshot if it can be cloned: a ready one whose objects are gone (pruned behind Mayfly's
   * back) is forgotten, and the volume is seeded instead of failing to clone.
   */
  private async usable(snapshot: SnapshotRecord | null): Promise<SnapshotRecord | null> {
    if (snapshot?.state !== 'ready' || !this.snapshots) return snapshot;
    if (await this.snapshots.exists(snapshot.id)) return snapshot;
    this.deps.logger.warn(
      { snapshot: snapshot.name, project: snapshot.project },
      'a snapshot’s volume is gone: forgotten',
    );
    await this.deps.store.snapshots.delete(snapshot.id);
    return null;
  }

  private async exclusively<T>(
    envId: string,
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T | 'busy'> {
    if (this.deps.exclusively) return this.deps.exclusively(envId, work);
    if (this.byHand.has(envId)) return 'busy';
    this.byHand.add(envId);
    try {
      return await work(new AbortController().signal);
    } finally {
      this.byHand.delete(envId);
    }
  }

  private noSnapshots(): string {
    return `the ${this.deps.runtime.name} runtime keeps no snapshots: seeded every time`;
  }
}
