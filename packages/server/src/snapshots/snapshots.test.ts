/**
 * Seeded volumes on the real Docker Engine, through a control plane in its own process (so it can
 * be SIGKILLed mid-snapshot): the first environment runs the seed job and keeps a snapshot; the
 * next starts from a clone and does not run the job; writes stay in their environment; a changed
 * seed, `noSnapshot` and a snapshot cut short by a crash each seed again; a snapshot made by hand
 * can be named by a template. Nothing is left: environments, snapshots and their helpers.
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EnvEvent, Environment, Snapshot } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import {
  type ControlPlane,
  callApi as call,
  destroyAll,
  startControlPlane,
  stopControlPlane,
  uploadBundle,
  waitForState,
} from '../test-support/control-plane-process.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';
import { until } from '../test-support/until.js';

const EXAMPLE = fileURLToPath(new URL('../../../../examples/shop', import.meta.url));
const HEALTH = `["CMD", "test", "-e", "/tmp/up"]`;
/**
 * `store` writes the volume the whole time (a line a second: a writer the snapshot must stop);
 * `seed` appends `row-$SEED` once (and `$BULK` MiB of zeros, to make the copy take a while).
 */
const template = (seed: string, extra = '', bulkMiB = 0) => `
services:
  store:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "touch /tmp/up; while true; do date +%s >> /data/ticks; sleep 1; done"]
    volumes: ["data:/data"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 30 }
  seed:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo row-$$SEED >> /data/rows; if [ $$BULK -gt 0 ]; then dd if=/dev/zero of=/data/bulk bs=1M count=$$BULK status=none; fi"]
    environment: { SEED: "${seed}", BULK: "${bulkMiB}" }
    volumes: ["data:/data"]
    depends_on: { store: { condition: service_healthy } }
  app:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "touch /tmp/up; exec sleep 100000"]
    # Routed: every workload gets MAYFLY_URL_APP, its own environment's URL (not part of a seed).
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 30 }
    depends_on: { seed: { condition: service_completed_successfully } }
volumes:
  data: {}
x-mayfly:
  data:
    data: ${extra || '{ seededBy: seed }'}
`;

const docker = (...args: string[]) =>
  execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
/** What the environment's `store` container sees in its volume. */
const rowsOf = (envId: string) => docker('exec', `mayfly-${envId}-store-1`, 'cat', '/data/rows');
const containersOf = (envId: string, service: string) =>
  docker(
    'ps',
    '-a',
    '-q',
    '--filter',
    `label=mayfly.env=${envId}`,
    '--filter',
    `label=mayfly.service=${service}`,
  )
    .split('\n')
    .filter(Boolean);

