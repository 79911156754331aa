/**
 * Pure translation of a plan into Kubernetes objects: one namespace per environment (with its
 * quota, default limits and a default-deny network policy), a PVC per named volume, a ClusterIP
 * Service, a Deployment (a StatefulSet when it mounts volumes) or a Job per workload, and a
 * Secret for the files a workload gets. Stable v1 APIs only, so the objects work on 1.20 and on
 * current clusters. No I/O here: the driver decides what to create and when, these functions
 * decide what it looks like (snapshot-tested, validated against the official schemas).
 *
 * Services find each other by their Compose names without cluster DNS: every pod gets
 * `hostAliases` naming the Service IPs of the environment's workloads (and their aliases).
 */
import { createHash } from 'node:crypto';
import type {
  V1Container,
  V1Deployment,
  V1Job,
  V1LimitRange,
  V1Namespace,
  V1NetworkPolicy,
  V1NetworkPolicyPeer,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1Pod,
  V1PodTemplateSpec,
  V1Probe,
  V1ResourceQuota,
  V1Secret,
  V1Service,
  V1StatefulSet,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import type { EnvPlan, HealthcheckPlan, WorkloadPlan } from '../../plan/plan.js';
import { LABELS, MANAGED_BY, RuntimeStepError } from '../runtime.js';

/** What an installation decides for every environment it runs on a cluster. */
export interface ClusterSettings {
  /** The installation (store) that owns the objects: `Store.instanceId`. */
  instance: string;
  /** The RuntimeClass each isolation class other than plain runc runs under (e.g. gvisor → `gvisor`). */
  runtimeClasses: Partial<Record<Exclude<EnvPlan['isolation'], 'runc'>, string>>;
  /**
   * Who may reach an environment's pods besides the pods of the same namespace: the gateway (its
   * pods when it runs in the cluster, the node's address when it runs on a node).
   */
  gatewayPeers: V1NetworkPolicyPeer[];
  /** The namespace's ResourceQuota. */
  quota: { pods: number; requestsCpu: string; requestsMemory: string; limitsMemory: string; storage: string };
  /** The LimitRange: what a container gets when its workload names no resources. */
  containerDefaults: { cpuRequest: string; memoryRequest: string; memoryLimit: string };
  /** Size of each named volume's claim. */
  volumeSize: string;
  storageClassName?: string;
  /**
   * For a cluster without a storage provisioner (a single test node): each claim gets a volume of
   * its own, a directory under `directory` on the node (`<directory>/<namespace>/<volume>`).
   */
  localVolumes?: { directory: string };
  /** `Default` on a cluster without DNS (the pods' names come from `hostAliases` anyway). */
  dnsPolicy: 'ClusterFirst' | 'Default';
}

/** What a workload's objects need beyond the plan: found by the driver. */
export interface WorkloadFacts {
  /** The image as the cluster pulls it (from the configured registry). */
  image: string;
  /** Service IP of every workload of the environment that has one, by workload name. */
  serviceIps: ReadonlyMap<string, string>;
}

/** The Service of a workload needs the ports its image exposes too (Compose reaches any of them). */
export interface ImagePort {
  port: number;
  protocol: 'tcp' | 'udp';
}

const hash = (text: string, length = 6) => createHash('sha256').update(text).digest('hex').slice(0, length);

/**
 * A DNS-1035 label (what a Service name must be) standing for `name`: the name itself when it
 * already is one, else a readable form of it with a hash of the original, so two names never
 * collide (`my_db` and `my-db`).
 */
export function objectName(name: string): string {
  if (/^[a-z]([a-z0-9-]{0,50}[a-z0-9])?$/.test(name)) return name;
  const readable = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return `${readable || 'w'}-${hash(name)}`;
}

/**
 * {@link RuntimeStepError} when two workloads, or two volumes, of the plan would have one object
 * name (`my_db` and `my-db-<hash of my_db>`; the hash is short enough to be searched for): they
 * would share one Deployment or one claim — a volume a template fills itself taken for one a seed
 * made empty, say.
 */
export function checkObjectNames(plan: Pick<EnvPlan, 'workloads' | 'volumes'>): void {
  for (const [kind, names] of [
    ['workloads', plan.workloads.map((w) => w.name)],
    ['volumes', plan.volumes.map((v) => v.name)],
  ] as const) {
    const seen = new Map<string, string>();
    for (const name of names) {
      const object = objectName(name);
      const other = seen.get(object);
      if (other !== undefined && other !== name)
        throw new RuntimeStepError(
          'namespace',
          `${kind} "${other}" and "${name}" would have one name on Kubernetes ("${object}"): rename one`,
        );
      seen.set(object, name);
    }
  }
}

/** The namespace of an environment. */
export const namespaceName = (envId: string) => `mayfly-${objectName(envId)}`.slice(0, 63).replace(/-+$/, '');

/** A label value standing for `value` (≤ 63 characters, alphanumeric at both ends). */
export function labelValue(value: string): string {
  if (/^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$/.test(value)) return value;
  const readable = value
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .slice(0, 50)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return `${readable ? `${readable}-` : ''}${hash(value, 10)}`;
}

export function envLabels(settings: ClusterSettings, plan: Pick<EnvPlan, 'envId' | 'project'>) {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.instance]: labelValue(settings.instance),
    [LABELS.env]: labelValue(plan.envId),
    [LABELS.project]: labelValue(plan.project),
  };
}

