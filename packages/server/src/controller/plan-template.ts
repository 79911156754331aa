/**
 * From a template to the plan that is stored: loaded with its inputs, named, checked (host
 * labels, Dockerfiles, size), given default limits, its bind sources copied and its secrets and
 * configs written where containers can only read them. The same for a template sent to the API
 * and one checked out of a git repository by the controller.
 */
import { lstat, open, realpath } from 'node:fs/promises';
import path from 'node:path';
import { DNS_LABEL_MAX, TEMPLATE_MAX_BYTES } from '@mayfly/contract';
import { assertBuildAllowed, DockerfilePolicyError } from '../images/dockerfile-policy.js';
import type { EnvPlan } from '../plan/plan.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import type { Workspaces } from '../sources/workspaces.js';
import {
  loadTemplate,
  plan,
  type Template,
  TemplateError,
  type TemplateOverride,
} from '../template/index.js';
import { InvalidRequestError } from './errors.js';
import {
  checkBindSources,
  type HostPathPolicy,
  withDefaultLimits,
  withFilesAsMounts,
  withPrivateBindSources,
  withServiceUrls,
} from './plan-policy.js';
import { serviceUrl, type UrlScheme, urlsOf } from './urls.js';

/** Largest stored plan (JSON), whatever the template expanded to. */
export const PLAN_MAX_BYTES = 2 * 1024 * 1024;

/** A directory that holds nothing: every host path is outside it. */
const NO_HOST_PATHS = '/nonexistent/mayfly-template-without-directory';

export interface PlanTemplateDeps {
  urls: UrlScheme;
  workspaces: Workspaces;
  policy: HostPathPolicy & { defaultMemoryBytes: number; defaultPids: number };
}

export interface PlanTemplateInput {
  envId: string;
  project: string;
  /** The template's path, relative to `sourceDir` when there is one. */
  filename: string;
  content: string;
  overrides?: TemplateOverride[];
  /** The server's own copy of the template's folder (a bundle or a checkout); null: none. */
  sourceDir: string | null;
  inputs: Record<string, string>;
  profiles?: string[];
  /** The environment's name; without it one is made from `namePrefix` and the id. */
  name?: string | undefined;
  namePrefix?: string;
}

export interface PlannedTemplate {
  name: string;
  template: Template;
  plan: EnvPlan;
}

/**
 * Loads and plans a template for environment `envId`. Throws {@link TemplateError} or
 * {@link InvalidRequestError} with what is wrong; writes only under the environment's workspace.
 */
export async function planTemplate(
  deps: PlanTemplateDeps,
  input: PlanTemplateInput,
): Promise<PlannedTemplate> {
  const { envId: id, sourceDir, workspaces } = { ...input, workspaces: deps.workspaces };
  const overrides = input.overrides ?? [];
  const templateDir = sourceDir === null ? null : path.dirname(path.join(sourceDir, input.filename));
  const load = (name: string) =>
    loadTemplate(
      {
        filename: input.filename,
        content: input.content,
        ...(templateDir ? { dir: templateDir } : {}),
        ...(overrides.length > 0 ? { overrides } : {}),
      },
      {
        inputs: { ...input.inputs, ENV_ID: id, ENV_NAME: name },
        // Build contexts, env files and bind mounts stay inside the server's copy of the
        // template's folder; a template sent without one may not name host paths at all.
        root: sourceDir ?? NO_HOST_PATHS,
        allowedHostPaths: deps.policy.allowedHostPaths,
        profiles: input.profiles ?? [],
        serviceUrl: (service) => serviceUrl(service, name, deps.urls),
      },
    );
  const prefix = input.namePrefix ?? 'env';
  let name = input.name ?? defaultName(prefix, id, 0);
  let template = load(name);
  const longest = longestRoutedService(template);
  if (input.name === undefined && longest.length + 2 + name.length > DNS_LABEL_MAX) {
    name = defaultName(prefix, id, longest.length);
    template = load(name);
  }
  checkHostLabels(template, name);
  await checkDockerfiles(template);

  let envPlan: EnvPlan = plan(template, { envId: id, envName: name, project: input.project });
  envPlan = withDefaultLimits(envPlan, deps.policy);
  envPlan = withServiceUrls(envPlan, urlsOf(envPlan, name, deps.urls));
  // The plan is stored, and read by every pass and gateway lookup: it stays small.
  const planBytes = Buffer.byteLength(JSON.stringify(envPlan));
  if (planBytes > PLAN_MAX_BYTES) {
    throw new InvalidRequestError(
      `the planned environment takes ${Math.ceil(planBytes / 1024)} KiB, more than the ${PLAN_MAX_BYTES / 1024} KiB allowed: fewer services, or smaller values`,
    );
  }
  envPlan = await withPrivateBindSources(
    envPlan,
    id,
    workspaces,
    deps.policy,
    sourceDir ?? workspaces.sourceDir(id),
  );
  envPlan = await withFilesAsMounts(envPlan, id, workspaces);
  // The same check every apply makes, said now rather than as a failed environment.
  await checkBindSources(envPlan, workspaces.mountsDir(id), deps.policy).catch((err) => {
    throw err instanceof RuntimeStepError ? new InvalidRequestError(err.reason) : err;
  });
  return { name, template, plan: envPlan };
}

