/** `/v1/projects`: repositories whose pull requests get previews, and those previews. */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import * as z from 'zod';
import { InvalidRequestError } from '../controller/errors.js';
import type { ApiDeps } from './app.js';
import { requireAccess } from './auth.js';
import { addRoute } from './route.js';

const NameParams = z.object({ name: z.string().min(1).max(64).describe('project name') });
const PreviewParams = z.object({
  name: z.string().min(1).max(64).describe('project name'),
  number: z.coerce
    .number()
    .int()
    .positive()
    .max(2 ** 31)
    .describe('pull (merge) request number'),
});
const PreviewToken = z.object({
  token: z
    .string()
    .describe('the preview token (mfyp_…), shown this once: use it as ?mayfly-token= or X-Mayfly-Bypass'),
});
const Applied = z.object({
  items: z.array(z.object({ name: z.string(), action: z.enum(['created', 'updated', 'unchanged']) })),
});

export function registerProjectRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  const { projects, previews } = deps;
  addRoute(app, {
    method: 'POST',
    url: ApiPaths.projects,
    scope: 'admin',
    summary: 'create a project (scope admin); its secrets are write-only',
    body: { json: 'CreateProjectRequest' },
    response: { status: 201, description: 'created', json: 'Project' },
    errors: { 409: 'a project of that name exists' },
    handler: async ({ req }) =>
      projects.toResource(await projects.create(req.body as never, requireAccess(req))),
  });
  addRoute(app, {
    method: 'GET',
    url: ApiPaths.projects,
    scope: 'read',
    summary: 'list projects',
    response: { status: 200, description: 'projects, never their secrets', json: { items: 'Project' } },
    handler: async ({ req }) => ({
      items: (await projects.list(requireAccess(req))).map((p) => projects.toResource(p)),
    }),
  });
  addRoute(app, {
    method: 'PUT',
    url: ApiPaths.projects,
    scope: 'admin',
    summary: 'create or update each project declared (mayfly apply; scope admin); idempotent',
    body: { json: 'CreateProjectRequest' },
    response: { status: 200, description: 'what was done with each', json: Applied },
    handler: async ({ req }) => {
      const body = req.body as { items?: unknown } | undefined;
      if (!body || !Array.isArray(body.items) || body.items.length > 100) {
        throw new InvalidRequestError('send { "items": [ project, … ] } with at most 100 projects');
      }
      return { items: await projects.apply(body.items as never[], requireAccess(req)) };
    },
  });
  addRoute(app, {
    method: 'GET',
    url: `${ApiPaths.projects}/:name`,
    scope: 'read',
    summary: 'one project',
    params: NameParams,
    response: { status: 200, description: 'the project, never its secrets', json: 'Project' },
    errors: { 404: 'no such project' },
    handler: async ({ params, req }) =>
      projects.toResource(await projects.get(params.name, requireAccess(req))),
  });
  addRoute(app, {
    method: 'PATCH',
    url: `${ApiPaths.projects}/:name`,
    scope: 'admin',
    summary: 'change a project (scope admin); fields left out stay, policy fields merge',
    params: NameParams,
    body: { json: 'UpdateProjectRequest' },
    response: { status: 200, description: 'the project', json: 'Project' },
    errors: { 404: 'no such project' },
    handler: async ({ params, req }) =>
      projects.toResource(await projects.update(params.name, req.body as never, requireAccess(req))),
  });
  addRoute(app, {
    method: 'DELETE',
    url: `${ApiPaths.projects}/:name`,
    scope: 'admin',
    summary: 'delete a project and destroy its environments (scope admin)',
    params: NameParams,
    response: { status: 200, description: 'deleted', json: z.object({ deleted: z.literal(true) }) },
    errors: { 404: 'no such project' },
    handler: async ({ params, req }) => {
      await projects.delete(params.name, requireAccess(req));
      return { deleted: true as const };
    },
  });
  addRoute(app, {
    method: 'POST',
    url: `${ApiPaths.projects}/:name/preview-token`,
    scope: 'admin',
    summary: "make a new preview token for the project's URLs (scope admin); the previous one stops working",
    description:
      'With policy access "token", preview URLs open for `?mayfly-token=<token>` (which sets a cookie) or the header `X-Mayfly-Bypass: <token>`. A preview token is not an API token, and an API token is not a preview token.',
    params: NameParams,
    response: { status: 201, description: 'the token, shown only this once', json: PreviewToken },
    errors: { 404: 'no such project' },
    handler: async ({ params, req }) => ({
      token: await projects.rotatePreviewToken(params.name, requireAccess(req)),
    }),
  });
  addRoute(app, {
    method: 'GET',
    url: `${ApiPaths.projects}/:name/previews`,
    scope: 'read',
    summary: "a project's pull requests and branches, and their environments",
    params: NameParams,
    response: { status: 200, description: 'previews', json: { items: 'Preview' } },
    errors: { 404: 'no such project' },
    handler: async ({ params, req }) => ({ items: await previews.list(params.name, requireAccess(req)) }),
  });
  addRoute(app, {
    method: 'GET',
    url: `${ApiPaths.projects}/:name/deliveries`,
    scope: 'read',
    summary: "a project's webhook deliveries (signed by its secret), newest first, and what each did",
    description:
      'Kept for a week. Deliveries whose signature did not match no project are not listed (they are refused with 401 and not kept).',
    params: NameParams,
    query: z.object({
      limit: z.coerce.number().int().min(1).max(200).default(50).describe('how many (1–200, default 50)'),
    }),
    response: { status: 200, description: 'deliveries', json: { items: 'Delivery' } },
    errors: { 404: 'no such project' },
    handler: async ({ params, query, req }) => ({
      items: await deps.webhooks.deliveries(params.name, requireAccess(req), query.limit),
    }),
  });
  addRoute(app, {
    method: 'POST',
    url: `${ApiPaths.projects}/:name/deliveries/:delivery/redeliver`,
    scope: 'write',
    summary: 'act again on what a delivery said, as a new delivery (scope write)',
    description:
      'Only while its pull request or branch is still at the commit the delivery named: a preview is never taken back to an older commit (409 then; redeliver the newer one).',
    params: z.object({
      name: z.string().min(1).max(64).describe('project name'),
      delivery: z.string().min(1).max(200).describe("the delivery's id"),
    }),
    response: { status: 201, description: 'the new delivery, and what it did', json: 'Delivery' },
    errors: {
      404: 'no such project or delivery',
      409: 'what it said was not kept, or its pull request or branch has moved on',
    },
    handler: async ({ params, req }) =>
      deps.webhooks.redeliver(params.name, params.delivery, requireAccess(req)),
  });
  addRoute(app, {
    method: 'GET',
    url: `${ApiPaths.projects}/:name/readiness`,
    scope: 'read',
    summary: "time from webhook to ready of a project's previews: each, p50/p95, and per day",
    params: NameParams,
    query: z.object({
      days: z.coerce
        .number()
        .int()
        .min(1)
        .max(30)
        .default(30)
        .describe('the period up to now (1–30, default 30)'),
    }),
    response: { status: 200, description: 'readiness', json: 'ReadinessStats' },
    errors: { 404: 'no such project' },
    handler: async ({ params, query, req }) =>
      previews.readiness(params.name, requireAccess(req), query.days),
  });
  addRoute(app, {
    method: 'POST',
    url: `${ApiPaths.projects}/:name/previews/:number/approve`,
    scope: 'write',
    summary: "build a fork's pull request at its current head (scope write)",
    params: PreviewParams,
    query: z.object({
      sha: z
        .string()
        .regex(/^[0-9a-fA-F]{7,64}$/)
        .optional()
        .describe(
          'the head commit approved (7 to 64 hex digits): refused with 409 if the pull request has moved on',
        ),
    }),
    response: { status: 200, description: 'approved', json: 'Preview' },
    errors: {
      404: 'no such project or pull request',
      409: 'the pull request moved on from the commit given',
    },
    handler: async ({ params, query, req }) => {
      const access = requireAccess(req);
      await previews.approve(params.name, params.number, access, query.sha);
      const items = await previews.list(params.name, access);
      return items.find((p) => p.number === params.number);
    },
  });
}
