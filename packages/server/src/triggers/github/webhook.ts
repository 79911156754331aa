/**
 * GitHub webhooks: checking `X-Hub-Signature-256` and reading `pull_request`, `push` and `ping`
 * payloads into forge-neutral events. Pure: no I/O, nothing kept between calls.
 */
import { isUtf8 } from 'node:buffer';
import { verify } from '@octokit/webhooks-methods';
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
} from '../forge-event.js';

/** The only signature form GitHub sends in `X-Hub-Signature-256`. */
const SIGNATURE_HEADER = /^sha256=[0-9a-f]{64}$/;

/**
 * Whether `signatureHeader` (`X-Hub-Signature-256`) is GitHub's HMAC-SHA256 of the raw body under
 * `secret`, compared in constant time. A missing, empty or malformed header (`sha1=…`, upper-case
 * hex, wrong length), an empty secret or body, or a body that is not UTF-8 is simply `false`.
 */
export async function verifyGitHubSignature(
  secret: string,
  rawBody: Buffer | string,
  signatureHeader: string | undefined,
): Promise<boolean> {
  // @octokit/webhooks-methods' verify() throws on an empty secret, body or signature and signs the
  // body as a string: refuse those cases here so that it only ever answers yes or no.
  if (typeof secret !== 'string' || secret === '') return false;
  if (typeof signatureHeader !== 'string' || !SIGNATURE_HEADER.test(signatureHeader)) return false;
  let body: string;
  if (typeof rawBody === 'string') body = rawBody;
  else if (Buffer.isBuffer(rawBody) && isUtf8(rawBody)) body = rawBody.toString('utf8');
  else return false;
  if (body === '') return false;
  try {
    return await verify(secret, body, signatureHeader);
  } catch {
    return false;
  }
}

const RepoFullName = z
  .string()
  .refine((s) => isRepoPath(s, 2, 2), 'expected a repository full name (owner/name)');

/** The repository the payload is about (`repository.full_name`), or null; never throws. */
export function repositoryOf(payload: unknown): string | null {
  try {
    if (typeof payload !== 'object' || payload === null) return null;
    const repository: unknown = (payload as { repository?: unknown }).repository;
    if (typeof repository !== 'object' || repository === null) return null;
    const fullName: unknown = (repository as { full_name?: unknown }).full_name;
    return isRepoPath(fullName, 2, 2) ? fullName : null;
  } catch {
    return null;
  }
}

const PullRequestPayload = z.object({
  action: z.string().max(100),
  repository: z.object({ full_name: RepoFullName }),
  pull_request: z.object({
    number: PositiveId,
    title: boundedText(4096),
    html_url: HttpUrl.nullish(),
    user: z.object({ login: UserLogin }).nullish(),
    draft: z.boolean().nullish(),
    merged: z.boolean().nullish(),
    merged_at: z.string().max(64).nullish(),
    labels: capped(z.object({ name: LabelName }), LABELS_MAX).nullish(),
    head: z.object({
      sha: CommitSha,
      ref: GitRefName,
      // null when the fork the pull request came from was deleted
      repo: z.object({ full_name: RepoFullName, clone_url: HttpUrl.nullish() }).nullable(),
    }),
    base: z.object({
      sha: CommitSha,
      ref: GitRefName,
      repo: z.object({ full_name: RepoFullName }),
    }),
  }),
});

const PULL_REQUEST_ACTIONS: Readonly<Record<string, ChangeRequestAction>> = {
  opened: 'opened',
  reopened: 'opened',
  synchronize: 'updated',
  closed: 'closed',
  labeled: 'labeled',
  unlabeled: 'labeled',
  ready_for_review: 'ready',
  converted_to_draft: 'converted_to_draft',
};

