/**
 * A sandbox's objects on a cluster, built by pure functions: one pod in the installation's sandbox
 * namespace with Mayfly's agent as its main process, and the NetworkPolicies that keep it shut.
 * The control plane reaches the agent through the API server's exec (exec-stream.ts), so nothing
 * needs to reach a sandbox over the network: every sandbox pod takes no connection at all, and
 * opens only what its allow-list says.
 */
import { createHash } from 'node:crypto';
import type { V1Namespace, V1NetworkPolicy, V1NetworkPolicyPeer, V1Pod } from '@kubernetes/client-node';
import { cidrContains } from '../../net/ipv4-cidr.js';
import { canonicalCidr, type EgressRule } from '../../sandbox/egress-policy.js';
import { SANDBOX_LABEL, SandboxImageRefusedError, type SandboxSpec } from '../../sandbox/sandbox-runtime.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import { labelValue } from './manifests.js';

/** Where the agent is in a sandbox's container. */
export const AGENT_BIN_DIR = '/.mayfly/bin';
export const AGENT_IN_SANDBOX = `${AGENT_BIN_DIR}/mayfly-agent`;
/**
 * The agent's socket: an abstract name, shared by the pod's containers (one network namespace),
 * no file the sandbox could remove and listen in place of.
 */
export const AGENT_SOCKET = '@mayfly-agent';
/** The sandbox's container (the init container that installs the agent is `agent`). */
export const SANDBOX_CONTAINER = 'sandbox';
/**
 * The container the control plane execs `mayfly-agent connect` in: the agent's image, read-only,
 * nothing of the sandbox's. The sandbox's code cannot change what runs there, and the sandbox's
 * own container never gets a process from outside.
 */
export const RELAY_CONTAINER = 'relay';
/** The agent in the relay container (its image's own path). */
export const AGENT_IN_RELAY = '/mayfly-agent';

export interface SandboxClusterSettings {
  instance: string;
  /** The RuntimeClass each isolation class other than runc runs under. */
  runtimeClasses: Partial<Record<'gvisor', string>>;
  /** Ranges no sandbox reaches whatever its rules say (the cluster's pod and service ranges). */
  blockedOut: string[];
}

/** The installation's namespace for sandboxes: one per installation, made when first needed. */
export const sandboxNamespaceName = (instance: string) =>
  `mayfly-sandboxes-${createHash('sha256').update(instance).digest('hex').slice(0, 10)}`;
export const sandboxPodName = (id: string) => `sbx-${id}`;
/** A sandbox's own NetworkPolicy: nothing in, and out only what its allow-list opens. */
export const sandboxPolicyName = (id: string) => `sbx-${id}-egress`;
/** The namespace's policy: nothing in, nothing out, for every pod in it. */
export const DENY_ALL_POLICY = 'mayfly-deny-all';

function installationLabels(settings: SandboxClusterSettings) {
  return { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: labelValue(settings.instance) };
}

export function sandboxLabels(settings: SandboxClusterSettings, spec: Pick<SandboxSpec, 'id' | 'labels'>) {
  const own = Object.fromEntries(Object.entries(spec.labels).map(([k, v]) => [k, labelValue(v)] as const));
  return { ...own, ...installationLabels(settings), [SANDBOX_LABEL]: spec.id };
}

export function sandboxNamespaceManifest(settings: SandboxClusterSettings): V1Namespace {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: sandboxNamespaceName(settings.instance), labels: installationLabels(settings) },
  };
}

/** No pod of the namespace takes a connection or opens one, unless a policy of its own allows it. */
export function denyAllPolicyManifest(settings: SandboxClusterSettings): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: DENY_ALL_POLICY,
      namespace: sandboxNamespaceName(settings.instance),
      labels: installationLabels(settings),
    },
    spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
  };
}

/**
 * Ordered first-match rules (egress-policy.ts) as NetworkPolicy peers, which can only allow: each
 * accepted range, minus every range rejected before it that lies inside it; a range inside one
 * rejected before it is dropped. (Two CIDRs either nest or do not meet.) The operator's blocked
 * ranges come first of all.
 */
export function egressPeers(
  rules: readonly EgressRule[],
  blockedOut: readonly string[],
): V1NetworkPolicyPeer[] {
  // As the API server reads them (host bits cleared): newer ones refuse any other form.
  const ordered: EgressRule[] = [
    ...blockedOut.map((cidr) => ({ cidr, verdict: 'reject' as const })),
    ...rules,
  ].map((rule) => ({ ...rule, cidr: canonicalCidr(rule.cidr) }));
  const peers: V1NetworkPolicyPeer[] = [];
  ordered.forEach((rule, i) => {
    if (rule.verdict !== 'accept') return;
    const before = ordered.slice(0, i).filter((r) => r.verdict === 'reject');
    if (before.some((r) => cidrContains(r.cidr, rule.cidr))) return;
    const except = before.filter((r) => cidrContains(rule.cidr, r.cidr)).map((r) => r.cidr);
    peers.push({
      ipBlock: { cidr: rule.cidr, ...(except.length > 0 ? { except: [...new Set(except)] } : {}) },
    });
  });
  return peers;
}