/** Selects a workload's pods (and nothing else's). */
export function workloadSelector(plan: Pick<EnvPlan, 'envId'>, workload: Pick<WorkloadPlan, 'name'>) {
  return { [LABELS.env]: labelValue(plan.envId), [LABELS.workload]: labelValue(workload.name) };
}

function workloadLabels(settings: ClusterSettings, plan: EnvPlan, workload: WorkloadPlan) {
  return {
    ...envLabels(settings, plan),
    [LABELS.workload]: labelValue(workload.name),
    [LABELS.specHash]: labelValue(workload.specHash),
    'mayfly.kind': workload.kind,
  };
}

/** The exact names, which labels may have had to shorten, and the template's own labels. */
function workloadAnnotations(plan: EnvPlan, workload: WorkloadPlan): Record<string, string> {
  return {
    ...Object.fromEntries(Object.entries(workload.labels).filter(([key]) => !key.startsWith('mayfly.'))),
    'mayfly.env-name': plan.envName,
    [LABELS.workload]: workload.name,
  };
}

// --- the environment ---------------------------------------------------------------------------

export function namespaceManifest(settings: ClusterSettings, plan: EnvPlan): V1Namespace {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: namespaceName(plan.envId),
      labels: envLabels(settings, plan),
      annotations: { 'mayfly.env-name': plan.envName, [LABELS.env]: plan.envId },
    },
  };
}

export function resourceQuotaManifest(settings: ClusterSettings, plan: EnvPlan): V1ResourceQuota {
  const { quota } = settings;
  return {
    apiVersion: 'v1',
    kind: 'ResourceQuota',
    metadata: {
      name: 'mayfly-quota',
      namespace: namespaceName(plan.envId),
      labels: envLabels(settings, plan),
    },
    spec: {
      hard: {
        pods: String(quota.pods),
        'requests.cpu': quota.requestsCpu,
        'requests.memory': quota.requestsMemory,
        'limits.memory': quota.limitsMemory,
        'requests.storage': quota.storage,
        persistentvolumeclaims: String(Math.max(plan.volumes.length, 1)),
      },
    },
  };
}

export function limitRangeManifest(settings: ClusterSettings, plan: EnvPlan): V1LimitRange {
  const d = settings.containerDefaults;
  return {
    apiVersion: 'v1',
    kind: 'LimitRange',
    metadata: {
      name: 'mayfly-defaults',
      namespace: namespaceName(plan.envId),
      labels: envLabels(settings, plan),
    },
    spec: {
      limits: [
        {
          type: 'Container',
          defaultRequest: { cpu: d.cpuRequest, memory: d.memoryRequest },
          _default: { memory: d.memoryLimit },
        },
      ],
    },
  };
}

