/**
 * The Kubernetes driver against a real cluster: `npm run cluster:up` starts one here and prints its
 * kubeconfig, which `scripts/test.sh` passes as MAYFLY_TEST_KUBECONFIG (any other cluster works
 * too, with a registry it pulls from as MAYFLY_TEST_REGISTRY). The driver runs as the ServiceAccount
 * of deploy/kubernetes, with its role; what the tests check, they ask as admin.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  NetworkingV1Api,
  StorageV1Api,
} from '@kubernetes/client-node';
import { afterAll, describe, expect, it, type TestContext } from 'vitest';
import type { EnvPlan } from '../../plan/plan.js';
import { roleKubeconfig } from '../../test-support/deploy-manifests.js';
import { requiredAgentBinary, testInstanceName } from '../../test-support/global-setup.js';
import { envPlan, httpService, workload } from '../../test-support/plans.js';
import { until } from '../../test-support/until.js';
import { applyPlan } from '../apply-plan.js';
import { DockerImagePublisher } from '../docker/docker-image-publisher.js';
import { describeRuntime } from '../runtime.case.js';
import { SnapshotGoneError } from '../runtime.js';
import { describeVolumeSnapshots } from '../volume-snapshots.case.js';
import { cloneSnapshotName } from './csi-snapshot-manifests.js';
import { KubernetesRuntime } from './kubernetes-runtime.js';
import { namespaceName, objectName } from './manifests.js';

const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
const instance = `${testInstanceName()}-k8s`;
// The driver acts with exactly the role deploy/kubernetes grants Mayfly, not as cluster admin:
// every call the suite makes must be allowed by it.
const asMayfly = kubeconfig ? await roleKubeconfig(kubeconfig) : undefined;

/**
 * A storage class whose CSI driver takes snapshots (a VolumeSnapshotClass of it marked default):
 * the test cluster has none of its own, so what snapshots by the storage do is tested only where
 * one is given (docs/kubernetes.md says how one was checked here).
 */
const csiStorageClass = process.env.MAYFLY_TEST_K8S_STORAGE_CLASS;

function makeRuntime(extra: { agentBinary?: string; storageClassName?: string } = {}): KubernetesRuntime {
  const { storageClassName, ...options } = extra;
  return new KubernetesRuntime({
    ...options,
    kubeconfig: asMayfly,
    instance,
    publisher: new DockerImagePublisher({ registry }),
    // The test cluster has no DNS; the gateway (this process) runs on the node.
    cluster: {
      dnsPolicy: 'Default',
      gatewayPeers: [{ ipBlock: { cidr: '10.245.0.1/32' } }],
      // No storage provisioner: each claim gets a directory on the node.
      ...(storageClassName
        ? { storageClassName }
        : {
            localVolumes: {
              directory: process.env.MAYFLY_TEST_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes',
            },
          }),
    },
  });
}

describe.skipIf(!kubeconfig)('KubernetesRuntime', () => {
  describeRuntime('kubernetes', {
    make: makeRuntime,
    // The node reaches Service and pod addresses, as the gateway does when it runs on a node.
    reach: async (endpoint) => `http://${endpoint.host}:${endpoint.port}`,
    // What Kubernetes does otherwise (docs/kubernetes.md).
    differences: { noCreatedReplicas: true, sleepLosesContainerFiles: true, fileOwnersIgnored: true },
  });
});

describe.skipIf(!kubeconfig)('KubernetesRuntime snapshots', () => {
  // Copied between the snapshots namespace and environments' through helper pods (no CSI here).
  describeVolumeSnapshots('kubernetes', { make: () => makeRuntime({ agentBinary: requiredAgentBinary() }) });
});