describe('seeded volumes: seeded once, snapshotted, cloned', () => {
  let dataDir: string;
  let plane: ControlPlane;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-snapshots-'));
    // Small quotas, to reach them: two snapshots by hand, two seeds per project.
    plane = await startControlPlane(dataDir, undefined, {
      snapshotsPerProject: 2,
      seedSnapshotsPerProject: 2,
    });
  });
  afterAll(async () => {
    await destroyAll(plane);
    for (const s of await snapshots()) await call(plane, 'DELETE', `/v1/snapshots/${s.project}/${s.name}`);
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  });

  const snapshots = () => call<{ items: Snapshot[] }>(plane, 'GET', '/v1/snapshots').then((r) => r.items);
  const events = (env: string) =>
    call<{ items: EnvEvent[] }>(plane, 'GET', `/v1/environments/${env}/events`).then((r) =>
      r.items.map((e) => e.message),
    );
  const up = async (name: string, content: string, extra: Record<string, unknown> = {}) => {
    await call<Environment>(plane, 'POST', '/v1/environments', {
      name,
      template: { filename: 'compose.yaml', content },
      ...extra,
    });
    const env = await waitForState(plane, name, ['ready', 'failed']);
    expect(env).toMatchObject({ state: 'ready', failure: null });
    return env;
  };
  const destroy = async (name: string) => {
    await call(plane, 'DELETE', `/v1/environments/${name}`);
    await waitForState(plane, name, ['destroyed']);
  };

  it('seeds the first environment and keeps a snapshot; the next is a clone and skips the job', async () => {
    const first = await up('seeded-a', template('1'));
    expect(rowsOf(first.id)).toBe('row-1');
    const seededLog = await events('seeded-a');
    expect(seededLog).toContain('seed: completed');
    expect(seededLog.some((m) => /^data: snapshot data-[0-9a-f]{12} taken: /.test(m))).toBe(true);
    const [kept] = await snapshots();
    expect(kept).toMatchObject({
      project: 'default',
      kind: 'seed',
      volume: 'data',
      state: 'ready',
      sourceEnvironment: { id: first.id, name: 'seeded-a' },
    });
    expect(kept!.name).toBe(`data-${kept!.seedKey!.slice(0, 12)}`);
    expect(kept!.sizeBytes).toBeGreaterThan(0);
    // The writer was stopped for the copy and runs again.
    expect(docker('inspect', '-f', '{{.State.Status}}', `mayfly-${first.id}-store-1`)).toBe('running');

    const second = await up('seeded-b', template('1'));
    const restoredLog = await events('seeded-b');
    expect(restoredLog).toContain(`data: restored from snapshot ${kept!.name}`);
    expect(restoredLog).toContain(`seed: not run: data restored from snapshot ${kept!.name}`);
    expect(restoredLog).not.toContain('seed: started');
    expect(containersOf(second.id, 'seed')).toEqual([]);
    expect(rowsOf(second.id)).toBe('row-1');
    expect((await snapshots()).map((s) => s.id)).toEqual([kept!.id]);

    // Writes stay where they are made: not in the other environment, nor in the snapshot.
    docker('exec', `mayfly-${first.id}-store-1`, 'sh', '-c', 'echo written-in-a >> /data/rows');
    docker('exec', `mayfly-${second.id}-store-1`, 'sh', '-c', 'echo written-in-b >> /data/rows');
    expect(rowsOf(first.id)).toBe('row-1\nwritten-in-a');
    expect(rowsOf(second.id)).toBe('row-1\nwritten-in-b');
    const third = await up('seeded-c', template('1'));
    expect(rowsOf(third.id)).toBe('row-1');
    await Promise.all(['seeded-b', 'seeded-c'].map(destroy));

    // A snapshot made by hand, named by a template.
    await call(plane, 'POST', '/v1/environments/seeded-a/snapshots', { volume: 'data', name: 'golden' });
    const fromGolden = await up('golden-a', template('1', '{ snapshot: golden }'));
    // The job seeds nothing here (the volume comes from the snapshot): it runs, on top of it.
    expect(rowsOf(fromGolden.id)).toBe('row-1\nwritten-in-a\nrow-1');
    expect(await events('golden-a')).toContain('data: restored from snapshot golden');
    await Promise.all(['seeded-a', 'golden-a'].map(destroy));
    const manual = (await snapshots()).find((s) => s.name === 'golden');
    expect(manual).toMatchObject({ kind: 'manual', seedKey: null, state: 'ready' });
    await call(plane, 'DELETE', '/v1/snapshots/default/golden');
    expect((await snapshots()).map((s) => s.name)).toEqual([kept!.name]);

    // A snapshot the project does not have: the environment fails at that step, saying so.
    await call(plane, 'POST', '/v1/environments', {
      name: 'golden-b',
      template: { filename: 'compose.yaml', content: template('1', '{ snapshot: golden }') },
    });
    expect(await waitForState(plane, 'golden-b', ['ready', 'failed'])).toMatchObject({
      state: 'failed',
      failure: {
        step: 'restore:data',
        reason: 'project "default" has no snapshot named "golden" (make one with mayfly snapshot create)',
      },
    });
    await destroy('golden-b');
  });

  it('a service outside the seed cannot plant data in the snapshot later environments clone', async () => {
    // A pull request adds a service that writes the database the moment it starts: it depends on
    // nothing of the seed, so it is in no seed key, and would run while the seed does.
    const intruder = `
  intruder:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo planted >> /data/rows; exec sleep 100000"]
    volumes: ["data:/data"]
`;
    const withIntruder = template('plant').replace('\nvolumes:\n', `${intruder}volumes:\n`);
    expect(withIntruder).toContain('intruder:');
    const first = await up('plant-a', withIntruder);
    expect(await events('plant-a')).toContain(
      "app, intruder: held until the seed's snapshot is taken (only the seed runs before it)",
    );
    // It ran, after the snapshot: in this environment only.
    expect(rowsOf(first.id)).toBe('row-plant\nplanted');
    const second = await up('plant-b', withIntruder);
    expect(await events('plant-b')).toContain(
      'seed: not run: data restored from snapshot ' +
        (await snapshots()).find((s) => s.sourceEnvironment?.name === 'plant-a')!.name,
    );
    // The clone holds the seed's row alone; its own intruder's line comes after.
    expect(rowsOf(second.id)).toBe('row-plant\nplanted');
    await Promise.all(['plant-a', 'plant-b'].map(destroy));
  });

  it('refuses a snapshot by hand of what cannot be snapshotted, with why', async () => {
    const refused = async (env: string, body: unknown) => {
      const res = await fetch(`${plane.url}/v1/environments/${env}/snapshots`, {
        method: 'POST',
        headers: { authorization: `Bearer ${plane.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return {
        status: res.status,
        message: ((await res.json()) as { error?: { message: string } }).error?.message,
      };
    };
    expect(await refused('nowhere', { volume: 'data', name: 'x' })).toMatchObject({ status: 404 });
    await up('manual-a', template('1'));
    expect(await refused('manual-a', { volume: 'nope', name: 'x' })).toEqual({
      status: 400,
      message: 'environment "manual-a" has no volume "nope" (its volumes: data)',
    });
    for (const name of ['../etc', 'UPPER', '', 'a'.repeat(64), 'x y'])
      expect((await refused('manual-a', { volume: 'data', name })).status).toBe(400);
    expect((await refused('manual-a', { volume: 'data', name: 'x', extra: 1 })).status).toBe(400);
    await call(plane, 'POST', '/v1/environments/manual-a/snapshots', { volume: 'data', name: 'twice' });
    expect(await refused('manual-a', { volume: 'data', name: 'twice' })).toEqual({
      status: 409,
      message: 'project "default" already has a snapshot named "twice"',
    });
    // The project's quota of snapshots by hand: one more is refused with why, until one is removed.
    await call(plane, 'POST', '/v1/environments/manual-a/snapshots', { volume: 'data', name: 'second' });
    expect(await refused('manual-a', { volume: 'data', name: 'third' })).toEqual({
      status: 429,
      message:
        'project "default" keeps 2 snapshots made by hand, the most it may: remove one first (mayfly snapshot rm)',
    });
    expect((await snapshots()).map((s) => s.name)).not.toContain('third');
    await call(plane, 'DELETE', '/v1/snapshots/default/second');
    // A token of another project sees none of this project's snapshots, nor may touch them.
    const other = await call<{ token: string }>(plane, 'POST', '/v1/tokens', {
      name: 'other-project',
      scope: 'write',
      project: 'other',
    });
    const asOther = (method: string, url: string, body?: unknown) =>
      fetch(`${plane.url}${url}`, {
        method,
        headers: {
          authorization: `Bearer ${other.token}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    expect(await (await asOther('GET', '/v1/snapshots')).json()).toEqual({ items: [] });
    expect(await (await asOther('GET', '/v1/snapshots?project=default')).json()).toEqual({ items: [] });
    expect((await asOther('DELETE', '/v1/snapshots/default/twice')).status).toBe(404);
    expect(
      (await asOther('POST', '/v1/environments/manual-a/snapshots', { volume: 'data', name: 'stolen' }))
        .status,
    ).toBe(404);
    await call(plane, 'DELETE', '/v1/snapshots/default/twice');
    // Two at once: the writers are stopped for one copy, and nothing else may work on the
    // environment meanwhile — the other is refused with why, not run on top of it.
    const both = await Promise.all(
      ['one', 'two'].map((name) => refused('manual-a', { volume: 'data', name })),
    );
    const codes = both.map((r) => r.status).sort();
    expect(codes).toEqual([201, 409]);
    expect(both.find((r) => r.status === 409)!.message).toBe(
      'environment "manual-a" is busy (being brought up, updated, repaired, put to sleep or snapshotted): try again once it is done',
    );
    const made = ['one', 'two'][both.findIndex((r) => r.status === 201)];
    await call(plane, 'DELETE', `/v1/snapshots/default/${made}`);
    const gone = await fetch(`${plane.url}/v1/snapshots/default/twice`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${plane.token}` },
    });
    expect(gone.status).toBe(404);
    await destroy('manual-a');
  });

  it('a changed seed seeds again; noSnapshot seeds again and replaces the snapshot', async () => {
    const changed = await up('seeded-d', template('2'));
    expect(rowsOf(changed.id)).toBe('row-2');
    expect(await events('seeded-d')).toContain('seed: completed');
    const original = (await snapshots()).find((s) => s.sourceEnvironment.name === 'seeded-d')!;
    expect(original).toMatchObject({ state: 'ready', kind: 'seed' });

    const forced = await up('seeded-e', template('2'), { noSnapshot: true });
    expect(rowsOf(forced.id)).toBe('row-2');
    const log = await events('seeded-e');
    expect(log).toContain('seed: completed');
    expect(log).toContain('seed: seeds data from scratch (snapshots ignored)');
    const replaced = (await snapshots()).find((s) => s.name === original.name)!;
    expect(replaced.id).not.toBe(original.id);
    expect(replaced.sourceEnvironment.name).toBe('seeded-e');

    // Its volume pruned behind Mayfly's back: the next environment seeds again instead of failing.
    docker('volume', 'rm', `mayfly-snap-${replaced.id}`);
    const pruned = await up('seeded-f', template('2'));
    expect(rowsOf(pruned.id)).toBe('row-2');
    expect(await events('seeded-f')).toContain('seed: completed');
    expect((await snapshots()).find((s) => s.name === original.name)?.sourceEnvironment.name).toBe(
      'seeded-f',
    );
    await Promise.all(['seeded-d', 'seeded-e', 'seeded-f'].map(destroy));
  });

  it('a project keeps its most recently used seeds: a third removes the least recently used', async () => {
    const before = new Set((await snapshots()).map((s) => s.id));
    for (const seed of ['q1', 'q2', 'q3']) await up(`quota-${seed}`, template(seed));
    const seeds = (await snapshots()).filter((s) => s.kind === 'seed' && s.project === 'default');
    expect(seeds.length).toBe(2);
    const made = seeds.filter((s) => !before.has(s.id)).map((s) => s.sourceEnvironment.name);
    expect(made).toEqual(expect.arrayContaining(['quota-q3']));
    expect(made).not.toContain('quota-q1');
    expect(
      (await events('quota-q3')).some((m) =>
        /^snapshot data-[0-9a-f]{12} removed: the project keeps its 2 most recently used seeds$/.test(m),
      ),
    ).toBe(true);
    // What an environment says of its seed's snapshot is what is kept: q1's went.
    const dataOf = async (env: string) =>
      (await call<Environment>(plane, 'GET', `/v1/environments/${env}`)).data;
    expect(await dataOf('quota-q1')).toEqual([
      { volume: 'data', origin: 'seeded', snapshot: null, job: 'seed' },
    ]);
    const q3 = seeds.find((s) => s.sourceEnvironment.name === 'quota-q3')!;
    expect(await dataOf('quota-q3')).toEqual([
      { volume: 'data', origin: 'seeded', snapshot: q3.name, job: 'seed' },
    ]);
    await Promise.all(['quota-q1', 'quota-q2', 'quota-q3'].map(destroy));
  });

  it("the example's PostgreSQL: seeded once; a clone has its rows, not the other's writes", async () => {
    // The example's database and migrate job, as examples/shop/compose.yaml has them.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-snapshots-pg-'));
    await cp(path.join(EXAMPLE, 'db'), path.join(dir, 'db'), { recursive: true });
    const shop = parseYaml(await readFile(path.join(EXAMPLE, 'compose.yaml'), 'utf8')) as {
      services: Record<string, unknown>;
    };
    await writeFile(
      path.join(dir, 'compose.yaml'),
      stringifyYaml({
        services: { db: shop.services.db, migrate: shop.services.migrate },
        volumes: { 'db-data': {} },
        'x-mayfly': { data: { 'db-data': { seededBy: 'migrate' } } },
      }),
    );
    const sql = (envId: string, query: string) =>
      docker(
        'exec',
        '-e',
        'PGPASSWORD=shop-example-password',
        `mayfly-${envId}-db-1`,
        'psql',
        '-h',
        '127.0.0.1',
        '-U',
        'shop',
        '-d',
        'shop',
        '-tAc',
        query,
      );
    try {
      const bundle = async () => ({ filename: 'compose.yaml', bundle: await uploadBundle(plane, dir) });
      await call(plane, 'POST', '/v1/environments', { name: 'pg-a', template: await bundle() });
      const a = await waitForState(plane, 'pg-a', ['ready', 'failed'], 600_000);
      expect(a).toMatchObject({ state: 'ready', failure: null });
      const products = sql(a.id, "SELECT string_agg(sku, ',' ORDER BY sku) FROM products");
      expect(products).toBe('CAP-004,MUG-001,NTB-005,STK-003,TEE-002');

      await call(plane, 'POST', '/v1/environments', { name: 'pg-b', template: await bundle() });
      const b = await waitForState(plane, 'pg-b', ['ready', 'failed'], 600_000);
      expect(b).toMatchObject({ state: 'ready', failure: null });
      expect(b.data).toEqual([
        {
          volume: 'db-data',
          origin: 'restored',
          snapshot: expect.stringMatching(/^db-data-/),
          job: 'migrate',
        },
      ]);
      expect(containersOf(b.id, 'migrate')).toEqual([]);
      // PostgreSQL was stopped for the copy (the example commits asynchronously: a frozen copy
      // could miss the seed's last transactions); the clone starts on it and has every row.
      expect(sql(b.id, "SELECT string_agg(sku, ',' ORDER BY sku) FROM products")).toBe(products);
      expect(sql(b.id, 'SELECT count(*) FROM schema_migrations')).toBe(
        sql(a.id, 'SELECT count(*) FROM schema_migrations'),
      );
      sql(a.id, "INSERT INTO products (sku, name, price_cents) VALUES ('ONLY-A', 'in a', 1)");
      sql(b.id, "DELETE FROM products WHERE sku = 'MUG-001'");
      expect(sql(a.id, 'SELECT count(*) FROM products')).toBe('6');
      expect(sql(b.id, 'SELECT count(*) FROM products')).toBe('4');
      await Promise.all(['pg-a', 'pg-b'].map(destroy));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a kill while the snapshot is taken: the writers start again, nothing half made is used or left', async () => {
    for (const s of await snapshots()) await call(plane, 'DELETE', `/v1/snapshots/${s.project}/${s.name}`);
    const content = template('3', '', 400);
    const created = await call<Environment>(plane, 'POST', '/v1/environments', {
      name: 'killed-a',
      template: { filename: 'compose.yaml', content },
    });
    const store = `mayfly-${created.id}-store-1`;
    // Killed while the copy runs: the writer stopped, the snapshot's helper copying.
    await until(
      'the copy under way',
      () => {
        const helper = docker(
          'ps',
          '-q',
          '--filter',
          `label=mayfly.env=${created.id}`,
          '--filter',
          'label=mayfly.helper=snapshot',
        );
        const writer = helper ? docker('inspect', '-f', '{{.State.Status}}', store) : '';
        return writer === 'exited' ? true : undefined;
      },
      120_000,
      20,
    );
    await stopControlPlane(plane, 'SIGKILL');
    plane = await startControlPlane(dataDir);
    const env = await waitForState(plane, 'killed-a', ['ready', 'failed']);
    expect(env).toMatchObject({ state: 'ready', failure: null });
    expect(docker('inspect', '-f', '{{.State.Status}}', store)).toBe('running');
    // The half-made snapshot, its volume and its helper are collected; none is ever cloned.
    await until('the half-made snapshot collected', async () =>
      (await snapshots()).length === 0 && !labelledObjects().some((o) => o.includes('mayfly-snap-'))
        ? true
        : undefined,
    );
    const next = await up('killed-b', content);
    expect(await events('killed-b')).toContain('seed: completed');
    expect(rowsOf(next.id)).toBe('row-3');
    expect((await snapshots()).map((s) => s.state)).toEqual(['ready']);
    await Promise.all(['killed-a', 'killed-b'].map(destroy));
  });
});
