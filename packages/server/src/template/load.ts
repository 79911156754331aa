/**
 * Loading a template: YAML with positions → interpolation → validation → normalized workloads.
 * Every step is bounded for any input (see `limits.ts`): loading runs inside an API request.
 */
import { dirname } from 'node:path';
import type { TemplateIssue } from '@mayfly/contract';
import type { WorkloadPlan } from '../plan/plan.js';
import {
  type ComposeDocument,
  type ComposeFileRead,
  composeFileName,
  MERGE_LIMITS,
  MergedIssueSink,
  MergedPositions,
  mergeCompose,
  needsMerge,
  readComposeFile,
} from './compose-merge.js';
import { formatByContent, formatByName } from './detect.js';
import { fromCompose } from './from-compose.js';
import { fromMayfly } from './from-mayfly.js';
import { interpolate } from './interpolate.js';
import { IssueSink, limitIssues, sortIssues, TemplateError } from './issues.js';
import { Budget, TEMPLATE_LIMITS, TemplateLimitError } from './limits.js';
import {
  HostFiles,
  type HostPathRef,
  type LoadContext,
  type Site,
  type TemplateParts,
  type VolumeSpec,
} from './normalize.js';
import {
  formatPath,
  type ParsedYaml,
  type Path,
  type Position,
  parseYamlDocument,
  type SourcePositions,
  type WalkTotals,
  walkYaml,
  type YamlDocument,
} from './yaml-positions.js';

/** A template file as the user gave it. */
export interface TemplateSource {
  /** The name the user knows it by: used in issues, and to tell Compose from mayfly.yaml. */
  filename: string;
  content: string;
  /** Absolute directory that relative paths (build contexts, env files, binds) resolve against. */
  dir?: string;
  /**
   * Compose override files (`-f compose.yaml -f compose.ci.yaml`: every one after the first),
   * merged onto the template in this order as Compose merges them (see `compose-merge.ts`).
   * Their relative paths resolve against `dir`, as Compose resolves them against the first
   * file's folder. At most `MERGE_LIMITS.maxOverrides`; only for a Compose template.
   */
  overrides?: TemplateOverride[];
}

/** An override file: its name (in issues) and content. */
export interface TemplateOverride {
  filename: string;
  content: string;
}

export type { HostPathRef };

export interface LoadOptions {
  /** Values for `${VAR}`; nothing is ever read from the server's own environment. */
  inputs?: Record<string, string>;
  /** The URL of a service of the environment being created; gives `${ENV_URL}` when it is not an input. */
  serviceUrl?: (service: string) => string;
  /**
   * Absolute directory that every host path of the template (build contexts, Dockerfiles, env
   * files, bind sources) must stay inside, symbolic links followed; a path outside it is an error.
   * Pass the checkout's root for a template from a repository: without it, `build: /`,
   * `env_file: /etc/passwd` or a bind of `/var/run/docker.sock` are accepted.
   */
  root?: string;
  /**
   * Absolute directories, besides `root`, that host paths may be inside: the ones the server's
   * operator allows (`mayfly serve --allow-host-path DIR`). Only used together with `root`.
   */
  allowedHostPaths?: readonly string[];
  /**
   * Called with the absolute path (resolved against the template's directory, links not
   * followed) of every host path the template names: build contexts, Dockerfiles, env files,
   * bind-mount sources, Compose files named by `extends` (kind `template`); each once, before it
   * is checked, and even when the template has errors
   * elsewhere. The CLI uses it to learn which files a template needs before uploading its folder.
   * Paths of a service that does not pass validation itself are not reported.
   */
  onHostPath?: (ref: HostPathRef) => void;
  /**
   * Compose profiles to activate (`--profile`, `COMPOSE_PROFILES`); `*` activates every one. A
   * service with `profiles` is left out unless one of them is active, as Compose does.
   */
  profiles?: readonly string[];
  /**
   * Told the name of every variable the template reads, as it is read, even when loading then
   * fails (a `${VAR:?}` without its value): the CLI learns what to send of its environment.
   */
  onVariable?: (name: string) => void;
}

