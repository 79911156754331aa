/**
 * The warm pool against the real Docker Engine, through the API: sandboxes kept ready, handed out
 * once and fresh, bounded by the memory budget, replaced when they die, removed when the server
 * stops — and, after a crash, removed by the next start instead of handed out; replicas on one
 * PostgreSQL keep off each other's pools, and remove a dead one's.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { SandboxInfo, SandboxTemplateInfo } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  type ControlPlane,
  callApi,
  startControlPlane,
  stopControlPlane,
} from '../test-support/control-plane-process.js';
import { createPgSchema } from '../test-support/pg-schema.js';
import { containerExists, runInSandbox } from '../test-support/sandboxes.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';
import { POOL_OWNER_LABEL, poolOwnerTag } from './warm-pool.js';

/** Ids of the pooled (labelled, not yet handed out) sandboxes of one installation. */
function pooledIds(instance: string): string[] {
  return execFileSync(
    'docker',
    [
      'ps',
      '-a',
      '--filter',
      'label=mayfly.pool=base',
      '--filter',
      `label=mayfly.instance=${instance}`,
      '--format',
      '{{.Label "mayfly.sandbox"}}',
    ],
    { encoding: 'utf8' },
  )
    .split('\n')
    .filter(Boolean);
}

async function baseLevel(api: TestServer['api']): Promise<SandboxTemplateInfo['pool']> {
  const { body } = await api<{ items: SandboxTemplateInfo[] }>('GET', '/v1/sandbox-templates');
  return body.items.find((t) => t.name === 'base')!.pool;
}

const poolFull = (api: TestServer['api'], ready: number) =>
  until(
    `${ready} base sandboxes ready in the pool`,
    async () => ((await baseLevel(api)).ready === ready ? true : undefined),
    120_000,
    100,
  );

