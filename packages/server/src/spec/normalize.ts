/**
 * What both formats share once validated: turning paths, commands, mounts, env files and
 * dependencies into the runtime's plan types, with a positioned issue for each problem.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import type {
  BuildPlan,
  DependencyCondition,
  HealthcheckPlan,
  MountPlan,
  PortPlan,
  WorkloadPlan,
} from '../runtime/runtime.js';
import { parseEnvFile } from './env-file.js';
import { interpolate } from './interpolate.js';
import type { IssueSink } from './issues.js';
import { splitShellWords } from './units.js';
import type { Path, Position } from './yaml-positions.js';

/** A workload as a template describes it: a {@link WorkloadPlan} before hashing. */
export type WorkloadSpec = Omit<WorkloadPlan, 'specHash'>;

/** Where an input variable is used, for errors about it. */
export interface Site {
  file: string;
  position: Position;
  path: Path;
}

/** What a format reader needs besides the parsed document. */
export interface LoadContext {
  sink: IssueSink;
  /** Absolute directory relative paths resolve against; null when the template has none. */
  dir: string | null;
  /** When set, every host path must resolve inside this directory (see `LoadOptions.root`). */
  root: string | null;
  /** The value of input `name`, or undefined when it is not set. */
  lookup(name: string, site: Site): string | undefined;
}

/** What each format reader produces; `load.ts` adds the rest of the template. */
export interface TemplateParts {
  workloads: WorkloadSpec[];
  volumes: { name: string }[];
  isolation: 'runc' | 'gvisor';
  lifecycle: { ttlMs: number | null; idleTimeoutMs: number | null; destroyOn: string[] };
}

/** A dependency as written; `ready` (mayfly.yaml's list form) is resolved once every workload is known. */
export interface DependencyRef {
  name: string;
  condition: DependencyCondition | 'ready';
  path: Path;
  at: 'key' | 'value';
  /** Compose's `required: false`: a dependency on a service that does not exist is dropped. */
  required: boolean;
}

export interface WorkloadDraft {
  spec: Omit<WorkloadSpec, 'dependsOn'>;
  deps: DependencyRef[];
  path: Path;
}

/** Health check timings when the template gives none. */
export const HEALTHCHECK_DEFAULTS = {
  intervalMs: 5_000,
  timeoutMs: 5_000,
  retries: 3,
  startPeriodMs: 0,
} as const;

/** Workload names become DNS labels (`<service>--<env>.<domain>`, container host names). */
export function checkWorkloadName(name: string, path: Path, sink: IssueSink): boolean {
  const valid = name.length <= 63 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name) && !name.includes('--');
  if (!valid) {
    sink.error(
      path,
      `invalid name "${name}": use lowercase letters, digits and single hyphens, not at either end (it becomes a DNS label)`,
      'key',
    );
  }
  return valid;
}

/** Volume names as Docker accepts them. */
export function checkVolumeName(name: string, path: Path, sink: IssueSink): boolean {
  const valid = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name) && name.length <= 63;
  if (!valid) sink.error(path, `invalid volume name "${name}": use letters, digits, "_", "." and "-"`, 'key');
  return valid;
}

/** Drops keys whose value is undefined, so equal plans have equal shapes. */
export function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

const isDirectory = (path: string) => existsSync(path) && statSync(path).isDirectory();
const isFile = (path: string) => existsSync(path) && statSync(path).isFile();

/**
 * The absolute host path of a path written in the template, or null (with an error) when there is
 * no directory to resolve it from, or when it leaves `ctx.root`. Symbolic links are followed for
 * that check: a link in a repository must not reach the server's own files.
 */
export function hostPath(written: string, path: Path, ctx: LoadContext): string | null {
  if (!isAbsolute(written) && ctx.dir === null) {
    ctx.sink.error(path, `relative path "${written}" needs the template's directory, and none was given`);
    return null;
  }
  const absolute = ctx.dir === null ? resolve(written) : resolve(ctx.dir, written);
  if (ctx.root !== null && !isInside(ctx.root, absolute)) {
    ctx.sink.error(path, `path "${written}" is outside the directory templates may use`);
    return null;
  }
  return absolute;
}

