/** `/v1/tokens`: create, list and revoke API tokens (admin scope). */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiDeps } from './app.js';

const ListQuery = z.object({ all: z.enum(['0', '1', 'true', 'false']).optional() });
const IdParams = z.object({ id: z.string().min(1).max(200) });

export function registerTokenRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  const admin = { config: { scope: 'admin' as const } };
  app.post(ApiPaths.tokens, admin, async (req, reply) =>
    reply.status(201).send(await deps.tokens.create(req.body as never)),
  );
  app.get(ApiPaths.tokens, admin, async (req) => {
    const { all } = ListQuery.parse(req.query);
    return { items: await deps.tokens.list({ includeRevoked: all === '1' || all === 'true' }) };
  });
  app.delete(`${ApiPaths.tokens}/:id`, admin, async (req) => {
    const { id } = IdParams.parse(req.params);
    return deps.tokens.revoke(id);
  });
}
