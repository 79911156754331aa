/**
 * The preview loop, level-triggered like the reconciler: for every open pull request (or branch)
 * of a project, decide what its environment should be — created from the head commit, updated in
 * place to it, left alone (filtered, or a fork waiting for approval), or destroyed when closed —
 * and report its state back to the forge until the forge has seen the latest. Work on a preview
 * is leased, so replicas never both act on it; every step is idempotent, so a crash anywhere is
 * picked up by the next pass (the comment is found again by its marker, never posted twice).
 */
import os from 'node:os';
import path from 'node:path';
import { parseDuration } from '@mayfly/contract';
import picomatch from 'picomatch';
import { FULL_ACCESS } from '../access/access.js';
import type { Logger } from '../observability/logger.js';
import { changedPaths as gitChangedPaths } from '../sources/git-checkout.js';
import {
  type EnvironmentRecord,
  type GitSource,
  LeaseLostError,
  NameTakenError,
  type PreviewRecord,
  type ProjectRecord,
  type Store,
} from '../store/store.js';
import type { ForgeReporter, PreviewReport } from '../triggers/forge-reporter.js';
import type { EnvironmentService } from './environment-service.js';
import { QuotaExceededError } from './errors.js';
import { previewStatus } from './preview-service.js';
import { type UrlScheme, urlsOf } from './urls.js';

export interface PreviewControllerOptions {
  store: Store;
  environments: EnvironmentService;
  reporter: ForgeReporter;
  urls: UrlScheme;
  logger: Logger;
  owner: string;
  leaseMs: number;
  intervalMs: number;
  /** Lists the paths a pull request changes (the real git in production). */
  changedPaths?: typeof gitChangedPaths;
  /** Scratch space for git (path filters). */
  tmpDir?: string;
  /** The server's data dir: never named in what is posted to the forge (it may be public). */
  dataDir?: string;
}

const MAX_REPORT_BACKOFF_MS = 10 * 60_000;
/** Idle policies are checked at most this often. */
const IDLE_CHECK_MS = 5_000;
/** A pull request with this label keeps its preview. */
export const KEEP_LABEL = 'mayfly:keep';

export class PreviewController {
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private passRunning: Promise<void> | null = null;
  private passAgain = false;
  private stopped = true;
  private readonly abort = new AbortController();
  private lastIdleCheck = 0;