/** A validated, normalized template: everything {@link plan} needs, and nothing environment-specific. */
export interface Template {
  format: 'mayfly' | 'compose';
  file: string;
  dir: string | null;
  /** In document order; `image` is '' for a workload that is built (the build step fills it). */
  workloads: Omit<WorkloadPlan, 'specHash'>[];
  volumes: VolumeSpec[];
  isolation: 'runc' | 'gvisor';
  lifecycle: { ttlMs: number | null; idleTimeoutMs: number | null; destroyOn: string[] };
  /** Things that are accepted but not honoured (unsupported Compose keys…), with their positions. */
  warnings: TemplateIssue[];
  /**
   * Every variable the template reads, set or not, sorted: what a client sends of its own
   * environment as inputs (and nothing more).
   */
  variables: string[];
}

const ENV_URL = 'ENV_URL';
/** Stands for `${ENV_URL}` during the first pass, before the service it points at is known. */
const ENV_URL_PLACEHOLDER = 'http://env-url.invalid';

/**
 * Parses, interpolates, validates and normalizes a template.
 * `${ENV_URL}`, when not given as an input, is the URL (from `options.serviceUrl`) of the first
 * service with an HTTP port; since ports may themselves be interpolated, the template is loaded
 * once with a placeholder to find that service, then again with the real URL (the YAML is parsed
 * once for both).
 * A template larger than `TEMPLATE_MAX_BYTES` is refused before anything is parsed; time and
 * memory are bounded for any content (see `TEMPLATE_LIMITS`).
 * @throws {TemplateError} with every issue found, each with its file, line, column and path.
 */
export function loadTemplate(src: TemplateSource, options: LoadOptions = {}): Template {
  const file = src.filename;
  const refused = sourceIssues(src);
  if (refused.length > 0) throw new TemplateError(refused);

  const inputs = options.inputs ?? {};
  const yaml = parseYamlDocument(src.content);
  const reported = new Set<string>();
  const overrides = (src.overrides ?? []).map((o) => ({ ...o, yaml: parseYamlDocument(o.content) }));
  const shared: Shared = {
    yaml,
    overrides,
    extended: new Map(),
    bytesRead: [src, ...overrides].reduce((sum, f) => sum + Buffer.byteLength(f.content, 'utf8'), 0),
    root: options.root ?? null,
    allowedHostPaths: options.allowedHostPaths ?? [],
    profiles: options.profiles ?? [],
    files: new HostFiles(),
    // Each path once, although the template may be loaded twice and name a path many times.
    onHostPath: options.onHostPath
      ? (ref) => {
          const key = `${ref.kind}\0${ref.path}`;
          if (reported.has(key)) return;
          reported.add(key);
          options.onHostPath!(ref);
        }
      : undefined,
  };
  const envUrlSites: Site[] = [];
  const variables = new Set<string>();
  const first = loadOnce(src, shared, (name, site) => {
    if (!variables.has(name)) options.onVariable?.(name);
    variables.add(name);
    if (Object.hasOwn(inputs, name)) return inputs[name];
    if (name !== ENV_URL || !options.serviceUrl) return undefined;
    envUrlSites.push(site());
    return ENV_URL_PLACEHOLDER;
  });
  if (first.errors.length > 0) throw new TemplateError(first.errors, first.template.warnings);
  first.template.variables = [...variables].sort();
  if (envUrlSites.length === 0) return first.template;

  const routed = first.template.workloads.find((w) => w.kind === 'service' && w.ports.some((p) => p.http));
  if (!routed) {
    const issues = envUrlSites.map((site) => ({
      file: site.file,
      line: site.position.line,
      column: site.position.column,
      path: formatPath(site.path),
      message: '"ENV_URL" has no value: no service has an HTTP port',
    }));
    throw new TemplateError(
      limitIssues(sortIssues(issues, file), file, 0, 'problems'),
      first.template.warnings,
    );
  }
  const url = options.serviceUrl!(routed.name);
  const second = loadOnce(src, shared, (name) =>
    Object.hasOwn(inputs, name) ? inputs[name] : name === ENV_URL ? url : undefined,
  );
  if (second.errors.length > 0) throw new TemplateError(second.errors, second.template.warnings);
  return { ...second.template, variables: first.template.variables };
}

