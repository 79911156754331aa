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
import { seededSnapshotName } from '../snapshots/seed-key.js';
import type { Workspaces } from '../sources/workspaces.js';
import type { EnvironmentRecord, EnvOrigin, GitSource, Store } from '../store/store.js';
import type { TemplateOverride } from '../template/index.js';
import { ConflictError, InvalidRequestError, NotFoundError, QuotaExceededError } from './errors.js';
import { keptLogStream, prefixLines } from './log-lines.js';
import type { HostPathPolicy } from './plan-policy.js';
import { planTemplate, readTemplateFile } from './plan-template.js';
import { branchEnvName } from './preview-service.js';
import { type UrlScheme, urlsOf } from './urls.js';

/** Activity is written to the store at most this often per environment. */
export const ACTIVITY_WRITE_MS = 5_000;

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
  /**
   * The kept output of the environment's image builds (the last 256 KiB of each) instead of the
   * services' logs: `service` picks one; `tail` applies; `follow` cannot go with it.
   */
  build?: boolean;
  signal?: AbortSignal;
}

/** The state event a redeploy writes; a bring-up after it (and before the next ready) makes every service anew. */
export const REDEPLOY_MESSAGE = 'redeploy requested: every service restarts in a new container';

export class EnvironmentService {
  readonly defaultLogTail: number;
  /** Log streams read from the runtime right now (see `limits.maxLogStreams`). */
  private openLogStreams = 0;
  /** When each environment's activity was last written (see {@link recordActivity}). */
  private readonly activityWritten = new Map<string, number>();

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
    if (req.name !== undefined) await this.checkReservedName(req.name, project);
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
      const { template, name } = planned;
      // Asked to seed from scratch: said on each seeded volume, where the controller decides.
      const envPlan = req.noSnapshot
        ? {
            ...planned.plan,
            volumes: planned.plan.volumes.map((v) => (v.data ? { ...v, ignoreSnapshots: true } : v)),
          }
        : planned.plan;
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
        origin: { createdBy: await this.callerOf(access), pullRequest: null },
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
    origin: EnvOrigin;
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
      origin: input.origin,
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
      // A push counts as use: the idle clock starts again, and a sleeping preview wakes to update.
      lastActiveAt: new Date(),
      sleep: false,
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

