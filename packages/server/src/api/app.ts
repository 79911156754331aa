/** The fastify app of the REST API: token auth with scopes, routes, body limits, and the error mapping. */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import Fastify, { type FastifyInstance, type FastifyServerFactory, LogController } from 'fastify';
import * as z from 'zod';
import type { TokenService } from '../access/token-service.js';
import type { BundleService } from '../controller/bundle-service.js';
import type { CapacityService } from '../controller/capacity-service.js';
import type { EnvironmentFeed } from '../controller/environment-feed.js';
import type { EnvironmentService } from '../controller/environment-service.js';
import type { PreviewService } from '../controller/preview-service.js';
import type { ProjectService } from '../controller/project-service.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import type { WebhookService } from '../triggers/webhook-service.js';
import { registerAuth, type ScopedRoute } from './auth.js';
import { registerBundleRoutes } from './bundle-routes.js';
import { registerCapacityRoutes } from './capacity-routes.js';
import { type DashboardRouteDeps, registerDashboardRoutes } from './dashboard-routes.js';
import { registerEnvironmentRoutes } from './environment-routes.js';
import { toHttpError } from './errors.js';
import { openApiDocument } from './openapi.js';
import { registerProjectRoutes } from './project-routes.js';
import { addRoute, DEFAULT_BODY_LIMIT } from './route.js';
import { registerSandboxRoutes } from './sandbox-routes.js';
import type { SandboxTerminals } from './sandbox-terminal.js';
import { registerSnapshotRoutes } from './snapshot-routes.js';
import { registerTokenRoutes } from './token-routes.js';
import { registerWebhookRoutes } from './webhook-routes.js';

export interface ApiDeps {
  environments: EnvironmentService;
  capacity: CapacityService;
  environmentFeed: EnvironmentFeed;
  /** The dashboard's sessions and built files. */
  dashboard: DashboardRouteDeps;
  tokens: TokenService;
  bundles: BundleService;
  projects: ProjectService;
  previews: PreviewService;
  webhooks: WebhookService;
  snapshots: SnapshotService;
  /** Absent where the server has no sandbox runtime (no agent binary). */
  sandboxes?: SandboxService;
  /** Terminals into sandboxes over WebSockets (their tickets are handed out by a route). */
  terminals?: SandboxTerminals;
  metrics: Metrics;
  logger: Logger;
  version: string;
  serverFactory?: FastifyServerFactory;
}

export { DEFAULT_BODY_LIMIT };

/** What `/healthz` answers. */
const Health = z.object({ ok: z.literal(true), version: z.string() });

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
  // Nothing this origin sends is to be sniffed into another type (it serves a logged-in dashboard).
  // (Set as the request comes: streaming routes send their headers early, before any onSend.)
  app.addHook('onRequest', async (_req, reply) => {
    reply.header('x-content-type-options', 'nosniff');
  });
  const routes = registerAuth(app, deps.tokens, deps.dashboard.sessions);

  addRoute(app, {
    method: 'GET',
    url: ApiPaths.health,
    scope: 'public',
    summary: 'liveness',
    response: { status: 200, description: 'up', json: Health },
    handler: async (): Promise<z.output<typeof Health>> => ({ ok: true, version: deps.version }),
  });
  addRoute(app, {
    method: 'GET',
    url: '/metrics',
    scope: 'public',
    summary: 'Prometheus metrics',
    response: {
      status: 200,
      description: 'the Prometheus text format',
      mediaType: deps.metrics.registry.contentType,
    },
    handler: async () => deps.metrics.registry.metrics(),
  });
  // Built on first request, when every route (and the scope it needs) is registered.
  let document: ReturnType<typeof openApiDocument> | null = null;
  addRoute(app, {
    method: 'GET',
    url: '/openapi.json',
    scope: 'public',
    summary: 'this document',
    response: { status: 200, description: 'OpenAPI 3.1', json: z.looseObject({ openapi: z.string() }) },
    handler: async () => {
      document ??= openApiDocument(deps.version, routes);
      return document;
    },
  });
  registerDashboardRoutes(app, deps.dashboard);
  registerEnvironmentRoutes(app, deps);
  registerBundleRoutes(app, deps);
  registerTokenRoutes(app, deps);
  registerProjectRoutes(app, deps);
  registerCapacityRoutes(app, deps.capacity);
  registerSnapshotRoutes(app, deps);
  registerWebhookRoutes(app, deps);
  if (deps.sandboxes) registerSandboxRoutes(app, deps.sandboxes);
  deps.terminals?.register(app);
  await app.ready();
  return { app, routes };
}
