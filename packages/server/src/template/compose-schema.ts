/**
 * The subset of the Compose specification Mayfly reads, and the rest of the specification it
 * knows about. Three kinds of keys:
 * - supported: validated here and honoured (see `from-compose.ts` for what each becomes);
 * - unsupported but valid Compose (`privileged`, `container_name`, `logging`…): a warning on the
 *   key, and the key is dropped by {@link dropUnsupported} before validation;
 * - anything else (`imgae`): an "unknown key" error, with a suggestion when one is close.
 * `x-*` keys are extensions, ignored silently as the Compose convention says, except `x-mayfly`:
 *
 * ```yaml
 * x-mayfly:
 *   ttl: 2h              # also idleTimeout: 30m, destroyOn: [pr-closed], isolation: gvisor
 *   data:
 *     dbdata: { seededBy: migrate }   # a named volume filled by a job: seeded once, then cloned
 *     cache: { snapshot: warm-cache }  # or made from a snapshot made by hand (`mayfly snapshot create`)
 * services:
 *   web:
 *     x-mayfly:
 *       http: 3000     # the port the gateway routes (default: the first published tcp port)
 *       public: false  # no gateway route at all
 *   migrate:
 *     x-mayfly: { job: true }   # run once; also implied when a service depends on it with
 *                               # condition: service_completed_successfully
 * ```
 *
 * Where Mayfly differs from `docker compose up`: published host ports are not bound (services are
 * reached through the gateway), every environment has one network, memory units are binary, and
 * health check defaults are 5s/5s/3 retries. An unset `${VAR}` is empty with a warning, as in Compose.
 */
import * as z from 'zod';
import type { IssueSink } from './issues.js';
import { DESTROY_TRIGGERS } from './mayfly-schema.js';
import {
  boolish,
  cpus,
  describeValue,
  Invalid,
  integer,
  isPlainObject,
  lifetime,
  memory,
  optionalText,
  port,
  scalar,
  shortDuration,
  strictMap,
  stringOrList,
  text,
  volumeData,
} from './schema-kit.js';
import type { Path } from './yaml-positions.js';

const nonEmpty = z.string().min(1);

/** Container ports of a short `ports` entry: `80`, `"8080:80"`, `"127.0.0.1:8080:80/tcp"`, `"3000-3002"`. */
export interface PortSpec {
  /** The container ports, `first` to `last` (the same for a single port). */
  first: number;
  last: number;
  protocol: 'tcp' | 'udp';
}

const MAX_RANGE = 100;

/** Parses a short port entry; the host part (address and published port) is ignored. */
export function parsePortSpec(value: string | number): PortSpec | Invalid {
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= 1 && value <= 65535
      ? { first: value, last: value, protocol: 'tcp' }
      : new Invalid(`invalid port ${value}: expected a number from 1 to 65535`);
  }
  const bad = new Invalid(`invalid port "${value}": expected "80", "8080:80" or "127.0.0.1:8080:80/udp"`);
  const [mapping = '', protocol = 'tcp', ...rest] = value.trim().split('/');
  if (rest.length > 0) return bad;
  if (protocol !== 'tcp' && protocol !== 'udp')
    return new Invalid(`unsupported protocol "${protocol}": expected tcp or udp`);
  // The container part is always last; before it may come a published port and a host address.
  const container = mapping.slice(mapping.lastIndexOf(':') + 1);
  const range = /^(\d+)(?:-(\d+))?$/.exec(container);
  if (!range) return bad;
  const first = Number(range[1]);
  const last = range[2] === undefined ? first : Number(range[2]);
  if (first < 1 || last > 65535 || last < first) return bad;
  if (last - first >= MAX_RANGE)
    return new Invalid(`port range "${container}" is too large (at most ${MAX_RANGE} ports)`);
  return { first, last, protocol };
}

const portSpec = scalar('a port', ['number', 'string'], (v) => parsePortSpec(v as string | number));

/** `restart`: the four policies, plus `on-failure:N` whose N Mayfly cannot honour. */
const restart = scalar('a restart policy', ['string'], (v) => {
  const match = /^(no|always|unless-stopped|on-failure)(?::(\d+))?$/.exec(String(v));
  if (!match || (match[2] !== undefined && match[1] !== 'on-failure')) {
    return new Invalid(
      `expected one of "no", "always", "on-failure", "unless-stopped"; got ${JSON.stringify(v)}`,
    );
  }
  return { policy: match[1] as 'no' | 'always' | 'on-failure' | 'unless-stopped', maxRetries: match[2] };
});

