/**
 * Compose's `extends` and its merging of several files (`-f compose.yaml -f compose.ci.yaml`),
 * done as `docker compose` does them (compose-go's loader): on each file's walked, interpolated
 * value, before anything is validated.
 *
 * - `extends: NAME` or `extends: { service: NAME, file: OTHER.yaml }`: the service starts from
 *   NAME's keys (itself resolved first: chains work, a cycle is an error naming it), and its own
 *   keys win by the merge rules below. Relative paths of a service taken from another file (build
 *   context, env files, bind sources) are rewritten to point where they pointed from that file's
 *   folder; that file is a host path like any other (inside `root`, reported to `onHostPath`).
 *   Same-file `extends` looks in the file that says it, as Compose does.
 * - Override files: merged in order onto the first, later ones winning; their relative paths are
 *   relative to the first file's folder (Compose's project directory), so nothing is rewritten.
 *
 * Merge rules (https://docs.docker.com/reference/compose-file/merge/, and compose-go's
 * `override/merge.go` and `uncity.go` for what the page leaves out): mappings merge key by key;
 * sequences are appended, then entries that share a unique key (volumes and secrets and configs
 * by target, env files by path, variables by name…) keep the later one, where the first stood;
 * `environment`, `labels`, `build.args`, `extra_hosts` merge whatever their list or map form;
 * `command`, `entrypoint`, `healthcheck.test` and each `ulimits` entry are replaced; `depends_on`
 * merges by service name (a list entry is `condition: service_started`); `build: ./dir` is
 * `build: { context: ./dir }`; an override of null keeps what was there. `!reset` and
 * `!override` tags are not read.
 *
 * Every issue keeps the file, line and column where its value was written: the merged document
 * carries an {@link Origin} tree, and {@link MergedIssueSink} places issues through it. The work
 * is bounded: chains, files and total bytes have limits ({@link MERGE_LIMITS}), and the merged
 * document is counted against `TEMPLATE_LIMITS.maxNodes` and `maxChars` as it is built.
 */
import { isAbsolute, posix, relative, resolve } from 'node:path';
import { LineCounter } from 'yaml';
import { IssueSink } from './issues.js';
import { excerpt, TEMPLATE_LIMITS, TEMPLATE_MAX_BYTES, TemplateLimitError } from './limits.js';
import { hostPath, type LoadContext } from './normalize.js';
import { describeValue, isPlainObject } from './schema-kit.js';
import { readSmallFile } from './small-file.js';
import { type Path, type Position, SourcePositions } from './yaml-positions.js';

/** Bounds on what `extends` and override files may make a template read and build. */
export const MERGE_LIMITS = {
  /** Override files besides the template (`-f` given more than once). */
  maxOverrides: 10,
  /** Services extending one another in one chain (`a` extends `b` extends `c`…). */
  maxExtendsDepth: 10,
  /** Distinct files read for `extends: { file }`. */
  maxExtendsFiles: 20,
  /** Bytes of every file read for one template: itself, its overrides, the files it extends. */
  maxTotalBytes: 2 * TEMPLATE_MAX_BYTES,
} as const;

/** One Compose file as walked: its value, where each path of it is, and its folder. */
export interface ComposeDocument {
  /** The name issues give it. */
  file: string;
  value: unknown;
  positions: SourcePositions;
  /**
   * Where relative paths written in it resolve: the first file's folder for the template and its
   * overrides (Compose's project directory), the file's own folder for a file named by `extends`.
   */
  dir: string | null;
}

/**
 * Where a value of the merged document was written: `path` in `doc`, unless `children` says
 * otherwise for a child. A child without an entry sits at `path` + its key in the same `doc`.
 */
export interface Origin {
  doc: ComposeDocument;
  path: Path;
  children?: Map<string | number, Origin>;
}

/** A value with the origin of it and of everything in it. */
interface Tracked {
  value: unknown;
  origin: Origin;
}

function childOrigin(origin: Origin, segment: string | number): Origin {
  return origin.children?.get(segment) ?? { doc: origin.doc, path: [...origin.path, segment] };
}

