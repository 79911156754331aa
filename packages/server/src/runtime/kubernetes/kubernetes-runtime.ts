/**
 * KubernetesRuntime: the Runtime interface over a Kubernetes API server. One namespace per
 * environment; what each workload becomes is decided by `manifests.ts` (pure), this class only
 * creates, watches and removes those objects. Images are made pullable by the ImagePublisher seam.
 * @kubernetes/client-node never leaks past this folder.
 */
import { rm } from 'node:fs/promises';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type CoreV1Event,
  PatchStrategy,
  setHeaderOptions,
  type V1Namespace,
  type V1Pod,
  type V1Service,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import type Docker from 'dockerode';
import type { ImagePublisher, PublishedImage } from '../../images/image-publisher.js';
import { tryConnect } from '../../net/tcp-connect.js';
import type { EnvPlan, WorkloadPlan } from '../../plan/plan.js';
import { orAbort } from '../abort.js';
import { ByteTail, outputTail } from '../byte-tail.js';
import { engineClient } from '../docker/engine-api.js';
import {
  DEFAULT_EXEC_OUTPUT_BYTES,
  type Endpoint,
  type ExecOptions,
  type ExecResult,
  LABELS,
  type LogOptions,
  MANAGED_BY,
  type ManagedObject,
  type ObservedEnv,
  type ObservedWorkload,
  type PreparedEnvironment,
  type PreparedWorkload,
  type PrepareOptions,
  type ReadyOutcome,
  type Runtime,
  RuntimeStepError,
  RuntimeUnavailableError,
  WorkloadNotFoundError,
} from '../runtime.js';
import {
  apiMessage,
  type KubeClients,
  type KubeConnection,
  kubeClients,
  ownNamespace,
  STUCK_REASONS,
  statusOf,
  streamGet,
  unless,
} from './kube-api.js';
import { KubernetesVolumeSnapshots } from './kubernetes-volume-snapshots.js';
import {
  type ClusterSettings,
  checkObjectNames,
  claimName,
  filesSecretManifest,
  filesSecretName,
  labelValue,
  limitRangeManifest,
  localVolumeDirectory,
  localVolumeManifest,
  namespaceManifest,
  namespaceName,
  networkPolicyManifest,
  objectName,
  podManifest,
  resourceQuotaManifest,
  runsAs,
  serviceManifest,
  volumeClaimManifest,
  type WorkloadFacts,
  workloadManifest,
} from './manifests.js';
import { HELPER_LABEL } from './snapshot-manifests.js';

export interface KubernetesRuntimeOptions extends KubeConnection {
  clients?: KubeClients;
  /** Makes every workload's image pullable by the cluster. */
  publisher: ImagePublisher;
  /**
   * The static agent binary: volume snapshots copy with it (its image made where Mayfly builds,
   * `docker`, and published). Without it there are no snapshots.
   */
  agentBinary?: string;
  /** The Docker Engine where Mayfly builds (default: its socket, `socketPath`). */
  docker?: Docker;
  socketPath?: string;
  /** The installation's id (`Store.instanceId`). */
  instance?: string;
  cluster?: Partial<Omit<ClusterSettings, 'instance'>>;
  pollMs?: number;
  workloadTimeoutMs?: number;
  crashLoopRestarts?: number;
}

const DEFAULT_CLUSTER: Omit<ClusterSettings, 'instance'> = {
  runtimeClasses: {},
  gatewayPeers: [],
  quota: { pods: 50, requestsCpu: '8', requestsMemory: '16Gi', limitsMemory: '32Gi', storage: '50Gi' },
  containerDefaults: { cpuRequest: '50m', memoryRequest: '64Mi', memoryLimit: '1Gi' },
  volumeSize: '1Gi',
  dnsPolicy: 'ClusterFirst',
};

/**
 * The label naming a namespace: set by Kubernetes itself from 1.21, by deploy/ on Mayfly's own
 * namespace for older clusters.
 */
const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';
/** Annotation on a controller scaled to zero by a sleep: when. */
const STOPPED_AT = 'mayfly.stopped-at';
/** Published images remembered (the oldest forgotten first; publishing again is idempotent). */
const MAX_PUBLISHED = 1000;
/** Bytes of a file read back through the API at most. */
const MAX_READ_BYTES = 64 * 1024 * 1024;
/** Lines of a pod's log in an error message. */
const LOG_TAIL_LINES = 10;
const LOG_TAIL_BYTES = 4096;

const selectorOf = (labels: Record<string, string>) =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

export class KubernetesRuntime implements Runtime {
  readonly name = 'kubernetes';
  private readonly k: KubeClients;
  private readonly publisher: ImagePublisher;
  private readonly settings: ClusterSettings;
  private readonly pollMs: number;
  private readonly workloadTimeoutMs: number;
  private readonly crashLoopRestarts: number;
  /** Published images by the plan's reference: publishing again is cheap, not free. */
  private readonly published = new Map<string, Promise<PublishedImage>>();
  readonly snapshots: KubernetesVolumeSnapshots | undefined;

