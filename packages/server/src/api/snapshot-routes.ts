/** `/v1/snapshots`: seeded data kept for new environments, and snapshots made by hand. */
import type { Server } from 'node:http';
import { ApiPaths, CreateSnapshotRequest, type Snapshot } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import * as z from 'zod';
import type { EnvironmentService } from '../controller/environment-service.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import type { SnapshotRecord } from '../store/store.js';
import { requireAccess } from './auth.js';
import { addRoute } from './route.js';

const ListQuery = z.object({
  project: z
    .string()
    .max(64)
    .optional()
    .describe('only this project (a project-bound token sees only its own)'),
});
const SnapshotParams = z.object({ project: z.string().max(64), name: z.string().max(64) });

export function registerSnapshotRoutes(
  app: FastifyInstance<Server>,
  deps: { snapshots: SnapshotService; environments: EnvironmentService },
): void {
  addRoute(app, {
    method: 'GET',
    url: ApiPaths.snapshots,
    scope: 'read',
    summary: 'snapshots of seeded volumes and those made by hand, by project and name',
    query: ListQuery,
    response: { status: 200, description: 'snapshots', json: { items: 'Snapshot' } },
    handler: async ({ req, query }) => ({
      items: (await deps.snapshots.list(requireAccess(req), query.project)).map(toSnapshot),
    }),
  });
  addRoute(app, {
    method: 'DELETE',
    url: '/v1/snapshots/:project/:name',
    scope: 'write',
    summary: 'remove a snapshot (environments cloned from it keep their data)',
    params: SnapshotParams,
    response: { status: 200, description: 'the snapshot removed', json: 'Snapshot' },
    errors: {
      404: 'no snapshot of that name in the project',
      409: 'it is being made, or an environment is being cloned from it right now',
    },
    handler: async ({ req, params }) =>
      toSnapshot(await deps.snapshots.remove(params.project, params.name, requireAccess(req))),
  });
  addRoute(app, {
    method: 'POST',
    url: '/v1/environments/:id/snapshots',
    scope: 'write',
    summary: "snapshot a ready environment's volume under a name templates can give (`x-mayfly.data`)",
    description:
      'The workloads that mount the volume are stopped for the copy (their stop signal and grace period honoured: a database writes out what it holds) and started again after; nothing else works on the environment meanwhile.',
    params: z.object({ id: z.string().max(255) }),
    body: { json: 'CreateSnapshotRequest' },
    response: { status: 201, description: 'the snapshot, ready', json: 'Snapshot' },
    errors: {
      404: 'no such environment',
      409: 'the environment is not ready or is busy (being updated, repaired or snapshotted), or the project has a snapshot of that name',
      429: 'the project keeps as many snapshots made by hand as it may',
    },
    handler: async ({ req, params }) => {
      const access = requireAccess(req);
      const body = CreateSnapshotRequest.parse(req.body);
      const env = await deps.environments.find(params.id, access);
      return toSnapshot(await deps.snapshots.create(env, body.volume, body.name, access));
    },
  });
}

export function toSnapshot(record: SnapshotRecord): Snapshot {
  return {
    id: record.id,
    project: record.project,
    name: record.name,
    kind: record.seedKey === null ? 'manual' : 'seed',
    seedKey: record.seedKey,
    volume: record.volume,
    sourceEnvironment: record.sourceEnv,
    state: record.state,
    sizeBytes: record.sizeBytes,
    createdAt: record.createdAt.toISOString(),
    lastUsedAt: record.lastUsedAt.toISOString(),
  };
}
