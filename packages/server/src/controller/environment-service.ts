/**
 * What triggers (API, CLI, webhooks) do to environments: record desired state and an event, and
 * nudge the reconciler. Reading an environment's logs and timeline goes through here too, so the
 * API never touches the store or a runtime itself.
 */
import path from 'node:path';
import { finished, type Readable } from 'node:stream';
import {
  CreateEnvironmentRequest,
  type CreateEnvironmentRequest as CreateInput,
  ENV_TTL_MAX_MS,
  type EnvEvent,
  type Environment,
  parseDuration,
  type ServiceStatus,
} from '@mayfly/contract';
import { customAlphabet } from 'nanoid';
import { type Access, canSee, FULL_ACCESS, projectForCreate } from '../access/access.js';
import { type Runtime, WorkloadNotFoundError } from '../runtime/runtime.js';
import type { Workspaces } from '../sources/workspaces.js';
import type { EnvironmentRecord, GitSource, Store } from '../store/store.js';
import type { TemplateOverride } from '../template/index.js';
import { InvalidRequestError, NotFoundError, QuotaExceededError } from './errors.js';
import { keptLogStream, prefixLines } from './log-lines.js';
import type { HostPathPolicy } from './plan-policy.js';
import { planTemplate, readTemplateFile } from './plan-template.js';
import { type UrlScheme, urlsOf } from './urls.js';

/** Lowercase so ids are valid in Docker names and Kubernetes namespaces alike. */
const newId = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 10);

export interface EnvironmentServiceDeps {
  store: Store;
  runtime: Runtime;
  urls: UrlScheme;
  workspaces: Workspaces;
  /** Host paths templates may name, besides their own folder; limits every workload gets by default. */
  policy: HostPathPolicy & { defaultMemoryBytes: number; defaultPids: number };
  /** Lines of logs served when the caller does not say how many. */
  defaultLogTail?: number;
  limits: {
    /** Environments (all but destroyed ones) at once; one more create is refused with 429. */
    maxEnvironments: number;
    /** Log streams read from the runtime at once, across all requests. */
    maxLogStreams: number;
  };
  /** Called after every change of desired state, so the reconciler acts now rather than on its next tick. */
  onChange: (envId: string) => void;
}

export interface LogRequest {
  service?: string | undefined;
  /** Last N lines; undefined: every line. */
  tail?: number | undefined;
  follow?: boolean;
  signal?: AbortSignal;
}

export class EnvironmentService {
  readonly defaultLogTail: number;
  /** Log streams read from the runtime right now (see `limits.maxLogStreams`). */
  private openLogStreams = 0;

  constructor(private readonly deps: EnvironmentServiceDeps) {
    this.defaultLogTail = deps.defaultLogTail ?? 1_000;
  }