/**
 * Default deny for what comes in: a pod takes connections only from pods of its own environment
 * and from the gateway. What goes out is left open, as on Docker.
 */
export function networkPolicyManifest(settings: ClusterSettings, plan: EnvPlan): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: 'mayfly-default-deny',
      namespace: namespaceName(plan.envId),
      labels: envLabels(settings, plan),
    },
    spec: {
      podSelector: {},
      policyTypes: ['Ingress'],
      ingress: [{ _from: [{ podSelector: {} }, ...settings.gatewayPeers] }],
    },
  };
}

export const claimName = (volume: string) => `volume-${objectName(volume)}`;

export function volumeClaimManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  volume: string,
): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: claimName(volume),
      namespace: namespaceName(plan.envId),
      labels: envLabels(settings, plan),
      annotations: { 'mayfly.volume': volume },
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: settings.volumeSize } },
      ...(settings.localVolumes
        ? { storageClassName: '', volumeName: localVolumeName(plan, volume) }
        : settings.storageClassName
          ? { storageClassName: settings.storageClassName }
          : {}),
    },
  };
}

export const localVolumeName = (plan: Pick<EnvPlan, 'envId'>, volume: string) =>
  `${namespaceName(plan.envId)}-${objectName(volume)}`;

/** The node directory that holds the local volumes of an environment (see `localVolumes`). */
export const localVolumeDirectory = (directory: string, envId: string) =>
  `${directory.replace(/\/+$/, '')}/${namespaceName(envId)}`;

/** A claim's own volume on the node, bound to it alone (see {@link ClusterSettings.localVolumes}). */
export function localVolumeManifest(
  settings: ClusterSettings & { localVolumes: { directory: string } },
  plan: EnvPlan,
  volume: string,
): V1PersistentVolume {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name: localVolumeName(plan, volume),
      labels: envLabels(settings, plan),
      annotations: { 'mayfly.volume': volume },
    },
    spec: {
      capacity: { storage: settings.volumeSize },
      accessModes: ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      claimRef: { namespace: namespaceName(plan.envId), name: claimName(volume) },
      hostPath: {
        path: `${localVolumeDirectory(settings.localVolumes.directory, plan.envId)}/${objectName(volume)}`,
        type: 'DirectoryOrCreate',
      },
    },
  };
}

/** Everything an environment has before its workloads: namespace first. */
export function environmentManifests(settings: ClusterSettings, plan: EnvPlan) {
  return [
    namespaceManifest(settings, plan),
    resourceQuotaManifest(settings, plan),
    limitRangeManifest(settings, plan),
    networkPolicyManifest(settings, plan),
    ...plan.volumes.map((v) => volumeClaimManifest(settings, plan, v.name)),
  ];
}

// --- a workload --------------------------------------------------------------------------------

/**
 * The ClusterIP Service that gives a workload a stable address: every port it declares and every
 * port its image exposes. Null when there is none (nothing could be reached anyway).
 */
export function serviceManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  workload: WorkloadPlan,
  imagePorts: readonly ImagePort[],
): V1Service | null {
  const ports = new Map<string, ImagePort>();
  for (const p of workload.ports)
    ports.set(`${p.container}/${p.protocol}`, { port: p.container, protocol: p.protocol });
  for (const p of imagePorts) ports.set(`${p.port}/${p.protocol}`, p);
  if (ports.size === 0) return null;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: objectName(workload.name),
      namespace: namespaceName(plan.envId),
      labels: { ...envLabels(settings, plan), [LABELS.workload]: labelValue(workload.name) },
      annotations: { [LABELS.workload]: workload.name },
    },
    spec: {
      type: 'ClusterIP',
      selector: workloadSelector(plan, workload),
      ports: [...ports.values()]
        .sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol))
        .map((p) => ({
          name: `${p.protocol}-${p.port}`,
          port: p.port,
          targetPort: p.port,
          protocol: p.protocol === 'udp' ? 'UDP' : 'TCP',
        })),
    },
  };
}

export const filesSecretName = (workload: string) => `files-${objectName(workload)}`;

