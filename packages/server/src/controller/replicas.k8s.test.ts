/**
 * Two control-plane replicas on one PostgreSQL, running environments on the test cluster
 * (MAYFLY_TEST_KUBECONFIG): environments are created through either; the replica driving a create
 * is SIGKILLed while its job runs, and the one driving a destroy while the namespace goes; the
 * other converges both once the lease expires, and the job is not run a second time.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BatchV1Api, KubeConfig } from '@kubernetes/client-node';
import type { EnvEvent, Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespaceName, objectName } from '../runtime/kubernetes/manifests.js';
import {
  type ControlPlane,
  callApi,
  destroyAll,
  startControlPlane,
  stopControlPlane,
  waitForState,
} from '../test-support/control-plane-process.js';
import { roleKubeconfig } from '../test-support/deploy-manifests.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { clusterObjects } from '../test-support/leak-check.js';
import { createPgSchema, type PgSchema } from '../test-support/pg-schema.js';
import { until } from '../test-support/until.js';

const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
/** The replicas act with the role deploy/kubernetes grants Mayfly. */
const asMayfly = kubeconfig ? await roleKubeconfig(kubeconfig) : undefined;

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;
// db → a job that takes a few seconds (so a kill lands while it runs) → web.
const TEMPLATE = `
services:
  db:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
  migrate:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 8; echo migrated"]
    depends_on: { db: { condition: service_healthy } }
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    ports: ["8080"]
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
`;

describe.skipIf(!kubeconfig)('replicas on PostgreSQL with the Kubernetes runtime', () => {
  let schema: PgSchema;
  const dirs: string[] = [];
  const planes = new Map<string, ControlPlane>();
  const start = async (replicaId: string) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), `mayfly-${replicaId}-`));
    dirs.push(dir);
    const plane = await startControlPlane(
      dir,
      schema.url,
      {
        replicaId,
        runtimeDriver: 'kubernetes',
        kubeconfig: asMayfly,
        registry,
        kubeLocalVolumes: process.env.MAYFLY_TEST_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes',
        kubeGatewayFrom: ['10.245.0.1/32'],
      },
      { stderr: 'pipe' },
    );
    planes.set(replicaId, plane);
    return plane;
  };
  const kill = async (replicaId: string) => {
    await stopControlPlane(planes.get(replicaId)!, 'SIGKILL');
    planes.delete(replicaId);
  };
  const anyPlane = () => [...planes.values()][0]!;
  const leaseOwner = async (envId: string) =>
    (await schema.rows(`select lease_owner from environments where id = '${envId}'`))[0]?.lease_owner as
      | string
      | null;
  const events = (plane: ControlPlane, env: string) =>
    callApi<{ items: EnvEvent[] }>(plane, 'GET', `/v1/environments/${env}/events`).then((r) => r.items);
  const jobs = () => {
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig!);
    return config.makeApiClient(BatchV1Api);
  };

  beforeAll(async () => {
    schema = await createPgSchema();
  });
  afterAll(async () => {
    // Whatever a failed test left: destroyed by a replica of its own, then every replica stops.
    if (schema) {
      const last = planes.size > 0 ? anyPlane() : await start('cleanup');
      await destroyAll(last);
      for (const plane of planes.values()) await stopControlPlane(plane);
      await schema.drop();
    }
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('either replica takes creates; killing the one driving a create or a destroy, the other converges it', async () => {
    await start('k8s-a');
    await start('k8s-b');
    const viaA = await callApi<Environment>(planes.get('k8s-a')!, 'POST', '/v1/environments', {
      name: 'via-a',
      template: { filename: 'compose.yaml', content: TEMPLATE },
    });
    const viaB = await callApi<Environment>(planes.get('k8s-b')!, 'POST', '/v1/environments', {
      name: 'via-b',
      template: { filename: 'compose.yaml', content: TEMPLATE },
    });

    // A kill while via-a's job runs: seen running on the cluster first, so the kill lands mid-create.
    const ns = namespaceName(viaA.id);
    const job = await until(
      'the migrate Job to run',
      async () => {
        const found = await jobs()
          .readNamespacedJob({ namespace: ns, name: objectName('migrate') })
          .catch(() => undefined);
        return (found?.status?.active ?? 0) > 0 ? found : undefined;
      },
      120_000,
    );
    const creator = (await leaseOwner(viaA.id))!;
    expect(['k8s-a', 'k8s-b']).toContain(creator);
    expect((await callApi<Environment>(anyPlane(), 'GET', `/v1/environments/${viaA.id}`)).state).toBe(
      'creating',
    );
    await kill(creator);
    const survivor = anyPlane();
    for (const env of [viaA, viaB]) {
      expect(await waitForState(survivor, env.id, ['ready', 'failed'], 180_000)).toMatchObject({
        state: 'ready',
        failure: null,
      });
    }
    // The job was waited for, not run again: the same Job, one pod that succeeded.
    const after = await jobs().readNamespacedJob({ namespace: ns, name: objectName('migrate') });
    expect(after.metadata?.uid).toBe(job.metadata?.uid);
    expect(after.status).toMatchObject({ succeeded: 1 });
    expect(after.status?.failed ?? 0).toBe(0);
    expect((await events(survivor, viaA.id)).filter((e) => e.message === 'migrate: started')).toHaveLength(1);

    // A replica comes back; then a kill of whichever drives the destroy while the namespace goes.
    await start('k8s-c');
    await callApi(survivor, 'DELETE', `/v1/environments/${viaA.id}`);
    const destroyer = await until('the destroy to be under way with the namespace still there', async () => {
      const { state } = await callApi<Environment>(survivor, 'GET', `/v1/environments/${viaA.id}`);
      const owner = await leaseOwner(viaA.id);
      return state === 'destroying' && owner && (await clusterObjects(viaA.id)).length > 0
        ? owner
        : undefined;
    });
    await kill(destroyer);
    expect((await waitForState(anyPlane(), viaA.id, ['destroyed'], 180_000)).state).toBe('destroyed');
    expect(await clusterObjects(viaA.id)).toEqual([]);

    await callApi(anyPlane(), 'DELETE', `/v1/environments/${viaB.id}`);
    expect((await waitForState(anyPlane(), viaB.id, ['destroyed'], 180_000)).state).toBe('destroyed');
    expect(await clusterObjects(viaB.id)).toEqual([]);
  }, 600_000);
});