const keyValueList = z.array(z.string());

const build = z.union([
  nonEmpty,
  strictMap({
    context: nonEmpty.optional(),
    dockerfile: nonEmpty.optional(),
    args: z.union([z.record(z.string(), optionalText), keyValueList]).optional(),
    target: nonEmpty.optional(),
  }),
]);

const healthcheck = strictMap(
  {
    test: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
    interval: shortDuration.optional(),
    timeout: shortDuration.optional(),
    start_period: shortDuration.optional(),
    retries: integer(1).optional(),
    disable: boolish.optional(),
  },
  { command: 'test' },
);

const CONDITIONS = ['service_started', 'service_healthy', 'service_completed_successfully'] as const;

const dependsOn = z.union([
  z.array(nonEmpty),
  z.record(
    z.string(),
    strictMap({
      condition: z.enum(CONDITIONS).optional(),
      restart: boolish.optional(),
      required: boolish.optional(),
    }),
  ),
]);

const volumeMount = z.union([
  nonEmpty,
  strictMap({
    type: z.enum(['volume', 'bind', 'tmpfs', 'npipe', 'cluster', 'image']),
    source: z.string().optional(),
    target: nonEmpty,
    read_only: boolish.optional(),
    tmpfs: strictMap({ size: memory.optional(), mode: z.unknown().optional() }).optional(),
  }),
]);

const envFile = z.union([
  nonEmpty,
  z.array(
    z.union([
      nonEmpty,
      strictMap({ path: nonEmpty, required: boolish.optional(), format: z.string().optional() }),
    ]),
  ),
]);

const longPort = strictMap({
  target: port,
  published: z.union([z.string(), z.number()]).optional(),
  host_ip: z.string().optional(),
  protocol: z.enum(['tcp', 'udp']).optional(),
  mode: z.string().optional(),
  name: z.string().optional(),
  app_protocol: z.string().optional(),
});

/** A secret or config a service uses: its name, or where and how it is mounted. */
const fileGrant = z.union([
  nonEmpty,
  strictMap({
    source: nonEmpty,
    target: nonEmpty.optional(),
    uid: text.optional(),
    gid: text.optional(),
    mode: scalar('a file mode', ['number', 'string'], (v) => {
      // YAML 1.2 reads 0440 as the decimal 440: Compose takes such a number as octal digits.
      const digits = typeof v === 'number' ? String(v) : String(v).replace(/^0o/, '');
      if (!/^[0-7]{1,4}$/.test(digits))
        return new Invalid(`invalid file mode ${describeValue(v)}: expected octal digits, like 0440`);
      const mode = Number.parseInt(digits, 8);
      // No setuid, setgid or sticky bit on a file the server writes for a container.
      return mode <= 0o777
        ? mode
        : new Invalid(
            `invalid file mode ${describeValue(v)}: only read, write and execute bits (at most 0777)`,
          );
    }).optional(),
  }),
]);

/** `ulimits`: a limit for soft and hard alike, or both given. */
const ulimit = z.union([integer(-1), strictMap({ soft: integer(-1), hard: integer(-1) })]);

/** `extra_hosts`: `["name:ip", "name=ip"]` or `{ name: ip }` (or a list of addresses). */
const extraHosts = z.union([z.array(nonEmpty), z.record(z.string(), z.union([nonEmpty, z.array(nonEmpty)]))]);

/** A top-level secret or config: where its content comes from. */
const fileSource = strictMap({
  file: nonEmpty.optional(),
  environment: nonEmpty.optional(),
  content: z.string().optional(),
  external: boolish.optional(),
  name: z.string().optional(),
});
export type ComposeFileSource = z.output<typeof fileSource>;

/** `pids_limit` and `deploy.resources.limits.pids`: -1 or 0 mean unlimited. */
const pidsLimit = integer(-1);

const MAYFLY_NAMES = { env: 'environment', envFile: 'env_file', resources: 'deploy' };

