/** The published OpenAPI document describes the routes that exist and the bodies they really send. */
import { ApiPaths } from '@mayfly/contract';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

describe('OpenAPI document', () => {
  let t: TestServer;
  let doc: {
    openapi: string;
    paths: Record<string, Record<string, unknown>>;
    components: { schemas: Record<string, object> };
  };
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
});
