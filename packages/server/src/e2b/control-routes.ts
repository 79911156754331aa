/**
 * E2B's control-plane API (`E2B_API_URL`), translated onto the sandbox service: create, get, list,
 * timeout, connect (resume), pause, kill, templates. Keys come in `X-API-Key` and are Mayfly tokens
 * (reading needs `read`, the rest `write`). Answers have E2B's shapes; errors are
 * `{ code: <status>, message }`, which is what the SDK reads its error classes from.
 */
import type { Server } from 'node:http';
import { type SandboxInfo, scopeAllows } from '@mayfly/contract';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as z from 'zod';
import type { Access } from '../access/access.js';
import type { TokenService } from '../access/token-service.js';
import { toHttpError, UnauthorizedError } from '../api/errors.js';
import { ConflictError, ForbiddenError, NotFoundError } from '../controller/errors.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import type { EnvdAccess } from './envd-access.js';

/** The envd version Mayfly answers as: the newest the SDK tells apart, so it takes its current paths. */
export const ENVD_VERSION = '0.6.4';
const CLIENT_ID = 'mayfly';

const Seconds = z
  .number()
  .int()
  .min(0)
  .max(24 * 3600);
const StringMap = z.record(z.string().max(256), z.string().max(4096));

const NewSandbox = z.object({
  templateID: z.string().min(1).max(128),
  timeout: Seconds.optional(),
  metadata: StringMap.optional(),
  envVars: StringMap.optional(),
  /** Honoured only as far as `network.allowOut` goes: a Mayfly sandbox has no network unless it lists where. */
  allow_internet_access: z.boolean().optional(),
  network: z
    .object({ allowOut: z.array(z.string()).max(32).optional() })
    .loose()
    .optional(),
  secure: z.boolean().optional(),
});
const Timeout = z.object({ timeout: Seconds });
const Connect = z.object({ timeout: Seconds.optional() });
const Id = z.object({ id: z.string().max(64) });
const ListQuery = z.object({
  metadata: z.string().max(8192).optional(),
  state: z.string().max(64).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  nextToken: z.string().max(256).optional(),
});

export interface ControlDeps {
  sandboxes: SandboxService;
  tokens: Pick<TokenService, 'authenticate'>;
  envdAccess: EnvdAccess;
  /** The gateway's base domain: the SDK's `getHost(port)` is `<port>-<id>.<domain>`, which it routes. */
  domain: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    e2bAccess?: Access;
  }
}

/** E2B's error body, and a status the SDK maps to its error classes. */
export function e2bError(err: unknown): { status: number; body: { code: number; message: string } } {
  const { status, body } = toHttpError(err);
  return { status, body: { code: status, message: body.error.message } };
}

