/**
 * What volume snapshots are on Kubernetes (pure, snapshot-testable). A pod mounts only claims of
 * its own namespace, and an environment's namespace goes with it, so a snapshot is a claim in the
 * installation's snapshots namespace; data moves between a claim there and one in an environment's
 * namespace as a stream between two helper pods (the agent's `pack` and `unpack`), piped by the
 * control plane through exec. A helper holds nothing but its claim: no network (the namespace's
 * policy, and the environment's), no service account token, no capability but those a copy that
 * keeps owners needs.
 */
import { createHash } from 'node:crypto';
import type {
  V1Namespace,
  V1NetworkPolicy,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1Pod,
} from '@kubernetes/client-node';
import type { EnvPlan } from '../../plan/plan.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import {
  type ClusterSettings,
  claimName,
  envLabels,
  labelValue,
  namespaceName,
  objectName,
} from './manifests.js';

/** On a snapshot's claim (and volume), and on the helpers that fill or read it: the snapshot's id. */
export const SNAPSHOT_LABEL = 'mayfly.snapshot';
/** On helper pods: what they do (`take`, `restore`). */
export const HELPER_LABEL = 'mayfly.helper';
/** On an environment's claim made as a clone: the snapshot it is a complete clone of. */
export const RESTORED_FROM = 'mayfly.restored-from';
/** The exact project and name of a snapshot (labels may have had to shorten them). */
const PROJECT_ANNOTATION = 'mayfly.project';
const NAME_ANNOTATION = 'mayfly.snapshot-name';
/** The helper's container, and where its agent is (the agent image's own path). */
export const HELPER_CONTAINER = 'copy';
export const HELPER_AGENT = '/mayfly-agent';
/** Where a helper mounts its claim. */
export const HELPER_MOUNT = '/data';
/** A helper outlives a control plane that died while it copied by this long at most. */
const HELPER_DEADLINE_SECONDS = 6 * 3600;

const hash = (text: string, length = 10) => createHash('sha256').update(text).digest('hex').slice(0, length);

/** The installation's namespace for snapshots: one per installation, made when first needed. */
export const snapshotNamespaceName = (instance: string) => `mayfly-snapshots-${hash(instance)}`;
export const snapshotClaimName = (snapshotId: string) => `snap-${objectName(snapshotId)}`;
/** With `localVolumes`: the node directory of a snapshot's volume. */
export const snapshotVolumeName = (instance: string, snapshotId: string) =>
  `${snapshotNamespaceName(instance)}-${objectName(snapshotId)}`;
export const snapshotDirectory = (directory: string, instance: string, snapshotId: string) =>
  `${directory.replace(/\/+$/, '')}/${snapshotNamespaceName(instance)}/${objectName(snapshotId)}`;
/** The helper pod on the snapshot's side of a take, and the one on the environment's side. */
export const takeHelperNames = (snapshotId: string) => ({
  snapshot: `take-${objectName(snapshotId)}`,
  env: `mayfly-take-${objectName(snapshotId)}`,
});
/**
 * The helper pods of an environment volume's restore (one per volume: a restore again replaces
 * them). A hash too long to be searched for: a template must not be able to name a volume whose
 * helper is another environment's (or another volume's), which a restore would remove and copy from.
 */
export const restoreHelperNames = (envId: string, volume: string) => ({
  snapshot: `restore-${hash(`${envId}/${volume}`, 40)}`,
  env: `mayfly-restore-${hash(volume, 40)}`,
});

export interface SnapshotOf {
  id: string;
  project: string;
  name: string;
}

function installationLabels(settings: Pick<ClusterSettings, 'instance'>) {
  return { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: labelValue(settings.instance) };
}

export function snapshotLabels(settings: Pick<ClusterSettings, 'instance'>, snapshot: SnapshotOf) {
  return {
    ...installationLabels(settings),
    [LABELS.project]: labelValue(snapshot.project),
    [SNAPSHOT_LABEL]: labelValue(snapshot.id),
  };
}

/** The exact project and name of a snapshot, on each of its objects. */
export const snapshotAnnotations = (snapshot: SnapshotOf) => ({
  [PROJECT_ANNOTATION]: snapshot.project,
  [NAME_ANNOTATION]: snapshot.name,
});

/** The snapshot's name as its object says (its id when it says none). */
export const snapshotNameOf = (object: { metadata?: { annotations?: Record<string, string> } }, id: string) =>
  object.metadata?.annotations?.[NAME_ANNOTATION] ?? id;

