/**
 * Volume snapshots on Kubernetes, for any storage (the copy path; see snapshot-manifests.ts): a
 * snapshot is a claim in the installation's snapshots namespace, filled and read by helper pods
 * whose agents' `pack` and `unpack` the control plane pipes into each other through exec. The
 * stream has backpressure both ways (exec-stream.ts): nothing of a volume piles up in this process.
 */
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import type Docker from 'dockerode';
import type { ImagePublisher } from '../../images/image-publisher.js';
import type { EnvPlan, WorkloadPlan } from '../../plan/plan.js';
import { maxBytesFlag, publishedAgentImage } from '../docker/agent-image.js';
import { imageId } from '../docker/engine-api.js';
import {
  LABELS,
  SnapshotGoneError,
  type SnapshotObject,
  type SnapshotRef,
  type VolumeSnapshots,
} from '../runtime.js';
import { CsiVolumeSnapshots } from './csi-volume-snapshots.js';
import { type ExecTarget, execStream } from './exec-stream.js';
import { apiMessage, type KubeClients, STUCK_REASONS, statusOf, unless } from './kube-api.js';
import { type ClusterSettings, claimName, labelValue, namespaceName } from './manifests.js';
import {
  type CopyHelper,
  copyHelperManifest,
  HELPER_AGENT,
  HELPER_CONTAINER,
  HELPER_LABEL,
  HELPER_MOUNT,
  RESTORED_FROM,
  restoreHelperNames,
  SNAPSHOT_LABEL,
  type SnapshotOf,
  snapshotClaimManifest,
  snapshotClaimName,
  snapshotDirectory,
  snapshotNamespaceManifest,
  snapshotNamespaceName,
  snapshotPolicyManifest,
  snapshotProject,
  snapshotVolumeManifest,
  snapshotVolumeName,
  takeHelperNames,
} from './snapshot-manifests.js';

/** What the runtime does for a snapshot: stop what writes a volume, and start it again. */
export interface VolumeWriters {
  /** The environment's workloads that mount `volume` and run (or are starting). */
  running(plan: EnvPlan, volume: string): Promise<WorkloadPlan[]>;
  /** Stops them, their grace period honoured; resolves once none of their pods is left. */
  stop(plan: EnvPlan, writers: WorkloadPlan[], signal: AbortSignal): Promise<void>;
  /** Starts them again and waits until they are ready. */
  start(plan: EnvPlan, writers: WorkloadPlan[], signal: AbortSignal): Promise<void>;
}

export interface KubernetesVolumeSnapshotsOptions {
  k: KubeClients;
  settings: ClusterSettings;
  writers: VolumeWriters;
  publisher: ImagePublisher;
  /** Where the agent's image is made and images' ids are read. */
  docker: Docker;
  agentBinary: string;
  pollMs: number;
  /** How long a helper pod may take to run (its image pulled). */
  startTimeoutMs: number;
}

/** The agent's one line of what it wrote, at most this long. */
const MAX_OUTPUT_BYTES = 64 * 1024;

export class KubernetesVolumeSnapshots implements VolumeSnapshots {
  private readonly k: KubeClients;
  private readonly settings: ClusterSettings;
  private readonly namespace: string;
  /** The agent's image as the cluster pulls it. */
  private readonly image: (signal: AbortSignal) => Promise<string>;
  /** Snapshots the cluster's storage takes itself, where it can. */
  private readonly csi: CsiVolumeSnapshots;

  constructor(private readonly options: KubernetesVolumeSnapshotsOptions) {
    this.k = options.k;
    this.settings = options.settings;
    this.namespace = snapshotNamespaceName(options.settings.instance);
    this.image = publishedAgentImage(options.docker, options.agentBinary, options.publisher);
    this.csi = new CsiVolumeSnapshots({
      k: options.k,
      settings: options.settings,
      pollMs: options.pollMs,
      timeoutMs: options.startTimeoutMs,
    });
  }

