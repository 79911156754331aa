/**
 * Tokens have scopes, and every route enforces the one it declares: `read` < `write` < `admin`.
 * A project-bound token sees and changes only its project. The admin token the CLI uses is
 * bootstrapped from the store, not from the file's presence.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApiPaths, type CreatedToken, type Environment, type Token, type TokenScope } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '../main.js';
import { TESTKIT_IMAGE, testInstanceName } from '../test-support/global-setup.js';
import { createPgSchema } from '../test-support/pg-schema.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { openApiPath } from './openapi.js';

const SCOPES: TokenScope[] = ['read', 'write', 'admin'];
const sleeper = `services:\n  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`;

/** A request that gets past auth to the route itself, whatever it then answers. */
function sample(method: string, url: string): { path: string; body?: unknown } {
  const pathFor = url.replace(':id', 'no-such-thing');
  if (method === 'POST' && url === '/v1/environments') return { path: pathFor, body: { template: {} } };
  if (method === 'POST' && url === '/v1/tokens') return { path: pathFor, body: {} };
  if (method === 'POST' && url === '/v1/bundles') return { path: pathFor, body: {} };
  return { path: pathFor };
}

describe('token scopes', () => {
  let t: TestServer;
  const tokens: Record<TokenScope, string> = { read: '', write: '', admin: '' };
  beforeAll(async () => {
    t = await startTestServer();
    tokens.admin = t.token;
    for (const scope of ['read', 'write'] as const) {
      const res = await t.api<CreatedToken>('POST', '/v1/tokens', { name: `a ${scope} token`, scope });
      expect(res.status).toBe(201);
      tokens[scope] = res.body.token;
    }
  });
  afterAll(async () => {
    await t.close();
  });

  it('documents every route with the scope it enforces, and nothing else', async () => {
    const doc = (await (await fetch(`${t.server.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { 'x-mayfly-scope'?: string }>>;
    };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.entries(ops)
        .filter(([method]) => method !== 'parameters')
        .map(([method, op]) => `${method.toUpperCase()} ${p} ${op['x-mayfly-scope']}`),
    );
    const registered = t.server.routes.map((r) => `${r.method} ${openApiPath(r.url)} ${r.scope}`);
    expect(documented.sort()).toEqual(registered.sort());
  });

  it('every route refuses a missing token, a bad one and a weaker scope, and lets the right one through', async () => {
    const guarded = t.server.routes.filter((r) => r.scope !== 'public');
    expect(guarded.length).toBeGreaterThanOrEqual(9);
    for (const route of guarded) {
      const { path: urlPath, body } = sample(route.method, route.url);
      const label = `${route.method} ${route.url}`;
      if (route.url === ApiPaths.watchEnvironments) {
        // An event stream does not end: its status, then it is closed.
        const status = async (token?: string) => {
          const abort = new AbortController();
          const res = await fetch(`${t.server.url}${urlPath}`, {
            signal: abort.signal,
            headers: token ? { authorization: `Bearer ${token}` } : {},
          });
          abort.abort();
          return res.status;
        };
        expect(await status(), label).toBe(401);
        expect(await status('mfy_forged'), label).toBe(401);
        for (const scope of SCOPES) expect(await status(tokens[scope]), `${label} with ${scope}`).toBe(200);
        continue;
      }
      const anonymous = await fetch(`${t.server.url}${urlPath}`, { method: route.method });
      expect(anonymous.status, label).toBe(401);
      expect((await t.api(route.method, urlPath, body, 'mfy_forged')).status, label).toBe(401);
      const needed = SCOPES.indexOf(route.scope as TokenScope);
      for (const [i, scope] of SCOPES.entries()) {
        const res = await t.api<{ error?: { code: string; message: string } }>(
          route.method,
          urlPath,
          body,
          tokens[scope],
        );
        if (i < needed) {
          expect(res.status, `${label} with ${scope}`).toBe(403);
          expect(res.body.error?.code).toBe('forbidden');
          expect(res.body.error?.message).toContain(`needs "${route.scope}"`);
        } else {
          expect([401, 403], `${label} with ${scope}: ${JSON.stringify(res.body)}`).not.toContain(res.status);
        }
      }
    }
  });

  it('public routes need no token', async () => {
    for (const route of t.server.routes.filter((r) => r.scope === 'public')) {
      // The dashboard's session: its own credential (a login link or the cookie), never a token.
      if (route.url === '/dashboard/session') {
        const res = await fetch(`${t.server.url}${route.url}`, {
          method: route.method,
          headers: {
            'x-mayfly-dashboard': '1',
            ...(route.method === 'POST' ? { 'content-type': 'application/json' } : {}),
          },
          ...(route.method === 'POST' ? { body: '{}' } : {}),
        });
        expect(res.status, `${route.method} ${route.url}`).toBe(route.method === 'DELETE' ? 200 : 401);
        continue;
      }
      if (route.url === '/assets/:file') {
        const html = await (await fetch(`${t.server.url}/`)).text();
        const asset = /src="(\/assets\/[^"]+)"/.exec(html)?.[1];
        expect((await fetch(`${t.server.url}${asset}`)).status, route.url).toBe(200);
        continue;
      }
      // A download link: the link itself is the credential (a made-up one is refused).
      if (route.url.endsWith('/downloads/:ticket')) {
        const res = await fetch(`${t.server.url}/v1/sandboxes/s0/downloads/${'x'.repeat(32)}`);
        expect(res.status, route.url).toBe(401);
        expect(await res.text()).toContain('download link');
        continue;
      }
      if (route.method === 'GET') {
        expect((await fetch(`${t.server.url}${route.url}`)).status, route.url).toBe(200);
        continue;
      }
      // Webhooks: the forge's signature is their authentication, never a token.
      const res = await fetch(`${t.server.url}${route.url}`, {
        method: route.method,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          repository: { full_name: 'nobody/nothing' },
          project: { path_with_namespace: 'nobody/nothing' },
        }),
      });
      expect(res.status, route.url).toBe(404);
      expect(await res.text()).toContain('no project for');
    }
  });

  it('creates, lists and revokes tokens; a token is shown once and a revoked one stops working', async () => {
    const created = await t.api<CreatedToken>('POST', '/v1/tokens', {
      name: 'ci',
      scope: 'write',
      ttl: '30d',
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'ci', scope: 'write', project: null, revokedAt: null });
    expect(created.body.token).toMatch(/^mfy_/);
    expect(Date.parse(created.body.expiresAt!) - Date.now()).toBeGreaterThan(29 * 86_400_000);
    const listed = await t.api<{ items: Token[] }>('GET', '/v1/tokens');
    expect(listed.body.items.map((k) => k.name)).toContain('ci');
    expect(JSON.stringify(listed.body)).not.toContain(created.body.token);
    expect((await t.api('GET', '/v1/environments', undefined, created.body.token)).status).toBe(200);

    const revoked = await t.api<Token>('DELETE', '/v1/tokens/ci');
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).not.toBeNull();
    const after = await t.api<{ error: { code: string } }>(
      'GET',
      '/v1/environments',
      undefined,
      created.body.token,
    );
    expect(after.status).toBe(401);
    expect(
      (await t.api<{ items: Token[] }>('GET', '/v1/tokens')).body.items.map((k) => k.name),
    ).not.toContain('ci');
    expect(
      (await t.api<{ items: Token[] }>('GET', '/v1/tokens?all=1')).body.items.map((k) => k.name),
    ).toContain('ci');
  });

  it('refuses tokens that make no sense, with a clear error and nothing created', async () => {
    const before = (await t.api<{ items: Token[] }>('GET', '/v1/tokens?all=1')).body.items.length;
    const cases = [
      { name: 'x', scope: 'admin', project: 'p1' },
      { name: 'x', scope: 'root' },
      { name: 'x', scope: 'read', ttl: 'forever' },
      { name: '', scope: 'read' },
      { name: 'x', scope: 'read', project: 'Not A Project' },
      { name: 'x', scope: 'read', extra: true },
    ];
    for (const body of cases) {
      const res = await t.api<{ error: { code: string } }>('POST', '/v1/tokens', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.code).toBe('invalid_request');
    }
    expect((await t.api<{ items: Token[] }>('GET', '/v1/tokens?all=1')).body.items.length).toBe(before);
  });

  it('keeps a project-bound token inside its project', async () => {
    const bound = (
      await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'team-a', scope: 'write', project: 'team-a' })
    ).body.token;
    const other = await t.api<Environment>('POST', '/v1/environments', {
      name: 'theirs',
      project: 'team-b',
      template: { filename: 'compose.yaml', content: sleeper },
    });
    expect(other.status).toBe(201);
    expect(
      (await t.api<{ items: Environment[] }>('GET', '/v1/environments', undefined, bound)).body.items,
    ).toEqual([]);
    for (const [method, url] of [
      ['GET', '/v1/environments/theirs'],
      ['GET', '/v1/environments/theirs/events'],
      ['GET', '/v1/environments/theirs/logs'],
      ['DELETE', '/v1/environments/theirs'],
    ] as const) {
      expect((await t.api(method, url, undefined, bound)).status, `${method} ${url}`).toBe(404);
    }
    const elsewhere = await t.api<{ error: { code: string } }>(
      'POST',
      '/v1/environments',
      { name: 'sneaky', project: 'team-b', template: { filename: 'compose.yaml', content: sleeper } },
      bound,
    );
    expect(elsewhere.status).toBe(403);
    const mine = await t.api<Environment>(
      'POST',
      '/v1/environments',
      { name: 'mine', template: { filename: 'compose.yaml', content: sleeper } },
      bound,
    );
    expect(mine.status).toBe(201);
    expect(mine.body.project).toBe('team-a');
    const seen = (await t.api<{ items: Environment[] }>('GET', '/v1/environments', undefined, bound)).body
      .items;
    expect(seen.map((e) => e.name)).toEqual(['mine']);
    expect((await t.api('DELETE', '/v1/environments/mine', undefined, bound)).status).toBe(202);
    expect((await t.api('GET', '/v1/environments/theirs')).body).toMatchObject({ desired: 'present' });
  });
});

describe('the admin token file', () => {
  it('is rewritten when the store does not know its token (a new PostgreSQL behind an old data dir)', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-admin-'));
    const first = await createPgSchema();
    const second = await createPgSchema();
    const base = { port: 0, dataDir, logLevel: 'silent' as const, instanceName: testInstanceName() };
    try {
      const a = await startServer({ ...base, dbUrl: first.url });
      expect(a.adminTokenCreated).toBe(true);
      const tokenA = (await readFile(a.adminTokenFile!, 'utf8')).trim();
      await a.close();

      const again = await startServer({ ...base, dbUrl: first.url });
      expect(again.adminTokenCreated).toBe(false);
      expect((await readFile(again.adminTokenFile!, 'utf8')).trim()).toBe(tokenA);
      await again.close();

      const b = await startServer({ ...base, dbUrl: second.url });
      expect(b.adminTokenCreated).toBe(true);
      const tokenB = (await readFile(b.adminTokenFile!, 'utf8')).trim();
      expect(tokenB).not.toBe(tokenA);
      const res = await fetch(`${b.url}/v1/environments`, { headers: { authorization: `Bearer ${tokenB}` } });
      expect(res.status).toBe(200);
      await b.close();

      // a tampered file is replaced too
      await writeFile(path.join(dataDir, 'admin-token'), 'mfy_not-a-real-token\n');
      const c = await startServer({ ...base, dbUrl: second.url });
      expect(c.adminTokenCreated).toBe(true);
      await c.close();
    } finally {
      await first.drop();
      await second.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
