/** `/v1/environments`: create, list, get, destroy, events and logs. */
import type { Server } from 'node:http';
import { ApiPaths, TEMPLATE_MAX_BYTES } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiDeps } from './app.js';
import { requireAccess } from './auth.js';

const flag = z.enum(['0', '1', 'true', 'false']).optional();
const ListQuery = z.object({ project: z.string().max(64).optional(), all: flag });
const EventsQuery = z.object({ after: z.coerce.number().int().nonnegative().optional() });
const LogsQuery = z.object({
  service: z.string().max(64).optional(),
  /** Last N lines (0: none, only what follows); `all` for everything. */
  tail: z.union([z.literal('all'), z.coerce.number().int().nonnegative()]).optional(),
  follow: flag,
});
const IdParams = z.object({ id: z.string().min(1).max(64) });
const truthy = (v: string | undefined) => v === '1' || v === 'true';

/**
 * A template may be 1 MiB of UTF-8, which JSON escaping can make several times longer; every other
 * field of the request is small.
 */
const CREATE_BODY_LIMIT = 8 * TEMPLATE_MAX_BYTES;

export function registerEnvironmentRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  const { environments } = deps;
  const base = ApiPaths.environments;
  const read = { config: { scope: 'read' as const } };

  app.post(base, { config: { scope: 'write' }, bodyLimit: CREATE_BODY_LIMIT }, async (req, reply) => {
    const access = requireAccess(req);
    const env = await environments.create(req.body as never, access);
    return reply.status(201).send(await environments.toResource(env));
  });

  app.get(base, read, async (req) => {
    const q = ListQuery.parse(req.query);
    const items = await environments.list(requireAccess(req), { project: q.project, all: truthy(q.all) });
    return { items: await Promise.all(items.map((e) => environments.toResource(e))) };
  });

  app.get(`${base}/:id`, read, async (req) => {
    const { id } = IdParams.parse(req.params);
    return environments.toResource(await environments.find(id, requireAccess(req)), true);
  });

  app.delete(`${base}/:id`, { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = IdParams.parse(req.params);
    const env = await environments.destroy(id, requireAccess(req));
    return reply.status(202).send(await environments.toResource(env));
  });

  app.get(`${base}/:id/events`, read, async (req) => {
    const { id } = IdParams.parse(req.params);
    const q = EventsQuery.parse(req.query);
    return { items: await environments.events(id, requireAccess(req), { after: q.after }) };
  });

  app.get(`${base}/:id/logs`, read, async (req, reply) => {
    const { id } = IdParams.parse(req.params);
    const q = LogsQuery.parse(req.query);
    const abort = new AbortController();
    // The response's close (client gone, or server closing) ends the reads from the runtime.
    reply.raw.on('close', () => abort.abort());
    const stream = await environments.logs(id, requireAccess(req), {
      service: q.service,
      tail: q.tail === 'all' ? undefined : (q.tail ?? environments.defaultLogTail),
      follow: truthy(q.follow),
      signal: abort.signal,
    });
    reply.header('content-type', 'text/plain; charset=utf-8');
    reply.send(stream);
    // A followed log of a quiet service may have nothing to send for a long time: the client gets
    // the status and headers now, not with the first line.
    reply.raw.flushHeaders();
    return reply;
  });
}