/** The file and position where `path` of a merged document was written. */
export function locateOrigin(
  root: Origin,
  path: Path,
  at: 'key' | 'value' = 'value',
): { file: string; position: Position } {
  let origin = root;
  let i = 0;
  for (; i < path.length; i++) {
    const next = origin.children?.get(path[i]!);
    if (!next) break;
    origin = next;
  }
  const full = i === path.length ? origin.path : [...origin.path, ...path.slice(i)];
  return { file: origin.doc.file, position: origin.doc.positions.locate(full, at) };
}

/** The positions of a merged document: each path where it was written, in whichever file. */
export class MergedPositions extends SourcePositions {
  /** Set once the document is merged; until then, everything is in the template itself. */
  constructor(public origin: Origin) {
    super(new LineCounter());
  }

  override locate(path: Path, at: 'key' | 'value' = 'value'): Position {
    return locateOrigin(this.origin, path, at).position;
  }

  where(path: Path, at: 'key' | 'value' = 'value'): { file: string; position: Position } {
    return locateOrigin(this.origin, path, at);
  }
}

/** An {@link IssueSink} whose issues name the file each value of a merged document came from. */
export class MergedIssueSink extends IssueSink {
  constructor(
    file: string,
    readonly merged: MergedPositions,
  ) {
    super(file, merged);
  }

  override error(path: Path, message: string, at: 'key' | 'value' = 'value'): void {
    const { file, position } = this.merged.where(path, at);
    this.errorAt(file, position, path, message);
  }

  override warn(path: Path, message: string, at: 'key' | 'value' = 'value'): void {
    const { file, position } = this.merged.where(path, at);
    this.warnAt(file, position, path, message);
  }
}

/** True when the template needs {@link mergeCompose}: override files, or a service that extends another. */
export function needsMerge(root: unknown, overrides: number): boolean {
  if (overrides > 0) return true;
  if (!isPlainObject(root) || !isPlainObject(root.services)) return false;
  const services = root.services;
  return Object.keys(services).some((name) => {
    const service = services[name];
    return isPlainObject(service) && Object.hasOwn(service, 'extends');
  });
}

export interface MergeRequest {
  /** The template. */
  main: ComposeDocument;
  /** Override files, in the order given; each `dir` is the template's. */
  overrides: ComposeDocument[];
  /** The template's sink: issues found while merging are placed in the file they are about. */
  sink: IssueSink;
  /** For the files `extends` names: `root`, allowed host paths, `onHostPath`, the file cache. */
  ctx: LoadContext;
  /**
   * Reads and walks (interpolating) a file named by `extends`, or returns null once the reason is
   * told: to `fail` when the file cannot be read (placed where it is named), as issues of its own
   * when its YAML is broken.
   */
  open(absolute: string, fail: (message: string) => void): ComposeDocument | null;
}

/** The merged document, and where each value of it was written. */
export interface MergedCompose {
  value: unknown;
  root: Origin;
  /** Characters of its keys and strings: what `TEMPLATE_LIMITS.maxChars` bounds. */
  chars: number;
}

/**
 * Resolves `extends` in each file, then merges the override files onto the template. Returns
 * null, with an issue, when the result would pass a limit.
 */
export function mergeCompose(request: MergeRequest): MergedCompose | null {
  const merger = new Merger(request);
  try {
    return merger.run();
  } catch (error) {
    if (!(error instanceof TemplateLimitError)) throw error;
    const { main } = request;
    request.sink.errorAt(main.file, main.positions.locate(error.path), error.path, error.message);
    return null;
  }
}

/** How two values at one path merge, when it is not the default (maps merged, lists appended). */
type Rule = 'replace' | 'sequence' | 'hosts' | 'build' | 'depends_on' | 'networks';

