/**
 * Reads a Compose file (the subset in `compose-schema.ts`) into workloads, volumes and lifecycle.
 * Mapping worth knowing:
 * - `ports` give container ports routed over HTTP when tcp (host address and published port are
 *   ignored); `expose` gives ports that are not routed; `x-mayfly.http` picks the routed port and
 *   `x-mayfly.public: false` routes none;
 * - a service is a job when it has `x-mayfly.job: true` or when another service waits for it with
 *   `condition: service_completed_successfully`;
 * - `image` next to `build` is not a tag (Mayfly tags builds by content), but a service that runs
 *   that image gets the same build;
 * - `deploy.resources.limits` wins over the legacy `cpus`, `mem_limit`, `pids_limit`, and
 *   `deploy.replicas` over `scale`; `restart` over `deploy.restart_policy.condition`.
 */
import type {
  BuildPlan,
  HealthcheckPlan,
  MountPlan,
  PortPlan,
  ProbeCommand,
  WorkloadPlan,
} from '../plan/plan.js';
import { checkAliases, composeExtras, type FileSources } from './compose-extras.js';
import { ComposeFile, ComposeService, dropUnsupported, type PortSpec } from './compose-schema.js';
import { ENTRY_COST } from './limits.js';
import {
  addPort,
  argv,
  buildPlan,
  checkContainerCount,
  checkReplicas,
  checkVolumeName,
  checkWorkloadName,
  compact,
  type DependencyRef,
  type EnvFileRef,
  emptyParts,
  finishDependencies,
  healthcheckPlan,
  keyValues,
  type LoadContext,
  lifecycleOf,
  mount,
  readEnvFiles,
  shortMount,
  type TemplateParts,
  tooManyWorkloads,
  VolumeRegistry,
  volumesWithData,
  type WorkloadDraft,
} from './normalize.js';
import { isPlainObject, PARSE_OPTIONS, reportZodIssues } from './schema-kit.js';
import type { Path } from './yaml-positions.js';

/** Compose's profile names. */
const PROFILE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const RESTART_CONDITIONS = { none: 'no', 'on-failure': 'on-failure', any: 'always' } as const;

