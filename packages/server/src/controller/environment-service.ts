/**
 * What triggers (API, CLI, webhooks) do to environments: record desired state and an event, and
 * nudge the reconciler. Nothing here talks to a runtime's objects directly.
 */
import path from 'node:path';
import {
  CreateEnvironmentRequest,
  type CreateEnvironmentRequest as CreateInput,
  type Environment,
  parseDuration,
  type ServiceStatus,
} from '@mayfly/contract';
import { customAlphabet } from 'nanoid';
import type { Runtime } from '../runtime/runtime.js';
import { loadTemplate, plan } from '../spec/index.js';
import type { EnvironmentRecord, Store } from '../store/store.js';
import { InvalidRequestError, NotFoundError } from './errors.js';
import { serviceUrl, type UrlScheme, urlsOf } from './urls.js';

/** A directory that holds nothing: every host path is outside it. */
const NO_HOST_PATHS = '/nonexistent/mayfly-template-without-directory';

/** Lowercase so ids are valid in Docker names and Kubernetes namespaces alike. */
const newId = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 10);

export interface EnvironmentServiceDeps {
  store: Store;
  runtime: Runtime;
  urls: UrlScheme;
  /** Called after every change of desired state, so the reconciler acts now rather than on its next tick. */
  onChange: (envId: string) => void;
}

export class EnvironmentService {
  constructor(private readonly deps: EnvironmentServiceDeps) {}

  /** Validates the template and records a new environment as `pending`; the reconciler creates it. */
  async create(input: CreateInput): Promise<EnvironmentRecord> {
    const req = CreateEnvironmentRequest.parse(input);
    const id = newId();
    const name = req.name ?? defaultName(req.template, id);
    const template = loadTemplate(
      { filename: req.template.filename, content: req.template.content, dir: req.template.dir },
      {
        inputs: { ...req.inputs, ENV_ID: id, ENV_NAME: name },
        // Build contexts, env files and bind mounts may not reach outside the template's folder;
        // a template sent without one may not name host paths at all.
        root: req.template.dir ?? NO_HOST_PATHS,
        serviceUrl: (service) => serviceUrl(service, name, this.deps.urls),
      },
    );
    let ttlMs = template.lifecycle.ttlMs;
    if (req.ttl !== undefined) {
      ttlMs = parseDuration(req.ttl);
      if (ttlMs === null)
        throw new InvalidRequestError(`ttl "${req.ttl}" is not a duration like 30m, 2h or 1d`);
    }
    const record = await this.deps.store.environments.create({
      id,
      name,
      project: req.project,
      kind: req.kind,
      templateFile: req.template.filename,
      templateContent: req.template.content,
      templateDir: req.template.dir ?? null,
      inputs: req.inputs,
      plan: plan(template, { envId: id, envName: name, project: req.project }),
      ttlMs,
      expiresAt: ttlMs ? new Date(Date.now() + ttlMs) : null,
    });
    await this.deps.store.events.append({ envId: id, type: 'state', state: 'pending', message: 'requested' });
    for (const w of template.warnings) {
      await this.deps.store.events.append({
        envId: id,
        type: 'warning',
        state: null,
        message: `${w.file}:${w.line ?? '?'}:${w.column ?? '?'} ${w.path}: ${w.message}`,
      });
    }
    this.deps.onChange(id);
    return record;
  }

  async find(idOrName: string): Promise<EnvironmentRecord> {
    const env =
      (await this.deps.store.environments.get(idOrName)) ??
      (await this.deps.store.environments.getByName(idOrName));
    if (!env) throw new NotFoundError(`no environment "${idOrName}"`);
    return env;
  }

  list(options: { project?: string; all?: boolean } = {}): Promise<EnvironmentRecord[]> {
    return this.deps.store.environments.list({
      project: options.project,
      includeDestroyed: options.all ?? false,
    });
  }

  /** Marks the environment for teardown; the reconciler destroys it and verifies nothing is left. */
  async destroy(idOrName: string): Promise<EnvironmentRecord> {
    const env = await this.find(idOrName);
    if (env.desired === 'absent') return env;
    const updated = await this.deps.store.environments.update(env.id, { desired: 'absent' });
    await this.deps.store.events.append({
      envId: env.id,
      type: 'destroy',
      state: null,
      message: 'destroy requested',
    });
    this.deps.onChange(env.id);
    return updated;
  }

  /** The API resource; `live` adds what the runtime reports about each service. */
  async toResource(env: EnvironmentRecord, live = false): Promise<Environment> {
    let services: ServiceStatus[] = [];
    if (live && env.state !== 'destroyed') {
      try {
        const observed = await this.deps.runtime.observe(env.id);
        services = observed.workloads.map((w) => ({
          name: w.name,
          kind: w.kind,
          state: w.state,
          health: w.health,
          exitCode: w.exitCode,
        }));
      } catch {
        // The runtime being down must not hide the environment's recorded state.
      }
    }
    return {
      id: env.id,
      name: env.name,
      project: env.project,
      kind: env.kind,
      state: env.state,
      desired: env.desired,
      urls: env.state === 'destroyed' ? {} : urlsOf(env.plan, env.name, this.deps.urls),
      services,
      failure: env.failure,
      templateFile: env.templateFile,
      createdAt: env.createdAt.toISOString(),
      updatedAt: env.updatedAt.toISOString(),
      expiresAt: env.expiresAt?.toISOString() ?? null,
    };
  }
}

/** `shop-k3v9` from `examples/shop/compose.yaml`: the folder says what it is, the suffix keeps it unique. */
function defaultName(template: { filename: string; dir?: string | undefined }, id: string): string {
  const base = path.basename(template.dir ?? '') || path.basename(template.filename).replace(/\..*$/, '');
  const slug = base
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 30);
  return `${slug || 'env'}-${id.slice(0, 4)}`;
}
