/**
 * The GitLab REST calls that report a preview's status back: the one merge request note of ours,
 * edited in place, never re-posted. Works against gitlab.com and self-managed GitLab, also under a
 * relative URL root (`https://host/gitlab`).
 */
import {
  ForgeApiError,
  ForgeHttp,
  type ForgeRetryListener,
  type ForgeRetryOptions,
  idSegment,
  linkNext,
} from '../forge-http.js';

export { ForgeApiError };

export interface GitLabApiOptions {
  /** The instance's URL, `https://gitlab.com` (default); `/api/v4` is appended unless already there. */
  baseUrl?: string;
  /** A personal, project or group access token (scope `api`), or an OAuth token with `authHeader: 'bearer'`. */
  token: string;
  /** `PRIVATE-TOKEN: <token>` (default) or `Authorization: Bearer <token>`; GitLab takes access tokens either way. */
  authHeader?: 'private-token' | 'bearer';
  userAgent?: string;
  retry?: Partial<ForgeRetryOptions>;
  /** Per attempt. Default 20 s. */
  timeoutMs?: number;
  /** Pages of notes searched for our marker. Default 30 (3000 notes). */
  maxPages?: number;
  onRetry?: ForgeRetryListener;
}

/** Per call. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** A client of GitLab's REST API (v4), for status reporting. Every failure is a {@link ForgeApiError}. */
export class GitLabApi {
  private readonly http: ForgeHttp;
  private readonly maxPages: number;

  constructor(options: GitLabApiOptions) {
    if (!options.token) throw new TypeError('GitLab token is empty');
    const base = (options.baseUrl ?? 'https://gitlab.com').replace(/\/+$/, '');
    this.http = new ForgeHttp({
      forge: 'GitLab',
      baseUrl: /\/api\/v4$/.test(base) ? base : `${base}/api/v4`,
      headers: {
        Accept: 'application/json',
        'User-Agent': options.userAgent ?? 'mayfly',
        ...(options.authHeader === 'bearer'
          ? { Authorization: `Bearer ${options.token}` }
          : { 'PRIVATE-TOKEN': options.token }),
      },
      secrets: [options.token],
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    });
    this.maxPages = options.maxPages ?? 30;
  }

  /**
   * The one note of ours on the merge request: found by the hidden marker (an HTML comment line)
   * among its notes (oldest first, per_page=100, following `x-next-page` or Link rel="next", at most
   * `maxPages` pages; system notes skipped), edited in place when found, else created. `knownId`
   * is tried first (PUT); a 404 on it falls back to the search. The body gets the marker as its
   * first line unless one of its lines already is the marker. Returns the note id.
   */
  async upsertMergeRequestNote(
    projectPath: string,
    iid: number,
    marker: string,
    body: string,
    knownId?: number | null,
    options: CallOptions = {},
  ): Promise<number> {
    const notes = `/projects/${projectId(projectPath)}/merge_requests/${idSegment('merge request iid', iid)}/notes`;
    return this.http.upsertMarked({
      marker,
      body,
      knownId,
      edit: (id) => ({ method: 'PUT', path: `${notes}/${idSegment('note id', id)}` }),
      // GitLab lists newest first by default: oldest first, so ours (made early) comes up on page 1.
      list: {
        method: 'GET',
        path: notes,
        query: { per_page: 100, sort: 'asc', order_by: 'created_at' },
        ...(options.signal ? { signal: options.signal } : {}),
      },
      maxPages: this.maxPages,
      ours: (note) => !note.system,
      nextUrl: (res) => {
        const link = linkNext(res.headers.get('link'));
        if (link) return link;
        // Without Link (GitLab omits it past its offset-pagination limits), `x-next-page` gives the page.
        const page = res.headers.get('x-next-page');
        if (!page || !/^\d+$/.test(page)) return undefined;
        const next = new URL(res.url);
        next.searchParams.set('page', page);
        return next.href;
      },
      createPath: notes,
      signal: options.signal,
    });
  }
}

/** `group/sub/project` as GitLab's `:id` (one URL-encoded segment), or a numeric project id as is. */
export function projectId(projectPath: string): string {
  if (/^\d+$/.test(projectPath)) return projectPath;
  const parts = projectPath.split('/');
  if (parts.length < 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new TypeError(`project must be "namespace/project": ${JSON.stringify(projectPath)}`);
  }
  return encodeURIComponent(projectPath);
}