export function fromCompose(root: unknown, ctx: LoadContext): TemplateParts {
  const { sink } = ctx;
  dropUnsupported(root, sink);
  const top = ComposeFile.safeParse(root, PARSE_OPTIONS);
  if (!top.success) reportZodIssues(top.error.issues, [], sink);
  const raw = isPlainObject(root) ? root : {};
  const services = isPlainObject(raw.services) ? raw.services : {};
  if (
    isPlainObject(root) &&
    (raw.services === undefined || (isPlainObject(raw.services) && Object.keys(services).length === 0))
  ) {
    sink.error(['services'], 'no services: add at least one under "services"');
  }
  if (tooManyWorkloads(Object.keys(services).length, sink)) return emptyParts();
  const declared = isPlainObject(raw.volumes) ? Object.keys(raw.volumes) : [];
  for (const name of declared) checkVolumeName(name, ['volumes', name], sink);
  const volumes = new VolumeRegistry(declared);

  const parsed = new Map<string, ComposeService>();
  for (const [name, value] of Object.entries(services)) {
    const path = ['services', name];
    checkWorkloadName(name, path, sink);
    const result = ComposeService.safeParse(value, PARSE_OPTIONS);
    if (result.success) parsed.set(name, result.data);
    else reportZodIssues(result.error.issues, path, sink);
  }

  // As Compose: a service with profiles is part of the environment only when one is active.
  const inactive = new Map<string, string[]>();
  for (const [name, service] of parsed) {
    const profiles = service.profiles ?? [];
    profiles.forEach((profile, i) => {
      if (!PROFILE_NAME.test(profile))
        sink.error(
          ['services', name, 'profiles', i],
          `invalid profile name "${profile}": use letters, digits, "_", "." and "-"`,
        );
    });
    if (profiles.length > 0 && !ctx.profiles.includes('*') && !profiles.some((p) => ctx.profiles.includes(p)))
      inactive.set(name, profiles);
  }
  for (const [name, service] of parsed) {
    if (inactive.has(name)) continue;
    const deps = service.depends_on;
    const refs: [string, boolean, Path][] = Array.isArray(deps)
      ? deps.map((dep, i) => [dep, true, ['services', name, 'depends_on', i]])
      : Object.entries(deps ?? {}).map(([dep, o]) => [
          dep,
          o.required ?? true,
          ['services', name, 'depends_on', dep],
        ]);
    for (const [dep, required, at] of refs) {
      const profiles = inactive.get(dep);
      if (!profiles || !required) continue;
      sink.error(
        at,
        `"${dep}" is not part of this environment: none of its profiles (${profiles.join(', ')}) is active; activate one with --profile or COMPOSE_PROFILES`,
        Array.isArray(deps) ? 'value' : 'key',
      );
    }
  }
  for (const name of inactive.keys()) parsed.delete(name);
  if (inactive.size > 0 && parsed.size === 0 && Object.keys(services).length === inactive.size) {
    const all = [...new Set([...inactive.values()].flat())].sort();
    sink.error(
      ['services'],
      `no service is active: every one has profiles, and none of ${all.join(', ')} is active; activate one with --profile or COMPOSE_PROFILES`,
    );
  }

  const extension = top.success ? top.data['x-mayfly'] : undefined;
  const jobs = new Set<string>();
  // A service that seeds a volume runs once, as one that others wait to complete does.
  for (const source of Object.values(extension?.data ?? {}))
    if (source.seededBy !== undefined && parsed.has(source.seededBy)) jobs.add(source.seededBy);
  for (const [name, service] of parsed) {
    if (service['x-mayfly']?.job) jobs.add(name);
    const deps = service.depends_on;
    if (deps && !Array.isArray(deps)) {
      for (const [dep, options] of Object.entries(deps)) {
        if (options.condition === 'service_completed_successfully') jobs.add(dep);
      }
    }
  }

  const sources: FileSources = {
    secrets: (top.success ? top.data.secrets : undefined) ?? {},
    configs: (top.success ? top.data.configs : undefined) ?? {},
  };
  const drafts = [...parsed].map(([name, service]) =>
    workload(name, jobs.has(name) ? 'job' : 'service', service, ['services', name], ctx, volumes, sources),
  );
  checkContainerCount(drafts, sink);
  checkAliases(
    drafts.map((d) => ({ name: d.spec.name, aliases: d.spec.aliases, path: d.path })),
    sink,
  );
  shareBuiltImages(drafts, parsed, ctx);
  const workloads = finishDependencies(drafts, new Set(Object.keys(services)), sink, 'service');
  return {
    workloads,
    volumes: volumesWithData(
      volumes.list(),
      new Set(declared),
      extension?.data,
      workloads,
      ['x-mayfly', 'data'],
      sink,
    ),
    isolation: extension?.isolation ?? 'runc',
    lifecycle: lifecycleOf(extension, ['x-mayfly'], sink),
  };
}

/**
 * In Compose, `image` next to `build` names what is built, and another service may run that image
 * (`image: app` without `build`). Mayfly tags builds by content instead, so such a service gets
 * the same build, which yields the same tag and is built once.
 */
function shareBuiltImages(
  drafts: WorkloadDraft[],
  parsed: ReadonlyMap<string, ComposeService>,
  ctx: LoadContext,
): void {
  const builtBy = new Map<string, BuildPlan>();
  for (const draft of drafts) {
    const image = parsed.get(draft.spec.name)?.image;
    const build = draft.spec.image.build;
    if (build && image !== undefined && !builtBy.has(image)) builtBy.set(image, build);
  }
  for (const draft of drafts) {
    const build = draft.spec.image.build ? undefined : builtBy.get(draft.spec.image.ref);
    if (!build) continue;
    // One build with many args, run by thousands of services, is copied into each of them.
    ctx.budget.spend(buildSize(build), draft.path);
    draft.spec = { ...draft.spec, image: { build: { ...build, args: { ...build.args } } } };
  }
}

/** What a copy of a build plan is charged (see `ENTRY_COST`). */
function buildSize(build: BuildPlan): number {
  let size = ENTRY_COST + build.context.length + build.dockerfile.length + (build.target?.length ?? 0);
  for (const [key, value] of Object.entries(build.args)) size += ENTRY_COST + key.length + value.length;
  return size;
}