/** Paths (a service's name as `*`) with their own rule: compose-go's `mergeSpecials`. */
const RULES: Record<string, Rule> = {
  'services.*.annotations': 'sequence',
  'services.*.build': 'build',
  'services.*.build.additional_contexts': 'sequence',
  'services.*.build.args': 'sequence',
  'services.*.build.extra_hosts': 'hosts',
  'services.*.build.labels': 'sequence',
  'services.*.command': 'replace',
  'services.*.depends_on': 'depends_on',
  'services.*.deploy.labels': 'sequence',
  'services.*.dns': 'sequence',
  'services.*.dns_opt': 'sequence',
  'services.*.dns_search': 'sequence',
  'services.*.entrypoint': 'replace',
  'services.*.env_file': 'sequence',
  'services.*.environment': 'sequence',
  'services.*.extra_hosts': 'hosts',
  'services.*.healthcheck.test': 'replace',
  'services.*.label_file': 'sequence',
  'services.*.labels': 'sequence',
  'services.*.networks': 'networks',
  'services.*.sysctls': 'sequence',
  'services.*.tmpfs': 'sequence',
  'services.*.ulimits.*': 'replace',
};

/** The key that makes an entry of a merged sequence unique (null: none); compose-go's `uncity.go`. */
type UniqueKey = (entry: unknown) => string | null;

/** `KEY=value` and `KEY` by KEY. */
const byName: UniqueKey = (entry) => (typeof entry === 'string' ? entry.split('=', 1)[0]! : null);
const byValue: UniqueKey = (entry) =>
  typeof entry === 'string' || typeof entry === 'number' ? String(entry) : null;

/** A mount by its target: `src:/target[:ro]`, `/target`, or `{ target }`. */
const byTarget: UniqueKey = (entry) => {
  if (isPlainObject(entry)) return typeof entry.target === 'string' ? entry.target : null;
  if (typeof entry !== 'string') return null;
  const parts = entry.split(':');
  return parts.length === 1 ? parts[0]! : (parts[1] ?? null);
};

/** A secret or config by where it is mounted (see `compose-extras.ts`). */
const byMountPoint =
  (base: string): UniqueKey =>
  (entry) => {
    const written =
      typeof entry === 'string' ? entry : isPlainObject(entry) ? (entry.target ?? entry.source) : null;
    return typeof written === 'string' ? posix.resolve(base, written) : null;
  };

/** A port by its address, published port, target and protocol. */
const byPort: UniqueKey = (entry) => {
  if (typeof entry === 'string' || typeof entry === 'number') return String(entry);
  if (!isPlainObject(entry)) return null;
  const { host_ip = '0.0.0.0', published = '', target, protocol = 'tcp' } = entry;
  return `${String(host_ip)}:${String(published)}:${String(target)}/${String(protocol)}`;
};

const byPath: UniqueKey = (entry) =>
  typeof entry === 'string'
    ? entry
    : isPlainObject(entry) && typeof entry.path === 'string'
      ? entry.path
      : null;

const UNIQUE: Record<string, UniqueKey> = {
  'services.*.annotations': byName,
  'services.*.build.args': byName,
  'services.*.build.labels': byName,
  'services.*.cap_add': byName,
  'services.*.cap_drop': byName,
  'services.*.configs': byMountPoint('/'),
  'services.*.deploy.labels': byName,
  'services.*.dns': byName,
  'services.*.dns_opt': byName,
  'services.*.dns_search': byName,
  'services.*.env_file': byPath,
  'services.*.environment': byName,
  'services.*.expose': byValue,
  'services.*.labels': byName,
  'services.*.links': byName,
  'services.*.ports': byPort,
  'services.*.profiles': byName,
  'services.*.secrets': byMountPoint('/run/secrets'),
  'services.*.sysctls': byName,
  'services.*.tmpfs': byName,
  'services.*.volumes': byTarget,
};

/** Every rule path and its prefixes: below anything else, no rule applies. */
const RULE_PREFIXES = new Set(
  [...Object.keys(RULES), ...Object.keys(UNIQUE)].flatMap((rule) =>
    rule.split('.').map((_, i, parts) => parts.slice(0, i + 1).join('.')),
  ),
);
/** The rule path of everything below a path no rule is about. */
const NO_RULE = '?';

/** The rule path of `key` below `rule`: a service's name, and a ulimit's, is `*`. */
function childRule(rule: string, key: string): string {
  if (rule === NO_RULE) return NO_RULE;
  const next =
    rule === 'services' || rule === 'services.*.ulimits' ? `${rule}.*` : rule === '' ? key : `${rule}.${key}`;
  return RULE_PREFIXES.has(next) ? next : NO_RULE;
}

/** Which of two merged values' places a merged map or list is said to be at. */
type Anchor = 'base' | 'over';