  async take(
    plan: EnvPlan,
    volume: string,
    snapshot: SnapshotRef,
    signal: AbortSignal,
    maxBytes?: number,
  ): Promise<{ sizeBytes: number; reflinked: boolean }> {
    signal.throwIfAborted();
    // Where the volume's storage snapshots itself, it does; else the data is copied.
    const snapshotClass = await this.csi.classFor(plan, volume);
    if (snapshotClass) {
      await this.ensureNamespace(signal);
      const { sizeBytes } = await this.csi.take(
        plan,
        volume,
        snapshot,
        snapshotClass,
        (work) => this.whileStopped(plan, volume, work, signal),
        signal,
        maxBytes,
      );
      return { sizeBytes, reflinked: false };
    }
    const image = await this.image(signal);
    await this.ensureNamespace(signal);
    const local = this.settings.localVolumes;
    const names = takeHelperNames(snapshot.id);
    let copied: { bytes: number } | undefined;
    try {
      if (local) {
        await this.k.core.createPersistentVolume({
          body: snapshotVolumeManifest({ ...this.settings, localVolumes: local }, snapshot),
        });
      }
      await this.k.core.createNamespacedPersistentVolumeClaim({
        namespace: this.namespace,
        body: snapshotClaimManifest(this.settings, snapshot),
      });
      copied = await this.whileStopped(
        plan,
        volume,
        async () => {
          const helpers = await this.helpers('take', snapshot, plan, volume, image, signal);
          return this.copy(helpers.env, helpers.snapshot, signal, maxBytes);
        },
        signal,
      );
    } finally {
      await Promise.all([
        this.deletePod(this.namespace, names.snapshot),
        this.deletePod(namespaceName(plan.envId), names.env),
      ]);
      if (!copied) await this.remove(snapshot.id);
    }
    return { sizeBytes: copied.bytes, reflinked: false };
  }

  async restore(
    plan: EnvPlan,
    volume: string,
    snapshotId: string,
    signal: AbortSignal,
  ): Promise<'restored' | 'present'> {
    const envNs = namespaceName(plan.envId);
    const claim = await this.k.core.readNamespacedPersistentVolumeClaim({
      namespace: envNs,
      name: claimName(volume),
    });
    // Set last: only a complete copy is ever taken for a clone (a clone by the storage is bound
    // only once it is filled).
    if (claim.metadata?.annotations?.[RESTORED_FROM] === snapshotId) {
      if (!(await this.csi.unfillable(claim))) return 'present';
      // A clone by the storage whose source went before it was filled: made again, or seeded.
      await this.csi.emptyAgain(plan, volume, signal);
    }
    const kept = await this.csi.kept(snapshotId);
    if (kept) {
      await this.csi.restore(plan, volume, kept, signal);
      return 'restored';
    }
    const snapshot = await this.snapshotOf(snapshotId);
    if (!snapshot) throw new SnapshotGoneError(snapshotId);
    const image = await this.image(signal);
    const names = restoreHelperNames(plan.envId, volume);
    try {
      // A restore cut short left its helpers: made anew (the agent empties the volume first).
      await Promise.all([
        this.deletePod(this.namespace, names.snapshot, true),
        this.deletePod(envNs, names.env, true),
      ]);
      const helpers = await this.helpers('restore', snapshot, plan, volume, image, signal).catch(
        async (err: unknown) => {
          // The snapshot was removed meanwhile: its claim is being deleted, no pod mounts it.
          if (!(await this.snapshotOf(snapshotId))) throw new SnapshotGoneError(snapshotId);
          throw err;
        },
      );
      await this.copy(helpers.snapshot, helpers.env, signal);
      await this.markRestored(envNs, claimName(volume), snapshotId);
    } finally {
      await Promise.all([this.deletePod(this.namespace, names.snapshot), this.deletePod(envNs, names.env)]);
    }
    return 'restored';
  }

