/**
 * A small stand-in for the Mayfly API server, for the SDK's own unit tests only: real HTTP on a
 * free port, contract-shaped JSON, scripted progressions. The CLI's tests run against the real
 * server; so should anything that depends on the server's exact messages or log format.
 *
 * Scenarios are picked by the request: a template containing `INVALID` is rejected with issues,
 * `FAIL` ends in `failed`, `SLOW` never leaves `pending`; names `over-quota` and `no-runtime` get
 * 429 and 503; a name already in use gets 409. Requests are checked against the contract's
 * schemas (so `template.dir`, say, is refused as by the real server), and token scopes are
 * enforced: `read` for GETs, `write` for environment changes and bundles, `admin` for tokens.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import {
  type Bundle,
  CreateEnvironmentRequest,
  CreateTokenRequest,
  type EnvEvent,
  type Environment,
  type EnvState,
  type ErrorBody,
  type ErrorCode,
  parseDuration,
  scopeAllows,
  type Token,
  type TokenScope,
} from '@mayfly/contract';
import type * as z from 'zod';

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  contentType: string | undefined;
  /** Parsed JSON for a JSON request; undefined otherwise (see `raw`). */
  body: unknown;
  /** The body's bytes, as received. */
  raw: Buffer;
  /** True when the body came chunked (streamed), without a content-length. */
  chunked: boolean;
}

/** An uploaded bundle as the fake keeps it: the tar's bytes, gunzipped. */
export interface FakeBundle extends Bundle {
  tar: Buffer;
  contentType: string;
}

export interface FakeServerOptions {
  /** Token required on everything but /healthz; default `test-token`. */
  token?: string;
  /** Delay between the steps of a scripted progression; default 20 ms. */
  stepMs?: number;
}

export interface FakeServer {
  url: string;
  token: string;
  requests: RecordedRequest[];
  envs: Map<string, Environment>;
  events: EnvEvent[];
  bundles: Map<string, FakeBundle>;
  /** The next request (other than /healthz) gets this answer instead. */
  failNext(status: number, body: ErrorBody | string): void;
  close(): Promise<void>;
}

const LOG_LINES: Record<string, string[]> = {
  web: ['listening on :3000', 'GET / 200'],
  db: ['database system is ready'],
};
/** The server's default `tail`. */
const DEFAULT_TAIL = 1000;

interface FakeToken extends Token {
  secret: string;
}