function isInside(root: string, path: string): boolean {
  const real = (p: string) => (existsSync(p) ? realpathSync(p) : p);
  const rel = relative(real(resolve(root)), real(path));
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

export interface BuildInput {
  context?: string;
  dockerfile?: string;
  args?: Record<string, string | null> | string[];
  target?: string;
}

/** `path` is where `build` is; `contextPath` where its context is written (the same for `build: ./dir`). */
export function buildPlan(
  input: BuildInput,
  path: Path,
  ctx: LoadContext,
  contextPath: Path = path,
): BuildPlan | null {
  const contextText = input.context ?? '.';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(contextText) || contextText.startsWith('git@')) {
    ctx.sink.error(contextPath, 'remote build contexts are not supported: use a directory of the repository');
    return null;
  }
  const context = hostPath(contextText, contextPath, ctx);
  if (context === null) return null;
  // Checked here so the problem is reported with its position, not later by the build step.
  if (!isDirectory(context)) {
    ctx.sink.error(contextPath, `build context "${contextText}" is not a directory`);
    return null;
  }
  const dockerfile = input.dockerfile ?? 'Dockerfile';
  const dockerfileAt = input.dockerfile === undefined ? contextPath : [...path, 'dockerfile'];
  if (ctx.root !== null && !isInside(ctx.root, resolve(context, dockerfile))) {
    ctx.sink.error(dockerfileAt, `path "${dockerfile}" is outside the directory templates may use`);
    return null;
  }
  if (!isFile(resolve(context, dockerfile))) {
    ctx.sink.error(
      dockerfileAt,
      `Dockerfile "${dockerfile}" not found in the build context "${contextText}"`,
    );
  }
  const args = input.args ? keyValues(input.args, [...path, 'args'], ctx) : {};
  return compact({
    context,
    dockerfile: relative(context, resolve(context, dockerfile)),
    args,
    target: input.target,
  });
}

/**
 * A map (`{K: v}`) or a Compose list (`["K=v", "K"]`) of variables. A key without a value takes
 * the input of that name, and is left out when there is none (as Compose does with its shell).
 */
export function keyValues(
  entries: Record<string, string | null> | string[],
  path: Path,
  ctx: LoadContext,
): Record<string, string> {
  const out: Record<string, string> = {};
  const fromInput = (key: string, at: Path) => {
    const value = ctx.lookup(key, { file: ctx.sink.file, position: ctx.sink.positions.locate(at), path: at });
    if (value !== undefined) out[key] = value;
  };
  if (Array.isArray(entries)) {
    entries.forEach((entry, i) => {
      const eq = entry.indexOf('=');
      const key = eq < 0 ? entry : entry.slice(0, eq);
      if (key.trim() === '' || /\s/.test(key)) {
        ctx.sink.error([...path, i], `expected "KEY=value" or "KEY", got ${JSON.stringify(entry)}`);
      } else if (eq < 0) {
        fromInput(key, [...path, i]);
      } else {
        out[key] = entry.slice(eq + 1);
      }
    });
    return out;
  }
  for (const [key, value] of Object.entries(entries)) {
    if (value === null) fromInput(key, [...path, key]);
    else out[key] = value;
  }
  return out;
}

/** `command` / `entrypoint`: a list as is, a string split into words like a shell. */
export function argv(
  value: string | string[] | null | undefined,
  path: Path,
  sink: IssueSink,
): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) return value;
  const split = splitShellWords(value);
  if ('error' in split) {
    sink.error(path, `cannot split into words: ${split.error}`);
    return undefined;
  }
  return split.words;
}

/** Health check timings with the defaults filled in. */
export function healthcheckPlan(
  test: string[],
  timings: { intervalMs?: number; timeoutMs?: number; retries?: number; startPeriodMs?: number },
  path: Path,
  sink: IssueSink,
): HealthcheckPlan {
  const plan = { test, ...HEALTHCHECK_DEFAULTS, ...compact(timings) };
  if (plan.intervalMs <= 0) sink.error([...path, 'interval'], 'must be longer than 0');
  if (plan.timeoutMs <= 0) sink.error([...path, 'timeout'], 'must be longer than 0');
  return plan;
}

/** Adds a port unless it is already there; an http flag, once set, stays. */
export function addPort(ports: PortPlan[], port: PortPlan): void {
  const existing = ports.find((p) => p.container === port.container && p.protocol === port.protocol);
  if (existing) existing.http ||= port.http;
  else ports.push(port);
}