  async remove(snapshotId: string): Promise<boolean> {
    const selector = `${SNAPSHOT_LABEL}=${labelValue(snapshotId)}`;
    const pods = await unless(
      [404],
      this.k.core.listNamespacedPod({ namespace: this.namespace, labelSelector: selector }),
    );
    // A clone being made of it right now: left, as on Docker. A helper that ended (its deadline
    // passed after a control plane died) copies nothing and holds nothing back.
    const cloning = (pods?.items ?? []).some(
      (p) =>
        p.metadata?.labels?.[HELPER_LABEL] === 'restore' &&
        !p.metadata.deletionTimestamp &&
        p.status?.phase !== 'Failed' &&
        p.status?.phase !== 'Succeeded',
    );
    if (cloning) return false;
    // The storage's snapshot, where it took it (what of it a clone still needs stays until then).
    // A role that may not touch the snapshot API made none of them.
    await this.csi.remove(snapshotId).catch((err: unknown) => {
      if (statusOf(err) !== 403) throw err;
    });
    // Helpers filling it (a take cut short), then its claim (and its node volume).
    await Promise.all((pods?.items ?? []).map((p) => this.deletePod(this.namespace, p.metadata!.name!)));
    await unless(
      [404],
      this.k.core.deleteNamespacedPersistentVolumeClaim({
        namespace: this.namespace,
        name: snapshotClaimName(snapshotId),
      }),
    );
    const local = this.settings.localVolumes;
    if (local) {
      await unless(
        [404],
        this.k.core.deletePersistentVolume({ name: snapshotVolumeName(this.settings.instance, snapshotId) }),
      );
      // The directory too, when this control plane runs on the node that has it.
      await rm(snapshotDirectory(local.directory, this.settings.instance, snapshotId), {
        recursive: true,
        force: true,
      });
    }
    await this.removeNamespaceIfEmpty();
    return true;
  }

  async list(): Promise<SnapshotObject[]> {
    const claims = await unless(
      [404],
      this.k.core.listNamespacedPersistentVolumeClaim({
        namespace: this.namespace,
        labelSelector: SNAPSHOT_LABEL,
      }),
    );
    const copied = (claims?.items ?? []).map((c) => ({
      id: c.metadata?.labels?.[SNAPSHOT_LABEL] ?? '',
      project: snapshotProject(c),
    }));
    const ids = new Set(copied.map((o) => o.id));
    return [...copied, ...(await this.csi.list()).filter((o) => !ids.has(o.id))];
  }

  async exists(snapshotId: string): Promise<boolean> {
    return (await this.snapshotOf(snapshotId)) !== null || (await this.csi.kept(snapshotId)) !== null;
  }

  imageId(ref: string): Promise<string | null> {
    return imageId(this.options.docker, ref);
  }

  /** See {@link CsiVolumeSnapshots.nudgeClones}: while the environment's namespace is deleted. */
  nudgeClones(envId: string): Promise<void> {
    return this.csi.nudgeClones(envId);
  }

  /** Helpers of the environment's restores in the snapshots namespace (its own go with its namespace). */
  async forget(envId: string): Promise<void> {
    await this.csi.forget(envId);
    await unless(
      [404],
      this.k.core.deleteCollectionNamespacedPod({
        namespace: this.namespace,
        labelSelector: `${HELPER_LABEL},${LABELS.env}=${labelValue(envId)}`,
        gracePeriodSeconds: 0,
      }),
    );
  }

  /**
   * Runs `work` with whatever writes the volume stopped, as its grace period says: a database
   * writes out what it held in memory, so the snapshot holds every write of the seed and needs no
   * recovery. A control plane that dies meanwhile leaves them stopped; the environment's next
   * apply starts them (a controller at no replicas, a pod that is not there, is started).
   */
  private async whileStopped<T>(
    plan: EnvPlan,
    volume: string,
    work: () => Promise<T>,
    signal: AbortSignal,
  ): Promise<T> {
    const writers = await this.options.writers.running(plan, volume);
    let result: { value: T } | undefined;
    let failure: unknown;
    try {
      await this.options.writers.stop(plan, writers, signal);
      result = { value: await work() };
    } catch (err) {
      failure = err;
    }
    await this.options.writers.start(plan, writers, signal);
    if (!result) throw failure;
    return result.value;
  }

