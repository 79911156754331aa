/**
 * The dashboard: its pages and built assets at `/` (public: the app asks for a session itself),
 * the session it runs on (a cookie, started from a one-time login link or a token typed in), and
 * the login links `mayfly dashboard` prints.
 */
import type { Server } from 'node:http';
import { ApiPaths, DashboardLoginLink } from '@mayfly/contract';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as z from 'zod';
import { ForbiddenError, NotFoundError } from '../controller/errors.js';
import type { DashboardAsset } from '../dashboard/dashboard-assets.js';
import { type DashboardSessions, SESSION_TTL_MS } from '../dashboard/dashboard-sessions.js';
import { DASHBOARD_HEADER, dashboardSession, fromDashboard, requireAccess } from './auth.js';
import { UnauthorizedError } from './errors.js';
import { addRoute } from './route.js';

export interface DashboardRouteDeps {
  sessions: DashboardSessions;
  /** The built dashboard (null: not built, and `/` says how to build it). */
  assets: Map<string, DashboardAsset> | null;
}

const SessionInfo = z.object({ scope: z.string(), project: z.string().nullable(), expiresAt: z.string() });
const StartSession = z.union([
  z.object({ link: z.string().max(200) }).strict(),
  z.object({ token: z.string().max(200) }).strict(),
]);
/** The pages of the app: each answers with the app, which shows the page the path names. */
const PAGES = [
  '/',
  '/login',
  '/overview',
  '/environments/:name',
  '/sandboxes',
  '/sandboxes/:id',
  '/projects',
  '/projects/:name',
] as const;

/**
 * Where the page's scripts may load from and talk to: this server only. Inline styles are allowed
 * (the terminal, xterm.js, sizes and colours its cells with them); inline scripts are not.
 */
