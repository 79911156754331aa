/**
 * KubernetesSandboxRuntime: the sandbox seam on a cluster. One pod per sandbox in the
 * installation's sandbox namespace (sandbox-manifests.ts), its agent installed by an init
 * container and run as the main process, reached through the API server's exec — no socket is
 * shared with a pod and nothing reaches a sandbox over the network. Images come from where Mayfly
 * builds (the local Docker Engine) and are published to the cluster's registry, as environments'
 * are. A pod cannot be frozen: pausing stops every process of the sandbox but the agent's own
 * (SIGSTOP, by the agent), and the pod is annotated so.
 */
import { randomBytes } from 'node:crypto';
import type { V1Pod } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type Docker from 'dockerode';
import type { ImagePublisher } from '../../images/image-publisher.js';
import { AgentChannel } from '../../sandbox/agent-channel.js';
import {
  type IsolationSupport,
  type ObservedSandbox,
  SANDBOX_LABEL,
  type SandboxRuntime,
  type SandboxSpec,
  type SandboxUsage,
} from '../../sandbox/sandbox-runtime.js';
import { publishedAgentImage } from '../docker/agent-image.js';
import { checkSandboxImage } from '../docker/docker-sandbox-runtime.js';
import { engineClient } from '../docker/engine-api.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import { execStream } from './exec-stream.js';
import {
  apiMessage,
  type KubeClients,
  type KubeConnection,
  kubeClients,
  STUCK_REASONS,
  statusOf,
  unless,
} from './kube-api.js';
import { labelValue } from './manifests.js';
import {
  AGENT_IN_RELAY,
  AGENT_SOCKET,
  DENY_ALL_POLICY,
  denyAllPolicyManifest,
  egressPolicyManifest,
  POLICY_PROBE_CONTAINER,
  POLICY_PROBE_LABEL,
  policyControlPolicyManifest,
  policyProbeManifest,
  RELAY_CONTAINER,
  SANDBOX_CONTAINER,
  type SandboxClusterSettings,
  sandboxNamespaceManifest,
  sandboxNamespaceName,
  sandboxPodManifest,
  sandboxPodName,
  sandboxPolicyName,
} from './sandbox-manifests.js';

export interface KubernetesSandboxRuntimeOptions extends KubeConnection {
  clients?: KubeClients;
  /** The installation's id (`Store.instanceId`). */
  instance: string;
  /** The static agent binary, put into an image of its own for the pods' init containers. */
  agentBinary: string;
  /** Makes the sandbox's and the agent's images pullable by the cluster. */
  publisher: ImagePublisher;
  /** The Docker Engine where Mayfly builds (images are checked and published from there). */
  docker?: Docker;
  socketPath?: string;
  /** RuntimeClass per isolation class other than runc (`mayfly serve --kube-runtime-class`). */
  runtimeClasses?: SandboxClusterSettings['runtimeClasses'];
  /** Ranges no sandbox reaches whatever its allow-list says: the cluster's pod and service ranges. */
  blockedOut?: string[];
  /**
   * Trust the cluster to enforce NetworkPolicies without checking (`--kube-skip-policy-check`). By
   * default a probe pod under the deny-all policy must reach neither its node nor the API server,
   * or no sandbox is made here (a sandbox's only wall on a cluster is its policies).
   */
  skipPolicyCheck?: boolean;
  /** How long a pod may take to run its agent (pulls included); default 120 s. */
  startTimeoutMs?: number;
  pollMs?: number;
}

