/** `/v1/capacity`: what the server has room for and what it holds now (the dashboard's overview). */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import type { CapacityService } from '../controller/capacity-service.js';
import { requireAccess } from './auth.js';
import { addRoute } from './route.js';

export function registerCapacityRoutes(app: FastifyInstance<Server>, capacity: CapacityService): void {
  addRoute(app, {
    method: 'GET',
    url: ApiPaths.capacity,
    scope: 'read',
    summary:
      'environments and sandboxes against their limits, warm pools, built images against their disk budget',
    response: { status: 200, description: 'capacity', json: 'Capacity' },
    errors: { 403: 'the token is bound to a project (the capacity is server-wide)' },
    handler: async ({ req }) => capacity.capacity(requireAccess(req)),
  });
}
