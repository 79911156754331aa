/**
 * The same end-to-end CLI test as e2e.test.ts, with `mayfly serve --runtime kubernetes` on the
 * test cluster (MAYFLY_TEST_KUBECONFIG): the example is built by the Docker Engine, pushed to the
 * cluster's registry, runs in a namespace of its own and is reached through the gateway; destroy
 * leaves no namespace or volume.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CoreV1Api, NodeV1Api } from '@kubernetes/client-node';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespaceName } from '../../server/src/runtime/kubernetes/manifests.js';
import { destroyAll } from '../../server/src/test-support/control-plane-process.js';
import { loadKubeconfig, roleKubeconfig } from '../../server/src/test-support/deploy-manifests.js';
import { TESTKIT_IMAGE, testInstanceName } from '../../server/src/test-support/global-setup.js';
import { clusterObjects } from '../../server/src/test-support/leak-check.js';
import { until } from '../../server/src/test-support/until.js';
import { exampleRoundTrip } from './test-support/example-round-trip.js';
import { BIN, startServe } from './test-support/serve-command.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
/** The server acts with the role deploy/kubernetes grants Mayfly (made here, removed after the file). */
const asMayfly = kubeconfig ? await roleKubeconfig(kubeconfig) : undefined;

/** A RuntimeClass of this file's own for the `gvisor` isolation class: runc's handler, as the test cluster has no gVisor shim. */
const RUNTIME_CLASS = `mayfly-test-${randomBytes(3).toString('hex')}`;

