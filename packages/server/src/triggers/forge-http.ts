/**
 * The HTTP layer under the forge clients (GitHub, GitLab): one JSON request with a timeout, retries
 * with backoff and jitter on what is worth retrying, a bounded response body, an abort signal, and
 * one error type whose message never contains a credential.
 *
 * Node 20's global `fetch` is used as is: no client library, because the ones that cover GitHub
 * pull packages that need Node 22, and the forges' REST APIs need only a few calls.
 */

import { z } from 'zod';

/** How a failed request is retried. `attempts` counts the first try. */
export interface ForgeRetryOptions {
  /** Tries in all, the first included (1 = never retry). */
  attempts: number;
  /** First backoff; it doubles on each retry, with jitter. */
  baseDelayMs: number;
  /** Cap of the computed backoff (not of a wait the server asks for). */
  maxDelayMs: number;
  /**
   * Longest wait a server may impose (`retry-after`, `x-ratelimit-reset`) that is still waited out;
   * a longer one fails at once with {@link ForgeApiError.retryAfterMs} set, for the caller to reschedule.
   */
  maxRetryAfterMs?: number;
}

export const DEFAULT_RETRY: Readonly<Required<ForgeRetryOptions>> = {
  attempts: 4,
  baseDelayMs: 500,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 60_000,
};

/** What went wrong, beyond the HTTP status. */
export type ForgeErrorKind =
  /** The forge answered with a status that is not a success. */
  | 'http'
  /** No answer within the timeout (per attempt). */
  | 'timeout'
  /** The connection failed (refused, reset, DNS). */
  | 'network'
  /** The caller's abort signal fired. */
  | 'aborted'
  /** The answer was larger than the body limit. */
  | 'too-large'
  /** The answer was not what the API documents (not JSON, a field missing, a foreign next-page link). */
  | 'bad-response';

/**
 * A forge API call that failed. The message is short and names the forge, the method and the
 * path (relative to the base URL), the status and the forge's own message; it never contains the
 * token, even if the forge echoed it.
 */
export class ForgeApiError extends Error {
  override name = 'ForgeApiError';
  /** The HTTP status of the last answer; null when there was none (timeout, network, aborted). */
  readonly status: number | null;
  readonly kind: ForgeErrorKind;
  readonly method: string;
  readonly path: string;
  /** Tries made, the first included. */
  readonly attempts: number;
  /** Set when the forge asked to wait longer than allowed ({@link ForgeRetryOptions.maxRetryAfterMs}). */
  readonly retryAfterMs: number | undefined;

  constructor(init: {
    message: string;
    status: number | null;
    kind: ForgeErrorKind;
    method: string;
    path: string;
    attempts: number;
    retryAfterMs?: number;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.kind = init.kind;
    this.method = init.method;
    this.path = init.path;
    this.attempts = init.attempts;
    this.retryAfterMs = init.retryAfterMs;
  }
}

/** Called before each retry's wait, for logs and metrics. */
export type ForgeRetryListener = (info: {
  method: string;
  path: string;
  /** The try that just failed (1 = the first). */
  attempt: number;
  delayMs: number;
  /** e.g. `502`, `429`, `timeout`, `network ECONNREFUSED`. */
  reason: string;
}) => void;

export interface ForgeHttpOptions {
  /** Names the forge in error messages: `GitHub`, `GitLab`. */
  forge: string;
  /** Every request's URL is this plus a path; only URLs of its origin are ever requested. */
  baseUrl: string;
  /** Sent on every request (auth, accept, user agent). */
  headers: Record<string, string>;
  /** Strings that must never appear in an error message (the token). */
  secrets: readonly string[];
  retry?: Partial<ForgeRetryOptions>;
  /** Per attempt, until the whole body is read. */
  timeoutMs?: number;
  maxBodyBytes?: number;
  onRetry?: ForgeRetryListener;
}

export interface ForgeRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** A path under the base URL (`/repos/a/b/issues/1/comments`), or an absolute URL of the same origin (a next-page link). */
  path: string;
  query?: Record<string, string | number | undefined>;
  /** Sent as JSON. */
  body?: unknown;
  signal?: AbortSignal;
}

export interface ForgeResponse {
  status: number;
  headers: Headers;
  /** The parsed JSON body; null when the body is empty. */
  data: unknown;
  /** The absolute URL that answered. */
  url: string;
}

