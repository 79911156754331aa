/**
 * Token auth with scopes. Every route declares the scope it needs (`config.scope`), and a route
 * that declares none is refused when it is registered, so a new route cannot be left open by
 * forgetting. Requests carry the caller as `req.access`, which services use to keep a
 * project-bound token inside its project.
 */
import type { Server } from 'node:http';
import { scopeAllows, TOKEN_SCOPES, type TokenScope } from '@mayfly/contract';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Access } from '../access/access.js';
import type { TokenService } from '../access/token-service.js';
import { ForbiddenError } from '../controller/errors.js';
import type { DashboardSessions } from '../dashboard/dashboard-sessions.js';
import { parseCookies } from '../net/cookies.js';
import { UnauthorizedError } from './errors.js';
import type { RouteDoc } from './route.js';

/** What a route needs: a token of at least this scope, or nothing at all (`public`). */
export type RouteScope = TokenScope | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a token needs for this route; see `api/auth.ts`. */
    scope?: RouteScope;
  }
  interface FastifyRequest {
    /** The caller, once authenticated; null on public routes. */
    access: Access | null;
    /**
     * Whether the token or session the request came with is still good (not revoked, not
     * expired): long streams ask again as they go.
     */
    stillAllowed?: () => Promise<boolean>;
  }
}

/** The caller of a request on a route that needs a token (routes only run once auth passed). */
export function requireAccess(req: FastifyRequest): Access {
  if (!req.access) throw new UnauthorizedError('missing bearer token (set MAYFLY_TOKEN)');
  return req.access;
}

/** A route of the API, the scope it needs, and its definition when it was added with `addRoute`. */
export interface ScopedRoute {
  method: string;
  url: string;
  scope: RouteScope;
  doc?: RouteDoc;
}

/**
 * Installs the checks on `app`; call before registering routes. Returns the list of routes as
 * they are registered (HEAD routes fastify adds for GETs left out): the OpenAPI document is made
 * from it.
 */
export function registerAuth(
  app: FastifyInstance<Server>,
  tokens: Pick<TokenService, 'authenticate'>,
  sessions?: Pick<DashboardSessions, 'authenticate' | 'cookieName'>,
): ScopedRoute[] {
  const routes: ScopedRoute[] = [];
  app.decorateRequest('access', null);
  app.addHook('onRoute', (route) => {
    const scope = route.config?.scope;
    if (scope === undefined || (scope !== 'public' && !TOKEN_SCOPES.includes(scope))) {
      throw new Error(`route ${route.method} ${route.url} declares no scope (config.scope)`);
    }
    for (const method of [route.method].flat()) {
      if (method !== 'HEAD') routes.push({ method, url: route.url, scope, doc: route.config?.doc });
    }
  });
  app.addHook('onRequest', async (req) => {
    // Unknown routes (404s) fall back to the strictest useful default: a valid token is needed.
    const needed: RouteScope = req.routeOptions.config?.scope ?? 'read';
    if (needed === 'public') return;
    const header = req.headers.authorization ?? '';
    const session = header || !sessions ? undefined : dashboardSession(req, sessions.cookieName);
    if (session === null) throw new UnauthorizedError(MANY_SESSION_COOKIES);
    if (session !== undefined && sessions) {
      // Only the dashboard's own requests: the header a page of another site cannot send without
      // asking first, or a same-origin load the browser vouches for (its event streams).
      if (!fromDashboard(req))
        throw new ForbiddenError(
          `a dashboard session is taken only from the dashboard's own requests (the ${DASHBOARD_HEADER} header)`,
        );
      const found = await sessions.authenticate(session);
      if (!found) throw new UnauthorizedError('the dashboard session has ended: log in again');
      if (!scopeAllows(found.access.scope, needed))
        throw new ForbiddenError(`this session has scope "${found.access.scope}"; this needs "${needed}"`);
      req.access = found.access;
      req.stillAllowed = async () => (await sessions.authenticate(session)) !== null;
      return;
    }
    const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] ?? '';
    if (!token) throw new UnauthorizedError('missing bearer token (set MAYFLY_TOKEN)');
    // A token is a prefix and 43 base64url characters; anything else is not worth a lookup.
    if (token.length > 200) throw new UnauthorizedError('invalid token');
    const access = await tokens.authenticate(token);
    if (!access) throw new UnauthorizedError('invalid, expired or revoked token');
    if (!scopeAllows(access.scope, needed)) {
      throw new ForbiddenError(`this token has scope "${access.scope}"; this needs "${needed}"`);
    }
    req.access = access;
    req.stillAllowed = async () => (await tokens.authenticate(token)) !== null;
  });
  return routes;
}

/** The header the dashboard sends with each of its API requests. */
export const DASHBOARD_HEADER = 'x-mayfly-dashboard';

const MANY_SESSION_COOKIES =
  "more than one dashboard session cookie came with the request (one was set by another site of this domain): clear this site's cookies and log in again";

/**
 * The dashboard session cookie's value; undefined without one, null with more than one (another
 * host of the domain may have set one of the same name: none is trusted).
 */
export function dashboardSession(req: FastifyRequest, cookieName: string): string | null | undefined {
  const found = parseCookies(req.headers.cookie).filter((c) => c.name === cookieName);
  if (found.length > 1) return null;
  return found[0]?.value;
}

/**
 * A request the dashboard itself made (see the auth hook): with its header, or a same-origin
 * fetch-like GET (its event streams) as the browser says: not a navigation, not from another site.
 */
export function fromDashboard(req: FastifyRequest): boolean {
  return (
    req.headers[DASHBOARD_HEADER] === '1' ||
    (req.method === 'GET' &&
      req.headers['sec-fetch-site'] === 'same-origin' &&
      req.headers['sec-fetch-mode'] === 'cors')
  );
}
