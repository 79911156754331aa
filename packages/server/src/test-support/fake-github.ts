/**
 * A fake GitHub REST API for tests: a real HTTP server on 127.0.0.1 that keeps issue comments,
 * deployments and deployment statuses in memory, and CHECKS every request against GitHub's
 * documented request shapes and the headers a client must send. A request that breaks a rule is
 * answered as GitHub would (422 with GitHub's error shape, 401 for a bad token…) and recorded in
 * `violations`, so a test ends with `expect(github.violations).toEqual([])`.
 *
 * Only the endpoints Mayfly uses (and a few reads that help tests) exist; any other is a 404 and
 * a violation. Faults are injected with `failFirst`, `failNext`, `respondNext` and `delayNext`.
 *
 * The bottom of this file is the small recording HTTP server both fakes (this and GitLab's) share.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';

export const FAKE_GITHUB_TOKEN = 'ghs_fakeGitHubToken0123456789';
const DOCS = 'https://docs.github.com/rest';

export interface FakeGitHubOptions {
  /** The token requests must carry as `Authorization: Bearer …`. Default {@link FAKE_GITHUB_TOKEN}. */
  token?: string;
  /** Answer the first N requests 502, as GitHub does in a bad minute. */
  failFirst?: number;
  /** Cap on `per_page` (GitHub's is 100): set it small to test pagination with few comments. */
  maxPerPage?: number;
  /** Serve under a path, as GitHub Enterprise Server does under `/api/v3`; `url` includes it. */
  pathPrefix?: string;
  /** When given, only these `owner/name` repositories exist (others answer 404); by default all do. */
  repos?: string[];
  /** The login our comments are shown as. Default `mayfly[bot]`. */
  login?: string;
}

export interface FakeComment {
  id: number;
  body: string;
}

export interface FakeDeploymentStatus {
  state: DeploymentStatusState;
  environment_url?: string;
  log_url?: string;
  target_url?: string;
  description?: string;
  environment?: string;
  auto_inactive?: boolean;
}

export interface FakeDeployment {
  id: number;
  ref: string;
  environment: string;
  description: string | null;
  task: string;
  transient_environment: boolean;
  production_environment: boolean;
  payload: Record<string, unknown> | string;
  auto_merge: boolean | undefined;
  required_contexts: string[] | undefined;
  /** Oldest first. */
  statuses: FakeDeploymentStatus[];
}

export interface FakeGitHub extends FakeForgeServer {
  /** The base URL to give the client (`http://127.0.0.1:PORT[/api/v3]`). */
  url: string;
  token: string;
  /** Comments on an issue or PR, oldest first. */
  comments(repo: string, issue: number): FakeComment[];
  /** Deployments of a repository, oldest first, with their statuses. */
  deployments(repo: string): FakeDeployment[];
  /** A comment made by someone else (`login`, default `octocat`); returns its id. */
  addComment(repo: string, issue: number, body: string, login?: string): number;
  /** Removes a comment, as a user deleting it would; false when there was none. */
  deleteComment(repo: string, id: number): boolean;
}

// ---- GitHub's documented request bodies (REST API 2022-11-28); unknown keys are refused. ----

/** Create / update an issue comment. GitHub's limit on a body is 65536 characters. */
const IssueCommentBody = z.strictObject({ body: z.string().max(65_536) });

/** Create a deployment. */
const CreateDeploymentBody = z.strictObject({
  ref: z.string().min(1),
  task: z.string().optional(),
  auto_merge: z.boolean().optional(),
  required_contexts: z.array(z.string()).optional(),
  payload: z.union([z.record(z.string(), z.unknown()), z.string()]).optional(),
  environment: z.string().optional(),
  description: z.string().nullable().optional(),
  transient_environment: z.boolean().optional(),
  production_environment: z.boolean().optional(),
});

const DEPLOYMENT_STATES = [
  'error',
  'failure',
  'inactive',
  'in_progress',
  'queued',
  'pending',
  'success',
] as const;
type DeploymentStatusState = (typeof DEPLOYMENT_STATES)[number];