const DEFAULT_TIMEOUT_MS = 20_000;
const DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024;
/** GitHub: "Otherwise, wait for at least one minute before retrying" (secondary rate limit, no header). */
const SECONDARY_LIMIT_WAIT_MS = 60_000;
/** Redirects that keep the method and body (GitHub answers 307 for a renamed repository's non-GET requests). */
const REDIRECTS = new Set([301, 302, 307, 308]);
/** Connection errors where the request surely never reached the server, so even a POST is safe to resend. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** One forge's HTTP endpoint, with its credentials and retry policy. */
export class ForgeHttp {
  readonly baseUrl: string;
  private readonly origin: string;
  private readonly retry: Required<ForgeRetryOptions>;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;

  constructor(private readonly options: ForgeHttpOptions) {
    const base = new URL(options.baseUrl);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`${options.forge} base URL must be http(s): ${base.protocol}`);
    }
    base.search = '';
    base.hash = '';
    this.baseUrl = base.href.replace(/\/+$/, '');
    this.origin = base.origin;
    this.retry = { ...DEFAULT_RETRY, ...definedOnly(options.retry ?? {}) };
    if (!(this.retry.attempts >= 1)) throw new TypeError('retry.attempts must be at least 1');
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  /**
   * Sends the request, retrying network errors, 5xx, 429 and rate-limit 403s; resolves with any
   * 2xx answer, throws {@link ForgeApiError} for everything else (other 4xx at once).
   *
   * A POST is not resent after a timeout or a connection lost mid-request: the forge may have acted
   * on it, and a second POST would make a second comment or deployment. It is resent after an
   * answer that says it failed (5xx, 429) and when the connection was never made.
   */
  async request(req: ForgeRequest): Promise<ForgeResponse> {
    let url = this.resolve(req);
    const path = this.displayPath(url);
    let redirects = 0;
    const idempotent = req.method !== 'POST';
    const fail = (init: Omit<ConstructorParameters<typeof ForgeApiError>[0], 'method' | 'path'>) =>
      new ForgeApiError({ ...init, message: this.scrub(init.message), method: req.method, path });
    const what = `${this.options.forge} ${req.method} ${path}`;

    for (let attempt = 1; ; attempt++) {
      const retryOrThrow = async (error: ForgeApiError, reason: string, serverWaitMs?: number) => {
        if (attempt >= this.retry.attempts) throw error;
        const delayMs = serverWaitMs ?? this.backoff(attempt);
        this.options.onRetry?.({ method: req.method, path, attempt, delayMs, reason });
        await sleep(delayMs, req.signal).catch(() => {
          throw fail({ message: `${what}: aborted`, status: null, kind: 'aborted', attempts: attempt });
        });
      };

      if (req.signal?.aborted) {
        throw fail({ message: `${what}: aborted`, status: null, kind: 'aborted', attempts: attempt - 1 });
      }
      let answer: { status: number; headers: Headers; text: string };
      try {
        answer = await this.once(url, req);
      } catch (err) {
        if (err instanceof TooLargeError) {
          throw fail({
            message: `${what}: answer larger than ${this.maxBodyBytes} bytes`,
            status: err.status,
            kind: 'too-large',
            attempts: attempt,
          });
        }
        if (req.signal?.aborted) {
          throw fail({ message: `${what}: aborted`, status: null, kind: 'aborted', attempts: attempt });
        }
        if (err instanceof TimeoutError) {
          const error = fail({
            message: `${what}: no answer within ${this.timeoutMs} ms`,
            status: null,
            kind: 'timeout',
            attempts: attempt,
          });
          if (!idempotent) throw error;
          await retryOrThrow(error, 'timeout');
          continue;
        }
        const code = networkCode(err);
        const error = fail({
          message: `${what}: ${code ? `connection failed (${code})` : 'connection failed'}`,
          status: null,
          kind: 'network',
          attempts: attempt,
          cause: err,
        });
        if (!idempotent && !(code && NOT_SENT_CODES.has(code))) throw error;
        await retryOrThrow(error, `network${code ? ` ${code}` : ''}`);
        continue;
      }

      const { status, headers, text } = answer;
      const location = headers.get('location');
      if (REDIRECTS.has(status) && location) {
        // Followed by hand, within the origin only: fetch would carry a PRIVATE-TOKEN header to any host.
        const target = new URL(location, url);
        if (target.origin !== this.origin || ++redirects > 5) {
          throw fail({
            message: `${what}: answered ${status}, a redirect ${target.origin !== this.origin ? `to another origin (${target.origin})` : 'loop'}`,
            status,
            kind: 'bad-response',
            attempts: attempt,
          });
        }
        url = target;
        attempt--; // a redirect is not a try
        continue;
      }
      if (status >= 200 && status < 300) {
        let data: unknown = null;
        if (text.trim() !== '') {
          try {
            data = JSON.parse(text);
          } catch {
            throw fail({
              message: `${what}: answered ${status} with a body that is not JSON`,
              status,
              kind: 'bad-response',
              attempts: attempt,
            });
          }
        }
        return { status, headers, data, url: url.href };
      }

      const serverMessage = errorSummary(text);
      const error = (retryAfterMs?: number) =>
        fail({
          message:
            `${what}: answered ${status}${serverMessage ? `: ${serverMessage}` : ''}` +
            (retryAfterMs === undefined ? '' : ` (retry after ${Math.ceil(retryAfterMs / 1000)} s)`),
          status,
          kind: 'http',
          attempts: attempt,
          ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        });

      const rateLimited = status === 429 || (status === 403 && isRateLimit403(headers, text));
      if (rateLimited) {
        const wait = serverWait(headers) ?? (status === 403 ? SECONDARY_LIMIT_WAIT_MS : undefined);
        if (wait !== undefined && wait > this.retry.maxRetryAfterMs) throw error(wait);
        await retryOrThrow(error(), String(status), wait);
        continue;
      }
      if (status >= 500) {
        await retryOrThrow(error(), String(status));
        continue;
      }
      throw error();
    }
  }

  /** Follows `Link: <…>; rel="next"` from `first`, at most `maxPages` pages, until `visit` returns something. */
  async findInPages<T, R>(
    first: ForgeRequest,
    maxPages: number,
    pageItems: (res: ForgeResponse) => T[],
    visit: (item: T) => R | undefined,
    nextUrl: (res: ForgeResponse) => string | undefined = (res) => linkNext(res.headers.get('link')),
  ): Promise<R | undefined> {
    let req: ForgeRequest | undefined = first;
    for (let page = 0; req && page < maxPages; page++) {
      const res = await this.request(req);
      for (const item of pageItems(res)) {
        const found = visit(item);
        if (found !== undefined) return found;
      }
      const next = nextUrl(res);
      req =
        next === undefined
          ? undefined
          : { method: 'GET', path: next, ...(first.signal ? { signal: first.signal } : {}) };
    }
    return undefined;
  }

  /**
   * The one comment (note) of ours on a pull (merge) request, whatever the forge: `knownId` is
   * edited first; a 404 on it (deleted, stale) falls back to finding ours by its marker line in
   * the listing (`ours` may leave out items, like GitLab's system notes), which is edited; else one
   * is created. The body gets the marker as its first line unless a line of it already is the
   * marker. Returns the id.
   */
  async upsertMarked(o: {
    marker: string;
    body: string;
    knownId: number | null | undefined;
    /** How to edit the one with this id. */
    edit: (id: number) => { method: 'PATCH' | 'PUT'; path: string };
    list: ForgeRequest;
    maxPages: number;
    ours?: (item: MarkedItem) => boolean;
    nextUrl?: (res: ForgeResponse) => string | undefined;
    createPath: string;
    signal?: AbortSignal | undefined;
  }): Promise<number> {
    if (!o.marker.trim()) throw new TypeError('comment marker is empty');
    const text = withMarker(o.body, o.marker);
    const signal = o.signal ? { signal: o.signal } : {};
    const send = async (req: ForgeRequest) => this.parse(req, await this.request(req), CreatedItem).id;
    const edit = (id: number) => send({ ...o.edit(id), body: { body: text }, ...signal });
    if (o.knownId != null) {
      try {
        return await edit(o.knownId);
      } catch (err) {
        // Deleted by someone (or the id is stale): find ours again, or make a new one.
        if (!(err instanceof ForgeApiError && err.status === 404)) throw err;
      }
    }
    const found = await this.findInPages(
      o.list,
      o.maxPages,
      (res) => this.parse(o.list, res, z.array(MarkedItem)),
      (item) =>
        item.body != null && (o.ours?.(item) ?? true) && hasMarkerLine(item.body, o.marker)
          ? item.id
          : undefined,
      ...(o.nextUrl ? [o.nextUrl] : []),
    );
    if (found !== undefined) return edit(found);
    return send({ method: 'POST', path: o.createPath, body: { body: text }, ...signal });
  }

  /** The answer's JSON checked against `schema` (only the fields used), else a `bad-response` error. */
  parse<S extends z.ZodType>(req: ForgeRequest, res: ForgeResponse, schema: S): z.output<S> {
    const parsed = schema.safeParse(res.data);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw this.badResponse(req, res, `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }

  /** An error for an answer that does not have the documented shape. */
  badResponse(req: ForgeRequest, res: ForgeResponse, detail: string): ForgeApiError {
    const path = this.displayPath(new URL(res.url));
    return new ForgeApiError({
      message: this.scrub(`${this.options.forge} ${req.method} ${path}: unexpected answer (${detail})`),
      status: res.status,
      kind: 'bad-response',
      method: req.method,
      path,
      attempts: 1,
    });
  }

  private resolve(req: ForgeRequest): URL {
    let url: URL;
    if (/^https?:\/\//i.test(req.path)) {
      url = new URL(req.path);
      // A next-page link pointing elsewhere would receive the token: refuse it.
      if (url.origin !== this.origin) {
        throw new ForgeApiError({
          message: `${this.options.forge} ${req.method}: refusing a link to another origin (${url.origin})`,
          status: null,
          kind: 'bad-response',
          method: req.method,
          path: url.pathname,
          attempts: 0,
        });
      }
    } else {
      url = new URL(`${this.baseUrl}/${req.path.replace(/^\/+/, '')}`);
    }
    for (const [key, value] of Object.entries(req.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    return url;
  }

  /** The URL as shown in errors: relative to the base URL when under it, without the query. */
  private displayPath(url: URL): string {
    const full = `${url.origin}${url.pathname}`;
    return full.startsWith(`${this.baseUrl}/`) ? full.slice(this.baseUrl.length) : url.pathname;
  }

  private async once(
    url: URL,
    req: ForgeRequest,
  ): Promise<{ status: number; headers: Headers; text: string }> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new TimeoutError()), this.timeoutMs);
    const onAbort = () => controller.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const headers: Record<string, string> = { ...this.options.headers };
      if (req.body !== undefined) headers['Content-Type'] = 'application/json; charset=utf-8';
      let res: Response;
      try {
        res = await fetch(url, {
          method: req.method,
          headers,
          ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
          signal: controller.signal,
          redirect: 'manual',
        });
      } catch (err) {
        if (controller.signal.reason instanceof TimeoutError) throw controller.signal.reason;
        throw err;
      }
      try {
        const text = await readLimited(res, this.maxBodyBytes);
        return { status: res.status, headers: res.headers, text };
      } catch (err) {
        if (controller.signal.reason instanceof TimeoutError) throw controller.signal.reason;
        throw err;
      }
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Exponential, capped, with "equal jitter": half fixed, half random, so replicas spread out but never retry at once. */
  private backoff(attempt: number): number {
    const exp = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
    return Math.round(exp / 2 + (Math.random() * exp) / 2);
  }

  private scrub(message: string): string {
    let out = message;
    for (const secret of this.options.secrets) {
      if (secret.length > 0) out = out.split(secret).join('***');
    }
    return out;
  }
}

class TimeoutError extends Error {
  override name = 'TimeoutError';
}

class TooLargeError extends Error {
  constructor(readonly status: number) {
    super('answer too large');
  }
}

/** The body as text, failing past `limit` bytes without reading the rest. */
async function readLimited(res: Response, limit: number): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await res.body?.cancel().catch(() => {});
    throw new TooLargeError(res.status);
  }
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new TooLargeError(res.status);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The `rel="next"` target of a `Link` header (RFC 8288), if any. */
export function linkNext(link: string | null): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (!match) continue;
    const rel = /;\s*rel\s*=\s*"?([^";]*)"?/i.exec(match[2] ?? '');
    if (rel?.[1]?.split(/\s+/).includes('next')) return match[1];
  }
  return undefined;
}

/**
 * GitHub answers 403 (not only 429) for its rate limits: the primary one says so with
 * `x-ratelimit-remaining: 0`, the secondary one with `retry-after` or its message. Any other 403
 * is a permission problem, and final.
 */
function isRateLimit403(headers: Headers, text: string): boolean {
  if (headers.has('retry-after')) return true;
  if (headers.get('x-ratelimit-remaining') === '0') return true;
  return /rate limit/i.test(errorSummary(text));
}

/** How long the server asks to wait, from `retry-after` (seconds or a date) or `x-ratelimit-reset` (epoch seconds). */
function serverWait(headers: Headers): number | undefined {
  // Measured against the server's own clock when it sends one, so a skewed local clock does not matter.
  const serverNow = Date.parse(headers.get('date') ?? '');
  const now = Number.isFinite(serverNow) ? serverNow : Date.now();
  const retryAfter = headers.get('retry-after');
  if (retryAfter !== null) {
    const seconds = Number(retryAfter.trim());
    if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
    const at = Date.parse(retryAfter);
    if (Number.isFinite(at)) return Math.max(0, at - now);
  }
  if (headers.get('x-ratelimit-remaining') === '0') {
    const reset = Number(headers.get('x-ratelimit-reset'));
    // The reset instant has one-second resolution: wait one more so the window has surely turned.
    if (Number.isFinite(reset) && reset > 0) return Math.max(0, reset * 1000 - now) + 1000;
  }
  return undefined;
}

/** A short text of a forge's error body: GitHub's `message` (+ `errors`), GitLab's `message`/`error`. */
function errorSummary(text: string): string {
  let summary = '';
  try {
    const body = JSON.parse(text) as unknown;
    if (body && typeof body === 'object') {
      const b = body as Record<string, unknown>;
      const main = b.message ?? b.error;
      summary = typeof main === 'string' ? main : main === undefined ? '' : JSON.stringify(main);
      if (Array.isArray(b.errors) && b.errors.length > 0) {
        const details = b.errors.map((e) => {
          if (typeof e === 'string') return e;
          const err = (e ?? {}) as Record<string, unknown>;
          if (typeof err.message === 'string') return err.message;
          return [err.field, err.code].filter((x) => typeof x === 'string').join(' ');
        });
        summary = `${summary} (${details.join('; ')})`;
      }
    }
  } catch {
    summary = text.startsWith('<') ? '' : text;
  }
  summary = summary.replace(/\s+/g, ' ').trim();
  return summary.length > 200 ? `${summary.slice(0, 199)}…` : summary;
}

/** The system error code of a failed fetch (`ECONNREFUSED`…), found on the error or its causes. */
function networkCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function definedOnly<T extends object>(obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `owner/name` as two URL path segments, each encoded; anything else is refused before a request is made. */
export function repoPath(repo: string): string {
  const parts = repo.split('/');
  if (parts.length !== 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new TypeError(`repository must be "owner/name": ${JSON.stringify(repo)}`);
  }
  return parts.map(encodeURIComponent).join('/');
}

/** A positive integer for a path segment (issue number, id), refused otherwise. */
export function idSegment(what: string, value: number): string {
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new TypeError(`${what} must be a positive integer: ${value}`);
  return String(value);
}

/** A comment or note as the listings give it (GitLab's carry `system`). */
const MarkedItem = z.object({
  id: z.number().int(),
  body: z.string().nullish(),
  system: z.boolean().optional(),
});
type MarkedItem = z.infer<typeof MarkedItem>;
const CreatedItem = z.object({ id: z.number().int() });

/**
 * True when one line of `body` is `marker` (surrounding whitespace ignored): a reply quoting our
 * comment (`> <!-- … -->`) does not count as ours.
 */
export function hasMarkerLine(body: string, marker: string): boolean {
  const want = marker.trim();
  return body.split(/\r?\n/).some((line) => line.trim() === want);
}

/** `body` with `marker` as its first line, unless a line of it already is the marker. */
export function withMarker(body: string, marker: string): string {
  return hasMarkerLine(body, marker) ? body : `${marker.trim()}\n${body}`;
}