/** Snapshot API objects of any namespace, as admin. */
async function csiObjects(
  plural: 'volumesnapshots' | 'volumesnapshotcontents',
  labelSelector: string,
): Promise<{ status?: { readyToUse?: boolean } }[]> {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig!);
  const custom = config.makeApiClient(CustomObjectsApi);
  const api = { group: 'snapshot.storage.k8s.io', version: 'v1', plural, labelSelector };
  const found = await (plural === 'volumesnapshots'
    ? custom.listCustomObjectForAllNamespaces(api)
    : custom.listClusterCustomObject(api));
  return (found as { items: { status?: { readyToUse?: boolean } }[] }).items;
}

/** Waits until no VolumeSnapshot or content of the snapshot is left. */
async function noCsiObjects(snapshotId: string): Promise<void> {
  await until('no CSI object of the snapshot left', async () => {
    const left = [
      ...(await csiObjects('volumesnapshots', `mayfly.snapshot=${snapshotId}`)),
      ...(await csiObjects('volumesnapshotcontents', `mayfly.snapshot=${snapshotId}`)),
    ];
    return left.length === 0 || undefined;
  });
}

describe.skipIf(!kubeconfig || !csiStorageClass)('KubernetesRuntime snapshots by the storage (CSI)', () => {
  // The same conformance, the storage's own snapshots and clones (claims with a dataSource).
  describeVolumeSnapshots('kubernetes-csi', {
    make: () => makeRuntime({ agentBinary: requiredAgentBinary(), storageClassName: csiStorageClass }),
    taken: async (snapshotId) => {
      // Kept as a VolumeSnapshot of the storage's, no copy helper ever made.
      const kept = await csiObjects(
        'volumesnapshots',
        `mayfly.snapshot=${snapshotId},mayfly.snapshot-role=kept`,
      );
      expect(kept.map((s) => s.status?.readyToUse)).toEqual([true]);
    },
    // No VolumeSnapshot or content of it left anywhere (the driver deletes the storage's snapshot
    // with the last content, whose policy is then Delete).
    gone: (snapshotId) => noCsiObjects(snapshotId),
  });

  /**
   * On a storage that binds a claim only for a pod's node (else a restore waits until its clone is
   * filled): an environment with a snapshot taken of what it wrote, and one cloning it whose claim
   * waits for a pod. Both destroyed and the snapshot removed when the test ends.
   */
  async function waitingClone(ctx: TestContext, name: string) {
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig!);
    const storage = await config.makeApiClient(StorageV1Api).readStorageClass({ name: csiStorageClass! });
    if (storage.volumeBindingMode !== 'WaitForFirstConsumer') ctx.skip();
    const runtime = makeRuntime({ agentBinary: requiredAgentBinary(), storageClassName: csiStorageClass });
    const snapshots = runtime.snapshots!;
    const data = [{ type: 'volume' as const, source: 'data', target: '/data', readOnly: false }];
    const db = () =>
      workload({ name: 'db', command: ['testkit', 'sleep'], mounts: data, stopGracePeriodMs: 1000 });
    const source = envPlan([db()], { volumes: [{ name: 'data' }] });
    const snapshot = { id: `${name[0]}${Date.now().toString(36)}`, project: source.project, name };
    const clone = envPlan([db()], {
      volumes: [
        { name: 'data', origin: { restored: { snapshotId: snapshot.id, snapshotName: name }, key: null } },
      ],
    });
    ctx.onTestFinished(async () => {
      await Promise.all([runtime.destroy(source.envId), runtime.destroy(clone.envId)]);
      await snapshots.remove(snapshot.id);
      await noCsiObjects(snapshot.id);
    });
    await applyPlan(runtime, source);
    await runtime.exec(source.envId, 'db', ['busybox', 'sh', '-c', 'echo seeded > /data/a']);
    await snapshots.take(source, 'data', snapshot, AbortSignal.timeout(120_000));
    await runtime.prepareEnvironment(clone, AbortSignal.timeout(60_000));
    expect(await snapshots.restore(clone, 'data', snapshot.id, AbortSignal.timeout(60_000))).toBe('restored');
    return { runtime, snapshots, snapshot, clone, admin: config };
  }

  it("a removal while a clone waits for its pod's node leaves the storage's snapshot until the clone is made", async (ctx) => {
    const { runtime, snapshots, snapshot, clone } = await waitingClone(ctx, 'waiting');
    // Removed for everyone from now on; what the waiting clone needs stays, and says whose it is.
    expect(await snapshots.remove(snapshot.id)).toBe(true);
    expect(await snapshots.exists(snapshot.id)).toBe(false);
    expect((await snapshots.list()).map((o) => o.id)).toContain(snapshot.id);

    // The clone is made once its pod is, with the data.
    await applyPlan(runtime, clone);
    const read = await runtime.exec(clone.envId, 'db', ['busybox', 'cat', '/data/a']);
    expect(read.stdout).toBe('seeded\n');

    // Removed again (as garbage collection does with what it finds): nothing of it left.
    expect(await snapshots.remove(snapshot.id)).toBe(true);
    await noCsiObjects(snapshot.id);
  });

  it('an environment destroyed while its clone waits for a pod goes at once, and so does the snapshot', async (ctx) => {
    const { runtime, snapshots, snapshot, clone } = await waitingClone(ctx, 'destroyed');
    // The snapshot controller holds the clone's VolumeSnapshot (a claim was being filled from it)
    // until it looks again: 15 minutes by default, past destroy's 5 — unless nudged.
    await runtime.destroy(clone.envId);
    expect(await snapshots.remove(snapshot.id)).toBe(true);
    await noCsiObjects(snapshot.id);
  });

  it('a clone whose source went before it was filled is made again, or refused once the snapshot is gone', async (ctx) => {
    const { runtime, snapshots, snapshot, clone, admin } = await waitingClone(ctx, 'source-gone');
    const core = admin.makeApiClient(CoreV1Api);
    const custom = admin.makeApiClient(CustomObjectsApi);
    const claim = () =>
      core.readNamespacedPersistentVolumeClaim({
        namespace: namespaceName(clone.envId),
        name: 'volume-data',
      });
    // What a hand, or a crash of a removal, may do: the clone's source VolumeSnapshot deleted.
    const dropSource = () =>
      custom.deleteNamespacedCustomObject({
        group: 'snapshot.storage.k8s.io',
        version: 'v1',
        namespace: namespaceName(clone.envId),
        plural: 'volumesnapshots',
        name: cloneSnapshotName('data'),
      });

    // Its claim can never be filled now: not taken for a clone, made again.
    await dropSource();
    expect(await snapshots.restore(clone, 'data', snapshot.id, AbortSignal.timeout(60_000))).toBe('restored');
    expect((await claim()).spec?.dataSource?.name).toBe(cloneSnapshotName('data'));

    // The snapshot removed too: refused as gone, the claim left empty for a seed to fill.
    await snapshots.remove(snapshot.id);
    await dropSource();
    await expect(
      snapshots.restore(clone, 'data', snapshot.id, AbortSignal.timeout(60_000)),
    ).rejects.toBeInstanceOf(SnapshotGoneError);
    expect((await claim()).spec?.dataSource).toBeUndefined();
    await applyPlan(runtime, { ...clone, volumes: [{ name: 'data' }] });
  });
});

