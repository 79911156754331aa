/** All settings of the server, in one zod schema, parsed once in main.ts and passed down. */

import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as z from 'zod';
import { isIpv4Cidr } from '../net/ipv4-cidr.js';
import { parseMemorySize } from '../template/units.js';

export const defaultDataDir = () => process.env.MAYFLY_HOME ?? path.join(os.homedir(), '.mayfly');

/** `relative` in the checkout this server runs from (the sources or the bundle), if it is there. */
export function inCheckout(relative: string): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 6; up++) {
    const candidate = path.join(dir, relative);
    if (existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  return undefined;
}

/**
 * The static agent binary Mayfly mounts into containers (`scripts/ensure-agent.sh` builds it):
 * `$MAYFLY_AGENT_BINARY`, else `packages/agent/dist/mayfly-agent` of the checkout, else none.
 */
export function defaultAgentBinary(): string | undefined {
  return process.env.MAYFLY_AGENT_BINARY ?? inCheckout('packages/agent/dist/mayfly-agent');
}

export const ServerConfig = z.object({
  /** One port serves the API (any host) and the gateway (`<service>--<env>.<baseDomain>`). */
  port: z.coerce.number().int().min(0).max(65535).default(7070),
  host: z.string().default('127.0.0.1'),
  dataDir: z.string().default(defaultDataDir),
  /** `postgres://…` for PostgreSQL; otherwise SQLite in the data dir. */
  dbUrl: z.string().optional(),
  /** Environments answer at `<service>--<env>.<baseDomain>`; `localhost` needs no DNS. */
  baseDomain: z.string().default('localhost'),
  /** Scheme and port the URLs handed to users carry, when a proxy in front changes them. */
  publicScheme: z.enum(['http', 'https']).default('http'),
  publicPort: z.coerce.number().int().optional(),
  dockerSocket: z.string().optional(),
  /**
   * Where environments run (`--runtime`): the Docker Engine of this machine, or a Kubernetes
   * cluster (docs/kubernetes.md). Images are built by the Docker Engine either way.
   */
  runtimeDriver: z.enum(['docker', 'kubernetes']).default('docker'),
  /** The cluster's kubeconfig (`--kubeconfig`); none: in-cluster config in a pod, else the default one. */
  kubeconfig: z.string().optional(),
  /** A context of the kubeconfig other than its current one (`--context`). */
  kubeContext: z.string().optional(),
  /** `HOST:PORT` of the registry the cluster pulls from; images are pushed there (`--registry`). */
  registry: z
    .string()
    .regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$/, 'a registry as HOST:PORT')
    .optional(),
  /**
   * For a cluster without a storage provisioner (one node): named volumes are directories under
   * this path on the node (`--kube-local-volumes`).
   */
  kubeLocalVolumes: z.string().optional(),
  /**
   * The StorageClass of environments' volumes (`--kube-storage-class`; default: the cluster's).
   * Where a VolumeSnapshotClass names its provisioner, seeds' snapshots are the storage's own.
   */
  kubeStorageClass: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, 'a StorageClass name (a DNS subdomain)')
    .optional(),
  /** Addresses (CIDRs) the gateway's connections come from, let in by every environment's NetworkPolicy. */
  kubeGatewayFrom: z
    .array(z.string().refine(isIpv4Cidr, 'an IPv4 CIDR such as 10.245.0.1/32'))
    .max(64)
    .default([]),
  /**
   * The RuntimeClass that runs each isolation class on the cluster (`--kube-runtime-class
   * gvisor=NAME`); an environment of a class without one is refused with why.
   */
  kubeRuntimeClasses: z
    .object({
      gvisor: z
        .string()
        .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, 'a RuntimeClass name (a DNS subdomain)')
        .optional(),
    })
    .strict()
    .default({}),
  /**
   * Where sandboxes run (`--sandbox-runtime`): the Docker Engine, or the cluster of `--runtime
   * kubernetes`, whose network plugin must enforce NetworkPolicies (a pod always has a network
   * interface: its policies are what shut it).
   */
  sandboxRuntime: z.enum(['docker', 'kubernetes']).default('docker'),
  /** Ranges no sandbox on the cluster reaches (`--kube-sandbox-blocked`): its pod and service ranges. */
  kubeSandboxBlocked: z
    .array(z.string().refine(isIpv4Cidr, 'an IPv4 CIDR such as 10.244.0.0/16'))
    .max(64)
    .default([]),
  /**
   * Make sandboxes on the cluster without checking that its network plugin enforces NetworkPolicies
   * (`--kube-skip-policy-check`); by default a probe pod must find them enforced first.
   */
  kubeSkipPolicyCheck: z.boolean().default(false),
  /** See {@link defaultAgentBinary}; without one, containers are started only when what they wait for is ready. */
  agentBinary: z.string().optional(),
  /** Environment networks take their subnets from here, not from the Engine's small default pools. */
  dockerSubnetPool: z.string().default('10.213.0.0/16'),
  dockerSubnetSize: z.coerce.number().int().min(16).max(28).default(24),
  reconcileIntervalMs: z.coerce.number().int().positive().default(2_000),
  gcIntervalMs: z.coerce.number().int().positive().default(30_000),
  leaseMs: z.coerce.number().int().positive().default(30_000),
  /** Work-lease owner; defaults per store (stable for SQLite, unique per process for PostgreSQL). */
  replicaId: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * Host directories templates may bind or read besides their own uploaded folder
   * (`--allow-host-path`, repeatable). Absolute; a socket (such as Docker's) only when listed itself.
   */
  allowHostPaths: z
    .array(z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path'))
    .default([]),
  /** Every container gets these limits unless its template sets its own. */
  defaultMemoryBytes: z
    .preprocess(
      (v) => (typeof v === 'string' ? (parseMemorySize(v) ?? v) : v),
      z.number({ error: 'expected a size such as 512m or 2g' }).int().positive(),
    )
    .default(1024 ** 3),
  defaultPids: z.coerce.number().int().positive().default(1024),
  /** An uploaded template folder: largest size (uncompressed), file count; unused ones are deleted after `bundleTtlMs`. */
  bundleMaxBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(256 * 1024 ** 2),
  bundleMaxFiles: z.coerce.number().int().positive().default(20_000),
  bundleTtlMs: z.coerce.number().int().positive().default(3_600_000),
  /** Uploaded bundles waiting to be used at once; more uploads get 429 until some are used or expire. */
  bundleMaxStaged: z.coerce.number().int().positive().default(50),
  /** Disk Mayfly-built images may take; past it the least recently used ones are removed. */
  imageBudgetBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(20 * 1024 ** 3),
  /** Disk volume snapshots (seeded data) may take; past it the least recently used ones are removed. */
  snapshotBudgetBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(20 * 1024 ** 3),
  /** Snapshots made by hand a project may keep; one more is refused (429) until one is removed. */
  snapshotsPerProject: z.coerce.number().int().positive().default(20),
  /**
   * Seeded snapshots a project keeps (one per seed key: every changed migration makes another);
   * past it, taking a new one removes the project's least recently used.
   */
  seedSnapshotsPerProject: z.coerce.number().int().positive().default(10),
  /** A built image used more recently than this is never collected (a bring-up may be about to use it). */
  imageGcGraceMs: z.coerce
    .number()
    .int()
    .nonnegative()
    .default(10 * 60_000),
  /** Destroyed environments are forgotten after this long; every environment keeps this many events at most. */
  destroyedRetentionMs: z.coerce
    .number()
    .int()
    .positive()
    .default(7 * 86_400_000),
  maxEventsPerEnv: z.coerce.number().int().positive().default(2_000),
  /** Log lines served when a request does not say how many (`tail=all` for every line). */
  logTailDefault: z.coerce.number().int().nonnegative().default(1_000),
  /** The gateway remembers routes this long (misses: `gatewayNegativeCacheMs`), for at most this many hosts. */
  gatewayCacheMs: z.coerce.number().int().positive().default(2_000),
  gatewayNegativeCacheMs: z.coerce.number().int().positive().default(1_000),
  gatewayCacheEntries: z.coerce.number().int().positive().default(10_000),
  /** One bring-up attempt, builds included, may take this long before it fails. */
  bringUpTimeoutMs: z.coerce
    .number()
    .int()
    .positive()
    .default(30 * 60_000),
  /** Environments that may exist at once (all but destroyed ones); one more create gets 429. */
  maxEnvironments: z.coerce.number().int().positive().default(200),
  /** Log streams the server reads from the runtime at once (one per service of each logs request). */
  maxLogStreams: z.coerce.number().int().positive().default(256),
  /** Failed attempts at a step before an environment is `failed`. */
  maxAttempts: z.coerce.number().int().positive().default(5),
  /** A bring-up waits this long for an unreachable runtime (engine down) before it fails. */
  runtimeUnavailableFailAfterMs: z.coerce
    .number()
    .int()
    .positive()
    .default(10 * 60_000),
  /** Output Docker keeps per container (json-file, in 3 files): a container printing forever cannot fill the disk. */
  containerLogMaxBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(30 * 1024 ** 2),
  /** How often work in flight re-reads the desired state, so a destroy on another replica pre-empts it. */
  desiredPollMs: z.coerce.number().int().positive().default(1_000),
  /**
   * Sandboxes kept ready per sandbox template (`--sandbox-pool base=4`), so a create only claims
   * one; a template's pool fills once its image is built. Templates named here override the
   * defaults (`base` and `code`: 2 each); 0 turns a template's pool off.
   */
  sandboxPool: z
    .record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/), z.coerce.number().int().min(0).max(250))
    .default({})
    .transform((named) => ({ base: 2, code: 2, ...named })),
  /** The warm pool's sandboxes' memory limits add up to at most this (`--sandbox-pool-memory 4g`). */
  sandboxPoolMemoryBytes: z
    .preprocess(
      (v) => (typeof v === 'string' ? (parseMemorySize(v) ?? v) : v),
      z.number({ error: 'expected a size such as 512m or 2g' }).int().nonnegative(),
    )
    .default(4 * 1024 ** 3),
  /**
   * Private address ranges (CIDRs: the LAN, a database on another Docker network) sandboxes may
   * list in `allowOut` (`--sandbox-allow-private`); none by default, so `0.0.0.0/0` is the public
   * internet only.
   */
  sandboxAllowPrivate: z
    .array(z.string().refine(isIpv4Cidr, 'an IPv4 CIDR such as 10.20.0.0/16'))
    .max(64)
    .default([]),
  /**
   * The Docker Engine runtime (a name from daemon.json) that runs sandboxes of `gvisor` templates
   * (`--sandbox-gvisor-runtime`); it must pass `--host-uds=open` to runsc.
   */
  sandboxGvisorRuntime: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a runtime name: letters, digits, ".", "_" and "-"')
    .default('runsc'),
  /**
   * Sandboxes running or paused at once, creates under way included (`--max-sandboxes`); one more
   * is refused with 429 and why.
   */
  maxSandboxes: z.coerce.number().int().positive().max(10_000).default(250),
  /** Terminals into sandboxes open at once on this server (handshakes under way included). */
  maxTerminals: z.coerce.number().int().positive().max(10_000).default(64),
  /** Pools of templates built before fill this long after the start (the first environments go first). */
  sandboxPoolStartDelayMs: z.coerce.number().int().nonnegative().default(10_000),
  /**
   * A file holding an admin token the operator made (`--admin-token-file`; a Secret shared by
   * replicas): stored as an admin token unless it ever was (a revoked one stays revoked). Replaces
   * the generated `<dataDir>/admin-token`.
   */
  adminTokenFile: z.string().optional(),
  /** Create an admin token (written to `<dataDir>/admin-token`) when the store has none. */
  bootstrapAdminToken: z.boolean().default(true),
  /**
   * Names this installation when its store is new: the instance id (label `mayfly.instance` on every
   * runtime object) becomes `<name>-<random>`, so installations sharing one engine are told apart
   * at a glance. Ignored for a store that already has an id.
   */
  instanceName: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/, 'lowercase letters, digits and hyphens, up to 32')
    .optional(),
});
export type ServerConfig = z.infer<typeof ServerConfig>;
export type ServerConfigInput = z.input<typeof ServerConfig>;

export function loadConfig(input: ServerConfigInput = {}): ServerConfig {
  return ServerConfig.parse(input);
}