  /** The snapshot whose claim is there and not being deleted, as its claim names it. */
  private async snapshotOf(snapshotId: string): Promise<SnapshotOf | null> {
    const claim: V1PersistentVolumeClaim | undefined = await unless(
      [404],
      this.k.core.readNamespacedPersistentVolumeClaim({
        namespace: this.namespace,
        name: snapshotClaimName(snapshotId),
      }),
    );
    if (!claim || claim.metadata?.deletionTimestamp) return null;
    return {
      id: snapshotId,
      project: snapshotProject(claim) ?? '',
      name: claim.metadata?.annotations?.['mayfly.snapshot-name'] ?? snapshotId,
    };
  }

  /**
   * Copies the contents of one helper's claim into the other's: pack piped into unpack, each
   * holding to `maxBytes` (and unpack to the room its disk has) on its own.
   */
  private async copy(
    from: ExecTarget,
    into: ExecTarget,
    signal: AbortSignal,
    maxBytes?: number,
  ): Promise<{ bytes: number }> {
    signal.throwIfAborted();
    const config = this.k.config;
    const limit = maxBytesFlag(maxBytes);
    const source = await execStream(config, from, [HELPER_AGENT, 'pack', ...limit, HELPER_MOUNT]);
    const sink = await execStream(config, into, [HELPER_AGENT, 'unpack', ...limit, HELPER_MOUNT]).catch(
      (err: unknown) => {
        source.destroy();
        throw err;
      },
    );
    const stop = () => {
      source.destroy(signal.reason as Error);
      sink.destroy(signal.reason as Error);
    };
    signal.addEventListener('abort', stop, { once: true });
    try {
      const [, output] = await Promise.all([pipeline(source, sink), text(sink)]);
      const stats = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as { bytes?: unknown };
      return { bytes: Number(stats.bytes) || 0 };
    } catch (err) {
      signal.throwIfAborted();
      throw new Error(`the copy failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      signal.removeEventListener('abort', stop);
      source.destroy();
      sink.destroy();
    }
  }

  /** The two helper pods of a copy, running: on the snapshot's side and on the environment's. */
  private async helpers(
    role: 'take' | 'restore',
    snapshot: SnapshotOf,
    plan: EnvPlan,
    volume: string,
    image: string,
    signal: AbortSignal,
  ): Promise<{ snapshot: ExecTarget; env: ExecTarget }> {
    const names = role === 'take' ? takeHelperNames(snapshot.id) : restoreHelperNames(plan.envId, volume);
    const common = { role, image, snapshotId: snapshot.id };
    const [onSnapshot, onEnv] = await Promise.all([
      this.helper(
        {
          ...common,
          side: { snapshot, envId: plan.envId },
          name: names.snapshot,
          readOnly: role === 'restore',
        },
        signal,
      ),
      this.helper({ ...common, side: { plan, volume }, name: names.env, readOnly: role === 'take' }, signal),
    ]);
    return { snapshot: onSnapshot, env: onEnv };
  }

  /** Makes a helper pod and waits until its agent runs. */
  private async helper(helper: CopyHelper, signal: AbortSignal): Promise<ExecTarget> {
    const body = copyHelperManifest(this.settings, helper);
    const namespace = body.metadata!.namespace!;
    await this.k.core.createNamespacedPod({ namespace, body });
    const deadline = Date.now() + this.options.startTimeoutMs;
    for (;;) {
      const pod: V1Pod | undefined = await unless(
        [404],
        this.k.core.readNamespacedPod({ namespace, name: helper.name }),
      );
      const state = pod?.status?.containerStatuses?.[0]?.state;
      if (state?.running) return { namespace, pod: helper.name, container: HELPER_CONTAINER };
      const waiting = state?.waiting?.reason;
      if (
        !pod ||
        state?.terminated ||
        (waiting && STUCK_REASONS.has(waiting)) ||
        pod.status?.phase === 'Failed'
      )
        throw new Error(
          `the copy's helper pod ${namespace}/${helper.name} did not start: ${waiting ?? state?.terminated?.reason ?? pod?.status?.reason ?? 'gone'}`,
        );
      if (Date.now() > deadline)
        throw new Error(
          `the copy's helper pod ${namespace}/${helper.name} is not running after ${this.options.startTimeoutMs / 1000} s`,
        );
      await sleep(this.options.pollMs, undefined, { signal });
    }
  }