  constructor(options: KubernetesRuntimeOptions) {
    this.k = options.clients ?? kubeClients(options);
    this.publisher = options.publisher;
    this.settings = { ...DEFAULT_CLUSTER, ...options.cluster, instance: options.instance ?? 'default' };
    // Mayfly in the cluster: its own namespace's pods (the gateway) are let into every environment.
    const own = ownNamespace(options);
    if (own) {
      this.settings.gatewayPeers = [
        ...this.settings.gatewayPeers,
        { namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: own } } },
      ];
    }
    this.pollMs = options.pollMs ?? 250;
    this.workloadTimeoutMs = options.workloadTimeoutMs ?? 300_000;
    this.crashLoopRestarts = options.crashLoopRestarts ?? 3;
    this.snapshots = options.agentBinary
      ? new KubernetesVolumeSnapshots({
          k: this.k,
          settings: this.settings,
          writers: {
            running: (plan, volume) => this.runningWriters(plan, volume),
            stop: (plan, writers, signal) => this.stopWriters(plan, writers, signal),
            start: (plan, writers, signal) => this.startWriters(plan, writers, signal),
          },
          publisher: this.publisher,
          docker: options.docker ?? engineClient(options),
          agentBinary: options.agentBinary,
          pollMs: this.pollMs,
          startTimeoutMs: this.workloadTimeoutMs,
        })
      : undefined;
  }

  async ping(): Promise<void> {
    try {
      await this.k.core.listNamespace({ limit: 1 });
    } catch (err) {
      throw new RuntimeUnavailableError(`the Kubernetes API server is not reachable: ${apiMessage(err)}`);
    }
  }

  // --- environment ------------------------------------------------------------------------------

  async prepareEnvironment(plan: EnvPlan, signal: AbortSignal): Promise<PreparedEnvironment> {
    checkObjectNames(plan);
    const ns = namespaceName(plan.envId);
    await this.waitWhileTerminating(ns, signal);
    const s = this.settings;
    await this.createIfMissing('Namespace', () =>
      this.k.core.createNamespace({ body: namespaceManifest(s, plan) }),
    );
    signal.throwIfAborted();
    const madeVolumes: string[] = [];
    const quota = resourceQuotaManifest(s, plan);
    // Claims are made after the quota: one made by this call means none is there yet.
    const claimed = (await this.createIfMissing('ResourceQuota', () =>
      this.k.core.createNamespacedResourceQuota({ namespace: ns, body: quota }),
    ))
      ? new Set<string>()
      : await this.allowClaims(ns, plan);
    await Promise.all([
      this.createIfMissing('LimitRange', () =>
        this.k.core.createNamespacedLimitRange({ namespace: ns, body: limitRangeManifest(s, plan) }),
      ),
      this.createIfMissing('NetworkPolicy', () =>
        this.k.networking.createNamespacedNetworkPolicy({
          namespace: ns,
          body: networkPolicyManifest(s, plan),
        }),
      ),
      ...plan.volumes.map(async (v) => {
        // A local volume before its claim, so the claim is bound the moment it exists.
        const local = s.localVolumes;
        // A local volume's data is its volume's (the claim's goes with the namespace).
        let fresh = true;
        if (local) {
          fresh = await this.createIfMissing('PersistentVolume', () =>
            this.k.core.createPersistentVolume({
              body: localVolumeManifest({ ...s, localVolumes: local }, plan, v.name),
            }),
          );
        }
        const body = volumeClaimManifest(s, plan, v.name);
        // Looked for first: the quota would refuse a second claim before the create could say it exists.
        if (claimed.has(body.metadata!.name!)) return;
        const made = await this.createIfMissing('PersistentVolumeClaim', () =>
          this.k.core.createNamespacedPersistentVolumeClaim({ namespace: ns, body }),
        );
        // One to be a clone is made here too (then filled by the restore).
        if (made && fresh) madeVolumes.push(v.name);
      }),
    ]);
    // Every workload's Service before any pod: pods name each other by the Services' addresses.
    const images = await Promise.all(plan.workloads.map((w) => this.publish(w, signal)));
    signal.throwIfAborted();
    const planned = new Set(plan.workloads.map((w) => labelValue(w.name)));
    await Promise.all(plan.workloads.map((w, i) => this.ensureService(plan, w, images[i]!.ports)));
    // Workloads no longer planned go, with their Services.
    const stale = (label: Record<string, string> | undefined) => !planned.has(label?.[LABELS.workload] ?? '');
    const selector = this.selector(plan.envId);
    const [services, deployments, sets, jobs, pods] = await Promise.all([
      this.k.core.listNamespacedService({ namespace: ns, labelSelector: selector }),
      this.k.apps.listNamespacedDeployment({ namespace: ns, labelSelector: selector }),
      this.k.apps.listNamespacedStatefulSet({ namespace: ns, labelSelector: selector }),
      this.k.batch.listNamespacedJob({ namespace: ns, labelSelector: selector }),
      this.k.core.listNamespacedPod({ namespace: ns, labelSelector: selector }),
    ]);
    await Promise.all([
      ...services.items
        .filter((s) => stale(s.metadata?.labels))
        .map((s) =>
          unless([404], this.k.core.deleteNamespacedService({ namespace: ns, name: s.metadata!.name! })),
        ),
      // By selector: the driver never gets or lists a Secret (its role has neither verb on them).
      planned.size > 0
        ? unless(
            [404],
            this.k.core.deleteCollectionNamespacedSecret({
              namespace: ns,
              labelSelector: `${selector},${LABELS.workload},${LABELS.workload} notin (${[...planned].join(',')})`,
            }),
          ).catch((err: unknown) => {
            throw new RuntimeStepError('namespace', `cannot remove its old files: ${apiMessage(err)}`);
          })
        : undefined,
      ...deployments.items
        .filter((d) => stale(d.metadata?.labels))
        .map((d) =>
          unless([404], this.k.apps.deleteNamespacedDeployment({ namespace: ns, name: d.metadata!.name! })),
        ),
      ...sets.items
        .filter((d) => stale(d.metadata?.labels))
        .map((d) =>
          unless([404], this.k.apps.deleteNamespacedStatefulSet({ namespace: ns, name: d.metadata!.name! })),
        ),
      ...jobs.items
        .filter((j) => stale(j.metadata?.labels))
        .map((j) =>
          unless(
            [404],
            this.k.batch.deleteNamespacedJob({
              namespace: ns,
              name: j.metadata!.name!,
              propagationPolicy: 'Background',
            }),
          ),
        ),
      ...pods.items
        .filter((p) => stale(p.metadata?.labels) && !p.metadata?.ownerReferences?.length)
        .map((p) => this.deletePod(ns, p.metadata!.name!)),
    ]);
    return { madeVolumes };
  }

  private async waitWhileTerminating(ns: string, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.workloadTimeoutMs;
    for (;;) {
      const found = await unless([404], this.k.core.readNamespace({ name: ns }));
      if (!found?.metadata?.deletionTimestamp) return;
      if (Date.now() > deadline)
        throw new RuntimeStepError('namespace', `namespace ${ns} is still being deleted`);
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  /**
   * The quota of claims made with the environment counts the plan's volumes then: an update that
   * adds one raises it to the claims there are (kept volumes stay, as Compose keeps them) and new.
   * Patched only then, so a role from before `patch` was granted still repairs and wakes.
   * Returns the names of the claims there are.
   */
  private async allowClaims(ns: string, plan: EnvPlan): Promise<Set<string>> {
    const claims = await this.k.core.listNamespacedPersistentVolumeClaim({
      namespace: ns,
      labelSelector: this.selector(plan.envId),
    });
    const claimed = new Set(claims.items.map((c) => c.metadata?.name ?? ''));
    // Nothing new to claim (a repair, a wake, most updates): the quota is as it must be.
    if (plan.volumes.every((v) => claimed.has(claimName(v.name)))) return claimed;
    const names = new Set([...claimed, ...plan.volumes.map((v) => claimName(v.name))]);
    await this.k.core
      .patchNamespacedResourceQuota(
        {
          name: 'mayfly-quota',
          namespace: ns,
          body: { spec: { hard: { persistentvolumeclaims: String(Math.max(names.size, 1)) } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      )
      .catch((err: unknown) => {
        throw new RuntimeStepError('namespace', `cannot raise its quota of volumes: ${apiMessage(err)}`);
      });
    return claimed;
  }

  /** True when it made the object, false when it was there already. */
  private async createIfMissing(kind: string, create: () => Promise<unknown>): Promise<boolean> {
    try {
      await create();
      return true;
    } catch (err) {
      if (statusOf(err) === 409) return false;
      throw new RuntimeStepError('namespace', `cannot create its ${kind}: ${apiMessage(err)}`);
    }
  }

  private async publish(workload: WorkloadPlan, signal: AbortSignal): Promise<PublishedImage> {
    const ref = workload.image.ref;
    if (!ref) throw new RuntimeStepError(`build:${workload.name}`, 'the image has not been built');
    let published = this.published.get(ref);
    if (!published) {
      published = this.publisher.publish(ref, signal);
      this.published.set(ref, published);
      published.catch(() => this.published.delete(ref));
      // Every build makes a new reference: only the newest are remembered.
      if (this.published.size > MAX_PUBLISHED) this.published.delete(this.published.keys().next().value!);
    }
    try {
      return await published;
    } catch (err) {
      signal.throwIfAborted();
      throw new RuntimeStepError(`image:${workload.name}`, (err as Error).message);
    }
  }

  /** Made, or replaced when its ports changed; a Service's address never changes otherwise. */
  private async ensureService(plan: EnvPlan, workload: WorkloadPlan, ports: PublishedImage['ports']) {
    const ns = namespaceName(plan.envId);
    const wanted = serviceManifest(this.settings, plan, workload, ports);
    const name = objectName(workload.name);
    const existing = await unless([404], this.k.core.readNamespacedService({ namespace: ns, name }));
    if (existing && (!wanted || portsKey(existing) !== portsKey(wanted))) {
      await unless([404], this.k.core.deleteNamespacedService({ namespace: ns, name }));
    } else if (existing) {
      return;
    }
    if (!wanted) return;
    try {
      await this.k.core.createNamespacedService({ namespace: ns, body: wanted });
    } catch (err) {
      if (statusOf(err) !== 409) throw new RuntimeStepError(`create:${workload.name}`, apiMessage(err));
    }
  }

  private async facts(plan: EnvPlan, workload: WorkloadPlan, signal: AbortSignal): Promise<WorkloadFacts> {
    const ns = namespaceName(plan.envId);
    const services = await this.k.core.listNamespacedService({
      namespace: ns,
      labelSelector: this.selector(plan.envId),
    });
    const serviceIps = new Map<string, string>();
    for (const s of services.items) {
      const name = s.metadata?.annotations?.[LABELS.workload];
      const ip = s.spec?.clusterIP;
      if (name && ip && ip !== 'None') serviceIps.set(name, ip);
    }
    return { image: (await this.publish(workload, signal)).ref, serviceIps };
  }

  // --- one workload -----------------------------------------------------------------------------

  async prepareWorkload(
    plan: EnvPlan,
    workload: WorkloadPlan,
    options: PrepareOptions,
  ): Promise<PreparedWorkload> {
    const { signal } = options;
    const ns = namespaceName(plan.envId);
    const name = objectName(workload.name);
    const mode = runsAs(workload);
    const sameSpec = (labels?: Record<string, string>) =>
      labels?.[LABELS.specHash] === labelValue(workload.specHash);

    if (mode === 'job') {
      const job = await unless([404], this.k.batch.readNamespacedJob({ namespace: ns, name }));
      if (job && sameSpec(job.metadata?.labels)) {
        if ((job.status?.succeeded ?? 0) >= (job.spec?.completions ?? 1))
          return { state: 'exited', exitCode: 0, output: '' };
        if ((job.spec?.parallelism ?? 0) === 0) return { state: 'created' };
        if ((job.status?.failed ?? 0) > 0) {
          const failed = (await this.podsOf(plan.envId, workload.name)).find((p) => terminated(p)?.exitCode);
          return {
            state: 'exited',
            exitCode: terminated(failed)?.exitCode ?? 1,
            output: failed ? await this.logTail(ns, failed.metadata!.name!) : '',
          };
        }
        return { state: 'running' };
      }
    } else if (mode === 'controller') {
      const controller = await this.readController(ns, name, workload);
      if (!options.recreate && controller && sameSpec(controller.metadata?.labels)) {
        const replicas = controller.spec?.replicas ?? 0;
        if (replicas === workload.replicas) return { state: 'running' };
        if (replicas === 0) return { state: 'created' }; // made and not started, or put to sleep
      }
    } else {
      const pods = await this.podsOf(plan.envId, workload.name);
      const same = pods.filter((p) => sameSpec(p.metadata?.labels));
      if (!options.recreate && same.length === workload.replicas && pods.length === same.length) {
        if (same.every((p) => !terminated(p))) return { state: 'running' };
        const exited = same.every((p) => terminated(p));
        const failed = same.find((p) => terminated(p)?.exitCode !== 0);
        if (exited && (options.keepExited === 'any' || (options.keepExited === 'clean' && !failed))) {
          return failed
            ? {
                state: 'exited',
                exitCode: terminated(failed)!.exitCode,
                output: await this.logTail(ns, failed.metadata!.name!),
              }
            : { state: 'exited', exitCode: 0, output: '' };
        }
      } else if (same.length === 0 && pods.length === 0) {
        // Nothing yet (or removed by a sleep): made at start, once pods a sleep is still stopping
        // are gone (their names are the new ones').
        await orAbort(this.removeWorkload(plan.envId, workload), signal);
        await this.ensureFiles(plan, workload);
        options.onProgress?.({ type: 'workload', workload: workload.name, phase: 'creating' });
        await this.facts(plan, workload, signal); // publishes the image now, not at start
        return { state: 'created' };
      }
    }

    // Something else is there: removed, then made anew.
    await orAbort(this.removeWorkload(plan.envId, workload), signal);
    signal.throwIfAborted();
    options.onProgress?.({ type: 'workload', workload: workload.name, phase: 'creating' });
    const facts = await this.facts(plan, workload, signal);
    await this.ensureFiles(plan, workload);
    if (mode === 'job') {
      await this.create(workload, () =>
        this.k.batch.createNamespacedJob({
          namespace: ns,
          body: workloadManifest(this.settings, plan, workload, facts, 0) as never,
        }),
      );
    } else if (mode === 'controller') {
      await this.create(workload, () => {
        const manifest = workloadManifest(this.settings, plan, workload, facts, 0);
        return manifest.kind === 'StatefulSet'
          ? this.k.apps.createNamespacedStatefulSet({ namespace: ns, body: manifest as V1StatefulSet })
          : this.k.apps.createNamespacedDeployment({ namespace: ns, body: manifest as never });
      });
    }
    return { state: 'created' };
  }

  private async ensureFiles(plan: EnvPlan, workload: WorkloadPlan): Promise<void> {
    const ns = namespaceName(plan.envId);
    const secret = filesSecretManifest(this.settings, plan, workload);
    await unless(
      [404],
      this.k.core.deleteNamespacedSecret({ namespace: ns, name: filesSecretName(workload.name) }),
    );
    if (secret)
      await this.create(workload, () => this.k.core.createNamespacedSecret({ namespace: ns, body: secret }));
  }

  private async create(workload: WorkloadPlan, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (err) {
      if (err instanceof RuntimeStepError) throw err;
      throw new RuntimeStepError(`create:${workload.name}`, apiMessage(err));
    }
  }

  async startWorkload(plan: EnvPlan, workload: WorkloadPlan, signal: AbortSignal): Promise<void> {
    const ns = namespaceName(plan.envId);
    const name = objectName(workload.name);
    const mode = runsAs(workload);
    const facts = await this.facts(plan, workload, signal);
    signal.throwIfAborted();
    if (mode === 'job') {
      const found = await this.update(
        () => this.k.batch.readNamespacedJob({ namespace: ns, name }),
        (job) => {
          if ((job.spec?.parallelism ?? 0) > 0) return false; // started by an apply given up on meanwhile
          job.spec!.parallelism = workload.replicas;
          return true;
        },
        (job) => this.k.batch.replaceNamespacedJob({ namespace: ns, name, body: job }),
      ).catch((err: unknown) => {
        throw new RuntimeStepError(`start:${workload.name}`, apiMessage(err));
      });
      if (!found) throw new RuntimeStepError(`start:${workload.name}`, 'its Job is gone');
    } else if (mode === 'controller') {
      const found = await this.update(
        () => this.readController(ns, name, workload),
        (controller) => {
          controller.spec!.replicas = workload.replicas;
          if (controller.metadata?.annotations) delete controller.metadata.annotations[STOPPED_AT];
          return true;
        },
        (controller) =>
          controller.kind === 'StatefulSet'
            ? this.k.apps.replaceNamespacedStatefulSet({ namespace: ns, name, body: controller as never })
            : this.k.apps.replaceNamespacedDeployment({ namespace: ns, name, body: controller as never }),
      ).catch((err: unknown) => {
        throw new RuntimeStepError(`start:${workload.name}`, apiMessage(err));
      });
      if (!found) throw new RuntimeStepError(`start:${workload.name}`, 'its controller is gone');
    } else {
      await this.markAwake(ns, workload.name);
      for (let replica = 1; replica <= workload.replicas; replica++) {
        signal.throwIfAborted();
        const pod = podManifest(this.settings, plan, workload, facts, replica);
        await this.start(workload, () => this.k.core.createNamespacedPod({ namespace: ns, body: pod }));
      }
    }
  }

  /**
   * Read, change, write back; read again when another writer (a controller updating its status)
   * came between. False when the object is gone; `change` returning false writes nothing.
   */
  private async update<T>(
    read: () => Promise<T | undefined>,
    change: (object: T) => boolean,
    write: (object: T) => Promise<unknown>,
  ): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const object = await unless([404], read());
      if (!object) return false;
      if (!change(object)) return true;
      try {
        await write(object);
        return true;
      } catch (err) {
        if (statusOf(err) === 404) return false;
        if (statusOf(err) !== 409 || attempt >= 20) throw err;
      }
    }
  }

  private async start(workload: WorkloadPlan, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (err) {
      // Made by a start that was given up on while its request was out: started already.
      if (statusOf(err) === 409) return;
      if (err instanceof RuntimeStepError) throw err;
      throw new RuntimeStepError(`start:${workload.name}`, apiMessage(err));
    }
  }

  private async readController(ns: string, name: string, workload: WorkloadPlan) {
    const wantsSet = workload.mounts.some((m) => m.type === 'volume');
    const found = wantsSet
      ? await unless([404], this.k.apps.readNamespacedStatefulSet({ namespace: ns, name }))
      : await unless([404], this.k.apps.readNamespacedDeployment({ namespace: ns, name }));
    if (found) found.kind = wantsSet ? 'StatefulSet' : 'Deployment';
    return found;
  }

  /** Every object of the workload, pods included; resolves once its pods are gone. */
  private async removeWorkload(envId: string, workload: WorkloadPlan): Promise<void> {
    const ns = namespaceName(envId);
    const name = objectName(workload.name);
    const gone = { gracePeriodSeconds: 0, propagationPolicy: 'Background' };
    await Promise.all([
      unless([404], this.k.apps.deleteNamespacedDeployment({ namespace: ns, name, ...gone })),
      unless([404], this.k.apps.deleteNamespacedStatefulSet({ namespace: ns, name, ...gone })),
      unless([404], this.k.batch.deleteNamespacedJob({ namespace: ns, name, ...gone })),
    ]);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const pods = await this.podsOf(envId, workload.name, true);
      if (pods.length === 0) return;
      await Promise.all(pods.map((p) => this.deletePod(ns, p.metadata!.name!)));
      if (Date.now() > deadline)
        throw new RuntimeStepError(`create:${workload.name}`, 'its old pods do not go away');
      await sleep(this.pollMs);
    }
  }

  private deletePod(ns: string, name: string) {
    return unless([404], this.k.core.deleteNamespacedPod({ namespace: ns, name, gracePeriodSeconds: 0 }));
  }

  /** A workload's pods, by name; those being deleted only when asked for (`terminating`). */
  private async podsOf(envId: string, workload: string, terminating = false): Promise<V1Pod[]> {
    const list = await unless(
      [404],
      this.k.core.listNamespacedPod({
        namespace: namespaceName(envId),
        labelSelector: selectorOf({ ...this.labels(envId), [LABELS.workload]: labelValue(workload) }),
      }),
    );
    // Pods being deleted are as good as gone, but for making one of the same name.
    return (list?.items ?? [])
      .filter((p) => terminating || !p.metadata?.deletionTimestamp)
      .sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
  }

  async waitForExit(
    plan: EnvPlan,
    workload: WorkloadPlan,
    signal: AbortSignal,
  ): Promise<{ exitCode: number; output: string }> {
    const ns = namespaceName(plan.envId);
    const name = objectName(workload.name);
    for (;;) {
      signal.throwIfAborted();
      const job = await unless([404], this.k.batch.readNamespacedJob({ namespace: ns, name }));
      if (!job) throw new RuntimeStepError(`job:${workload.name}`, 'its Job is gone');
      if ((job.status?.succeeded ?? 0) >= (job.spec?.completions ?? 1)) return { exitCode: 0, output: '' };
      const pods = await this.podsOf(plan.envId, workload.name);
      const failed = pods.find((p) => (terminated(p)?.exitCode ?? 0) !== 0);
      if (failed || (job.status?.failed ?? 0) > 0) {
        const pod = failed ?? pods[0];
        return {
          exitCode: terminated(pod)?.exitCode ?? 1,
          output: pod ? await this.logTail(ns, pod.metadata!.name!) : '',
        };
      }
      for (const pod of pods) this.throwIfStuck(workload, pod, 'job');
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  async waitForReady(
    plan: EnvPlan,
    workload: WorkloadPlan,
    options: { fresh: boolean; signal: AbortSignal },
  ): Promise<ReadyOutcome> {
    const { signal } = options;
    const ns = namespaceName(plan.envId);
    const deadline = Date.now() + this.workloadTimeoutMs;
    const restartsBefore = new Map<string, number>();
    const check = workload.healthcheck === 'disabled' ? undefined : workload.healthcheck;
    for (;;) {
      signal.throwIfAborted();
      const pods = await this.podsOf(plan.envId, workload.name);
      let ready = 0;
      for (const pod of pods) {
        const status = pod.status?.containerStatuses?.[0];
        const key = pod.metadata!.uid!;
        if (!restartsBefore.has(key))
          restartsBefore.set(key, options.fresh ? 0 : (status?.restartCount ?? 0));
        // A container Kubernetes restarts (a controller's; on-failure's after a failure) is not done
        // when it exits.
        const exit = terminated(pod);
        const policy = pod.spec?.restartPolicy;
        const ended =
          policy === 'Always' || (policy === 'OnFailure' && exit?.exitCode !== 0) ? undefined : exit;
        if (ended) {
          return {
            state: 'exited',
            exitCode: ended.exitCode,
            output: await this.logTail(ns, pod.metadata!.name!),
          };
        }
        this.throwIfStuck(workload, pod, 'start');
        const restarts = (status?.restartCount ?? 0) - restartsBefore.get(key)!;
        // The kubelet backs off a container that keeps exiting (10 s, 20 s, 40 s…): once it says so,
        // waiting for more restarts would only take longer.
        const backingOff = status?.state?.waiting?.reason === 'CrashLoopBackOff';
        if (restarts >= this.crashLoopRestarts || backingOff) {
          const last = status?.lastState?.terminated?.exitCode;
          throw new RuntimeStepError(
            `start:${workload.name}`,
            `keeps crashing (restarted ${status?.restartCount ?? restarts} times, last exit code ${last ?? 'unknown'})${await this.logTail(ns, pod.metadata!.name!, true)}`,
          );
        }
        if (status?.ready) {
          ready++;
        } else if (check && status?.state?.running?.startedAt) {
          // Compose's verdict: unhealthy after `retries` failed checks once the start period is over.
          const started = new Date(status.state.running.startedAt).getTime();
          const window =
            check.startPeriodMs + check.retries * Math.max(1000, check.intervalMs) + check.timeoutMs;
          if (Date.now() - started > window + 2000) {
            const last = await this.probeFailure(ns, pod.metadata!.name!);
            throw new RuntimeStepError(
              `health:${workload.name}`,
              `health check failed${last ? `: ${last}` : ''}`,
            );
          }
        }
      }
      let lag: string | null = null;
      if (pods.length >= workload.replicas && ready >= workload.replicas) {
        lag = await this.serviceLag(plan, workload, pods);
        if (!lag) {
          if (check) return { state: 'ready', by: 'healthcheck' };
          const http = workload.ports.some((p) => p.http && p.protocol === 'tcp');
          return { state: 'ready', by: http && workload.healthcheck !== 'disabled' ? 'port' : 'running' };
        }
      }
      if (Date.now() > deadline) {
        const why =
          pods.flatMap((p) => (p.status?.conditions ?? []).filter((c) => c.status !== 'True' && c.message))[0]
            ?.message ?? lag;
        throw new RuntimeStepError(
          check ? `health:${workload.name}` : `start:${workload.name}`,
          `not ready after ${Math.round(this.workloadTimeoutMs / 1000)}s${why ? `: ${why}` : ''}`,
        );
      }
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  /**
   * Why the workload's Service does not reach its ready pods yet, or null once it does. Ready pods
   * are not yet reachable by name: the endpoints controller has to list them, then kube-proxy has
   * to route the Service's address to them (seconds under load). A dependent started on
   * `service_healthy` connects by name at once, as on Docker, so readiness waits for both. For
   * kube-proxy: a port a pod takes connections on must not be refused at the Service's address
   * (its reject rule for a Service without endpoints). Where this process cannot reach pod
   * addresses (off the cluster's network), only the endpoints are waited for.
   */
  private async serviceLag(plan: EnvPlan, workload: WorkloadPlan, pods: V1Pod[]): Promise<string | null> {
    const ns = namespaceName(plan.envId);
    const name = objectName(workload.name);
    const service = await unless([404], this.k.core.readNamespacedService({ namespace: ns, name }));
    if (!service) return null;
    const endpoints = await unless([404], this.k.core.readNamespacedEndpoints({ namespace: ns, name }));
    const listed = new Set((endpoints?.subsets ?? []).flatMap((s) => (s.addresses ?? []).map((a) => a.ip)));
    const ready = pods.filter((p) => p.status?.containerStatuses?.[0]?.ready && p.status.podIP);
    const unlisted = ready.filter((p) => !listed.has(p.status!.podIP!));
    if (unlisted.length > 0) return `its Service does not list ${unlisted.length} ready pod(s) yet`;
    const ip = service.spec?.clusterIP;
    const pod = ready[0]?.status?.podIP;
    if (!ip || ip === 'None' || !pod) return null;
    const ports = (service.spec?.ports ?? []).filter((p) => p.protocol !== 'UDP').slice(0, MAX_PROBED_PORTS);
    const refused = await Promise.all(
      ports.map(
        async (p) =>
          (await tryConnect(pod, Number(p.targetPort ?? p.port))) === 'connected' &&
          (await tryConnect(ip, p.port)) === 'refused',
      ),
    );
    const port = ports[refused.indexOf(true)]?.port;
    return port === undefined
      ? null
      : `its Service's address ${ip}:${port} refuses connections its pod takes (kube-proxy has not caught up)`;
  }

  /** What the last failed readiness probe of a pod printed, as the kubelet reported it. */
  private async probeFailure(ns: string, pod: string): Promise<string | undefined> {
    const events = await unless(
      [404],
      this.k.core.listNamespacedEvent({
        namespace: ns,
        fieldSelector: `involvedObject.name=${pod},reason=Unhealthy`,
      }),
    );
    const last = events?.items.sort((a, b) => eventTime(a) - eventTime(b)).at(-1)?.message;
    return last
      ?.replace(/^Readiness probe failed:\s*/, '')
      .trim()
      .slice(0, 4096);
  }

  /** A container that cannot start by itself (its image cannot be pulled, say) fails at once. */
  private throwIfStuck(workload: WorkloadPlan, pod: V1Pod, step: 'start' | 'job'): void {
    const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting;
    if (waiting?.reason && STUCK_REASONS.has(waiting.reason)) {
      throw new RuntimeStepError(
        `${step}:${workload.name}`,
        `${waiting.reason}: ${waiting.message ?? ''}`.trim(),
      );
    }
  }

  // --- the whole environment --------------------------------------------------------------------

  async observe(envId: string): Promise<ObservedEnv> {
    const ns = namespaceName(envId);
    const namespace = await unless([404], this.k.core.readNamespace({ name: ns }));
    if (!namespace || namespace.metadata?.labels?.[LABELS.instance] !== labelValue(this.settings.instance)) {
      return { envId, workloads: [], exists: false };
    }
    const selector = this.selector(envId);
    const [pods, deployments, sets, jobs] = await Promise.all([
      this.k.core.listNamespacedPod({ namespace: ns, labelSelector: selector }),
      this.k.apps.listNamespacedDeployment({ namespace: ns, labelSelector: selector }),
      this.k.apps.listNamespacedStatefulSet({ namespace: ns, labelSelector: selector }),
      this.k.batch.listNamespacedJob({ namespace: ns, labelSelector: selector }),
    ]);
    const workloads: ObservedWorkload[] = pods.items
      // A snapshot's helper pods are no workload of the environment.
      .filter((p) => !p.metadata?.deletionTimestamp && !p.metadata?.labels?.[HELPER_LABEL])
      .map((p) => {
        const ended = terminated(p);
        const status = p.status?.containerStatuses?.[0];
        const hasProbe = !!p.spec?.containers[0]?.readinessProbe;
        return {
          name: p.metadata?.annotations?.[LABELS.workload] ?? p.metadata?.name ?? '',
          kind: p.metadata?.labels?.['mayfly.kind'] === 'job' ? 'job' : 'service',
          state: ended
            ? 'exited'
            : status?.state?.running
              ? 'running'
              : status?.state?.waiting?.reason === 'CrashLoopBackOff'
                ? 'restarting'
                : 'created',
          health: !hasProbe || ended ? null : status?.ready ? 'healthy' : 'starting',
          exitCode: ended ? ended.exitCode : null,
        };
      });
    // A controller put to sleep has no pods: reported stopped, one per replica it had.
    for (const c of [...deployments.items, ...sets.items]) {
      if (c.spec?.replicas === 0 && c.metadata?.annotations?.[STOPPED_AT]) {
        workloads.push({
          name: c.metadata.annotations[LABELS.workload] ?? c.metadata.name ?? '',
          kind: 'service',
          state: 'exited',
          health: null,
          exitCode: 0,
        });
      }
    }
    // A Job made and not started yet has no pods: reported created.
    for (const job of jobs.items) {
      if ((job.spec?.parallelism ?? 0) === 0) {
        workloads.push({
          name: job.metadata?.annotations?.[LABELS.workload] ?? job.metadata?.name ?? '',
          kind: 'job',
          state: 'created',
          health: null,
          exitCode: null,
        });
      }
    }
    // Mayfly's own pods removed by a sleep: reported stopped until they are started again.
    const seen = new Set(workloads.map((w) => w.name));
    for (const name of asleep(namespace)) {
      if (!seen.has(name))
        workloads.push({ name, kind: 'service', state: 'exited', health: null, exitCode: null });
    }
    return { envId, workloads, exists: true };
  }

  /** Notes on the namespace which workloads' pods a sleep removed (read back by {@link observe}). */
  private async markAsleep(ns: string, names: string[]): Promise<void> {
    await this.updateNamespace(ns, (namespace) => [...new Set([...asleep(namespace), ...names])].sort());
  }

  private async markAwake(ns: string, name: string): Promise<void> {
    await this.updateNamespace(ns, (namespace) => asleep(namespace).filter((n) => n !== name));
  }

  private async updateNamespace(ns: string, next: (namespace: V1Namespace) => string[]): Promise<void> {
    await this.update(
      () => this.k.core.readNamespace({ name: ns }),
      (namespace) => {
        const before = asleep(namespace);
        const after = next(namespace);
        if (before.length === after.length && before.every((n, i) => n === after[i])) return false;
        namespace.metadata!.annotations = {
          ...namespace.metadata!.annotations,
          [ASLEEP]: JSON.stringify(after),
        };
        return true;
      },
      (namespace) => this.k.core.replaceNamespace({ name: ns, body: namespace }),
    );
  }

  // --- writers of a volume, stopped for its snapshot ---------------------------------------------

  private async runningWriters(plan: EnvPlan, volume: string): Promise<WorkloadPlan[]> {
    const ns = namespaceName(plan.envId);
    const mounting = plan.workloads.filter(
      (w) => w.kind !== 'job' && w.mounts.some((m) => m.type === 'volume' && m.source === volume),
    );
    const running = await Promise.all(
      mounting.map(async (w) => {
        if (runsAs(w) === 'controller')
          return ((await this.readController(ns, objectName(w.name), w))?.spec?.replicas ?? 0) > 0;
        return (await this.podsOf(plan.envId, w.name)).some((p) => !terminated(p));
      }),
    );
    return mounting.filter((_, i) => running[i]);
  }

  /** Scales controllers to none and removes pods, their grace period honoured; waits until none is left. */
  private async stopWriters(plan: EnvPlan, writers: WorkloadPlan[], signal: AbortSignal): Promise<void> {
    const ns = namespaceName(plan.envId);
    await Promise.all(
      writers.map(async (w) => {
        const name = objectName(w.name);
        if (runsAs(w) === 'controller') {
          await this.update(
            () => this.readController(ns, name, w),
            (controller) => {
              controller.spec!.replicas = 0;
              return true;
            },
            (controller) =>
              controller.kind === 'StatefulSet'
                ? this.k.apps.replaceNamespacedStatefulSet({ namespace: ns, name, body: controller as never })
                : this.k.apps.replaceNamespacedDeployment({ namespace: ns, name, body: controller as never }),
          );
        } else {
          const pods = await this.podsOf(plan.envId, w.name);
          await Promise.all(
            pods.map((p) =>
              unless([404], this.k.core.deleteNamespacedPod({ namespace: ns, name: p.metadata!.name! })),
            ),
          );
        }
      }),
    );
    const deadline = Date.now() + this.workloadTimeoutMs;
    for (const w of writers) {
      while ((await this.podsOf(plan.envId, w.name, true)).length > 0) {
        if (Date.now() > deadline) throw new Error(`${w.name} does not stop for the snapshot`);
        await sleep(this.pollMs, undefined, { signal });
      }
    }
  }

  private async startWriters(plan: EnvPlan, writers: WorkloadPlan[], signal: AbortSignal): Promise<void> {
    await Promise.all(writers.map((w) => this.startWorkload(plan, w, signal)));
    for (const w of writers) {
      const outcome = await this.waitForReady(plan, w, { fresh: true, signal });
      if (outcome.state === 'exited')
        throw new Error(
          `${w.name} stopped for the snapshot and did not start again (exit ${outcome.exitCode})`,
        );
    }
  }

  async stop(envId: string): Promise<void> {
    if (!envId) throw new Error('stop needs an environment id');
    const ns = namespaceName(envId);
    const selector = this.selector(envId);
    const at = new Date().toISOString();
    const [deployments, sets, pods] = await Promise.all([
      unless([404], this.k.apps.listNamespacedDeployment({ namespace: ns, labelSelector: selector })),
      unless([404], this.k.apps.listNamespacedStatefulSet({ namespace: ns, labelSelector: selector })),
      unless([404], this.k.core.listNamespacedPod({ namespace: ns, labelSelector: selector })),
    ]);
    const sleepy = (c: {
      metadata?: { annotations?: Record<string, string> };
      spec?: { replicas?: number };
    }) => {
      if ((c.spec?.replicas ?? 0) === 0) return false;
      c.spec!.replicas = 0;
      c.metadata!.annotations = { ...c.metadata!.annotations, [STOPPED_AT]: at };
      return true;
    };
    await Promise.all([
      ...(deployments?.items ?? []).map((d) =>
        this.update(
          () => this.k.apps.readNamespacedDeployment({ namespace: ns, name: d.metadata!.name! }),
          sleepy,
          (body) => this.k.apps.replaceNamespacedDeployment({ namespace: ns, name: d.metadata!.name!, body }),
        ),
      ),
      ...(sets?.items ?? []).map((d) =>
        this.update(
          () => this.k.apps.readNamespacedStatefulSet({ namespace: ns, name: d.metadata!.name! }),
          sleepy,
          (body) =>
            this.k.apps.replaceNamespacedStatefulSet({ namespace: ns, name: d.metadata!.name!, body }),
        ),
      ),
    ]);
    // Mayfly's own pods that still run: removed (their grace period honoured); exited ones stay,
    // so a service that had done its work is still done after the wake.
    const running = (pods?.items ?? []).filter(
      (p) =>
        !p.metadata?.ownerReferences?.length &&
        !terminated(p) &&
        p.metadata?.labels?.['mayfly.kind'] !== 'job',
    );
    await this.markAsleep(
      ns,
      running.map((p) => p.metadata?.annotations?.[LABELS.workload] ?? ''),
    );
    await Promise.all(
      running.map((p) =>
        unless([404], this.k.core.deleteNamespacedPod({ namespace: ns, name: p.metadata!.name! })),
      ),
    );
  }

  async destroy(envId: string): Promise<void> {
    if (!envId) throw new Error('destroy needs an environment id');
    const ns = namespaceName(envId);
    const deadline = Date.now() + 300_000;
    let nudged = 0;
    for (;;) {
      const found = await unless([404], this.k.core.readNamespace({ name: ns }));
      if (!found) {
        // Its restores' helpers on the snapshots' side (a restore cut short by a crash).
        await this.snapshots?.forget(envId);
        return this.removeLocalVolumes(envId);
      }
      if (found.metadata?.labels?.[LABELS.managedBy] !== MANAGED_BY) {
        throw new Error(`namespace ${ns} is not Mayfly's: left alone`);
      }
      if (!found.metadata.deletionTimestamp) {
        await unless([404, 409], this.k.core.deleteNamespace({ name: ns, propagationPolicy: 'Background' }));
        // Ephemeral by definition, as on Docker: killed, no grace period. Once the namespace is
        // terminating nothing makes pods in it again.
        await unless(
          [404],
          this.k.core.deleteCollectionNamespacedPod({ namespace: ns, gracePeriodSeconds: 0 }),
        );
      }
      if (Date.now() > deadline) throw new Error(`namespace ${ns} is still being deleted`);
      // Clones the storage was filling hold the namespace until the snapshot controller looks again.
      if (found.metadata.deletionTimestamp && Date.now() - nudged > 5_000) {
        nudged = Date.now();
        await this.snapshots?.nudgeClones(envId).catch(() => {});
      }
      await sleep(Math.max(this.pollMs, 500));
    }
  }

  /** The environment's local volumes (see `localVolumes`), once its namespace is gone. */
  private async removeLocalVolumes(envId: string): Promise<void> {
    const local = this.settings.localVolumes;
    if (!local) return;
    const volumes = await this.k.core.listPersistentVolume({ labelSelector: this.selector(envId) });
    await Promise.all(
      volumes.items.map((v) =>
        unless([404], this.k.core.deletePersistentVolume({ name: v.metadata!.name! })),
      ),
    );
    // The directories too, when this control plane runs on the node that has them.
    await rm(localVolumeDirectory(local.directory, envId), { recursive: true, force: true });
  }

  async listManaged(): Promise<ManagedObject[]> {
    const list = await this.k.core.listNamespace({ labelSelector: this.selector() });
    const volumes = this.settings.localVolumes
      ? (await this.k.core.listPersistentVolume({ labelSelector: this.selector() })).items
      : [];
    const ref = (kind: ManagedObject['kind'], n: (typeof list.items)[number] | (typeof volumes)[number]) => ({
      kind,
      id: n.metadata!.name!,
      envId: n.metadata?.annotations?.[LABELS.env] ?? n.metadata?.labels?.[LABELS.env] ?? '',
      project: n.metadata?.labels?.[LABELS.project] ?? null,
    });
    return [...list.items.map((n) => ref('namespace', n)), ...volumes.map((v) => ref('volume', v))];
  }

  // --- into a workload --------------------------------------------------------------------------

  /**
   * The workload's first pod (by name); with `running`, its first running one, waited for a while
   * when a pod is still starting (pulling, being scheduled), as Docker can reach a created container.
   */
  private async podOf(envId: string, workload: string, running = false): Promise<V1Pod> {
    const deadline = Date.now() + 30_000;
    let pods = await this.podsOf(envId, workload);
    if (running) {
      const starting = (p: V1Pod) => !p.status?.containerStatuses?.[0]?.state?.running && !terminated(p);
      while (!pods.some((p) => p.status?.containerStatuses?.[0]?.state?.running) && pods.some(starting)) {
        if (Date.now() > deadline) break;
        await sleep(this.pollMs);
        pods = await this.podsOf(envId, workload);
      }
      pods = pods.filter((p) => p.status?.containerStatuses?.[0]?.state?.running);
    }
    const pod = pods[0];
    if (!pod)
      throw new WorkloadNotFoundError(`no ${running ? 'running ' : ''}pod for "${workload}" in ${envId}`);
    return pod;
  }

  async logs(envId: string, workload: string, options: LogOptions = {}): Promise<Readable> {
    const pod = await this.podOf(envId, workload);
    return this.logStream(namespaceName(envId), pod.metadata!.name!, options);
  }

  /**
   * A pod's output as the API server streams it (backpressure: a reader that stops stops the read).
   * Aborting `signal` ends the stream cleanly, as the end of a followed log.
   */
  private async logStream(
    ns: string,
    pod: string,
    options: LogOptions & { previous?: boolean },
  ): Promise<Readable> {
    const query = new URLSearchParams({ container: 'main' });
    if (options.follow) query.set('follow', 'true');
    if (options.tail !== undefined) query.set('tailLines', String(options.tail));
    if (options.previous) query.set('previous', 'true');
    options.signal?.throwIfAborted();
    const response = await streamGet(
      this.k.config,
      `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}/log?${query}`,
    );
    const out = new PassThrough();
    response.pipe(out);
    response.on('error', (err) => out.destroy(err));
    const { signal } = options;
    const stop = () => {
      response.unpipe(out);
      response.destroy();
      out.end();
    };
    if (signal?.aborted) stop();
    signal?.addEventListener('abort', stop, { once: true });
    out.on('close', () => {
      signal?.removeEventListener('abort', stop);
      response.destroy();
    });
    return out;
  }

  /** The end of a pod's output for an error message ('' or a newline and the last lines). */
  private logTail(ns: string, pod: string, previous = false): Promise<string> {
    return outputTail(() => this.logStream(ns, pod, { tail: LOG_TAIL_LINES, previous }), LOG_TAIL_BYTES);
  }

  async exec(
    envId: string,
    workload: string,
    command: string[],
    options: ExecOptions = {},
  ): Promise<ExecResult> {
    const pod = await this.podOf(envId, workload, true);
    const limit = options.maxOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES;
    const out = new ByteTail(limit);
    const err = new ByteTail(limit);
    const exitCode = await this.run(
      namespaceName(envId),
      pod.metadata!.name!,
      withOptions(command, options),
      {
        stdout: (chunk) => out.push(chunk),
        stderr: (chunk) => err.push(chunk),
        stdin: options.stdin,
        timeoutMs: options.timeoutMs,
      },
    );
    return {
      exitCode,
      stdout: out.text(),
      stderr: err.text(),
      stdoutTruncated: out.truncated,
      stderrTruncated: err.truncated,
    };
  }

  /**
   * Runs a command in a pod's container through the API server; resolves to its exit code. Before
   * Kubernetes 1.29 the exec protocol cannot close stdin: the command reads exactly the bytes
   * given (`head -c`), so it sees the end of its input anyway.
   */
  private run(
    ns: string,
    pod: string,
    command: string[],
    io: {
      stdout: (chunk: Buffer) => void;
      stderr: (chunk: Buffer) => void;
      stdin?: string | Buffer;
      timeoutMs?: number;
    },
  ): Promise<number> {
    const input = io.stdin === undefined ? undefined : Buffer.from(io.stdin);
    const argv = input ? ['/bin/sh', '-c', 'head -c "$0" | "$@"', String(input.length), ...command] : command;
    const sink = (push: (chunk: Buffer) => void) =>
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          push(chunk);
          done();
        },
      });
    return new Promise<number>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      let connection: { close(): void } | undefined;
      // Never ended: the client closes the whole connection at the end of its stdin unless the
      // server speaks v5 (Kubernetes 1.29+); `head -c` above ends the command's input instead.
      const stdin = input ? new Readable({ read() {} }) : null;
      stdin?.push(input);
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        stdin?.destroy();
        connection?.close();
        fn();
      };
      this.k.exec
        .exec(ns, pod, 'main', argv, sink(io.stdout), sink(io.stderr), stdin, false, (status) => {
          if (status.status === 'Success') return finish(() => resolve(0));
          const code = status.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
          if (code !== undefined) return finish(() => resolve(Number(code)));
          finish(() => reject(new Error(status.message ?? 'the command could not be run')));
        })
        .then((socket) => {
          connection = socket;
          if (settled) socket.close();
          if (io.timeoutMs) {
            timer = setTimeout(() => {
              socket.close();
              finish(() => reject(new Error(`command timed out after ${io.timeoutMs} ms`)));
            }, io.timeoutMs);
          }
          socket.on('close', () =>
            // The status comes before the close; a close without one: the connection was lost.
            setTimeout(
              () => finish(() => reject(new Error('the connection to the container was lost'))),
              100,
            ),
          );
        })
        .catch((err: unknown) => finish(() => reject(new Error(apiMessage(err)))));
    });
  }

  async readFile(envId: string, workload: string, path: string): Promise<Buffer> {
    const pod = await this.podOf(envId, workload, true);
    const out = new ByteTail(MAX_READ_BYTES);
    const err = new ByteTail(4096);
    const code = await this.run(namespaceName(envId), pod.metadata!.name!, ['cat', '--', path], {
      stdout: (chunk) => out.push(chunk),
      stderr: (chunk) => err.push(chunk),
    });
    if (code !== 0) throw new Error(`cannot read ${path}: ${err.text().trim()}`);
    if (out.truncated) throw new Error(`${path} is larger than ${MAX_READ_BYTES} bytes`);
    return out.bytes();
  }

  async writeFile(envId: string, workload: string, path: string, content: Buffer | string): Promise<void> {
    const pod = await this.podOf(envId, workload, true);
    const err = new ByteTail(4096);
    const code = await this.run(
      namespaceName(envId),
      pod.metadata!.name!,
      ['/bin/sh', '-c', 'mkdir -p -- "$(dirname -- "$0")" && cat > "$0"', path],
      { stdout: () => {}, stderr: (chunk) => err.push(chunk), stdin: content },
    );
    if (code !== 0) throw new Error(`cannot write ${path}: ${err.text().trim()}`);
  }

  /**
   * A ready pod's address (a running one when none is ready yet), picked anew for every request as
   * on Docker: reachable as soon as the pod is, where a Service's address waits for the endpoint
   * controller and kube-proxy to catch up.
   */
  async resolveEndpoint(envId: string, workload: string, port: number): Promise<Endpoint | null> {
    const running = (await this.podsOf(envId, workload)).filter(
      (p) => p.status?.podIP && p.status.containerStatuses?.[0]?.state?.running,
    );
    const ready = running.filter((p) => p.status?.containerStatuses?.[0]?.ready);
    const pool = ready.length > 0 ? ready : running;
    if (pool.length === 0) return null;
    const pick = pool[Math.floor(Math.random() * pool.length)]!;
    return { host: pick.status!.podIP!, port };
  }

  /** This installation's objects: of one environment, or all of them. */
  private labels(envId?: string) {
    return {
      [LABELS.managedBy]: MANAGED_BY,
      [LABELS.instance]: labelValue(this.settings.instance),
      ...(envId === undefined ? {} : { [LABELS.env]: labelValue(envId) }),
    };
  }

  private selector(envId?: string): string {
    return selectorOf(this.labels(envId));
  }
}