/**
 * Every sandbox's own policy, made before its pod: nothing in, and out only what `rules` accept
 * (none: nothing). The namespace's policy shuts the same; this one does not depend on it.
 */
export function egressPolicyManifest(
  settings: SandboxClusterSettings,
  spec: Pick<SandboxSpec, 'id' | 'labels'>,
  rules: readonly EgressRule[],
): V1NetworkPolicy {
  const peers = egressPeers(rules, settings.blockedOut);
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: sandboxPolicyName(spec.id),
      namespace: sandboxNamespaceName(settings.instance),
      labels: sandboxLabels(settings, spec),
    },
    spec: {
      podSelector: { matchLabels: { [SANDBOX_LABEL]: spec.id } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [],
      egress: peers.length > 0 ? [{ to: peers }] : [],
    },
  };
}

/** `uid[:gid]` as the pod's numbers; a user name cannot be given to Kubernetes, nor root. */
export function sandboxUser(user: string): { runAsUser: number; runAsGroup?: number } {
  const match = /^(\d{1,9})(?::(\d{1,9}))?$/.exec(user);
  if (!match)
    throw new SandboxImageRefusedError(
      `on Kubernetes a sandbox runs as a numeric uid[:gid], not "${user}" (a pod cannot name a user)`,
    );
  if (Number(match[1]) === 0 || (match[2] !== undefined && Number(match[2]) === 0))
    throw new SandboxImageRefusedError('a sandbox never runs as root (uid or gid 0)');
  return { runAsUser: Number(match[1]), ...(match[2] ? { runAsGroup: Number(match[2]) } : {}) };
}

/**
 * The sandbox's pod: the agent installed by an init container from `agentImage` into a volume of
 * its own, then run as the main process (under its own init, which reaps) on `image`. Every
 * capability dropped, no privilege escalation, the image read-only but for home and /tmp (in
 * memory, `diskBytes` each, counted in its memory limit), limits as requests (nothing over-sold),
 * no service-account token, no service variables, no DNS server (names it may use are in its hosts
 * file), never restarted.
 */
export function sandboxPodManifest(
  settings: SandboxClusterSettings,
  spec: SandboxSpec,
  images: { sandbox: string; agent: string },
): V1Pod {
  const user = sandboxUser(spec.user);
  const runtimeClassName = spec.isolation === 'runc' ? undefined : settings.runtimeClasses[spec.isolation];
  if (spec.isolation !== 'runc' && !runtimeClassName)
    throw new Error(
      `no RuntimeClass for ${spec.isolation} sandboxes (mayfly serve --kube-runtime-class ${spec.isolation}=NAME)`,
    );
  const containerSecurity = {
    ...user,
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
  };
  const limits = {
    memory: String(spec.memoryBytes),
    ...(spec.cpus ? { cpu: `${Math.max(1, Math.round(spec.cpus * 1000))}m` } : {}),
  };
  const memoryVolume = (name: string, bytes: number) => ({
    name,
    emptyDir: { medium: 'Memory', sizeLimit: String(bytes) },
  });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: sandboxPodName(spec.id),
      namespace: sandboxNamespaceName(settings.instance),
      labels: sandboxLabels(settings, spec),
    },
    spec: {
      restartPolicy: 'Never',
      hostname: 'sandbox',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      ...(runtimeClassName ? { runtimeClassName } : {}),
      dnsPolicy: 'None',
      // TEST-NET-1: never answers; names a sandbox may use are in its hosts file.
      dnsConfig: { nameservers: ['192.0.2.1'] },
      ...(spec.egress && Object.keys(spec.egress.hosts).length > 0
        ? {
            hostAliases: Object.entries(spec.egress.hosts).map(([hostname, ip]) => ({
              ip,
              hostnames: [hostname],
            })),
          }
        : {}),
      securityContext: { ...user, seccompProfile: { type: 'RuntimeDefault' } },
      initContainers: [
        {
          name: 'agent',
          image: images.agent,
          imagePullPolicy: 'IfNotPresent',
          command: ['/mayfly-agent', 'install', AGENT_IN_SANDBOX],
          securityContext: { ...containerSecurity, readOnlyRootFilesystem: true },
          resources: { limits: { memory: '64Mi', cpu: '100m' }, requests: { memory: '64Mi', cpu: '100m' } },
          volumeMounts: [{ name: 'agent', mountPath: AGENT_BIN_DIR }],
        },
      ],
      containers: [
        {
          name: SANDBOX_CONTAINER,
          image: images.sandbox,
          imagePullPolicy: 'IfNotPresent',
          command: [AGENT_IN_SANDBOX, 'init', '--', AGENT_IN_SANDBOX, 'serve', '--listen', AGENT_SOCKET],
          args: [],
          workingDir: spec.home,
          env: [
            { name: 'HOME', value: spec.home },
            ...Object.entries(spec.env).map(([name, value]) => ({ name, value })),
          ],
          securityContext: { ...containerSecurity, readOnlyRootFilesystem: spec.readOnlyRoot },
          resources: { limits, requests: limits },
          volumeMounts: [
            { name: 'agent', mountPath: AGENT_BIN_DIR, readOnly: true },
            { name: 'home', mountPath: spec.home },
            { name: 'tmp', mountPath: '/tmp' },
          ],
        },
        {
          // One `connect` per open request, stream or tunnel (a few MiB each) fits.
          name: RELAY_CONTAINER,
          image: images.agent,
          imagePullPolicy: 'IfNotPresent',
          command: [AGENT_IN_RELAY, 'idle'],
          securityContext: {
            ...containerSecurity,
            runAsUser: 65534,
            runAsGroup: 65534,
            readOnlyRootFilesystem: true,
          },
          resources: {
            limits: { memory: '128Mi', cpu: '100m' },
            requests: { memory: '128Mi', cpu: '100m' },
          },
        },
      ],
      volumes: [
        memoryVolume('agent', 16 * 1024 * 1024),
        memoryVolume('home', spec.diskBytes),
        memoryVolume('tmp', spec.diskBytes),
      ],
    },
  };
}