/** Named volumes the template declares, plus the anonymous ones its mounts need. */
export class VolumeRegistry {
  private readonly anonymous: string[] = [];

  constructor(private readonly declared: readonly string[]) {}

  has(name: string): boolean {
    return this.declared.includes(name);
  }

  /** A stable name for an anonymous volume of `workload` at `target`: `db-var-lib-postgresql-data`. */
  allocate(workload: string, target: string): string {
    const base = `${workload}-${
      target
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, '-')
        .replace(/^-|-$/g, '') || 'data'
    }`;
    let name = base;
    for (let n = 2; this.declared.includes(name) || this.anonymous.includes(name); n++) name = `${base}-${n}`;
    this.anonymous.push(name);
    return name;
  }

  list(): { name: string }[] {
    return [...this.declared, ...this.anonymous].map((name) => ({ name }));
  }
}

const IGNORED_MOUNT_OPTIONS = new Set([
  'rw',
  'z',
  'Z',
  'nocopy',
  'cached',
  'delegated',
  'consistent',
  'shared',
  'rshared',
  'slave',
  'rslave',
  'private',
  'rprivate',
]);

/** A mount in short syntax: `name:/path[:ro]`, `./dir:/path[:ro]`, `/abs:/path`, or `/path` (anonymous). */
export function shortMount(
  spec: string,
  workload: string,
  path: Path,
  ctx: LoadContext,
  volumes: VolumeRegistry,
): MountPlan | null {
  const parts = spec.split(':');
  if (parts.length > 3) {
    ctx.sink.error(path, `invalid volume "${spec}": expected "source:target[:ro]" or "target"`);
    return null;
  }
  const [first = '', second, mode] = parts;
  let readOnly = false;
  for (const option of mode?.split(',') ?? []) {
    if (option === 'ro') readOnly = true;
    else if (!IGNORED_MOUNT_OPTIONS.has(option)) {
      ctx.sink.error(path, `unknown mount option "${option}": expected ro or rw`);
      return null;
    }
  }
  return second === undefined
    ? mount({ target: first, readOnly }, workload, path, ctx, volumes)
    : mount({ source: first, target: second, readOnly }, workload, path, ctx, volumes);
}

/**
 * A mount from its parts: no source is an anonymous volume, a source that looks like a path
 * (`.`, `/`, `~`) is a bind, anything else a named volume that must be declared.
 */
export function mount(
  input: { source?: string; target: string; readOnly: boolean; type?: 'volume' | 'bind' },
  workload: string,
  path: Path,
  ctx: LoadContext,
  volumes: VolumeRegistry,
): MountPlan | null {
  const { target, readOnly } = input;
  if (!target.startsWith('/')) {
    ctx.sink.error(path, `mount target "${target}" must be an absolute path`);
    return null;
  }
  const source = input.source ?? '';
  if (source === '') {
    if (input.type === 'bind') {
      ctx.sink.error(path, 'a bind mount needs a source');
      return null;
    }
    return { source: volumes.allocate(workload, target), target, type: 'volume', readOnly };
  }
  const looksLikePath = /^[./~]/.test(source);
  if (input.type === 'bind' || (input.type === undefined && looksLikePath)) {
    if (source.startsWith('~')) {
      ctx.sink.error(
        path,
        `home-relative path "${source}" is not supported: use a path relative to the template`,
      );
      return null;
    }
    if (isAbsolute(source) && ctx.root === null) {
      ctx.sink.warn(
        path,
        `bind mount of host path "${source}": the environment depends on this machine's files`,
      );
    }
    const host = hostPath(source, path, ctx);
    return host === null ? null : { source: host, target, type: 'bind', readOnly };
  }
  if (!volumes.has(source)) {
    ctx.sink.error(path, `volume "${source}" is not declared under the top-level "volumes"`);
    return null;
  }
  return { source, target, type: 'volume', readOnly };
}

/** One `env_file` / `envFile` entry. */
export interface EnvFileRef {
  file: string;
  required: boolean;
  path: Path;
}