/** Create a deployment status. "The maximum description length is 140 characters." */
const CreateDeploymentStatusBody = z.strictObject({
  state: z.enum(DEPLOYMENT_STATES),
  target_url: z.string().optional(),
  log_url: z.string().optional(),
  description: z.string().max(140).optional(),
  environment: z.string().optional(),
  environment_url: z.string().optional(),
  auto_inactive: z.boolean().optional(),
});

interface StoredComment {
  id: number;
  repo: string;
  issue: number;
  body: string;
  login: string;
  createdAt: string;
  updatedAt: string;
}

interface StoredStatus extends FakeDeploymentStatus {
  id: number;
  createdAt: string;
}

interface StoredDeployment extends Omit<FakeDeployment, 'statuses'> {
  repo: string;
  sha: string;
  createdAt: string;
  statuses: StoredStatus[];
}

/** Starts a fake GitHub on 127.0.0.1 (a free port). Close it in `afterAll`/`afterEach`. */
export async function startFakeGitHub(options: FakeGitHubOptions = {}): Promise<FakeGitHub> {
  const token = options.token ?? FAKE_GITHUB_TOKEN;
  const prefix = normalizePrefix(options.pathPrefix);
  const maxPerPage = Math.min(100, options.maxPerPage ?? 100);
  const ourLogin = options.login ?? 'mayfly[bot]';
  const repos = options.repos ? new Set(options.repos.map((r) => r.toLowerCase())) : undefined;
  const comments: StoredComment[] = [];
  const deployments: StoredDeployment[] = [];
  let nextId = 1000;
  const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const key = (repo: string) => repo.toLowerCase();

  const server = await startFakeForgeServer(options.failFirst ?? 0, (call, violation) => {
    const fail = (status: number, message: string, why?: string): Reply => {
      if (why) violation(why);
      return { status, body: { message, documentation_url: DOCS, status: String(status) } };
    };
    const { method } = call;

    // Headers every request must carry.
    if (call.headers.authorization !== `Bearer ${token}`) {
      return fail(
        401,
        'Bad credentials',
        call.headers.authorization
          ? 'Authorization is not "Bearer <the configured token>"'
          : 'no Authorization header',
      );
    }
    if (!call.headers['user-agent']) {
      return fail(
        403,
        'Request forbidden by administrative rules. Please make sure your request has a User-Agent header',
        'no User-Agent header',
      );
    }
    const version = call.headers['x-github-api-version'];
    if (version !== '2022-11-28') {
      return fail(
        400,
        version ? `API version ${version} is not supported.` : 'X-GitHub-Api-Version header is required.',
        `X-GitHub-Api-Version is ${JSON.stringify(version ?? null)}, not "2022-11-28"`,
      );
    }
    if (call.headers.accept !== 'application/vnd.github+json') {
      return fail(
        415,
        'Unsupported Accept header',
        `Accept is ${JSON.stringify(call.headers.accept ?? null)}, not "application/vnd.github+json"`,
      );
    }

    if (!call.pathname.startsWith(`${prefix}/`))
      return fail(404, 'Not Found', `no such endpoint: ${method} ${call.pathname}`);
    const segments = call.pathname
      .slice(prefix.length + 1)
      .split('/')
      .map(safeDecode);
    const route = matchRoute(segments);
    if (!route) return fail(404, 'Not Found', `no such endpoint: ${method} ${call.pathname}`);
    const repo = `${route.owner}/${route.repo}`;
    if (repos && !repos.has(key(repo))) return fail(404, 'Not Found');

    // The body of a write: JSON, of the documented shape.
    const readBody = <S extends z.ZodType>(schema: S): { data: z.output<S> } | { reply: Reply } => {
      const type = call.headers['content-type'] ?? '';
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        return {
          reply: fail(
            415,
            'Unsupported Media Type',
            `Content-Type is ${JSON.stringify(type)}, not application/json`,
          ),
        };
      }
      let json: unknown;
      try {
        json = JSON.parse(call.rawBody);
      } catch {
        return { reply: fail(400, 'Problems parsing JSON', 'the body is not JSON') };
      }
      const parsed = schema.safeParse(json);
      if (parsed.success) return { data: parsed.data };
      const problems = parsed.error.issues.map((i) => describeIssue(i, json));
      return {
        reply: fail(422, `Invalid request.\n\n${problems.join('\n')}`, `body: ${problems.join(' ')}`),
      };
    };

    const apiUrl = `${server.origin}${prefix}/repos/${repo}`;
    const htmlUrl = `${server.origin}/${repo}`;
    const commentJson = (c: StoredComment) => ({
      id: c.id,
      node_id: `IC_${c.id}`,
      url: `${apiUrl}/issues/comments/${c.id}`,
      html_url: `${htmlUrl}/pull/${c.issue}#issuecomment-${c.id}`,
      issue_url: `${apiUrl}/issues/${c.issue}`,
      body: c.body,
      user: { login: c.login, id: 1, type: c.login.endsWith('[bot]') ? 'Bot' : 'User' },
      created_at: c.createdAt,
      updated_at: c.updatedAt,
      author_association: 'NONE',
    });
    const statusJson = (d: StoredDeployment, s: StoredStatus) => ({
      url: `${apiUrl}/deployments/${d.id}/statuses/${s.id}`,
      id: s.id,
      node_id: `DES_${s.id}`,
      state: s.state,
      creator: { login: ourLogin },
      description: s.description ?? '',
      environment: s.environment ?? d.environment,
      target_url: s.log_url ?? s.target_url ?? '',
      log_url: s.log_url ?? s.target_url ?? '',
      environment_url: s.environment_url ?? '',
      created_at: s.createdAt,
      updated_at: s.createdAt,
      deployment_url: `${apiUrl}/deployments/${d.id}`,
      repository_url: apiUrl,
    });
    const findComment = (id: number) => comments.find((c) => c.id === id && key(c.repo) === key(repo));
    const findDeployment = (id: number) => deployments.find((d) => d.id === id && key(d.repo) === key(repo));

    switch (`${method} ${route.name}`) {
      case 'GET issue-comments': {
        const perPage = Math.min(maxPerPage, positiveInt(call.query.get('per_page')) ?? 30);
        const page = positiveInt(call.query.get('page')) ?? 1;
        const all = comments.filter((c) => key(c.repo) === key(repo) && c.issue === route.id);
        const lastPage = Math.max(1, Math.ceil(all.length / perPage));
        const pageUrl = (p: number) => {
          const u = new URL(`${server.origin}${call.pathname}`);
          for (const [k, v] of call.query) u.searchParams.set(k, v);
          u.searchParams.set('per_page', String(perPage));
          u.searchParams.set('page', String(p));
          return u.href;
        };
        const links: string[] = [];
        if (page < lastPage)
          links.push(`<${pageUrl(page + 1)}>; rel="next"`, `<${pageUrl(lastPage)}>; rel="last"`);
        if (page > 1) links.push(`<${pageUrl(page - 1)}>; rel="prev"`, `<${pageUrl(1)}>; rel="first"`);
        return {
          status: 200,
          headers: links.length ? { link: links.join(', ') } : {},
          body: all.slice((page - 1) * perPage, page * perPage).map(commentJson),
        };
      }
      case 'POST issue-comments': {
        const read = readBody(IssueCommentBody);
        if ('reply' in read) return read.reply;
        const input = read.data;
        const at = now();
        const c = {
          id: nextId++,
          repo,
          issue: route.id,
          body: input.body,
          login: ourLogin,
          createdAt: at,
          updatedAt: at,
        };
        comments.push(c);
        return { status: 201, body: commentJson(c) };
      }
      case 'GET comment': {
        const c = findComment(route.id);
        return c ? { status: 200, body: commentJson(c) } : fail(404, 'Not Found');
      }
      case 'PATCH comment': {
        const read = readBody(IssueCommentBody);
        if ('reply' in read) return read.reply;
        const input = read.data;
        const c = findComment(route.id);
        if (!c) return fail(404, 'Not Found');
        c.body = input.body;
        c.updatedAt = now();
        return { status: 200, body: commentJson(c) };
      }
      case 'DELETE comment': {
        const c = findComment(route.id);
        if (!c) return fail(404, 'Not Found');
        comments.splice(comments.indexOf(c), 1);
        return { status: 204 };
      }
      case 'POST deployments': {
        const read = readBody(CreateDeploymentBody);
        if ('reply' in read) return read.reply;
        const input = read.data;
        const at = now();
        const d: StoredDeployment = {
          id: nextId++,
          repo,
          ref: input.ref,
          sha: /^[0-9a-f]{40}$/.test(input.ref) ? input.ref : fakeSha(input.ref),
          environment: input.environment ?? 'production',
          description: input.description ?? null,
          task: input.task ?? 'deploy',
          transient_environment: input.transient_environment ?? false,
          production_environment:
            input.production_environment ?? (input.environment ?? 'production') === 'production',
          payload: input.payload ?? {},
          auto_merge: input.auto_merge,
          required_contexts: input.required_contexts,
          createdAt: at,
          statuses: [],
        };
        deployments.push(d);
        return {
          status: 201,
          body: {
            url: `${apiUrl}/deployments/${d.id}`,
            id: d.id,
            node_id: `DE_${d.id}`,
            sha: d.sha,
            ref: d.ref,
            task: d.task,
            payload: d.payload,
            original_environment: d.environment,
            environment: d.environment,
            description: d.description,
            creator: { login: ourLogin },
            created_at: at,
            updated_at: at,
            statuses_url: `${apiUrl}/deployments/${d.id}/statuses`,
            repository_url: apiUrl,
            transient_environment: d.transient_environment,
            production_environment: d.production_environment,
          },
        };
      }
      case 'POST deployment-statuses': {
        const read = readBody(CreateDeploymentStatusBody);
        if ('reply' in read) return read.reply;
        const input = read.data;
        const d = findDeployment(route.id);
        if (!d) return fail(404, 'Not Found');
        const s: StoredStatus = { id: nextId++, createdAt: now(), ...dropUndefined(input) };
        d.statuses.push(s);
        if (s.environment !== undefined) d.environment = s.environment;
        // GitHub: auto_inactive (default true) "adds a new inactive status to all prior non-transient,
        // non-production environment deployments with the same repository and environment name as the
        // created status's deployment. An inactive status is only added to deployments that had a success state."
        if (s.state === 'success' && s.auto_inactive !== false) {
          for (const other of deployments) {
            if (other === d || key(other.repo) !== key(repo) || other.environment !== d.environment) continue;
            if (other.id > d.id || other.transient_environment || other.production_environment) continue;
            if (other.statuses.at(-1)?.state !== 'success') continue;
            other.statuses.push({ id: nextId++, createdAt: now(), state: 'inactive' });
          }
        }
        return { status: 201, body: statusJson(d, s) };
      }
      case 'GET deployment-statuses': {
        const d = findDeployment(route.id);
        if (!d) return fail(404, 'Not Found');
        return { status: 200, body: [...d.statuses].reverse().map((s) => statusJson(d, s)) };
      }
      default:
        return fail(404, 'Not Found', `no such endpoint: ${method} ${call.pathname}`);
    }
  });

  return {
    ...server,
    url: `${server.origin}${prefix}`,
    token,
    comments: (repo, issue) =>
      comments
        .filter((c) => key(c.repo) === key(repo) && c.issue === issue)
        .map((c) => ({ id: c.id, body: c.body })),
    deployments: (repo) =>
      deployments
        .filter((d) => key(d.repo) === key(repo))
        .map(({ repo: _r, sha: _s, createdAt: _c, statuses, ...d }) => ({
          ...d,
          statuses: statuses.map(({ id: _i, createdAt: _t, ...s }) => s),
        })),
    addComment: (repo, issue, body, login = 'octocat') => {
      const at = now();
      const c = { id: nextId++, repo, issue, body, login, createdAt: at, updatedAt: at };
      comments.push(c);
      return c.id;
    },
    deleteComment: (repo, id) => {
      const i = comments.findIndex((c) => c.id === id && key(c.repo) === key(repo));
      if (i < 0) return false;
      comments.splice(i, 1);
      return true;
    },
  };
}

