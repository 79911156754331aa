/**
 * deploy/kubernetes/mayfly.yaml and the chart deploy/helm/mayfly on the test cluster: their objects
 * applied through the API, and a kubeconfig that acts as the deployment's ServiceAccount — so tests drive the cluster with exactly the role
 * the deployment grants, not as cluster admin.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig, type KubernetesObject, KubernetesObjectApi } from '@kubernetes/client-node';
import { afterAll } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { until } from './until.js';

const root = fileURLToPath(new URL('../../../..', import.meta.url));
const manifestsFile = path.join(root, 'deploy/kubernetes/mayfly.yaml');
const run = promisify(execFile);

/** The objects of a YAML stream, read as kubectl reads them (YAML 1.1: `0400` is octal). */
export function parseObjects(text: string): KubernetesObject[] {
  return parseAllDocuments(text, { version: '1.1' })
    .map((doc) => {
      if (doc.errors.length > 0) throw doc.errors[0];
      return doc.toJS() as KubernetesObject | null;
    })
    .filter((o): o is KubernetesObject => o !== null);
}

/** Every object of deploy/kubernetes/mayfly.yaml, in file order. */
export function deployManifests(): KubernetesObject[] {
  return parseObjects(readFileSync(manifestsFile, 'utf8'));
}

/**
 * deploy/helm/mayfly rendered as `helm template --name-template NAME --namespace NS -f values`
 * would (scripts/render-chart.sh), with `values` over the chart's own.
 */
export async function renderChart(
  values: Record<string, unknown>,
  release = { name: 'mayfly', namespace: 'mayfly-system' },
): Promise<KubernetesObject[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-chart-'));
  try {
    const file = path.join(dir, 'values.yaml');
    await writeFile(file, JSON.stringify(values));
    const { stdout } = await run(
      'bash',
      [
        path.join(root, 'scripts/render-chart.sh'),
        '-f',
        file,
        '--name',
        release.name,
        '--namespace',
        release.namespace,
        path.join(root, 'deploy/helm/mayfly'),
      ],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    return parseObjects(stdout);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function loadKubeconfig(file: string): KubeConfig {
  const config = new KubeConfig();
  config.loadFromFile(file);
  return config;
}

/** Creates each object, or replaces it when it exists (as `kubectl apply` would end up). */
export async function applyObjects(config: KubeConfig, objects: KubernetesObject[]): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(config);
  for (const object of objects) {
    try {
      await api.create(object);
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      const existing = await api.read(object as KubernetesObject & { metadata: { name: string } });
      // Services and claims keep what the cluster gave them; only what has no such fields is replaced.
      if (['Service', 'PersistentVolumeClaim', 'StatefulSet'].includes(object.kind ?? '')) continue;
      await api.replace({
        ...object,
        metadata: { ...object.metadata, resourceVersion: existing.metadata?.resourceVersion },
      });
    }
  }
}

/**
 * The deployment's ClusterRole (from deploy/kubernetes/mayfly.yaml) bound to a ServiceAccount of
 * this test file's own (namespace, account, role and binding named for it, removed after the
 * file; call it while the file's tests are collected, not in a hook), and a kubeconfig that authenticates as that account with a token from the TokenRequest
 * API (Kubernetes 1.24 and later make no token Secrets), to the cluster of `adminKubeconfig`.
 */
export async function roleKubeconfig(adminKubeconfig: string): Promise<string> {
  const admin = loadKubeconfig(adminKubeconfig);
  const name = `mayfly-role-${randomBytes(4).toString('hex')}`;
  const role = deployManifests().find((o) => o.kind === 'ClusterRole') as KubernetesObject & {
    rules: unknown[];
  };
  const objects: KubernetesObject[] = [
    // Labelled as this run's test objects: one left behind by a failed removal is found by label.
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name,
        labels: { 'mayfly.managed-by': 'mayfly', 'mayfly.instance': `${process.env.MAYFLY_TEST_RUN}-role` },
      },
    },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: name } },
    { ...role, metadata: { name } } as KubernetesObject,
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'ServiceAccount', name, namespace: name }],
    } as KubernetesObject,
  ];
  afterAll(async () => {
    const api = KubernetesObjectApi.makeApiClient(admin);
    for (const object of objects.reverse()) await api.delete(object).catch(() => {});
  });
  await applyObjects(admin, objects);
  const core = admin.makeApiClient(CoreV1Api);
  const request = await until('a token for the ServiceAccount', () =>
    core
      .createNamespacedServiceAccountToken({
        name,
        namespace: name,
        body: { spec: { audiences: [], expirationSeconds: 6 * 3600 } },
      })
      .catch(() => undefined),
  );
  const cluster = admin.getCurrentCluster()!;
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [cluster],
    users: [{ name, token: request.status!.token }],
    contexts: [{ name: 'mayfly', cluster: cluster.name, user: name }],
    currentContext: 'mayfly',
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-role-'));
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'kubeconfig');
  await writeFile(file, config.exportConfig(), { mode: 0o600 });
  return file;
}