const defineKey = (object: Record<string, unknown>, key: string, value: unknown) =>
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });

/** A copy of a map (own keys only, `__proto__` included as a plain key). */
function copyMap(value: Record<string, unknown>, leaveOut?: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) if (key !== leaveOut) defineKey(out, key, value[key]);
  return out;
}

/** One link of an `extends` chain. */
interface ChainLink {
  doc: ComposeDocument;
  name: string;
}

class Merger {
  /** Entries of maps and lists built so far, against `TEMPLATE_LIMITS.maxNodes`. */
  private work = 0;
  /** Files named by `extends`, by absolute path (null: could not be used, already said why). */
  private readonly opened = new Map<string, ComposeDocument | null>();
  /** Services with their `extends` resolved, per file. */
  private readonly resolved = new Map<ComposeDocument, Map<string, Tracked>>();

  constructor(private readonly request: MergeRequest) {}

  run(): MergedCompose {
    const { main, overrides } = this.request;
    let merged = this.withExtends(main);
    for (const doc of overrides) {
      if (doc.value === null || doc.value === undefined) {
        this.request.sink.warnAt(
          doc.file,
          doc.positions.locate([]),
          [],
          'the file is empty: nothing to merge',
        );
        continue;
      }
      if (!isPlainObject(doc.value)) {
        this.error(
          doc,
          [],
          `an override file must be a map of Compose keys, not ${describeValue(doc.value)}`,
        );
        continue;
      }
      if (!isPlainObject(merged.value)) break;
      merged = this.merge(merged, this.withExtends(doc), '', 'base');
    }
    const copy = new Copier();
    const value = copy.copy(merged.value);
    return { value, root: merged.origin, chars: copy.chars };
  }

  private error(doc: ComposeDocument, path: Path, message: string, at: 'key' | 'value' = 'value'): void {
    this.request.sink.errorAt(doc.file, doc.positions.locate(path, at), path, message);
  }

  /** Counts entries built; throws past `TEMPLATE_LIMITS.maxNodes`. */
  private count(entries: number): void {
    this.work += entries;
    if (this.work > TEMPLATE_LIMITS.maxNodes) {
      throw new TemplateLimitError(
        `extends and override files make the template larger than ${TEMPLATE_LIMITS.maxNodes} YAML nodes`,
      );
    }
  }

  /** A file's value with every service's `extends` resolved. */
  private withExtends(doc: ComposeDocument): Tracked {
    const origin: Origin = { doc, path: [] };
    const root = doc.value;
    if (!isPlainObject(root) || !needsMerge(root, 0)) return { value: root, origin };
    const services = root.services as Record<string, unknown>;
    const names = Object.keys(services);
    // Refused as a whole by validation: not worth resolving.
    if (names.length > TEMPLATE_LIMITS.maxWorkloads) return { value: root, origin };
    const out: Record<string, unknown> = {};
    const children = new Map<string | number, Origin>();
    for (const name of names) {
      const service = this.service(doc, name, [])!;
      defineKey(out, name, service.value);
      children.set(name, service.origin);
    }
    this.count(names.length);
    const value = copyMap(root);
    value.services = out;
    return {
      value,
      origin: { doc, path: [], children: new Map([['services', { doc, path: ['services'], children }]]) },
    };
  }

  /** Service `name` of `doc` with its `extends` resolved, or undefined when `doc` has none of that name. */
  private service(doc: ComposeDocument, name: string, chain: ChainLink[]): Tracked | undefined {
    const root = doc.value;
    const services = isPlainObject(root) && isPlainObject(root.services) ? root.services : {};
    if (!Object.hasOwn(services, name)) return undefined;
    let done = this.resolved.get(doc);
    if (!done) {
      done = new Map();
      this.resolved.set(doc, done);
    }
    const known = done.get(name);
    if (known) return known;
    const value = services[name];
    const origin: Origin = { doc, path: ['services', name] };
    let result: Tracked = { value, origin };
    if (isPlainObject(value) && Object.hasOwn(value, 'extends')) {
      const own: Tracked = { value: copyMap(value, 'extends'), origin };
      result = this.extend(doc, name, value.extends, own, chain);
    }
    done.set(name, result);
    return result;
  }

