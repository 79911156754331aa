/** The fastify app of the REST API: token auth with scopes, routes, body limits, and the error mapping. */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import Fastify, { type FastifyInstance, type FastifyServerFactory, LogController } from 'fastify';
import type { TokenService } from '../access/token-service.js';
import type { BundleService } from '../controller/bundle-service.js';
import type { EnvironmentService } from '../controller/environment-service.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Store } from '../store/store.js';
import { registerAuth, type ScopedRoute } from './auth.js';
import { registerBundleRoutes } from './bundle-routes.js';
import { registerEnvironmentRoutes } from './environment-routes.js';
import { toHttpError } from './errors.js';
import { openApiDocument } from './openapi.js';
import { registerTokenRoutes } from './token-routes.js';

export interface ApiDeps {
  store: Store;
  environments: EnvironmentService;
  tokens: TokenService;
  bundles: BundleService;
  metrics: Metrics;
  logger: Logger;
  version: string;
  serverFactory?: FastifyServerFactory;
}

/** Every route's JSON body is small unless the route says otherwise (creating an environment does). */
export const DEFAULT_BODY_LIMIT = 64 * 1024;

/** The app and its routes with the scope each needs. */
export async function buildApi(
  deps: ApiDeps,
): Promise<{ app: FastifyInstance<Server>; routes: ScopedRoute[] }> {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'api' }),
    // Per-request lines would drown the controller's; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: DEFAULT_BODY_LIMIT,
    // On close, connections still open (a followed log, a slow client) are cut, not waited for.
    forceCloseConnections: true,
    ...(deps.serverFactory ? { serverFactory: deps.serverFactory } : {}),
  }) as unknown as FastifyInstance<Server>;

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toHttpError(err);
    if (status >= 500) req.log.error({ err }, 'request failed');
    void reply.status(status).send(body);
  });
  const routes = registerAuth(app, deps.store);

  app.get(ApiPaths.health, { config: { scope: 'public' } }, async () => ({
    ok: true,
    version: deps.version,
  }));
  app.get('/metrics', { config: { scope: 'public' } }, async (_req, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });
  // Built on first request, when every route (and the scope it needs) is registered.
  let document: ReturnType<typeof openApiDocument> | null = null;
  app.get('/openapi.json', { config: { scope: 'public' } }, async () => {
    document ??= openApiDocument(deps.version, routes);
    return document;
  });
  registerEnvironmentRoutes(app, deps);
  registerBundleRoutes(app, deps);
  registerTokenRoutes(app, deps);
  return { app, routes };
}