export function registerControlRoutes(app: FastifyInstance<Server>, deps: ControlDeps): void {
  const { sandboxes, envdAccess } = deps;
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = e2bError(err);
    if (status >= 500) req.log.error({ err }, 'e2b request failed');
    void reply.status(status).send(body);
  });
  app.addHook('onRequest', async (req) => {
    const key = req.headers['x-api-key'];
    if (typeof key !== 'string' || key.length === 0 || key.length > 200)
      throw new UnauthorizedError('missing API key (X-API-Key; `mayfly e2b env` prints one)');
    const access = await deps.tokens.authenticate(key);
    if (!access) throw new UnauthorizedError('invalid, expired or revoked API key');
    const needed = req.method === 'GET' ? 'read' : 'write';
    if (!scopeAllows(access.scope, needed))
      throw new ForbiddenError(`this key has scope "${access.scope}"; this needs "${needed}"`);
    req.e2bAccess = access;
  });
  const access = (req: FastifyRequest) => req.e2bAccess!;

  /** What create and connect answer: enough for the SDK to reach the sandbox. */
  const started = (info: SandboxInfo) => ({
    sandboxID: info.id,
    templateID: info.template,
    alias: info.template,
    clientID: CLIENT_ID,
    envdVersion: ENVD_VERSION,
    envdAccessToken: envdAccess.keyOf(info.id),
    trafficAccessToken: null,
    domain: deps.domain,
  });
  const listed = (info: SandboxInfo) => ({
    sandboxID: info.id,
    templateID: info.template,
    alias: info.template,
    clientID: CLIENT_ID,
    startedAt: info.startedAt,
    endAt: info.expiresAt,
    state: info.state,
    cpuCount: Math.max(1, Math.ceil(info.cpu ?? 1)),
    memoryMB: info.memoryMb,
    diskSizeMB: 0,
    metadata: info.metadata,
    envdVersion: ENVD_VERSION,
    volumeMounts: [],
  });
  /** E2B knows no ended sandboxes: they are not found. */
  const live = async (id: string, req: FastifyRequest) => {
    const info = await sandboxes.get(id, access(req));
    if (info.state === 'ended') throw new NotFoundError(`sandbox ${id} not found`);
    return info;
  };
  const noContent = (reply: FastifyReply) => reply.status(204).send();

  app.post('/sandboxes', async (req, reply) => {
    const body = NewSandbox.parse(req.body);
    const info = await sandboxes.create(
      {
        template: body.templateID,
        ...(body.timeout !== undefined ? { timeoutMs: Math.max(1, body.timeout) * 1000 } : {}),
        envs: body.envVars ?? {},
        metadata: body.metadata ?? {},
        allowOut: body.network?.allowOut ?? [],
      },
      access(req),
    );
    return reply.status(201).send(started(info));
  });

  app.get('/sandboxes/:id', async (req) => {
    const { id } = Id.parse(req.params);
    const info = await live(id, req);
    // The key runs commands in it: only for a key that may (create and connect need write anyway).
    const key = scopeAllows(access(req).scope, 'write') ? { envdAccessToken: envdAccess.keyOf(id) } : {};
    return { ...listed(info), ...key, domain: deps.domain };
  });

  // The first version of the list: running sandboxes, all in one answer.
  app.get('/sandboxes', async (req) => (await sandboxes.list(access(req))).map(listed));

  app.get('/v2/sandboxes', async (req, reply) => {
    const query = ListQuery.parse(req.query);
    const states = (query.state ?? 'running,paused')
      .split(',')
      .filter(Boolean)
      .map((s) => z.enum(['running', 'paused']).parse(s));
    const all = (await sandboxes.list(access(req), { states, metadata: metadataFilter(query.metadata) }))
      // Newest first; the id breaks ties, so a page boundary is a place in one fixed order.
      .sort((a, b) => b.startedAt.localeCompare(a.startedAt) || a.id.localeCompare(b.id));
    const after = query.nextToken ? all.findIndex((s) => s.id === cursorId(query.nextToken!)) + 1 : 0;
    const page = all.slice(after, after + query.limit);
    if (after + query.limit < all.length)
      void reply.header('x-next-token', Buffer.from(page.at(-1)!.id).toString('base64url'));
    return page.map(listed);
  });

  app.post('/sandboxes/:id/timeout', async (req, reply) => {
    const { id } = Id.parse(req.params);
    const { timeout } = Timeout.parse(req.body);
    await live(id, req);
    await sandboxes.setTimeout(id, { timeoutMs: timeout * 1000 }, access(req));
    return noContent(reply);
  });

  // Resume a paused sandbox (201), or only make sure a running one lives this long (200).
  app.post('/sandboxes/:id/connect', async (req, reply) => {
    const { id } = Id.parse(req.params);
    const { timeout = 300 } = Connect.parse(req.body ?? {});
    let info = await live(id, req);
    const resumed = info.state === 'paused';
    if (resumed) info = await sandboxes.resume(id, access(req));
    if (Date.parse(info.expiresAt) < Date.now() + timeout * 1000)
      info = await sandboxes.setTimeout(id, { timeoutMs: timeout * 1000 }, access(req));
    return reply.status(resumed ? 201 : 200).send(started(info));
  });

  app.post('/sandboxes/:id/pause', async (req, reply) => {
    const { id } = Id.parse(req.params);
    const info = await live(id, req);
    if (info.state === 'paused') throw new ConflictError(`sandbox ${id} is already paused`);
    await sandboxes.pause(id, access(req));
    return noContent(reply);
  });

  app.delete('/sandboxes/:id', async (req, reply) => {
    const { id } = Id.parse(req.params);
    await live(id, req);
    await sandboxes.kill(id, access(req));
    return noContent(reply);
  });

  app.get('/sandboxes/:id/metrics', async (req) => {
    const { id } = Id.parse(req.params);
    await live(id, req);
    return [];
  });

  app.get('/templates', async (req) =>
    (await sandboxes.templates(access(req))).map((t) => ({
      templateID: t.name,
      buildID: t.image ?? '',
      aliases: [t.name],
      names: [t.name],
      cpuCount: Math.max(1, Math.ceil(t.cpu)),
      memoryMB: t.memoryMb,
      diskSizeMB: t.diskMb,
      public: false,
      envdVersion: ENVD_VERSION,
      createdAt: t.createdAt,
      updatedAt: t.createdAt,
      buildCount: 1,
      spawnCount: 0,
      buildStatus: t.image ? 'ready' : 'waiting',
    })),
  );
}

/**
 * The SDK's metadata filter: `k=v&k2=v2` with each key and value URI-encoded once more (the query
 * string's own decoding has already been undone by the framework).
 */
export function metadataFilter(raw: string | undefined): Record<string, string> {
  const filter: Record<string, string> = {};
  if (!raw) return filter;
  for (const [key, value] of new URLSearchParams(raw)) {
    try {
      filter[decodeURIComponent(key)] = decodeURIComponent(value);
    } catch {
      filter[key] = value;
    }
  }
  return filter;
}

const cursorId = (token: string) => Buffer.from(token, 'base64url').toString('utf8');
