/**
 * The OpenAPI 3.1 description of the REST API, generated from the same zod schemas (contract)
 * that validate requests and type the SDK, so the document cannot drift from the code.
 */
import {
  Bundle,
  CreatedToken,
  CreateEnvironmentRequest,
  CreateTokenRequest,
  EnvEvent,
  Environment,
  ErrorBody,
  Token,
} from '@mayfly/contract';
import { z } from 'zod';
import type { ScopedRoute } from './auth.js';

const schema = (s: z.ZodType, io: 'input' | 'output' = 'output') =>
  z.toJSONSchema(s, { io, unrepresentable: 'any' });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string) => ({ content: { 'application/json': { schema: ref(name) } } });
const errors = Object.fromEntries(
  [
    ['400', 'invalid request or template'],
    ['401', 'missing, invalid, expired or revoked token'],
    ['403', 'the token lacks the scope, or is bound to another project'],
    ['404', 'no such environment'],
  ].map(([code, description]) => [code, { description, ...json('Error') }]),
);
const idParam = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'environment id or name',
  schema: { type: 'string' },
};

/** `/v1/environments/:id` (fastify) → `/v1/environments/{id}` (OpenAPI). */
export const openApiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');

/**
 * The document, with each operation's token scope (`x-mayfly-scope`) and security taken from the
 * routes as registered, so what is documented is what is enforced.
 */
export function openApiDocument(version: string, routes: ScopedRoute[]) {
  const doc = baseDocument(version);
  const paths = doc.paths as unknown as Record<string, Record<string, Record<string, unknown>>>;
  for (const route of routes) {
    const operation = paths[openApiPath(route.url)]?.[route.method.toLowerCase()];
    if (!operation) continue;
    operation['x-mayfly-scope'] = route.scope;
    if (route.scope === 'public') operation.security = [];
  }
  return doc;
}

function baseDocument(version: string) {
  return {
    openapi: '3.1.0',
    info: { title: 'Mayfly API', version, description: 'Ephemeral environments: create, inspect, destroy.' },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Environment: schema(Environment),
        EnvEvent: schema(EnvEvent),
        CreateEnvironmentRequest: schema(CreateEnvironmentRequest, 'input'),
        Bundle: schema(Bundle),
        Token: schema(Token),
        CreatedToken: schema(CreatedToken),
        CreateTokenRequest: schema(CreateTokenRequest, 'input'),
        Error: schema(ErrorBody),
      },
    },
    paths: {
      '/healthz': { get: { security: [], summary: 'liveness', responses: { '200': { description: 'up' } } } },
      '/openapi.json': {
        get: { security: [], summary: 'this document', responses: { '200': { description: 'OpenAPI 3.1' } } },
      },
      '/metrics': {
        get: { security: [], summary: 'Prometheus metrics', responses: { '200': { description: 'text' } } },
      },
      '/v1/environments': {
        post: {
          summary: 'create an environment from a template',
          requestBody: { required: true, ...json('CreateEnvironmentRequest') },
          responses: {
            '201': { description: 'recorded; the controller creates it', ...json('Environment') },
            '409': { description: 'name taken', ...json('Error') },
            ...errors,
          },
        },
        get: {
          summary: 'list environments',
          parameters: [
            { name: 'project', in: 'query', schema: { type: 'string' } },
            {
              name: 'all',
              in: 'query',
              description: 'include destroyed ones',
              schema: { type: 'string', enum: ['0', '1'] },
            },
          ],
          responses: {
            '200': {
              description: 'environments',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    properties: { items: { type: 'array', items: ref('Environment') } },
                  },
                },
              },
            },
            ...errors,
          },
        },
      },
      '/v1/environments/{id}': {
        parameters: [idParam],
        get: {
          summary: 'one environment, with live service status',
          responses: { '200': json('Environment'), ...errors },
        },
        delete: {
          summary: 'destroy; the controller tears it down and verifies nothing is left',
          responses: { '202': { description: 'teardown recorded', ...json('Environment') }, ...errors },
        },
      },
      '/v1/environments/{id}/events': {
        parameters: [idParam, { name: 'after', in: 'query', schema: { type: 'integer' } }],
        get: {
          summary: 'the timeline: one event per transition and step',
          responses: {
            '200': {
              description: 'events in order',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    properties: { items: { type: 'array', items: ref('EnvEvent') } },
                  },
                },
              },
            },
            ...errors,
          },
        },
      },
      '/v1/environments/{id}/logs': {
        parameters: [
          idParam,
          { name: 'service', in: 'query', schema: { type: 'string' } },
          {
            name: 'tail',
            in: 'query',
            description: 'last N lines (default 1000), or all',
            schema: { oneOf: [{ type: 'integer', minimum: 0 }, { const: 'all' }] },
          },
          { name: 'follow', in: 'query', schema: { type: 'string', enum: ['0', '1'] } },
        ],
        get: {
          summary: 'logs, streamed; without service every line is prefixed `service | `',
          responses: { '200': { description: 'text/plain stream' }, ...errors },
        },
      },
      '/v1/bundles': {
        post: {
          summary:
            "upload a template's folder (scope write); create an environment from it with template.bundle",
          requestBody: {
            required: true,
            content: {
              'application/gzip': { schema: { type: 'string', contentMediaType: 'application/gzip' } },
              'application/x-tar': { schema: { type: 'string', contentMediaType: 'application/x-tar' } },
            },
          },
          responses: { '201': { description: 'unpacked and staged', ...json('Bundle') }, ...errors },
        },
      },
      '/v1/tokens': {
        post: {
          summary: 'create a token (scope admin); the only answer that shows it',
          requestBody: { required: true, ...json('CreateTokenRequest') },
          responses: { '201': { description: 'created', ...json('CreatedToken') }, ...errors },
        },
        get: {
          summary: 'list tokens (scope admin)',
          parameters: [
            {
              name: 'all',
              in: 'query',
              description: 'include revoked ones',
              schema: { type: 'string', enum: ['0', '1'] },
            },
          ],
          responses: {
            '200': {
              description: 'tokens, never their secrets',
              content: {
                'application/json': {
                  schema: { type: 'object', properties: { items: { type: 'array', items: ref('Token') } } },
                },
              },
            },
            ...errors,
          },
        },
      },
      '/v1/tokens/{id}': {
        parameters: [
          {
            name: 'id',
            in: 'path',
            required: true,
            description: 'token id or unique name',
            schema: { type: 'string' },
          },
        ],
        delete: { summary: 'revoke (scope admin)', responses: { '200': json('Token'), ...errors } },
      },
    },
  };
}