/** The files (Compose configs and secrets with content) a workload gets, or null when none. */
export function filesSecretManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  workload: WorkloadPlan,
): V1Secret | null {
  if (workload.files.length === 0) return null;
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: filesSecretName(workload.name),
      namespace: namespaceName(plan.envId),
      labels: workloadLabels(settings, plan, workload),
    },
    data: Object.fromEntries(
      workload.files.map((f, i) => [`file-${i}`, Buffer.from(f.content, 'utf8').toString('base64')]),
    ),
  };
}

/** Compose durations are milliseconds; probes count whole seconds (at least one). */
const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

function probe(workload: WorkloadPlan): V1Probe | undefined {
  const hc: HealthcheckPlan | 'disabled' | undefined = workload.healthcheck;
  if (hc === 'disabled') return undefined;
  if (hc === undefined) {
    // No check: ready once its HTTP port takes connections, as on Docker.
    const http = workload.ports.find((p) => p.http && p.protocol === 'tcp');
    return http ? { tcpSocket: { port: http.container }, periodSeconds: 1, failureThreshold: 1 } : undefined;
  }
  return {
    exec: { command: 'shell' in hc.command ? boundedShellCheck(hc.command.shell) : hc.command.exec },
    // Every second, as Docker probes while a container starts: readiness is seen at once.
    periodSeconds: 1,
    timeoutSeconds: seconds(hc.timeoutMs),
    failureThreshold: Math.max(1, hc.retries),
    initialDelaySeconds: 0,
  };
}

/**
 * A shell health check whose output is cut to its last 4 KiB inside the container, exit code kept:
 * the kubelet gets a probe's whole output in one message, and a check that prints more than the
 * runtime's message limit (16 MiB) would fail for that alone. Only the end ever explains a failure.
 */
export function boundedShellCheck(script: string): string[] {
  return [
    '/bin/sh',
    '-c',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansions, not a template
    'out=$( ( /bin/sh -c "$1" 2>&1; echo " $?" ) | tail -c 4096 ); printf "%s" "${out% *}"; exit "${out##* }"',
    'healthcheck',
    script,
  ];
}

/** `uid`, `uid:gid`: Kubernetes runs a container as numbers only. */
function runAs(workload: WorkloadPlan): { runAsUser?: number; runAsGroup?: number } {
  if (workload.user === undefined || workload.user === '') return {};
  const match = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(workload.user);
  if (!match) {
    throw new RuntimeStepError(
      `start:${workload.name}`,
      `user "${workload.user}" is a name: on Kubernetes give it as uid or uid:gid`,
    );
  }
  return { runAsUser: Number(match[1]), ...(match[2] ? { runAsGroup: Number(match[2]) } : {}) };
}

