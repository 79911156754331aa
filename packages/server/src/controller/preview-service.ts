/**
 * Previews: what the forge said about a project's pull requests and branches, recorded for the
 * preview controller to act on, and their state as users and the forge see it.
 */
import { type Preview, type PreviewState, percentile, type ReadinessStats } from '@mayfly/contract';
import { type Access, canSee, FULL_ACCESS } from '../access/access.js';
import type { EnvironmentRecord, PreviewFacts, PreviewRecord, ProjectRecord, Store } from '../store/store.js';
import type { ChangeRequestEvent, ForgeEvent, PushEvent } from '../triggers/forge-event.js';
import { ConflictError, NotFoundError } from './errors.js';

export interface PreviewServiceDeps {
  store: Store;
  /** Called after a change the preview controller should act on. */
  onChange: (previewId: string) => void;
}

/** Most samples of webhook-to-ready read for a project's statistics (the newest). */
export const READINESS_SAMPLES_MAX = 10_000;

/** Samples listed in the answer (the newest); the figures count every one. */
export const READINESS_ITEMS_SHOWN = 100;

/** A preview's state and why, as shown in the API and on the forge. */
export interface PreviewStatus {
  state: PreviewState;
  detail: string | null;
}

export class PreviewService {
  constructor(private readonly deps: PreviewServiceDeps) {}

  /** Records what a verified webhook says; returns what will happen, in words. */
  async record(project: ProjectRecord, event: ForgeEvent): Promise<string> {
    if (event.kind === 'change_request') return this.recordChangeRequest(project, event);
    if (event.kind === 'push') return this.recordPush(project, event);
    return 'ignored';
  }

  private async recordChangeRequest(project: ProjectRecord, event: ChangeRequestEvent): Promise<string> {
    const id = `${project.name}/pr/${event.number}`;
    const existing = await this.deps.store.previews.get(id);
    if (!existing && event.action === 'closed')
      return `pull request #${event.number} closed; it had no preview`;
    const facts: PreviewFacts = {
      id,
      project: project.name,
      number: event.number,
      branch: null,
      envName: `${project.name}-pr-${event.number}`,
      headSha: event.headSha,
      baseSha: event.baseSha,
      headRef: event.headRef,
      baseRef: event.baseRef,
      cloneUrl: event.cloneUrl,
      fromFork: event.fromFork,
      draft: event.draft,
      labels: event.labels,
      title: event.title,
      url: event.url,
      open: event.action !== 'closed',
    };
    const record = await this.deps.store.previews.upsert(facts);
    // A fork's approval is for the commit someone looked at: a new push needs a new one. The
    // approval label (only people with write access can set labels) approves the current head.
    // The approval label approves the head it was added to, and only when it is added (GitHub
    // sends a PR's labels with every event: a push after the label must not ride on it). Only
    // people with write access can add labels; a new push needs a new approval either way.
    const sameHead = existing === null || existing.headSha === event.headSha;
    const labelled =
      event.action === 'labeled' &&
      project.policy.approvalLabel !== null &&
      event.labels.includes(project.policy.approvalLabel);
    const approved = record.fromFork ? sameHead && (labelled || (existing?.approved ?? false)) : true;
    if (approved !== record.approved) await this.deps.store.previews.update(id, { approved });
    this.deps.onChange(id);
    if (!facts.open) return `pull request #${event.number} closed: its preview is torn down`;
    if (record.fromFork && !approved)
      return `pull request #${event.number} is from a fork: waiting for approval`;
    return `pull request #${event.number} (${event.rawAction || event.action}) at ${event.headSha.slice(0, 12)}: recorded`;
  }

  private async recordPush(project: ProjectRecord, event: PushEvent): Promise<string> {
    if (!project.policy.branchEnvironment) return 'push ignored: the project has no branch environment';
    if (event.branch !== project.branch)
      return `push to ${event.branch ?? 'a tag'} ignored: not ${project.branch}`;
    const id = `${project.name}/branch/${event.branch}`;
    const existing = await this.deps.store.previews.get(id);
    if (event.deleted) {
      if (!existing) return `branch ${event.branch} deleted`;
      await this.deps.store.previews.upsert({ ...factsOf(existing), open: false });
      this.deps.onChange(id);
      return `branch ${event.branch} deleted: its environment is torn down`;
    }
    await this.deps.store.previews.upsert(
      {
        id,
        project: project.name,
        number: null,
        branch: event.branch,
        envName: branchEnvName(project.name, event.branch),
        headSha: event.after,
        baseSha: event.before,
        headRef: event.branch,
        baseRef: event.branch,
        cloneUrl: null,
        fromFork: false,
        draft: false,
        labels: [],
        title: null,
        url: null,
        open: true,
      },
      { approved: true },
    );
    this.deps.onChange(id);
    return `push to ${event.branch} at ${event.after.slice(0, 12)}: recorded`;
  }

  /** Approves a fork's pull request at its current head (`mayfly approve`). */
  async approve(
    projectName: string,
    number: number,
    access: Access = FULL_ACCESS,
    /** The head commit the approver looked at: refused when the pull request has moved on since. */
    sha?: string,
  ): Promise<PreviewRecord> {
    const preview = canSee(access, projectName)
      ? await this.deps.store.previews.get(`${projectName}/pr/${number}`)
      : null;
    if (!preview) throw new NotFoundError(`project "${projectName}" has no pull request #${number}`);
    if (sha !== undefined && !preview.headSha.startsWith(sha.toLowerCase())) {
      throw new ConflictError(
        `pull request #${number} is now at ${preview.headSha.slice(0, 12)}, not ${sha}: look at the new commits, then approve again`,
      );
    }
    const updated = preview.approved
      ? preview
      : await this.deps.store.previews.update(preview.id, { approved: true });
    this.deps.onChange(preview.id);
    return updated;
  }

