/**
 * The sandbox seam on the test cluster (see kubernetes-runtime.k8s.test.ts for how it runs): the
 * shared conformance suite, then what only a cluster has — the policies that shut a sandbox's
 * network (accepted by the API server; nothing on the test cluster enforces them, so they are
 * checked as objects), and what the pod is made of. The driver acts with deploy/'s role.
 */
import { randomBytes } from 'node:crypto';
import { CoreV1Api, KubeConfig, NetworkingV1Api } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import { egressRules } from '../../sandbox/egress-policy.js';
import { sandboxRuntimeConformance } from '../../sandbox/sandbox-runtime.case.js';
import { SandboxImageRefusedError, type SandboxSpec } from '../../sandbox/sandbox-runtime.js';
import { roleKubeconfig } from '../../test-support/deploy-manifests.js';
import { requiredAgentBinary, TESTKIT_IMAGE, testInstanceName } from '../../test-support/global-setup.js';
import { until } from '../../test-support/until.js';
import { DockerImagePublisher } from '../docker/docker-image-publisher.js';
import { KubernetesSandboxRuntime } from './kubernetes-sandbox-runtime.js';
import {
  DENY_ALL_POLICY,
  POLICY_PROBE_LABEL,
  sandboxNamespaceName,
  sandboxPodName,
  sandboxPolicyName,
} from './sandbox-manifests.js';

const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
const instance = `${testInstanceName()}-k8s-sandbox`;
const asMayfly = kubeconfig ? await roleKubeconfig(kubeconfig) : undefined;
// The test cluster's pod and service ranges (scripts/cluster/up.sh).
const CLUSTER_RANGES = ['10.244.0.0/16', '10.96.0.0/12'];

const makeRuntime = (checkPolicies = false) =>
  new KubernetesSandboxRuntime({
    kubeconfig: asMayfly,
    instance,
    agentBinary: requiredAgentBinary(),
    publisher: new DockerImagePublisher({ registry }),
    blockedOut: CLUSTER_RANGES,
    // Nothing here enforces NetworkPolicies: the probe would refuse every sandbox (tested below).
    skipPolicyCheck: !checkPolicies,
  });

const admin = () => {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig!);
  return { core: config.makeApiClient(CoreV1Api), networking: config.makeApiClient(NetworkingV1Api) };
};