function workload(
  name: string,
  kind: 'service' | 'job',
  service: ComposeService,
  path: Path,
  ctx: LoadContext,
  volumes: VolumeRegistry,
  sources: FileSources,
): WorkloadDraft {
  const { sink } = ctx;
  const at = (...rest: (string | number)[]): Path => [...path, ...rest];

  if (service.image === undefined && service.build === undefined)
    sink.error(path, 'needs "image" or "build"');
  let build: BuildPlan | undefined;
  if (service.build !== undefined) {
    const input = typeof service.build === 'string' ? { context: service.build } : service.build;
    const contextAt =
      typeof service.build === 'string' || service.build.context === undefined
        ? at('build')
        : at('build', 'context');
    build = buildPlan(input, at('build'), ctx, contextAt) ?? undefined;
  }

  const env = {
    ...readEnvFiles(envFileRefs(service, at, ctx), ctx),
    ...(service.environment ? keyValues(service.environment, at('environment'), ctx) : {}),
  };

  const deps: DependencyRef[] = Array.isArray(service.depends_on)
    ? service.depends_on.map((dep, i) => ({
        name: dep,
        condition: 'service_started',
        path: at('depends_on', i),
        at: 'value',
        required: true,
      }))
    : Object.entries(service.depends_on ?? {}).map(([dep, options]) => ({
        name: dep,
        condition: options.condition ?? 'service_started',
        path: at('depends_on', dep),
        at: 'key',
        required: options.required ?? true,
      }));

  const mounts = (service.volumes ?? [])
    .map((entry, i): MountPlan | null => {
      if (typeof entry === 'string') return shortMount(entry, name, at('volumes', i), ctx, volumes);
      if (entry.type === 'tmpfs') {
        if (!entry.target.startsWith('/')) {
          sink.error(at('volumes', i, 'target'), `mount target "${entry.target}" must be an absolute path`);
          return null;
        }
        const size = entry.tmpfs?.size;
        return { type: 'tmpfs', target: entry.target, readOnly: false, ...(size ? { sizeBytes: size } : {}) };
      }
      if (entry.type !== 'volume' && entry.type !== 'bind') {
        sink.warn(at('volumes', i, 'type'), `"${entry.type}" mounts are not supported by Mayfly, ignored`);
        return null;
      }
      const input = {
        source: entry.source,
        target: entry.target,
        readOnly: entry.read_only ?? false,
        type: entry.type,
      };
      return mount(input, name, at('volumes', i), ctx, volumes);
    })
    .filter((m): m is MountPlan => m !== null);

  const deploy = service.deploy;
  const limits = deploy?.resources?.limits;
  const pids = limits?.pids ?? service.pids_limit;
  const replicas = deploy?.replicas ?? service.scale ?? 1;
  const replicasSet = deploy?.replicas !== undefined || service.scale !== undefined;
  const replicasAt = deploy?.replicas !== undefined ? at('deploy', 'replicas') : at('scale');
  if (kind === 'service') checkReplicas(replicas, replicasAt, sink);
  let restart: WorkloadPlan['restart'] =
    service.restart?.policy ?? RESTART_CONDITIONS[deploy?.restart_policy?.condition ?? 'none'];
  if (service.restart?.maxRetries !== undefined) {
    sink.warn(
      at('restart'),
      `the retry limit ${service.restart.maxRetries} is ignored: Mayfly retries without limit`,
    );
  }
  if (kind === 'job') {
    if (replicas !== 1) sink.error(replicasAt, 'a job runs once: replicas must be 1');
    if (restart === 'always' || restart === 'unless-stopped') {
      sink.error(at('restart'), `a job runs once: restart must be "no" or "on-failure", not "${restart}"`);
      restart = 'no';
    }
  }
  if (service.working_dir !== undefined && !service.working_dir.startsWith('/')) {
    sink.error(at('working_dir'), 'must be an absolute path');
  }

  const { mounts: extraMounts, shmBytes, ...extras } = composeExtras(name, service, path, ctx, sources);
  mounts.push(...extraMounts);

  return {
    path,
    deps,
    ...(replicasSet ? { replicasPath: replicasAt } : {}),
    spec: compact({
      name,
      kind,
      image: build ? { build } : { ref: service.image ?? '' },
      ...extras,
      command: argv(service.command, at('command'), sink),
      entrypoint: argv(service.entrypoint, at('entrypoint'), sink),
      env,
      ports: ports(kind, service, path, ctx),
      healthcheck: healthcheck(service, at('healthcheck'), ctx),
      mounts,
      resources: compact({
        cpus: limits?.cpus ?? service.cpus,
        memoryBytes: limits?.memory ?? service.mem_limit,
        pids: pids !== undefined && pids > 0 ? pids : undefined,
        shmBytes,
      }),
      replicas,
      restart,
      workingDir: service.working_dir,
      user: service.user,
    }),
  };
}

