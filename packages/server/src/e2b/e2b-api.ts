/**
 * The E2B-compatible API, on Mayfly's port under `/e2b/` and apart from Mayfly's own `/v1` API (an
 * app of its own: E2B's auth headers, error shapes and Connect RPC never mix into Mayfly's routes
 * or its OpenAPI document). `E2B_API_URL` is `<server>/e2b/api`, `E2B_SANDBOX_URL` is
 * `<server>/e2b/sandbox`; see docs/e2b.md.
 */
import type { Server } from 'node:http';
import { E2bPaths } from '@mayfly/contract';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { TokenService } from '../access/token-service.js';
import type { Logger } from '../observability/logger.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import type { Store } from '../store/store.js';
import { registerControlRoutes } from './control-routes.js';
import { EnvdAccess } from './envd-access.js';
import { registerEnvdRoutes } from './envd-routes.js';

export const E2B_PREFIX = '/e2b/';
export const E2B_API_PATH = E2bPaths.api;
export const E2B_SANDBOX_PATH = E2bPaths.sandbox;

/**
 * Where a request for the E2B app goes in it, or null when it is not one: its own paths, and the
 * signed file links the SDK builds as `new URL('/files', E2B_SANDBOX_URL)` — at the root of the
 * origin (the data plane's path dropped) and without the sandbox's id, which their signature
 * tells (see the data plane's routes).
 */
export function e2bPathOf(url: string | undefined): string | null {
  if (!url) return null;
  if (url.startsWith(E2B_PREFIX)) return url;
  if (/^\/files\?(.*&)?signature=/.test(url)) return `${E2B_SANDBOX_PATH}${url}`;
  return null;
}

export async function buildE2bApi(deps: {
  sandboxes: SandboxService;
  tokens: Pick<TokenService, 'authenticate'>;
  store: Pick<Store, 'secret'>;
  logger: Logger;
  /** The gateway's base domain (sandbox ports are `<port>-<id>.<domain>` there). */
  domain: string;
}): Promise<FastifyInstance<Server>> {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'e2b' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 64 * 1024,
    forceCloseConnections: true,
  }) as unknown as FastifyInstance<Server>;
  const envdAccess = new EnvdAccess(await deps.store.secret('e2b-envd'));
  await app.register(
    async (scope) =>
      registerControlRoutes(scope as FastifyInstance<Server>, {
        sandboxes: deps.sandboxes,
        tokens: deps.tokens,
        envdAccess,
        domain: deps.domain,
      }),
    { prefix: E2B_API_PATH },
  );
  await app.register(
    async (scope) =>
      registerEnvdRoutes(scope as FastifyInstance<Server>, { sandboxes: deps.sandboxes, envdAccess }),
    { prefix: E2B_SANDBOX_PATH },
  );
  await app.ready();
  return app;
}
