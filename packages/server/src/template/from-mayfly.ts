/** Reads a validated `mayfly.yaml` (see `mayfly-schema.ts`) into workloads, volumes and lifecycle. */
import type { BuildPlan, DependencyCondition, MountPlan, PortPlan, ProbeCommand } from '../plan/plan.js';
import { MayflyJob, MayflyService, MayflyTemplate } from './mayfly-schema.js';
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
  WORKLOAD_DEFAULTS,
  type WorkloadDraft,
} from './normalize.js';
import { isPlainObject, PARSE_OPTIONS, reportZodIssues } from './schema-kit.js';
import type { Path } from './yaml-positions.js';

const CONDITIONS: Record<'healthy' | 'started' | 'completed', DependencyCondition> = {
  healthy: 'service_healthy',
  started: 'service_started',
  completed: 'service_completed_successfully',
};

export function fromMayfly(root: unknown, ctx: LoadContext): TemplateParts {
  const { sink } = ctx;
  const top = MayflyTemplate.safeParse(root, PARSE_OPTIONS);
  if (!top.success) reportZodIssues(top.error.issues, [], sink);
  // Workloads are read from the raw document even when the top level has problems, so that
  // every problem is reported in one go.
  const raw = isPlainObject(root) ? root : {};
  const services = isPlainObject(raw.services) ? raw.services : {};
  const jobs = isPlainObject(raw.jobs) ? raw.jobs : {};
  if (
    isPlainObject(root) &&
    (raw.services === undefined || (isPlainObject(raw.services) && Object.keys(services).length === 0))
  ) {
    sink.error(['services'], 'no services: add at least one under "services"');
  }
  if (tooManyWorkloads(Object.keys(services).length + Object.keys(jobs).length, sink)) return emptyParts();
  const declared = isPlainObject(raw.volumes) ? Object.keys(raw.volumes) : [];
  for (const name of declared) checkVolumeName(name, ['volumes', name], sink);
  const volumes = new VolumeRegistry(declared);

  const drafts: WorkloadDraft[] = [];
  const known = new Set([...Object.keys(services), ...Object.keys(jobs)]);
  for (const [name, value] of Object.entries(services)) {
    const path = ['services', name];
    checkWorkloadName(name, path, sink);
    const parsed = MayflyService.safeParse(value, PARSE_OPTIONS);
    if (parsed.success) drafts.push(workload(name, 'service', parsed.data, path, ctx, volumes));
    else reportZodIssues(parsed.error.issues, path, sink);
  }
  for (const [name, value] of Object.entries(jobs)) {
    const path = ['jobs', name];
    checkWorkloadName(name, path, sink);
    if (Object.hasOwn(services, name)) {
      sink.error(path, `a service is already named "${name}"`, 'key');
      continue;
    }
    const parsed = MayflyJob.safeParse(value, PARSE_OPTIONS);
    if (parsed.success) drafts.push(workload(name, 'job', parsed.data, path, ctx, volumes));
    else reportZodIssues(parsed.error.issues, path, sink);
  }

  checkContainerCount(drafts, sink);
  const lifecycle = top.success ? top.data.lifecycle : undefined;
  const workloads = finishDependencies(drafts, known, sink, 'service or job');
  return {
    workloads,
    volumes: volumesWithData(
      volumes.list(),
      new Set(declared),
      top.success ? top.data.data : undefined,
      workloads,
      ['data'],
      sink,
    ),
    isolation: (top.success && top.data.isolation) || 'runc',
    lifecycle: lifecycleOf(lifecycle, ['lifecycle'], sink),
  };
}

