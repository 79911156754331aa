/**
 * Volume snapshots by the cluster's storage (see csi-snapshot-manifests.ts for the objects): used
 * for a volume whose storage class's provisioner is the driver of a VolumeSnapshotClass (the one
 * marked default for it, or the only one). Anything else — no snapshot API served, a storage class
 * without a snapshot class, local volumes — is copied by helper pods instead.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  PatchStrategy,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
  type V1StorageClass,
} from '@kubernetes/client-node';
import type { EnvPlan } from '../../plan/plan.js';
import { formatBytes } from '../format-bytes.js';
import { LABELS, SnapshotGoneError, type SnapshotObject } from '../runtime.js';
import {
  CSI_ROLE_LABEL,
  type CsiHandle,
  type CsiRole,
  cloneClaimManifest,
  cloneContentManifest,
  cloneContentName,
  cloneSnapshotManifest,
  cloneSnapshotName,
  csiLabels,
  csiSelector,
  DEFAULT_CLASS_ANNOTATION,
  keptContentManifest,
  keptContentName,
  keptSnapshotManifest,
  keptSnapshotName,
  SNAPSHOT_GROUP,
  SNAPSHOT_VERSION,
  takeSnapshotManifest,
  takeSnapshotName,
} from './csi-snapshot-manifests.js';
import { apiMessage, type KubeClients, statusOf, unless } from './kube-api.js';
import { type ClusterSettings, claimName, labelValue, namespaceName } from './manifests.js';
import {
  SNAPSHOT_LABEL,
  type SnapshotOf,
  snapshotNameOf,
  snapshotNamespaceName,
  snapshotProject,
} from './snapshot-manifests.js';

export interface CsiVolumeSnapshotsOptions {
  k: KubeClients;
  settings: ClusterSettings;
  pollMs: number;
  /** How long the storage may take to cut a snapshot or to provision a clone. */
  timeoutMs: number;
}

/** A kept snapshot as its objects say. */
export interface KeptCsiSnapshot extends SnapshotOf {
  handle: CsiHandle;
  sizeBytes: number;
}

interface SnapshotStatus {
  readyToUse?: boolean;
  boundVolumeSnapshotContentName?: string;
  error?: { message?: string };
}
interface CsiObject {
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
  };
  spec?: {
    driver?: string;
    deletionPolicy?: string;
    volumeSnapshotClassName?: string;
    source?: { snapshotHandle?: string; volumeSnapshotContentName?: string };
    volumeSnapshotRef?: { namespace?: string; name?: string };
  };
  status?: SnapshotStatus & { snapshotHandle?: string; restoreSize?: number | string };
  driver?: string;
}

/** The annotation the snapshot controllers set on a content whose storage snapshot is to go with it. */
const BEING_DELETED = 'snapshot.storage.kubernetes.io/volumesnapshot-being-deleted';