  private async markRestored(namespace: string, name: string, snapshotId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const claim = await this.k.core.readNamespacedPersistentVolumeClaim({ namespace, name });
      claim.metadata!.annotations = { ...claim.metadata!.annotations, [RESTORED_FROM]: snapshotId };
      try {
        await this.k.core.replaceNamespacedPersistentVolumeClaim({ namespace, name, body: claim });
        return;
      } catch (err) {
        if (statusOf(err) !== 409 || attempt >= 10) throw err;
      }
    }
  }

  /** The snapshots namespace and its deny-all policy, made if missing (waited for while one is deleted). */
  private async ensureNamespace(signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.options.startTimeoutMs;
    for (;;) {
      const found = await unless([404], this.k.core.readNamespace({ name: this.namespace }));
      if (!found) break;
      if (!found.metadata?.deletionTimestamp) return;
      if (Date.now() > deadline) throw new Error(`namespace ${this.namespace} is still being deleted`);
      await sleep(this.options.pollMs, undefined, { signal });
    }
    // The policy first, in the namespace's first moment: no helper ever runs without it.
    await this.createIfMissing(() =>
      this.k.core.createNamespace({ body: snapshotNamespaceManifest(this.settings) }),
    );
    await this.createIfMissing(() =>
      this.k.networking.createNamespacedNetworkPolicy({
        namespace: this.namespace,
        body: snapshotPolicyManifest(this.settings),
      }),
    );
  }

  /** The namespace goes with the installation's last snapshot (nothing of Mayfly's stays behind). */
  private async removeNamespaceIfEmpty(): Promise<void> {
    const [claims, pods, kept] = await Promise.all([
      unless([404], this.k.core.listNamespacedPersistentVolumeClaim({ namespace: this.namespace, limit: 1 })),
      unless([404], this.k.core.listNamespacedPod({ namespace: this.namespace, limit: 1 })),
      this.csi.list(),
    ]);
    if (!claims || claims.items.length > 0 || (pods?.items.length ?? 0) > 0 || kept.length > 0) return;
    await unless([404, 409], this.k.core.deleteNamespace({ name: this.namespace }));
  }

  private async createIfMissing(create: () => Promise<unknown>): Promise<void> {
    try {
      await create();
    } catch (err) {
      if (statusOf(err) !== 409) throw new Error(`cannot make the snapshots namespace: ${apiMessage(err)}`);
    }
  }

  /** Deletes a pod at once; with `wait`, resolves once it is gone (its name free again). */
  private async deletePod(namespace: string, name: string, wait = false): Promise<void> {
    await unless([404], this.k.core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 })).catch(
      () => {},
    );
    if (!wait) return;
    const deadline = Date.now() + 60_000;
    while (await unless([404], this.k.core.readNamespacedPod({ namespace, name }))) {
      if (Date.now() > deadline) throw new Error(`pod ${namespace}/${name} does not go away`);
      await sleep(this.options.pollMs);
    }
  }
}

/** What a stream gives, as text (at most {@link MAX_OUTPUT_BYTES}). */
async function text(stream: Readable): Promise<string> {
  let out = '';
  for await (const chunk of stream) {
    if (out.length < MAX_OUTPUT_BYTES) out += String(chunk);
  }
  return out;
}
