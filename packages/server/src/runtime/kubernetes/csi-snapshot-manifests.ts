/**
 * Volume snapshots through the cluster's own storage (pure, snapshot-testable): where the storage
 * class of an environment's claims is provisioned by a CSI driver that a VolumeSnapshotClass
 * names, a snapshot is a CSI snapshot and a clone is a claim with that snapshot as its
 * `dataSource` — the storage copies (or shares blocks), no byte passes through a pod.
 *
 * A VolumeSnapshot is namespaced and an environment's namespace goes with it, so the snapshot is
 * taken in the environment's namespace (`take`) and then kept in the installation's snapshots
 * namespace, bound to a content made for it with the same snapshot handle (`kept`, deleted with
 * its VolumeSnapshot: that removes the storage's snapshot). A clone gets a content and a
 * VolumeSnapshot of its own in the environment's namespace (`clone`, Retain: removing them never
 * removes the storage's snapshot). All of them are labelled with the snapshot's id.
 */
import { createHash } from 'node:crypto';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import type { EnvPlan } from '../../plan/plan.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import {
  type ClusterSettings,
  claimName,
  labelValue,
  namespaceName,
  objectName,
  volumeClaimManifest,
} from './manifests.js';
import {
  RESTORED_FROM,
  SNAPSHOT_LABEL,
  type SnapshotOf,
  snapshotAnnotations,
  snapshotClaimName,
  snapshotLabels,
  snapshotNamespaceName,
  snapshotVolumeName,
} from './snapshot-manifests.js';

export const SNAPSHOT_GROUP = 'snapshot.storage.k8s.io';
export const SNAPSHOT_VERSION = 'v1';
/** What a CSI snapshot object is to Mayfly: taken in an environment, kept, or made for a clone. */
export const CSI_ROLE_LABEL = 'mayfly.snapshot-role';
export type CsiRole = 'take' | 'kept' | 'clone';
/** The annotation that makes a VolumeSnapshotClass its driver's default. */
export const DEFAULT_CLASS_ANNOTATION = 'snapshot.storage.kubernetes.io/is-default-class';

const hash = (text: string, length = 40) => createHash('sha256').update(text).digest('hex').slice(0, length);

/** What the storage holds of a snapshot: enough to bind a content to it anywhere. */
export interface CsiHandle {
  driver: string;
  snapshotHandle: string;
  /** The VolumeSnapshotClass it was taken with. */
  className: string;
}

/** The VolumeSnapshot taken of an environment's claim, in the environment's namespace. */
export const takeSnapshotName = (snapshotId: string) => `mayfly-take-${objectName(snapshotId)}`;
/** The kept VolumeSnapshot (snapshots namespace) is named as the copy path's claim; its content as its volume. */
export const keptSnapshotName = snapshotClaimName;
export const keptContentName = snapshotVolumeName;
/**
 * A clone's content (cluster-wide) and VolumeSnapshot (the environment's namespace): one per
 * environment volume, by hashes too long to be searched for (no template can name another's).
 */
export const cloneContentName = (instance: string, envId: string, volume: string) =>
  `mayfly-clone-${hash(`${instance}/${envId}/${volume}`)}`;
export const cloneSnapshotName = (volume: string) => `mayfly-clone-${hash(volume)}`;

type Labelled = { metadata: { name: string; namespace?: string; labels: Record<string, string> } };

export interface VolumeSnapshotObject extends Labelled {
  apiVersion: string;
  kind: 'VolumeSnapshot';
  metadata: Labelled['metadata'] & { annotations?: Record<string, string> };
  spec: {
    source: { persistentVolumeClaimName: string } | { volumeSnapshotContentName: string };
    volumeSnapshotClassName?: string;
  };
}

export interface VolumeSnapshotContentObject extends Labelled {
  apiVersion: string;
  kind: 'VolumeSnapshotContent';
  metadata: Labelled['metadata'] & { annotations?: Record<string, string> };
  spec: {
    source: { snapshotHandle: string };
    driver: string;
    deletionPolicy: 'Delete' | 'Retain';
    volumeSnapshotClassName: string;
    volumeSnapshotRef: { namespace: string; name: string };
  };
}

export const csiLabels = (
  settings: Pick<ClusterSettings, 'instance'>,
  snapshot: SnapshotOf,
  role: CsiRole,
) => ({
  ...snapshotLabels(settings, snapshot),
  [CSI_ROLE_LABEL]: role,
});

/** The snapshot of the environment's claim, taken by the storage with `className`. */
export function takeSnapshotManifest(
  settings: Pick<ClusterSettings, 'instance'>,
  plan: Pick<EnvPlan, 'envId'>,
  volume: string,
  snapshot: SnapshotOf,
  className: string,
): VolumeSnapshotObject {
  return {
    apiVersion: `${SNAPSHOT_GROUP}/${SNAPSHOT_VERSION}`,
    kind: 'VolumeSnapshot',
    metadata: {
      name: takeSnapshotName(snapshot.id),
      namespace: namespaceName(plan.envId),
      labels: { ...csiLabels(settings, snapshot, 'take'), [LABELS.env]: labelValue(plan.envId) },
      annotations: snapshotAnnotations(snapshot),
    },
    spec: { source: { persistentVolumeClaimName: claimName(volume) }, volumeSnapshotClassName: className },
  };
}