/**
 * Why the files of a template are refused before anything is parsed: one over
 * `TEMPLATE_MAX_BYTES`, too many override files, or more bytes in all than
 * `MERGE_LIMITS.maxTotalBytes`.
 */
function sourceIssues(src: TemplateSource): TemplateIssue[] {
  const files = [src, ...(src.overrides ?? [])];
  const overrides = files.length - 1;
  const at = { file: src.filename, line: 1, column: 1, path: '' };
  if (overrides > MERGE_LIMITS.maxOverrides) {
    const message = `${overrides} override files: a template may have at most ${MERGE_LIMITS.maxOverrides}`;
    return [{ ...at, message }];
  }
  const issues = files.map(sizeIssue).filter((issue) => issue !== null);
  if (issues.length > 0) return issues;
  const total = files.reduce((sum, f) => sum + Buffer.byteLength(f.content, 'utf8'), 0);
  if (total > MERGE_LIMITS.maxTotalBytes) {
    const message = `the template and its override files are larger than ${MERGE_LIMITS.maxTotalBytes} bytes in all: ${total} bytes`;
    return [{ ...at, message }];
  }
  return [];
}

/** The issue for a template file over `TEMPLATE_MAX_BYTES`, or null. */
function sizeIssue(src: { filename: string; content: string }): TemplateIssue | null {
  const max = TEMPLATE_LIMITS.maxBytes;
  // A UTF-16 code unit is at least one UTF-8 byte: a longer string need not be measured.
  const bytes = src.content.length > max ? src.content.length : Buffer.byteLength(src.content, 'utf8');
  if (bytes <= max) return null;
  return {
    file: src.filename,
    line: 1,
    column: 1,
    path: '',
    message: `the template is larger than ${max} bytes (${max / 1024 / 1024} MiB): ${src.content.length > max ? 'at least ' : ''}${bytes} bytes`,
  };
}

/** What both passes of one {@link loadTemplate} share. */
interface Shared {
  yaml: YamlDocument;
  overrides: (TemplateOverride & { yaml: YamlDocument })[];
  /** Files named by `extends`, by absolute path: read and parsed once for both passes. */
  extended: Map<string, ComposeFileRead | { content: string; yaml: YamlDocument }>;
  /** Bytes of every file read so far, against `MERGE_LIMITS.maxTotalBytes`. */
  bytesRead: number;
  root: string | null;
  allowedHostPaths: readonly string[];
  profiles: readonly string[];
  files: HostFiles;
  onHostPath: ((ref: HostPathRef) => void) | undefined;
}

/** Like `LoadContext['lookup']`, with the site computed only when the caller wants it. */
type LazyLookup = (name: string, site: () => Site) => string | undefined;