  /**
   * Validates the template and records a new environment as `pending`; the reconciler creates it.
   * A template from a bundle is read from the server's own copy of it, which becomes the
   * environment's work dir; nothing the client names on the server's disk is ever read.
   */
  async create(input: CreateInput, access: Access = FULL_ACCESS): Promise<EnvironmentRecord> {
    const req = CreateEnvironmentRequest.parse(input);
    const project = projectForCreate(
      access,
      input.project === undefined ? undefined : req.project,
      'default',
    );
    let ttlMs: number | null = null;
    if (req.ttl !== undefined) {
      ttlMs = parseDuration(req.ttl);
      if (ttlMs === null)
        throw new InvalidRequestError(`ttl "${req.ttl}" is not a duration like 30m, 2h or 1d`);
    }
    await this.checkQuota();
    const id = newId();
    const { workspaces } = this.deps;
    const sourceDir = req.template.bundle ? await workspaces.claimBundle(req.template.bundle, id) : null;
    let recorded = false;
    try {
      const content =
        sourceDir === null
          ? (req.template.content ?? '')
          : await readTemplateFile(sourceDir, req.template.filename);
      if (content.includes('\0')) throw new InvalidRequestError('the template contains a NUL character');
      // Read like the template itself (only with a bundle: the contract says so); only the plan,
      // made from all of them, is kept.
      const overrides: TemplateOverride[] = [];
      for (const filename of sourceDir === null ? [] : (req.template.overrides ?? [])) {
        const text = await readTemplateFile(sourceDir!, filename);
        if (text.includes('\0'))
          throw new InvalidRequestError(`the override file "${filename}" contains a NUL character`);
        overrides.push({ filename, content: text });
      }
      const planned = await planTemplate(this.deps, {
        envId: id,
        project,
        filename: req.template.filename,
        content,
        overrides,
        sourceDir,
        inputs: req.inputs,
        profiles: req.profiles,
        name: req.name,
        namePrefix: req.namePrefix ?? path.basename(req.template.filename).replace(/\..*$/, ''),
      });
      const { template, plan: envPlan, name } = planned;
      if (req.ttl === undefined) ttlMs = template.lifecycle.ttlMs;
      if (ttlMs !== null && ttlMs > ENV_TTL_MAX_MS) {
        throw new InvalidRequestError(
          `the time to live is longer than the most allowed, ${ENV_TTL_MAX_MS / 86_400_000}d`,
        );
      }

      const record = await this.deps.store.environments.create({
        id,
        name,
        project,
        kind: req.kind,
        templateFile: req.template.filename,
        templateContent: content,
        templateDir: sourceDir,
        inputs: req.inputs,
        plan: envPlan,
        ttlMs,
        expiresAt: ttlMs ? new Date(Date.now() + ttlMs) : null,
      });
      recorded = true;
      await this.deps.store.events.append({
        envId: id,
        type: 'state',
        state: 'pending',
        message: 'requested',
      });
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
    } catch (err) {
      // Nothing was recorded: the claimed bundle, bind copies and written files go too (a template
      // sent inline may have had files written for it as well).
      if (!recorded) await workspaces.remove(id).catch(() => {});
      throw err;
    }
  }

  /**
   * Records an environment whose template comes from a commit of a git repository (a preview):
   * nothing is read now, so a webhook is answered at once; the controller checks the commit out,
   * plans and builds it.
   */
  async createFromSource(input: {
    name: string;
    project: string;
    kind: EnvironmentRecord['kind'];
    source: GitSource;
    inputs: Record<string, string>;
    ttlMs: number | null;
  }): Promise<EnvironmentRecord> {
    await this.checkQuota();
    const id = newId();
    const record = await this.deps.store.environments.create({
      id,
      name: input.name,
      project: input.project,
      kind: input.kind,
      templateFile: input.source.templateFile ?? '(found in the repository)',
      templateContent: '',
      templateDir: null,
      inputs: input.inputs,
      plan: null,
      ttlMs: input.ttlMs,
      expiresAt: input.ttlMs ? new Date(Date.now() + input.ttlMs) : null,
      source: input.source,
      revision: 1,
    });
    await this.deps.store.events.append({
      envId: id,
      type: 'state',
      state: 'pending',
      message: `requested: commit ${input.source.commit.slice(0, 12)}`,
    });
    this.deps.onChange(id);
    return record;
  }

  /**
   * Asks for an update in place to another commit: a ready environment keeps running while the
   * controller builds the new one and replaces only what changed; a failed one is brought up
   * afresh. The time to live counts from now.
   */
  async updateSource(
    envId: string,
    input: { source: GitSource; inputs: Record<string, string> },
  ): Promise<EnvironmentRecord> {
    const env = await this.deps.store.environments.get(envId);
    if (!env || env.desired === 'absent') throw new NotFoundError(`no environment "${envId}"`);
    const fresh = env.state === 'failed';
    const updated = await this.deps.store.environments.update(env.id, {
      source: input.source,
      inputs: input.inputs,
      revision: env.revision + 1,
      attempts: 0,
      retryAt: null,
      ...(env.ttlMs ? { expiresAt: new Date(Date.now() + env.ttlMs) } : {}),
      ...(fresh ? { state: 'pending', failure: null } : {}),
    });
    await this.deps.store.events.append({
      envId: env.id,
      type: fresh ? 'state' : 'update',
      state: fresh ? 'pending' : null,
      message: `update requested: commit ${input.source.commit.slice(0, 12)}`,
    });
    this.deps.onChange(env.id);
    return updated;
  }

  /** Refuses one more environment past the server's limit (429, with why). */
  private async checkQuota(): Promise<void> {
    const { maxEnvironments } = this.deps.limits;
    const { destroyed: _gone, ...live } = await this.deps.store.environments.countByState();
    const existing = Object.values(live).reduce((sum, n) => sum + (n ?? 0), 0);
    if (existing >= maxEnvironments) {
      throw new QuotaExceededError(
        `${existing} environments exist, the most this server allows (${maxEnvironments}): destroy some first`,
      );
    }
  }

