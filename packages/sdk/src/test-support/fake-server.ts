/**
 * A small stand-in for the Mayfly API server, for the SDK and CLI tests only: real HTTP on a free
 * port, contract-shaped JSON, scripted progressions. The real server gets its own end-to-end tests.
 *
 * Scenarios are picked by the request: a template containing `INVALID` is rejected with issues,
 * `FAIL` ends in `failed`, `SLOW` never leaves `pending`; names `over-quota` and `no-runtime` get
 * 429 and 503; a name already in use gets 409.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type EnvEvent,
  type Environment,
  type EnvState,
  type ErrorBody,
  type ErrorCode,
  parseDuration,
} from '@mayfly/contract';

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  body: unknown;
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
  /** The next request (other than /healthz) gets this answer instead. */
  failNext(status: number, body: ErrorBody | string): void;
  close(): Promise<void>;
}

const LOG_LINES: Record<string, string[]> = {
  web: ['listening on :3000', 'GET / 200'],
  db: ['database system is ready'],
};

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
    const request = body as {
      name?: string;
      project?: string;
      kind?: Environment['kind'];
      template?: { filename?: string; content?: string };
      ttl?: string;
    };
    const template = request?.template;
    if (typeof template?.filename !== 'string' || typeof template.content !== 'string') {
      return sendError(res, 400, 'invalid_request', 'template.filename and template.content are required');
    }
    if (template.content.includes('INVALID')) {
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
    const name = request.name ?? `env-${envCounter}`;
    const now = new Date();
    const env: Environment = {
      id,
      name,
      project: request.project ?? 'default',
      kind: request.kind ?? 'preview',
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
    };
    envs.set(id, env);
    addEvent(env, 'environment created', 'pending');
    if (template.content.includes('SLOW')) return sendJson(res, 201, env);
    const failing = template.content.includes('FAIL');
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
    const tail = query.has('tail') ? Number(query.get('tail')) : undefined;
    const lines = service
      ? (LOG_LINES[service] ?? [])
      : Object.entries(LOG_LINES).flatMap(([name, serviceLines]) =>
          serviceLines.map((l) => `${name} | ${l}`),
        );
    const shown = tail === undefined ? lines : lines.slice(-tail);
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
      res.write(service ? `tick ${tick}\n` : `web | tick ${tick}\n`);
    }, stepMs);
    timers.add(timer);
    res.on('close', () => {
      clearInterval(timer);
      timers.delete(timer);
    });
  };

  const handle = (req: IncomingMessage, res: ServerResponse, url: URL, raw: string) => {
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      return sendError(res, 400, 'invalid_request', 'body is not JSON');
    }
    requests.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      authorization: req.headers.authorization,
      body,
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
    if (req.headers.authorization !== `Bearer ${token}`) {
      return sendError(res, 401, 'unauthorized', 'missing or invalid token');
    }
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
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

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      raw += chunk;
    });
    req.on('end', () => {
      try {
        handle(req, res, url, raw);
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