export const ComposeService = strictMap(
  {
    image: nonEmpty.optional(),
    build: build.optional(),
    command: z.union([stringOrList, z.null()]).optional(),
    entrypoint: z.union([stringOrList, z.null()]).optional(),
    environment: z.union([z.record(z.string(), optionalText), keyValueList]).optional(),
    env_file: envFile.optional(),
    ports: z.array(z.union([portSpec, longPort])).optional(),
    expose: z.array(portSpec).optional(),
    depends_on: dependsOn.optional(),
    healthcheck: healthcheck.optional(),
    volumes: z.array(volumeMount).optional(),
    restart: restart.optional(),
    deploy: strictMap({
      replicas: integer(1).optional(),
      resources: strictMap({
        limits: strictMap({
          cpus: cpus.optional(),
          memory: memory.optional(),
          pids: pidsLimit.optional(),
        }).optional(),
      }).optional(),
      restart_policy: strictMap({ condition: z.enum(['none', 'on-failure', 'any']).optional() }).optional(),
    }).optional(),
    cpus: cpus.optional(),
    mem_limit: memory.optional(),
    pids_limit: pidsLimit.optional(),
    scale: integer(1).optional(),
    working_dir: nonEmpty.optional(),
    user: text.optional(),
    labels: z.union([z.record(z.string(), optionalText), keyValueList]).optional(),
    tmpfs: z.union([nonEmpty, z.array(nonEmpty)]).optional(),
    init: boolish.optional(),
    stop_signal: nonEmpty.optional(),
    stop_grace_period: shortDuration.optional(),
    hostname: nonEmpty.optional(),
    container_name: nonEmpty.optional(),
    extra_hosts: extraHosts.optional(),
    cap_drop: z.array(nonEmpty).optional(),
    read_only: boolish.optional(),
    shm_size: memory.optional(),
    ulimits: z.record(z.string(), ulimit).optional(),
    secrets: z.array(fileGrant).optional(),
    configs: z.array(fileGrant).optional(),
    profiles: z.array(nonEmpty).optional(),
    'x-mayfly': strictMap({
      job: boolish.optional(),
      http: port.optional(),
      public: boolish.optional(),
    }).optional(),
  },
  MAYFLY_NAMES,
);
export type ComposeService = z.output<typeof ComposeService>;

/** The top level; services are checked one by one (see `from-compose.ts`). */
export const ComposeFile = strictMap({
  name: z.string().optional(),
  services: z.record(z.string(), z.unknown()).optional(),
  volumes: z.record(z.string(), z.union([z.null(), strictMap({})])).optional(),
  secrets: z.record(z.string(), fileSource).optional(),
  configs: z.record(z.string(), fileSource).optional(),
  'x-mayfly': strictMap({
    ttl: lifetime.optional(),
    idleTimeout: lifetime.optional(),
    destroyOn: z.array(z.enum(DESTROY_TRIGGERS)).optional(),
    isolation: z.enum(['runc', 'gvisor']).optional(),
    data: z.record(z.string(), volumeData).optional(),
  }).optional(),
});

const IGNORED = 'not supported by Mayfly, ignored';