describe.skipIf(!kubeconfig)('mayfly CLI end to end on Kubernetes', () => {
  let dataDir: string;
  let server: Awaited<ReturnType<typeof startServe>>;
  let target: { url: string; token: string };
  const admin = () => loadKubeconfig(kubeconfig!);
  beforeAll(async () => {
    await admin()
      .makeApiClient(NodeV1Api)
      .createRuntimeClass({ body: { metadata: { name: RUNTIME_CLASS }, handler: 'runc' } });
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
      '--kube-runtime-class',
      `gvisor=${RUNTIME_CLASS}`,
      '--sandbox-pool',
      'base=0',
      '--sandbox-pool',
      'code=0',
      // Sandboxes as pods too, never reaching the cluster's pod and service ranges.
      '--sandbox-runtime',
      'kubernetes',
      '--kube-sandbox-blocked',
      '10.244.0.0/16',
      '--kube-sandbox-blocked',
      '10.96.0.0/12',
      // Nothing on the test cluster enforces NetworkPolicies (the driver's test shows the refusal).
      '--kube-skip-policy-check',
    ]);
    target = {
      url: server.info.url,
      token: (await readFile(server.info.adminTokenFile, 'utf8')).trim(),
    };
  });
  afterAll(async () => {
    // What a failed test left: destroyed through the server, as a user would.
    if (target) await destroyAll(target);
    if (server && server.child.exitCode === null) {
      const exited = new Promise((resolve) => server.child.once('exit', resolve));
      server.child.kill('SIGTERM');
      await exited;
    }
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    // The installation's sandbox namespace (Mayfly keeps it while it runs): this file's, not left.
    const core = admin().makeApiClient(CoreV1Api);
    const sandboxNamespaces = async () =>
      (await core.listNamespace({ labelSelector: 'mayfly.managed-by=mayfly' })).items.filter(
        (ns) =>
          ns.metadata!.name!.startsWith('mayfly-sandboxes-') &&
          (ns.metadata!.labels?.['mayfly.instance'] ?? '').startsWith(testInstanceName()),
      );
    for (const ns of await sandboxNamespaces())
      await core.deleteNamespace({ name: ns.metadata!.name!, gracePeriodSeconds: 0 }).catch(() => {});
    await until('the sandbox namespace is gone', async () =>
      (await sandboxNamespaces()).length === 0 ? true : undefined,
    );
    await admin()
      .makeApiClient(NodeV1Api)
      .deleteRuntimeClass({ name: RUNTIME_CLASS })
      .catch(() => {});
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

  it('runs an environment of the gvisor isolation class with the RuntimeClass the operator mapped (--kube-runtime-class)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-k8s-gvisor-'));
    try {
      await writeFile(
        path.join(dir, 'compose.yaml'),
        `x-mayfly: { isolation: gvisor }\nservices:\n  box:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`,
      );
      const env = { ...process.env, MAYFLY_URL: target.url, MAYFLY_TOKEN: target.token };
      const up = await run(
        process.execPath,
        [BIN, 'up', '-f', path.join(dir, 'compose.yaml'), '--name', 'isolated', '--json'],
        { env },
      );
      const made = JSON.parse(up.stdout) as Environment;
      expect(made).toMatchObject({ state: 'ready', failure: null });
      const pods = await admin()
        .makeApiClient(CoreV1Api)
        .listNamespacedPod({ namespace: namespaceName(made.id) });
      expect(pods.items.map((p) => p.spec?.runtimeClassName)).toEqual([RUNTIME_CLASS]);
      await run(process.execPath, [BIN, 'destroy', 'isolated'], { env });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('runs a sandbox as a pod of the cluster (--sandbox-runtime kubernetes): exec, cp, kill leaves no pod', async () => {
    const env = { ...process.env, MAYFLY_URL: target.url, MAYFLY_TOKEN: target.token };
    const cli = (args: string[]) =>
      run(process.execPath, [BIN, ...args], { env, maxBuffer: 16 * 1024 * 1024 });
    const id = (await cli(['sandbox', 'create', '--timeout', '10m'])).stdout.trim();
    const pods = async () =>
      (
        await admin()
          .makeApiClient(CoreV1Api)
          .listPodForAllNamespaces({ labelSelector: `mayfly.sandbox=${id}` })
      ).items.filter((p) => !p.metadata?.deletionTimestamp);
    expect((await pods()).map((p) => p.status?.phase)).toEqual(['Running']);
    // Its agent is the pod's main process; it runs as the template's user with no capabilities.
    const probe = await cli([
      'sandbox',
      'exec',
      id,
      '--',
      'sh',
      '-c',
      'id -u; grep CapEff /proc/self/status',
    ]);
    expect(probe.stdout).toMatch(/^1000\nCapEff:\s+0000000000000000\n$/);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-k8s-sbx-'));
    try {
      const data = randomBytes(256 * 1024);
      await writeFile(path.join(dir, 'in.bin'), data);
      await cli(['sandbox', 'cp', path.join(dir, 'in.bin'), `${id}:/home/user/copy.bin`]);
      await cli(['sandbox', 'cp', `${id}:/home/user/copy.bin`, path.join(dir, 'out.bin')]);
      expect((await readFile(path.join(dir, 'out.bin'))).equals(data)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await cli(['sandbox', 'kill', id]);
    // Gone, not terminating: a kill returns once the pod is.
    const left = await admin()
      .makeApiClient(CoreV1Api)
      .listPodForAllNamespaces({ labelSelector: `mayfly.sandbox=${id}` });
    expect(left.items).toEqual([]);
  }, 600_000);

  it('without --kube-skip-policy-check, a server on a cluster that does not enforce NetworkPolicies makes no sandbox, and says why', async () => {
    const otherDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-k8s-policy-'));
    const other = await startServe([
      '--data',
      otherDir,
      '--instance-name',
      `${testInstanceName()}-policy`,
      '--runtime',
      'kubernetes',
      '--kubeconfig',
      asMayfly!,
      '--registry',
      registry,
      '--sandbox-pool',
      'base=0',
      '--sandbox-pool',
      'code=0',
      '--sandbox-runtime',
      'kubernetes',
    ]);
    /** Pods of that server's installation (its id is the name and a random part). */
    const podsOfIt = async (selector: string) =>
      (
        await admin().makeApiClient(CoreV1Api).listPodForAllNamespaces({ labelSelector: selector })
      ).items.filter(
        (p) =>
          (p.metadata?.labels?.['mayfly.instance'] ?? '').startsWith(`${testInstanceName()}-policy`) &&
          !p.metadata?.deletionTimestamp,
      );
    try {
      const token = (await readFile(other.info.adminTokenFile, 'utf8')).trim();
      const res = await fetch(`${other.info.url}/v1/sandboxes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(503);
      const body = (await res.json()) as { error: { message: string } };
      expect(body.error.message).toMatch(
        /^sandboxes cannot be made on this server: NetworkPolicies do not hold on this cluster: a pod under a deny-all policy reached .*--kube-skip-policy-check/,
      );
      // No sandbox was made, and the check's pods are gone.
      expect(await podsOfIt('mayfly.sandbox')).toEqual([]);
      expect(await podsOfIt('mayfly.policy-probe')).toEqual([]);
    } finally {
      const exited = new Promise((resolve) => other.child.once('exit', resolve));
      other.child.kill('SIGTERM');
      await exited;
      await rm(otherDir, { recursive: true, force: true });
    }
  }, 300_000);
});