/** Reads env files in order (later ones win), interpolating their values like the template's. */
export function readEnvFiles(refs: EnvFileRef[], ctx: LoadContext): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ref of refs) {
    const file = hostPath(ref.file, ref.path, ctx);
    if (file === null) continue;
    if (!isFile(file)) {
      if (ref.required) ctx.sink.error(ref.path, `env file "${ref.file}" not found`);
      continue;
    }
    const { entries, problems } = parseEnvFile(readFileSync(file, 'utf8'));
    for (const p of problems) ctx.sink.errorAt(ref.file, { line: p.line, column: p.column }, [], p.message);
    for (const entry of entries) {
      const site: Site = {
        file: ref.file,
        position: { line: entry.line, column: entry.column },
        path: [entry.key],
      };
      if (entry.value === null) {
        const value = ctx.lookup(entry.key, site);
        if (value !== undefined) out[entry.key] = value;
        continue;
      }
      if (!entry.interpolate) {
        out[entry.key] = entry.value;
        continue;
      }
      const result = interpolate(entry.value, (name) => ctx.lookup(name, site));
      for (const e of result.errors) {
        ctx.sink.errorAt(
          ref.file,
          { line: entry.line, column: entry.column + e.index },
          [entry.key],
          e.message,
        );
      }
      out[entry.key] = result.value;
    }
  }
  return out;
}

/**
 * Resolves dependency conditions now that every workload is known, reports unknown targets,
 * impossible conditions and cycles, and returns the finished workloads in document order.
 * `known` holds every name written in the template, including workloads that failed validation
 * (a dependency on those is not reported again).
 */
export function finishDependencies(
  drafts: WorkloadDraft[],
  known: ReadonlySet<string>,
  sink: IssueSink,
  noun: string,
): WorkloadSpec[] {
  const byName = new Map(drafts.map((d) => [d.spec.name, d]));
  const edges = new Map<string, { ref: DependencyRef; condition: DependencyCondition }[]>();
  for (const draft of drafts) {
    const resolved: { ref: DependencyRef; condition: DependencyCondition }[] = [];
    for (const ref of draft.deps) {
      if (resolved.some((r) => r.ref.name === ref.name)) continue;
      const target = byName.get(ref.name);
      if (!target) {
        if (ref.required && !known.has(ref.name))
          sink.error(ref.path, `unknown ${noun} "${ref.name}"`, ref.at);
        continue;
      }
      const isJob = target.spec.kind === 'job';
      const condition: DependencyCondition =
        ref.condition !== 'ready'
          ? ref.condition
          : isJob
            ? 'service_completed_successfully'
            : target.spec.healthcheck
              ? 'service_healthy'
              : 'service_started';
      if (condition === 'service_healthy' && isJob) {
        sink.error(
          ref.path,
          `"${ref.name}" is a job and never becomes healthy: wait for it to complete`,
          ref.at,
        );
      } else if (condition === 'service_completed_successfully' && !isJob) {
        sink.error(
          ref.path,
          `"${ref.name}" is a service and never completes: wait for it to be healthy or started`,
          ref.at,
        );
      } else if (condition === 'service_healthy' && !target.spec.healthcheck) {
        sink.warn(
          ref.path,
          `"${ref.name}" has no healthcheck here: this waits for its image's own HEALTHCHECK`,
          ref.at,
        );
      }
      resolved.push({ ref, condition });
    }
    edges.set(draft.spec.name, resolved);
  }
  reportCycles(drafts, edges, sink);
  return drafts.map((draft) => {
    const dependsOn = (edges.get(draft.spec.name) ?? [])
      .map((e) => ({ name: e.ref.name, condition: e.condition }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { ...draft.spec, dependsOn };
  });
}

function reportCycles(
  drafts: WorkloadDraft[],
  edges: Map<string, { ref: DependencyRef }[]>,
  sink: IssueSink,
): void {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string) => {
    state.set(name, 'visiting');
    stack.push(name);
    for (const { ref } of edges.get(name) ?? []) {
      const next = state.get(ref.name);
      if (next === 'visiting') {
        const cycle = [...stack.slice(stack.indexOf(ref.name)), ref.name].join(' → ');
        sink.error(ref.path, `dependency cycle: ${cycle}`, ref.at);
      } else if (next === undefined) {
        visit(ref.name);
      }
    }
    stack.pop();
    state.set(name, 'done');
  };
  for (const draft of drafts) if (!state.has(draft.spec.name)) visit(draft.spec.name);
}