/** Label of the pods that check the cluster enforces NetworkPolicies: `probe` or `control`. */
export const POLICY_PROBE_LABEL = 'mayfly.policy-probe';
/** The probe's container, whose exit code is the answer. */
export const POLICY_PROBE_CONTAINER = 'probe';

/**
 * What the check tries to reach: its node's kubelet and the API server (bracketed, so an IPv6
 * address works too; the agent refuses one whose variable was not set).
 */
export const POLICY_PROBE_TARGETS = [
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the agent expands it from its environment
  '[${HOST_IP}]:10250',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the agent expands it from its environment
  '[${KUBERNETES_SERVICE_HOST}]:${KUBERNETES_SERVICE_PORT}',
];

/**
 * A pod of the NetworkPolicy check in the sandbox namespace, under its deny-all policy, running the
 * agent's `probe` of {@link POLICY_PROBE_TARGETS}: as `probe` it must reach none of them; as
 * `control`, which {@link policyControlPolicyManifest} lets out, at least one (or the check
 * proves nothing). Locked down as the relay is.
 */
export function policyProbeManifest(
  settings: SandboxClusterSettings,
  name: string,
  role: 'probe' | 'control',
  agentImage: string,
): V1Pod {
  const resources = { memory: '32Mi', cpu: '100m' };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: sandboxNamespaceName(settings.instance),
      labels: { ...installationLabels(settings), [POLICY_PROBE_LABEL]: role },
    },
    spec: {
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      activeDeadlineSeconds: 120,
      dnsPolicy: 'None',
      dnsConfig: { nameservers: ['192.0.2.1'] },
      securityContext: { runAsUser: 65534, runAsGroup: 65534, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: POLICY_PROBE_CONTAINER,
          image: agentImage,
          imagePullPolicy: 'IfNotPresent',
          // (The API server's variables are given to every pod, service links or not.)
          command: [AGENT_IN_RELAY, 'probe', ...POLICY_PROBE_TARGETS],
          env: [{ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } }],
          // What it reached, as the container's termination message.
          terminationMessagePolicy: 'FallbackToLogsOnError',
          securityContext: {
            runAsNonRoot: true,
            allowPrivilegeEscalation: false,
            privileged: false,
            capabilities: { drop: ['ALL'] },
            readOnlyRootFilesystem: true,
          },
          resources: { limits: resources, requests: resources },
        },
      ],
    },
  };
}

/** Lets the check's `control` pod `name` out anywhere: it shows the targets can be reached at all. */
export function policyControlPolicyManifest(settings: SandboxClusterSettings, name: string): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name,
      namespace: sandboxNamespaceName(settings.instance),
      labels: { ...installationLabels(settings), [POLICY_PROBE_LABEL]: 'control' },
    },
    spec: {
      podSelector: { matchLabels: { [POLICY_PROBE_LABEL]: 'control' } },
      policyTypes: ['Egress'],
      egress: [{}],
    },
  };
}
