/** The seed key changes exactly when what the seed would do changes. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import { workload } from '../test-support/plans.js';
import { SeedNotKeyableError, seededSnapshotName, seedKey } from './seed-key.js';

const db = (extra: Partial<Parameters<typeof workload>[0]> = {}) =>
  workload({ name: 'db', image: 'postgres:16', env: { POSTGRES_PASSWORD: 'pw' }, ...extra });
const migrate = (extra: Partial<Parameters<typeof workload>[0]> = {}) =>
  workload({
    name: 'migrate',
    kind: 'job',
    image: 'mayfly-build/migrate:0123456789abcdef',
    command: ['migrate'],
    dependsOn: [{ name: 'db', condition: 'service_healthy' }],
    ...extra,
  });
const web = (extra: Partial<Parameters<typeof workload>[0]> = {}) =>
  workload({
    name: 'web',
    image: 'mayfly-build/web:1',
    dependsOn: [{ name: 'migrate', condition: 'service_completed_successfully' }],
    ...extra,
  });

const plan = (workloads: WorkloadPlan[], envId = 'env1'): EnvPlan => ({
  envId,
  envName: envId,
  project: 'shop',
  workloads,
  volumes: [{ name: 'pg', data: { seededBy: 'migrate' } }],
  isolation: 'runc',
});
const ids: Record<string, string> = { 'postgres:16': 'sha256:aaa' };
const key = (p: EnvPlan, imageIds = ids) => seedKey(p, 'pg', 'migrate', async (ref) => imageIds[ref] ?? null);

describe('seed key', () => {
  it('is the same for another environment, whatever the order of workloads', async () => {
    const one = await key(plan([db(), migrate(), web()]));
    expect(one).toMatch(/^[0-9a-f]{64}$/);
    expect(await key(plan([web(), migrate(), db()], 'env2'))).toBe(one);
  });

  it('ignores what the seed does not depend on', async () => {
    const one = await key(plan([db(), migrate(), web()]));
    expect(await key(plan([db(), migrate(), web({ env: { DEBUG: '1' } })]))).toBe(one);
    expect(await key(plan([db(), migrate()]))).toBe(one);
  });

  it("changes with the job's settings or image, and with a dependency's settings or image content", async () => {
    const one = await key(plan([db(), migrate(), web()]));
    const others = await Promise.all([
      key(plan([db(), migrate({ command: ['migrate', '--seed'] }), web()])),
      key(plan([db(), migrate({ image: 'mayfly-build/migrate:fedcba9876543210' }), web()])),
      key(plan([db({ env: { POSTGRES_PASSWORD: 'other' } }), migrate(), web()])),
      // the same tag, pulled again: another image
      key(plan([db(), migrate(), web()]), { 'postgres:16': 'sha256:bbb' }),
      seedKey(plan([db(), migrate()]), 'other-volume', 'migrate', async () => null),
    ]);
    for (const other of others) expect(other).not.toBe(one);
    expect(new Set(others).size).toBe(others.length);
  });

  it("leaves out what differs by itself between environments, keeps the bound files' content", async () => {
    const dirs = ['a', 'b', 'c'].map((n) => mkdtempSync(join(tmpdir(), `mayfly-seed-${n}-`)));
    for (const dir of dirs) writeFileSync(join(dir, 'seed.sql'), 'INSERT INTO t VALUES (1);');
    writeFileSync(join(dirs[2]!, 'seed.sql'), 'INSERT INTO t VALUES (2);');
    const own = (envId: string, dir: string) =>
      plan(
        [
          db({ env: { POSTGRES_PASSWORD: 'pw', MAYFLY_URL_WEB: `http://web--${envId}.localhost/` } }),
          migrate({
            image: {
              build: { context: `/data/envs/${envId}/src/db`, dockerfile: 'Dockerfile', args: {} },
              ref: 'mayfly-build/migrate:0123456789abcdef',
            },
            mounts: [{ type: 'bind', source: dir, target: '/seed', readOnly: true }],
          }),
        ],
        envId,
      );
    try {
      const one = await key(own('env1', dirs[0]!));
      expect(await key(own('env2', dirs[1]!))).toBe(one);
      expect(await key(own('env3', dirs[2]!))).not.toBe(one);
      // A URL variable the template sets itself is no environment's own: what it says counts.
      const set = (url: string) => {
        const p = own('env1', dirs[0]!);
        return {
          ...p,
          workloads: p.workloads.map((w) =>
            w.name === 'db' ? { ...w, env: { ...w.env, MAYFLY_URL_WEB: url } } : w,
          ),
        };
      };
      expect(await key(set('http://web--env1.localhost/'))).toBe(one);
      expect(await key(set('http://evil.example/'))).not.toBe(one);
      expect(await key(set('http://web--env1.localhost:8080/'))).not.toBe(one);
    } finally {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  });

  it('follows dependencies of dependencies', async () => {
    const cache = (env: Record<string, string>) => workload({ name: 'cache', env });
    const withCache = (env: Record<string, string>) =>
      plan([cache(env), db({ dependsOn: [{ name: 'cache', condition: 'service_started' }] }), migrate()]);
    expect(await key(withCache({ A: '1' }))).not.toBe(await key(withCache({ A: '2' })));
  });

  it('covers every seed job of the template: all of them run before any snapshot is taken', async () => {
    const files = (command: string[]) =>
      workload({ name: 'files', kind: 'job', image: 'mayfly-build/files:1', command });
    const both = (command: string[]): EnvPlan => ({
      ...plan([db(), migrate(), files(command), web()]),
      volumes: [
        { name: 'pg', data: { seededBy: 'migrate' } },
        { name: 'uploads', data: { seededBy: 'files' } },
      ],
    });
    expect(await key(both(['fill']))).not.toBe(await key(both(['fill', '--more'])));
    expect(await key(both(['fill']))).toBe(await key(both(['fill'])));
  });

  it('a seed reading a volume cloned from a named snapshot is keyed by which snapshot it is', async () => {
    const onDump = (snapshotId: string) =>
      seedKey(
        plan([
          db({ mounts: [{ type: 'volume', source: 'dump', target: '/dump', readOnly: true }] }),
          migrate(),
        ]),
        'pg',
        'migrate',
        async () => null,
        { dump: snapshotId },
      );
    expect(await onDump('snap1')).toBe(await onDump('snap1'));
    expect(await onDump('snap1')).not.toBe(await onDump('snap2'));
  });

  it('has no key for bound files past what it hashes, and never waits on a FIFO', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mayfly-seed-big-'));
    const bound = () =>
      key(
        plan([db(), migrate({ mounts: [{ type: 'bind', source: dir, target: '/seed', readOnly: true }] })]),
      );
    try {
      execFileSync('mkfifo', [join(dir, 'pipe')]);
      expect(await bound()).toMatch(/^[0-9a-f]{64}$/);
      // Two GiB of holes: left out, the key would not change with them.
      writeFileSync(join(dir, 'dump.sql'), '');
      truncateSync(join(dir, 'dump.sql'), 2 * 1024 ** 3);
      await expect(bound()).rejects.toThrow(
        new SeedNotKeyableError('its bound files hold more than 1 GiB to hash'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names its snapshot after the volume and the start of the key, safely', () => {
    expect(seededSnapshotName('db-data', 'abcdef0123456789')).toBe('db-data-abcdef012345');
    expect(seededSnapshotName('My_Data/..', 'abcdef0123456789')).toBe('my_data-..-abcdef012345');
    expect(seededSnapshotName('___', 'abcdef0123456789')).toBe('data-abcdef012345');
    expect(seededSnapshotName('x'.repeat(200), 'k'.repeat(64))).toHaveLength(53);
  });
});