  /** The environment, if the caller may see it; otherwise it does not exist for them. */
  async find(idOrName: string, access: Access = FULL_ACCESS): Promise<EnvironmentRecord> {
    const env =
      (await this.deps.store.environments.get(idOrName)) ??
      (await this.deps.store.environments.getByName(idOrName));
    if (!env || !canSee(access, env.project)) throw new NotFoundError(`no environment "${idOrName}"`);
    return env;
  }

  list(
    access: Access = FULL_ACCESS,
    options: { project?: string | undefined; all?: boolean } = {},
  ): Promise<EnvironmentRecord[]> {
    if (access.project !== null && options.project !== undefined && options.project !== access.project) {
      return Promise.resolve([]);
    }
    return this.deps.store.environments.list({
      project: access.project ?? options.project,
      includeDestroyed: options.all ?? false,
    });
  }

  /** Marks the environment for teardown; the reconciler destroys it and verifies nothing is left. */
  async destroy(idOrName: string, access: Access = FULL_ACCESS): Promise<EnvironmentRecord> {
    const env = await this.find(idOrName, access);
    if (env.desired === 'absent') return env;
    const updated = await this.deps.store.environments.update(env.id, {
      desired: 'absent',
      attempts: 0,
      retryAt: null,
    });
    await this.deps.store.events.append({
      envId: env.id,
      type: 'destroy',
      state: null,
      message: 'destroy requested',
    });
    this.deps.onChange(env.id);
    return updated;
  }

  /** The timeline, oldest first, after event id `after`. */
  async events(
    idOrName: string,
    access: Access,
    options: { after?: number | undefined } = {},
  ): Promise<EnvEvent[]> {
    const env = await this.find(idOrName, access);
    const events = await this.deps.store.events.list(env.id, { afterId: options.after });
    return events.map((e) => ({
      id: e.id,
      envId: e.envId,
      type: e.type,
      state: e.state,
      message: e.message,
      at: e.at.toISOString(),
    }));
  }

  /**
   * Logs of one service, or of all of them with each line prefixed `service | `. Live from the
   * runtime while the containers exist; afterwards (a failed or destroyed environment) the last
   * lines kept in the store. Streams end when the containers go (destroy) or `signal` aborts.
   */
  async logs(idOrName: string, access: Access, request: LogRequest): Promise<Readable> {
    const env = await this.find(idOrName, access);
    const names = env.plan?.workloads.map((w) => w.name) ?? [];
    if (request.service !== undefined && !names.includes(request.service)) {
      throw new NotFoundError(`environment "${env.name}" has no service or job "${request.service}"`);
    }
    const kept = new Map((await this.deps.store.logs.list(env.id)).map((k) => [k.workload, k.text]));
    const live = env.state !== 'destroyed' && env.state !== 'failed';
    const wanted = request.service !== undefined ? 1 : names.length;
    if (live && this.openLogStreams + wanted > this.deps.limits.maxLogStreams) {
      throw new QuotaExceededError(
        `${this.openLogStreams} log streams are open, the most this server reads at once is ${this.deps.limits.maxLogStreams}: close some (a followed log stays open until it is stopped)`,
      );
    }
    const open = async (service: string): Promise<Readable | null> => {
      if (live) {
        try {
          const stream = await this.deps.runtime.logs(env.id, service, {
            follow: request.follow ?? false,
            tail: request.tail,
            ...(request.signal ? { signal: request.signal } : {}),
          });
          this.openLogStreams++;
          finished(stream, () => this.openLogStreams--);
          return stream;
        } catch (err) {
          if (!(err instanceof WorkloadNotFoundError)) throw err;
        }
      }
      const text = kept.get(service);
      return text === undefined ? null : keptLogStream(text, request.tail);
    };
    if (request.service !== undefined) {
      const stream = await open(request.service);
      if (!stream) throw new NotFoundError(`no logs of "${request.service}" (it has not run)`);
      return stream;
    }
    const sources: { service: string; stream: Readable }[] = [];
    for (const service of names) {
      const stream = await open(service);
      if (stream) sources.push({ service, stream });
    }
    return prefixLines(sources, request.signal);
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
