/**
 * The GitLab REST calls that report a preview's status back: the one merge request note of ours,
 * edited in place, never re-posted. Works against gitlab.com and self-managed GitLab, also under a
 * relative URL root (`https://host/gitlab`).
 */
import { z } from 'zod';
import {
  ForgeApiError,
  ForgeHttp,
  type ForgeRequest,
  type ForgeRetryListener,
  type ForgeRetryOptions,
  hasMarkerLine,
  idSegment,
  linkNext,
  withMarker,
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

const Note = z.object({ id: z.number().int(), body: z.string().nullish(), system: z.boolean().optional() });
const Created = z.object({ id: z.number().int() });

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
    if (!marker.trim()) throw new TypeError('note marker is empty');
    const text = withMarker(body, marker);
    const signal = options.signal ? { signal: options.signal } : {};

    const edit = async (id: number) => {
      const req: ForgeRequest = {
        method: 'PUT',
        path: `${notes}/${idSegment('note id', id)}`,
        body: { body: text },
        ...signal,
      };
      return this.http.parse(req, await this.http.request(req), Created).id;
    };

    if (knownId != null) {
      try {
        return await edit(knownId);
      } catch (err) {
        if (!(err instanceof ForgeApiError && err.status === 404)) throw err;
      }
    }

    // GitLab lists newest first by default: ask for oldest first, so ours (made early) comes up on page 1.
    const list: ForgeRequest = {
      method: 'GET',
      path: notes,
      query: { per_page: 100, sort: 'asc', order_by: 'created_at' },
      ...signal,
    };
    const found = await this.http.findInPages(
      list,
      this.maxPages,
      (res) => this.http.parse(list, res, z.array(Note)),
      (n) => (!n.system && n.body != null && hasMarkerLine(n.body, marker) ? n.id : undefined),
      (res) => {
        const link = linkNext(res.headers.get('link'));
        if (link) return link;
        // Without Link (GitLab omits it past its offset-pagination limits), `x-next-page` gives the page.
        const page = res.headers.get('x-next-page');
        if (!page || !/^\d+$/.test(page)) return undefined;
        const next = new URL(res.url);
        next.searchParams.set('page', page);
        return next.href;
      },
    );
    if (found !== undefined) return edit(found);

    const create: ForgeRequest = { method: 'POST', path: notes, body: { body: text }, ...signal };
    return this.http.parse(create, await this.http.request(create), Created).id;
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
