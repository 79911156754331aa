/** The published OpenAPI document describes the routes that exist and the bodies they really send. */
import type { Server } from 'node:http';
import { ApiPaths } from '@mayfly/contract';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { registerAuth, type ScopedRoute } from './auth.js';
import { openApiDocument, openApiPath } from './openapi.js';
import { addRoute, pathParamNames } from './route.js';

type Parameter = { name: string; in: string; required?: boolean; description?: string; schema: object };
type Operation = { parameters?: Parameter[]; responses: Record<string, unknown>; 'x-mayfly-scope'?: string };
type Document = {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, object> };
};

/** `METHOD /path` of every operation in the document. */
const documentedOperations = (doc: Document) =>
  Object.entries(doc.paths)
    .flatMap(([p, item]) =>
      Object.keys(item)
        .filter((key) => key !== 'parameters')
        .map((method) => `${method.toUpperCase()} ${p}`),
    )
    .sort();
/** `METHOD /path` of every route fastify registered (HEADs aside). */
const registeredOperations = (routes: readonly ScopedRoute[]) =>
  routes.map((r) => `${r.method} ${openApiPath(r.url)}`).sort();

describe('OpenAPI document', () => {
  let t: TestServer;
  let doc: Document;
  beforeAll(async () => {
    t = await startTestServer();
    doc = (await (await fetch(`${t.server.url}/openapi.json`)).json()) as typeof doc;
  });
  afterAll(async () => {
    await t.close();
  });

  const validator = (name: string) => {
    const ajv = new Ajv2020({ strict: false });
    return ajv.compile(doc.components.schemas[name]!);
  };

  it('is served without a token and lists every API path', () => {
    expect(doc.openapi).toBe('3.1.0');
    const templated = (p: string) => p.replace('x', '{id}');
    for (const path of [
      ApiPaths.environments,
      templated(ApiPaths.environment('x')),
      templated(ApiPaths.events('x')),
      templated(ApiPaths.logs('x')),
    ]) {
      expect(Object.keys(doc.paths)).toContain(path);
    }
  });

  it('describes the error bodies the API really sends', async () => {
    const isError = validator('Error');
    const unauthorized = await (await fetch(`${t.server.url}/v1/environments`)).json();
    expect(isError(unauthorized), JSON.stringify(isError.errors)).toBe(true);
    const invalid = await t.api('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', content: 'services: 3' },
    });
    expect(invalid.status).toBe(400);
    expect(isError(invalid.body), JSON.stringify(isError.errors)).toBe(true);
    const missing = await t.api('GET', '/v1/environments/nope');
    expect(missing.status).toBe(404);
    expect(isError(missing.body), JSON.stringify(isError.errors)).toBe(true);
  });

  it('rejects a request body the schema rejects, with a 400 that names the field', async () => {
    const isRequest = validator('CreateEnvironmentRequest');
    const body = { name: 'Bad Name', template: { filename: 'compose.yaml', content: '' } };
    expect(isRequest(body)).toBe(false);
    const res = await t.api<{ error: { code: string; message: string } }>('POST', '/v1/environments', body);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'invalid_request' });
    expect(res.body.error.message).toMatch(/^name: /);
  });

  it('documents every registered route with its method, and nothing else', () => {
    const undocumented = t.server.routes.filter((r) => !r.doc).map((r) => `${r.method} ${r.url}`);
    expect(undocumented, 'routes registered without addRoute (api/route.ts)').toEqual([]);
    expect(documentedOperations(doc)).toEqual(registeredOperations(t.server.routes));
  });

  it("declares every :param of a route's url as a required path parameter, and no other", () => {
    for (const route of t.server.routes) {
      const op = doc.paths[openApiPath(route.url)]![route.method.toLowerCase()]!;
      const inPath = (op.parameters ?? []).filter((p) => p.in === 'path');
      const label = `${route.method} ${route.url}`;
      expect(inPath.map((p) => p.name).sort(), label).toEqual(pathParamNames(route.url).sort());
      for (const p of inPath) expect(p.required, `${label} :${p.name}`).toBe(true);
    }
  });

  it('documents the query parameters of the logs and list routes, with their types', () => {
    const query = (p: string, method: string) =>
      Object.fromEntries(
        (doc.paths[p]![method]!.parameters ?? []).filter((x) => x.in === 'query').map((x) => [x.name, x]),
      );
    const logs = query('/v1/environments/{id}/logs', 'get');
    expect(Object.keys(logs).sort()).toEqual(['build', 'follow', 'service', 'tail']);
    expect(logs.tail!.schema).toMatchObject({
      anyOf: [{ const: 'all' }, { type: 'integer', minimum: 0 }],
    });
    expect(logs.tail!.description).toMatch(/last N lines \(0: none, only what follows; \d+ when absent\)/);
    expect(logs.follow!.schema).toMatchObject({ type: 'string', enum: expect.arrayContaining(['0', '1']) });
    expect(logs.service!.schema).toMatchObject({ type: 'string', maxLength: 64 });
    for (const p of Object.values(logs)) {
      expect(p.required, p.name).toBe(false);
      expect(p.description, p.name).toBeTruthy();
    }
    const list = query('/v1/environments', 'get');
    expect(Object.keys(list).sort()).toEqual(['all', 'project']);
    expect(list.all!.description).toMatch(/destroyed/);
    expect(Object.keys(query('/v1/environments/{id}/events', 'get'))).toEqual(['after']);
    expect(Object.keys(query('/v1/tokens', 'get'))).toEqual(['all']);
  });

  it('says what each route answers: its status, body and content type', () => {
    const op = (p: string, method: string) => doc.paths[p]![method]!;
    expect(Object.keys(op('/v1/environments', 'post').responses)).toContain('201');
    expect(Object.keys(op('/v1/environments/{id}', 'delete').responses)).toContain('202');
    expect(op('/v1/environments/{id}/logs', 'get').responses['200']).toMatchObject({
      content: { 'text/plain; charset=utf-8': {} },
    });
    expect(op('/v1/bundles', 'post')).toMatchObject({
      requestBody: { content: { 'application/gzip': {}, 'application/x-tar': {} } },
      responses: {
        '201': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Bundle' } } } },
      },
    });
    for (const [p, item] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        const public_ = operation['x-mayfly-scope'] === 'public';
        // A public route may answer 401 only for a credential of its own (a webhook's signature, a
        // dashboard login link or session, a download link).
        const unauthorized = (operation.responses as Record<string, { description?: string }>)['401'];
        if (public_ && unauthorized)
          expect(unauthorized.description, `${method} ${p}`).toMatch(
            /signature|login link|session|download link/,
          );
        else expect('401' in operation.responses, `${method} ${p}`).toBe(!public_);
      }
    }
  });

  it('is a valid OpenAPI 3.1 document, and every schema in it a valid JSON Schema 2020-12', async () => {
    // A well-kept validator of the official OpenAPI schemas (it ships them, with ajv).
    const result = await new Validator().validate(structuredClone(doc) as unknown as Record<string, unknown>);
    expect(result.valid, JSON.stringify(result.errors, null, 2)).toBe(true);
    // …which does refuse a broken one: a parameter without its required `in`.
    const broken = structuredClone(doc) as unknown as {
      paths: Record<string, Record<string, { parameters?: { in?: string }[] }>>;
    };
    const withParams = Object.values(broken.paths)
      .flatMap((item) => Object.values(item))
      .find((op) => op.parameters?.length);
    delete withParams!.parameters![0]!.in;
    expect((await new Validator().validate(broken as unknown as Record<string, unknown>)).valid).toBe(false);
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    // The schema above leaves Schema Objects to their dialect: check them against 2020-12 too.
    const schemas = [
      ...Object.values(doc.components.schemas),
      ...Object.values(doc.paths).flatMap((item) =>
        Object.values(item).flatMap((op) => (op.parameters ?? []).map((p) => p.schema)),
      ),
    ];
    for (const s of schemas) expect(ajv.validateSchema(s), JSON.stringify(ajv.errors)).toBe(true);
  });
});

