/**
 * The same end-to-end CLI test as e2e.test.ts, with `mayfly serve --runtime kubernetes` on the
 * test cluster (MAYFLY_TEST_KUBECONFIG): the example is built by the Docker Engine, pushed to the
 * cluster's registry, runs in a namespace of its own and is reached through the gateway; destroy
 * leaves no namespace or volume.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { callApi, waitForState } from '../../server/src/test-support/control-plane-process.js';
import { roleKubeconfig } from '../../server/src/test-support/deploy-manifests.js';
import { testInstanceName } from '../../server/src/test-support/global-setup.js';
import { clusterObjects } from '../../server/src/test-support/leak-check.js';
import { exampleRoundTrip } from './test-support/example-round-trip.js';
import { BIN, startServe } from './test-support/serve-command.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
/** The server acts with the role deploy/kubernetes grants Mayfly (made here, removed after the file). */
const asMayfly = kubeconfig ? await roleKubeconfig(kubeconfig) : undefined;

describe.skipIf(!kubeconfig)('mayfly CLI end to end on Kubernetes', () => {
  let dataDir: string;
  let server: Awaited<ReturnType<typeof startServe>>;
  let target: { url: string; token: string };
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-k8s-e2e-'));
    server = await startServe([
      '--data',
      dataDir,
      '--instance-name',
      testInstanceName(),
      '--runtime',
      'kubernetes',
      '--kubeconfig',
      asMayfly!,
      '--registry',
      registry,
      // The test cluster has no storage provisioner; the gateway (this server) runs on its node.
      '--kube-local-volumes',
      process.env.MAYFLY_TEST_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes',
      '--kube-gateway-from',
      '10.245.0.1/32',
      '--sandbox-pool',
      'base=0',
      '--sandbox-pool',
      'code=0',
    ]);
    target = {
      url: server.info.url,
      token: (await readFile(server.info.adminTokenFile, 'utf8')).trim(),
    };
  });
  afterAll(async () => {
    // What a failed test left: destroyed through the server, as a user would.
    if (target) {
      const { items } = await callApi<{ items: Environment[] }>(target, 'GET', '/v1/environments');
      for (const env of items) {
        await callApi(target, 'DELETE', `/v1/environments/${env.id}`);
        await waitForState(target, env.id, ['destroyed'], 120_000);
      }
    }
    if (server && server.child.exitCode === null) {
      const exited = new Promise((resolve) => server.child.once('exit', resolve));
      server.child.kill('SIGTERM');
      await exited;
    }
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('brings the example up on the cluster; its URL shows the seeded data; destroy leaves nothing', async () => {
    await exampleRoundTrip({
      cli: (args) =>
        run(process.execPath, [BIN, ...args], {
          cwd: root,
          env: { ...process.env, MAYFLY_URL: target.url, MAYFLY_TOKEN: target.token },
          maxBuffer: 16 * 1024 * 1024,
        }),
      port: Number(new URL(target.url).port),
      name: 'shop-k8s',
      leftOf: (envId) => clusterObjects(envId),
    });
  }, 900_000);
});
