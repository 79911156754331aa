/**
 * deploy/: the chart (deploy/helm/mayfly) renders exactly the plain manifests
 * (deploy/kubernetes/mayfly.yaml) and both are valid; then on the test cluster
 * (MAYFLY_TEST_KUBECONFIG), Mayfly's own image and PostgreSQL's built and pushed, the chart
 * installed: two replicas running in the cluster as its ServiceAccount.
 * An environment is created through the API's Service and reached through the gateway's; the
 * replica driving a create is SIGKILLed and another finishes it once its lease has expired;
 * destroy leaves no namespace. What the test cluster lacks is filled in here, not in the
 * manifests: volumes for the two claims (no provisioner) and the database's address (no DNS).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  Exec,
  type KubernetesObject,
  RbacAuthorizationV1Api,
  type V1Deployment,
  type V1PersistentVolume,
} from '@kubernetes/client-node';
import type { Environment } from '@mayfly/contract';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, PersistentVolumeClaim, Service, ServiceAccount } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespaceName, objectName } from '../packages/server/src/runtime/kubernetes/manifests.js';
import { callApi, waitForState } from '../packages/server/src/test-support/control-plane-process.js';
import {
  applyObjects,
  deployManifests,
  loadKubeconfig,
  renderChart,
} from '../packages/server/src/test-support/deploy-manifests.js';
import { TESTKIT_IMAGE, testInstanceName } from '../packages/server/src/test-support/global-setup.js';
import { clusterObjects } from '../packages/server/src/test-support/leak-check.js';
import { requestViaGateway } from '../packages/server/src/test-support/test-server.js';
import { until } from '../packages/server/src/test-support/until.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
// The chart installed as a release of this run's own (its namespace, role and binding named for it),
// so nothing of another installation on the cluster is touched.
const RELEASE = `mayfly-${randomBytes(3).toString('hex')}`;
const NS = RELEASE;

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;
const TEMPLATE = `
services:
  migrate:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 10; echo migrated"]
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "hello from the cluster"]
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
    depends_on: { migrate: { condition: service_completed_successfully } }
`;

/** SIGKILLs the `mayfly serve` process of a pod, found on this node by its host name. */
async function killServeProcess(pod: string): Promise<void> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const [cmdline, environ] = await Promise.all([
      readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => ''),
      readFile(`/proc/${entry}/environ`, 'utf8').catch(() => ''),
    ]);
    if (cmdline.split('\0').includes('serve') && environ.split('\0').includes(`HOSTNAME=${pod}`))
      pids.push(Number(entry));
  }
  expect(pids, `the serve process of ${pod}`).toHaveLength(1);
  process.kill(pids[0]!, 'SIGKILL');
}

const models: Record<string, new (data: never) => { validate(): void }> = {
  Namespace,
  NetworkPolicy,
  ServiceAccount,
  ClusterRole,
  ClusterRoleBinding,
  Service,
  StatefulSet,
  PersistentVolumeClaim,
  Deployment,
};
const byKindAndName = (a: KubernetesObject, b: KubernetesObject) =>
  `${a.kind}/${a.metadata?.name}`.localeCompare(`${b.kind}/${b.metadata?.name}`);

// Rendering needs Go and Sprig from Debian (scripts/render-chart.sh installs them), which the
// cluster's build brings: these run with the Kubernetes suite.
describe.skipIf(!kubeconfig)('deploy/helm/mayfly: the chart', () => {
  it('renders with its defaults exactly the objects of deploy/kubernetes/mayfly.yaml, but the namespace (helm install makes it)', async () => {
    const chart = await renderChart({});
    const plain = deployManifests().filter((o) => o.kind !== 'Namespace');
    expect(chart.sort(byKindAndName)).toEqual(plain.sort(byKindAndName));
  });

  it('both are valid against the official schemas', async () => {
    for (const object of [...deployManifests(), ...(await renderChart({}))]) {
      const Model = models[object.kind!];
      expect(Model, object.kind).toBeDefined();
      expect(
        () => new Model!(object as never).validate(),
        `${object.kind}/${object.metadata?.name}`,
      ).not.toThrow();
    }
  });

  it("with a database of your own: no PostgreSQL is made, the URL comes from your Secret's key, which is asked for", async () => {
    await expect(renderChart({ postgres: { enabled: false } })).rejects.toThrow(
      /databaseUrl\.secretKey: the Secret key of your database's URL/,
    );
    const objects = await renderChart(
      { postgres: { enabled: false }, databaseUrl: { secretKey: 'database-url' } },
      { name: 'fly', namespace: 'tools' },
    );
    expect(objects.map((o) => `${o.kind}/${o.metadata?.name}`).sort()).toEqual([
      'ClusterRole/fly',
      'ClusterRoleBinding/fly',
      'Deployment/fly',
      'PersistentVolumeClaim/fly-work',
      'Service/fly',
      'ServiceAccount/fly',
    ]);
    const deployment = objects.find((o) => o.kind === 'Deployment') as V1Deployment;
    const container = deployment.spec!.template.spec!.containers[0]!;
    expect(container.args).toContain('--db=$(DATABASE_URL)');
    expect(container.env).toEqual([
      { name: 'DATABASE_URL', valueFrom: { secretKeyRef: { name: 'mayfly', key: 'database-url' } } },
    ]);
    expect(
      objects.every((o) => o.metadata?.namespace === undefined || o.metadata.namespace === 'tools'),
    ).toBe(true);
  });
});