const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export function registerDashboardRoutes(app: FastifyInstance<Server>, deps: DashboardRouteDeps): void {
  const secure = deps.sessions.cookieName.startsWith('__Host-') ? '; Secure' : '';
  const send = (req: FastifyRequest, reply: FastifyReply, asset: DashboardAsset) => {
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    reply
      .header('content-type', asset.type)
      .header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      .header('x-content-type-options', 'nosniff')
      .header('vary', 'accept-encoding');
    if (gzip) reply.header('content-encoding', 'gzip');
    return reply.send(gzip ? asset.gzip : asset.body);
  };

  for (const page of PAGES) {
    const params = page.includes(':name')
      ? z.object({ name: z.string() })
      : page.includes(':id')
        ? z.object({ id: z.string() })
        : undefined;
    addRoute(app, {
      method: 'GET',
      url: page,
      scope: 'public',
      summary: 'the dashboard (the page loads its session and data itself)',
      ...(params ? { params } : {}),
      response: { status: 200, description: 'the dashboard app', mediaType: 'text/html; charset=utf-8' },
      handler: async ({ req, reply }) => {
        const index = deps.assets?.get('/');
        if (!index) {
          reply.status(404).header('content-type', 'text/plain; charset=utf-8');
          return 'The dashboard is not built: run `npm run build` in the Mayfly checkout, then start the server again.\n';
        }
        reply
          .header('content-security-policy', CONTENT_SECURITY_POLICY)
          .header('referrer-policy', 'no-referrer')
          .header('x-frame-options', 'DENY');
        return send(req, reply, index);
      },
    });
  }

  addRoute(app, {
    method: 'GET',
    url: '/assets/:file',
    scope: 'public',
    summary: "the dashboard's built scripts and styles",
    params: z.object({ file: z.string() }),
    response: { status: 200, description: 'the file, gzip-encoded when accepted' },
    errors: { 404: 'no such file' },
    handler: async ({ params, req, reply }) => {
      const asset = deps.assets?.get(`/assets/${params.file}`);
      if (!asset) throw new NotFoundError(`no dashboard asset ${params.file}`);
      return send(req, reply, asset);
    },
  });

  addRoute(app, {
    method: 'POST',
    url: ApiPaths.dashboardLoginLinks,
    scope: 'read',
    summary: 'a one-time link that logs a browser into the dashboard with this token’s scope',
    description:
      'The link works once, for 5 minutes; its code is in the fragment (never sent to a server by the browser). The session it starts lasts 12 hours at most, and ends when this token is revoked or expires.',
    response: { status: 201, description: 'the link', json: DashboardLoginLink },
    handler: async ({ req }): Promise<DashboardLoginLink> => {
      const { code, expiresAt } = await deps.sessions.createLink(requireAccess(req));
      return { url: `${req.protocol}://${req.host}/login#${code}`, expiresAt: expiresAt.toISOString() };
    },
  });

  addRoute(app, {
    method: 'POST',
    url: '/dashboard/session',
    scope: 'public',
    summary: 'starts a dashboard session (an HTTP-only cookie) from a login link or an API token',
    description: `Only from the dashboard (the \`${DASHBOARD_HEADER}: 1\` header). The session has the scope and project of the token behind it and is no API token.`,
    response: { status: 201, description: 'the session, set as a cookie', json: SessionInfo },
    errors: {
      401: 'the login link is invalid, used or expired, or the token is',
      403: 'not from the dashboard',
    },
    handler: async ({ req, reply }): Promise<z.output<typeof SessionInfo>> => {
      if (req.headers[DASHBOARD_HEADER] !== '1')
        throw new ForbiddenError(`send the ${DASHBOARD_HEADER}: 1 header`);
      const parsed = StartSession.safeParse(req.body);
      if (!parsed.success)
        throw new UnauthorizedError('give a login link ({"link": …}) or an API token ({"token": …})');
      const started = await deps.sessions.start(parsed.data);
      // A session this browser had is ended, not left behind (a link sent to someone replaces it).
      const before = dashboardSession(req, deps.sessions.cookieName);
      if (before) await deps.sessions.end(before);
      const maxAge = Math.max(
        1,
        Math.floor(Math.min(SESSION_TTL_MS, started.expiresAt.getTime() - Date.now()) / 1000),
      );
      reply.header(
        'set-cookie',
        `${deps.sessions.cookieName}=${started.session}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure}`,
      );
      return {
        scope: started.access.scope,
        project: started.access.project,
        expiresAt: started.expiresAt.toISOString(),
      };
    },
  });

  addRoute(app, {
    method: 'GET',
    url: '/dashboard/session',
    scope: 'public',
    summary: 'the dashboard session this browser has',
    response: { status: 200, description: 'the session', json: SessionInfo },
    errors: { 401: 'no session, or it has ended', 403: 'not from the dashboard' },
    handler: async ({ req }): Promise<z.output<typeof SessionInfo>> => {
      if (!fromDashboard(req)) throw new ForbiddenError(`send the ${DASHBOARD_HEADER}: 1 header`);
      const session = dashboardSession(req, deps.sessions.cookieName);
      const found = session ? await deps.sessions.authenticate(session) : null;
      if (!found) throw new UnauthorizedError('no dashboard session: log in');
      return {
        scope: found.access.scope,
        project: found.access.project,
        expiresAt: found.expiresAt.toISOString(),
      };
    },
  });

  addRoute(app, {
    method: 'DELETE',
    url: '/dashboard/session',
    scope: 'public',
    summary: 'logs out: ends the session and clears the cookie',
    response: { status: 200, description: 'ended', json: z.object({ ended: z.boolean() }) },
    errors: { 403: 'not from the dashboard' },
    handler: async ({ req, reply }) => {
      if (req.headers[DASHBOARD_HEADER] !== '1')
        throw new ForbiddenError(`send the ${DASHBOARD_HEADER}: 1 header`);
      const session = dashboardSession(req, deps.sessions.cookieName);
      if (session) await deps.sessions.end(session);
      reply.header(
        'set-cookie',
        `${deps.sessions.cookieName}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict${secure}`,
      );
      return { ended: Boolean(session) };
    },
  });
}