  async list(projectName: string, access: Access = FULL_ACCESS): Promise<Preview[]> {
    const project = canSee(access, projectName) ? await this.deps.store.projects.get(projectName) : null;
    if (!project) throw new NotFoundError(`no project "${projectName}"`);
    const previews = await this.deps.store.previews.list({ project: projectName });
    const out: Preview[] = [];
    for (const p of previews) {
      const env = p.envId ? await this.deps.store.environments.get(p.envId) : null;
      out.push(this.toResource(p, env));
    }
    return out;
  }

  /** Time from webhook to ready of a project's previews over the last `days` days. */
  async readiness(
    projectName: string,
    access: Access,
    days: number,
    now = new Date(),
  ): Promise<ReadinessStats> {
    const project = canSee(access, projectName) ? await this.deps.store.projects.get(projectName) : null;
    if (!project) throw new NotFoundError(`no project "${projectName}"`);
    // Whole UTC days, today the last: what the per-day figures and the chart show.
    const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
    const since = new Date(today - (days - 1) * 86_400_000);
    const samples = await this.deps.store.previews.listReadiness(project.name, since, READINESS_SAMPLES_MAX);
    const byDay = new Map<string, number[]>();
    for (const s of samples) {
      const day = s.readyAt.toISOString().slice(0, 10);
      const list = byDay.get(day);
      if (list) list.push(s.readyMs);
      else byDay.set(day, [s.readyMs]);
    }
    const all = samples.map((s) => s.readyMs);
    return {
      days,
      p50Ms: percentile(all, 50),
      p95Ms: percentile(all, 95),
      perDay: [...byDay]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([day, ms]) => ({
          day,
          count: ms.length,
          p50Ms: percentile(ms, 50)!,
          p95Ms: percentile(ms, 95)!,
        })),
      count: samples.length,
      items: samples.slice(0, READINESS_ITEMS_SHOWN).map((s) => ({
        environment: s.envName,
        number: s.number,
        branch: s.branch,
        headSha: s.headSha,
        receivedAt: s.receivedAt.toISOString(),
        readyAt: s.readyAt.toISOString(),
        readyMs: s.readyMs,
      })),
    };
  }

  toResource(p: PreviewRecord, env: EnvironmentRecord | null): Preview {
    const status = previewStatus(p, env);
    return {
      project: p.project,
      number: p.number,
      branch: p.branch,
      environment: p.envName,
      headSha: p.headSha,
      fromFork: p.fromFork,
      approved: p.approved,
      open: p.open,
      state: status.state,
      detail: status.detail,
      title: p.title,
      url: p.url,
      updatedAt: p.updatedAt.toISOString(),
    };
  }
}

/** What a preview is now, from the controller's decision and its environment. */
export function previewStatus(p: PreviewRecord, env: EnvironmentRecord | null): PreviewStatus {
  const live = env && env.desired === 'present' && env.state !== 'destroyed' ? env : null;
  if (!p.open) return { state: 'closed', detail: live ? 'being torn down' : null };
  if (p.decision === 'skipped') return { state: 'skipped', detail: p.detail };
  if (p.decision === 'awaiting-approval') return { state: 'awaiting-approval', detail: p.detail };
  if (!live) {
    return p.envId === null
      ? { state: 'building', detail: null }
      : {
          state: 'closed',
          detail: 'its environment was destroyed (time to live, or by hand); the next push brings it back',
        };
  }
  if (live.state === 'failed') {
    return { state: 'failed', detail: live.failure ? `${live.failure.step}: ${live.failure.reason}` : null };
  }
  if (live.source?.commit !== p.headSha) return { state: 'building', detail: null };
  if (live.state === 'ready' || live.state === 'sleeping') {
    if (live.failedRevision === live.revision && live.updateFailure) {
      return {
        state: 'failed',
        detail: `${live.updateFailure.step}: ${live.updateFailure.reason} (the previous version keeps running)`,
      };
    }
    if (live.plannedRevision === live.revision) return { state: 'ready', detail: null };
  }
  return { state: 'building', detail: null };
}

/** `<project>-<branch>`, made a DNS label that fits the name limit. */
export function branchEnvName(project: string, branch: string): string {
  const slug = branch
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .replace(/-{2,}/g, '-');
  const room = 40 - project.length - 1;
  return `${project}-${slug.slice(0, room).replace(/-+$/g, '') || 'branch'}`;
}

/** What the forge said of a preview, without what the controller made of it. */
function factsOf(p: PreviewRecord): PreviewFacts {
  const keys = [
    'id',
    'project',
    'number',
    'branch',
    'envName',
    'headSha',
    'baseSha',
    'headRef',
    'baseRef',
    'cloneUrl',
    'fromFork',
    'draft',
    'labels',
    'title',
    'url',
    'open',
  ] as const satisfies readonly (keyof PreviewFacts)[];
  return Object.fromEntries(keys.map((k) => [k, p[k]])) as unknown as PreviewFacts;
}