/** The exact project a snapshot object names (for garbage collection), null when it names none. */
export const snapshotProject = (object: { metadata?: { annotations?: Record<string, string> } }) =>
  object.metadata?.annotations?.[PROJECT_ANNOTATION] ?? null;

export function snapshotNamespaceManifest(settings: Pick<ClusterSettings, 'instance'>): V1Namespace {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: snapshotNamespaceName(settings.instance), labels: installationLabels(settings) },
  };
}

/** No pod of the snapshots namespace takes or opens a connection. */
export function snapshotPolicyManifest(settings: Pick<ClusterSettings, 'instance'>): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: 'mayfly-deny-all',
      namespace: snapshotNamespaceName(settings.instance),
      labels: installationLabels(settings),
    },
    spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
  };
}

export function snapshotClaimManifest(
  settings: ClusterSettings,
  snapshot: SnapshotOf,
): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: snapshotClaimName(snapshot.id),
      namespace: snapshotNamespaceName(settings.instance),
      labels: snapshotLabels(settings, snapshot),
      annotations: snapshotAnnotations(snapshot),
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: settings.volumeSize } },
      ...(settings.localVolumes
        ? { storageClassName: '', volumeName: snapshotVolumeName(settings.instance, snapshot.id) }
        : {}),
    },
  };
}

/** With `localVolumes` (no provisioner): the snapshot claim's own volume, a node directory. */
export function snapshotVolumeManifest(
  settings: ClusterSettings & { localVolumes: { directory: string } },
  snapshot: SnapshotOf,
): V1PersistentVolume {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name: snapshotVolumeName(settings.instance, snapshot.id),
      labels: snapshotLabels(settings, snapshot),
      annotations: snapshotAnnotations(snapshot),
    },
    spec: {
      capacity: { storage: settings.volumeSize },
      accessModes: ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      claimRef: { namespace: snapshotNamespaceName(settings.instance), name: snapshotClaimName(snapshot.id) },
      hostPath: {
        path: snapshotDirectory(settings.localVolumes.directory, settings.instance, snapshot.id),
        type: 'DirectoryOrCreate',
      },
    },
  };
}

export interface CopyHelper {
  /** Which side: a snapshot's claim in the snapshots namespace, or an environment's volume. */
  side: { snapshot: SnapshotOf; envId: string } | { plan: EnvPlan; volume: string };
  role: 'take' | 'restore';
  name: string;
  /** The side the copy reads from is mounted read-only. */
  readOnly: boolean;
  image: string;
  /** Of the snapshot (on the environment's side too: removing a snapshot finds them by it). */
  snapshotId: string;
}

/** A helper pod: the agent idling beside one claim, until the control plane execs a copy in it. */
export function copyHelperManifest(settings: ClusterSettings, helper: CopyHelper): V1Pod {
  const { side } = helper;
  const onSnapshot = 'snapshot' in side;
  const labels = {
    ...(onSnapshot
      ? {
          ...snapshotLabels(settings, side.snapshot),
          // Removed with the environment, whichever side it is on.
          [LABELS.env]: labelValue(side.envId),
        }
      : { ...envLabels(settings, side.plan), [SNAPSHOT_LABEL]: labelValue(helper.snapshotId) }),
    [HELPER_LABEL]: helper.role,
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: helper.name,
      namespace: onSnapshot ? snapshotNamespaceName(settings.instance) : namespaceName(side.plan.envId),
      labels,
    },
    spec: {
      containers: [
        {
          name: HELPER_CONTAINER,
          image: helper.image,
          imagePullPolicy: 'IfNotPresent',
          command: [HELPER_AGENT, 'idle'],
          volumeMounts: [{ name: 'data', mountPath: HELPER_MOUNT, readOnly: helper.readOnly }],
          resources: {
            requests: { cpu: '50m', memory: '64Mi' },
            limits: { cpu: '1', memory: '256Mi' },
          },
          securityContext: {
            // Root, to keep every file's owner; nothing more than keeping owners, modes and nodes needs.
            runAsUser: 0,
            runAsGroup: 0,
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: {
              drop: ['ALL'],
              // Not DAC_READ_SEARCH: DAC_OVERRIDE reads everything already, and it grants open_by_handle_at.
              add: ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'MKNOD'],
            },
          },
        },
      ],
      volumes: [
        {
          name: 'data',
          persistentVolumeClaim: {
            claimName: onSnapshot ? snapshotClaimName(side.snapshot.id) : claimName(side.volume),
            readOnly: helper.readOnly,
          },
        },
      ],
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      activeDeadlineSeconds: HELPER_DEADLINE_SECONDS,
    },
  };
}