/** Annotation on a sandbox's pod while its processes are stopped. */
const PAUSED = 'mayfly.paused';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class KubernetesSandboxRuntime implements SandboxRuntime {
  readonly name = 'kubernetes';
  private readonly k: KubeClients;
  private readonly docker: Docker;
  private readonly settings: SandboxClusterSettings;
  private readonly namespace: string;
  private readonly pollMs: number;
  /** The namespace and its deny-all policy, made once per process (kept when they exist). */
  private prepared: Promise<void> | undefined;
  /** The agent's image as the cluster pulls it (made and published once per process). */
  private readonly agentImageRef: (signal: AbortSignal) => Promise<string>;
  /** The channels opened here, by sandbox: pausing goes through one with connections ready. */
  private readonly channels = new Map<string, AgentChannel>();

  constructor(private readonly options: KubernetesSandboxRuntimeOptions) {
    this.k = options.clients ?? kubeClients(options);
    this.docker = options.docker ?? engineClient(options);
    this.agentImageRef = publishedAgentImage(this.docker, options.agentBinary, options.publisher);
    this.settings = {
      instance: options.instance,
      runtimeClasses: options.runtimeClasses ?? {},
      blockedOut: options.blockedOut ?? [],
    };
    this.namespace = sandboxNamespaceName(options.instance);
    this.pollMs = options.pollMs ?? 250;
  }

  /** Its NetworkPolicies must be enforced: a sandbox has no other wall against the cluster's network. */
  async checkPlatform(): Promise<string | undefined> {
    return this.options.skipPolicyCheck ? undefined : this.probePolicies();
  }

  async isolations(): Promise<IsolationSupport> {
    return this.settings.runtimeClasses.gvisor
      ? { available: ['runc', 'gvisor'], missing: {} }
      : {
          available: ['runc'],
          missing: {
            gvisor: 'no RuntimeClass is mapped to it (mayfly serve --kube-runtime-class gvisor=NAME)',
          },
        };
  }

  /**
   * Why this cluster's NetworkPolicies cannot be trusted, or undefined when they hold: a `probe`
   * pod under the namespace's deny-all policy must reach neither its node's kubelet nor the API
   * server, while a `control` pod beside it, let out by a policy of its own, reaches one of them
   * (else the check proved nothing, and says so). Throws when the pods could not run.
   */
  private async probePolicies(): Promise<string | undefined> {
    await this.prepare();
    const timeoutMs = this.options.startTimeoutMs ?? 120_000;
    const agent = await this.agentImageRef(AbortSignal.timeout(timeoutMs));
    const suffix = randomBytes(4).toString('hex');
    const names = { probe: `mayfly-policy-probe-${suffix}`, control: `mayfly-policy-control-${suffix}` };
    const namespace = this.namespace;
    const ours = `${POLICY_PROBE_LABEL},${LABELS.instance}=${labelValue(this.options.instance)}`;
    const deletePod = (name: string) =>
      unless([404], this.k.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }));
    try {
      // Pods and policies a crash left (older than any check still under way: another replica's).
      const stale = (created: Date | undefined) => !created || Date.now() - created.getTime() > 2 * timeoutMs;
      for (const pod of (await this.k.core.listNamespacedPod({ namespace, labelSelector: ours })).items)
        if (stale(pod.metadata?.creationTimestamp)) await deletePod(pod.metadata?.name ?? '');
      for (const policy of (
        await this.k.networking.listNamespacedNetworkPolicy({ namespace, labelSelector: ours })
      ).items)
        if (stale(policy.metadata?.creationTimestamp))
          await unless(
            [404],
            this.k.networking.deleteNamespacedNetworkPolicy({ name: policy.metadata?.name ?? '', namespace }),
          );
      await this.k.networking.createNamespacedNetworkPolicy({
        namespace,
        body: policyControlPolicyManifest(this.settings, names.control),
      });
      for (const role of ['probe', 'control'] as const)
        await this.k.core.createNamespacedPod({
          namespace,
          body: policyProbeManifest(this.settings, names[role], role, agent),
        });
      const [probe, control] = await Promise.all([
        this.probeResult(names.probe, timeoutMs),
        this.probeResult(names.control, timeoutMs),
      ]);
      if (probe.exitCode === 3)
        return `NetworkPolicies do not hold on this cluster: a pod under a deny-all policy reached ${probe.reached.join(', ')}, as any sandbox would; run a network plugin that enforces them (Calico, Cilium, …), or pass --kube-skip-policy-check to run sandboxes with the cluster's network open to them`;
      if (probe.exitCode !== 0 || control.exitCode !== 3)
        return `cannot tell whether this cluster enforces NetworkPolicies: ${
          probe.exitCode !== 0
            ? `the check exited with ${probe.exitCode} (${probe.message})`
            : `a pod allowed out did not reach its node's kubelet or the API server either (${control.message})`
        }; pass --kube-skip-policy-check to run sandboxes without the check`;
      return undefined;
    } catch (err) {
      // The namespace removed behind our back: made again next time.
      if (statusOf(err) === 404) this.prepared = undefined;
      throw err instanceof Error && statusOf(err) !== undefined
        ? new Error(`the NetworkPolicy check failed: ${apiMessage(err)}`)
        : err;
    } finally {
      await Promise.all([
        deletePod(names.probe),
        deletePod(names.control),
        unless([404], this.k.networking.deleteNamespacedNetworkPolicy({ name: names.control, namespace })),
      ]).catch(() => {});
    }
  }

  /** How a pod of the NetworkPolicy check ended: its exit code, and what it said it reached. */
  private async probeResult(
    name: string,
    timeoutMs: number,
  ): Promise<{ exitCode: number; reached: string[]; message: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pod = (
        await this.k.core.listNamespacedPod({
          namespace: this.namespace,
          labelSelector: `${POLICY_PROBE_LABEL},${LABELS.instance}=${labelValue(this.options.instance)}`,
        })
      ).items.find((p) => p.metadata?.name === name);
      if (!pod) throw new Error(`the NetworkPolicy check's pod ${name} is gone`);
      const status = pod.status?.containerStatuses?.find((c) => c.name === POLICY_PROBE_CONTAINER);
      const ended = status?.state?.terminated;
      if (ended) {
        const message = (ended.message ?? '').trim();
        const reached = message
          .split('\n')
          .filter((line) => line.startsWith('reached '))
          .map((line) => line.slice('reached '.length));
        return { exitCode: ended.exitCode, reached, message: message.replaceAll('\n', '; ') };
      }
      const waiting = status?.state?.waiting;
      if (waiting?.reason && STUCK_REASONS.has(waiting.reason))
        throw new Error(`the NetworkPolicy check: ${waiting.reason}: ${waiting.message ?? ''}`.trim());
      if (Date.now() > deadline)
        throw new Error('the NetworkPolicy check did not end within the start timeout');
      await sleep(this.pollMs);
    }
  }

  /** NetworkPolicies say what a sandbox may open; the cluster's network plugin must enforce them. */
  async canFilterEgress(): Promise<boolean> {
    return true;
  }

  checkImage(image: string): Promise<void> {
    return checkSandboxImage(this.docker, image);
  }

  async openChannel(id: string): Promise<AgentChannel> {
    checkId(id);
    const target = { namespace: this.namespace, pod: sandboxPodName(id), container: RELAY_CONTAINER };
    const channel = AgentChannel.dialing(() =>
      execStream(this.k.config, target, [AGENT_IN_RELAY, 'connect', AGENT_SOCKET]),
    );
    this.channels.set(id, channel);
    return channel;
  }

  private prepare(): Promise<void> {
    this.prepared ??= (async () => {
      await unless([409], this.k.core.createNamespace({ body: sandboxNamespaceManifest(this.settings) }));
      await unless(
        [409],
        this.k.networking.createNamespacedNetworkPolicy({
          namespace: this.namespace,
          body: denyAllPolicyManifest(this.settings),
        }),
      );
    })();
    this.prepared.catch(() => {
      this.prepared = undefined;
    });
    return this.prepared;
  }

  private async images(spec: SandboxSpec): Promise<{ sandbox: string; agent: string }> {
    const signal = AbortSignal.timeout(this.options.startTimeoutMs ?? 120_000);
    const [sandbox, agent] = await Promise.all([
      this.options.publisher.publish(spec.image, signal).then((p) => p.ref),
      this.agentImageRef(signal),
    ]);
    return { sandbox, agent };
  }

  async create(spec: SandboxSpec): Promise<void> {
    checkId(spec.id);
    await this.checkImage(spec.image);
    // Built once before anything is published or made: what it refuses, it refuses first.
    sandboxPodManifest(this.settings, spec, { sandbox: spec.image, agent: spec.image });
    await this.prepare();
    const pod = sandboxPodManifest(this.settings, spec, await this.images(spec));
    try {
      // Its own policy first: a pod is never running with more than it allows (nothing in, out only
      // its allow-list), whatever became of the namespace's.
      await this.k.networking.createNamespacedNetworkPolicy({
        namespace: this.namespace,
        body: egressPolicyManifest(this.settings, spec, spec.egress?.rules ?? []),
      });
      await this.k.core.createNamespacedPod({ namespace: this.namespace, body: pod });
      await this.untilRunning(spec.id);
    } catch (err) {
      // The namespace removed behind our back: made again next time.
      if (statusOf(err) === 404) this.prepared = undefined;
      await this.remove(spec.id).catch(() => {});
      throw err instanceof Error && statusOf(err) !== undefined
        ? new Error(`cannot make sandbox ${spec.id}: ${apiMessage(err)}`)
        : err;
    }
  }

  /** Until its main container runs; a pod that will not (a failed pull, a failed init) says why. */
  private async untilRunning(id: string): Promise<void> {
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 120_000);
    for (;;) {
      const pod = await this.pod(id);
      if (!pod) throw new Error(`sandbox ${id}'s pod is gone`);
      const statuses = [
        ...(pod.status?.initContainerStatuses ?? []),
        ...(pod.status?.containerStatuses ?? []),
      ];
      const running = (name: string) =>
        pod.status?.containerStatuses?.find((c) => c.name === name)?.state?.running;
      if (running(SANDBOX_CONTAINER) && running(RELAY_CONTAINER)) return;
      for (const status of statuses) {
        const waiting = status.state?.waiting;
        if (waiting?.reason && STUCK_REASONS.has(waiting.reason))
          throw new Error(
            `sandbox ${id}: ${status.name}: ${waiting.reason}: ${waiting.message ?? ''}`.trim(),
          );
        const ended = status.state?.terminated;
        // The init container's end is its success; any other container's is the sandbox's.
        if (ended && (ended.exitCode !== 0 || status.name !== 'agent'))
          throw new Error(
            `sandbox ${id}: ${status.name} exited with code ${ended.exitCode}${ended.message ? `: ${ended.message.trim()}` : ''}`,
          );
      }
      if (pod.status?.phase === 'Failed')
        throw new Error(`sandbox ${id}'s pod failed: ${pod.status.reason ?? ''}`);
      if (Date.now() > deadline)
        throw new Error(`sandbox ${id}'s pod did not start within the start timeout`);
      await sleep(this.pollMs);
    }
  }

  async pause(id: string): Promise<void> {
    await this.agentCall(id, '/v1/freeze');
    try {
      await this.annotate(id, 'true');
    } catch (err) {
      // Never stopped while it says it runs: thawed again, the pause refused.
      await this.agentCall(id, '/v1/thaw').catch(() => {});
      throw err;
    }
  }

  async resume(id: string): Promise<void> {
    await this.agentCall(id, '/v1/thaw');
    await this.annotate(id, null);
  }

  /** A request to the agent, on the sandbox's channel (one of its own when it has none open). */
  private async agentCall(id: string, path: string): Promise<void> {
    const open = this.channels.get(id);
    if (open && !open.isClosed) {
      await open.json('POST', path, undefined, 15_000);
      return;
    }
    const channel = await this.openChannel(id);
    try {
      await channel.json('POST', path, undefined, 15_000);
    } finally {
      await channel.close();
      this.channels.delete(id);
    }
  }

  private async annotate(id: string, paused: string | null): Promise<void> {
    await this.k.core.patchNamespacedPod(
      {
        name: sandboxPodName(id),
        namespace: this.namespace,
        body: { metadata: { annotations: { [PAUSED]: paused } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  async remove(id: string): Promise<void> {
    checkId(id);
    this.channels.delete(id);
    await unless(
      [404],
      this.k.core.deleteNamespacedPod({
        name: sandboxPodName(id),
        namespace: this.namespace,
        gracePeriodSeconds: 0,
      }),
    );
    await unless(
      [404],
      this.k.networking.deleteNamespacedNetworkPolicy({
        name: sandboxPolicyName(id),
        namespace: this.namespace,
      }),
    );
    for (let i = 0; i < 600 && (await this.pod(id, true)); i++) await sleep(100);
    if (await this.pod(id, true))
      throw new Error(`sandbox ${id}'s pod is still being deleted after a minute`);
  }

  async observe(id: string): Promise<ObservedSandbox> {
    checkId(id);
    const pod = await this.pod(id);
    return pod ? observed(pod) : { id, state: 'missing', oomKilled: false, exitCode: null, labels: {} };
  }

  /** A pod's memory is not counted by the API (no metrics server is assumed). */
  async usage(_id: string): Promise<SandboxUsage | null> {
    return null;
  }

  async list(): Promise<ObservedSandbox[]> {
    const selector = this.selector();
    const pods = await unless(
      [404],
      this.k.core.listNamespacedPod({ namespace: this.namespace, labelSelector: selector }),
    );
    const policies = await unless(
      [404],
      this.k.networking.listNamespacedNetworkPolicy({ namespace: this.namespace, labelSelector: selector }),
    );
    const withPod = new Set((pods?.items ?? []).map((p) => p.metadata?.labels?.[SANDBOX_LABEL]));
    // A policy whose pod is gone (a crash while making or removing it) is listed as exited.
    // (With its labels: a replica's pooled sandbox whose pod is being made is still that replica's.)
    const policiesOnly = (policies?.items ?? [])
      .filter((p) => p.metadata?.name !== DENY_ALL_POLICY)
      .filter((p) => (p.metadata?.labels?.[SANDBOX_LABEL] ?? '') !== '')
      .filter((p) => !withPod.has(p.metadata?.labels?.[SANDBOX_LABEL]))
      .map(
        (p): ObservedSandbox => ({
          id: p.metadata?.labels?.[SANDBOX_LABEL] ?? '',
          state: 'exited',
          oomKilled: false,
          exitCode: null,
          labels: p.metadata?.labels ?? {},
        }),
      );
    return [...policiesOnly, ...(pods?.items ?? []).map(observed)];
  }

  watch(onEnd: (id: string, cause: 'oom' | 'exit') => void): () => void {
    let stopped = false;
    const reported = new Set<string>();
    const follow = async () => {
      while (!stopped) {
        try {
          const live = new Set<string>();
          for (const sandbox of await this.list()) {
            live.add(sandbox.id);
            if (sandbox.state !== 'exited' || reported.has(sandbox.id)) continue;
            reported.add(sandbox.id);
            onEnd(sandbox.id, sandbox.oomKilled ? 'oom' : 'exit');
          }
          for (const id of reported) if (!live.has(id)) reported.delete(id);
        } catch {
          // The API server is away for a moment: look again shortly.
        }
        await sleep(1_000);
      }
    };
    void follow();
    return () => {
      stopped = true;
    };
  }

  private selector(id?: string): string {
    return [
      `${LABELS.managedBy}=${MANAGED_BY}`,
      `${LABELS.instance}=${labelValue(this.options.instance)}`,
      id ? `${SANDBOX_LABEL}=${id}` : SANDBOX_LABEL,
    ].join(',');
  }

  /** Pods are listed, never read by name: the role has no `get` on pods. */
  private async pod(id: string, deleting = false): Promise<V1Pod | undefined> {
    const pods = await unless(
      [404],
      this.k.core.listNamespacedPod({ namespace: this.namespace, labelSelector: this.selector(id) }),
    );
    return pods?.items.find(
      (p) => p.metadata?.name === sandboxPodName(id) && (deleting || !p.metadata?.deletionTimestamp),
    );
  }
}

function checkId(id: string): void {
  if (!/^[a-z0-9]{1,40}$/.test(id)) throw new Error(`bad sandbox id "${id}"`);
}

function observed(pod: V1Pod): ObservedSandbox {
  const id = pod.metadata?.labels?.[SANDBOX_LABEL] ?? '';
  const main = pod.status?.containerStatuses?.find((c) => c.name === SANDBOX_CONTAINER);
  // Without its relay a sandbox cannot be reached: ended too.
  const relay = pod.status?.containerStatuses?.find((c) => c.name === RELAY_CONTAINER);
  const ended = main?.state?.terminated ?? relay?.state?.terminated;
  const failed = pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded' || Boolean(ended);
  const paused = pod.metadata?.annotations?.[PAUSED] === 'true';
  return {
    id,
    state: failed ? 'exited' : paused ? 'paused' : 'running',
    oomKilled: ended?.reason === 'OOMKilled',
    exitCode: ended ? ended.exitCode : null,
    labels: pod.metadata?.labels ?? {},
  };
}