export async function startFakeServer(options: FakeServerOptions = {}): Promise<FakeServer> {
  const token = options.token ?? 'test-token';
  const stepMs = options.stepMs ?? 20;
  const requests: RecordedRequest[] = [];
  const envs = new Map<string, Environment>();
  const events: EnvEvent[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let forced: { status: number; body: ErrorBody | string } | null = null;
  let envCounter = 0;
  let eventCounter = 0;
  let bundleCounter = 0;
  let tokenCounter = 0;
  const bundles = new Map<string, FakeBundle>();
  const tokens = new Map<string, FakeToken>();
  tokens.set('tok_admin', {
    id: 'tok_admin',
    name: 'admin (local)',
    scope: 'admin',
    project: null,
    createdAt: new Date().toISOString(),
    expiresAt: null,
    revokedAt: null,
    secret: token,
  });

  const addEvent = (env: Environment, message: string, state: EnvState | null = null) => {
    if (state) {
      env.state = state;
      env.updatedAt = new Date().toISOString();
    }
    events.push({
      id: ++eventCounter,
      envId: env.id,
      type: state ? 'state' : 'step',
      state,
      message,
      at: new Date().toISOString(),
    });
  };

  /** Which script currently drives each environment: a destroy supersedes the create progression. */
  const scriptOf = new Map<string, symbol>();

  /** Runs `steps` one after another, `stepMs` apart, until another script takes over the environment. */
  const script = (env: Environment, steps: Array<() => void>) => {
    const self = Symbol(env.id);
    scriptOf.set(env.id, self);
    const next = (index: number) => {
      const step = steps[index];
      if (!step) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (scriptOf.get(env.id) !== self) return;
        step();
        next(index + 1);
      }, stepMs);
      timers.add(timer);
    };
    next(0);
  };

  const find = (idOrName: string): Environment | undefined =>
    envs.get(idOrName) ??
    [...envs.values()].find((env) => env.name === idOrName && env.state !== 'destroyed') ??
    [...envs.values()].find((env) => env.name === idOrName);

  const create = (res: ServerResponse, body: unknown) => {
    const parsed = CreateEnvironmentRequest.safeParse(body);
    if (!parsed.success) return sendError(res, 400, 'invalid_request', zodMessage(parsed.error));
    const request = parsed.data;
    const { template } = request;
    let content = template.content ?? '';
    if (template.bundle !== undefined) {
      const bundle = bundles.get(template.bundle);
      if (!bundle)
        return sendError(res, 400, 'invalid_request', `bundle ${template.bundle} not found or already used`);
      // Used once, as by the real server.
      bundles.delete(template.bundle);
      content = bundle.tar.toString('latin1');
    }
    if (content.includes('INVALID')) {
      return sendError(
        res,
        400,
        'invalid_template',
        `invalid template (2 problems):\n  ${template.filename}:3:5: expected a string\n  ${template.filename}:7:1: unknown key`,
        [
          {
            file: template.filename,
            line: 3,
            column: 5,
            path: 'services.web.image',
            message: 'expected a string',
          },
          { file: template.filename, line: 7, column: 1, path: 'volumez', message: 'unknown key' },
        ],
      );
    }
    if (request.name === 'over-quota')
      return sendError(res, 429, 'quota_exceeded', 'project default has 5 of 5');
    if (request.name === 'no-runtime')
      return sendError(res, 503, 'runtime_unavailable', 'Docker is not reachable');
    const existing = request.name ? find(request.name) : undefined;
    if (existing && existing.state !== 'destroyed') {
      return sendError(res, 409, 'conflict', `an environment named ${request.name} already exists`);
    }
    const id = `env_${++envCounter}`;
    const name = request.name ?? `${request.namePrefix ?? 'env'}-${envCounter}`;
    const now = new Date();
    const env: Environment = {
      id,
      name,
      project: request.project,
      kind: request.kind,
      state: 'pending',
      desired: 'present',
      urls: {},
      services: [],
      failure: null,
      templateFile: template.filename,
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
      expiresAt: request.ttl
        ? new Date(now.getTime() + (parseDuration(request.ttl) ?? 0)).toISOString()
        : null,
      sleep: false,
      keep: false,
      lastActiveAt: null,
      commit: null,
      updateFailure: null,
      createdBy: 'token test',
      pullRequest: null,
      data: [],
    };
    envs.set(id, env);
    addEvent(env, 'environment created', 'pending');
    if (content.includes('SLOW')) return sendJson(res, 201, env);
    const failing = content.includes('FAIL');
    script(env, [
      () => addEvent(env, 'building 1 image', 'building'),
      () => addEvent(env, 'web: image built (cached)'),
      () => addEvent(env, 'starting 2 services', 'creating'),
      () => {
        if (failing) {
          env.failure = { step: 'start web', reason: 'web exited with code 1' };
          addEvent(env, 'web exited with code 1', 'failed');
          return;
        }
        env.services = [
          { name: 'web', kind: 'service', state: 'running', health: 'healthy', exitCode: null },
          { name: 'db', kind: 'service', state: 'running', health: null, exitCode: null },
        ];
        env.urls = { web: `http://web--${name}.localhost:7070` };
        addEvent(env, 'web: healthy');
      },
      () => {
        if (!failing) addEvent(env, 'all services ready', 'ready');
      },
    ]);
    sendJson(res, 201, env);
  };

  const destroy = (res: ServerResponse, env: Environment) => {
    if (env.desired === 'present') {
      // Like the real controller, the teardown starts a little later, so a failed environment is
      // still `failed` in the 202 answer.
      env.desired = 'absent';
      script(env, [
        () => addEvent(env, 'destroy requested', 'destroying'),
        () => addEvent(env, 'web: removed'),
        () => {
          env.services = [];
          env.urls = {};
          addEvent(env, 'all resources removed', 'destroyed');
        },
      ]);
    }
    sendJson(res, 202, env);
  };

  const logs = (res: ServerResponse, query: URLSearchParams) => {
    const service = query.get('service');
    const tailText = query.get('tail');
    if (tailText !== null && tailText !== 'all' && !/^\d+$/.test(tailText)) {
      return sendError(res, 400, 'invalid_request', 'tail: expected a whole number or "all"');
    }
    const tail = tailText === 'all' ? undefined : tailText === null ? DEFAULT_TAIL : Number(tailText);
    // Padded to the longest service name, as the real server (and Compose) does.
    const width = Math.max(...Object.keys(LOG_LINES).map((n) => n.length));
    const lines = service
      ? (LOG_LINES[service] ?? [])
      : Object.entries(LOG_LINES).flatMap(([name, serviceLines]) =>
          serviceLines.map((l) => `${name.padEnd(width)} | ${l}`),
        );
    const shown = tail === undefined ? lines : tail === 0 ? [] : lines.slice(-tail);
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    // The last line goes out in two chunks, to check that the client reassembles split lines.
    const text = shown.map((l) => `${l}\n`).join('');
    res.write(text.slice(0, Math.max(0, text.length - 4)));
    res.write(text.slice(Math.max(0, text.length - 4)));
    if (query.get('follow') !== '1') {
      res.end();
      return;
    }
    let tick = 0;
    const timer = setInterval(() => {
      tick++;
      res.write(service ? `tick ${tick}\n` : `${'web'.padEnd(width)} | tick ${tick}\n`);
    }, stepMs);
    timers.add(timer);
    res.on('close', () => {
      clearInterval(timer);
      timers.delete(timer);
    });
  };

  const handle = (req: IncomingMessage, res: ServerResponse, url: URL, raw: Buffer) => {
    const contentType = req.headers['content-type'];
    let body: unknown;
    if (contentType?.startsWith('application/json')) {
      try {
        body = raw.length > 0 ? JSON.parse(raw.toString('utf8')) : undefined;
      } catch {
        return sendError(res, 400, 'invalid_request', 'body is not JSON');
      }
    }
    requests.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      authorization: req.headers.authorization,
      contentType,
      body,
      raw,
      chunked: req.headers['transfer-encoding'] === 'chunked',
    });
    if (url.pathname === '/healthz') return sendJson(res, 200, { ok: true, version: '0.0.0-fake' });
    if (forced) {
      const { status, body: forcedBody } = forced;
      forced = null;
      res.writeHead(status, {
        'content-type': typeof forcedBody === 'string' ? 'text/html' : 'application/json',
      });
      return void res.end(typeof forcedBody === 'string' ? forcedBody : JSON.stringify(forcedBody));
    }
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!bearer) return sendError(res, 401, 'unauthorized', 'missing bearer token (set MAYFLY_TOKEN)');
    const caller = [...tokens.values()].find(
      (t) =>
        t.secret === bearer &&
        t.revokedAt === null &&
        (t.expiresAt === null || Date.parse(t.expiresAt) > Date.now()),
    );
    if (!caller) return sendError(res, 401, 'unauthorized', 'invalid, expired or revoked token');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const needed: TokenScope = parts[1] === 'tokens' ? 'admin' : req.method === 'GET' ? 'read' : 'write';
    if (!scopeAllows(caller.scope, needed)) {
      return sendError(
        res,
        403,
        'forbidden',
        `this token has scope "${caller.scope}"; this needs "${needed}"`,
      );
    }
    if (parts[0] === 'v1' && parts[1] === 'bundles' && parts.length === 2 && req.method === 'POST') {
      return uploadBundle(res, contentType, raw);
    }
    if (parts[0] === 'v1' && parts[1] === 'tokens') return tokenRoute(req, res, parts, url, body);
    if (parts[0] !== 'v1' || parts[1] !== 'environments')
      return sendError(res, 404, 'not_found', 'no such route');
    if (parts.length === 2 && req.method === 'POST') return create(res, body);
    if (parts.length === 2 && req.method === 'GET') {
      const project = url.searchParams.get('project');
      const all = url.searchParams.get('all') === '1';
      const items = [...envs.values()]
        .filter((env) => (all || env.state !== 'destroyed') && (!project || env.project === project))
        .reverse();
      return sendJson(res, 200, { items });
    }
    const env = parts[2] === undefined ? undefined : find(parts[2]);
    if (!env) return sendError(res, 404, 'not_found', `environment ${parts[2]} not found`);
    if (parts.length === 3 && req.method === 'GET') return sendJson(res, 200, env);
    if (parts.length === 3 && req.method === 'DELETE') return destroy(res, env);
    if (parts[3] === 'events' && req.method === 'GET') {
      const after = Number(url.searchParams.get('after') ?? 0);
      return sendJson(res, 200, { items: events.filter((e) => e.envId === env.id && e.id > after) });
    }
    if (parts[3] === 'logs' && req.method === 'GET') return logs(res, url.searchParams);
    sendError(res, 404, 'not_found', 'no such route');
  };

  const uploadBundle = (res: ServerResponse, contentType: string | undefined, raw: Buffer) => {
    if (contentType !== 'application/gzip' && contentType !== 'application/x-tar') {
      return sendError(
        res,
        400,
        'invalid_request',
        'send the bundle as application/x-tar or application/gzip',
      );
    }
    let tar: Buffer;
    try {
      tar = contentType === 'application/gzip' ? gunzipSync(raw) : raw;
    } catch {
      return sendError(res, 400, 'invalid_request', 'the bundle is not a valid gzip stream');
    }
    const bundle: FakeBundle = {
      id: `b${++bundleCounter}`,
      files: countTarEntries(tar),
      bytes: tar.length,
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      tar,
      contentType,
    };
    bundles.set(bundle.id, bundle);
    const { tar: _tar, contentType: _type, ...resource } = bundle;
    sendJson(res, 201, resource);
  };

  const publicToken = ({ secret: _secret, ...rest }: FakeToken): Token => rest;

  const tokenRoute = (
    req: IncomingMessage,
    res: ServerResponse,
    parts: string[],
    url: URL,
    body: unknown,
  ) => {
    if (parts.length === 2 && req.method === 'POST') {
      const parsed = CreateTokenRequest.safeParse(body);
      if (!parsed.success) return sendError(res, 400, 'invalid_request', zodMessage(parsed.error));
      const { name, scope, project, ttl } = parsed.data;
      const ms = ttl === undefined ? null : parseDuration(ttl);
      if (ttl !== undefined && ms === null) {
        return sendError(res, 400, 'invalid_request', `ttl "${ttl}" is not a duration like 30m, 2h or 30d`);
      }
      const created: FakeToken = {
        id: `tok_${++tokenCounter}`,
        name,
        scope,
        project: project ?? null,
        createdAt: new Date().toISOString(),
        expiresAt: ms === null ? null : new Date(Date.now() + ms).toISOString(),
        revokedAt: null,
        secret: `mf_fake_${tokenCounter}_${Math.random().toString(36).slice(2)}`,
      };
      tokens.set(created.id, created);
      return sendJson(res, 201, { ...publicToken(created), token: created.secret });
    }
    if (parts.length === 2 && req.method === 'GET') {
      const all = url.searchParams.get('all') === '1';
      const items = [...tokens.values()].filter((t) => all || t.revokedAt === null).map(publicToken);
      return sendJson(res, 200, { items });
    }
    if (parts.length === 3 && req.method === 'DELETE') {
      const idOrName = parts[2] ?? '';
      const named = [...tokens.values()].filter((t) => t.name === idOrName && t.revokedAt === null);
      if (!tokens.has(idOrName) && named.length > 1) {
        return sendError(
          res,
          409,
          'conflict',
          `${named.length} tokens are named "${idOrName}": revoke one by its id`,
        );
      }
      const found = tokens.get(idOrName) ?? named[0];
      if (!found) return sendError(res, 404, 'not_found', `no token "${idOrName}"`);
      found.revokedAt ??= new Date().toISOString();
      return sendJson(res, 200, publicToken(found));
    }
    sendError(res, 404, 'not_found', 'no such route');
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        handle(req, res, url, Buffer.concat(chunks));
      } catch (err) {
        // A bug in this stand-in must fail the test quickly, not leave the client waiting.
        sendError(res, 500, 'internal', String(err));
      }
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    requests,
    envs,
    events,
    bundles,
    failNext(status, body) {
      forced = { status, body };
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Like the real server's answer to a request that does not match its schema. */
function zodMessage(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
}

/** Regular files in a tar archive: 512-byte headers, each followed by its data padded to 512 bytes. */
function countTarEntries(tar: Buffer): number {
  let count = 0;
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const size = Number.parseInt(
      header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0',
      8,
    );
    const type = String.fromCharCode(header[156] ?? 0);
    if (type === '0' || type === '\0') count++;
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return count;
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  message: string,
  issues?: ErrorBody['error']['issues'],
): void {
  sendJson(res, status, { error: { code, message, ...(issues ? { issues } : {}) } });
}