const api = { group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION };
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export class CsiVolumeSnapshots {
  private readonly k: KubeClients;
  private readonly settings: ClusterSettings;
  private readonly namespace: string;

  constructor(private readonly options: CsiVolumeSnapshotsOptions) {
    this.k = options.k;
    this.settings = options.settings;
    this.namespace = snapshotNamespaceName(options.settings.instance);
  }

  /**
   * The VolumeSnapshotClass that snapshots the environment's claim of `volume`: of its storage
   * class's provisioner, the one marked default, else the only one. Null: copied instead.
   */
  async classFor(plan: EnvPlan, volume: string): Promise<{ name: string; driver: string } | null> {
    if (this.settings.localVolumes) return null;
    const claim = await this.k.core.readNamespacedPersistentVolumeClaim({
      namespace: namespaceName(plan.envId),
      name: claimName(volume),
    });
    const storage = await this.storageOf(claim);
    if (!storage?.provisioner) return null;
    // No snapshot API (404), or a role that may not read it (403): copied.
    const classes = (await unless(
      [403, 404],
      this.k.custom.listClusterCustomObject({ ...api, plural: 'volumesnapshotclasses' }),
    )) as { items?: CsiObject[] } | undefined;
    const ofDriver = (classes?.items ?? []).filter((c) => c.driver === storage.provisioner);
    const chosen =
      ofDriver.find((c) => c.metadata?.annotations?.[DEFAULT_CLASS_ANNOTATION] === 'true') ??
      (ofDriver.length === 1 ? ofDriver[0] : undefined);
    return chosen?.metadata?.name ? { name: chosen.metadata.name, driver: storage.provisioner } : null;
  }

  /**
   * Takes the snapshot of the environment's volume: cut by the storage while `whileStopped` has
   * the volume's writers stopped, then kept in the snapshots namespace. A failure leaves nothing.
   */
  async take(
    plan: EnvPlan,
    volume: string,
    snapshot: SnapshotOf,
    snapshotClass: { name: string; driver: string },
    whileStopped: <T>(work: () => Promise<T>) => Promise<T>,
    signal: AbortSignal,
    maxBytes?: number,
  ): Promise<{ sizeBytes: number }> {
    const envNs = namespaceName(plan.envId);
    const take = takeSnapshotName(snapshot.id);
    try {
      const contentName = await whileStopped(async () => {
        await this.k.custom.createNamespacedCustomObject({
          ...api,
          namespace: envNs,
          plural: 'volumesnapshots',
          body: takeSnapshotManifest(this.settings, plan, volume, snapshot, snapshotClass.name),
        });
        const bound = await this.waitSnapshot(envNs, take, 'bound', signal);
        // Labelled at once: a crash from here on leaves a content that removal finds by its label.
        await this.patchContent(bound, { metadata: { labels: csiLabels(this.settings, snapshot, 'take') } });
        await this.waitSnapshot(envNs, take, 'ready', signal);
        return bound;
      });
      // The storage's snapshot now outlives the take's VolumeSnapshot: it is the kept one's.
      const taken = await this.patchContent(contentName, { spec: { deletionPolicy: 'Retain' } });
      const sizeBytes = Number(taken.status?.restoreSize) || 0;
      if (maxBytes !== undefined && sizeBytes > maxBytes) {
        throw new Error(
          `the volume's snapshot is ${formatBytes(sizeBytes)} (as its storage counts it), over the ${formatBytes(maxBytes)} a snapshot may hold`,
        );
      }
      const handle: CsiHandle = {
        driver: taken.spec?.driver ?? snapshotClass.driver,
        snapshotHandle: taken.status?.snapshotHandle ?? '',
        className: snapshotClass.name,
      };
      if (!handle.snapshotHandle) throw new Error(`the storage gave snapshot ${snapshot.id} no handle`);
      await this.k.custom.createClusterCustomObject({
        ...api,
        plural: 'volumesnapshotcontents',
        body: keptContentManifest(this.settings, snapshot, handle),
      });
      await this.k.custom.createNamespacedCustomObject({
        ...api,
        namespace: this.namespace,
        plural: 'volumesnapshots',
        body: keptSnapshotManifest(this.settings, snapshot),
      });
      await this.waitSnapshot(this.namespace, keptSnapshotName(snapshot.id), 'ready', signal);
      // The take's objects go; its content is Retain, so the storage's snapshot stays.
      await this.deleteSnapshot(envNs, take);
      await this.deleteContent(contentName);
      return { sizeBytes };
    } catch (err) {
      await this.remove(snapshot.id).catch(() => {});
      throw err;
    }
  }

  /**
   * Makes the environment's claim of `volume` (made empty by prepareEnvironment) again as a clone
   * of the kept snapshot. {@link SnapshotGoneError} when the snapshot is removed meanwhile.
   */
  async restore(plan: EnvPlan, volume: string, kept: KeptCsiSnapshot, signal: AbortSignal): Promise<void> {
    const envNs = namespaceName(plan.envId);
    const name = claimName(volume);
    const claim = await this.k.core.readNamespacedPersistentVolumeClaim({ namespace: envNs, name });
    const storage = await this.storageOf(claim);
    if (storage?.provisioner !== kept.handle.driver) {
      throw new Error(
        `snapshot ${kept.name} is kept by the storage driver ${kept.handle.driver}; volume ${volume} is on storage ${
          storage ? `${storage.name} (${storage.provisioner})` : 'of no storage class'
        }: it cannot be cloned there`,
      );
    }
    // A claim's source is fixed when it is made: the empty one goes, and is made again as a clone.
    await this.deleteClaim(envNs, name, signal);
    await this.replaceClone(
      'volumesnapshotcontents',
      undefined,
      cloneContentManifest(this.settings, plan, volume, kept, kept.handle),
      kept.id,
    );
    await this.replaceClone(
      'volumesnapshots',
      envNs,
      cloneSnapshotManifest(this.settings, plan, volume, kept),
      kept.id,
    );
    // Removal deletes the kept VolumeSnapshot before it looks for clones: either it sees this one
    // (and leaves the storage's snapshot until the clone is made), or this sees it gone.
    if (!(await this.kept(kept.id))) {
      await this.forgetClone(plan.envId, volume);
      throw new SnapshotGoneError(kept.id);
    }
    await this.k.core.createNamespacedPersistentVolumeClaim({
      namespace: envNs,
      body: cloneClaimManifest(this.settings, plan, volume, kept.id),
    });
    // Bound once filled; a storage that binds only for a pod's node fills it when one mounts it,
    // and its clone objects stay until then (removed with the environment, or by a removal).
    if (storage.immediate) {
      await this.waitBound(envNs, name, signal);
      await this.forgetClone(plan.envId, volume);
    }
  }

  /** The kept snapshot, while its VolumeSnapshot is there, not being deleted, and ready. */
  async kept(snapshotId: string): Promise<KeptCsiSnapshot | null> {
    const found = (await unless(
      [403, 404],
      this.k.custom.getNamespacedCustomObject({
        ...api,
        namespace: this.namespace,
        plural: 'volumesnapshots',
        name: keptSnapshotName(snapshotId),
      }),
    )) as CsiObject | undefined;
    if (!found || found.metadata?.deletionTimestamp || !found.status?.readyToUse) return null;
    const content = (await unless(
      [404],
      this.k.custom.getClusterCustomObject({
        ...api,
        plural: 'volumesnapshotcontents',
        name: keptContentName(this.settings.instance, snapshotId),
      }),
    )) as CsiObject | undefined;
    if (!content?.spec?.driver || !content.spec.source?.snapshotHandle) return null;
    return {
      id: snapshotId,
      project: snapshotProject(found) ?? '',
      name: snapshotNameOf(found, snapshotId),
      handle: {
        driver: content.spec.driver,
        snapshotHandle: content.spec.source.snapshotHandle,
        className: content.spec.volumeSnapshotClassName ?? '',
      },
      sizeBytes: Number(content.status?.restoreSize) || 0,
    };
  }

  /**
   * Removes the snapshot's objects, and with them the storage's snapshot — once no clone of it is
   * still being made: until then its content stays (Retain, found by {@link list} and removed by
   * a later call). Resolves to whether anything of it is left.
   */
  async remove(snapshotId: string): Promise<{ left: boolean }> {
    // The kept VolumeSnapshot first (its content made Retain): restores see it gone from here on.
    await unless(
      [404],
      this.patchContent(keptContentName(this.settings.instance, snapshotId), {
        spec: { deletionPolicy: 'Retain' },
      }),
    );
    await this.deleteSnapshot(this.namespace, keptSnapshotName(snapshotId));
    const [snapshots, contents] = await Promise.all([
      this.listSnapshots(csiSelector(snapshotId)),
      this.listContents(csiSelector(snapshotId)),
    ]);
    // Clones still being provisioned from it hold the storage's snapshot.
    let cloning = false;
    for (const clone of snapshots.filter((s) => this.role(s) === 'clone')) {
      const ns = clone.metadata?.namespace ?? '';
      if (await this.cloneProvisioning(ns, clone.metadata?.name ?? '')) cloning = true;
      else await this.deleteSnapshot(ns, clone.metadata!.name!);
    }
    // Takes cut short: their contents (bound or not) go with the storage's snapshot.
    for (const take of snapshots.filter((s) => this.role(s) === 'take')) {
      if (
        take.status?.boundVolumeSnapshotContentName &&
        !contents.some((c) => c.metadata?.name === take.status?.boundVolumeSnapshotContentName)
      ) {
        const bound = await unless([404], this.getContent(take.status.boundVolumeSnapshotContentName));
        if (bound) contents.push(bound);
      }
      if (!cloning) await this.deleteSnapshot(take.metadata!.namespace!, take.metadata!.name!);
    }
    if (cloning) return { left: true };
    for (const content of contents) {
      const role = this.role(content);
      if (role === 'clone') {
        await this.deleteContent(content.metadata!.name!);
        continue;
      }
      // The storage's snapshot goes with the content: what the snapshot controller would mark.
      await unless(
        [404],
        this.patchContent(content.metadata!.name!, {
          metadata: { annotations: { [BEING_DELETED]: 'yes' } },
          spec: { deletionPolicy: 'Delete' },
        }),
      );
      await this.deleteContent(content.metadata!.name!);
    }
    return { left: false };
  }

  /** Every CSI snapshot object of this installation's, by the snapshot it is of (for garbage collection). */
  async list(): Promise<SnapshotObject[]> {
    const selector = `${SNAPSHOT_LABEL},${CSI_ROLE_LABEL},${LABELS.instance}=${labelValue(this.settings.instance)}`;
    const [snapshots, contents] = await Promise.all([
      this.listSnapshots(selector),
      this.listContents(selector),
    ]);
    const found = new Map<string, string | null>();
    for (const o of [...snapshots, ...contents]) {
      const id = o.metadata?.labels?.[SNAPSHOT_LABEL];
      // One being deleted is on its way (its finalizers are the snapshot controllers').
      if (id && this.role(o) !== 'clone' && !o.metadata?.deletionTimestamp) found.set(id, snapshotProject(o));
    }
    return [...found].map(([id, project]) => ({ id, project }));
  }

  /** The environment's clone objects (their VolumeSnapshots go with its namespace). */
  async forget(envId: string): Promise<void> {
    const contents = await this.listContents(
      `${CSI_ROLE_LABEL}=clone,${LABELS.env}=${labelValue(envId)},${LABELS.instance}=${labelValue(this.settings.instance)}`,
    );
    await Promise.all(contents.map((c) => this.deleteContent(c.metadata!.name!)));
  }

  // --- helpers ----------------------------------------------------------------------------------

  private role(o: CsiObject): CsiRole | undefined {
    return o.metadata?.labels?.[CSI_ROLE_LABEL] as CsiRole | undefined;
  }

  private async storageOf(
    claim: V1PersistentVolumeClaim,
  ): Promise<{ name: string; provisioner: string; immediate: boolean } | null> {
    const name = claim.spec?.storageClassName;
    if (!name) return null;
    const found: V1StorageClass | undefined = await unless(
      [403, 404],
      this.k.storage.readStorageClass({ name }),
    );
    if (!found) return null;
    return {
      name,
      provisioner: found.provisioner,
      immediate: found.volumeBindingMode !== 'WaitForFirstConsumer',
    };
  }

  /** Waits until a VolumeSnapshot has its content (`bound`, resolving to its name) or is ready to use. */
  private async waitSnapshot(
    namespace: string,
    name: string,
    until: 'bound' | 'ready',
    signal: AbortSignal,
  ): Promise<string> {
    const deadline = Date.now() + this.options.timeoutMs;
    let last = '';
    for (;;) {
      const found = (await unless(
        [404],
        this.k.custom.getNamespacedCustomObject({ ...api, namespace, plural: 'volumesnapshots', name }),
      )) as CsiObject | undefined;
      if (!found) throw new Error(`volume snapshot ${namespace}/${name} is gone`);
      const status = found.status ?? {};
      last = status.error?.message ?? last;
      const content = status.boundVolumeSnapshotContentName;
      if (content && (until === 'bound' || status.readyToUse)) return content;
      if (Date.now() > deadline) {
        throw new Error(
          `volume snapshot ${namespace}/${name} is not ${until === 'bound' ? 'taken' : 'ready'} after ${this.options.timeoutMs / 1000} s${last ? `: ${last}` : ''}`,
        );
      }
      await sleep(this.options.pollMs, undefined, { signal });
    }
  }

  private async waitBound(namespace: string, name: string, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.options.timeoutMs;
    for (;;) {
      const claim = await this.k.core.readNamespacedPersistentVolumeClaim({ namespace, name });
      if (claim.status?.phase === 'Bound') return;
      if (Date.now() > deadline) {
        throw new Error(
          `the clone ${namespace}/${name} is not provisioned after ${this.options.timeoutMs / 1000} s`,
        );
      }
      await sleep(this.options.pollMs, undefined, { signal });
    }
  }

  /** Whether the claim a clone VolumeSnapshot was made for is still waiting for its data. */
  private async cloneProvisioning(namespace: string, snapshotName: string): Promise<boolean> {
    const claims = await unless([404], this.k.core.listNamespacedPersistentVolumeClaim({ namespace }));
    return (claims?.items ?? []).some(
      (c) =>
        c.spec?.dataSource?.name === snapshotName &&
        c.spec.dataSource.kind === 'VolumeSnapshot' &&
        !c.metadata?.deletionTimestamp &&
        c.status?.phase !== 'Bound',
    );
  }

  /** Makes a clone object, unless one for the same snapshot is there (one of another goes first). */
  private async replaceClone(
    plural: 'volumesnapshots' | 'volumesnapshotcontents',
    namespace: string | undefined,
    body: { metadata: { name: string } },
    snapshotId: string,
  ): Promise<void> {
    const name = body.metadata.name;
    const get = () =>
      namespace
        ? this.k.custom.getNamespacedCustomObject({ ...api, namespace, plural, name })
        : this.k.custom.getClusterCustomObject({ ...api, plural, name });
    const deadline = Date.now() + this.options.timeoutMs;
    for (;;) {
      const found = (await unless([404], get())) as CsiObject | undefined;
      if (!found) break;
      if (
        found.metadata?.labels?.[SNAPSHOT_LABEL] === labelValue(snapshotId) &&
        !found.metadata.deletionTimestamp
      ) {
        return;
      }
      if (!found.metadata?.deletionTimestamp) {
        await (namespace ? this.deleteSnapshot(namespace, name) : this.deleteContent(name));
      }
      if (Date.now() > deadline) throw new Error(`${plural} ${name} does not go away`);
      await sleep(this.options.pollMs);
    }
    try {
      await (namespace
        ? this.k.custom.createNamespacedCustomObject({ ...api, namespace, plural, body })
        : this.k.custom.createClusterCustomObject({ ...api, plural, body }));
    } catch (err) {
      if (statusOf(err) !== 409) throw new Error(`cannot make ${plural} ${name}: ${apiMessage(err)}`);
    }
  }

  /** A clone's objects: the storage's snapshot stays (the clone content is Retain). */
  private async forgetClone(envId: string, volume: string): Promise<void> {
    await this.deleteSnapshot(namespaceName(envId), cloneSnapshotName(volume));
    await this.deleteContent(cloneContentName(this.settings.instance, envId, volume));
  }

  private async deleteClaim(namespace: string, name: string, signal: AbortSignal): Promise<void> {
    await unless([404], this.k.core.deleteNamespacedPersistentVolumeClaim({ namespace, name }));
    const deadline = Date.now() + this.options.timeoutMs;
    while (await unless([404], this.k.core.readNamespacedPersistentVolumeClaim({ namespace, name }))) {
      if (Date.now() > deadline) throw new Error(`claim ${namespace}/${name} does not go away`);
      await sleep(this.options.pollMs, undefined, { signal });
    }
  }

  private getContent(name: string): Promise<CsiObject> {
    return this.k.custom.getClusterCustomObject({ ...api, plural: 'volumesnapshotcontents', name });
  }

  private patchContent(name: string, body: object): Promise<CsiObject> {
    return this.k.custom.patchClusterCustomObject(
      { ...api, plural: 'volumesnapshotcontents', name, body },
      mergePatch,
    );
  }

  private async deleteSnapshot(namespace: string, name: string): Promise<void> {
    await unless(
      [404],
      this.k.custom.deleteNamespacedCustomObject({ ...api, namespace, plural: 'volumesnapshots', name }),
    );
  }

  private async deleteContent(name: string): Promise<void> {
    await unless(
      [404],
      this.k.custom.deleteClusterCustomObject({ ...api, plural: 'volumesnapshotcontents', name }),
    );
  }

  private async listSnapshots(labelSelector: string): Promise<CsiObject[]> {
    const found = (await unless(
      [403, 404],
      this.k.custom.listCustomObjectForAllNamespaces({ ...api, plural: 'volumesnapshots', labelSelector }),
    )) as { items?: CsiObject[] } | undefined;
    return found?.items ?? [];
  }

  private async listContents(labelSelector: string): Promise<CsiObject[]> {
    const found = (await unless(
      [403, 404],
      this.k.custom.listClusterCustomObject({ ...api, plural: 'volumesnapshotcontents', labelSelector }),
    )) as { items?: CsiObject[] } | undefined;
    return found?.items ?? [];
  }
}