/** The kept snapshot's content: the storage's snapshot. */
export function keptContentManifest(
  settings: Pick<ClusterSettings, 'instance'>,
  snapshot: SnapshotOf,
  handle: CsiHandle,
): VolumeSnapshotContentObject {
  return content(settings, snapshot, handle, {
    name: keptContentName(settings.instance, snapshot.id),
    role: 'kept',
    ref: { namespace: snapshotNamespaceName(settings.instance), name: keptSnapshotName(snapshot.id) },
  });
}

export function keptSnapshotManifest(
  settings: Pick<ClusterSettings, 'instance'>,
  snapshot: SnapshotOf,
): VolumeSnapshotObject {
  return boundSnapshot(settings, snapshot, {
    role: 'kept',
    namespace: snapshotNamespaceName(settings.instance),
    name: keptSnapshotName(snapshot.id),
    content: keptContentName(settings.instance, snapshot.id),
  });
}

/** A clone's own content of the snapshot (Retain: the storage's snapshot stays the kept one's). */
export function cloneContentManifest(
  settings: Pick<ClusterSettings, 'instance'>,
  plan: Pick<EnvPlan, 'envId'>,
  volume: string,
  snapshot: SnapshotOf,
  handle: CsiHandle,
): VolumeSnapshotContentObject {
  const made = content(settings, snapshot, handle, {
    name: cloneContentName(settings.instance, plan.envId, volume),
    role: 'clone',
    ref: { namespace: namespaceName(plan.envId), name: cloneSnapshotName(volume) },
  });
  // Removed with the environment (destroy finds them by it).
  made.metadata.labels[LABELS.env] = labelValue(plan.envId);
  return made;
}

export function cloneSnapshotManifest(
  settings: Pick<ClusterSettings, 'instance'>,
  plan: Pick<EnvPlan, 'envId'>,
  volume: string,
  snapshot: SnapshotOf,
): VolumeSnapshotObject {
  const made = boundSnapshot(settings, snapshot, {
    role: 'clone',
    namespace: namespaceName(plan.envId),
    name: cloneSnapshotName(volume),
    content: cloneContentName(settings.instance, plan.envId, volume),
  });
  made.metadata.labels[LABELS.env] = labelValue(plan.envId);
  return made;
}

/**
 * The environment's claim as a clone: provisioned from the snapshot, so bound only once the
 * storage has filled it (never taken half-made), and annotated with the snapshot from the start.
 */
export function cloneClaimManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  volume: string,
  snapshotId: string,
): V1PersistentVolumeClaim {
  const claim = volumeClaimManifest(settings, plan, volume);
  claim.metadata!.annotations = { ...claim.metadata!.annotations, [RESTORED_FROM]: snapshotId };
  claim.spec!.dataSource = {
    apiGroup: SNAPSHOT_GROUP,
    kind: 'VolumeSnapshot',
    name: cloneSnapshotName(volume),
  };
  return claim;
}

function content(
  settings: Pick<ClusterSettings, 'instance'>,
  snapshot: SnapshotOf,
  handle: CsiHandle,
  o: {
    name: string;
    role: CsiRole;
    ref: { namespace: string; name: string };
  },
): VolumeSnapshotContentObject {
  return {
    apiVersion: `${SNAPSHOT_GROUP}/${SNAPSHOT_VERSION}`,
    kind: 'VolumeSnapshotContent',
    metadata: {
      name: o.name,
      labels: csiLabels(settings, snapshot, o.role),
      annotations: snapshotAnnotations(snapshot),
    },
    spec: {
      source: { snapshotHandle: handle.snapshotHandle },
      driver: handle.driver,
      // Retain, kept or clone: deleting a VolumeSnapshot (a removal's first step, a clone done
      // with) never removes the storage's snapshot; a removal makes the contents Delete to.
      deletionPolicy: 'Retain',
      volumeSnapshotClassName: handle.className,
      volumeSnapshotRef: o.ref,
    },
  };
}

function boundSnapshot(
  settings: Pick<ClusterSettings, 'instance'>,
  snapshot: SnapshotOf,
  o: { role: CsiRole; namespace: string; name: string; content: string },
): VolumeSnapshotObject {
  return {
    apiVersion: `${SNAPSHOT_GROUP}/${SNAPSHOT_VERSION}`,
    kind: 'VolumeSnapshot',
    metadata: {
      name: o.name,
      namespace: o.namespace,
      labels: csiLabels(settings, snapshot, o.role),
      annotations: snapshotAnnotations(snapshot),
    },
    spec: { source: { volumeSnapshotContentName: o.content } },
  };
}

/** The selector of a snapshot's CSI objects, this installation's only. */
export const csiSelector = (snapshotId: string, instance: string) =>
  `${SNAPSHOT_LABEL}=${labelValue(snapshotId)},${CSI_ROLE_LABEL},${LABELS.managedBy}=${MANAGED_BY},${LABELS.instance}=${labelValue(instance)}`;
