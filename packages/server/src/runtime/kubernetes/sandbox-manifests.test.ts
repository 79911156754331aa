import { dumpYaml } from '@kubernetes/client-node';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Namespace, Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { egressRules } from '../../sandbox/egress-policy.js';
import { SandboxImageRefusedError, type SandboxSpec } from '../../sandbox/sandbox-runtime.js';
import {
  denyAllPolicyManifest,
  egressPeers,
  egressPolicyManifest,
  POLICY_PROBE_LABEL,
  policyControlPolicyManifest,
  policyProbeManifest,
  type SandboxClusterSettings,
  sandboxNamespaceManifest,
  sandboxPodManifest,
  sandboxUser,
} from './sandbox-manifests.js';

const settings: SandboxClusterSettings = {
  instance: 'inst-1',
  runtimeClasses: { gvisor: 'gvisor' },
  blockedOut: ['10.244.0.0/16'],
};

const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
  id: 'abc123',
  image: 'mayfly-build/sandbox:base',
  user: '1000:1000',
  home: '/home/user',
  env: { GREETING: 'hello' },
  cpus: 1,
  memoryBytes: 512 * 1024 * 1024,
  pids: 256,
  diskBytes: 64 * 1024 * 1024,
  readOnlyRoot: true,
  isolation: 'runc',
  agentDir: '/unused',
  labels: { 'mayfly.pool': 'base' },
  ...over,
});
const images = {
  sandbox: '127.0.0.1:5000/mayfly-env/sandbox:0123',
  agent: '127.0.0.1:5000/mayfly-env/agent:4567',
};
const wire = (m: object) => parse(dumpYaml(m)) as never;

