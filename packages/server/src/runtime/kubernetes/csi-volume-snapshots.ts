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
import { type KubeClients, unless } from './kube-api.js';
import {
  type ClusterSettings,
  claimName,
  labelValue,
  namespaceName,
  parseQuantity,
  volumeClaimManifest,
} from './manifests.js';
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
  /** How long the storage may take to cut a snapshot (its writers stopped) or to provision a clone. */
  timeoutMs: number;
  /** How long a cut snapshot may take to be ready (uploaded, on some storage); default 30 minutes. */
  readyTimeoutMs?: number;
}

/** A kept snapshot as its objects say. */
export interface KeptCsiSnapshot extends SnapshotOf {
  handle: CsiHandle;
  sizeBytes: number;
}

interface SnapshotStatus {
  readyToUse?: boolean;
  /** Set once the storage has cut the snapshot (its data is what the volume held then). */
  creationTime?: string | number;
  boundVolumeSnapshotContentName?: string;
  error?: { message?: string };
}
interface CsiObject {
  metadata?: {
    name?: string;
    uid?: string;
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
        // Cut: the writers may go on (the storage may take much longer to make it ready).
        await this.waitSnapshot(envNs, take, 'cut', signal);
        return bound;
      });
      await this.waitSnapshot(envNs, take, 'ready', signal, this.options.readyTimeoutMs ?? 30 * 60_000);
      // The storage's snapshot now outlives the take's VolumeSnapshot: it is the kept one's. (The
      // snapshot controller sees this before it binds the kept content made after it: one watch
      // of contents, in order — so the take's VolumeSnapshot, deleted once that is bound, is
      // deleted by a controller that knows its content is Retain.)
      const taken = await this.patchContent(contentName, { spec: { deletionPolicy: 'Retain' } });
      // What the storage says a clone needs (its capacity, on most), else the claims' size.
      const sizeBytes = Number(taken.status?.restoreSize) || parseQuantity(this.settings.volumeSize);
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
    // A claim's source is fixed when it is made: the empty one goes, and is made again as a clone
    // (its objects made anew too: one left by a restore cut short may be bound to what is gone).
    await this.deleteClaim(envNs, name, signal);
    await this.forgetClone(plan.envId, volume, signal);
    await this.k.custom.createClusterCustomObject({
      ...api,
      plural: 'volumesnapshotcontents',
      body: cloneContentManifest(this.settings, plan, volume, kept, kept.handle),
    });
    await this.k.custom.createNamespacedCustomObject({
      ...api,
      namespace: envNs,
      plural: 'volumesnapshots',
      body: cloneSnapshotManifest(this.settings, plan, volume, kept),
    });
    await this.k.core.createNamespacedPersistentVolumeClaim({
      namespace: envNs,
      body: cloneClaimManifest(this.settings, plan, volume, kept.id),
    });
    // Removal deletes the kept VolumeSnapshot before it looks for clones, and counts a clone in
    // use until a bound claim names it: either it sees this one (and leaves the storage's
    // snapshot until the clone is made), or this sees the snapshot gone.
    if (!(await this.kept(kept.id))) {
      await this.emptyAgain(plan, volume, signal);
      throw new SnapshotGoneError(kept.id);
    }
    // Bound once filled; a storage that binds only for a pod's node fills it when one mounts it,
    // and its clone objects stay until then (removed with the environment, or by a removal).
    if (storage.immediate) {
      await this.waitBound(envNs, name, signal);
      await this.forgetClone(plan.envId, volume);
    }
  }

  /**
   * Whether the environment's claim is a clone that can no longer be filled: its data source is a
   * VolumeSnapshot that is gone (or going) and it is not bound yet.
   */
  async unfillable(claim: V1PersistentVolumeClaim): Promise<boolean> {
    const source = claim.spec?.dataSource;
    if (source?.kind !== 'VolumeSnapshot' || claim.status?.phase === 'Bound') return false;
    const found = await unless([404], this.getSnapshot(claim.metadata!.namespace!, source.name));
    return !found || Boolean(found.metadata?.deletionTimestamp);
  }

  /** The environment's claim made again empty, as prepareEnvironment makes it (its clone objects gone). */
  async emptyAgain(plan: EnvPlan, volume: string, signal: AbortSignal): Promise<void> {
    const envNs = namespaceName(plan.envId);
    await this.deleteClaim(envNs, claimName(volume), signal);
    await this.forgetClone(plan.envId, volume);
    await this.k.core.createNamespacedPersistentVolumeClaim({
      namespace: envNs,
      body: volumeClaimManifest(this.settings, plan, volume),
    });
  }

  /** The kept snapshot, while its VolumeSnapshot is there, not being deleted, and ready. */
  async kept(snapshotId: string): Promise<KeptCsiSnapshot | null> {
    const found = await unless([403, 404], this.getSnapshot(this.namespace, keptSnapshotName(snapshotId)));
    if (!found || found.metadata?.deletionTimestamp || !found.status?.readyToUse) return null;
    const content = await unless([404], this.getContent(keptContentName(this.settings.instance, snapshotId)));
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
    // The kept VolumeSnapshot first (its content is Retain: the storage's snapshot stays for
    // now): restores see it gone from here on.
    await this.deleteSnapshot(this.namespace, keptSnapshotName(snapshotId));
    const selector = csiSelector(snapshotId, this.settings.instance);
    const [found, contents] = await Promise.all([this.listSnapshots(selector), this.listContents(selector)]);
    // Only objects where Mayfly makes them, named as it names them (labels alone can be forged by
    // whoever may make a VolumeSnapshot somewhere).
    const snapshots = found.filter((s) => {
      const ns = s.metadata?.namespace ?? '';
      const name = s.metadata?.name ?? '';
      const role = this.role(s);
      if (role === 'take') return ns.startsWith('mayfly-') && name === takeSnapshotName(snapshotId);
      if (role === 'clone') return ns.startsWith('mayfly-') && name.startsWith('mayfly-clone-');
      return false;
    });
    // A clone holds the storage's snapshot until a bound claim names it.
    let cloning = false;
    for (const clone of snapshots.filter((s) => this.role(s) === 'clone')) {
      const ns = clone.metadata!.namespace!;
      if (await this.cloneFilled(ns, clone.metadata!.name!))
        await this.deleteSnapshot(ns, clone.metadata!.name!);
      else cloning = true;
    }
    // Takes cut short: their contents (labelled or not yet) go with the storage's snapshot.
    for (const take of snapshots.filter((s) => this.role(s) === 'take')) {
      const bound =
        take.status?.boundVolumeSnapshotContentName ??
        (take.metadata?.uid ? `snapcontent-${take.metadata.uid}` : '');
      if (bound && !contents.some((c) => c.metadata?.name === bound)) {
        const content = await unless([403, 404], this.getContent(bound));
        if (content && content.spec?.volumeSnapshotRef?.name === take.metadata?.name) contents.push(content);
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
      // The storage's snapshot goes with these contents (Delete); two removals at once both say so.
      await unless(
        [403, 404],
        this.patchContent(content.metadata!.name!, {
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

  /**
   * The environment's clone VolumeSnapshots being deleted with its namespace: the snapshot
   * controller keeps one while a claim was being filled from it, and after that claim is gone
   * looks again only at its next resync (15 minutes by default) — a change to it makes it look now.
   */
  async nudgeClones(envId: string): Promise<void> {
    const namespace = namespaceName(envId);
    const found = (await unless(
      [403, 404],
      this.k.custom.listNamespacedCustomObject({
        ...api,
        namespace,
        plural: 'volumesnapshots',
        labelSelector: `${CSI_ROLE_LABEL}=clone`,
      }),
    )) as { items?: CsiObject[] } | undefined;
    for (const clone of found?.items ?? []) {
      if (!clone.metadata?.deletionTimestamp || !clone.metadata.name) continue;
      await unless(
        [403, 404, 409, 422],
        this.k.custom.patchNamespacedCustomObject(
          {
            ...api,
            namespace,
            plural: 'volumesnapshots',
            name: clone.metadata.name,
            body: { metadata: { annotations: { 'mayfly.released-at': new Date().toISOString() } } },
          },
          mergePatch,
        ),
      );
    }
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

  /**
   * Waits until a VolumeSnapshot has its content (`bound`, resolving to its name), is cut by the
   * storage, or is ready to use.
   */
  private async waitSnapshot(
    namespace: string,
    name: string,
    until: 'bound' | 'cut' | 'ready',
    signal: AbortSignal,
    timeoutMs = this.options.timeoutMs,
  ): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const found = await unless([404], this.getSnapshot(namespace, name));
      if (!found) throw new Error(`volume snapshot ${namespace}/${name} is gone`);
      const status = found.status ?? {};
      last = status.error?.message ?? last;
      const content = status.boundVolumeSnapshotContentName;
      const reached =
        until === 'bound' ||
        status.readyToUse === true ||
        (until === 'cut' && status.creationTime !== undefined && status.creationTime !== null);
      if (content && reached) return content;
      if (Date.now() > deadline) {
        throw new Error(
          `volume snapshot ${namespace}/${name} is not ${until === 'ready' ? 'ready' : 'taken'} after ${timeoutMs / 1000} s${last ? `: ${last}` : ''}`,
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

  /**
   * Whether a clone VolumeSnapshot is done with: a bound claim names it, or its namespace is gone.
   * A clone whose claim is not made yet is not (a restore makes it after the clone's objects).
   */
  private async cloneFilled(namespace: string, snapshotName: string): Promise<boolean> {
    const claims = await unless([404], this.k.core.listNamespacedPersistentVolumeClaim({ namespace }));
    if (!claims) return true;
    return claims.items.some(
      (c) =>
        c.spec?.dataSource?.kind === 'VolumeSnapshot' &&
        c.spec.dataSource.name === snapshotName &&
        c.status?.phase === 'Bound',
    );
  }

  /** A clone's objects (with `waitGone`, until they are gone): the storage's snapshot stays (Retain). */
  private async forgetClone(envId: string, volume: string, waitGone?: AbortSignal): Promise<void> {
    const ns = namespaceName(envId);
    const snapshot = cloneSnapshotName(volume);
    const content = cloneContentName(this.settings.instance, envId, volume);
    await this.deleteSnapshot(ns, snapshot);
    await this.deleteContent(content);
    if (!waitGone) return;
    const deadline = Date.now() + this.options.timeoutMs;
    for (;;) {
      const [s, c] = await Promise.all([
        unless([404], this.getSnapshot(ns, snapshot)),
        unless([404], this.getContent(content)),
      ]);
      if (!s && !c) return;
      if (Date.now() > deadline) throw new Error(`the clone objects of volume ${volume} do not go away`);
      await sleep(this.options.pollMs, undefined, { signal: waitGone });
    }
  }

  private async deleteClaim(namespace: string, name: string, signal: AbortSignal): Promise<void> {
    await unless([404], this.k.core.deleteNamespacedPersistentVolumeClaim({ namespace, name }));
    const deadline = Date.now() + this.options.timeoutMs;
    while (await unless([404], this.k.core.readNamespacedPersistentVolumeClaim({ namespace, name }))) {
      if (Date.now() > deadline) throw new Error(`claim ${namespace}/${name} does not go away`);
      await sleep(this.options.pollMs, undefined, { signal });
    }
  }

  private getSnapshot(namespace: string, name: string): Promise<CsiObject> {
    return this.k.custom.getNamespacedCustomObject({ ...api, namespace, plural: 'volumesnapshots', name });
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

  /**
   * Deletes a content; its deletion policy says whether the storage's snapshot goes with it. Marked
   * as the snapshot controller marks one whose VolumeSnapshot is deleted: a content still bound
   * (to a VolumeSnapshot gone or going) keeps its finalizer forever without the mark.
   */
  private async deleteContent(name: string): Promise<void> {
    await unless([404], this.patchContent(name, { metadata: { annotations: { [BEING_DELETED]: 'yes' } } }));
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
