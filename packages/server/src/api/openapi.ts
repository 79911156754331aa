/**
 * The OpenAPI 3.1 description of the REST API, generated from the same zod schemas (contract)
 * that validate requests and type the SDK, so the document cannot drift from the code.
 */
import { CreateEnvironmentRequest, EnvEvent, Environment, ErrorBody } from '@mayfly/contract';
import { z } from 'zod';

const schema = (s: z.ZodType, io: 'input' | 'output' = 'output') =>
  z.toJSONSchema(s, { io, unrepresentable: 'any' });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string) => ({ content: { 'application/json': { schema: ref(name) } } });
const errors = Object.fromEntries(
  [
    ['400', 'invalid request or template'],
    ['401', 'missing or invalid token'],
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

export function openApiDocument(version: string) {
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
        Error: schema(ErrorBody),
      },
    },
    paths: {
      '/healthz': { get: { security: [], summary: 'liveness', responses: { '200': { description: 'up' } } } },
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
          { name: 'tail', in: 'query', schema: { type: 'integer' } },
          { name: 'follow', in: 'query', schema: { type: 'string', enum: ['0', '1'] } },
        ],
        get: {
          summary: 'logs, streamed; without service every line is prefixed `service | `',
          responses: { '200': { description: 'text/plain stream' }, ...errors },
        },
      },
    },
  };
}