type RouteName = 'issue-comments' | 'comment' | 'deployments' | 'deployment-statuses';

/** `repos/:owner/:repo/…` → the route and its numeric id (issue, comment or deployment). */
function matchRoute(s: string[]): { name: RouteName; owner: string; repo: string; id: number } | undefined {
  if (s[0] !== 'repos' || !s[1] || !s[2]) return undefined;
  const [, owner, repo, a, b, c, d] = s;
  const id = (x: string | undefined) => (x && /^\d+$/.test(x) ? Number(x) : undefined);
  const at = (name: RouteName, n: number | undefined = 0) =>
    n === undefined ? undefined : { name, owner, repo, id: n };
  if (a === 'issues' && b === 'comments' && c && d === undefined) return at('comment', id(c));
  if (a === 'issues' && b && c === 'comments' && d === undefined) return at('issue-comments', id(b));
  if (a === 'deployments' && b === undefined) return at('deployments');
  if (a === 'deployments' && b && c === 'statuses' && d === undefined)
    return at('deployment-statuses', id(b));
  return undefined;
}

/** A zod issue in the words GitHub uses for schema errors. */
function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const field = issue.path.join('.');
  if (issue.code === 'unrecognized_keys')
    return issue.keys.map((k) => `"${k}" is not a permitted key.`).join('\n');
  if (issue.code === 'invalid_type' && getPath(input, issue.path) === undefined)
    return `"${field}" wasn't supplied.`;
  return `For '${field}': ${issue.message}`;
}