describe('the warm pool', () => {
  let t: TestServer;
  let instance: string;
  const killAll = async () => {
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
  };

  beforeAll(async () => {
    t = await startTestServer({ sandboxPool: { base: 2, code: 0 } });
    instance = t.server.store.instanceId;
    // The first create builds the template when no earlier test did; the pool fills from then on.
    const first = await t.api<SandboxInfo>('POST', '/v1/sandboxes', {});
    expect(first.status).toBe(201);
    await t.api('DELETE', `/v1/sandboxes/${first.body.id}`);
    await poolFull(t.api, 2);
  }, 300_000);
  afterAll(async () => {
    await killAll();
    await t?.close();
  });

  it('keeps sandboxes ready that are labelled but not listed, and a create takes one that ran nothing', async () => {
    const pooled = pooledIds(instance);
    expect(pooled).toHaveLength(2);
    const listed = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    expect(listed.body.items.map((s) => s.id)).not.toContain(pooled[0]);

    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', {
      envs: { WHO: 'pooled' },
      metadata: { from: 'pool' },
      timeoutMs: 60_000,
    });
    expect(created.status).toBe(201);
    const id = created.body.id;
    expect(pooled).toContain(id);
    expect(created.body.metadata).toEqual({ from: 'pool' });
    // Its time counts from the claim, not from when the pool made it.
    expect(Date.parse(created.body.expiresAt) - Date.parse(created.body.startedAt)).toBe(60_000);
    expect(Date.parse(created.body.startedAt)).toBeGreaterThan(Date.now() - 10_000);

    // (The image has no ps: the names of every process, from /proc, by the shell's own read.)
    const fresh = await runInSandbox(t, id, {
      cmd: 'echo "$WHO"; for f in /proc/[0-9]*/comm; do read -r c < "$f" && printf "%s " "$c"; done; echo; ls -A ~ /tmp | tr "\\n" " "',
    });
    expect(fresh.end?.exitCode).toBe(0);
    const [who, processes, files] = fresh.stdout!.split('\n');
    expect(who).toBe('pooled');
    // Only what the pool started (Docker's init, the agent) besides this command's shells.
    const others = new Set(
      processes!
        .trim()
        .split(' ')
        .filter((name) => !['sh', 'ls', 'tr'].includes(name)),
    );
    expect([...others].sort()).toEqual(['docker-init', 'mayfly-agent']);
    expect(files).toBe('/home/user:  /tmp: ');
    await poolFull(t.api, 2);
  });

  it('never hands one sandbox out twice: concurrent creates get different ones, all working', async () => {
    const created = await Promise.all(
      Array.from({ length: 5 }, () => t.api<SandboxInfo>('POST', '/v1/sandboxes', {})),
    );
    expect(created.map((c) => c.status)).toEqual([201, 201, 201, 201, 201]);
    const ids = created.map((c) => c.body.id);
    expect(new Set(ids).size).toBe(5);
    for (const id of ids) expect((await runInSandbox(t, id, { cmd: 'echo ok' })).stdout).toBe('ok\n');
    await killAll();
    await poolFull(t.api, 2);
  });

  it('makes a sandbox asked with other limits for it instead of taking a pooled one', async () => {
    const pooled = pooledIds(instance);
    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', { memoryMb: 256 });
    expect(created.status).toBe(201);
    expect(pooled).not.toContain(created.body.id);
    const limit = await runInSandbox(t, created.body.id, {
      cmd: 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max',
    });
    expect(limit.stdout).toBe(`${256 * 1024 * 1024}\n`);
    await t.api('DELETE', `/v1/sandboxes/${created.body.id}`);
    expect(pooledIds(instance).sort()).toEqual(pooled.sort());
  });

  it('replaces a pooled sandbox that died', async () => {
    const [victim] = pooledIds(instance);
    execFileSync('docker', ['kill', `mayfly-sbx-${victim}`]);
    await until(
      'the dead pooled sandbox replaced',
      () => {
        const now = pooledIds(instance);
        return !now.includes(victim!) && now.length === 2 ? true : undefined;
      },
      60_000,
      100,
    );
    await poolFull(t.api, 2);
  });

  it('holds at most its memory budget, shared between templates', async () => {
    const small = await startTestServer({
      sandboxPool: { base: 5, code: 0 },
      sandboxPoolMemoryBytes: '1536m',
    });
    try {
      // Another template with a larger pool of smaller sandboxes (the agent needs nothing of the image).
      const made = await small.api('POST', '/v1/sandbox-templates', {
        name: 'pool-fair',
        image: 'mayfly/debian:bookworm',
        memoryMb: 256,
        diskMb: 64,
        pool: 10,
      });
      expect(made.status).toBe(201);
      await until(
        'both pools filled as far as the budget goes',
        async () => {
          await small.server.sandboxes!.poolSettled();
          const { body } = await small.api<{ items: SandboxTemplateInfo[] }>('GET', '/v1/sandbox-templates');
          const pools = Object.fromEntries(body.items.map((t) => [t.name, t.pool]));
          return pools.base?.ready === 2 && pools['pool-fair']?.ready === 2 ? pools : undefined;
        },
        120_000,
        200,
      );
      // 2 × 512 + 2 × 256 MiB = 1.5 GiB: neither template took the budget before the other had any.
      const { body } = await small.api<{ items: SandboxTemplateInfo[] }>('GET', '/v1/sandbox-templates');
      expect(Object.fromEntries(body.items.map((t) => [t.name, t.pool]))).toEqual({
        base: { size: 5, ready: 2, starting: 0 },
        code: { size: 0, ready: 0, starting: 0 },
        'pool-fair': { size: 10, ready: 2, starting: 0 },
      });
    } finally {
      await small.close();
    }
    // Stopping the server removed its pool.
    expect(pooledIds(small.server.store.instanceId)).toEqual([]);
    expect(
      execFileSync(
        'docker',
        ['ps', '-aq', '--filter', `label=mayfly.instance=${small.server.store.instanceId}`],
        {
          encoding: 'utf8',
        },
      ).trim(),
    ).toBe('');
  });

  it('after a crash, the next start removes what the old process had pooled instead of handing it out', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-pool-crash-'));
    try {
      const poolContainers = () =>
        execFileSync(
          'docker',
          ['ps', '-a', '--filter', 'label=mayfly.pool=base', '--format', '{{.Label "mayfly.sandbox"}}'],
          { encoding: 'utf8' },
        )
          .split('\n')
          .filter(Boolean);
      const earlier = new Set(poolContainers());
      const before = await startControlPlane(dataDir, undefined, { sandboxPool: { base: 2, code: 0 } });
      // Whatever fails below, this process does not outlive the test.
      const killBefore = () => stopControlPlane(before, 'SIGKILL');
      onTestFinished(killBefore);
      await until(
        'the crashing server’s pool full',
        async () => {
          const body = await callApi<{ items: SandboxTemplateInfo[] }>(
            before,
            'GET',
            '/v1/sandbox-templates',
          );
          return body.items.find((x) => x.name === 'base')?.pool.ready === 2 ? true : undefined;
        },
        120_000,
        100,
      );
      const orphans = poolContainers().filter((id) => !earlier.has(id));
      expect(orphans).toHaveLength(2);
      await stopControlPlane(before, 'SIGKILL');
      expect(orphans.every(containerExists)).toBe(true);

      const after = await startControlPlane(dataDir, undefined, { sandboxPool: { base: 2, code: 0 } });
      try {
        const created = await callApi<SandboxInfo>(after, 'POST', '/v1/sandboxes', {});
        expect(orphans).not.toContain(created.id);
        await until('the old pool removed', () => (orphans.some(containerExists) ? undefined : true), 30_000);
        await callApi(after, 'DELETE', `/v1/sandboxes/${created.id}`);
      } finally {
        await stopControlPlane(after);
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 300_000);

  it('replicas on one PostgreSQL keep off each other’s pools, and remove the pool of one that died', async () => {
    const schema = await createPgSchema();
    const dirs: string[] = [];
    const planes: Awaited<ReturnType<typeof startControlPlane>>[] = [];
    onTestFinished(async () => {
      await Promise.all(planes.map((p) => stopControlPlane(p, 'SIGKILL')));
      await schema.drop();
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    });
    const suffix = Math.random().toString(36).slice(2, 8);
    const replicas = ['a', 'b', 'c'].map((n) => `pool-${n}-${suffix}`);
    /** The pooled sandboxes of one replica, by the owner label it gives them. */
    const pooledOf = (replica: string) =>
      execFileSync(
        'docker',
        [
          'ps',
          '-a',
          '--filter',
          `label=${POOL_OWNER_LABEL}=${poolOwnerTag(replica)}`,
          '--format',
          '{{.Label "mayfly.sandbox"}}',
        ],
        { encoding: 'utf8' },
      )
        .split('\n')
        .filter(Boolean);
    for (const replica of replicas) {
      const dir = await mkdtemp(path.join(os.tmpdir(), `mayfly-${replica}-`));
      dirs.push(dir);
      // (leaseMs 5 s in serve-process: a replica silent for 5 s counts as gone.)
      planes.push(
        await startControlPlane(dir, schema.url, { replicaId: replica, sandboxPool: { base: 1, code: 0 } }),
      );
    }
    const [a, b, c] = planes as [ControlPlane, ControlPlane, ControlPlane];
    for (const plane of planes)
      await until(
        'every replica’s pool full',
        async () => {
          const body = await callApi<{ items: SandboxTemplateInfo[] }>(plane, 'GET', '/v1/sandbox-templates');
          return body.items.find((x) => x.name === 'base')?.pool.ready === 1 ? true : undefined;
        },
        120_000,
        100,
      );
    const pooled = replicas.map(pooledOf);
    expect(pooled.map((ids) => ids.length)).toEqual([1, 1, 1]);

    // Each replica reconciles every 5 s: over 12 s each has looked at the others' pooled sandboxes
    // at least twice, and left them alone (each of them unrecorded and not in its own pool).
    const watchedUntil = Date.now() + 12_000;
    while (Date.now() < watchedUntil) {
      expect(pooled.flat().filter((id) => !containerExists(id))).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }

    // c dies: once its time is up, a or b removes what it had pooled; theirs stay.
    await stopControlPlane(c, 'SIGKILL');
    await until(
      'the dead replica’s pool removed',
      () => (pooled[2]!.some(containerExists) ? undefined : true),
      60_000,
    );
    expect([...pooled[0]!, ...pooled[1]!].filter((id) => !containerExists(id))).toEqual([]);
    // and a sandbox is still made from the pool of the replica asked
    const created = await callApi<SandboxInfo>(b, 'POST', '/v1/sandboxes', {});
    expect(created.id).toBe(pooled[1]![0]);
    await callApi(a, 'DELETE', `/v1/sandboxes/${created.id}`);
    await until(
      'the sandbox killed through the other replica',
      () => (containerExists(created.id) ? undefined : true),
      30_000,
    );

    // Stopped, each removes its own pool.
    await stopControlPlane(a);
    await stopControlPlane(b);
    expect(replicas.flatMap(pooledOf)).toEqual([]);
  }, 300_000);
});