  /** `own` (a service without its `extends`) merged onto what `extension` names. */
  private extend(
    doc: ComposeDocument,
    name: string,
    extension: unknown,
    own: Tracked,
    chain: ChainLink[],
  ): Tracked {
    const at: Path = ['services', name, 'extends'];
    let ref: string;
    let file: string | undefined;
    let refAt = at;
    if (typeof extension === 'string' && extension !== '') {
      ref = extension;
    } else if (isPlainObject(extension)) {
      for (const key of Object.keys(extension)) {
        if (key !== 'service' && key !== 'file')
          this.error(
            doc,
            [...at, key],
            `unknown key "${excerpt(key)}": extends takes "service" and "file"`,
            'key',
          );
      }
      if (typeof extension.service !== 'string' || extension.service === '') {
        const where = Object.hasOwn(extension, 'service') ? [...at, 'service'] : at;
        this.error(doc, where, 'needs "service": the name of the service to extend');
        return own;
      }
      ref = extension.service;
      refAt = [...at, 'service'];
      if (extension.file !== undefined && extension.file !== null) {
        if (typeof extension.file !== 'string' || extension.file === '') {
          this.error(
            doc,
            [...at, 'file'],
            `expected the path of a Compose file, got ${describeValue(extension.file)}`,
          );
          return own;
        }
        file = extension.file;
      }
    } else {
      this.error(
        doc,
        at,
        `expected the name of a service, or { service, file }; got ${describeValue(extension)}`,
      );
      return own;
    }

    const here = [...chain, { doc, name }];
    if (here.length > MERGE_LIMITS.maxExtendsDepth) {
      this.error(
        doc,
        at,
        `more than ${MERGE_LIMITS.maxExtendsDepth} services extend one another in a chain: ${chainText(here)}`,
      );
      return own;
    }
    let target = doc;
    if (file !== undefined) {
      const opened = this.open(doc, file, [...at, 'file']);
      if (!opened) return own;
      target = opened;
    }
    const start = here.findIndex((link) => link.doc === target && link.name === ref);
    if (start >= 0) {
      const cycle = [...here.slice(start), { doc: target, name: ref }];
      this.error(doc, at, `extends cycle: ${chainText(cycle)}`);
      return own;
    }
    const base = this.service(target, ref, here);
    if (!base) {
      const where = target === doc ? '' : ` in ${target.file}`;
      this.error(doc, refAt, `service "${excerpt(ref)}" not found${where}`);
      return own;
    }
    if (base.value === null || base.value === undefined) return own;
    if (!isPlainObject(base.value)) {
      this.error(
        doc,
        refAt,
        `cannot extend "${excerpt(ref)}": it is ${describeValue(base.value)}, not a map`,
      );
      return own;
    }
    const moved =
      target.dir !== null && target.dir !== doc.dir
        ? { value: rebase(base.value, target.dir, doc.dir), origin: base.origin }
        : base;
    return this.merge(moved, own, 'services.*', 'over');
  }

  /** The file `written` (in `doc`, at `at`) names, read once however many services name it. */
  private open(doc: ComposeDocument, written: string, at: Path): ComposeDocument | null {
    const sink = new IssueSink(doc.file, doc.positions);
    const absolute = hostPath(written, at, { ...this.request.ctx, sink, dir: doc.dir }, 'template');
    // One issue at most: each path is checked once per file that names it.
    this.request.sink.errors.push(...sink.errors);
    if (absolute === null) return null;
    if (this.opened.has(absolute)) return this.opened.get(absolute)!;
    if (this.opened.size >= MERGE_LIMITS.maxExtendsFiles) {
      this.error(doc, at, `more than ${MERGE_LIMITS.maxExtendsFiles} files are named by extends`);
      return null;
    }
    const opened = this.request.open(absolute, (message) => this.error(doc, at, message));
    this.opened.set(absolute, opened);
    return opened;
  }

