/** Loading a template: YAML with positions → interpolation → validation → normalized workloads. */
import type { TemplateIssue } from '@mayfly/contract';
import type { WorkloadPlan } from '../runtime/runtime.js';
import { isComposeFile } from './detect.js';
import { fromCompose } from './from-compose.js';
import { fromMayfly } from './from-mayfly.js';
import { interpolate } from './interpolate.js';
import { IssueSink, sortIssues, TemplateError } from './issues.js';
import type { LoadContext, Site, TemplateParts } from './normalize.js';
import { formatPath, type Path, type Position, parseYaml } from './yaml-positions.js';

/** A template file as the user gave it. */
export interface TemplateSource {
  /** The name the user knows it by: used in issues, and to tell Compose from mayfly.yaml. */
  filename: string;
  content: string;
  /** Absolute directory that relative paths (build contexts, env files, binds) resolve against. */
  dir?: string;
}

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
}

/** A validated, normalized template: everything {@link plan} needs, and nothing environment-specific. */
export interface Template {
  format: 'mayfly' | 'compose';
  file: string;
  dir: string | null;
  /** In document order; `image` is '' for a workload that is built (the build step fills it). */
  workloads: Omit<WorkloadPlan, 'specHash'>[];
  volumes: { name: string }[];
  isolation: 'runc' | 'gvisor';
  lifecycle: { ttlMs: number | null; idleTimeoutMs: number | null; destroyOn: string[] };
  /** Things that are accepted but not honoured (unsupported Compose keys…), with their positions. */
  warnings: TemplateIssue[];
}

const ENV_URL = 'ENV_URL';
/** Stands for `${ENV_URL}` during the first pass, before the service it points at is known. */
const ENV_URL_PLACEHOLDER = 'http://env-url.invalid';

/**
 * Parses, interpolates, validates and normalizes a template.
 * `${ENV_URL}`, when not given as an input, is the URL (from `options.serviceUrl`) of the first
 * service with an HTTP port; since ports may themselves be interpolated, the template is loaded
 * once with a placeholder to find that service, then again with the real URL.
 * @throws {TemplateError} with every issue found, each with its file, line, column and path.
 */
export function loadTemplate(src: TemplateSource, options: LoadOptions = {}): Template {
  const inputs = options.inputs ?? {};
  const format = isComposeFile(src.filename, src.content) ? 'compose' : 'mayfly';
  const envUrlSites: Site[] = [];
  const root = options.root ?? null;
  const first = loadOnce(src, format, root, (name, site) => {
    if (Object.hasOwn(inputs, name)) return inputs[name];
    if (name !== ENV_URL || !options.serviceUrl) return undefined;
    envUrlSites.push(site);
    return ENV_URL_PLACEHOLDER;
  });
  if (first.errors.length > 0) throw new TemplateError(first.errors, first.template.warnings);
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
    throw new TemplateError(sortIssues(issues, src.filename), first.template.warnings);
  }
  const url = options.serviceUrl!(routed.name);
  const second = loadOnce(src, format, root, (name) =>
    Object.hasOwn(inputs, name) ? inputs[name] : name === ENV_URL ? url : undefined,
  );
  if (second.errors.length > 0) throw new TemplateError(second.errors, second.template.warnings);
  return second.template;
}

function loadOnce(
  src: TemplateSource,
  format: 'mayfly' | 'compose',
  root: string | null,
  lookup: LoadContext['lookup'],
): { template: Template; errors: TemplateIssue[] } {
  const file = src.filename;
  const pending: { position: Position; path: Path; message: string }[] = [];
  const parsed = parseYaml(src.content, (value, node, path, positions) => {
    if (!value.includes('$')) return value;
    const start = node.range?.[0] ?? 0;
    const source = src.content.slice(start, node.range?.[1] ?? start);
    const result = interpolate(value, (name) => {
      const index = source.search(new RegExp(`\\$\\{?${name}(?![A-Za-z0-9_])`));
      return lookup(name, { file, position: positions.fromOffset(start + Math.max(index, 0)), path });
    });
    for (const e of result.errors) {
      // Point at the reference itself when it appears verbatim in the source (it usually does).
      const index = source.indexOf(value.slice(e.index, e.index + e.length));
      pending.push({ position: positions.fromOffset(start + Math.max(index, 0)), path, message: e.message });
    }
    return result.value;
  });

  const sink = new IssueSink(file, parsed.positions);
  for (const w of parsed.warnings) sink.warnings.push({ file, ...w.position, path: '', message: w.message });
  for (const e of parsed.errors) sink.errorAt(file, e.position, [], e.message);
  for (const p of pending) sink.errorAt(file, p.position, p.path, p.message);

  let parts: TemplateParts = {
    workloads: [],
    volumes: [],
    isolation: 'runc',
    lifecycle: { ttlMs: null, idleTimeoutMs: null, destroyOn: [] },
  };
  if (parsed.errors.length === 0) {
    if (parsed.value === null || parsed.value === undefined) {
      sink.error([], 'the template is empty: add services');
    } else {
      const ctx: LoadContext = { sink, dir: src.dir ?? null, root, lookup };
      parts = format === 'compose' ? fromCompose(parsed.value, ctx) : fromMayfly(parsed.value, ctx);
    }
  }
  const template: Template = {
    format,
    file,
    dir: src.dir ?? null,
    ...parts,
    warnings: sortIssues(sink.warnings, file),
  };
  return { template, errors: sortIssues(sink.errors, file) };
}