/**
 * Reads the template file out of the server's copy of a bundle: a relative path that stays inside
 * it (links followed), a regular file, at most {@link TEMPLATE_MAX_BYTES}.
 */
export async function readTemplateFile(sourceDir: string, filename: string): Promise<string> {
  const fail = (why: string) => new InvalidRequestError(`template "${filename}": ${why}`);
  if (path.isAbsolute(filename) || filename.split(/[\\/]/).includes('..')) {
    throw fail('must be a path inside the bundle, without ".."');
  }
  const file = path.join(sourceDir, filename);
  let real: string;
  try {
    real = await realpath(file);
  } catch {
    throw fail('not found in the bundle');
  }
  const rel = path.relative(await realpath(sourceDir), real);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw fail('leads outside the bundle');
  const info = await lstat(real);
  if (!info.isFile()) throw fail('is not a regular file');
  if (info.size > TEMPLATE_MAX_BYTES) throw fail(`is larger than ${TEMPLATE_MAX_BYTES} bytes`);
  const handle = await open(real, 'r');
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/** Every Dockerfile a template builds from, checked now (and again before each build). */
async function checkDockerfiles(template: Template): Promise<void> {
  const issues = [];
  for (const w of template.workloads) {
    if (!w.image.build) continue;
    try {
      await assertBuildAllowed(w.image.build);
    } catch (err) {
      if (!(err instanceof DockerfilePolicyError)) throw err;
      issues.push({
        file: template.file,
        line: null,
        column: null,
        path: `services.${w.name}.build`,
        message: err.message,
      });
    }
  }
  if (issues.length > 0) throw new TemplateError(issues);
}

/** The longest name among services the gateway routes (their URLs carry `<service>--<env>`). */
function longestRoutedService(template: Template): string {
  let longest = '';
  for (const w of template.workloads) {
    if (w.kind === 'service' && w.ports.some((p) => p.http) && w.name.length > longest.length)
      longest = w.name;
  }
  return longest;
}

/** `<service>--<env>` is one DNS label: 63 characters at most, said up front rather than by a broken URL. */
function checkHostLabels(template: Template, envName: string): void {
  const issues = template.workloads
    .filter((w) => w.kind === 'service' && w.ports.some((p) => p.http))
    .filter((w) => w.name.length + 2 + envName.length > DNS_LABEL_MAX)
    .map((w) => ({
      file: template.file,
      line: null,
      column: null,
      path: `services.${w.name}`,
      message: `"${w.name}--${envName}" (its URL's host label) is ${w.name.length + 2 + envName.length} characters; DNS allows ${DNS_LABEL_MAX}: shorten the service or environment name`,
    }));
  if (issues.length > 0) throw new TemplateError(issues);
}

/**
 * `shop-k3v9` from the prefix `shop`: the prefix says what it is, the suffix keeps it unique. Short
 * enough that `<service>--<name>` of a service named `reserve` characters long still fits a DNS
 * label, and never with `--` (which separates service and environment in hosts).
 */
export function defaultName(prefix: string, id: string, reserve: number): string {
  const room = Math.max(1, Math.min(30, DNS_LABEL_MAX - 2 - reserve - 5));
  const slug = prefix
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, room)
    .replace(/^-+|-+$/g, '');
  return `${slug || 'env'}-${id.slice(0, 4)}`;
}