function envFileRefs(
  service: ComposeService,
  at: (...rest: (string | number)[]) => Path,
  ctx: LoadContext,
): EnvFileRef[] {
  const value = service.env_file;
  if (value === undefined) return [];
  if (typeof value === 'string') return [{ file: value, required: true, path: at('env_file') }];
  return value.map((entry, i) => {
    if (typeof entry === 'string') return { file: entry, required: true, path: at('env_file', i) };
    if (entry.format !== undefined)
      ctx.sink.warn(at('env_file', i, 'format'), 'ignored: env files are read in the default format', 'key');
    return { file: entry.path, required: entry.required ?? true, path: at('env_file', i, 'path') };
  });
}

const isPortSpec = (entry: unknown): entry is PortSpec =>
  isPlainObject(entry) && typeof entry.first === 'number' && typeof entry.last === 'number';

function ports(kind: 'service' | 'job', service: ComposeService, path: Path, ctx: LoadContext): PortPlan[] {
  const out: PortPlan[] = [];
  // A range is one short string that stands for up to 100 ports.
  const charge = (spec: PortSpec, at: Path) => ctx.budget.spend((spec.last - spec.first) * ENTRY_COST, at);
  (service.ports ?? []).forEach((entry, i) => {
    if (isPortSpec(entry)) {
      charge(entry, [...path, 'ports', i]);
      for (let container = entry.first; container <= entry.last; container++)
        addPort(out, { container, protocol: entry.protocol, http: entry.protocol === 'tcp' });
    } else {
      const protocol = entry.protocol ?? 'tcp';
      addPort(out, { container: entry.target, protocol, http: protocol === 'tcp' });
    }
  });
  (service.expose ?? []).forEach((entry, i) => {
    charge(entry, [...path, 'expose', i]);
    for (let container = entry.first; container <= entry.last; container++)
      addPort(out, { container, protocol: entry.protocol, http: false });
  });
  const extension = service['x-mayfly'];
  if (extension?.http !== undefined) {
    const routed = extension.http;
    for (const port of out) port.http = port.container === routed && port.protocol === 'tcp';
    addPort(out, { container: routed, protocol: 'tcp', http: true });
  }
  // A job is not routed, and neither is a service marked `public: false`.
  if (kind === 'job' || extension?.public === false) for (const port of out) port.http = false;
  return out;
}

function healthcheck(
  service: ComposeService,
  path: Path,
  ctx: LoadContext,
): HealthcheckPlan | 'disabled' | undefined {
  const hc = service.healthcheck;
  if (!hc) return undefined;
  // As Compose: no check at all, the image's own HEALTHCHECK included.
  if (hc.disable === true) return 'disabled';
  const { test } = hc;
  if (test === undefined) {
    ctx.sink.warn(path, 'no "test": the image\'s own HEALTHCHECK applies, with its own timings', 'key');
    return undefined;
  }
  let command: ProbeCommand;
  if (typeof test === 'string') {
    if (test.trim() === '') {
      ctx.sink.error([...path, 'test'], 'must not be empty');
      return undefined;
    }
    command = { shell: test };
  } else if (test[0] === 'NONE') {
    return 'disabled';
  } else if (test[0] === 'CMD' && test.length > 1) {
    command = { exec: test.slice(1) };
  } else if (test[0] === 'CMD-SHELL' && test.length > 1) {
    command = { shell: test.slice(1).join(' ') };
  } else {
    ctx.sink.error(
      [...path, 'test'],
      'a list must start with "CMD", "CMD-SHELL" or "NONE", followed by the command',
    );
    return undefined;
  }
  return healthcheckPlan(
    command,
    { intervalMs: hc.interval, timeoutMs: hc.timeout, retries: hc.retries, startPeriodMs: hc.start_period },
    path,
    ctx.sink,
  );
}