describe.skipIf(!kubeconfig)('deploy/kubernetes: Mayfly in the cluster', () => {
  const config = kubeconfig ? loadKubeconfig(kubeconfig) : undefined;
  const core = () => config!.makeApiClient(CoreV1Api);
  const runName = testInstanceName();
  const hostDir = path.join(
    process.env.MAYFLY_TEST_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes',
    `deploy-${runName}`,
  );
  const volumes: V1PersistentVolume[] = [];
  const postgresPassword = randomBytes(16).toString('hex');
  const adminToken = `mfy_${randomBytes(32).toString('base64url')}`;
  let api: { url: string; token: string };
  let gateway: { address: string; port: number };

  /** A directory on the node for a claim the test cluster has no provisioner for. */
  const volumeFor = (claim: string, size: string, mode: string): V1PersistentVolume => ({
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name: `mayfly-deploy-${claim}-${randomBytes(3).toString('hex')}`,
      // Labelled as this run's, so the leak check sees one left behind.
      labels: { 'mayfly.managed-by': 'mayfly', 'mayfly.instance': `${runName}-deploy` },
    },
    spec: {
      capacity: { storage: size },
      accessModes: [mode],
      persistentVolumeReclaimPolicy: 'Retain',
      hostPath: { path: path.join(hostDir, claim), type: 'DirectoryOrCreate' },
      claimRef: { namespace: NS, name: claim },
    },
  });

  beforeAll(async () => {
    const built = await run('bash', [path.join(root, 'scripts/build-image.sh'), '--push', registry], {
      cwd: root,
      maxBuffer: 16 * 1024 * 1024,
    });
    const refs = Object.fromEntries(
      built.stdout
        .trim()
        .split('\n')
        .slice(-2)
        .map((line) => line.split(' ') as [string, string]),
    );
    expect(Object.keys(refs).sort()).toEqual(['mayfly', 'postgres']);

    // Installed from the chart, as `helm install --create-namespace` with these values would.
    const values = {
      image: refs.mayfly,
      postgres: { image: refs.postgres },
      extraArgs: ['--sandbox-pool=base=0', '--sandbox-pool=code=0', `--instance-name=${runName}`],
    };
    const release = { name: RELEASE, namespace: NS };
    const objects = await renderChart(values, release);
    const rest = objects.filter((o) => o.kind !== 'Deployment');
    await mkdir(hostDir, { recursive: true });
    volumes.push(volumeFor(`data-${RELEASE}-postgres-0`, '10Gi', 'ReadWriteOnce'));
    volumes.push(volumeFor(`${RELEASE}-work`, '20Gi', 'ReadWriteMany'));
    const namespace = {
      apiVersion: 'v1',
      kind: 'Namespace',
      // As deploy/kubernetes labels its namespace for clusters before 1.21.
      metadata: { name: NS, labels: { 'kubernetes.io/metadata.name': NS } },
    };
    const secret: KubernetesObject & { stringData: Record<string, string> } = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'mayfly', namespace: NS },
      stringData: { 'postgres-password': postgresPassword, 'admin-token': adminToken },
    };
    await applyObjects(config!, [namespace, ...volumes, secret, ...rest]);
    // No cluster DNS here: the database's name is given to the pods.
    const postgres = await core().readNamespacedService({ namespace: NS, name: `${RELEASE}-postgres` });
    const withAddress = await renderChart(
      { ...values, hostAliases: [{ ip: postgres.spec!.clusterIP!, hostnames: [`${RELEASE}-postgres`] }] },
      release,
    );
    await applyObjects(
      config!,
      withAddress.filter((o) => o.kind === 'Deployment'),
    );

    const apps = config!.makeApiClient(AppsV1Api);
    await until(
      'both replicas to be ready',
      async () => {
        const d = await apps.readNamespacedDeployment({ namespace: NS, name: RELEASE });
        return (d.status?.readyReplicas ?? 0) >= 2 ? true : undefined;
      },
      240_000,
      1_000,
    );
    const service = await core().readNamespacedService({ namespace: NS, name: RELEASE });
    gateway = { address: service.spec!.clusterIP!, port: 7070 };
    api = { url: `http://${gateway.address}:7070`, token: adminToken };
  }, 600_000);

  afterAll(async () => {
    if (!config) return;
    if (api) {
      const { items } = await until('the API to answer', () =>
        callApi<{ items: Environment[] }>(api, 'GET', '/v1/environments').catch(() => undefined),
      );
      for (const env of items) {
        await until('the destroy to be taken', () =>
          callApi(api, 'DELETE', `/v1/environments/${env.id}`).catch(() => undefined),
        );
        await waitForState(api, env.id, ['destroyed'], 180_000, { retryUnreachable: true });
      }
    }
    await core()
      .deleteNamespace({ name: NS, gracePeriodSeconds: 0 })
      .catch(() => {});
    await until(
      `namespace ${NS} to be gone`,
      async () =>
        (await core()
          .readNamespace({ name: NS })
          .catch(() => null))
          ? undefined
          : true,
      180_000,
      1_000,
    );
    const rbac = config.makeApiClient(RbacAuthorizationV1Api);
    await rbac.deleteClusterRoleBinding({ name: RELEASE }).catch(() => {});
    await rbac.deleteClusterRole({ name: RELEASE }).catch(() => {});
    for (const v of volumes)
      await core()
        .deletePersistentVolume({ name: v.metadata!.name! })
        .catch(() => {});
    await rm(hostDir, { recursive: true, force: true });
  }, 600_000);

  /** The replica holding an environment's lease now ('' when none), asked of the database in its pod. */
  const leaseOwner = async (envId: string): Promise<string> => {
    const [pod] = (
      await core().listNamespacedPod({
        namespace: NS,
        labelSelector: `app.kubernetes.io/name=${RELEASE}-postgres`,
      })
    ).items;
    let out = '';
    const stdout = new Writable({
      write(chunk, _encoding, done) {
        out += chunk.toString();
        done();
      },
    });
    await new Promise<void>((resolve, reject) => {
      new Exec(config!)
        .exec(
          NS,
          pod!.metadata!.name!,
          'postgres',
          [
            'sh',
            '-c',
            `PGPASSWORD=${postgresPassword} psql -h 127.0.0.1 -U postgres -d mayfly -tAc "select coalesce(lease_owner, '') from environments where id = '${envId}' and lease_until > now()"`,
          ],
          stdout,
          null,
          null,
          false,
          (status) => (status.status === 'Success' ? resolve() : reject(new Error(JSON.stringify(status)))),
        )
        .catch(reject);
    });
    return out.trim();
  };

  it('runs two replicas that share the work: create through the API, the URL through the gateway, a replica killed mid-create', async () => {
    const env = await callApi<Environment>(api, 'POST', '/v1/environments', {
      name: 'in-cluster',
      template: { filename: 'compose.yaml', content: TEMPLATE },
    });
    // The Job running: the kill lands mid-create, on the replica that drives it.
    const ns = namespaceName(env.id);
    const batch = config!.makeApiClient(BatchV1Api);
    const job = await until(
      'the migrate Job to run',
      async () => {
        const found = await batch
          .readNamespacedJob({ namespace: ns, name: objectName('migrate') })
          .catch(() => undefined);
        return (found?.status?.active ?? 0) > 0 ? found : undefined;
      },
      180_000,
    );
    const owner = await until(
      'a replica to hold the lease',
      async () => (await leaseOwner(env.id)) || undefined,
    );
    // A replica's id is its host name (the pod's name) and a suffix.
    const pods = await core().listNamespacedPod({
      namespace: NS,
      labelSelector: `app.kubernetes.io/name=${RELEASE}`,
    });
    const driver = pods.items.find((p) => owner.startsWith(`${p.metadata!.name!}-`));
    expect(driver, `a pod for lease owner ${owner}`).toBeDefined();
    expect((await callApi<Environment>(api, 'GET', `/v1/environments/${env.id}`)).state).toBe('creating');
    const killedAt = Date.now();
    // SIGKILL from the node (a pod deleted, even without grace, gets SIGTERM and would hand its
    // leases over cleanly). The kubelet restarts the container as a new replica.
    await killServeProcess(driver!.metadata!.name!);

    // Who holds the lease from now on: another replica must, once the killed one's has expired.
    const owners = new Set<string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        owners.add(await leaseOwner(env.id).catch(() => ''));
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const ready = await waitForState(api, env.id, ['ready', 'failed'], 240_000, { retryUnreachable: true });
    watching = false;
    await watcher;
    expect(ready).toMatchObject({ state: 'ready', failure: null });
    console.info(`the other replica finished the create ${Date.now() - killedAt} ms after the kill`);
    expect(
      [...owners].filter((o) => o && o !== owner).length,
      `lease owners seen: ${[...owners]}`,
    ).toBeGreaterThan(0);
    const after = await batch.readNamespacedJob({ namespace: ns, name: objectName('migrate') });
    expect(after.metadata?.uid).toBe(job.metadata?.uid);
    expect(after.status?.succeeded).toBe(1);

    const page = await requestViaGateway(gateway, `web--in-cluster.localhost`);
    expect(page).toEqual({ status: 200, text: 'hello from the cluster' });

    await callApi(api, 'DELETE', `/v1/environments/${env.id}`);
    expect((await waitForState(api, env.id, ['destroyed'], 180_000, { retryUnreachable: true })).state).toBe(
      'destroyed',
    );
    expect(await clusterObjects(env.id)).toEqual([]);
  }, 600_000);
});