function workload(
  name: string,
  kind: 'service' | 'job',
  spec: MayflyService | MayflyJob,
  path: Path,
  ctx: LoadContext,
  volumes: VolumeRegistry,
): WorkloadDraft {
  const { sink } = ctx;
  const at = (...rest: (string | number)[]): Path => [...path, ...rest];
  const service = kind === 'service' ? (spec as MayflyService) : undefined;

  if (spec.image !== undefined && spec.build !== undefined) {
    sink.error(at('build'), 'set either "image" or "build", not both (Mayfly tags what it builds)', 'key');
  } else if (spec.image === undefined && spec.build === undefined) {
    sink.error(path, 'needs "image" or "build"');
  }
  let build: BuildPlan | undefined;
  if (spec.build !== undefined) {
    const input = typeof spec.build === 'string' ? { context: spec.build } : spec.build;
    const contextAt =
      typeof spec.build === 'string' || spec.build.context === undefined
        ? at('build')
        : at('build', 'context');
    build = buildPlan(input, at('build'), ctx, contextAt) ?? undefined;
  }

  const envFiles =
    spec.envFile === undefined ? [] : Array.isArray(spec.envFile) ? spec.envFile : [spec.envFile];
  const env = {
    ...readEnvFiles(
      envFiles.map((file, i) => ({
        file,
        required: true,
        path: Array.isArray(spec.envFile) ? at('envFile', i) : at('envFile'),
      })),
      ctx,
    ),
    ...(spec.env ? keyValues(spec.env, at('env'), ctx) : {}),
  };

  const ports: PortPlan[] = [];
  service?.ports?.forEach((entry, i) => {
    if (typeof entry === 'number') {
      addPort(ports, { container: entry, protocol: 'tcp', http: true });
      return;
    }
    const protocol = entry.protocol ?? 'tcp';
    const http = entry.http ?? protocol === 'tcp';
    if (http && protocol === 'udp') sink.error(at('ports', i, 'http'), 'an HTTP port must use tcp');
    addPort(ports, { container: entry.port, protocol, http });
  });

  let healthcheck: ReturnType<typeof healthcheckPlan> | undefined;
  if (spec.healthcheck) {
    const { command, interval, timeout, retries, startPeriod } = spec.healthcheck;
    const probe: ProbeCommand =
      typeof command === 'string'
        ? { shell: command }
        : command[0] === 'CMD-SHELL'
          ? { shell: command.slice(1).join(' ') }
          : { exec: command[0] === 'CMD' ? command.slice(1) : command };
    if (Array.isArray(command) && command.length < 2 && (command[0] === 'CMD' || command[0] === 'CMD-SHELL'))
      sink.error(at('healthcheck', 'command'), `needs a command after "${command[0]}"`);
    healthcheck = healthcheckPlan(
      probe,
      { intervalMs: interval, timeoutMs: timeout, retries, startPeriodMs: startPeriod },
      at('healthcheck'),
      sink,
    );
  }

  const deps: DependencyRef[] = Array.isArray(spec.dependsOn)
    ? spec.dependsOn.map((dep, i) => ({
        name: dep,
        condition: 'ready',
        path: at('dependsOn', i),
        at: 'value',
        required: true,
      }))
    : Object.entries(spec.dependsOn ?? {}).map(([dep, condition]) => ({
        name: dep,
        condition: CONDITIONS[condition],
        path: at('dependsOn', dep),
        at: 'key',
        required: true,
      }));

  const mounts = (spec.volumes ?? [])
    .map((m, i) =>
      typeof m === 'string'
        ? shortMount(m, name, at('volumes', i), ctx, volumes)
        : mount(
            { source: m.source, target: m.target, readOnly: m.readOnly ?? false },
            name,
            at('volumes', i),
            ctx,
            volumes,
          ),
    )
    .filter((m): m is MountPlan => m !== null);

  if (spec.workingDir !== undefined && !spec.workingDir.startsWith('/')) {
    sink.error(at('workingDir'), 'must be an absolute path');
  }
  const replicas = service?.replicas ?? 1;
  if (service?.replicas !== undefined) checkReplicas(replicas, at('replicas'), sink);

  return {
    path,
    deps,
    ...(service?.replicas !== undefined ? { replicasPath: at('replicas') } : {}),
    spec: compact({
      name,
      kind,
      ...WORKLOAD_DEFAULTS,
      image: build ? { build } : { ref: spec.image ?? '' },
      command: argv(spec.command, at('command'), sink),
      entrypoint: argv(spec.entrypoint, at('entrypoint'), sink),
      env,
      ports,
      healthcheck,
      mounts,
      resources: compact({
        cpus: spec.resources?.cpu,
        memoryBytes: spec.resources?.memory,
        pids: spec.resources?.pids,
      }),
      replicas,
      restart: spec.restart ?? 'no',
      workingDir: spec.workingDir,
      user: spec.user,
    }),
  };
}
