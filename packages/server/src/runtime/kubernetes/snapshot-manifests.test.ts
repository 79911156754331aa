import { dumpYaml } from '@kubernetes/client-node';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Namespace, PersistentVolume, PersistentVolumeClaim, Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { envPlan } from '../../test-support/plans.js';
import {
  CSI_ROLE_LABEL,
  cloneClaimManifest,
  cloneContentManifest,
  cloneContentName,
  cloneSnapshotManifest,
  keptContentManifest,
  keptSnapshotManifest,
  takeSnapshotManifest,
} from './csi-snapshot-manifests.js';
import type { ClusterSettings } from './manifests.js';
import {
  copyHelperManifest,
  RESTORED_FROM,
  restoreHelperNames,
  SNAPSHOT_LABEL,
  snapshotClaimManifest,
  snapshotNamespaceManifest,
  snapshotNamespaceName,
  snapshotPolicyManifest,
  snapshotVolumeManifest,
  takeHelperNames,
} from './snapshot-manifests.js';

const settings: ClusterSettings = {
  instance: 'inst-1',
  runtimeClasses: {},
  gatewayPeers: [],
  quota: { pods: 20, requestsCpu: '4', requestsMemory: '4Gi', limitsMemory: '8Gi', storage: '20Gi' },
  containerDefaults: { cpuRequest: '50m', memoryRequest: '64Mi', memoryLimit: '512Mi' },
  volumeSize: '1Gi',
  dnsPolicy: 'Default',
};
const local = { ...settings, localVolumes: { directory: '/var/lib/mayfly-cluster/volumes' } };
const snapshot = { id: 'k3x9q2m1z8ab', project: 'shop', name: 'db-data-0123456789ab' };
const plan = { ...envPlan([]), envId: 'env-1', envName: 'pr-1', volumes: [{ name: 'db-data' }] };
const image = '127.0.0.1:5000/mayfly-env/agent:4567';
const wire = (m: object) => parse(dumpYaml(m)) as never;

describe('Kubernetes snapshot manifests', () => {
  const helpers = [
    copyHelperManifest(settings, {
      side: { snapshot, envId: plan.envId },
      role: 'take',
      name: takeHelperNames(snapshot.id).snapshot,
      readOnly: false,
      image,
      snapshotId: snapshot.id,
    }),
    copyHelperManifest(settings, {
      side: { plan, volume: 'db-data' },
      role: 'take',
      name: takeHelperNames(snapshot.id).env,
      readOnly: true,
      image,
      snapshotId: snapshot.id,
    }),
    copyHelperManifest(settings, {
      side: { plan, volume: 'db-data' },
      role: 'restore',
      name: restoreHelperNames(plan.envId, 'db-data').env,
      readOnly: false,
      image,
      snapshotId: snapshot.id,
    }),
  ];

  it('match the snapshot and are valid against the official schemas', async () => {
    const manifests = [
      snapshotNamespaceManifest(settings),
      snapshotPolicyManifest(settings),
      snapshotClaimManifest(settings, snapshot),
      snapshotClaimManifest(local, snapshot),
      snapshotVolumeManifest(local, snapshot),
      ...helpers,
    ];
    await expect(manifests.map((m) => dumpYaml(m)).join('---\n')).toMatchFileSnapshot(
      '__snapshots__/snapshots.yaml',
    );
    const models = { Namespace, NetworkPolicy, PersistentVolumeClaim, PersistentVolume, Pod } as Record<
      string,
      new (
        data: never,
      ) => { validate(): void }
    >;
    for (const m of manifests) expect(() => new models[m.kind!]!(wire(m)).validate(), m.kind).not.toThrow();
  });

  it('the snapshots namespace is no environment’s: garbage collection of environments never takes it', () => {
    expect(snapshotNamespaceManifest(settings).metadata?.labels).not.toHaveProperty('mayfly.env');
    expect(snapshotClaimManifest(settings, snapshot).metadata?.labels).not.toHaveProperty('mayfly.env');
    expect(snapshotPolicyManifest(settings).spec).toEqual({
      podSelector: {},
      policyTypes: ['Ingress', 'Egress'],
    });
  });

  it('a helper holds its claim and nothing more: no token, no escalation, only the capabilities a copy keeping owners needs', () => {
    for (const pod of helpers) {
      const [container] = pod.spec!.containers;
      expect(pod.spec).toMatchObject({ automountServiceAccountToken: false, enableServiceLinks: false });
      expect(pod.spec!.volumes).toHaveLength(1);
      expect(container!.volumeMounts).toHaveLength(1);
      expect(container!.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: {
          drop: ['ALL'],
          add: ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'MKNOD'],
        },
      });
      expect(container!.resources?.limits).toMatchObject({ memory: '256Mi' });
    }
    // The side a copy reads from is mounted read-only, claim and mount both.
    expect(helpers[1]!.spec!.volumes![0]!.persistentVolumeClaim).toEqual({
      claimName: 'volume-db-data',
      readOnly: true,
    });
    expect(helpers[1]!.spec!.containers[0]!.volumeMounts![0]!.readOnly).toBe(true);
    // Found and removed with their environment, whichever namespace they are in.
    for (const pod of helpers)
      expect(pod.metadata?.labels).toMatchObject({
        'mayfly.env': 'env-1',
        'mayfly.helper': expect.any(String),
      });
  });
});