function podTemplate(
  settings: ClusterSettings,
  plan: EnvPlan,
  workload: WorkloadPlan,
  facts: WorkloadFacts,
): V1PodTemplateSpec {
  const volumes: V1Volume[] = [];
  const mounts: V1VolumeMount[] = [];
  workload.mounts.forEach((m, i) => {
    if (m.type === 'bind') {
      throw new RuntimeStepError(
        `start:${workload.name}`,
        `bind mount of ${m.source} at ${m.target}: a cluster's pods cannot mount a path of the control plane's machine; use a named volume`,
      );
    }
    const name = `mount-${i}`;
    if (m.type === 'tmpfs') {
      volumes.push({
        name,
        emptyDir: { medium: 'Memory', ...(m.sizeBytes ? { sizeLimit: String(m.sizeBytes) } : {}) },
      });
    } else {
      if (!plan.volumes.some((v) => v.name === m.source)) {
        throw new RuntimeStepError(
          `start:${workload.name}`,
          `mounts volume "${m.source}", which the plan does not have`,
        );
      }
      volumes.push({ name, persistentVolumeClaim: { claimName: claimName(m.source) } });
    }
    mounts.push({ name, mountPath: m.target, readOnly: m.readOnly });
  });
  if (workload.files.length > 0) {
    volumes.push({
      name: 'files',
      secret: {
        secretName: filesSecretName(workload.name),
        items: workload.files.map((f, i) => ({ key: `file-${i}`, path: `file-${i}`, mode: f.mode })),
      },
    });
    workload.files.forEach((f, i) => {
      mounts.push({ name: 'files', mountPath: f.target, subPath: `file-${i}`, readOnly: true });
    });
  }
  if (workload.resources.shmBytes) {
    volumes.push({
      name: 'shm',
      emptyDir: { medium: 'Memory', sizeLimit: String(workload.resources.shmBytes) },
    });
    mounts.push({ name: 'shm', mountPath: '/dev/shm' });
  }

  // Every workload of the environment by its Compose name and aliases, at its Service's address.
  const hostAliases = plan.workloads
    .filter((w) => facts.serviceIps.has(w.name))
    .map((w) => ({ ip: facts.serviceIps.get(w.name)!, hostnames: [...new Set([w.name, ...w.aliases])] }));
  for (const extra of workload.extraHosts) hostAliases.push({ ip: extra.ip, hostnames: [extra.host] });

  const { cpus, memoryBytes } = workload.resources;
  const limits: Record<string, string> = {};
  if (memoryBytes) limits.memory = String(memoryBytes);
  if (cpus) limits.cpu = `${Math.max(1, Math.round(cpus * 1000))}m`;
  const requests: Record<string, string> = {};
  // Ask for what the defaults ask, never more than the limit (a request above it is refused).
  if (memoryBytes)
    requests.memory = String(Math.min(memoryBytes, parseQuantity(settings.containerDefaults.memoryRequest)));
  if (cpus)
    requests.cpu = `${Math.min(Math.max(1, Math.round(cpus * 1000)), parseQuantity(settings.containerDefaults.cpuRequest) * 1000)}m`;

  const probeSpec = probe(workload);
  const container: V1Container = {
    name: 'main',
    image: facts.image,
    imagePullPolicy: 'IfNotPresent',
    ...(workload.entrypoint ? { command: workload.entrypoint } : {}),
    ...(workload.command ? { args: workload.command } : {}),
    env: Object.entries(workload.env).map(([name, value]) => ({ name, value })),
    ...(workload.workingDir ? { workingDir: workload.workingDir } : {}),
    ports: workload.ports.map((p) => ({
      containerPort: p.container,
      protocol: p.protocol === 'udp' ? 'UDP' : 'TCP',
    })),
    ...(probeSpec ? { readinessProbe: probeSpec } : {}),
    resources: {
      ...(Object.keys(limits).length ? { limits } : {}),
      ...(Object.keys(requests).length ? { requests } : {}),
    },
    volumeMounts: mounts,
    securityContext: {
      ...runAs(workload),
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: workload.readOnlyRootFilesystem,
      ...(workload.capDrop.length > 0 ? { capabilities: { drop: workload.capDrop } } : {}),
    },
  };
  const runtimeClassName = runtimeClass(settings, plan);
  return {
    metadata: {
      labels: workloadLabels(settings, plan, workload),
      annotations: workloadAnnotations(plan, workload),
    },
    spec: {
      containers: [container],
      volumes,
      hostAliases,
      ...(workload.hostname ? { hostname: objectName(workload.hostname) } : {}),
      // Mayfly's init default: a pause process as PID 1 that reaps zombies.
      shareProcessNamespace: workload.init ?? true,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      dnsPolicy: settings.dnsPolicy,
      restartPolicy: workload.kind === 'job' ? 'Never' : 'Always',
      ...(workload.stopGracePeriodMs !== undefined
        ? { terminationGracePeriodSeconds: Math.ceil(workload.stopGracePeriodMs / 1000) }
        : {}),
      ...(runtimeClassName ? { runtimeClassName } : {}),
    },
  };
}

function runtimeClass(settings: ClusterSettings, plan: EnvPlan): string | undefined {
  if (plan.isolation === 'runc') return undefined;
  const name = settings.runtimeClasses[plan.isolation];
  if (!name) {
    throw new RuntimeStepError(
      'start',
      `isolation "${plan.isolation}" has no RuntimeClass on this cluster (the operator maps one: mayfly serve --kube-runtime-class ${plan.isolation}=NAME)`,
    );
  }
  return name;
}