function loadOnce(
  src: TemplateSource,
  shared: Shared,
  lookup: LazyLookup,
): { template: Template; errors: TemplateIssue[] } {
  const file = src.filename;
  // One count of nodes and characters for every file of this pass: an override or extended file
  // does not bring limits of its own.
  const totals: WalkTotals = { nodes: 0, chars: 0 };
  const main = walkFile(file, src.content, shared.yaml, lookup, totals);
  const parsed = main.parsed;
  const format = formatByName(file) ?? formatByContent(parsed.value);
  const mainDoc: ComposeDocument = {
    file,
    value: parsed.value,
    positions: parsed.positions,
    dir: src.dir ?? null,
  };
  // Issues of a merged document are placed in whichever file each value came from.
  const merging =
    format === 'compose' && parsed.errors.length === 0 && needsMerge(parsed.value, shared.overrides.length);
  const sink = merging
    ? new MergedIssueSink(file, new MergedPositions({ doc: mainDoc, path: [] }))
    : new IssueSink(file, parsed.positions);
  main.report(sink);

  let parts: TemplateParts = {
    workloads: [],
    volumes: [],
    isolation: 'runc',
    lifecycle: { ttlMs: null, idleTimeoutMs: null, destroyOn: [] },
  };
  // One budget for all a template produces: its document (already counted by the walk, within
  // the limit), then what loading copies into workloads.
  const budget = new Budget(
    TEMPLATE_LIMITS.maxChars,
    (limit) =>
      `the template grows past ${limit} characters once env files, inputs, shared builds and port ranges are copied into each service that uses them`,
  );
  const ctx: LoadContext = {
    sink,
    dir: src.dir ?? null,
    root: shared.root,
    allowedHostPaths: shared.allowedHostPaths,
    profiles: shared.profiles,
    lookup: (name, site) => lookup(name, () => site),
    onHostPath: shared.onHostPath,
    budget,
    files: shared.files,
  };
  let value = parsed.value;
  let chars = parsed.chars;
  let usable = parsed.errors.length === 0;
  if (format === 'mayfly' && shared.overrides.length > 0) {
    sink.error([], `override files are merged onto Compose files only, and ${file} is a mayfly.yaml`);
    usable = false;
  }
  if (merging) {
    const overrides = shared.overrides.map((o) => walkFile(o.filename, o.content, o.yaml, lookup, totals));
    for (const o of overrides) o.report(sink);
    const merged = overrides.some((o) => o.parsed.errors.length > 0)
      ? null
      : mergeCompose({
          main: mainDoc,
          overrides: overrides.map((o) => ({
            file: o.file,
            value: o.parsed.value,
            positions: o.parsed.positions,
            dir: src.dir ?? null,
          })),
          sink,
          ctx,
          open: (absolute, fail) => openExtended(absolute, fail, src, shared, lookup, sink, totals),
        });
    if (merged === null) {
      usable = false;
    } else {
      value = merged.value;
      chars = merged.chars;
      (sink as MergedIssueSink).merged.origin = merged.root;
    }
  }
  budget.spend(Math.min(chars, TEMPLATE_LIMITS.maxChars), []);
  if (usable) {
    if (value === null || value === undefined) {
      sink.error([], 'the template is empty: add services');
    } else {
      try {
        parts = format === 'compose' ? fromCompose(value, ctx) : fromMayfly(value, ctx);
      } catch (error) {
        if (!(error instanceof TemplateLimitError)) throw error;
        if (error.position) sink.errorAt(file, error.position, error.path, error.message);
        else sink.error(error.path, error.message);
      }
    }
  }
  const template: Template = {
    format,
    file,
    dir: src.dir ?? null,
    ...parts,
    warnings: limitIssues(sortIssues(sink.warnings, file), file, sink.dropped.warnings, 'warnings'),
    variables: [],
  };
  return {
    template,
    errors: limitIssues(sortIssues(sink.errors, file), file, sink.dropped.errors, 'problems'),
  };
}

/** One file walked: its value, and a way to report the issues the walk found. */
interface WalkedFile {
  file: string;
  parsed: ParsedYaml;
  report(sink: IssueSink): void;
}

/** Walks one file of the template, interpolating every string with `lookup`. */
function walkFile(
  file: string,
  content: string,
  yaml: YamlDocument,
  lookup: LazyLookup,
  totals: WalkTotals,
): WalkedFile {
  const pending: { position: Position; path: Path; message: string }[] = [];
  const unset: { position: Position; path: Path; message: string }[] = [];
  const parsed = walkYaml(
    yaml,
    (value, node, path, positions) => {
      if (!value.includes('$')) return value;
      const offsets = new ReferenceOffsets(content, node.range, value, positions);
      const result = interpolate(value, (name, index) =>
        lookup(name, () => ({ file, position: offsets.at(index), path })),
      );
      for (const e of result.errors)
        pending.push({ position: offsets.at(e.index), path, message: e.message });
      for (const w of result.warnings)
        unset.push({ position: offsets.at(w.index), path, message: w.message });
      return result.value;
    },
    totals,
  );
  return {
    file,
    parsed,
    report(sink) {
      for (const w of parsed.warnings) sink.warnAt(file, w.position, [], w.message);
      for (const e of parsed.errors) sink.errorAt(file, e.position, [], e.message);
      for (const p of pending) sink.errorAt(file, p.position, p.path, p.message);
      for (const u of unset) sink.warnAt(file, u.position, u.path, u.message);
    },
  };
}