describe('CSI snapshot manifests', () => {
  const csi = { ...settings, storageClassName: 'csi-hostpath-sc' };
  const handle = {
    driver: 'hostpath.csi.k8s.io',
    snapshotHandle: 'b1f3-77',
    className: 'csi-hostpath-snapclass',
  };

  it('takes the snapshot of the claim in the environment, with the class found for its storage', () => {
    const take = takeSnapshotManifest(csi, plan, 'db-data', snapshot, 'csi-hostpath-snapclass');
    expect(take.metadata.namespace).toBe('mayfly-env-1');
    expect(take.spec).toEqual({
      source: { persistentVolumeClaimName: 'volume-db-data' },
      volumeSnapshotClassName: 'csi-hostpath-snapclass',
    });
    expect(take.metadata.labels).toMatchObject({ [SNAPSHOT_LABEL]: snapshot.id, [CSI_ROLE_LABEL]: 'take' });
  });

  it('keeps it in the snapshots namespace, bound to a content that keeps the storage snapshot until a removal deletes it', () => {
    const content = keptContentManifest(csi, snapshot, handle);
    const kept = keptSnapshotManifest(csi, snapshot);
    expect(content.spec).toEqual({
      source: { snapshotHandle: 'b1f3-77' },
      driver: 'hostpath.csi.k8s.io',
      deletionPolicy: 'Retain',
      volumeSnapshotClassName: 'csi-hostpath-snapclass',
      volumeSnapshotRef: { namespace: snapshotNamespaceName('inst-1'), name: kept.metadata.name },
    });
    expect(kept.metadata.namespace).toBe(snapshotNamespaceName('inst-1'));
    expect(kept.spec).toEqual({ source: { volumeSnapshotContentName: content.metadata.name } });
    expect(kept.metadata.annotations).toEqual({
      'mayfly.project': 'shop',
      'mayfly.snapshot-name': snapshot.name,
    });
  });

  it('clones through a content of its own that never removes the storage snapshot', () => {
    const content = cloneContentManifest(csi, plan, 'db-data', snapshot, handle);
    const source = cloneSnapshotManifest(csi, plan, 'db-data', snapshot);
    expect(content.spec.deletionPolicy).toBe('Retain');
    expect(content.spec.volumeSnapshotRef).toEqual({ namespace: 'mayfly-env-1', name: source.metadata.name });
    expect(content.metadata.labels).toMatchObject({ 'mayfly.env': 'env-1', [CSI_ROLE_LABEL]: 'clone' });
    expect(source.spec).toEqual({ source: { volumeSnapshotContentName: content.metadata.name } });
    // One per environment volume, not to be named by a template: long hashes.
    expect(content.metadata.name).toMatch(/^mayfly-clone-[0-9a-f]{40}$/);
    expect(cloneContentName('inst-1', 'env-2', 'db-data')).not.toBe(content.metadata.name);

    const claim = cloneClaimManifest(csi, plan, 'db-data', snapshot.id);
    expect(() => new PersistentVolumeClaim(claim as never).validate()).not.toThrow();
    expect(claim.spec?.dataSource).toEqual({
      apiGroup: 'snapshot.storage.k8s.io',
      kind: 'VolumeSnapshot',
      name: source.metadata.name,
    });
    expect(claim.spec?.storageClassName).toBe('csi-hostpath-sc');
    expect(claim.metadata?.annotations?.[RESTORED_FROM]).toBe(snapshot.id);
  });
});