describe('Kubernetes sandbox manifests', () => {
  it('match the snapshot and are valid against the official schemas', async () => {
    const egress = {
      rules: egressRules(['93.184.216.0/24'], []),
      hosts: { 'example.test': '93.184.216.34' },
    };
    const manifests = [
      sandboxNamespaceManifest(settings),
      denyAllPolicyManifest(settings),
      egressPolicyManifest(settings, spec(), egress.rules),
      sandboxPodManifest(settings, spec({ egress }), images),
      sandboxPodManifest(settings, spec({ isolation: 'gvisor', cpus: 0.5 }), images),
      policyProbeManifest(settings, 'mayfly-policy-probe-0a1b2c3d', 'probe', images.agent),
      policyProbeManifest(settings, 'mayfly-policy-control-0a1b2c3d', 'control', images.agent),
      policyControlPolicyManifest(settings, 'mayfly-policy-control-0a1b2c3d'),
    ];
    await expect(manifests.map((m) => dumpYaml(m)).join('---\n')).toMatchFileSnapshot(
      '__snapshots__/sandbox.yaml',
    );
    const models = { Namespace, NetworkPolicy, Pod } as Record<
      string,
      new (
        data: never,
      ) => { validate(): void }
    >;
    for (const m of manifests) expect(() => new models[m.kind!]!(wire(m)).validate(), m.kind).not.toThrow();
  });

  it('shut the pod in: no capabilities, no escalation, no token, no DNS, the image read-only, limits as requests', () => {
    const pod = sandboxPodManifest(settings, spec(), images);
    const main = pod.spec!.containers[0]!;
    expect(main.securityContext).toMatchObject({
      runAsUser: 1000,
      runAsGroup: 1000,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      readOnlyRootFilesystem: true,
    });
    expect(pod.spec).toMatchObject({
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      restartPolicy: 'Never',
      dnsPolicy: 'None',
      dnsConfig: { nameservers: ['192.0.2.1'] },
    });
    expect(pod.spec!.hostAliases).toBeUndefined();
    expect(pod.spec!.securityContext!.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    // The control plane's way in runs beside it, from the agent's image, read-only, as nobody.
    const relay = pod.spec!.containers.find((c) => c.name === 'relay')!;
    expect(relay.image).toBe(images.agent);
    expect(relay.securityContext).toMatchObject({
      runAsUser: 65534,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      allowPrivilegeEscalation: false,
    });
    expect(relay.volumeMounts ?? []).toEqual([]);
    expect(main.command).toContain('@mayfly-agent');
    expect(main.resources!.limits).toEqual(main.resources!.requests);
    expect(main.resources!.limits).toEqual({ memory: String(512 * 1024 * 1024), cpu: '1000m' });
    expect(pod.spec!.volumes!.find((v) => v.name === 'home')!.emptyDir).toEqual({
      medium: 'Memory',
      sizeLimit: String(64 * 1024 * 1024),
    });
    // Labels it is given are values Kubernetes takes; its own marks cannot be overridden.
    const hostile = sandboxPodManifest(
      settings,
      spec({ labels: { 'mayfly.sandbox': 'other', x: 'a b/c' } }),
      images,
    );
    expect(hostile.metadata!.labels!['mayfly.sandbox']).toBe('abc123');
    expect(hostile.metadata!.labels!.x).toMatch(/^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/);
  });

  it('probe the policies from a pod the deny-all policy covers, that is never listed as a sandbox and gets no token', () => {
    const probe = policyProbeManifest(settings, 'mayfly-policy-probe-1', 'probe', images.agent);
    expect(probe.metadata?.namespace).toBe(denyAllPolicyManifest(settings).metadata?.namespace);
    expect(denyAllPolicyManifest(settings).spec?.podSelector).toEqual({});
    expect(probe.metadata?.labels).toMatchObject({ [POLICY_PROBE_LABEL]: 'probe' });
    // Only the control pod is let out.
    const control = policyControlPolicyManifest(settings, 'mayfly-policy-control-1');
    expect(control.spec?.podSelector).toEqual({ matchLabels: { [POLICY_PROBE_LABEL]: 'control' } });
    expect(control.spec?.egress).toEqual([{}]);
    expect(Object.keys(probe.metadata?.labels ?? {})).not.toContain('mayfly.sandbox');
    expect(probe.spec).toMatchObject({ automountServiceAccountToken: false, restartPolicy: 'Never' });
    expect(probe.spec?.containers[0]?.securityContext).toMatchObject({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
  });

  it('runs as numbers: a user name is refused (a pod cannot name one), gVisor needs a RuntimeClass', () => {
    expect(() => sandboxUser('0')).toThrow(/never runs as root/);
    expect(() => sandboxUser('1000:0')).toThrow(/never runs as root/);
    expect(() => sandboxUser('user')).toThrow(SandboxImageRefusedError);
    expect(() => sandboxUser('1000:staff')).toThrow(/numeric uid\[:gid\]/);
    expect(() => sandboxUser('99999999999')).toThrow(SandboxImageRefusedError);
    expect(() =>
      sandboxPodManifest({ ...settings, runtimeClasses: {} }, spec({ isolation: 'gvisor' }), images),
    ).toThrow(/--kube-runtime-class gvisor=NAME/);
  });

  it('turn first-match rules into allow-only peers: rejected ranges inside an accepted one are excepted', () => {
    // The internet listed: every private, never-reachable and blocked range inside it is cut out.
    const peers = egressPeers(egressRules(['0.0.0.0/0'], []), ['10.244.0.0/16']);
    expect(peers).toHaveLength(1);
    expect(peers[0]!.ipBlock!.cidr).toBe('0.0.0.0/0');
    expect(peers[0]!.ipBlock!.except).toEqual(
      expect.arrayContaining([
        '10.244.0.0/16',
        '10.0.0.0/8',
        '127.0.0.0/8',
        '169.254.0.0/16',
        '192.168.0.0/16',
      ]),
    );
    // A permitted private range listed: open, but not the cluster's own range inside it.
    const permitted = egressPeers(egressRules(['10.0.0.0/8'], ['10.0.0.0/8']), ['10.244.0.0/16']);
    expect(permitted).toEqual([{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.244.0.0/16'] } }]);
    // A listed range inside a blocked one opens nothing.
    expect(egressPeers(egressRules(['10.244.1.0/24'], ['10.0.0.0/8']), ['10.244.0.0/16'])).toEqual([]);
    // Nothing listed: nothing in, nothing out, whatever the namespace's policy.
    expect(egressPolicyManifest(settings, spec(), []).spec).toMatchObject({
      policyTypes: ['Ingress', 'Egress'],
      ingress: [],
      egress: [],
    });
    // A range given with host bits is written as the API server reads it.
    expect(egressPeers(egressRules(['93.184.216.34/24'], []), [])[0]!.ipBlock!.cidr).toBe('93.184.216.0/24');
  });
});