/**
 * A file named by `extends`, walked for this pass (read and parsed once per load), or null once
 * `fail` was told why it cannot be read, or its own issues were reported.
 */
function openExtended(
  absolute: string,
  fail: (message: string) => void,
  src: TemplateSource,
  shared: Shared,
  lookup: LazyLookup,
  sink: IssueSink,
  totals: WalkTotals,
): ComposeDocument | null {
  let entry = shared.extended.get(absolute);
  if (entry === undefined) {
    const read = readComposeFile(absolute);
    entry = read;
    if ('content' in read) {
      const bytes = Buffer.byteLength(read.content, 'utf8');
      const max = MERGE_LIMITS.maxTotalBytes;
      if (shared.bytesRead + bytes > max) {
        entry = { refused: `would make the files of this template larger than ${max} bytes in all` };
      } else {
        shared.bytesRead += bytes;
        entry = { content: read.content, yaml: parseYamlDocument(read.content) };
      }
    }
    shared.extended.set(absolute, entry);
  }
  const name = composeFileName(absolute, src);
  if ('missing' in entry) {
    fail(`file "${name}" not found`);
    return null;
  }
  if ('refused' in entry) {
    fail(`file "${name}" ${entry.refused}`);
    return null;
  }
  if (!('yaml' in entry)) return null;
  const walked = walkFile(name, entry.content, entry.yaml, lookup, totals);
  walked.report(sink);
  if (walked.parsed.errors.length > 0) return null;
  return {
    file: name,
    value: walked.parsed.value,
    positions: walked.parsed.positions,
    dir: dirname(absolute),
  };
}

/**
 * Where the references of one string scalar are in the source, for issues about them, in time
 * linear in the scalar's length (once, on the first question):
 * - a plain scalar on one line, or a quoted one without escapes, is its source: offsets shift;
 * - otherwise (escapes, folded lines, block scalars) every reference starts with a `$`, and the
 *   n-th `$` of the value is the n-th of the source, unless an escape made one: then the start of
 *   the scalar is the best answer.
 */
class ReferenceOffsets {
  private map: ((index: number) => number) | null = null;

  constructor(
    private readonly content: string,
    private readonly range: readonly number[] | null | undefined,
    private readonly value: string,
    private readonly positions: SourcePositions,
  ) {}

  at(index: number): Position {
    this.map ??= this.build();
    return this.positions.fromOffset(this.map(index));
  }

  private build(): (index: number) => number {
    const { content, value } = this;
    const start = this.range?.[0] ?? 0;
    const end = this.range?.[1] ?? start;
    const length = end - start;
    if (length === value.length && content.startsWith(value, start)) return (i) => start + i;
    if (length === value.length + 2 && content.startsWith(value, start + 1)) return (i) => start + 1 + i;
    const inValue = dollars(value, 0, value.length);
    const inSource = dollars(content, start, end);
    if (inValue.length !== inSource.length) return () => start;
    return (index) => {
      // The last `$` at or before `index`: a reference starts on one.
      let lo = 0;
      let hi = inValue.length - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (inValue[mid]! <= index) {
          found = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      return found < 0 ? start : inSource[found]!;
    };
  }
}

/** Offsets of every `$` of `text[from, to)`. */
function dollars(text: string, from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = text.indexOf('$', from); i >= 0 && i < to; i = text.indexOf('$', i + 1)) out.push(i);
  return out;
}