/** Kubernetes quantities as numbers (bytes, or cores): `64Mi`, `1G`, `250m`, `2`. */
export function parseQuantity(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(quantity);
  if (!match) throw new Error(`not a quantity: ${quantity}`);
  const factor: Record<string, number> = {
    m: 1e-3,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
  };
  return Number(match[1]) * (match[2] ? factor[match[2]]! : 1);
}

export type WorkloadManifest = V1Deployment | V1StatefulSet | V1Job;

/**
 * What runs a workload. Compose's restart policy decides, since Kubernetes' controllers always
 * restart what exits: `always`/`unless-stopped` → a controller (Deployment, or StatefulSet with
 * volumes) that Kubernetes keeps running; `no`/`on-failure` → pods Mayfly owns, restarted never or
 * on failure only, so a service that exits 0 is done as in Compose (Mayfly's reconciler repairs
 * one that crashed, as on Docker); a job → a Job.
 */
export function runsAs(workload: Pick<WorkloadPlan, 'kind' | 'restart'>): 'job' | 'controller' | 'pods' {
  if (workload.kind === 'job') return 'job';
  return workload.restart === 'always' || workload.restart === 'unless-stopped' ? 'controller' : 'pods';
}

export const podName = (workload: string, replica: number) => `${objectName(workload)}-${replica}`;

/** One replica of a workload that {@link runsAs} `pods`. */
export function podManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  workload: WorkloadPlan,
  facts: WorkloadFacts,
  replica: number,
): V1Pod {
  const template = podTemplate(settings, plan, workload, facts);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...template.metadata,
      name: podName(workload.name, replica),
      namespace: namespaceName(plan.envId),
      labels: { ...template.metadata!.labels, 'mayfly.replica': String(replica) },
    },
    spec: {
      ...template.spec!,
      restartPolicy: workload.restart === 'on-failure' ? 'OnFailure' : 'Never',
      hostname:
        template.spec!.hostname ??
        (workload.replicas > 1 ? podName(workload.name, replica) : objectName(workload.name)),
    },
  };
}

/**
 * The object that runs a workload: a Job for a job (run once, never retried: a failed job fails
 * the environment, as on Docker), a StatefulSet for a service that mounts named volumes (its pod
 * stops before another starts on the same data), a Deployment otherwise. `replicas` 0 makes it
 * without starting anything (prepare), the workload's count starts it (a Job's parallelism).
 */
export function workloadManifest(
  settings: ClusterSettings,
  plan: EnvPlan,
  workload: WorkloadPlan,
  facts: WorkloadFacts,
  replicas: number,
): WorkloadManifest {
  const metadata = {
    name: objectName(workload.name),
    namespace: namespaceName(plan.envId),
    labels: workloadLabels(settings, plan, workload),
    annotations: workloadAnnotations(plan, workload),
  };
  const template = podTemplate(settings, plan, workload, facts);
  if (workload.kind === 'job') {
    return {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata,
      spec: {
        // 0: made without running (Job's `suspend` needs 1.21); the workload's count runs it.
        parallelism: replicas,
        completions: workload.replicas,
        backoffLimit: 0,
        template,
      },
    };
  }
  const selector = { matchLabels: workloadSelector(plan, workload) };
  if (workload.mounts.some((m) => m.type === 'volume')) {
    return {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata,
      spec: {
        replicas,
        serviceName: objectName(workload.name),
        podManagementPolicy: 'Parallel',
        selector,
        template,
      },
    };
  }
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata,
    spec: { replicas, selector, template, strategy: { type: 'Recreate' } },
  };
}

export type Manifest =
  | V1Namespace
  | V1ResourceQuota
  | V1LimitRange
  | V1NetworkPolicy
  | V1PersistentVolumeClaim
  | V1Service
  | V1Secret
  | V1PersistentVolume
  | V1Pod
  | WorkloadManifest;
