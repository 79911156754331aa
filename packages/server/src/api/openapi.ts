/**
 * The OpenAPI 3.1 description of the REST API, generated from what runs: the components from the
 * contract's zod schemas (which validate requests and type the SDK), and each operation from the
 * definition its route was registered with (`api/route.ts`): method, path, parameters from the
 * route's own zod schemas, bodies, statuses, and the scope the route enforces.
 */
import {
  Bundle,
  Capacity,
  CreatedToken,
  CreateEnvironmentRequest,
  CreateProjectRequest,
  CreateSandboxRequest,
  CreateSandboxTemplateRequest,
  CreateSnapshotRequest,
  CreateTokenRequest,
  Delivery,
  EnvEvent,
  Environment,
  ErrorBody,
  Preview,
  Project,
  ReadinessStats,
  RunCommandRequest,
  SandboxInfo,
  SandboxTemplateInfo,
  SetSandboxTimeoutRequest,
  SignalRequest,
  Snapshot,
  TerminalSize,
  Token,
  UpdateProjectRequest,
} from '@mayfly/contract';
import * as z from 'zod';
import type { ScopedRoute } from './auth.js';
import { DEFAULT_BODY_LIMIT, type InputSchema, type JsonBody, type RouteDoc } from './route.js';

/** The contract schemas under `components.schemas`, by name; requests are described as accepted. */
const COMPONENTS = {
  Environment: [Environment, 'output'],
  EnvEvent: [EnvEvent, 'output'],
  CreateEnvironmentRequest: [CreateEnvironmentRequest, 'input'],
  Bundle: [Bundle, 'output'],
  Capacity: [Capacity, 'output'],
  Snapshot: [Snapshot, 'output'],
  CreateSnapshotRequest: [CreateSnapshotRequest, 'input'],
  Token: [Token, 'output'],
  CreatedToken: [CreatedToken, 'output'],
  CreateTokenRequest: [CreateTokenRequest, 'input'],
  Project: [Project, 'output'],
  CreateProjectRequest: [CreateProjectRequest, 'input'],
  UpdateProjectRequest: [UpdateProjectRequest, 'input'],
  Preview: [Preview, 'output'],
  Delivery: [Delivery, 'output'],
  ReadinessStats: [ReadinessStats, 'output'],
  SandboxInfo: [SandboxInfo, 'output'],
  SandboxTemplateInfo: [SandboxTemplateInfo, 'output'],
  CreateSandboxTemplateRequest: [CreateSandboxTemplateRequest, 'input'],
  CreateSandboxRequest: [CreateSandboxRequest, 'input'],
  SetSandboxTimeoutRequest: [SetSandboxTimeoutRequest, 'input'],
  RunCommandRequest: [RunCommandRequest, 'input'],
  SignalRequest: [SignalRequest, 'input'],
  TerminalSize: [TerminalSize, 'input'],
  Error: [ErrorBody, 'output'],
} as const satisfies Record<string, readonly [z.ZodType, 'input' | 'output']>;

/** A name under `components.schemas`. */
export type ComponentName = keyof typeof COMPONENTS;

type JsonSchema = Record<string, unknown>;

const schema = (s: z.ZodType, io: 'input' | 'output' = 'output') =>
  z.toJSONSchema(s, { io, unrepresentable: 'any' }) as JsonSchema;
/** A schema inside another one: without its own `$schema`, which the document already implies. */
const inline = (s: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _, ...rest } = schema(s, io);
  return rest;
};
const ref = (name: ComponentName) => ({ $ref: `#/components/schemas/${name}` });
const jsonContent = (s: JsonSchema) => ({ content: { 'application/json': { schema: s } } });

function jsonSchemaOf(body: JsonBody): JsonSchema {
  if (typeof body === 'string') return ref(body);
  if (body instanceof z.ZodType) return inline(body, 'output');
  return {
    type: 'object',
    properties: { items: { type: 'array', items: ref(body.items) } },
    required: ['items'],
  };
}

/** `/v1/environments/:id` (fastify) → `/v1/environments/{id}` (OpenAPI). */
export const openApiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');

/** The Parameter Objects of a params or query schema: one per field, described by its zod schema. */
function parameters(s: InputSchema | undefined, where: 'path' | 'query') {
  if (!s) return [];
  const object = inline(s, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(object.properties ?? {}).map(([name, field]) => {
    const { description, ...fieldSchema } = field;
    return {
      name,
      in: where,
      // A path parameter is always there (OpenAPI requires saying so); a query one when the schema says.
      required: where === 'path' || (object.required ?? []).includes(name),
      ...(typeof description === 'string' ? { description } : {}),
      schema: fieldSchema,
    };
  });
}

function requestBody(doc: RouteDoc) {
  const { body } = doc;
  if (!body) return {};
  if ('json' in body) return { requestBody: { required: true, ...jsonContent(ref(body.json)) } };
  return {
    requestBody: {
      required: true,
      description: body.description,
      content: Object.fromEntries(
        body.mediaTypes.map((type) => [type, { schema: { type: 'string', contentMediaType: type } }]),
      ),
    },
  };
}

function responses(doc: RouteDoc, scope: ScopedRoute['scope']) {
  const { response } = doc;
  const success = {
    description: response.description,
    ...(response.json ? jsonContent(jsonSchemaOf(response.json)) : {}),
    ...(response.mediaType ? { content: { [response.mediaType]: { schema: { type: 'string' } } } } : {}),
  };
  const errors: Record<number, string> = {};
  if (doc.params || doc.query || doc.body) errors[400] = 'invalid request';
  if (scope !== 'public') {
    errors[401] = 'missing, invalid, expired or revoked token';
    errors[403] = 'the token lacks the scope, or is bound to another project';
  }
  if (doc.body && 'json' in doc.body) {
    errors[413] = `the body is larger than ${doc.bodyLimit ?? DEFAULT_BODY_LIMIT} bytes`;
  }
  Object.assign(errors, doc.errors);
  return {
    [response.status]: success,
    ...Object.fromEntries(
      Object.entries(errors).map(([status, description]) => [
        status,
        { description, ...jsonContent(ref('Error')) },
      ]),
    ),
  };
}

function operation(doc: RouteDoc, scope: ScopedRoute['scope']) {
  const params = [...parameters(doc.params, 'path'), ...parameters(doc.query, 'query')];
  return {
    summary: doc.summary,
    ...(doc.description ? { description: doc.description } : {}),
    'x-mayfly-scope': scope,
    ...(scope === 'public' ? { security: [] } : {}),
    ...(params.length > 0 ? { parameters: params } : {}),
    ...requestBody(doc),
    responses: responses(doc, scope),
  };
}

/**
 * The document, with an operation for each route registered with a definition. Method, path and
 * scope are taken from the route as fastify registered it, so what is documented is what is
 * enforced; a route registered without a definition is missing here, which the OpenAPI test catches.
 */
export function openApiDocument(version: string, routes: readonly ScopedRoute[]) {
  const paths: Record<string, Record<string, ReturnType<typeof operation>>> = {};
  for (const route of routes) {
    if (!route.doc) continue;
    paths[openApiPath(route.url)] ??= {};
    paths[openApiPath(route.url)]![route.method.toLowerCase()] = operation(route.doc, route.scope);
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Mayfly API', version, description: 'Ephemeral environments: create, inspect, destroy.' },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: Object.fromEntries(
        Object.entries(COMPONENTS).map(([name, [s, io]]) => [name, schema(s, io)]),
      ) as Record<ComponentName, JsonSchema>,
    },
    paths,
  };
}