/** Valid Compose keys Mayfly does not honour, with the warning each gets. */
const UNSUPPORTED = {
  top: {
    version: 'obsolete, ignored',
    networks: "ignored: all services share the environment's network",
    include: 'not supported by Mayfly, ignored: the included services are not part of the environment',
    models: IGNORED,
  },
  service: {
    ...(Object.fromEntries(
      [
        'annotations',
        'attach',
        'blkio_config',
        'cap_add',
        'cgroup',
        'cgroup_parent',
        'cpu_count',
        'cpu_percent',
        'cpu_period',
        'cpu_quota',
        'cpu_rt_period',
        'cpu_rt_runtime',
        'cpu_shares',
        'cpuset',
        'credential_spec',
        'develop',
        'device_cgroup_rules',
        'devices',
        'dns',
        'dns_opt',
        'dns_search',
        'domainname',
        'external_links',
        'gpus',
        'group_add',
        'ipc',
        'isolation',
        'label_file',
        'mac_address',
        'mem_reservation',
        'mem_swappiness',
        'memswap_limit',
        'models',
        'oom_kill_disable',
        'oom_score_adj',
        'pid',
        'platform',
        'post_start',
        'pre_stop',
        'provider',
        'pull_policy',
        'pull_refresh_after',
        'runtime',
        'security_opt',
        'stdin_open',
        'storage_opt',
        'sysctls',
        'tty',
        'use_api_socket',
        'userns_mode',
        'uts',
        'volumes_from',
      ].map((key) => [key, IGNORED]),
    ) as Record<string, string>),
    network_mode: 'ignored: every environment has its own network, shared by all of its services',
    links: 'ignored: services reach each other by service name',
    logging: 'ignored: logs are collected by the runtime and read with `mayfly logs`',
    privileged: 'not supported by Mayfly, ignored: containers never run privileged',
  },
  build: Object.fromEntries(
    [
      'additional_contexts',
      'cache_from',
      'cache_to',
      'dockerfile_inline',
      'entitlements',
      'extra_hosts',
      'isolation',
      'labels',
      'network',
      'no_cache',
      'platforms',
      'privileged',
      'provenance',
      'pull',
      'sbom',
      'secrets',
      'shm_size',
      'ssh',
      'tags',
      'ulimits',
    ].map((key) => [key, IGNORED]),
  ) as Record<string, string>,
  deploy: Object.fromEntries(
    ['mode', 'placement', 'update_config', 'rollback_config', 'labels', 'endpoint_mode'].map((key) => [
      key,
      IGNORED,
    ]),
  ) as Record<string, string>,
  resources: { reservations: 'ignored: only limits are applied' },
  restartPolicy: { delay: IGNORED, max_attempts: IGNORED, window: IGNORED },
  healthcheck: { start_interval: 'ignored: Mayfly probes often while a service starts' },
  mount: { bind: IGNORED, volume: IGNORED, consistency: IGNORED },
  volume: {
    driver: 'ignored: volumes use the runtime default driver',
    driver_opts: 'ignored: volumes use the runtime default driver',
    external: 'ignored: each environment gets its own volume',
    labels: IGNORED,
    name: 'ignored: volume names are chosen by Mayfly, one per environment',
  },
} satisfies Record<string, Record<string, string>>;

/**
 * Warns about, then deletes, every key of {@link UNSUPPORTED} in a parsed Compose file (a fresh
 * object from the YAML walk, so mutating it is fine). Service `networks` are dropped too; a
 * warning only when they carry options (aliases, addresses) that Mayfly cannot apply.
 */
export function dropUnsupported(root: unknown, sink: IssueSink): void {
  if (!isPlainObject(root)) return;
  const strip = (value: unknown, path: Path, table: Record<string, string>) => {
    if (!isPlainObject(value)) return;
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(table, key)) continue;
      sink.warn([...path, key], table[key]!, 'key');
      delete value[key];
    }
  };
  strip(root, [], UNSUPPORTED.top);
  if (isPlainObject(root.volumes)) {
    for (const [name, volume] of Object.entries(root.volumes))
      strip(volume, ['volumes', name], UNSUPPORTED.volume);
  }
  if (!isPlainObject(root.services)) return;
  for (const [name, service] of Object.entries(root.services)) {
    if (!isPlainObject(service)) continue;
    const at: Path = ['services', name];
    strip(service, at, UNSUPPORTED.service);
    strip(service.build, [...at, 'build'], UNSUPPORTED.build);
    strip(service.healthcheck, [...at, 'healthcheck'], UNSUPPORTED.healthcheck);
    const deploy = service.deploy;
    strip(deploy, [...at, 'deploy'], UNSUPPORTED.deploy);
    if (isPlainObject(deploy)) {
      strip(deploy.resources, [...at, 'deploy', 'resources'], UNSUPPORTED.resources);
      strip(deploy.restart_policy, [...at, 'deploy', 'restart_policy'], UNSUPPORTED.restartPolicy);
    }
    if (Array.isArray(service.volumes)) {
      for (const [i, mount] of service.volumes.entries())
        strip(mount, [...at, 'volumes', i], UNSUPPORTED.mount);
    }
    if ('networks' in service) {
      const networks = service.networks;
      if (
        isPlainObject(networks) &&
        Object.values(networks).some((n) => isPlainObject(n) && Object.keys(n).length > 0)
      ) {
        sink.warn(
          [...at, 'networks'],
          'network options (aliases, addresses) are ignored: services reach each other by service name',
          'key',
        );
      }
      delete service.networks;
    }
  }
}
