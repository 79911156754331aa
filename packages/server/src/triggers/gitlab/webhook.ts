/**
 * GitLab webhooks: checking `X-Gitlab-Token` and reading merge request, push and tag push payloads
 * into forge-neutral events. Pure: no I/O, nothing kept between calls.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as z from 'zod';
import {
  boundedText,
  type ChangeRequestAction,
  CommitSha,
  capped,
  collectChangedPaths,
  type ForgeEvent,
  GitRefName,
  HttpUrl,
  isNullSha,
  isRepoPath,
  LABELS_MAX,
  LabelName,
  onlyPayloadErrors,
  PositiveId,
  parsePayload,
  UserLogin,
  WebhookPayloadError,
} from '../forge-event.js';

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * Whether `tokenHeader` (`X-Gitlab-Token`) equals the webhook's secret token. The SHA-256 digests
 * are compared with `timingSafeEqual`, so neither the content nor the length of the secret leaks
 * through timing. A missing header or an empty secret is `false`.
 */
export function verifyGitLabToken(secret: string, tokenHeader: string | undefined): boolean {
  if (typeof secret !== 'string' || secret === '' || typeof tokenHeader !== 'string') return false;
  return timingSafeEqual(sha256(secret), sha256(tokenHeader));
}

/** GitLab allows 20 levels of subgroups: `group/sub…/project` has 2 to 21 segments. */
const isProjectPath = (path: unknown): path is string => isRepoPath(path, 2, 21);

const ProjectPath = z.string().refine(isProjectPath, 'expected a project path (group/…/project)');
const Project = z.object({ path_with_namespace: ProjectPath });

/** The project the payload is about (`project.path_with_namespace`), or null; never throws. */
export function repositoryOf(payload: unknown): string | null {
  try {
    if (typeof payload !== 'object' || payload === null) return null;
    const project: unknown = (payload as { project?: unknown }).project;
    if (typeof project !== 'object' || project === null) return null;
    const path: unknown = (project as { path_with_namespace?: unknown }).path_with_namespace;
    return isProjectPath(path) ? path : null;
  } catch {
    return null;
  }
}

const Labels = capped(z.object({ title: LabelName }), LABELS_MAX).nullish();

const MergeRequestPayload = z.object({
  object_kind: z.literal('merge_request'),
  /** Who triggered the event (the payload names the author only by numeric id). */
  user: z.object({ username: UserLogin }).nullish(),
  /** The target project, where the hook is. */
  project: Project,
  object_attributes: z.object({
    iid: PositiveId,
    action: z.string().max(100).nullish(),
    state: z.string().max(100).nullish(),
    title: boundedText(4096),
    url: HttpUrl.nullish(),
    source_branch: GitRefName,
    target_branch: GitRefName,
    // null once the source project (a fork) is deleted
    source_project_id: PositiveId.nullish(),
    target_project_id: PositiveId,
    last_commit: z.object({ id: CommitSha }),
    /** The previous head, present only when the update brought new commits. */
    oldrev: CommitSha.nullish(),
    draft: z.boolean().nullish(),
    work_in_progress: z.boolean().nullish(),
    source: z.object({ git_http_url: HttpUrl.nullish() }).nullish(),
    labels: Labels,
  }),
  labels: Labels,
  changes: z
    .object({
      labels: z.unknown().optional(),
      draft: z.object({ previous: z.boolean().nullish(), current: z.boolean().nullish() }).nullish(),
    })
    .nullish(),
});

type MergeRequest = z.output<typeof MergeRequestPayload>;

function mergeRequestAction(p: MergeRequest): ChangeRequestAction {
  const a = p.object_attributes;
  switch (a.action) {
    case 'open':
    case 'reopen':
      return 'opened';
    case 'close':
    case 'merge':
      return 'closed';
    case 'update': {
      if (a.oldrev != null) return 'updated';
      const draft = p.changes?.draft;
      if (draft && draft.previous === true && draft.current === false) return 'ready';
      if (draft && draft.previous === false && draft.current === true) return 'converted_to_draft';
      if (p.changes?.labels != null) return 'labeled';
      return 'other';
    }
    default:
      return 'other';
  }
}