function pullRequestEvent(payload: unknown): ForgeEvent {
  const p = parsePayload(PullRequestPayload, payload, 'pull_request');
  const pr = p.pull_request;
  const headRepo = pr.head.repo;
  return {
    kind: 'change_request',
    forge: 'github',
    repo: p.repository.full_name,
    number: pr.number,
    action: Object.hasOwn(PULL_REQUEST_ACTIONS, p.action) ? PULL_REQUEST_ACTIONS[p.action]! : 'other',
    rawAction: p.action,
    headSha: pr.head.sha,
    headRef: pr.head.ref,
    baseSha: pr.base.sha,
    baseRef: pr.base.ref,
    // GitHub names are case-insensitive; both names come from GitHub in one payload anyway.
    fromFork: headRepo === null || headRepo.full_name.toLowerCase() !== pr.base.repo.full_name.toLowerCase(),
    draft: pr.draft === true,
    merged: pr.merged === true || (pr.merged_at ?? null) !== null,
    labels: (pr.labels ?? []).map((l) => l.name),
    title: pr.title,
    url: pr.html_url ?? null,
    author: pr.user?.login ?? null,
    cloneUrl: headRepo?.clone_url ?? null,
  };
}

const PushPayload = z.object({
  ref: GitRefName,
  before: CommitSha,
  after: CommitSha,
  created: z.boolean().nullish(),
  deleted: z.boolean().nullish(),
  forced: z.boolean().nullish(),
  commits: z.array(z.unknown()).nullish(),
  repository: z.object({ full_name: RepoFullName }),
});

/**
 * Commits a push payload may list: the timeline caps its list at 20 and the webhook documentation
 * has said both 20 and 2048, with no count of the commits left out. At this many or more the list
 * is taken as possibly cut short.
 */
const PUSH_COMMITS_LISTED_MAX = 20;
/** GitHub reports at most 3000 files in each of a commit's added/modified/removed lists. */
const COMMIT_FILES_LISTED_MAX = 3000;

function pushEvent(payload: unknown): ForgeEvent {
  const p = parsePayload(PushPayload, payload, 'push');
  const repo = p.repository.full_name;
  let branch: string | null;
  if (p.ref.startsWith('refs/heads/')) branch = p.ref.slice('refs/heads/'.length);
  else if (p.ref.startsWith('refs/tags/')) branch = null;
  else return { kind: 'ignored', forge: 'github', event: 'push', repo };
  const deleted = p.deleted === true || isNullSha(p.after);
  const created = p.created === true || isNullSha(p.before);
  const commits = p.commits ?? [];
  const complete =
    !deleted && !created && p.forced !== true && branch !== null && commits.length < PUSH_COMMITS_LISTED_MAX;
  return {
    kind: 'push',
    forge: 'github',
    repo,
    branch,
    after: p.after,
    before: created ? null : p.before,
    deleted,
    changedPaths: complete ? collectChangedPaths(commits, 'push', COMMIT_FILES_LISTED_MAX) : null,
  };
}

/** The event name as reported back: untrusted header text, so bounded. */
const eventLabel = (name: string) => name.slice(0, 100);

/**
 * The meaning of one GitHub delivery: `eventName` is its `X-GitHub-Event` header, `payload` its
 * parsed JSON body. `pull_request`, `push` and `ping` are read; any other event is `ignored` (with
 * its repository when it names one). A `pull_request` or `push` payload without the fields used, or
 * with values out of bounds, throws {@link WebhookPayloadError}; nothing else is ever thrown.
 */
export function parseGitHubEvent(eventName: string, payload: unknown): ForgeEvent {
  return onlyPayloadErrors(eventLabel(String(eventName)), () => {
    switch (eventName) {
      case 'pull_request':
        return pullRequestEvent(payload);
      case 'push':
        return pushEvent(payload);
      case 'ping':
        return { kind: 'ping', forge: 'github', repo: repositoryOf(payload) };
      default:
        return {
          kind: 'ignored',
          forge: 'github',
          event: eventLabel(String(eventName)),
          repo: repositoryOf(payload),
        };
    }
  });
}
