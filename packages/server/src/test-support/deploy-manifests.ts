/**
 * deploy/kubernetes/mayfly.yaml and the chart deploy/helm/mayfly on the test cluster: their objects
 * applied through the API, and a kubeconfig that acts as the deployment's ServiceAccount — so tests drive the cluster with exactly the role
 * the deployment grants, not as cluster admin.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig, type KubernetesObject, KubernetesObjectApi } from '@kubernetes/client-node';
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

const ROLE_KINDS = new Set(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);

/**
 * Applies the deployment's namespace, ServiceAccount and role, and writes a kubeconfig that
 * authenticates as that ServiceAccount (its token) to the cluster of `adminKubeconfig`.
 */
export async function roleKubeconfig(adminKubeconfig: string): Promise<string> {
  const admin = loadKubeconfig(adminKubeconfig);
  const objects = deployManifests().filter((o) => ROLE_KINDS.has(o.kind ?? ''));
  await applyObjects(admin, objects);
  const account = objects.find((o) => o.kind === 'ServiceAccount')!.metadata!;
  const core = admin.makeApiClient(CoreV1Api);
  const token = await until('the ServiceAccount token', async () => {
    const secrets = await core.listNamespacedSecret({ namespace: account.namespace! });
    const secret = secrets.items.find(
      (s) =>
        s.type === 'kubernetes.io/service-account-token' &&
        s.metadata?.annotations?.['kubernetes.io/service-account.name'] === account.name,
    );
    const data = secret?.data?.token;
    return data ? Buffer.from(data, 'base64').toString('utf8') : undefined;
  });
  const cluster = admin.getCurrentCluster()!;
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [cluster],
    users: [{ name: account.name!, token }],
    contexts: [{ name: 'mayfly', cluster: cluster.name, user: account.name! }],
    currentContext: 'mayfly',
  });
  const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'mayfly-role-')), 'kubeconfig');
  await writeFile(file, config.exportConfig(), { mode: 0o600 });
  return file;
}
