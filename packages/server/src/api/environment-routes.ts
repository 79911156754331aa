/** `/v1/environments`: create, list, get, destroy, events and logs. */
import type { Server } from 'node:http';
import { PassThrough } from 'node:stream';
import { ApiPaths, TEMPLATE_MAX_BYTES } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import * as z from 'zod';
import type { FeedEvent } from '../controller/environment-feed.js';
import type { ApiDeps } from './app.js';
import { requireAccess } from './auth.js';
import { addRoute } from './route.js';

const flag = z.enum(['0', '1', 'true', 'false']).optional();
const ListQuery = z.object({
  project: z
    .string()
    .max(64)
    .optional()
    .describe('only this project (a project-bound token sees only its own)'),
  all: flag.describe('1 or true: include destroyed ones'),
});
const EventsQuery = z.object({
  after: z.coerce.number().int().nonnegative().optional().describe('only events after this event id'),
});
/** The default of `tail` is the server's setting, so the schema is made where that is known. */
const logsQuery = (defaultTail: number) =>
  z.object({
    service: z
      .string()
      .max(64)
      .optional()
      .describe('one service or job; without it, every line is prefixed `service | `'),
    tail: z
      .union([z.literal('all'), z.coerce.number().int().nonnegative()])
      .optional()
      .describe(`the last N lines (0: none, only what follows; ${defaultTail} when absent), or all`),
    follow: flag.describe(
      '1 or true: keep streaming new lines until the environment goes or the client leaves',
    ),
    build: flag.describe(
      "1 or true: the output of the environment's image builds (the last 256 KiB of each, kept after the build, failed or not) instead of the services' logs; not with follow",
    ),
  });
const IdParams = z.object({ id: z.string().min(1).max(64).describe('environment id or name') });
const truthy = (v: string | undefined) => v === '1' || v === 'true';

/**
 * A template may be 1 MiB of UTF-8, which JSON escaping can make several times longer; every other
 * field of the request is small.
 */
const CREATE_BODY_LIMIT = 8 * TEMPLATE_MAX_BYTES;

/** How often an open watch asks again whether its token or session is still good. */
const WATCH_RECHECK_MS = 5_000;

/** Logs are sent as they are read, as lines of text. */
const LOG_MEDIA_TYPE = 'text/plain; charset=utf-8';

