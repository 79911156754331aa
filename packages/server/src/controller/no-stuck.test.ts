/**
 * Nothing gets stuck, nothing is silently retried forever: a crash-looping service fails with its
 * last output kept (readable after its containers are gone), a repair re-uses the images built for
 * the environment even when its checkout is gone, a destroy sent to one replica pre-empts a
 * bring-up on another within seconds, and a replica cut off from PostgreSQL stops before its lease
 * could expire, so two replicas never drive one environment.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  callApi,
  startControlPlane,
  stopControlPlane,
  waitForState,
} from '../test-support/control-plane-process.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';
import { createPgSchema, type PgSchema } from '../test-support/pg-schema.js';
import { nonceBuildProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { composeTemplate, until } from '../test-support/until.js';

const compose = composeTemplate;
const containersOf = (envId: string) =>
  execFileSync('docker', ['ps', '-aq', '--filter', `label=mayfly.env=${envId}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);

/** A service that never gets healthy until the test creates /tmp/ok in it. */
const GATED = `  slow:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    healthcheck: { test: ["CMD", "test", "-e", "/tmp/ok"], interval: 1s, retries: 100000 }
`;

describe('no stuck environments (one server)', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ gcIntervalMs: 500 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('a crash-looping service fails with its last output kept, readable after its containers are gone', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'crashloop',
      template: compose(`  crasher:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo starting up; echo cannot open the database >&2; exit 3"]
    restart: always
`),
    });
    // Failed either while it comes up (restarted by Docker again and again), or after being
    // repaired again and again once it looked ready.
    const env = await t.waitForState(res.body.id, ['failed'], 90_000);
    expect(env.failure?.step).toBe('start:crasher');
    expect(env.failure?.reason).toMatch(/cannot open the database/);
    await until('the containers to go', () => (containersOf(env.id).length === 0 ? true : undefined));
    const logs = await t.api<string>('GET', '/v1/environments/crashloop/logs?service=crasher');
    expect(logs.status).toBe(200);
    expect(logs.body).toContain('cannot open the database');
    const merged = await t.api<string>('GET', '/v1/environments/crashloop/logs');
    expect(merged.body).toMatch(/^crasher \| /m);
    await t.api('DELETE', '/v1/environments/crashloop');
    await t.waitForState(env.id, ['destroyed']);
    // Kept lines outlive the teardown too, as long as the record does.
    expect((await t.api<string>('GET', `/v1/environments/${env.id}/logs?service=crasher`)).body).toContain(
      'cannot open the database',
    );
  });

  it('a repair re-uses the image built for the environment, even when its checkout is gone', async () => {
    const dir = await nonceBuildProject();
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'rebuildless',
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    const env = await t.waitForState(res.body.id, ['ready', 'failed']);
    expect(env.failure).toBeNull();
    const image = execFileSync('docker', ['inspect', '-f', '{{.Config.Image}}', `mayfly-${env.id}-app-1`], {
      encoding: 'utf8',
    }).trim();
    const seen = (await t.events(env.id)).length;
    await rm(t.server.workspaces.sourceDir(env.id), { recursive: true, force: true });
    execFileSync('docker', ['rm', '-f', `mayfly-${env.id}-app-1`]);
    await until('a repair', async () =>
      (await t.events(env.id)).some((e) => e.message.startsWith('repairing')) ? true : undefined,
    );
    const repaired = await t.waitForState(env.id, ['ready', 'failed']);
    expect(repaired.failure).toBeNull();
    const after = (await t.events(env.id)).slice(seen).map((e) => e.message);
    expect(after).toContain(`app: image reused (${image})`);
    expect(after.some((m) => /Step \d|image building/.test(m))).toBe(false);
    await t.api('DELETE', '/v1/environments/rebuildless');
    await t.waitForState(env.id, ['destroyed']);
    execFileSync('docker', ['rmi', image]);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('replicas on PostgreSQL', () => {
  let schema: PgSchema;
  const dirs: string[] = [];
  const planes: ControlPlane[] = [];
  const start = async (replicaId: string, dbUrl: string) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), `mayfly-${replicaId}-`));
    dirs.push(dir);
    const plane = await startControlPlane(dir, dbUrl, { replicaId }, { stderr: 'pipe' });
    planes.push(plane);
    return plane;
  };
  const leaseOwner = async (envId: string) =>
    (await schema.rows(`select lease_owner from environments where id = '${envId}'`))[0]?.lease_owner as
      | string
      | null;
  beforeAll(async () => {
    schema = await createPgSchema();
  });
  afterAll(async () => {
    for (const plane of planes) await stopControlPlane(plane, 'SIGKILL');
    // Whatever a failed test left: one last replica destroys it.
    const last = await start('cleanup', schema.url);
    for (const env of await callApi<{ items: Environment[] }>(last, 'GET', '/v1/environments').then(
      (r) => r.items,
    )) {
      await callApi(last, 'DELETE', `/v1/environments/${env.id}`);
      await waitForState(last, env.id, ['destroyed']);
    }
    await stopControlPlane(last);
    await schema.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('NUL bytes in container output never break an insert on PostgreSQL', async () => {
    const plane = await start('nul', schema.url);
    const env = await callApi<Environment>(plane, 'POST', '/v1/environments', {
      name: 'nul-bytes',
      template: compose(`  job:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "printf 'bad\\\\000byte\\\\n' >&2; exit 2"]
    x-mayfly: { job: true }
`),
    });
    const failed = await waitForState(plane, env.id, ['failed', 'ready']);
    expect(failed.failure?.step).toBe('job:job');
    expect(failed.failure?.reason).toMatch(/bad.byte/);
    expect(failed.failure?.reason).not.toContain('\0');
    const res = await fetch(`${plane.url}/v1/environments/${env.id}/logs?service=job`, {
      headers: { authorization: `Bearer ${plane.token}` },
    });
    expect(await res.text()).toMatch(/bad.byte/);
    await callApi(plane, 'DELETE', `/v1/environments/${env.id}`);
    await waitForState(plane, env.id, ['destroyed']);
    await stopControlPlane(plane);
  });

  it('a destroy sent to one replica pre-empts a bring-up on another within seconds', async () => {
    const a = await start('replica-a', schema.url);
    const b = await start('replica-b', schema.url);
    const env = await callApi<Environment>(a, 'POST', '/v1/environments', {
      name: 'preempt',
      template: compose(GATED),
    });
    await waitForState(a, env.id, ['creating']);
    const owner = await until(
      'a replica to hold the lease',
      async () => (await leaseOwner(env.id)) ?? undefined,
    );
    const other = owner === 'replica-a' ? b : a;
    const asked = Date.now();
    await callApi(other, 'DELETE', `/v1/environments/${env.id}`);
    await waitForState(other, env.id, ['destroyed'], 30_000);
    const tookMs = Date.now() - asked;
    // The bring-up would have waited for a health check that never passes: it was pre-empted.
    expect(tookMs).toBeLessThan(15_000);
    expect(labelledObjects().filter((o) => o.includes(env.id))).toEqual([]);
    console.info(`destroy pre-empted a bring-up on the other replica in ${tookMs} ms`);
    // Only the next test's replicas may work on its environment.
    await Promise.all([stopControlPlane(a), stopControlPlane(b)]);
  });

  it('a replica cut off from PostgreSQL past its lease stops, and the other finishes alone', async () => {
    const proxy = await startTcpProxy();
    const proxied = new URL(schema.url);
    proxied.port = String(proxy.port);
    const a = await start('cut-off', proxied.toString());
    const env = await callApi<Environment>(a, 'POST', '/v1/environments', {
      name: 'fenced',
      template: compose(GATED),
    });
    await waitForState(a, env.id, ['creating']);
    await until('replica A to hold the lease', async () =>
      (await leaseOwner(env.id)) === 'cut-off' ? true : undefined,
    );
    proxy.partition();
    const b = await start('survivor', schema.url);
    // B takes over once A's lease has expired on the database's clock (5 s leases in tests).
    await until(
      'B to hold the lease',
      async () => ((await leaseOwner(env.id)) === 'survivor' ? true : undefined),
      30_000,
    );
    expect(a.stderr()).toMatch(/lost the work lease/);
    const slow = containersOf(env.id);
    expect(slow).toHaveLength(1);
    execFileSync('docker', ['exec', slow[0]!, 'touch', '/tmp/ok']);
    expect((await waitForState(b, env.id, ['ready', 'failed'])).state).toBe('ready');
    // A comes back: it must not undo or repeat anything.
    proxy.heal();
    await new Promise((r) => setTimeout(r, 3_000)); // A's next passes; nothing observable to await
    const final = await callApi<Environment>(b, 'GET', `/v1/environments/${env.id}`);
    expect(final).toMatchObject({ state: 'ready', failure: null });
    expect(containersOf(env.id)).toEqual(slow);
    await callApi(b, 'DELETE', `/v1/environments/${env.id}`);
    await waitForState(b, env.id, ['destroyed']);
    await Promise.all([stopControlPlane(a, 'SIGKILL'), stopControlPlane(b)]);
    proxy.close();
  });
});

/**
 * A TCP proxy to the test PostgreSQL that can be partitioned: every byte stops flowing both ways
 * (connections stay open, as with a network that drops packets), and heals when told.
 */
async function startTcpProxy() {
  const target = new URL(process.env.MAYFLY_TEST_PG_URL!);
  const pairs: [net.Socket, net.Socket][] = [];
  let cut = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    pairs.push([client, upstream]);
    client.on('data', (d) => {
      if (!cut) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!cut) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    partition: () => {
      cut = true;
    },
    heal: () => {
      // Connections that lost bytes meanwhile are broken for good: close them, new ones work.
      cut = false;
      for (const [client, upstream] of pairs.splice(0)) {
        client.destroy();
        upstream.destroy();
      }
    },
    close: () => {
      for (const [client, upstream] of pairs.splice(0)) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}