function mergeRequestEvent(payload: unknown): ForgeEvent {
  const p = parsePayload(MergeRequestPayload, payload, 'merge_request');
  const a = p.object_attributes;
  return {
    kind: 'change_request',
    forge: 'gitlab',
    repo: p.project.path_with_namespace,
    number: a.iid,
    action: mergeRequestAction(p),
    rawAction: a.action ?? '',
    headSha: a.last_commit.id,
    headRef: a.source_branch,
    baseSha: null,
    baseRef: a.target_branch,
    fromFork: a.source_project_id !== a.target_project_id,
    draft: a.draft === true || a.work_in_progress === true,
    merged: a.state === 'merged' || a.action === 'merge',
    labels: (p.labels ?? a.labels ?? []).map((l) => l.title),
    title: a.title,
    url: a.url ?? null,
    author: p.user?.username ?? null,
    cloneUrl: a.source?.git_http_url ?? null,
  };
}

const PushPayload = z.object({
  object_kind: z.enum(['push', 'tag_push']),
  ref: GitRefName,
  before: CommitSha,
  after: CommitSha,
  project: Project,
  commits: z.array(z.unknown()).nullish(),
  total_commits_count: z.number().int().nonnegative().nullish(),
});

function pushEvent(payload: unknown, kind: 'push' | 'tag_push'): ForgeEvent {
  const p = parsePayload(PushPayload, payload, kind);
  if (p.object_kind !== kind) {
    throw new WebhookPayloadError(`${kind} payload: object_kind: expected "${kind}"`);
  }
  const repo = p.project.path_with_namespace;
  let branch: string | null;
  if (p.ref.startsWith('refs/heads/')) branch = p.ref.slice('refs/heads/'.length);
  else if (p.ref.startsWith('refs/tags/')) branch = null;
  else return { kind: 'ignored', forge: 'gitlab', event: kind, repo };
  const deleted = isNullSha(p.after);
  const created = isNullSha(p.before);
  const commits = p.commits ?? [];
  // GitLab lists at most 20 commits and says how many there were; a force push is not marked.
  const complete =
    !deleted &&
    !created &&
    branch !== null &&
    p.total_commits_count != null &&
    p.total_commits_count <= commits.length;
  return {
    kind: 'push',
    forge: 'gitlab',
    repo,
    branch,
    after: p.after,
    before: created ? null : p.before,
    deleted,
    changedPaths: complete ? collectChangedPaths(commits, kind) : null,
  };
}

/** The `object_kind` of a payload, when it is a short string; for system hooks. */
function objectKindOf(payload: unknown): string | null {
  if (typeof payload !== 'object' || payload === null) return null;
  const kind: unknown = (payload as { object_kind?: unknown }).object_kind;
  return typeof kind === 'string' && kind.length <= 100 ? kind : null;
}

/** The event name as reported back: untrusted header text, so bounded. */
const eventLabel = (name: string) => name.slice(0, 100);

/**
 * The meaning of one GitLab delivery: `eventHeader` is its `X-Gitlab-Event` header (`Merge Request
 * Hook`, `Push Hook`, `Tag Push Hook`; for `System Hook` the payload's `object_kind` decides),
 * `payload` its parsed JSON body. Any other event is `ignored`. A merge request or push payload
 * without the fields used, or with values out of bounds, throws {@link WebhookPayloadError};
 * nothing else is ever thrown.
 */
export function parseGitLabEvent(eventHeader: string, payload: unknown): ForgeEvent {
  const label = eventLabel(String(eventHeader));
  return onlyPayloadErrors(label, () => {
    let kind: string | null;
    switch (eventHeader) {
      case 'Merge Request Hook':
        kind = 'merge_request';
        break;
      case 'Push Hook':
        kind = 'push';
        break;
      case 'Tag Push Hook':
        kind = 'tag_push';
        break;
      case 'System Hook':
        kind = objectKindOf(payload);
        break;
      default:
        kind = null;
    }
    if (kind === 'merge_request') return mergeRequestEvent(payload);
    if (kind === 'push' || kind === 'tag_push') return pushEvent(payload, kind);
    return { kind: 'ignored', forge: 'gitlab', event: label, repo: repositoryOf(payload) };
  });
}
