/** `/v1/tokens`: create, list and revoke API tokens (admin scope). */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import * as z from 'zod';
import type { ApiDeps } from './app.js';
import { addRoute } from './route.js';

const ListQuery = z.object({
  all: z.enum(['0', '1', 'true', 'false']).optional().describe('1 or true: include revoked ones'),
});
const IdParams = z.object({ id: z.string().min(1).max(200).describe('token id or unique name') });

export function registerTokenRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  addRoute(app, {
    method: 'POST',
    url: ApiPaths.tokens,
    scope: 'admin',
    summary: 'create a token (scope admin); the only answer that shows it',
    body: { json: 'CreateTokenRequest' },
    response: { status: 201, description: 'created', json: 'CreatedToken' },
    handler: async ({ req }) => deps.tokens.create(req.body as never),
  });
  addRoute(app, {
    method: 'GET',
    url: ApiPaths.tokens,
    scope: 'admin',
    summary: 'list tokens (scope admin)',
    query: ListQuery,
    response: { status: 200, description: 'tokens, never their secrets', json: { items: 'Token' } },
    handler: async ({ query }) => ({
      items: await deps.tokens.list({ includeRevoked: query.all === '1' || query.all === 'true' }),
    }),
  });
  addRoute(app, {
    method: 'DELETE',
    url: `${ApiPaths.tokens}/:id`,
    scope: 'admin',
    summary: 'revoke (scope admin)',
    params: IdParams,
    response: { status: 200, description: 'the token, revoked', json: 'Token' },
    errors: {
      404: 'no such token',
      409: 'several live tokens have this name: revoke one by its id',
    },
    handler: async ({ params }) => deps.tokens.revoke(params.id),
  });
}