describe.skipIf(!kubeconfig)('KubernetesRuntime on the cluster', () => {
  const runtime = makeRuntime();
  const made: EnvPlan[] = [];
  afterAll(async () => {
    await Promise.all(made.map((plan) => runtime.destroy(plan.envId)));
  });
  const core = () => {
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig!);
    return config.makeApiClient(CoreV1Api);
  };

  it('services reach each other by their Compose names and aliases, without cluster DNS', async () => {
    const plan = envPlan([
      httpService('api', { aliases: ['backend'] }),
      workload({ name: 'client', command: ['testkit', 'sleep'] }),
    ]);
    made.push(plan);
    await applyPlan(runtime, plan);
    // Ready means reachable by name: the first request answers (the endpoints controller and
    // kube-proxy have caught up before apply returns).
    for (const name of ['api', 'backend']) {
      const got = await runtime.exec(plan.envId, 'client', [
        'busybox',
        'wget',
        '-q',
        '-O',
        '-',
        `http://${name}:8080/`,
      ]);
      expect(got).toMatchObject({ exitCode: 0, stdout: 'hello from api' });
    }
  });

  it('refuses a plan whose volumes would be one claim, before making anything', async () => {
    const alias = objectName('db_data');
    const plan = envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })], {
      volumes: [{ name: 'db_data' }, { name: alias }],
    });
    made.push(plan);
    await expect(applyPlan(runtime, plan)).rejects.toMatchObject({
      step: 'namespace',
      reason: `volumes "db_data" and "${alias}" would have one name on Kubernetes ("${alias}"): rename one`,
    });
    expect((await runtime.observe(plan.envId)).exists).toBe(false);
  });

  it('gives each environment a namespace with its quota, default limits and default-deny policy', async () => {
    const plan = envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })], {
      volumes: [{ name: 'data' }],
    });
    made.push(plan);
    await applyPlan(runtime, plan);
    const ns = namespaceName(plan.envId);
    const api = core();
    const quota = await api.readNamespacedResourceQuota({ namespace: ns, name: 'mayfly-quota' });
    expect(quota.spec?.hard).toMatchObject({ pods: '50', 'requests.memory': '16Gi' });
    const limits = await api.readNamespacedLimitRange({ namespace: ns, name: 'mayfly-defaults' });
    expect(limits.spec?.limits[0]?.defaultRequest).toMatchObject({ memory: '64Mi' });
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig!);
    const policy = await config
      .makeApiClient(NetworkingV1Api)
      .readNamespacedNetworkPolicy({ namespace: ns, name: 'mayfly-default-deny' });
    expect(policy.spec?.policyTypes).toEqual(['Ingress']);
    expect(policy.spec?.ingress?.[0]?._from).toEqual([
      { podSelector: {} },
      { ipBlock: { cidr: '10.245.0.1/32' } },
    ]);
    // Bound to its own local volume (the binder runs on its own; no pod waited for it here).
    await until('the claim to be bound', async () => {
      const claim = await api.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'volume-data' });
      return claim.status?.phase === 'Bound' ? true : undefined;
    });
    const pod = (await api.listNamespacedPod({ namespace: ns })).items[0]!;
    // No credentials for the cluster in a template's pods.
    expect(pod.spec?.automountServiceAccountToken).toBe(false);
    const mounts = pod.spec?.containers[0]?.volumeMounts ?? [];
    expect(mounts.map((m) => m.mountPath)).not.toContain('/var/run/secrets/kubernetes.io/serviceaccount');
    expect(
      (pod.spec?.volumes ?? []).some((v) => v.projected || v.secret?.secretName?.startsWith('default-token')),
    ).toBe(false);

    await runtime.destroy(plan.envId);
    await expect(api.readNamespace({ name: ns })).rejects.toMatchObject({ code: 404 });
    expect((await runtime.listManaged()).filter((o) => o.envId === plan.envId)).toEqual([]);
  });

  it("a template's pod has no credentials for the cluster: its requests to the API server and the kubelet are refused", async () => {
    const plan = envPlan([workload({ name: 'intruder', command: ['testkit', 'sleep'] })]);
    made.push(plan);
    await applyPlan(runtime, plan);
    // What code in the pod would try: the API server's Service and the node's kubelet, over TLS
    // without a certificate it could check, asking for the cluster's secrets and pods. Both are
    // reachable (NetworkPolicy governs only ingress here); what stops it is that it has no
    // credentials and these refuse anonymous requests, as a cluster should be set up.
    const probe = (host: string, port: number, path: string) =>
      runtime.exec(plan.envId, 'intruder', [
        'python3',
        '-c',
        [
          'import socket, ssl, sys',
          'ctx = ssl._create_unverified_context()',
          `s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), 5))`,
          `s.sendall(("GET " + sys.argv[3] + " HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n").encode())`,
          'print(s.recv(64).decode().splitlines()[0])',
        ].join('\n'),
        host,
        String(port),
        path,
      ]);
    const token = await runtime.exec(plan.envId, 'intruder', [
      'sh',
      '-c',
      'ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; echo "host=$KUBERNETES_SERVICE_HOST"',
    ]);
    expect(token.stdout).toContain('No such file or directory');
    const apiHost = /host=(\S+)/.exec(token.stdout)?.[1] || '10.96.0.1';
    const secrets = await probe(apiHost, 443, '/api/v1/namespaces/kube-system/secrets');
    expect(secrets).toMatchObject({ exitCode: 0 });
    expect(secrets.stdout).toMatch(/^HTTP\/1\.[01] 403/);
    // The node's own address (10.245.0.1 on the test cluster): reachable, but no anonymous access.
    const node = (await core().listNode()).items[0]!;
    const nodeIp = node.status!.addresses!.find((a) => a.type === 'InternalIP')!.address;
    const kubelet = await probe(nodeIp, 10250, '/pods');
    expect(kubelet.stdout).toMatch(/^HTTP\/1\.[01] 401/);
  });

  it('a workload removed from the plan leaves nothing behind: its Service, pods and files Secret go', async () => {
    const secretFile = { target: '/etc/app.conf', content: 'a = 1\n', mode: 0o444 };
    const both = envPlan([
      httpService('api'),
      workload({ name: 'worker', command: ['testkit', 'sleep'], files: [secretFile] }),
    ]);
    made.push(both);
    await applyPlan(runtime, both);
    const ns = namespaceName(both.envId);
    const api = core();
    const names = async () => {
      const [services, secrets, pods] = await Promise.all([
        api.listNamespacedService({ namespace: ns }),
        api.listNamespacedSecret({ namespace: ns }),
        api.listNamespacedPod({ namespace: ns }),
      ]);
      return {
        services: services.items.map((o) => o.metadata!.name!),
        secrets: secrets.items.map((o) => o.metadata!.name!).filter((n) => n.startsWith('files-')),
        pods: pods.items.filter((o) => !o.metadata?.deletionTimestamp).length,
      };
    };
    expect(await names()).toMatchObject({ secrets: ['files-worker'], pods: 2 });
    await applyPlan(runtime, { ...both, workloads: both.workloads.filter((w) => w.name === 'api') });
    expect(await names()).toEqual({ services: ['api'], secrets: [], pods: 1 });
  });

  it('a pod deleted behind its back is repaired: by Kubernetes for a controller, by the next apply for its own pods', async () => {
    const plan = envPlan([
      workload({ name: 'kept', command: ['testkit', 'sleep'], restart: 'always' }),
      workload({ name: 'own', command: ['testkit', 'sleep'] }),
    ]);
    made.push(plan);
    await applyPlan(runtime, plan);
    const ns = namespaceName(plan.envId);
    const api = core();
    for (const pod of (await api.listNamespacedPod({ namespace: ns })).items) {
      await api.deleteNamespacedPod({ namespace: ns, name: pod.metadata!.name!, gracePeriodSeconds: 0 });
    }
    const running = async () =>
      (await runtime.observe(plan.envId)).workloads
        .filter((w) => w.state === 'running')
        .map((w) => w.name)
        .sort();
    await until('the Deployment to bring its pod back', async () =>
      (await running()).includes('kept') ? true : undefined,
    );
    expect(await running()).toEqual(['kept']);
    // What Mayfly's reconciler does when it sees a workload missing: apply again.
    await applyPlan(runtime, plan);
    expect(await running()).toEqual(['kept', 'own']);
  });
});
