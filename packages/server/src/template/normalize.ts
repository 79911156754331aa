/**
 * What both formats share once validated: turning paths, commands, mounts, env files and
 * dependencies into the plan's types, with a positioned issue for each problem.
 */
import { realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { SNAPSHOT_NAME_PATTERN } from '@mayfly/contract';
import type {
  BuildPlan,
  DependencyCondition,
  HealthcheckPlan,
  MountPlan,
  PortPlan,
  ProbeCommand,
  VolumeData,
  WorkloadSpec,
} from '../plan/plan.js';
import { type EnvFileEntry, type EnvFileProblem, parseEnvFile } from './env-file.js';
import { interpolate } from './interpolate.js';
import type { IssueSink } from './issues.js';
import { type Budget, ENTRY_COST, excerpt, TEMPLATE_LIMITS } from './limits.js';
import { readSmallFile } from './small-file.js';
import { splitShellWords } from './units.js';
import type { Path, Position } from './yaml-positions.js';

export { WORKLOAD_DEFAULTS } from '../plan/plan.js';
export type { WorkloadSpec };

/** Where an input variable is used, for errors about it. */
export interface Site {
  file: string;
  position: Position;
  path: Path;
}

/** A host path a template names, as `LoadOptions.onHostPath` reports it. */
export interface HostPathRef {
  /** `template`: another Compose file the template reads (`extends: { file }`). */
  kind: 'build-context' | 'dockerfile' | 'env-file' | 'bind' | 'template';
  /** Absolute, resolved against the template's directory; links not followed. */
  path: string;
}

/** What a format reader needs besides the parsed document. */
export interface LoadContext {
  sink: IssueSink;
  /** Absolute directory relative paths resolve against; null when the template has none. */
  dir: string | null;
  /** When set, every host path must resolve inside this directory (see `LoadOptions.root`). */
  root: string | null;
  /** Directories besides `root` that host paths may be inside (see `LoadOptions.allowedHostPaths`). */
  allowedHostPaths: readonly string[];
  /** Active Compose profiles (`*`: all of them). */
  profiles: readonly string[];
  /** The value of input `name`, or undefined when it is not set. */
  lookup(name: string, site: Site): string | undefined;
  /** Told about every host path the template names, before any check of it. */
  onHostPath?: (ref: HostPathRef) => void;
  /**
   * What loading adds to the document (env file contents, values copied from inputs, builds
   * shared between services); throws a `TemplateLimitError` past its limit.
   */
  budget: Budget;
  /** The file system as this load sees it, each path looked at once. */
  files: HostFiles;
}

/** What each format reader produces; `load.ts` adds the rest of the template. */
/** A volume of a template, and where its data comes from when the template says (`x-mayfly.data`). */
export interface VolumeSpec {
  name: string;
  data?: VolumeData;
}

export interface TemplateParts {
  workloads: WorkloadSpec[];
  volumes: VolumeSpec[];
  isolation: 'runc' | 'gvisor';
  lifecycle: { ttlMs: number | null; idleTimeoutMs: number | null; destroyOn: string[] };
}

/** Parts with nothing in them, for a template that is refused as a whole. */
export function emptyParts(): TemplateParts {
  return {
    workloads: [],
    volumes: [],
    isolation: 'runc',
    lifecycle: { ttlMs: null, idleTimeoutMs: null, destroyOn: [] },
  };
}

/**
 * The lifecycle a template asks for. `idleTimeout` and `destroyOn` are accepted (templates written
 * for later versions load) but not built yet: each is a warning, and is ignored.
 */
export function lifecycleOf(
  given:
    | { ttl?: number | undefined; idleTimeout?: number | undefined; destroyOn?: string[] | undefined }
    | undefined,
  at: Path,
  sink: IssueSink,
): TemplateParts['lifecycle'] {
  if (given?.idleTimeout !== undefined) {
    sink.warn(
      [...at, 'idleTimeout'],
      'not supported yet, ignored: an idle environment is neither slept nor destroyed (use ttl)',
      'key',
    );
  }
  if (given?.destroyOn !== undefined) {
    sink.warn(
      [...at, 'destroyOn'],
      'not supported yet, ignored: an environment ends by its ttl or when it is destroyed',
      'key',
    );
  }
  return { ttlMs: given?.ttl ?? null, idleTimeoutMs: null, destroyOn: [] };
}

/** What a snapshot may be named: short, and safe in a URL, a label and a file name. */
export const SNAPSHOT_NAME = SNAPSHOT_NAME_PATTERN;

/**
 * The template's volumes with where their data comes from (`x-mayfly.data`, or `data` in
 * mayfly.yaml): each key a named volume of the template, each given exactly one of `seededBy`
 * (a job of the template) or `snapshot` (a snapshot's name).
 */
export function volumesWithData(
  volumes: readonly { name: string }[],
  declared: ReadonlySet<string>,
  given: Record<string, { seededBy?: string | undefined; snapshot?: string | undefined }> | undefined,
  workloads: readonly WorkloadSpec[],
  at: Path,
  sink: IssueSink,
): VolumeSpec[] {
  const data = new Map<string, VolumeData>();
  for (const [volume, source] of Object.entries(given ?? {})) {
    const path = [...at, volume];
    if (!declared.has(volume)) {
      sink.error(
        path,
        `"${volume}" is not a named volume of this template (declare it under volumes:)`,
        'key',
      );
      continue;
    }
    if ((source.seededBy === undefined) === (source.snapshot === undefined)) {
      sink.error(path, "give exactly one of seededBy (a job) or snapshot (a snapshot's name)");
      continue;
    }
    if (source.seededBy !== undefined) {
      const job = workloads.find((w) => w.name === source.seededBy);
      if (!job) sink.error([...path, 'seededBy'], `there is no job "${source.seededBy}" in this template`);
      else if (job.kind !== 'job')
        sink.error(
          [...path, 'seededBy'],
          `"${job.name}" is a service, not a job: only a run-once job can seed a volume`,
        );
      else data.set(volume, { seededBy: job.name });
    } else if (!SNAPSHOT_NAME.test(source.snapshot!)) {
      sink.error(
        [...path, 'snapshot'],
        'a snapshot name is 1 to 63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
      );
    } else data.set(volume, { snapshot: source.snapshot! });
  }
  return volumes.map((v) => {
    const source = data.get(v.name);
    return source ? { name: v.name, data: source } : { name: v.name };
  });
}

/** True (with an error) when a template has more workloads than `TEMPLATE_LIMITS.maxWorkloads`. */
export function tooManyWorkloads(count: number, sink: IssueSink): boolean {
  const max = TEMPLATE_LIMITS.maxWorkloads;
  if (count <= max) return false;
  sink.error(['services'], `${count} services and jobs: a template may have at most ${max}`, 'key');
  return true;
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
  /** Where the replicas are written, when they are. */
  replicasPath?: Path;
}

/** An error when a service asks for more replicas than `TEMPLATE_LIMITS.maxReplicas`. */
export function checkReplicas(replicas: number, path: Path, sink: IssueSink): void {
  const max = TEMPLATE_LIMITS.maxReplicas;
  if (replicas > max) sink.error(path, `${replicas} replicas: a service may have at most ${max}`);
}

/**
 * An error when the workloads add up to more containers than `TEMPLATE_LIMITS.maxContainers`
 * (replicas of services, one per job), at the workload that goes past the limit. Replicas past
 * their own limit count at that limit: they have their own error.
 */
export function checkContainerCount(drafts: readonly WorkloadDraft[], sink: IssueSink): void {
  const max = TEMPLATE_LIMITS.maxContainers;
  const count = (d: WorkloadDraft) =>
    d.spec.kind === 'job' ? 1 : Math.min(d.spec.replicas, TEMPLATE_LIMITS.maxReplicas);
  const total = drafts.reduce((sum, d) => sum + count(d), 0);
  if (total <= max) return;
  let sum = 0;
  let past = drafts[0]!;
  for (const draft of drafts) {
    sum += count(draft);
    past = draft;
    if (sum > max) break;
  }
  sink.error(
    past.replicasPath ?? past.path,
    `${total} containers in all (the replicas of every service, and one per job): a template may have at most ${max}`,
    past.replicasPath ? 'value' : 'key',
  );
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

/** An env file as read from disk: its entries, or why it cannot be used. */
type EnvFileRead =
  | { entries: EnvFileEntry[]; problems: EnvFileProblem[]; size: number }
  | { missing: true }
  | { refused: string };

/**
 * The host files one template load looks at, each looked at once however many services name it
 * (a template may name the same env file or build context thousands of times).
 */
export class HostFiles {
  private readonly kinds = new Map<string, 'file' | 'directory' | 'other' | 'missing'>();
  private readonly realPaths = new Map<string, string>();
  private readonly envFiles = new Map<string, EnvFileRead>();

  kind(path: string): 'file' | 'directory' | 'other' | 'missing' {
    let kind = this.kinds.get(path);
    if (kind === undefined) {
      try {
        const stats = statSync(path);
        kind = stats.isFile() ? 'file' : stats.isDirectory() ? 'directory' : 'other';
      } catch {
        kind = 'missing';
      }
      this.kinds.set(path, kind);
    }
    return kind;
  }

  /** `path` with links followed, or as is when it does not exist. */
  realPath(path: string): string {
    let real = this.realPaths.get(path);
    if (real === undefined) {
      try {
        real = realpathSync(path);
      } catch {
        real = path;
      }
      this.realPaths.set(path, real);
    }
    return real;
  }

  /**
   * Reads and parses an env file, refusing anything but a regular file of at most
   * `TEMPLATE_LIMITS.maxEnvFileBytes`. Opened without blocking, and checked again once open, so
   * that a FIFO or a device put in its place cannot stall the server or feed it without end.
   */
  envFile(path: string): EnvFileRead {
    let read = this.envFiles.get(path);
    if (read === undefined) {
      read = readEnvFileAt(path);
      this.envFiles.set(path, read);
    }
    return read;
  }
}

function readEnvFileAt(path: string): EnvFileRead {
  const read = readSmallFile(path, TEMPLATE_LIMITS.maxEnvFileBytes);
  return 'text' in read ? { ...parseEnvFile(read.text), size: read.bytes } : read;
}

/**
 * The absolute host path of a path written in the template, or null (with an error) when there is
 * no directory to resolve it from, or when it leaves `ctx.root` (and every allowed host path).
 * Symbolic links are followed for that check: a link in a repository must not reach the server's
 * own files. `ctx.onHostPath` hears of the path first, whatever the check finds.
 */
export function hostPath(
  written: string,
  path: Path,
  ctx: LoadContext,
  kind: HostPathRef['kind'],
): string | null {
  if (!isAbsolute(written) && ctx.dir === null) {
    ctx.sink.error(
      path,
      `relative path "${excerpt(written, 200)}" needs the template's directory, and none was given`,
    );
    return null;
  }
  const absolute = ctx.dir === null ? resolve(written) : resolve(ctx.dir, written);
  ctx.onHostPath?.({ kind, path: absolute });
  if (!mayUse(absolute, ctx)) {
    ctx.sink.error(path, `path "${excerpt(written, 200)}" is outside the directory templates may use`);
    return null;
  }
  return absolute;
}

/** True when there is no root, or `absolute` is inside the root or one of the allowed host paths. */
function mayUse(absolute: string, ctx: LoadContext): boolean {
  if (ctx.root === null) return true;
  return [ctx.root, ...ctx.allowedHostPaths].some((dir) => isInside(dir, absolute, ctx.files));
}

function isInside(root: string, path: string, files: HostFiles): boolean {
  const rel = relative(files.realPath(resolve(root)), files.realPath(path));
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
  const dockerfile = input.dockerfile ?? 'Dockerfile';
  const dockerfileAt = input.dockerfile === undefined ? contextPath : [...path, 'dockerfile'];
  const context = hostPath(contextText, contextPath, ctx, 'build-context');
  // Reported even when the context is refused: the CLI wants every file the template names.
  const dockerfilePath =
    ctx.dir === null && !isAbsolute(contextText) ? null : resolve(ctx.dir ?? '/', contextText, dockerfile);
  if (dockerfilePath !== null) ctx.onHostPath?.({ kind: 'dockerfile', path: dockerfilePath });
  if (context === null || dockerfilePath === null) return null;
  // Checked here so the problem is reported with its position, not later by the build step.
  if (ctx.files.kind(context) !== 'directory') {
    ctx.sink.error(contextPath, `build context "${excerpt(contextText, 200)}" is not a directory`);
    return null;
  }
  if (!mayUse(dockerfilePath, ctx)) {
    ctx.sink.error(
      dockerfileAt,
      `path "${excerpt(dockerfile, 200)}" is outside the directory templates may use`,
    );
    return null;
  }
  if (ctx.files.kind(dockerfilePath) !== 'file') {
    ctx.sink.error(
      dockerfileAt,
      `Dockerfile "${excerpt(dockerfile, 200)}" not found in the build context "${excerpt(contextText, 200)}"`,
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
  const set = (key: string, value: string) =>
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  const fromInput = (key: string, at: Path) => {
    const value = ctx.lookup(key, { file: ctx.sink.file, position: ctx.sink.positions.locate(at), path: at });
    if (value === undefined) return;
    // An input is written once by the caller but copied here for every key that names it.
    ctx.budget.spend(ENTRY_COST + key.length + value.length, at);
    set(key, value);
  };
  if (Array.isArray(entries)) {
    entries.forEach((entry, i) => {
      const eq = entry.indexOf('=');
      const key = eq < 0 ? entry : entry.slice(0, eq);
      if (key.trim() === '' || /\s/.test(key)) {
        ctx.sink.error([...path, i], `expected "KEY=value" or "KEY", got ${JSON.stringify(excerpt(entry))}`);
      } else if (eq < 0) {
        fromInput(key, [...path, i]);
      } else {
        set(key, entry.slice(eq + 1));
      }
    });
    return out;
  }
  for (const [key, value] of Object.entries(entries)) {
    if (value === null) fromInput(key, [...path, key]);
    else set(key, value);
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
  command: ProbeCommand,
  timings: { intervalMs?: number; timeoutMs?: number; retries?: number; startPeriodMs?: number },
  path: Path,
  sink: IssueSink,
): HealthcheckPlan {
  const plan = { command, ...HEALTHCHECK_DEFAULTS, ...compact(timings) };
  if (plan.intervalMs <= 0) sink.error([...path, 'interval'], 'must be longer than 0');
  if (plan.timeoutMs <= 0) sink.error([...path, 'timeout'], 'must be longer than 0');
  return plan;
}

/** The ports of each list, by container port and protocol, so that adding one is constant time. */
const portIndex = new WeakMap<PortPlan[], Map<string, PortPlan>>();

/** Adds a port unless it is already there; an http flag, once set, stays. */
export function addPort(ports: PortPlan[], port: PortPlan): void {
  let index = portIndex.get(ports);
  if (!index) {
    index = new Map(ports.map((p) => [`${p.container}/${p.protocol}`, p]));
    portIndex.set(ports, index);
  }
  const key = `${port.container}/${port.protocol}`;
  const existing = index.get(key);
  if (existing) {
    existing.http ||= port.http;
  } else {
    ports.push(port);
    index.set(key, port);
  }
}

/** Named volumes the template declares, plus the anonymous ones its mounts need. */
export class VolumeRegistry {
  private readonly anonymous: string[] = [];
  private readonly named: ReadonlySet<string>;
  private readonly taken: Set<string>;
  /** For each base name, the suffix to try next: names are only ever added, so it never goes back. */
  private readonly nextSuffix = new Map<string, number>();

  constructor(private readonly declared: readonly string[]) {
    this.named = new Set(declared);
    this.taken = new Set(declared);
  }

  has(name: string): boolean {
    return this.named.has(name);
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
    let n = this.nextSuffix.get(base) ?? 2;
    if (this.taken.has(name)) {
      do name = `${base}-${n++}`;
      while (this.taken.has(name));
    }
    this.nextSuffix.set(base, n);
    this.taken.add(name);
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
    const host = hostPath(source, path, ctx, 'bind');
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

/**
 * Reads env files in order (later ones win), interpolating their values like the template's.
 * A file that is not a regular file, or is larger than `TEMPLATE_LIMITS.maxEnvFileBytes`, is an
 * error at the place that names it; what the files add up to is charged to `ctx.budget`.
 */
export function readEnvFiles(refs: EnvFileRef[], ctx: LoadContext): Record<string, string> {
  const out: Record<string, string> = {};
  const set = (key: string, value: string) =>
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  for (const ref of refs) {
    const file = hostPath(ref.file, ref.path, ctx, 'env-file');
    if (file === null) continue;
    const read = ctx.files.envFile(file);
    const shown = excerpt(ref.file, 200);
    if ('missing' in read) {
      if (ref.required) ctx.sink.error(ref.path, `env file "${shown}" not found`);
      continue;
    }
    if ('refused' in read) {
      ctx.sink.error(ref.path, `env file "${shown}" ${read.refused}`);
      continue;
    }
    // Each reference copies the whole file into a service's environment.
    ctx.budget.spend(read.size + read.entries.length * ENTRY_COST, ref.path);
    for (const p of read.problems)
      ctx.sink.errorAt(ref.file, { line: p.line, column: p.column }, [], p.message);
    for (const entry of read.entries) {
      const site: Site = {
        file: ref.file,
        position: { line: entry.line, column: entry.column },
        path: [entry.key],
      };
      if (entry.value === null) {
        const value = ctx.lookup(entry.key, site);
        if (value === undefined) continue;
        ctx.budget.spend(value.length, ref.path);
        set(entry.key, value);
        continue;
      }
      if (!entry.interpolate) {
        set(entry.key, entry.value);
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
      for (const w of result.warnings) {
        ctx.sink.warnAt(
          ref.file,
          { line: entry.line, column: entry.column + w.index },
          [entry.key],
          w.message,
        );
      }
      if (result.value !== entry.value) ctx.budget.spend(result.value.length, ref.path);
      set(entry.key, result.value);
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
    const seen = new Set<string>();
    for (const ref of draft.deps) {
      if (seen.has(ref.name)) continue;
      const target = byName.get(ref.name);
      if (!target) {
        if (ref.required && !known.has(ref.name))
          sink.error(ref.path, `unknown ${noun} "${excerpt(ref.name, 100)}"`, ref.at);
        continue;
      }
      seen.add(ref.name);
      const isJob = target.spec.kind === 'job';
      const condition: DependencyCondition =
        ref.condition !== 'ready'
          ? ref.condition
          : isJob
            ? 'service_completed_successfully'
            : target.spec.healthcheck && target.spec.healthcheck !== 'disabled'
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

/** Names a cycle lists before it is shortened: a chain of 10 000 services makes a long message. */
const CYCLE_NAMES_SHOWN = 10;

/**
 * Depth-first search for back edges, with an explicit stack: a template may chain thousands of
 * services, deeper than the call stack goes.
 */
function reportCycles(
  drafts: WorkloadDraft[],
  edges: Map<string, { ref: DependencyRef }[]>,
  sink: IssueSink,
): void {
  const state = new Map<string, 'visiting' | 'done'>();
  /** The path being explored, and where each name of it is on it. */
  const stack: { name: string; next: number }[] = [];
  const onStack = new Map<string, number>();
  const enter = (name: string) => {
    state.set(name, 'visiting');
    onStack.set(name, stack.length);
    stack.push({ name, next: 0 });
  };
  for (const draft of drafts) {
    if (state.has(draft.spec.name)) continue;
    enter(draft.spec.name);
    while (stack.length > 0) {
      const top = stack.at(-1)!;
      const out = edges.get(top.name) ?? [];
      if (top.next >= out.length) {
        stack.pop();
        onStack.delete(top.name);
        state.set(top.name, 'done');
        continue;
      }
      const { ref } = out[top.next++]!;
      const next = state.get(ref.name);
      if (next === 'visiting') {
        // Only the names shown are copied: a long chain may have many edges back into it.
        const start = onStack.get(ref.name)!;
        const length = stack.length - start;
        const shown = stack.slice(start, start + Math.min(length, CYCLE_NAMES_SHOWN)).map((s) => s.name);
        if (length > CYCLE_NAMES_SHOWN) shown.push(`… (${length - CYCLE_NAMES_SHOWN} more)`);
        sink.error(ref.path, `dependency cycle: ${[...shown, ref.name].join(' → ')}`, ref.at);
      } else if (next === undefined) {
        enter(ref.name);
      }
    }
  }
}