  /** `over` merged onto `base`; `rule` is their path with service names as `*`. */
  private merge(base: Tracked, over: Tracked, rule: string, anchor: Anchor): Tracked {
    switch (RULES[rule]) {
      case 'replace':
        return over;
      case 'sequence':
        return this.unique(this.sequence(base, over, anchor, false), rule);
      case 'hosts':
        return this.sequence(base, over, anchor, true);
      case 'build': {
        const b = asBuildMap(base);
        const o = asBuildMap(over);
        if (b && o) return this.mergeMaps(b, o, rule, anchor);
        break;
      }
      case 'depends_on': {
        const b = asMapping(base, true);
        const o = asMapping(over, true);
        if (b && o) return this.mergeMaps(b, o, rule, anchor);
        break;
      }
      case 'networks': {
        const b = asMapping(base, false);
        const o = asMapping(over, false);
        if (b && o) return this.mergeMaps(b, o, rule, anchor);
        break;
      }
      case undefined:
        break;
    }
    if (over.value === null || over.value === undefined) return base;
    const kind = (value: unknown) =>
      isPlainObject(value) ? 'a map' : Array.isArray(value) ? 'a list' : null;
    const baseKind = kind(base.value);
    const overKind = kind(over.value);
    if (baseKind !== null && overKind !== baseKind) {
      const { doc, path } = over.origin;
      this.error(doc, path, `cannot merge ${describeValue(over.value)} into ${baseKind}`);
      return base;
    }
    if (isPlainObject(base.value)) return this.mergeMaps(base, over, rule, anchor);
    if (Array.isArray(base.value)) {
      const items = [...entriesOf(base), ...entriesOf(over)];
      return this.unique(this.list(items, anchor === 'base' ? base : over), rule);
    }
    return over;
  }

  private mergeMaps(base: Tracked, over: Tracked, rule: string, anchor: Anchor): Tracked {
    const b = base.value as Record<string, unknown>;
    const o = over.value as Record<string, unknown>;
    const value: Record<string, unknown> = {};
    const children = new Map<string | number, Origin>();
    for (const key of Object.keys(b)) {
      let entry: Tracked = { value: b[key], origin: childOrigin(base.origin, key) };
      if (Object.hasOwn(o, key)) {
        const other = { value: o[key], origin: childOrigin(over.origin, key) };
        entry = this.merge(entry, other, childRule(rule, key), anchor);
      }
      defineKey(value, key, entry.value);
      children.set(key, entry.origin);
    }
    for (const key of Object.keys(o)) {
      if (Object.hasOwn(b, key)) continue;
      defineKey(value, key, o[key]);
      children.set(key, childOrigin(over.origin, key));
    }
    this.count(children.size);
    const { doc, path } = (anchor === 'base' ? base : over).origin;
    return { value, origin: { doc, path, children } };
  }

  /** Both values as lists (a map's entries as `KEY=value`), appended; `hosts` drops repeats. */
  private sequence(base: Tracked, over: Tracked, anchor: Anchor, hosts: boolean): Tracked {
    const first = sequenceOf(base);
    let second = sequenceOf(over);
    if (hosts) {
      const seen = new Set(first.map((entry) => entry.value));
      second = second.filter((entry) => !seen.has(entry.value));
    }
    return this.list([...first, ...second], anchor === 'base' ? base : over);
  }

  private list(entries: Tracked[], at: Tracked): Tracked {
    this.count(entries.length);
    return {
      value: entries.map((entry) => entry.value),
      origin: { doc: at.origin.doc, path: at.origin.path, children: byIndex(entries) },
    };
  }

  /** A merged list without repeats of the unique key of `rule`: the later entry, where the first was. */
  private unique(list: Tracked, rule: string): Tracked {
    const key = UNIQUE[rule];
    if (!key || !Array.isArray(list.value)) return list;
    const values = list.value;
    const origins = list.origin.children!;
    const kept: Tracked[] = [];
    const index = new Map<string, number>();
    values.forEach((value, i) => {
      const entry = { value, origin: origins.get(i)! };
      const k = key(value);
      const seen = k === null ? undefined : index.get(k);
      if (seen !== undefined) {
        kept[seen] = entry;
      } else {
        if (k !== null) index.set(k, kept.length);
        kept.push(entry);
      }
    });
    if (kept.length === values.length && kept.every((entry, i) => entry.value === values[i])) return list;
    return {
      value: kept.map((entry) => entry.value),
      origin: { doc: list.origin.doc, path: list.origin.path, children: byIndex(kept) },
    };
  }
}