describe.skipIf(!kubeconfig)('KubernetesSandboxRuntime', () => {
  // The installation's sandbox namespace goes with the file: nothing of it is left.
  afterAll(async () => {
    const { core } = admin();
    await core
      .deleteNamespace({ name: sandboxNamespaceName(instance), gracePeriodSeconds: 0 })
      .catch(() => {});
    await until('the sandbox namespace is gone', () =>
      core.readNamespace({ name: sandboxNamespaceName(instance) }).then(
        () => undefined,
        () => true,
      ),
    );
  }, 120_000);

  sandboxRuntimeConformance('kubernetes', () => ({
    runtime: makeRuntime(),
    isolation: 'runc',
    // A pod always has an interface: its NetworkPolicies shut it (below).
    loopbackOnly: false,
    agentTimeoutMs: 30_000,
  }));

  it('finds that the test cluster does not enforce NetworkPolicies, and says so: no sandbox is to be made here', async () => {
    const refusal = await makeRuntime(true).checkPlatform();
    // Its node's kubelet or the API server, from a pod under the deny-all policy.
    expect(refusal).toMatch(
      /^NetworkPolicies do not hold on this cluster: a pod under a deny-all policy reached [\d.]+:(10250|443)\b/,
    );
    expect(refusal).toMatch(/--kube-skip-policy-check/);
    expect(await makeRuntime().checkPlatform()).toBeUndefined();
    // The check's pods (and the control pod's policy) are gone.
    const pods = await admin().core.listNamespacedPod({
      namespace: sandboxNamespaceName(instance),
      labelSelector: POLICY_PROBE_LABEL,
    });
    expect(pods.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => p.metadata?.name)).toEqual([]);
    const policies = await admin().networking.listNamespacedNetworkPolicy({
      namespace: sandboxNamespaceName(instance),
      labelSelector: POLICY_PROBE_LABEL,
    });
    expect(policies.items).toEqual([]);
  }, 180_000);

  describe('on the cluster', () => {
    const runtime = makeRuntime();
    const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
      id: `t${randomBytes(6).toString('hex')}`,
      image: TESTKIT_IMAGE,
      user: '1000:1000',
      home: '/home/user',
      env: {},
      memoryBytes: 128 * 1024 * 1024,
      pids: 64,
      diskBytes: 16 * 1024 * 1024,
      readOnlyRoot: true,
      isolation: 'runc',
      agentDir: '/unused',
      labels: {},
      ...over,
    });

    it('shuts the network by policy: nothing in or out of any sandbox pod, an allow-list opens only what it lists', {
      timeout: 180_000,
    }, async () => {
      const egress = {
        rules: egressRules(['93.184.216.0/24'], []),
        hosts: { 'example.test': '93.184.216.34' },
      };
      const listed = spec({ egress });
      const channel = await runtime.openChannel(listed.id);
      try {
        await runtime.create(listed);
        await channel.ready(30_000);
        const { core, networking } = admin();
        const namespace = sandboxNamespaceName(instance);
        const deny = await networking.readNamespacedNetworkPolicy({ name: DENY_ALL_POLICY, namespace });
        expect(deny.spec).toMatchObject({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
        expect(deny.spec!.ingress ?? []).toEqual([]);
        expect(deny.spec!.egress ?? []).toEqual([]);
        const own = await networking.readNamespacedNetworkPolicy({
          name: sandboxPolicyName(listed.id),
          namespace,
        });
        expect(own.spec!.podSelector?.matchLabels).toEqual({ 'mayfly.sandbox': listed.id });
        expect(own.spec!.policyTypes).toEqual(['Ingress', 'Egress']);
        expect(own.spec!.ingress ?? []).toEqual([]);
        expect(own.spec!.egress).toEqual([{ to: [{ ipBlock: { cidr: '93.184.216.0/24' } }] }]);
        // Its names come from its hosts file; no DNS server answers it.
        const hosts = await channel.open('GET', '/v1/files?path=/etc/hosts');
        let text = '';
        for await (const chunk of hosts) text += chunk.toString();
        expect(text).toMatch(/^93\.184\.216\.34\s+example\.test$/m);
        const resolv = await channel.open('GET', '/v1/files?path=/etc/resolv.conf');
        let resolvText = '';
        for await (const chunk of resolv) resolvText += chunk.toString();
        expect(resolvText).toMatch(/^nameserver 192\.0\.2\.1$/m);
        const pod = await core.readNamespacedPod({ name: sandboxPodName(listed.id), namespace });
        expect(pod.spec!.hostAliases).toEqual([{ ip: '93.184.216.34', hostnames: ['example.test'] }]);
        expect(pod.spec!.automountServiceAccountToken).toBe(false);
        // Removed: its policy goes with it, the namespace's stays.
        await runtime.remove(listed.id);
        await expect(
          networking.readNamespacedNetworkPolicy({ name: sandboxPolicyName(listed.id), namespace }),
        ).rejects.toMatchObject({ code: 404 });
        expect((await runtime.list()).map((s) => s.id)).not.toContain(listed.id);
      } finally {
        await channel.close();
        await runtime.remove(listed.id);
      }
    });

    it('refuses a user name (a pod runs as numbers) before it makes anything', async () => {
      const named = spec({ user: 'user' });
      await expect(runtime.create(named)).rejects.toBeInstanceOf(SandboxImageRefusedError);
      expect((await runtime.observe(named.id)).state).toBe('missing');
    });

    it('a fork bomb stays in its pod: its processes are bounded, another sandbox works on, removing it ends it', {
      timeout: 180_000,
    }, async () => {
      // Half a core: the bomb must not starve the node (and the suite) meanwhile.
      const bomb = spec({ cpus: 0.5 });
      const neighbour = spec();
      const channels = await Promise.all([runtime.openChannel(bomb.id), runtime.openChannel(neighbour.id)]);
      try {
        await Promise.all([runtime.create(bomb), runtime.create(neighbour)]);
        await Promise.all(channels.map((c) => c.ready(30_000)));
        // The command returns at once; the bomb goes on in the background.
        const started = await channels[0]!.open('POST', '/v1/processes', {
          body: Buffer.from(JSON.stringify({ cmd: ['sh', '-c', 'b() { b | b & }; b'] })),
          headers: { 'content-type': 'application/json' },
        });
        started.resume();
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        const ran = await channels[1]!.open('POST', '/v1/processes', {
          body: Buffer.from(JSON.stringify({ cmd: ['sh', '-c', 'echo still here'] })),
          headers: { 'content-type': 'application/json' },
        });
        let text = '';
        for await (const chunk of ran) text += chunk.toString();
        expect(text).toContain(Buffer.from('still here\n').toString('base64'));
        // The node's limit on a pod's processes holds it (the test cluster's podPidsLimit, 1024).
        const { core } = admin();
        const pod = await core.readNamespacedPod({
          name: sandboxPodName(bomb.id),
          namespace: sandboxNamespaceName(instance),
        });
        expect(pod.status?.phase).toBe('Running');
        await runtime.remove(bomb.id);
        expect((await runtime.observe(bomb.id)).state).toBe('missing');
      } finally {
        await Promise.all(channels.map((c) => c.close()));
        await Promise.all([runtime.remove(bomb.id), runtime.remove(neighbour.id)]);
      }
    });
  });
});