  /**
   * Names of a project's previews (`<project>-pr-<n>`, its branch environment) are its own:
   * another project cannot take one and serve its app at what looks like that project's preview.
   */
  private async checkReservedName(name: string, project: string): Promise<void> {
    for (const p of await this.deps.store.projects.list()) {
      if (p.name === project) continue;
      if (new RegExp(`^${p.name}-pr-\\d+$`).test(name) || name === branchEnvName(p.name, p.branch)) {
        throw new ConflictError(`the name "${name}" is kept for the previews of project ${p.name}`);
      }
    }
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

  /** Puts the environment to sleep: containers stopped, volumes kept; the next request through the gateway wakes it. */
  async sleep(
    idOrName: string,
    access: Access = FULL_ACCESS,
    why = 'sleep requested',
  ): Promise<EnvironmentRecord> {
    const env = await this.findLive(idOrName, access);
    if (env.sleep) return env;
    if (env.state === 'failed')
      throw new ConflictError(`environment "${env.name}" failed; there is nothing to put to sleep`);
    return this.change(env, { sleep: true }, 'sleep', why, true);
  }

  /** Wakes a sleeping environment (or one asked to sleep): its services start again in dependency order. */
  async wake(
    idOrName: string,
    access: Access = FULL_ACCESS,
    why = 'wake requested',
  ): Promise<EnvironmentRecord> {
    const env = await this.findLive(idOrName, access);
    if (!env.sleep) return env;
    return this.change(env, { sleep: false, lastActiveAt: new Date() }, 'wake', why, true);
  }

  /**
   * Brings it up again from the template (and commit) it has: every service gets a new container,
   * volumes and jobs that already ran are kept, images are built only if gone. A failed one is
   * tried again from the start; a sleeping one wakes this way.
   */
  async redeploy(idOrName: string, access: Access = FULL_ACCESS): Promise<EnvironmentRecord> {
    const env = await this.findLive(idOrName, access);
    const settled =
      env.state === 'failed' ||
      (env.state === 'ready' && !env.sleep) ||
      (env.state === 'sleeping' && env.sleep);
    if (!settled)
      throw new ConflictError(
        `environment "${env.name}" is ${env.state}${env.sleep !== (env.state === 'sleeping') ? (env.sleep ? ' and going to sleep' : ' and waking up') : ''}: redeploy once it is ready (or has failed)`,
      );
    if (env.state !== 'failed' && env.revision > env.plannedRevision && env.revision > env.failedRevision)
      throw new ConflictError(`environment "${env.name}" is being updated: redeploy once the update is done`);
    const updated = await this.deps.store.environments.update(env.id, {
      state: 'pending',
      failure: null,
      sleep: false,
      attempts: 0,
      retryAt: null,
      lastActiveAt: new Date(),
      ...(env.ttlMs ? { expiresAt: new Date(Date.now() + env.ttlMs) } : {}),
    });
    // A state event (never pruned) is the mark: a bring-up that finds it after the last ready
    // makes every service anew. Written after the state: a crash in between only loses the redeploy.
    await this.deps.store.events.append({
      envId: env.id,
      type: 'state',
      state: 'pending',
      message: REDEPLOY_MESSAGE,
    });
    this.deps.onChange(env.id);
    return updated;
  }

  /** Pushes the end of its time to live back by `by` (from now when it has none or it has passed). */
  async extend(idOrName: string, by: string, access: Access = FULL_ACCESS): Promise<EnvironmentRecord> {
    const ms = parseDuration(by);
    if (ms === null) throw new InvalidRequestError(`"${by}" is not a duration like 30m, 2h or 1d`);
    const env = await this.findLive(idOrName, access);
    const from = Math.max(Date.now(), env.expiresAt?.getTime() ?? 0);
    const expiresAt = new Date(from + ms);
    if (expiresAt.getTime() - Date.now() > ENV_TTL_MAX_MS) {
      throw new InvalidRequestError(
        `that is longer than the most allowed, ${ENV_TTL_MAX_MS / 86_400_000}d from now`,
      );
    }
    return this.change(
      env,
      { expiresAt, keep: false },
      'ttl',
      `time to live extended to ${expiresAt.toISOString()}`,
    );
  }

  /** Keeps it: no time to live, never put to sleep or destroyed for being idle (until destroyed by hand). */
  async keep(idOrName: string, access: Access = FULL_ACCESS, why = 'kept'): Promise<EnvironmentRecord> {
    const env = await this.findLive(idOrName, access);
    if (env.keep) return env;
    return this.change(
      env,
      { keep: true, expiresAt: null, ttlMs: null },
      'keep',
      `${why}: no time to live, never put to sleep for being idle`,
    );
  }

  /**
   * Notes a request the gateway routed to it. Kept in memory and written at most once per
   * {@link ACTIVITY_WRITE_MS} per environment, so traffic does not become a write per request.
   */
  recordActivity(envId: string): void {
    const now = Date.now();
    const last = this.activityWritten.get(envId) ?? 0;
    if (now - last < ACTIVITY_WRITE_MS) return;
    this.activityWritten.set(envId, now);
    if (this.activityWritten.size > 10_000) this.activityWritten.clear();
    void this.deps.store.environments.update(envId, { lastActiveAt: new Date(now) }).catch(() => {});
  }

  private async findLive(idOrName: string, access: Access): Promise<EnvironmentRecord> {
    const env = await this.find(idOrName, access);
    if (env.desired === 'absent' || env.state === 'destroyed') {
      throw new ConflictError(`environment "${env.name}" is being destroyed`);
    }
    return env;
  }

  private async change(
    env: EnvironmentRecord,
    patch: Parameters<Store['environments']['update']>[1],
    type: string,
    message: string,
    /** Work in flight on it no longer applies (sleep, wake): the reconciler stops it and acts now. */
    converge = false,
  ): Promise<EnvironmentRecord> {
    const updated = await this.deps.store.environments.update(
      env.id,
      converge ? { ...patch, attempts: 0, retryAt: null } : patch,
    );
    await this.deps.store.events.append({ envId: env.id, type, state: null, message });
    if (converge) this.deps.onChange(env.id);
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
   * With `build`, the kept output of the image builds instead (see {@link buildLogs}).
   */
  async logs(idOrName: string, access: Access, request: LogRequest): Promise<Readable> {
    if (request.build && request.follow) {
      throw new InvalidRequestError(
        'follow is not supported with build: build output is read once it is kept',
      );
    }
    const env = await this.find(idOrName, access);
    const names = env.plan?.workloads.map((w) => w.name) ?? [];
    if (request.service !== undefined && !names.includes(request.service)) {
      throw new NotFoundError(`environment "${env.name}" has no service or job "${request.service}"`);
    }
    // Kept logs are named by workload; a build's output is kept as `build:<workload>`, a name no
    // workload can have (`names` are the plan's), so it never reads as a service's logs below.
    const kept = new Map((await this.deps.store.logs.list(env.id)).map((k) => [k.workload, k.text]));
    if (request.build) return this.buildLogs(kept, request);
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

  /**
   * The output of the last build of one service's image, or of every service's (each line
   * prefixed `service | `), from the kept logs `build:<service>` the reconciler saves. A service
   * whose image was reused, not built, for this environment has none.
   */
  private buildLogs(kept: Map<string, string>, request: LogRequest): Readable {
    const PREFIX = 'build:';
    if (request.service !== undefined) {
      const text = kept.get(`${PREFIX}${request.service}`);
      if (text === undefined) {
        throw new NotFoundError(
          `no build output for "${request.service}" (it has no build, or its image was reused rather than built for this environment)`,
        );
      }
      return keptLogStream(text, request.tail);
    }
    const sources = [...kept]
      .filter(([name]) => name.startsWith(PREFIX))
      .map(([name, text]) => ({
        service: name.slice(PREFIX.length),
        stream: keptLogStream(text, request.tail),
      }));
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
      sleep: env.sleep,
      keep: env.keep,
      lastActiveAt: env.lastActiveAt?.toISOString() ?? null,
      commit: env.source?.commit ?? null,
      data: await this.dataOrigins(env),
      updateFailure:
        env.updateFailure && env.failedRevision === env.revision
          ? {
              step: env.updateFailure.step,
              reason: env.updateFailure.reason,
              commit: env.updateFailure.commit,
              at: env.updateFailure.at,
            }
          : null,
      createdBy: env.origin?.createdBy ?? null,
      pullRequest: env.origin?.pullRequest ?? null,
    };
  }

  /**
   * Who is asking, in words, as an environment keeps it: the token's name (a dashboard session's
   * is the token it was started with).
   */
  private async callerOf(access: Access): Promise<string> {
    if (access.tokenId === null) return 'the server';
    const token = await this.deps.store.tokens.get(access.tokenId);
    if (token?.parentId) {
      const parent = await this.deps.store.tokens.get(token.parentId);
      return `token ${parent?.name ?? token.parentId} (dashboard)`;
    }
    return `token ${token?.name ?? access.tokenId}`;
  }

  /**
   * Where each volume with data got it, as the API says it (see `VolumeOrigin`). A seeded one
   * names its seed's snapshot once that is kept (ready), not because one was to be taken: the
   * taking may have failed, been given up on, or the snapshot removed since.
   */
  private async dataOrigins(env: EnvironmentRecord): Promise<Environment['data']> {
    const withOrigin = (env.plan?.volumes ?? []).filter((v) => v.origin);
    return Promise.all(
      withOrigin.map(async (v) => {
        const origin = v.origin!;
        const job = v.data && 'seededBy' in v.data ? v.data.seededBy : null;
        if ('restored' in origin)
          return { volume: v.name, origin: 'restored' as const, snapshot: origin.restored.snapshotName, job };
        const name = seededSnapshotName(v.name, origin.seeded.key);
        const kept =
          origin.seeded.takeSnapshot && (await this.deps.store.snapshots.findByName(env.project, name));
        const ready = kept && kept.state === 'ready' && kept.seedKey === origin.seeded.key;
        return { volume: v.name, origin: 'seeded' as const, snapshot: ready ? name : null, job };
      }),
    );
  }
}