function getPath(input: unknown, path: PropertyKey[]): unknown {
  let cur = input;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[p];
  }
  return cur;
}

/** A path segment decoded; a malformed escape stays as sent (and matches no route). */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function positiveInt(value: string | null): number | undefined {
  return value && /^\d+$/.test(value) && Number(value) > 0 ? Number(value) : undefined;
}

function fakeSha(ref: string): string {
  let h = 0;
  for (const ch of ref) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h.toString(16).padStart(8, '0').repeat(5);
}

function dropUndefined<T extends object>(obj: T): T {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as T;
}

function normalizePrefix(prefix: string | undefined): string {
  if (!prefix) return '';
  return `/${prefix.replace(/^\/+|\/+$/g, '')}`;
}

// ---- The recording HTTP server both fakes share. ----

/** One request the fake received, in arrival order (faulted and refused ones too). */
export interface RecordedCall {
  method: string;
  /** The path and query as sent (still URL-encoded). */
  path: string;
  /** The body parsed as JSON; the raw text when it is not JSON; null when empty. */
  body: unknown;
  /** As Node gives them: lower-case names. */
  headers: IncomingHttpHeaders;
  /** The status answered; undefined while the answer is delayed or if the client went away first. */
  status?: number;
}

/** A canned answer for `respondNext`: a status (default 502), headers, a JSON body, and a delay before it. */
export interface CannedResponse {
  status?: number;
  headers?: Record<string, string>;
  body?: unknown;
  delayMs?: number;
}

