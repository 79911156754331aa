/**
 * The few GitHub REST calls that report a preview's status back: the one PR comment of ours
 * (edited in place, never re-posted) and deployments with their statuses. Works against
 * github.com and GitHub Enterprise Server (`https://host/api/v3`).
 */
import { z } from 'zod';
import {
  ForgeApiError,
  ForgeHttp,
  type ForgeRequest,
  type ForgeRetryListener,
  type ForgeRetryOptions,
  idSegment,
  repoPath,
} from '../forge-http.js';

export { ForgeApiError };

export const GITHUB_API_VERSION = '2022-11-28';
/** GitHub refuses a deployment status description longer than this. */
export const DEPLOYMENT_DESCRIPTION_MAX = 140;

export interface GitHubApiOptions {
  /** `https://api.github.com` (default), or GitHub Enterprise Server's `https://HOST/api/v3`. */
  baseUrl?: string;
  /** A token allowed to write issues/pull requests and deployments (an installation token, a PAT). */
  token: string;
  /** GitHub refuses requests without one. Default `mayfly`. */
  userAgent?: string;
  retry?: Partial<ForgeRetryOptions>;
  /** Per attempt. Default 20 s. */
  timeoutMs?: number;
  /** Pages of comments searched for our marker. Default 30 (3000 comments). */
  maxPages?: number;
  onRetry?: ForgeRetryListener;
}

export type DeploymentState =
  | 'in_progress'
  | 'success'
  | 'failure'
  | 'error'
  | 'inactive'
  | 'queued'
  | 'pending';

export interface CreateDeploymentInput {
  /** The commit SHA (a branch or tag name also works, but moves). */
  ref: string;
  environment: string;
  description?: string;
  /** True for a preview: GitHub marks it destroyed when it becomes inactive. */
  transientEnvironment: boolean;
  productionEnvironment?: false;
  payload?: Record<string, unknown>;
}

export interface CreateDeploymentStatusInput {
  state: DeploymentState;
  environmentUrl?: string;
  logUrl?: string;
  /** Clipped to 140 characters, GitHub's limit. */
  description?: string;
  /** GitHub's default (true) marks earlier successful deployments of the same environment inactive. */
  autoInactive?: boolean;
}

/** Per call. */
export interface CallOptions {
  signal?: AbortSignal;
}

const Created = z.object({ id: z.number().int() });

/** A client of GitHub's REST API, for status reporting. Every failure is a {@link ForgeApiError}. */
export class GitHubApi {
  private readonly http: ForgeHttp;
  private readonly maxPages: number;

  constructor(options: GitHubApiOptions) {
    if (!options.token) throw new TypeError('GitHub token is empty');
    this.http = new ForgeHttp({
      forge: 'GitHub',
      baseUrl: options.baseUrl ?? 'https://api.github.com',
      headers: {
        Accept: 'application/vnd.github+json',
        'X-GitHub-Api-Version': GITHUB_API_VERSION,
        Authorization: `Bearer ${options.token}`,
        'User-Agent': options.userAgent ?? 'mayfly',
      },
      secrets: [options.token],
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    });
    this.maxPages = options.maxPages ?? 30;
  }

  /**
   * The one comment of ours on the PR: found by the hidden marker (an HTML comment line) among
   * the PR's issue comments (paginated: per_page=100, following Link rel="next", at most
   * `maxPages` pages), edited in place when found, else created. `knownId` is tried first (PATCH);
   * a 404 on it falls back to the search. The body gets the marker as its first line unless one of
   * its lines already is the marker. Returns the comment id.
   */
  async upsertIssueComment(
    repo: string,
    issueNumber: number,
    marker: string,
    body: string,
    knownId?: number | null,
    options: CallOptions = {},
  ): Promise<number> {
    const r = repoPath(repo);
    const issue = idSegment('issue number', issueNumber);
    return this.http.upsertMarked({
      marker,
      body,
      knownId,
      edit: (id) => ({ method: 'PATCH', path: `/repos/${r}/issues/comments/${idSegment('comment id', id)}` }),
      list: {
        method: 'GET',
        path: `/repos/${r}/issues/${issue}/comments`,
        query: { per_page: 100 },
        ...(options.signal ? { signal: options.signal } : {}),
      },
      maxPages: this.maxPages,
      createPath: `/repos/${r}/issues/${issue}/comments`,
      signal: options.signal,
    });
  }

  /**
   * Creates a deployment of `ref` and returns its id. `auto_merge: false` and
   * `required_contexts: []` so GitHub neither merges the default branch into the ref nor waits for
   * commit statuses. A 202 answer (GitHub merged instead of deploying) is an error.
   */
  async createDeployment(
    repo: string,
    input: CreateDeploymentInput,
    options: CallOptions = {},
  ): Promise<number> {
    const req: ForgeRequest = {
      method: 'POST',
      path: `/repos/${repoPath(repo)}/deployments`,
      body: {
        ref: input.ref,
        environment: input.environment,
        auto_merge: false,
        required_contexts: [],
        transient_environment: input.transientEnvironment,
        production_environment: input.productionEnvironment ?? false,
        ...(input.description === undefined ? {} : { description: input.description }),
        ...(input.payload === undefined ? {} : { payload: input.payload }),
      },
      ...(options.signal ? { signal: options.signal } : {}),
    };
    const res = await this.http.request(req);
    if (res.status === 202) {
      const message = z.object({ message: z.string() }).safeParse(res.data);
      throw this.http.badResponse(
        req,
        res,
        `202, no deployment made${message.success ? `: ${message.data.message}` : ''}`,
      );
    }
    return this.http.parse(req, res, Created).id;
  }

  /** Adds a status to a deployment (the latest one is what GitHub shows). */
  async createDeploymentStatus(
    repo: string,
    deploymentId: number,
    input: CreateDeploymentStatusInput,
    options: CallOptions = {},
  ): Promise<void> {
    const req: ForgeRequest = {
      method: 'POST',
      path: `/repos/${repoPath(repo)}/deployments/${idSegment('deployment id', deploymentId)}/statuses`,
      body: {
        state: input.state,
        ...(input.environmentUrl === undefined ? {} : { environment_url: input.environmentUrl }),
        ...(input.logUrl === undefined ? {} : { log_url: input.logUrl }),
        ...(input.description === undefined
          ? {}
          : { description: clip(input.description, DEPLOYMENT_DESCRIPTION_MAX) }),
        ...(input.autoInactive === undefined ? {} : { auto_inactive: input.autoInactive }),
      },
      ...(options.signal ? { signal: options.signal } : {}),
    };
    this.http.parse(req, await this.http.request(req), Created);
  }
}

/** At most `max` UTF-16 units, never splitting a surrogate pair, with an ellipsis when cut. */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}