describe('routes and the document', () => {
  const bareApp = () => {
    const app = Fastify() as unknown as FastifyInstance<Server>;
    return { app, routes: registerAuth(app, { authenticate: async () => null }) };
  };

  it('a route registered without a definition is missing from the document, which the test above catches', async () => {
    const { app, routes } = bareApp();
    addRoute(app, {
      method: 'GET',
      url: '/v1/things/:id',
      scope: 'read',
      summary: 'one thing',
      params: z.object({ id: z.string() }),
      response: { status: 200, description: 'the thing' },
      handler: async ({ params }) => params.id,
    });
    app.get('/v1/other', { config: { scope: 'read' } }, async () => 'undocumented');
    await app.ready();
    const doc = openApiDocument('test', routes) as unknown as Document;
    expect(documentedOperations(doc)).toEqual(['GET /v1/things/{id}']);
    expect(registeredOperations(routes)).toEqual(['GET /v1/other', 'GET /v1/things/{id}']);
    await app.close();
  });

  it("refuses a route whose params schema does not match its url's :params", () => {
    const { app } = bareApp();
    const route = {
      method: 'GET' as const,
      scope: 'read' as const,
      summary: 's',
      response: { status: 200 as const, description: 'd' },
      handler: async () => null,
    };
    expect(() => addRoute(app, { ...route, url: '/v1/things/:id' })).toThrow(/path parameters/);
    expect(() =>
      addRoute(app, { ...route, url: '/v1/things', params: z.object({ id: z.string() }) }),
    ).toThrow(/path parameters/);
  });

  it('parses path and query parameters with the schemas it documents; a mismatch is a 400', async () => {
    const { app } = bareApp();
    app.setErrorHandler((err, _req, reply) => {
      void reply.status(err instanceof z.ZodError ? 400 : 500).send({ message: (err as Error).message });
    });
    addRoute(app, {
      method: 'GET',
      url: '/things/:id',
      scope: 'public',
      summary: 's',
      params: z.object({ id: z.string().max(3) }),
      query: z.object({ n: z.coerce.number().int().optional() }),
      response: {
        status: 202,
        description: 'd',
        json: z.object({ id: z.string(), n: z.number().optional() }),
      },
      handler: async ({ params, query }) => ({ id: params.id, n: query.n }),
    });
    const ok = await app.inject({ url: '/things/abc?n=4' });
    expect(ok.statusCode).toBe(202);
    expect(ok.json()).toEqual({ id: 'abc', n: 4 });
    expect((await app.inject({ url: '/things/abcd' })).statusCode).toBe(400);
    expect((await app.inject({ url: '/things/abc?n=x' })).statusCode).toBe(400);
    await app.close();
  });
});