export interface FakeForgeServer {
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  calls: RecordedCall[];
  /** Requests that break the forge's documented rules; a passing test expects none. */
  violations: string[];
  /** The next `n` requests are answered 502 (checked for nothing). */
  failNext(n: number): void;
  /** The next `n` requests get `response` instead of being handled (e.g. a 429 with `retry-after`). */
  respondNext(n: number, response: CannedResponse): void;
  /** The next `n` requests are handled normally after `ms` (to provoke a client timeout). */
  delayNext(n: number, ms: number): void;
  close(): Promise<void>;
}

/** The answer of a fake's handler. `body` is sent as JSON. */
export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface IncomingCall {
  method: string;
  pathname: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  rawBody: string;
}

type Fault = { kind: 'respond'; response: CannedResponse } | { kind: 'delay'; ms: number };

const MAX_REQUEST_BYTES = 2 * 1024 * 1024;

/**
 * A real HTTP server on 127.0.0.1 that records every request, applies queued faults, and passes the
 * rest to `handle`, which reports rule breaks through `violation`.
 */
export async function startFakeForgeServer(
  failFirst: number,
  handle: (call: IncomingCall, violation: (why: string) => void) => Reply | Promise<Reply>,
): Promise<FakeForgeServer> {
  const calls: RecordedCall[] = [];
  const violations: string[] = [];
  const faults: Fault[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const respondNext = (n: number, response: CannedResponse) => {
    for (let i = 0; i < n; i++) faults.push({ kind: 'respond', response });
  };
  respondNext(failFirst, { status: 502 });

  const send = (res: ServerResponse, call: RecordedCall, reply: Reply) => {
    call.status = reply.status;
    if (res.destroyed) return;
    const hasBody = reply.body !== undefined && reply.status !== 204;
    res.writeHead(reply.status, {
      ...(hasBody ? { 'content-type': 'application/json; charset=utf-8' } : {}),
      ...reply.headers,
    });
    res.end(hasBody ? JSON.stringify(reply.body) : undefined);
  };

  const onRequest = async (req: IncomingMessage, res: ServerResponse) => {
    const rawBody = await readBody(req);
    const call: RecordedCall = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      body: rawBody === undefined ? null : parseOrRaw(rawBody),
      headers: req.headers,
    };
    calls.push(call);
    if (rawBody === undefined) {
      violations.push(`${call.method} ${call.path}: body larger than ${MAX_REQUEST_BYTES} bytes`);
      return send(res, call, { status: 413, body: { message: 'Payload Too Large' } });
    }
    const fault = faults.shift();
    if (fault?.kind === 'respond') {
      const {
        status = 502,
        headers,
        body = { message: STATUS_CODES[status] ?? 'Error' },
        delayMs,
      } = fault.response;
      if (delayMs) await wait(delayMs);
      return send(res, call, { status, ...(headers ? { headers } : {}), body });
    }
    if (fault?.kind === 'delay') await wait(fault.ms);
    const url = new URL(call.path, 'http://fake');
    try {
      const reply = await handle(
        {
          method: call.method,
          pathname: url.pathname,
          query: url.searchParams,
          headers: req.headers,
          rawBody,
        },
        (why) => violations.push(`${call.method} ${url.pathname}: ${why}`),
      );
      send(res, call, reply);
    } catch (err) {
      violations.push(`${call.method} ${url.pathname}: the fake failed: ${String(err)}`);
      send(res, call, { status: 500, body: { message: 'fake failed' } });
    }
  };

  const server = createServer((req, res) => {
    onRequest(req, res).catch((err) => {
      violations.push(`the fake failed: ${String(err)}`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    origin: `http://127.0.0.1:${port}`,
    calls,
    violations,
    failNext: (n) => respondNext(n, { status: 502 }),
    respondNext,
    delayNext: (n, ms) => {
      for (let i = 0; i < n; i++) faults.push({ kind: 'delay', ms });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The body as text; undefined past the size limit. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= MAX_REQUEST_BYTES) chunks.push(chunk as Buffer);
  }
  return size > MAX_REQUEST_BYTES ? undefined : Buffer.concat(chunks).toString('utf8');
}

function parseOrRaw(raw: string): unknown {
  if (raw === '') return null;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}