/** The origins of a list's entries, by index. */
function byIndex(entries: readonly Tracked[]): Map<string | number, Origin> {
  return new Map(entries.map((entry, i) => [i, entry.origin]));
}

/** The entries of a list, each with its origin. */
function entriesOf(list: Tracked): Tracked[] {
  return (list.value as unknown[]).map((value, i) => ({ value, origin: childOrigin(list.origin, i) }));
}

const isScalar = (value: unknown) =>
  typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';

/**
 * A list, a map (`KEY: value` as `KEY=value`, `KEY:` as `KEY`, a list of values as one entry
 * each) or a string as a list, as compose-go's `convertIntoSequence`. A value that is neither a
 * scalar nor a list is kept as it is, for validation to report where it was written.
 */
function sequenceOf(tracked: Tracked): Tracked[] {
  const { value, origin } = tracked;
  if (Array.isArray(value)) return entriesOf(tracked);
  if (typeof value === 'string') return [tracked];
  if (!isPlainObject(value)) return [];
  return Object.keys(value).flatMap((key): Tracked[] => {
    const at = childOrigin(origin, key);
    const v = value[key];
    const entry = (item: unknown, where: Origin): Tracked => ({
      value: isScalar(item) ? `${key}=${String(item)}` : item,
      origin: where,
    });
    if (v === null || v === undefined) return [{ value: key, origin: at }];
    if (Array.isArray(v)) return v.map((item, i) => entry(item, childOrigin(at, i)));
    return [entry(v, at)];
  });
}

/** `build: ./dir` as `build: { context: ./dir }`; null for anything else but a map. */
function asBuildMap(tracked: Tracked): Tracked | null {
  if (isPlainObject(tracked.value)) return tracked;
  if (typeof tracked.value !== 'string') return null;
  const { doc, path } = tracked.origin;
  return {
    value: { context: tracked.value },
    origin: { doc, path, children: new Map([['context', tracked.origin]]) },
  };
}

/**
 * A list of names as a map: `depends_on: [db]` as `{ db: { condition: service_started,
 * required: true } }` (`withDefaults`), `networks: [a]` as `{ a: null }`. Null when the list holds
 * something else than names, which validation then reports.
 */
function asMapping(tracked: Tracked, withDefaults: boolean): Tracked | null {
  if (isPlainObject(tracked.value)) return tracked;
  if (!Array.isArray(tracked.value) || !tracked.value.every((item) => typeof item === 'string')) return null;
  const value: Record<string, unknown> = {};
  const children = new Map<string | number, Origin>();
  (tracked.value as string[]).forEach((name, i) => {
    defineKey(value, name, withDefaults ? { condition: 'service_started', required: true } : null);
    children.set(name, childOrigin(tracked.origin, i));
  });
  const { doc, path } = tracked.origin;
  return { value, origin: { doc, path, children } };
}

/** `name1 → name2 → …`, with each file when the chain crosses files. */
function chainText(chain: readonly ChainLink[]): string {
  const files = new Set(chain.map((link) => link.doc));
  return chain
    .map((link) => (files.size > 1 ? `${excerpt(link.name)} (${link.doc.file})` : excerpt(link.name)))
    .join(' → ');
}

const REMOTE_CONTEXT = /^[a-z][a-z0-9+.-]*:\/\/|^git@/i;

/** A path written relative to `from`, written again relative to `to` (absolute without `to`). */
function rebasePath(written: string, from: string, to: string | null): string {
  if (isAbsolute(written) || written.startsWith('~')) return written;
  const absolute = resolve(from, written);
  if (to === null) return absolute;
  const rel = relative(to, absolute);
  if (rel === '') return '.';
  if (isAbsolute(rel) || rel === '..' || rel.startsWith('../')) return rel;
  return `./${rel}`;
}

/**
 * A service taken from a file in folder `from`, its relative paths (build context, env files,
 * bind sources) rewritten for a file in folder `to`, as Compose does for `extends: { file }`.
 * Only the maps and lists on the way to a rewritten path are copied.
 */