  constructor(private readonly o: PreviewControllerOptions) {}

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.o.intervalMs);
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.abort.abort(new Error('control plane stopping'));
    await this.passRunning;
    await Promise.allSettled([...this.inFlight.values()]);
  }

  kick(): void {
    if (this.stopped) return;
    if (this.passRunning) {
      this.passAgain = true;
      return;
    }
    this.passRunning = this.pass()
      .catch((err) => this.o.logger.error({ err }, 'preview pass failed'))
      .finally(() => {
        this.passRunning = null;
        if (this.passAgain) {
          this.passAgain = false;
          this.kick();
        }
      });
  }

  /** Resolves when no preview is being worked on (tests). */
  async idle(): Promise<void> {
    while (this.passRunning || this.inFlight.size > 0) {
      await this.passRunning;
      await Promise.allSettled([...this.inFlight.values()]);
    }
  }

  private async pass(): Promise<void> {
    await this.applyIdlePolicies().catch((err) =>
      this.o.logger.warn({ err }, 'idle policies failed; will retry'),
    );
    for (const preview of await this.o.store.previews.listActive()) {
      if (this.inFlight.has(preview.id)) continue;
      const done = this.work(preview.id)
        .catch((err) => this.o.logger.error({ err, preview: preview.id }, 'preview work failed'))
        .finally(() => this.inFlight.delete(preview.id));
      this.inFlight.set(preview.id, done);
    }
  }

  private async work(id: string): Promise<void> {
    const { store, owner, leaseMs } = this.o;
    if (!(await store.previews.claim(id, owner, leaseMs))) return;
    try {
      let preview = await store.previews.get(id);
      if (!preview) return;
      const project = await store.projects.get(preview.project);
      if (!project) {
        await store.previews.update(id, { decision: 'closed' }, { owner });
        return;
      }
      preview = await this.decide(project, preview);
      await this.report(project, preview);
    } catch (err) {
      if (!(err instanceof LeaseLostError)) throw err;
    } finally {
      await store.previews.release(id, owner).catch(() => {});
    }
  }

  /**
   * Projects' idle policies: a preview no request reached for `idle.after` (counted from its last
   * request, update or wake) is put to sleep or destroyed. Kept ones never are. At most every few
   * seconds, whatever the number of passes.
   */
  private async applyIdlePolicies(): Promise<void> {
    if (Date.now() - this.lastIdleCheck < IDLE_CHECK_MS) return;
    this.lastIdleCheck = Date.now();
    const { store, environments } = this.o;
    for (const project of await store.projects.list()) {
      const idle = project.policy.idle;
      const afterMs = idle ? parseDuration(idle.after) : null;
      if (!idle || afterMs === null) continue;
      for (const env of await store.environments.list({ project: project.name, states: ['ready'] })) {
        if (env.keep || env.sleep || env.desired !== 'present' || env.kind !== 'preview') continue;
        const since = Math.max(env.lastActiveAt?.getTime() ?? 0, env.createdAt.getTime());
        if (Date.now() - since < afterMs) continue;
        const why = `idle for ${idle.after} (the project's idle policy)`;
        if (idle.action === 'sleep') await environments.sleep(env.id, FULL_ACCESS, `${why}: put to sleep`);
        else {
          await store.events.append({
            envId: env.id,
            type: 'idle',
            state: null,
            message: `${why}: destroyed`,
          });
          await environments.destroy(env.id);
        }
      }
    }
  }

  /**
   * Room for one more awake preview under the project's `maxEnvironments`: the least recently used
   * awake ones (not kept) are put to sleep rather than the new one refused.
   */
  async makeRoom(project: ProjectRecord, except: string | null = null): Promise<void> {
    const max = project.policy.maxEnvironments;
    if (max === null) return;
    const awake = (await this.o.store.environments.list({ project: project.name })).filter(
      (e) =>
        e.kind === 'preview' &&
        e.desired === 'present' &&
        !e.sleep &&
        e.state !== 'failed' &&
        e.id !== except,
    );
    const candidates = awake
      .filter((e) => !e.keep && e.state === 'ready') // one coming up finishes first
      .sort((a, b) => (a.lastActiveAt ?? a.createdAt).getTime() - (b.lastActiveAt ?? b.createdAt).getTime());
    for (const env of candidates.slice(0, Math.max(0, awake.length - max + 1))) {
      await this.o.environments.sleep(
        env.id,
        FULL_ACCESS,
        `the project allows ${max} awake previews: the least recently used is put to sleep`,
      );
    }
  }

  /** Before a sleeping preview wakes (a request came): room under its project's `maxEnvironments`. */
  async makeRoomToWake(envId: string): Promise<void> {
    const env = await this.o.store.environments.get(envId);
    if (env?.kind !== 'preview' || !env.sleep) return;
    const project = await this.o.store.projects.get(env.project);
    if (project) await this.makeRoom(project, env.id);
  }

  /** Makes the environment what the pull request asks for; idempotent. */
  private async decide(project: ProjectRecord, preview: PreviewRecord): Promise<PreviewRecord> {
    const { store, environments, owner } = this.o;
    const env = await this.liveEnvironment(preview);
    if (!preview.open) {
      // Forgotten what was built for it: reopened, it is built again.
      if (env) {
        await environments.destroy(env.id);
        return store.previews.update(
          preview.id,
          { decision: 'closing', envId: env.id, handled: null },
          { owner },
        );
      }
      // Gone (or never made): the report of the closing marks the preview done.
      return preview.handled === null
        ? preview
        : store.previews.update(preview.id, { handled: null }, { owner });
    }
    const fingerprint = JSON.stringify([
      preview.open,
      preview.headSha,
      preview.approved,
      preview.draft,
      preview.labels,
      project.policy,
      project.updatedAt,
    ]);
    // Acted on already: an environment destroyed since (time to live, by hand) stays so until the next push.
    if (preview.handled === fingerprint) return preview;

    // Before any filter: a fork's commits are not even fetched (path filters) until approved.
    if (preview.fromFork && !preview.approved) {
      const how = project.policy.approvalLabel
        ? `add the label "${project.policy.approvalLabel}" or run: mayfly approve ${project.name} ${preview.number}`
        : `run: mayfly approve ${project.name} ${preview.number}`;
      return store.previews.update(
        preview.id,
        {
          decision: 'awaiting-approval',
          detail: `from a fork: not built until approved (${how})`,
          handled: fingerprint,
        },
        { owner },
      );
    }
    const skip = await this.skipReason(project, preview);
    if (skip) {
      return store.previews.update(
        preview.id,
        { decision: 'skipped', detail: skip, handled: fingerprint },
        { owner },
      );
    }
    const source: GitSource = {
      repoUrl: project.repoUrl,
      commit: preview.headSha,
      // GitHub and GitLab keep every pull request's head under these refs of the base repository,
      // so a fork's commit is fetched from the project's own repository, with its own token.
      ref:
        preview.number === null
          ? `refs/heads/${preview.branch}`
          : project.forge === 'gitlab'
            ? `refs/merge-requests/${preview.number}/head`
            : `refs/pull/${preview.number}/head`,
      templateFile: project.templateFile,
    };
    const inputs: Record<string, string> = {
      ...project.policy.inputs,
      // A fork's code never gets the project's secrets.
      ...(preview.fromFork ? {} : project.secretInputs),
      COMMIT_SHA: preview.headSha,
      BRANCH: preview.headRef,
      PR_NUMBER: preview.number === null ? '' : String(preview.number),
    };
    let envId = env?.id ?? null;
    if (!env) {
      await this.makeRoom(project);
      const ttl = project.policy.ttl ? parseDuration(project.policy.ttl) : null;
      try {
        const created = await environments.createFromSource({
          name: preview.envName,
          project: project.name,
          kind: 'preview',
          source,
          inputs,
          ttlMs: ttl,
          origin: {
            createdBy:
              preview.number === null
                ? `preview of branch ${preview.branch ?? preview.headRef}`
                : `preview of pull request #${preview.number}`,
            pullRequest: preview.number === null ? null : { number: preview.number, url: preview.url },
            ...(preview.fromFork ? { fromFork: true } : {}),
          },
        });
        envId = created.id;
      } catch (err) {
        if (err instanceof QuotaExceededError) {
          return store.previews.update(preview.id, { decision: 'building', detail: err.message }, { owner });
        }
        if (!(err instanceof NameTakenError)) throw err;
        // Made by a pass that died before recording it, or by hand: adopted if it is ours.
        const named = await store.environments.getByName(preview.envName);
        if (!named || named.project !== project.name || !named.source) {
          return store.previews.update(
            preview.id,
            {
              decision: 'skipped',
              detail: `an environment named ${preview.envName} exists and is not this preview's`,
              handled: fingerprint,
            },
            { owner },
          );
        }
        envId = named.id;
        if (named.source.commit !== preview.headSha)
          await environments.updateSource(named.id, { source, inputs });
      }
    } else if (env.source?.commit !== preview.headSha) {
      // A push wakes a sleeping preview to update it: room for it first.
      if (env.sleep) await this.makeRoom(project, env.id);
      await environments.updateSource(env.id, { source, inputs });
    }
    // The `mayfly:keep` label keeps the preview: no time to live, never put to sleep for idleness.
    if (envId && preview.labels.includes(KEEP_LABEL)) {
      await environments.keep(envId, FULL_ACCESS, `kept by the ${KEEP_LABEL} label`);
    }
    return store.previews.update(
      preview.id,
      { decision: 'building', detail: null, envId, handled: fingerprint },
      { owner },
    );
  }

  /** Why the project's filters leave this preview out, or null. */
  private async skipReason(project: ProjectRecord, preview: PreviewRecord): Promise<string | null> {
    const { filters } = project.policy;
    if (preview.number !== null && preview.draft && filters.skipDrafts)
      return 'a draft: built once it is ready for review';
    if (preview.number !== null && filters.requireLabel && !preview.labels.includes(filters.requireLabel)) {
      return `built only with the label "${filters.requireLabel}"`;
    }
    if (filters.branches.length > 0 && !picomatch(filters.branches)(preview.baseRef)) {
      return `the branch ${preview.baseRef} matches none of ${filters.branches.join(', ')}`;
    }
    if (filters.paths.length > 0 && preview.number !== null && preview.baseSha) {
      const paths = await (this.o.changedPaths ?? gitChangedPaths)({
        repoUrl: project.repoUrl,
        base: preview.baseSha,
        head: preview.headSha,
        ...(project.forgeToken ? { token: project.forgeToken } : {}),
        signal: this.abort.signal,
        tmpDir: this.o.tmpDir ?? path.join(os.tmpdir(), 'mayfly-git'),
      });
      const match = picomatch(filters.paths, { dot: true });
      if (!paths.some((p) => match(p))) return `changes no path matching ${filters.paths.join(', ')}`;
    }
    return null;
  }

  /** The preview's environment while it exists (not being destroyed). */
  private async liveEnvironment(preview: PreviewRecord): Promise<EnvironmentRecord | null> {
    const env = preview.envId
      ? await this.o.store.environments.get(preview.envId)
      : await this.o.store.environments.getByName(preview.envName);
    if (!env || env.project !== preview.project || env.desired !== 'present' || env.state === 'destroyed')
      return null;
    return env;
  }

  /** Tells the forge what changed since it was last told; retried with backoff, never blocking. */
  private async report(project: ProjectRecord, preview: PreviewRecord): Promise<void> {
    const { store, owner, reporter, logger } = this.o;
    const env = preview.envId ? await store.environments.get(preview.envId) : null;
    const status = previewStatus(preview, env);
    const report = await this.reportOf(project, preview, env, status);
    const fingerprint = JSON.stringify(report);
    const done = !preview.open && status.state === 'closed' && status.detail === null;
    if (preview.reported !== fingerprint && report.readyInMs !== null) {
      // Kept for the project's page (time from webhook to ready): once per preview and head.
      await store.previews.recordReadiness({
        project: preview.project,
        previewId: preview.id,
        envName: preview.envName,
        number: preview.number,
        branch: preview.branch,
        headSha: preview.headSha,
        receivedAt: preview.receivedAt,
        readyAt: new Date(preview.receivedAt.getTime() + report.readyInMs),
        readyMs: report.readyInMs,
      });
    }
    if (preview.reported === fingerprint) {
      if (done && preview.decision !== 'closed')
        await store.previews.update(preview.id, { decision: 'closed' }, { owner });
      return;
    }
    if (!reporter.canReport(project)) {
      await store.previews.update(
        preview.id,
        { reported: fingerprint, ...(done ? { decision: 'closed' } : {}) },
        { owner },
      );
      return;
    }
    try {
      const previous = preview.reported ? (JSON.parse(preview.reported) as PreviewReport) : null;
      const ids = await reporter.report(project, preview, report, previous, this.abort.signal);
      await store.previews.update(
        preview.id,
        {
          ...ids,
          reported: fingerprint,
          attempts: 0,
          retryAt: null,
          ...(done ? { decision: 'closed' } : {}),
        },
        { owner },
      );
    } catch (err) {
      if (this.abort.signal.aborted) return;
      const attempts = preview.attempts + 1;
      const delay = Math.min(1_000 * 2 ** attempts, MAX_REPORT_BACKOFF_MS);
      logger.warn(
        { err: (err as Error).message, preview: preview.id, attempts },
        'reporting to the forge failed; will retry',
      );
      await store.previews.update(preview.id, { attempts, retryAt: new Date(Date.now() + delay) }, { owner });
    }
  }

  /**
   * What may be posted on a pull request, which the public may read: the server's own paths
   * become `<data dir>`, and the values of the project's secret inputs (a template may have
   * quoted one in an error) are masked.
   */
  private redact(text: string, project: ProjectRecord): string {
    let out = this.o.dataDir ? text.split(this.o.dataDir).join('<data dir>') : text;
    for (const value of Object.values(project.secretInputs)) {
      if (value.length >= 4) out = out.split(value).join('***');
    }
    return out;
  }

  private async reportOf(
    project: ProjectRecord,
    preview: PreviewRecord,
    env: EnvironmentRecord | null,
    status: { state: PreviewReport['state']; detail: string | null },
  ): Promise<PreviewReport> {
    const urls = env ? urlsOf(env.plan, env.name, this.o.urls) : {};
    const services = (env?.plan?.workloads ?? [])
      .filter((w) => w.kind === 'service')
      .map((w) => ({
        name: w.name,
        state: status.state === 'ready' ? 'running' : status.state,
        url: urls[w.name] ?? null,
      }));
    let readyInMs: number | null = null;
    if (status.state === 'ready' && env) {
      const events = await this.o.store.events.list(env.id);
      const short = preview.headSha.slice(0, 12);
      // Ready at this head: after it was asked for (a create or an update to it), not a wake or
      // repair of the commit before.
      const asked = events.findLastIndex(
        (e) =>
          e.message === `requested: commit ${short}` || e.message === `update requested: commit ${short}`,
      );
      const readyAt = events
        .slice(asked + 1)
        .filter(
          (e) =>
            (asked >= 0 && e.type === 'state' && e.state === 'ready') ||
            (e.type === 'update' && e.message.startsWith(`updated to ${short}`)),
        )
        .map((e) => e.at.getTime())
        .filter((t) => t >= preview.receivedAt.getTime())
        .at(0);
      if (readyAt !== undefined) readyInMs = readyAt - preview.receivedAt.getTime();
    }
    return {
      state: status.state,
      detail: status.detail === null ? null : this.redact(status.detail, project),
      envName: preview.envName,
      commit: preview.headSha,
      services,
      readyInMs,
    };
  }
}
