/**
 * The `mayfly.yaml` format. Strict: a key that is not listed here is an error ("unknown key"),
 * except keys starting with `x-`, which are ignored everywhere (a place for YAML anchors).
 * Values may use `${VAR}` interpolation (see `interpolate.ts`); numbers may come from it as text.
 *
 * ```yaml
 * services:                      # at least one; names are DNS labels: a-z, 0-9, single hyphens
 *   web:
 *     image: nginx:1.27          # exactly one of image and build
 *     build: ./web               # or { context: ./web, dockerfile: Dockerfile, args: { K: v }, target: prod }
 *                                #   paths are relative to the template's directory
 *     command: ["node", "server.js"]   # or a string, split like a shell would (quotes, no expansion)
 *     entrypoint: /docker-entrypoint.sh
 *     env: { API_URL: "http://api:8000", DEBUG: 1 }   # a key with no value is taken from the inputs
 *     envFile: .env              # or a list; later files win, `env` wins over all of them
 *     ports: [8080]              # or [{ port: 8080, http: true, protocol: tcp }]
 *                                #   http defaults to true for tcp; the first http port is routed by the
 *                                #   gateway as <service>--<env>.<domain>; `http: false` for other ports
 *     healthcheck:
 *       command: curl -fsS localhost:8080/health   # a string runs in a shell (CMD-SHELL);
 *                                #   a list is exec form (`["CMD", ...]` and `["CMD-SHELL", "..."]` too)
 *       interval: 5s             # defaults: interval 5s, timeout 5s, retries 3, startPeriod 0s
 *       timeout: 5s              #   (shorter than Docker's 30s, so environments are ready sooner)
 *       retries: 3
 *       startPeriod: 0s
 *     dependsOn: [db]            # waits until db is ready: healthy when it has a healthcheck,
 *                                #   completed when it is a job, started otherwise
 *     dependsOn: { db: healthy } # or explicit: healthy | started | completed
 *     volumes: ["data:/var/lib/data", "./conf:/etc/app:ro", "/cache"]
 *                                #   named volume (declared below) | bind relative to the template |
 *                                #   anonymous; or { source, target, readOnly }
 *     resources: { cpu: 0.5, memory: 256Mi, pids: 200 }   # memory units are binary: 256Mi = 256M
 *     replicas: 1
 *     restart: "no"              # no (default) | always | on-failure | unless-stopped
 *     workingDir: /app           # absolute
 *     user: "1000:1000"
 * jobs:                          # run once, must exit 0 before the environment is ready;
 *   migrate:                     #   same keys as services, without ports and replicas,
 *     build: ./db                #   restart only "no" or "on-failure"
 *     command: ["./migrate"]
 *     dependsOn: { db: healthy }
 * volumes:
 *   data: {}                     # or `data:`; one volume per environment
 * data:
 *   data: { seededBy: migrate }  # filled by a job: seeded once, a snapshot kept, later
 *                                #   environments start from a clone of it and skip the job;
 *                                #   or { snapshot: NAME }, one made by `mayfly snapshot create`
 * lifecycle:
 *   ttl: 2h                      # destroyed this long after creation (s, m, h, d)
 *   idleTimeout: 30m             # ... or after this long without a request through the gateway
 *   destroyOn: [pr-closed]
 * isolation: runc                # runc (default) | gvisor
 * ```
 */
import * as z from 'zod';
import {
  boolish,
  cpus,
  integer,
  lifetime,
  memory,
  optionalText,
  port,
  shortDuration,
  strictMap,
  stringOrList,
  text,
  volumeData,
} from './schema-kit.js';

/** Events that may destroy an environment, for `lifecycle.destroyOn`. */
export const DESTROY_TRIGGERS = ['pr-closed'] as const;

export const RESTART_POLICIES = ['no', 'always', 'on-failure', 'unless-stopped'] as const;

const nonEmpty = z.string().min(1);

const build = z.union([
  nonEmpty,
  strictMap({
    context: nonEmpty.optional(),
    dockerfile: nonEmpty.optional(),
    args: z.record(z.string(), optionalText).optional(),
    target: nonEmpty.optional(),
  }),
]);

const healthcheck = strictMap(
  {
    command: z.union([nonEmpty, z.array(text).min(1)]),
    interval: shortDuration.optional(),
    timeout: shortDuration.optional(),
    retries: integer(1).optional(),
    startPeriod: shortDuration.optional(),
  },
  { test: 'command' },
);

const dependsOn = z.union([
  z.array(nonEmpty),
  z.record(z.string(), z.enum(['healthy', 'started', 'completed'])),
]);

const mount = z.union([
  nonEmpty,
  strictMap(
    { source: nonEmpty.optional(), target: nonEmpty, readOnly: boolish.optional() },
    { read_only: 'readOnly' },
  ),
]);

const portEntry = z.union([
  port,
  strictMap(
    { port, http: boolish.optional(), protocol: z.enum(['tcp', 'udp']).optional() },
    { target: 'port' },
  ),
]);

/** Keys that services and jobs share. */
const workloadShape = {
  image: nonEmpty.optional(),
  build: build.optional(),
  command: stringOrList.optional(),
  entrypoint: stringOrList.optional(),
  env: z.record(z.string(), optionalText).optional(),
  envFile: z.union([nonEmpty, z.array(nonEmpty)]).optional(),
  healthcheck: healthcheck.optional(),
  dependsOn: dependsOn.optional(),
  volumes: z.array(mount).optional(),
  resources: strictMap({
    cpu: cpus.optional(),
    memory: memory.optional(),
    pids: integer(1).optional(),
  }).optional(),
  workingDir: nonEmpty.optional(),
  user: text.optional(),
};

/** Names used by Compose, pointed at their mayfly.yaml spelling in "unknown key" messages. */
const COMPOSE_NAMES = { environment: 'env', deploy: 'resources', expose: 'ports', scale: 'replicas' };

export const MayflyService = strictMap(
  {
    ...workloadShape,
    ports: z.array(portEntry).optional(),
    replicas: integer(1).optional(),
    restart: z.enum(RESTART_POLICIES).optional(),
  },
  COMPOSE_NAMES,
);
export type MayflyService = z.output<typeof MayflyService>;

export const MayflyJob = strictMap(
  { ...workloadShape, restart: z.enum(['no', 'on-failure']).optional() },
  COMPOSE_NAMES,
);
export type MayflyJob = z.output<typeof MayflyJob>;

/** The top level. Services and jobs are checked one by one (see `from-mayfly.ts`) so that one broken workload does not hide the problems of the others. */
export const MayflyTemplate = strictMap({
  services: z.record(z.string(), z.unknown()).optional(),
  jobs: z.record(z.string(), z.unknown()).optional(),
  volumes: z.record(z.string(), z.union([z.null(), strictMap({})])).optional(),
  lifecycle: strictMap({
    ttl: lifetime.optional(),
    idleTimeout: lifetime.optional(),
    destroyOn: z.array(z.enum(DESTROY_TRIGGERS)).optional(),
  }).optional(),
  isolation: z.enum(['runc', 'gvisor']).optional(),
  data: z.record(z.string(), volumeData).optional(),
});