/** Annotation on a namespace: the workloads whose pods a sleep removed (JSON array of names). */
const ASLEEP = 'mayfly.asleep';

/** A Service's TCP ports checked for kube-proxy's routing: the first few say enough. */
const MAX_PROBED_PORTS = 4;

function asleep(namespace: V1Namespace): string[] {
  try {
    const names = JSON.parse(namespace.metadata?.annotations?.[ASLEEP] ?? '[]') as unknown;
    return Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string').sort() : [];
  } catch {
    return [];
  }
}

const eventTime = (e: CoreV1Event) =>
  new Date(e.lastTimestamp ?? e.eventTime ?? e.metadata?.creationTimestamp ?? 0).getTime();

function terminated(pod: V1Pod | undefined) {
  return pod?.status?.containerStatuses?.[0]?.state?.terminated;
}

function portsKey(service: V1Service): string {
  return (service.spec?.ports ?? [])
    .map((p) => `${p.port}/${p.protocol ?? 'TCP'}`)
    .sort()
    .join(',');
}

/** An exec's environment and working directory, which the exec API has no fields for. */
function withOptions(command: string[], options: ExecOptions): string[] {
  const env = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
  if (!options.workingDir && env.length === 0) return command;
  const cd = options.workingDir ? ['/bin/sh', '-c', 'cd -- "$0" && exec "$@"', options.workingDir] : [];
  return [...cd, ...(env.length ? ['env', ...env] : []), ...command];
}
