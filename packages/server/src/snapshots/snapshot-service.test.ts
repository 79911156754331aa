/**
 * The snapshot service's decisions against the real Docker Engine and a real SQLite store: a
 * snapshot removed between the decision to clone it and the clone (a `snapshot rm`, the budget's
 * collection) has the volume seeded by its job instead, and a new snapshot kept — not an
 * environment that fails at every retry; a seed that cannot be keyed is seeded every time.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuotaExceededError } from '../controller/errors.js';
import { createLogger } from '../observability/logger.js';
import type { EnvPlan } from '../plan/plan.js';
import { DockerRuntime } from '../runtime/docker/docker-runtime.js';
import { openStore } from '../store/open-store.js';
import type { Store } from '../store/store.js';
import { requiredAgentBinary, testInstanceName } from '../test-support/global-setup.js';
import { envPlan, workload } from '../test-support/plans.js';
import { seededSnapshotName } from './seed-key.js';
import { SnapshotService } from './snapshot-service.js';

const data = [{ type: 'volume' as const, source: 'data', target: '/data', readOnly: false }];
// The database's own scratch volume besides: made (empty) by every bring-up as the seeded one is.
const scratch = { type: 'volume' as const, source: 'scratch', target: '/scratch', readOnly: false };
const seeded = (row = 'row') =>
  envPlan(
    [
      workload({
        name: 'db',
        command: ['testkit', 'sleep'],
        mounts: [...data, scratch],
        stopGracePeriodMs: 1000,
      }),
      workload({
        name: 'seed',
        kind: 'job',
        command: ['sh', '-c', `echo ${row} >> /data/rows`],
        mounts: data,
        dependsOn: [{ name: 'db', condition: 'service_started' }],
      }),
    ],
    { project: 'fallback', volumes: [{ name: 'data', data: { seededBy: 'seed' } }, { name: 'scratch' }] },
  );

describe('a snapshot gone between the decision and the clone', () => {
  const runtime = new DockerRuntime({
    instance: `${testInstanceName()}-fallback`,
    agentBinary: requiredAgentBinary(),
  });
  let dir: string;
  let store: Store;
  let service: SnapshotService;
  const made: EnvPlan[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-fallback-'));
    store = await openStore({ dataDir: dir });
    service = new SnapshotService({ store, runtime, logger: createLogger('silent'), owner: 'test' });
  });
  afterAll(async () => {
    await Promise.all(made.map((plan) => runtime.destroy(plan.envId)));
    for (const s of await service.list()) await service.remove(s.project, s.name);
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** As the reconciler brings an environment up; resolves with the plan it keeps. */
  const bringUp = async (plan: EnvPlan, report: (m: string) => void, besideOthers = false) => {
    made.push(plan);
    let kept = plan;
    await service.apply(runtime, plan, { id: plan.envId, name: plan.envName }, report, {
      besideOthers,
      replanned: async (replanned) => {
        kept = replanned;
      },
    });
    return kept;
  };
  const rows = (plan: EnvPlan) =>
    execFileSync('docker', ['exec', `mayfly-${plan.envId}-db-1`, 'cat', '/data/rows'], { encoding: 'utf8' });

  it('seeds the volume instead and keeps a new snapshot', async () => {
    const first = await service.decide(seeded(), null, () => {});
    await bringUp(first, () => {});
    const [kept] = await service.list();
    expect(kept).toMatchObject({ state: 'ready', volume: 'data' });

    const second = await service.decide(seeded(), null, () => {});
    expect(second.volumes[0]!.origin).toMatchObject({ restored: { snapshotId: kept!.id } });
    // Removed after the decision, before the clone.
    await service.remove(kept!.project, kept!.name);
    const said: string[] = [];
    const applied = await bringUp(second, (m) => said.push(m));
    expect(said).toContain(
      `data: snapshot ${kept!.name} was removed before it could be cloned: seeded instead`,
    );
    expect(applied.volumes[0]!.origin).toEqual({
      seeded: { key: kept!.seedKey, takeSnapshot: true },
    });
    expect(rows(applied)).toBe('row\n');
    // The seed ran, and its snapshot is the project's again.
    const [again] = await service.list();
    expect(again).toMatchObject({ state: 'ready', name: kept!.name, seedKey: kept!.seedKey });
    expect(again!.id).not.toBe(kept!.id);
  });

  it('a seed run beside other services (an update, or over what an older bring-up left) keeps no snapshot', async () => {
    const [kept] = await service.list();
    expect(kept).toMatchObject({ state: 'ready', volume: 'data' });
    const said: string[] = [];
    const notSeededYet = { ...seeded(), volumes: [] };
    for (const decided of [
      await service.decide(seeded('beside'), notSeededYet, (m) => said.push(m)),
      await service.decide(seeded('beside'), null, (m) => said.push(m), { besideOthers: true }),
    ])
      expect(decided.volumes[0]!.origin).toMatchObject({ seeded: { takeSnapshot: false } });
    expect(said).toEqual(
      Array(2).fill(
        'seed: seeds data; no snapshot kept: other services of the environment run already and could write to it',
      ),
    );
    // A clone is as good beside others; but one whose snapshot is gone is seeded, not snapshotted.
    const restoring = await service.decide(seeded(), notSeededYet, () => {});
    expect(restoring.volumes[0]!.origin).toMatchObject({ restored: { snapshotId: kept!.id } });
    const gone = {
      ...restoring,
      volumes: restoring.volumes.map((v) =>
        v.name === 'data'
          ? {
              ...v,
              origin: {
                restored: { snapshotId: 'removedsnap1', snapshotName: kept!.name },
                key: kept!.seedKey,
              },
            }
          : v,
      ),
    };
    const applied = await bringUp(gone, () => {}, true);
    expect(applied.volumes[0]!.origin).toEqual({ seeded: { key: kept!.seedKey, takeSnapshot: false } });
    expect(rows(applied)).toBe('row\n');
    expect((await service.list()).map((s) => s.id)).toEqual([kept!.id]);
  });

  it('a snapshot of the same seed another replica is making is left to it', async () => {
    const plan = await service.decide(seeded('elsewhere'), null, () => {});
    const origin = plan.volumes[0]!.origin!;
    expect(origin).toMatchObject({ seeded: { takeSnapshot: true } });
    const key = 'seeded' in origin ? origin.seeded.key : '';
    const theirs = await store.snapshots.create({
      id: 'replicab0001',
      project: plan.project,
      name: seededSnapshotName('data', key),
      seedKey: key,
      volume: 'data',
      sourceEnv: { id: 'other', name: 'other' },
      owner: 'replica-b',
    });
    try {
      const said: string[] = [];
      await bringUp(plan, (m) => said.push(m));
      expect(rows(plan)).toBe('elsewhere\n');
      expect(said.filter((m) => m.includes('snapshot'))).toEqual([]);
      expect(await store.snapshots.get(theirs.id)).toMatchObject({ state: 'creating', owner: 'replica-b' });
    } finally {
      await store.snapshots.delete(theirs.id);
    }
  });

  it('a seed whose bound files cannot all be hashed is seeded every time, never snapshotted', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-unkeyable-'));
    try {
      await writeFile(path.join(dir, 'dump.sql'), '');
      await truncate(path.join(dir, 'dump.sql'), 2 * 1024 ** 3);
      const plan = seeded();
      const withDump: EnvPlan = {
        ...plan,
        workloads: plan.workloads.map((w) =>
          w.name === 'seed'
            ? { ...w, mounts: [...w.mounts, { type: 'bind', source: dir, target: '/dump', readOnly: true }] }
            : w,
        ),
      };
      const said: string[] = [];
      const decided = await service.decide(withDump, null, (m) => said.push(m));
      expect(decided.volumes[0]!.origin).toEqual({ seeded: { key: '', takeSnapshot: false } });
      expect(said).toEqual(['seed: seeds data every time: its bound files hold more than 1 GiB to hash']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('past the disk budget, seeds go least recently used first, before any snapshot made by hand', async () => {
    for (const s of await service.list()) await service.remove(s.project, s.name);
    const plan = seeded('budget'); // 'budget\n': 7 bytes
    await bringUp(plan, () => {});
    for (const s of await service.list()) await service.remove(s.project, s.name);
    // Three snapshots of its volume, least recently used first: one by hand, then two seeds.
    const takeOne = async (name: string, seedKey: string | null, usedAt: number) => {
      const id = `budget${name}`;
      const { sizeBytes } = await runtime.snapshots!.take(
        plan,
        'data',
        { id, project: plan.project, name },
        AbortSignal.timeout(60_000),
      );
      expect(sizeBytes).toBe(7);
      await store.snapshots.create({
        id,
        project: plan.project,
        name,
        seedKey,
        volume: 'data',
        sourceEnv: { id: plan.envId, name: plan.envName },
        owner: 'test',
      });
      await store.snapshots.markReady(id, sizeBytes);
      await store.snapshots.touch(id, new Date(usedAt));
      return id;
    };
    const now = Date.now();
    const manual = await takeOne('golden', null, now + 1_000);
    const older = await takeOne('seed1', 'k1', now + 2_000);
    const newer = await takeOne('seed2', 'k2', now + 3_000);
    // Room for two of the three.
    const budgeted = new SnapshotService({
      store,
      runtime,
      logger: createLogger('silent'),
      owner: 'test',
      budgetBytes: 20,
    });
    expect(await budgeted.collect()).toEqual([older]);
    expect((await service.list()).map((s) => s.id).sort()).toEqual([manual, newer].sort());
    expect(await runtime.snapshots!.exists(older)).toBe(false);
    expect(await runtime.snapshots!.exists(manual)).toBe(true);
    // Past it again (a smaller budget): the last seed goes, and only then the one made by hand.
    const smaller = new SnapshotService({
      store,
      runtime,
      logger: createLogger('silent'),
      owner: 'test',
      budgetBytes: 10,
    });
    expect(await smaller.collect()).toEqual([newer]);
    const smallest = new SnapshotService({
      store,
      runtime,
      logger: createLogger('silent'),
      owner: 'test',
      budgetBytes: 1,
    });
    expect(await smallest.collect()).toEqual([manual]);
  });

  it('snapshots by hand asked at once of two environments: only as many as the quota allows are kept', async () => {
    const envs = [seeded('quota-a'), seeded('quota-b')];
    for (const plan of envs) {
      await bringUp(plan, () => {});
      await store.environments.create({
        id: plan.envId,
        name: plan.envName,
        project: plan.project,
        kind: 'preview',
        templateFile: 'compose.yaml',
        templateContent: '',
        templateDir: null,
        inputs: {},
        plan,
        ttlMs: null,
        expiresAt: null,
      });
      await store.environments.update(plan.envId, { state: 'ready' });
    }
    for (const s of await service.list()) await service.remove(s.project, s.name);
    // Both count before either is recorded: the work waits until both have counted.
    let arrived = 0;
    let bothIn!: () => void;
    const barrier = new Promise<void>((resolve) => {
      bothIn = resolve;
    });
    const quota = new SnapshotService({
      store,
      runtime,
      logger: createLogger('silent'),
      owner: 'test',
      manualPerProject: 1,
      exclusively: async (_envId, work) => {
        if (++arrived === 2) bothIn();
        await barrier;
        return work(AbortSignal.timeout(60_000));
      },
    });
    const outcomes = await Promise.allSettled(
      envs.map(async (plan, i) =>
        quota.create((await store.environments.get(plan.envId))!, 'data', `hand-${i}`),
      ),
    );
    // Never both: each counts the other's record once its own is in (both may then be refused).
    const made = outcomes.filter((o) => o.status === 'fulfilled');
    expect(made.length).toBeLessThanOrEqual(1);
    for (const o of outcomes)
      if (o.status === 'rejected') {
        expect(o.reason).toBeInstanceOf(QuotaExceededError);
        expect(o.reason.message).toBe(
          'project "fallback" keeps 1 snapshots made by hand, the most it may: remove one first (mayfly snapshot rm)',
        );
      }
    expect(await service.list()).toHaveLength(made.length);
    // Asked again once none is being made: exactly what fits.
    if (made.length === 0)
      await quota.create((await store.environments.get(envs[0]!.envId))!, 'data', 'hand-again');
    await expect(
      quota.create((await store.environments.get(envs[1]!.envId))!, 'data', 'hand-over'),
    ).rejects.toBeInstanceOf(QuotaExceededError);
    expect(await service.list()).toHaveLength(1);
    for (const s of await service.list()) await service.remove(s.project, s.name);
  });

  it('a volume that names a snapshot has no seed to fall back on: it fails, saying so', async () => {
    const plan = seeded();
    const named: EnvPlan = {
      ...plan,
      volumes: [
        {
          name: 'data',
          data: { snapshot: 'golden' },
          origin: { restored: { snapshotId: 'nosuchsnapshot', snapshotName: 'golden' }, key: null },
        },
        { name: 'scratch' },
      ],
    };
    await expect(bringUp(named, () => {})).rejects.toThrow(
      'restore:data: snapshot "golden" was removed before it could be cloned',
    );
  });
});
