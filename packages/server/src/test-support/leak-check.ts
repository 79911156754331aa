/**
 * Runs around every test file (vitest setupFiles): no container, network or volume labelled by
 * Mayfly that this test run made may remain, nor a namespace or volume on the test cluster. It
 * asks the docker CLI and the Kubernetes API, not the driver under test, so the check is
 * independent. Only this run's installations count (their instance ids start with the run's
 * name, see `testInstanceName`): a quick-start server or another test run on the same engine
 * creating and removing objects meanwhile causes no false failure.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';
import { labelValue } from '../runtime/kubernetes/manifests.js';

const LABEL = 'label=mayfly.managed-by=mayfly';
const INSTANCE = '{{.Label "mayfly.instance"}}';

/** This run's labelled objects, as `kind id name`. */
export function labelledObjects(): string[] {
  const run = process.env.MAYFLY_TEST_RUN ?? '';
  const list = (args: string[], format: string) =>
    execFileSync('docker', [...args, '--filter', LABEL, '--format', `${INSTANCE}\t${format}`], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split('\t'))
      .filter(([instance]) => run !== '' && (instance ?? '').startsWith(run))
      .map(([, rest]) => rest ?? '');
  return [
    ...list(['ps', '-a'], '{{.ID}} {{.Names}}').map((l) => `container ${l}`),
    ...list(['network', 'ls'], '{{.ID}} {{.Name}}').map((l) => `network ${l}`),
    ...list(['volume', 'ls'], '{{.Name}}').map((l) => `volume ${l}`),
  ];
}

/**
 * This run's namespaces and volumes on the test cluster (MAYFLY_TEST_KUBECONFIG), as `kind name`
 * (one environment's with `envId`),
 * asked through the API with the official client, not the driver under test.
 */
export async function clusterObjects(envId?: string): Promise<string[]> {
  const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
  const run = process.env.MAYFLY_TEST_RUN ?? '';
  if (!kubeconfig || !run) return [];
  const { CoreV1Api, KubeConfig } = await import('@kubernetes/client-node');
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig);
  const core = config.makeApiClient(CoreV1Api);
  const labelSelector = `mayfly.managed-by=mayfly${envId === undefined ? '' : `,mayfly.env=${labelValue(envId)}`}`;
  const ours = (o: { metadata?: { labels?: Record<string, string> } }) =>
    (o.metadata?.labels?.['mayfly.instance'] ?? '').startsWith(run);
  const [namespaces, volumes] = await Promise.all([
    core.listNamespace({ labelSelector }),
    core.listPersistentVolume({ labelSelector }),
  ]);
  return [
    ...namespaces.items
      .filter(ours)
      .map((n) => `namespace ${n.metadata?.name}${n.metadata?.deletionTimestamp ? TERMINATING : ''}`),
    ...volumes.items.filter(ours).map((v) => `persistentvolume ${v.metadata?.name}`),
  ];
}

const TERMINATING = ' (being deleted)';

// Objects that were there before (a previous file's, already reported) are not this file's.
let before = new Set<string>();
beforeAll(async () => {
  before = new Set([...labelledObjects(), ...(await clusterObjects())]);
});

afterAll(async () => {
  const leftovers = async () =>
    [...labelledObjects(), ...(await clusterObjects())].filter((o) => !before.has(o));
  let left = await leftovers();
  // A namespace being deleted (the snapshots namespace goes with its last snapshot, without
  // waiting) is given the time its deletion takes, not taken for a leak at once.
  for (
    const deadline = Date.now() + 90_000;
    left.some((o) => o.endsWith(TERMINATING)) && Date.now() < deadline;
  ) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    left = await leftovers();
  }
  expect(left, 'Mayfly-labelled objects left behind by this test file').toEqual([]);
});
