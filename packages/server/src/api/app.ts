/** The fastify app of the REST API: token auth, routes, and the error mapping. */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import Fastify, { type FastifyInstance, type FastifyServerFactory, LogController } from 'fastify';
import type { EnvironmentService } from '../controller/environment-service.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Store } from '../store/store.js';
import { registerEnvironmentRoutes } from './environment-routes.js';
import { toHttpError, UnauthorizedError } from './errors.js';
import { openApiDocument } from './openapi.js';

export interface ApiDeps {
  store: Store;
  runtime: Runtime;
  environments: EnvironmentService;
  metrics: Metrics;
  logger: Logger;
  version: string;
  serverFactory?: FastifyServerFactory;
}

const PUBLIC_PATHS = new Set([ApiPaths.health, '/metrics', '/openapi.json']);

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance<Server>> {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'api' }),
    // Per-request lines would drown the controller's; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 5 * 1024 * 1024,
    ...(deps.serverFactory ? { serverFactory: deps.serverFactory } : {}),
  }) as unknown as FastifyInstance<Server>;

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toHttpError(err);
    if (status >= 500) req.log.error({ err }, 'request failed');
    void reply.status(status).send(body);
  });

  app.addHook('onRequest', async (req) => {
    if (PUBLIC_PATHS.has(req.url.split('?')[0] ?? '')) return;
    const header = req.headers.authorization ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    if (!token) throw new UnauthorizedError('missing bearer token (set MAYFLY_TOKEN)');
    const record = await deps.store.tokens.verify(token);
    if (!record) throw new UnauthorizedError('invalid token');
  });

  app.get(ApiPaths.health, async () => ({ ok: true, version: deps.version }));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });
  const document = openApiDocument(deps.version);
  app.get('/openapi.json', async () => document);
  registerEnvironmentRoutes(app, deps);
  return app;
}
