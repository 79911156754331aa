/** `/v1/environments`: create, list, get, destroy, events and logs. */
import type { Server } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiDeps } from './app.js';

const ListQuery = z.object({
  project: z.string().optional(),
  all: z.enum(['0', '1', 'true', 'false']).optional(),
});
const EventsQuery = z.object({ after: z.coerce.number().int().optional() });
const LogsQuery = z.object({
  service: z.string().optional(),
  tail: z.coerce.number().int().positive().optional(),
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
});
const IdParams = z.object({ id: z.string() });
const truthy = (v: string | undefined) => v === '1' || v === 'true';

export function registerEnvironmentRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  const { environments } = deps;
  const base = ApiPaths.environments;

  app.post(base, async (req, reply) => {
    const env = await environments.create(req.body as never);
    return reply.status(201).send(await environments.toResource(env));
  });

  app.get(base, async (req) => {
    const q = ListQuery.parse(req.query);
    const items = await environments.list({ project: q.project, all: truthy(q.all) });
    return { items: await Promise.all(items.map((e) => environments.toResource(e))) };
  });

  app.get(`${base}/:id`, async (req) => {
    const { id } = IdParams.parse(req.params);
    return environments.toResource(await environments.find(id), true);
  });

  app.delete(`${base}/:id`, async (req, reply) => {
    const { id } = IdParams.parse(req.params);
    return reply.status(202).send(await environments.toResource(await environments.destroy(id)));
  });

  app.get(`${base}/:id/events`, async (req) => {
    const { id } = IdParams.parse(req.params);
    const q = EventsQuery.parse(req.query);
    const env = await environments.find(id);
    const events = await deps.store.events.list(env.id, { afterId: q.after });
    return {
      items: events.map((e) => ({
        id: e.id,
        envId: e.envId,
        type: e.type,
        state: e.state,
        message: e.message,
        at: e.at.toISOString(),
      })),
    };
  });

  app.get(`${base}/:id/logs`, async (req, reply) => {
    const { id } = IdParams.parse(req.params);
    const q = LogsQuery.parse(req.query);
    const env = await environments.find(id);
    const follow = truthy(q.follow);
    const services = q.service ? [q.service] : (env.plan?.workloads.map((w) => w.name) ?? []);
    const abort = new AbortController();
    req.raw.on('close', () => abort.abort());
    const sources = await Promise.all(
      services.map(async (s) => {
        try {
          return {
            service: s,
            stream: await deps.runtime.logs(env.id, s, { follow, tail: q.tail, signal: abort.signal }),
          };
        } catch (err) {
          if (q.service) throw err;
          return null; // a job that never ran has no logs; the others still do
        }
      }),
    );
    const present = sources.filter((s): s is { service: string; stream: Readable } => s !== null);
    reply.header('content-type', 'text/plain; charset=utf-8');
    if (q.service) return reply.send(present[0]!.stream);
    return reply.send(prefixLines(present, abort.signal));
  });
}

/** Merges several log streams into one, each line prefixed `service | `. */
function prefixLines(sources: { service: string; stream: Readable }[], signal: AbortSignal): Readable {
  const out = new PassThrough();
  const width = Math.max(0, ...sources.map((s) => s.service.length));
  let open = sources.length;
  if (open === 0) out.end();
  for (const { service, stream } of sources) {
    let rest = '';
    const prefix = `${service.padEnd(width)} | `;
    stream.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString('utf8')).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) out.write(`${prefix}${line}\n`);
    });
    stream.on('end', () => {
      if (rest) out.write(`${prefix}${rest}\n`);
      if (--open === 0) out.end();
    });
    stream.on('error', () => {
      if (--open === 0) out.end();
    });
  }
  signal.addEventListener('abort', () => {
    for (const { stream } of sources) stream.destroy();
  });
  return out;
}