export function registerEnvironmentRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  const { environments } = deps;
  const base = ApiPaths.environments;

  addRoute(app, {
    method: 'GET',
    url: ApiPaths.watchEnvironments,
    scope: 'read',
    summary: 'environments as they change: server-sent events',
    description:
      'A `snapshot` event (data: the environments this token sees, as JSON), then a `change` event (one environment) or a `gone` event (its id) whenever one changes, within about a second. A client that does not keep up is disconnected.',
    response: { status: 200, description: 'an event stream', mediaType: 'text/event-stream' },
    errors: { 429: 'the most watchers this server serves at once are connected' },
    handler: async ({ req, reply }) => {
      const stream = new PassThrough();
      let stop = () => {};
      let timer: NodeJS.Timeout | undefined;
      const close = () => {
        clearInterval(timer);
        stop();
        stream.destroy();
      };
      // (Before anything is awaited: a client gone meanwhile is seen below.)
      reply.raw.on('close', close);
      const write = (event: FeedEvent): boolean => {
        // A client gone, or more than 1 MiB behind, is dropped, not buffered for.
        if (stream.destroyed || stream.writableEnded || stream.writableLength > 1024 * 1024) return false;
        const data =
          event.type === 'snapshot'
            ? JSON.stringify(event.items)
            : event.type === 'change'
              ? JSON.stringify(event.environment)
              : event.id;
        stream.write(`event: ${event.type}\ndata: ${data}\n\n`);
        return true;
      };
      stop = await deps.environmentFeed.watch(requireAccess(req), write, () => reply.raw.destroy());
      if (reply.raw.destroyed) close();
      // Every few seconds: a comment (keeps idle connections open through proxies), and the token
      // or session asked again, so a revoked or expired one, or a logout, ends the stream.
      timer = setInterval(() => {
        void (async () => {
          if (req.stillAllowed && !(await req.stillAllowed().catch(() => true))) reply.raw.destroy();
          else if (!stream.destroyed) stream.write(': ping\n\n');
        })();
      }, WATCH_RECHECK_MS);
      reply.header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
      reply.send(stream);
      reply.raw.flushHeaders();
      return reply;
    },
  });

  addRoute(app, {
    method: 'POST',
    url: base,
    scope: 'write',
    summary: 'create an environment from a template',
    body: { json: 'CreateEnvironmentRequest' },
    bodyLimit: CREATE_BODY_LIMIT,
    response: { status: 201, description: 'recorded; the controller creates it', json: 'Environment' },
    errors: {
      400: 'invalid request or template',
      409: 'name taken',
      429: 'the most environments this server allows exist',
    },
    handler: async ({ req }) => {
      const access = requireAccess(req);
      const env = await environments.create(req.body as never, access);
      return environments.toResource(env);
    },
  });

  addRoute(app, {
    method: 'GET',
    url: base,
    scope: 'read',
    summary: 'list environments',
    query: ListQuery,
    response: { status: 200, description: 'environments', json: { items: 'Environment' } },
    handler: async ({ query, req }) => {
      const items = await environments.list(requireAccess(req), {
        project: query.project,
        all: truthy(query.all),
      });
      return { items: await Promise.all(items.map((e) => environments.toResource(e))) };
    },
  });

  addRoute(app, {
    method: 'GET',
    url: `${base}/:id`,
    scope: 'read',
    summary: 'one environment, with live service status',
    params: IdParams,
    response: { status: 200, description: 'the environment', json: 'Environment' },
    errors: { 404: 'no such environment' },
    handler: async ({ params, req }) =>
      environments.toResource(await environments.find(params.id, requireAccess(req)), true),
  });

  addRoute(app, {
    method: 'DELETE',
    url: `${base}/:id`,
    scope: 'write',
    summary: 'destroy; the controller tears it down and verifies nothing is left',
    params: IdParams,
    response: { status: 202, description: 'teardown recorded', json: 'Environment' },
    errors: { 404: 'no such environment' },
    handler: async ({ params, req }) =>
      environments.toResource(await environments.destroy(params.id, requireAccess(req))),
  });

  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/events`,
    scope: 'read',
    summary: 'the timeline: one event per transition and step',
    params: IdParams,
    query: EventsQuery,
    response: { status: 200, description: 'events in order', json: { items: 'EnvEvent' } },
    errors: { 404: 'no such environment' },
    handler: async ({ params, query, req }) => ({
      items: await environments.events(params.id, requireAccess(req), { after: query.after }),
    }),
  });

  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/logs`,
    scope: 'read',
    summary: 'logs, streamed; without service every line is prefixed `service | `',
    params: IdParams,
    query: logsQuery(environments.defaultLogTail),
    response: { status: 200, description: 'the lines, as they are read', mediaType: LOG_MEDIA_TYPE },
    errors: {
      400: 'invalid request, or follow with build',
      404: 'no such environment, or no such service in it, or no logs (or build output) of it',
      429: 'the most log streams this server reads at once are open',
      503: 'the runtime cannot be reached',
    },
    handler: async ({ params, query, req, reply }) => {
      const abort = new AbortController();
      // A followed log asks again every few seconds whether its token or session still holds.
      const recheck = truthy(query.follow)
        ? setInterval(() => {
            void (async () => {
              if (req.stillAllowed && !(await req.stillAllowed().catch(() => true))) reply.raw.destroy();
            })();
          }, WATCH_RECHECK_MS)
        : undefined;
      // The response's close (client gone, or server closing) ends the reads from the runtime.
      reply.raw.on('close', () => {
        clearInterval(recheck);
        abort.abort();
      });
      const stream = await environments.logs(params.id, requireAccess(req), {
        service: query.service,
        tail: query.tail === 'all' ? undefined : (query.tail ?? environments.defaultLogTail),
        follow: truthy(query.follow),
        build: truthy(query.build),
        signal: abort.signal,
      });
      reply.send(stream);
      // A followed log of a quiet service may have nothing to send for a long time: the client gets
      // the status and headers now, not with the first line.
      reply.raw.flushHeaders();
      return reply;
    },
  });
  const lifecycleRoute = (
    verb: 'sleep' | 'wake' | 'keep' | 'redeploy',
    summary: string,
    act: (id: string, access: ReturnType<typeof requireAccess>) => Promise<unknown>,
  ) =>
    addRoute(app, {
      method: 'POST',
      url: `${base}/:id/${verb}`,
      scope: 'write',
      summary,
      params: IdParams,
      response: { status: 200, description: 'the environment', json: 'Environment' },
      errors: {
        404: 'no such environment',
        409: 'it is being destroyed, or in a state the action does not apply to (a failed one cannot sleep; redeploy waits for a bring-up or update under way)',
      },
      handler: async ({ params, req }) => {
        const access = requireAccess(req);
        await act(params.id, access);
        return environments.toResource(await environments.find(params.id, access));
      },
    });
  lifecycleRoute(
    'sleep',
    'put to sleep: containers stopped, volumes kept; the next request wakes it (scope write)',
    (id, a) => environments.sleep(id, a),
  );
  lifecycleRoute('wake', 'wake a sleeping environment (scope write)', (id, a) => environments.wake(id, a));
  lifecycleRoute(
    'redeploy',
    'bring it up again from its template (and commit): every service in a new container, volumes and finished jobs kept (scope write)',
    (id, a) => environments.redeploy(id, a),
  );
  lifecycleRoute(
    'keep',
    'keep: no time to live, never put to sleep or destroyed for being idle (scope write)',
    (id, a) => environments.keep(id, a),
  );
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/extend`,
    scope: 'write',
    summary: 'push the end of its time to live back (scope write)',
    params: IdParams,
    query: z.object({ by: z.string().min(1).max(32).describe('how much longer, e.g. 2h, 1d') }),
    response: { status: 200, description: 'the environment', json: 'Environment' },
    errors: { 404: 'no such environment', 409: 'it is being destroyed' },
    handler: async ({ params, query, req }) => {
      const access = requireAccess(req);
      return environments.toResource(await environments.extend(params.id, query.by, access));
    },
  });
}