function rebase(service: unknown, from: string, to: string | null): unknown {
  if (!isPlainObject(service)) return service;
  const move = (written: string) => rebasePath(written, from, to);
  const out = copyMap(service);
  const { build } = out;
  if (typeof build === 'string' && !REMOTE_CONTEXT.test(build)) out.build = move(build);
  else if (isPlainObject(build)) {
    const copy = copyMap(build);
    // Without a context, the build is of that file's folder.
    if (copy.context === undefined || copy.context === null) copy.context = move('.');
    else if (typeof copy.context === 'string' && !REMOTE_CONTEXT.test(copy.context))
      copy.context = move(copy.context);
    out.build = copy;
  }
  const envFile = out.env_file;
  const envEntry = (entry: unknown) =>
    typeof entry === 'string'
      ? move(entry)
      : isPlainObject(entry) && typeof entry.path === 'string'
        ? { ...copyMap(entry), path: move(entry.path) }
        : entry;
  if (typeof envFile === 'string') out.env_file = move(envFile);
  else if (Array.isArray(envFile)) out.env_file = envFile.map(envEntry);
  if (Array.isArray(out.volumes)) {
    out.volumes = out.volumes.map((mount) => {
      if (typeof mount === 'string') {
        const parts = mount.split(':');
        // `./src:/target`: a bind; `name:/target` and `/target` are volumes.
        if (parts.length >= 2 && parts[0]!.startsWith('.')) parts[0] = move(parts[0]!);
        return parts.join(':');
      }
      if (isPlainObject(mount) && typeof mount.source === 'string' && mount.type === 'bind')
        return { ...copyMap(mount), source: move(mount.source) };
      return mount;
    });
  }
  return out;
}

/**
 * A deep copy of the merged document, counted against `TEMPLATE_LIMITS.maxNodes` and `maxChars`:
 * values a base service shares with each service extending it become values of their own (later
 * steps drop keys in place), and a small template extended many times cannot grow without bound.
 */
class Copier {
  chars = 0;
  private nodes = 0;
  /** Where the copy is: materialized only for an error. */
  private readonly path: (string | number)[] = [];

  copy(value: unknown): unknown {
    this.count(1, typeof value === 'string' ? value.length : 0);
    if (Array.isArray(value)) {
      const out: unknown[] = new Array(value.length);
      for (let i = 0; i < value.length; i++) {
        this.path.push(i);
        out[i] = this.copy(value[i]);
        this.path.pop();
      }
      return out;
    }
    if (!isPlainObject(value)) return value;
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      this.count(0, key.length);
      this.path.push(key);
      defineKey(out, key, this.copy(value[key]));
      this.path.pop();
    }
    return out;
  }

  private count(nodes: number, chars: number): void {
    this.nodes += nodes;
    this.chars += chars;
    if (this.nodes > TEMPLATE_LIMITS.maxNodes) {
      throw new TemplateLimitError(
        `extends and override files make the template larger than ${TEMPLATE_LIMITS.maxNodes} YAML nodes`,
        [...this.path],
      );
    }
    if (this.chars > TEMPLATE_LIMITS.maxChars) {
      throw new TemplateLimitError(
        `extends and override files make the template's keys and values longer than ${TEMPLATE_LIMITS.maxChars} characters`,
        [...this.path],
      );
    }
  }
}

/** A file named by `extends`, as read from disk. */
export type ComposeFileRead = { content: string } | { missing: true } | { refused: string };

/**
 * Reads a Compose file named by `extends`: a regular file of at most `TEMPLATE_MAX_BYTES` (see
 * {@link readSmallFile}).
 */
export function readComposeFile(path: string): ComposeFileRead {
  const read = readSmallFile(path, TEMPLATE_MAX_BYTES);
  return 'text' in read ? { content: read.text } : read;
}

/**
 * The name issues give a file named by `extends`: its path from the template's folder, joined to
 * the folder of the template's own name (`app/compose.yaml` → `app/../common.yaml` → `common.yaml`).
 */
export function composeFileName(absolute: string, template: { filename: string; dir?: string }): string {
  if (template.dir === undefined) return absolute;
  const rel = relative(template.dir, absolute).split('\\').join('/');
  const base = posix.dirname(template.filename.split('\\').join('/'));
  return posix.normalize(posix.join(base, rel));
}
