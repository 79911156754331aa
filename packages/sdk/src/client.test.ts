import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { EnvEvent } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConflictError,
  ConnectionError,
  ForbiddenError,
  InvalidRequestError,
  InvalidTemplateError,
  MayflyClient,
  MayflyError,
  NotFoundError,
  QuotaExceededError,
  RuntimeUnavailableError,
  TimeoutError,
  UnauthorizedError,
  UnexpectedStateError,
} from './index.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

const template = (content = 'services: {}\n') => ({ filename: 'mayfly.yaml', content });

let server: FakeServer;
let client: MayflyClient;

beforeAll(async () => {
  server = await startFakeServer();
  client = new MayflyClient({ baseUrl: `${server.url}/`, token: server.token });
});
afterAll(() => server.close());

/** A port nothing listens on: bind one, then release it. */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe('MayflyClient', () => {
  it('checks health without a token', async () => {
    const anonymous = new MayflyClient({ baseUrl: server.url });
    await expect(anonymous.health()).resolves.toEqual({ ok: true, version: '0.0.0-fake' });
  });

  it('creates, gets, lists and destroys environments with the bearer token', async () => {
    const created = await client.environments.create({ name: 'crud', template: template(), ttl: '2h' });
    expect(created).toMatchObject({ name: 'crud', state: 'pending', desired: 'present' });
    const post = server.requests.findLast((r) => r.method === 'POST');
    expect(post?.authorization).toBe(`Bearer ${server.token}`);
    expect(post?.body).toMatchObject({ name: 'crud', ttl: '2h', template: { filename: 'mayfly.yaml' } });

    expect((await client.environments.get('crud')).id).toBe(created.id);
    expect((await client.environments.list()).map((e) => e.name)).toContain('crud');

    const destroying = await client.environments.destroy(created.id);
    expect(destroying.desired).toBe('absent');
    const gone = await client.environments.waitFor(created.id, { states: ['destroyed'], pollIntervalMs: 10 });
    expect(gone.state).toBe('destroyed');
    expect((await client.environments.list()).map((e) => e.name)).not.toContain('crud');
    expect((await client.environments.list({ all: true })).map((e) => e.name)).toContain('crud');
    expect(
      server.requests.findLast((r) => r.method === 'GET' && r.path === '/v1/environments')?.query.get('all'),
    ).toBe('1');
  });

  describe('maps errors to classes', () => {
    it('401 → UnauthorizedError', async () => {
      const wrong = new MayflyClient({ baseUrl: server.url, token: 'nope' });
      const err = await wrong.environments.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnauthorizedError);
      expect(err).toMatchObject({
        code: 'unauthorized',
        status: 401,
        message: 'invalid, expired or revoked token',
      });
    });

    it('403 → ForbiddenError', async () => {
      const { token } = await client.tokens.create({ name: 'reader-403', scope: 'read' });
      const reader = new MayflyClient({ baseUrl: server.url, token });
      await expect(reader.environments.list()).resolves.toBeInstanceOf(Array);
      const err = await reader.environments.destroy('anything').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ForbiddenError);
      expect(err).toBeInstanceOf(MayflyError);
      expect(err).toMatchObject({ code: 'forbidden', status: 403 });
      expect((err as Error).message).toContain('scope "read"');
      // Also from the status alone, when a proxy answers without an ErrorBody.
      server.failNext(403, '<html>Forbidden</html>');
      const bare = await client.environments.list().catch((e: unknown) => e);
      expect(bare).toBeInstanceOf(ForbiddenError);
    });

    it('a request the contract refuses (template.dir) → InvalidRequestError', async () => {
      const err = await client.environments
        .create({ template: { ...template(), dir: '/' } as never })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidRequestError);
      expect((err as Error).message).toContain('dir');
    });

    it('404 → NotFoundError', async () => {
      const err = await client.environments.get('missing').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err).toBeInstanceOf(MayflyError);
      expect(err).toMatchObject({ code: 'not_found', status: 404 });
    });

    it('409 → ConflictError', async () => {
      await client.environments.create({ name: 'taken', template: template('SLOW') });
      const err = await client.environments
        .create({ name: 'taken', template: template() })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConflictError);
    });

    it('400 invalid_template → InvalidTemplateError with issues', async () => {
      const err = await client.environments
        .create({ template: template('INVALID') })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidTemplateError);
      const issues = (err as InvalidTemplateError).issues;
      expect(issues).toHaveLength(2);
      expect(issues[0]).toEqual({
        file: 'mayfly.yaml',
        line: 3,
        column: 5,
        path: 'services.web.image',
        message: 'expected a string',
      });
    });

    it('400 invalid_request → InvalidRequestError', async () => {
      server.failNext(400, { error: { code: 'invalid_request', message: 'bad ttl' } });
      await expect(client.environments.list()).rejects.toBeInstanceOf(InvalidRequestError);
    });

    it('429 → QuotaExceededError, 503 → RuntimeUnavailableError', async () => {
      await expect(
        client.environments.create({ name: 'over-quota', template: template() }),
      ).rejects.toBeInstanceOf(QuotaExceededError);
      await expect(
        client.environments.create({ name: 'no-runtime', template: template() }),
      ).rejects.toBeInstanceOf(RuntimeUnavailableError);
    });

    it('a body that is not an ErrorBody falls back to the status', async () => {
      server.failNext(503, '<html>Bad gateway</html>');
      const err = await client.environments.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RuntimeUnavailableError);
      expect(err).toMatchObject({ status: 503, message: 'HTTP 503 Service Unavailable' });

      server.failNext(500, { error: { code: 'internal', message: 'boom' } });
      const internal = await client.environments.list().catch((e: unknown) => e);
      expect(internal).toBeInstanceOf(MayflyError);
      expect(internal).toMatchObject({ code: 'internal', status: 500, message: 'boom' });
    });

    it('a response of the wrong shape → invalid_response', async () => {
      server.failNext(200, { error: { code: 'internal', message: 'not an environment' } });
      await expect(client.environments.get('x')).rejects.toMatchObject({ code: 'invalid_response' });
    });

    it('connection refused → ConnectionError', async () => {
      const port = await closedPort();
      const offline = new MayflyClient({ baseUrl: `http://127.0.0.1:${port}`, token: 't' });
      const err = await offline.environments.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      expect(err).toMatchObject({ code: 'connection_failed', status: null });
      expect((err as Error).message).toContain('ECONNREFUSED');
    });
  });

  describe('waitFor', () => {
    it('reports every event in order and resolves with the ready environment', async () => {
      const env = await client.environments.create({ name: 'waiting', template: template() });
      const seen: EnvEvent[] = [];
      const ready = await client.environments.waitFor(env.id, {
        onEvent: (e) => seen.push(e),
        pollIntervalMs: 10,
      });
      expect(ready.state).toBe('ready');
      expect(ready.urls.web).toBe('http://web--waiting.localhost:7070');
      expect(seen.map((e) => e.state)).toEqual(['pending', 'building', null, 'creating', null, 'ready']);
      const ids = seen.map((e) => e.id);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(new Set(ids).size).toBe(ids.length);
    });

    it('resolves with a failed environment when failed is awaited', async () => {
      const env = await client.environments.create({ template: template('FAIL') });
      const failed = await client.environments.waitFor(env.id, { pollIntervalMs: 10 });
      expect(failed).toMatchObject({ state: 'failed', failure: { step: 'start web' } });
    });

    it('rejects with UnexpectedStateError when the environment fails and only ready is awaited', async () => {
      const env = await client.environments.create({ template: template('FAIL') });
      const err = await client.environments
        .waitFor(env.id, { states: ['ready'], pollIntervalMs: 10 })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnexpectedStateError);
      expect((err as UnexpectedStateError).environment.state).toBe('failed');
      expect((err as Error).message).toContain('at start web: web exited with code 1');
    });

    it('waits for a failed environment to be destroyed: a failure from before `after` does not count', async () => {
      const env = await client.environments.create({ template: template('FAIL') });
      await client.environments.waitFor(env.id, { pollIntervalMs: 10 });
      const after = (await client.environments.events(env.id)).at(-1)?.id;
      const answer = await client.environments.destroy(env.id);
      expect(answer.state).toBe('failed');
      const seen: EnvEvent[] = [];
      const gone = await client.environments.waitFor(env.id, {
        states: ['destroyed'],
        after,
        onEvent: (e) => seen.push(e),
        pollIntervalMs: 10,
      });
      expect(gone.state).toBe('destroyed');
      expect(seen.map((e) => e.state)).toEqual(['destroying', null, 'destroyed']);
    });

    it('rejects with TimeoutError', async () => {
      const env = await client.environments.create({ template: template('SLOW') });
      const err = await client.environments
        .waitFor(env.id, { timeoutMs: 100, pollIntervalMs: 10 })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as TimeoutError).environment?.state).toBe('pending');
    });

    it('stops when its signal aborts', async () => {
      const env = await client.environments.create({ template: template('SLOW') });
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('stop')), 50);
      await expect(
        client.environments.waitFor(env.id, { signal: controller.signal, pollIntervalMs: 10 }),
      ).rejects.toThrow('stop');
    });
  });

  describe('logs', () => {
    it('yields the lines of all services, prefixed, reassembled across chunks', async () => {
      const env = await client.environments.create({ template: template() });
      const lines: string[] = [];
      for await (const line of client.environments.logs(env.id)) lines.push(line);
      expect(lines).toEqual([
        'web | listening on :3000',
        'web | GET / 200',
        'db  | database system is ready',
      ]);
    });

    it('passes tail 0 and tail all', async () => {
      const env = await client.environments.create({ template: template() });
      const none: string[] = [];
      for await (const line of client.environments.logs(env.id, { tail: 0 })) none.push(line);
      expect(none).toEqual([]);
      expect(server.requests.findLast((r) => r.path.endsWith('/logs'))?.query.get('tail')).toBe('0');
      const all: string[] = [];
      for await (const line of client.environments.logs(env.id, { tail: 'all' })) all.push(line);
      expect(all).toHaveLength(3);
      expect(server.requests.findLast((r) => r.path.endsWith('/logs'))?.query.get('tail')).toBe('all');
    });

    it('passes service and tail', async () => {
      const env = await client.environments.create({ template: template() });
      const lines: string[] = [];
      for await (const line of client.environments.logs(env.id, { service: 'web', tail: 1 }))
        lines.push(line);
      expect(lines).toEqual(['GET / 200']);
      const request = server.requests.findLast((r) => r.path.endsWith('/logs'));
      expect(request?.query.get('service')).toBe('web');
      expect(request?.query.get('tail')).toBe('1');
    });

    it('follows until the consumer breaks out, then closes the stream', async () => {
      const env = await client.environments.create({ template: template() });
      const lines: string[] = [];
      for await (const line of client.environments.logs(env.id, { service: 'web', follow: true })) {
        lines.push(line);
        if (lines.length === 4) break;
      }
      expect(lines).toEqual(['listening on :3000', 'GET / 200', 'tick 1', 'tick 2']);
    });

    it('follows until the signal aborts, then ends quietly', async () => {
      const env = await client.environments.create({ template: template() });
      const controller = new AbortController();
      const lines: string[] = [];
      for await (const line of client.environments.logs(env.id, {
        follow: true,
        signal: controller.signal,
      })) {
        lines.push(line);
        if (line === 'web | tick 2') controller.abort();
      }
      expect(lines.at(-1)).toBe('web | tick 2');
    });

    it('a stream that breaks off midway → ConnectionError', async () => {
      const doomed = await startFakeServer();
      const doomedClient = new MayflyClient({ baseUrl: doomed.url, token: doomed.token });
      const env = await doomedClient.environments.create({ template: template() });
      const iterate = async () => {
        for await (const line of doomedClient.environments.logs(env.id, { follow: true })) {
          if (line === 'web | tick 1') await doomed.close();
        }
      };
      await expect(iterate()).rejects.toBeInstanceOf(ConnectionError);
    });

    it('throws mapped errors from the first iteration', async () => {
      const iterate = async () => {
        for await (const _ of client.environments.logs('missing')) {
          // drain
        }
      };
      await expect(iterate()).rejects.toBeInstanceOf(NotFoundError);
    });
  });

  describe('bundles', () => {
    let folder: string;
    let tar: Buffer;
    beforeAll(() => {
      folder = mkdtempSync(join(tmpdir(), 'mayfly-sdk-bundle-'));
      writeFileSync(join(folder, 'mayfly.yaml'), 'services: {}\n');
      writeFileSync(join(folder, 'app.txt'), 'x'.repeat(100_000));
      tar = execFileSync('tar', ['-c', '-C', folder, 'mayfly.yaml', 'app.txt'], { maxBuffer: 1 << 24 });
    });
    afterAll(() => rmSync(folder, { recursive: true, force: true }));

    it("streams a gzip'd Readable (chunked, application/gzip) and creates from the bundle", async () => {
      const gz = gzipSync(tar);
      // Many small chunks: the body must be streamed, not collected first.
      const chunks = Array.from({ length: Math.ceil(gz.length / 1000) }, (_, i) =>
        gz.subarray(i * 1000, (i + 1) * 1000),
      );
      const bundle = await client.bundles.upload(Readable.from(chunks));
      expect(bundle).toMatchObject({ files: 2, bytes: tar.length });
      const post = server.requests.findLast((r) => r.path === '/v1/bundles');
      expect(post).toMatchObject({ contentType: 'application/gzip', chunked: true });
      expect(post?.authorization).toBe(`Bearer ${server.token}`);
      expect(post?.raw.equals(gz)).toBe(true);

      const env = await client.environments.create({
        namePrefix: 'app',
        template: { filename: 'mayfly.yaml', bundle: bundle.id },
      });
      expect(env.name).toMatch(/^app-/);
      // Used once.
      await expect(
        client.environments.create({ template: { filename: 'mayfly.yaml', bundle: bundle.id } }),
      ).rejects.toBeInstanceOf(InvalidRequestError);
    });

    it('sends a plain tar as application/x-tar, from bytes or from an async iterable', async () => {
      const fromBytes = await client.bundles.upload(new Uint8Array(tar));
      expect(fromBytes.files).toBe(2);
      const bytesPost = server.requests.findLast((r) => r.path === '/v1/bundles');
      expect(bytesPost).toMatchObject({ contentType: 'application/x-tar', chunked: false });

      async function* oneByteThenRest() {
        yield tar.subarray(0, 1);
        yield tar.subarray(1);
      }
      const fromIterable = await client.bundles.upload(oneByteThenRest());
      expect(fromIterable.bytes).toBe(tar.length);
      expect(server.requests.findLast((r) => r.path === '/v1/bundles')?.raw.equals(tar)).toBe(true);
      // The gzip flag overrides the sniffing: a tar labelled gzip is refused by the server.
      await expect(client.bundles.upload(tar, { gzip: true })).rejects.toBeInstanceOf(InvalidRequestError);
    });

    it('a source that fails midway rejects with its own error, not a ConnectionError', async () => {
      async function* broken() {
        yield gzipSync(tar).subarray(0, 100);
        throw new Error('disk read failed');
      }
      const err = await client.bundles.upload(broken()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toBe('disk read failed');
      expect(err).not.toBeInstanceOf(ConnectionError);
    });

    it('a read token may not upload (403)', async () => {
      const { token } = await client.tokens.create({ name: 'reader-bundle', scope: 'read' });
      const reader = new MayflyClient({ baseUrl: server.url, token });
      await expect(reader.bundles.upload(Readable.from([gzipSync(tar)]))).rejects.toBeInstanceOf(
        ForbiddenError,
      );
    });
  });

  describe('tokens', () => {
    it('creates (the secret shown once), lists and revokes; a revoked token no longer works', async () => {
      const created = await client.tokens.create({ name: 'ci', scope: 'write', project: 'shop', ttl: '30d' });
      expect(created).toMatchObject({ name: 'ci', scope: 'write', project: 'shop', revokedAt: null });
      expect(created.token).toEqual(expect.any(String));
      expect(Date.parse(created.expiresAt ?? '') - Date.now()).toBeGreaterThan(29 * 86_400_000);
      expect(server.requests.findLast((r) => r.path === '/v1/tokens')?.body).toEqual({
        name: 'ci',
        scope: 'write',
        project: 'shop',
        ttl: '30d',
      });

      const listed = await client.tokens.list();
      const mine = listed.find((t) => t.id === created.id);
      expect(mine).toMatchObject({ name: 'ci', scope: 'write' });
      expect(mine).not.toHaveProperty('token');

      const ci = new MayflyClient({ baseUrl: server.url, token: created.token });
      await expect(ci.environments.list()).resolves.toBeInstanceOf(Array);
      const revoked = await client.tokens.revoke('ci');
      expect(revoked.id).toBe(created.id);
      expect(revoked.revokedAt).not.toBeNull();
      await expect(ci.environments.list()).rejects.toBeInstanceOf(UnauthorizedError);
      expect((await client.tokens.list()).map((t) => t.id)).not.toContain(created.id);
      expect((await client.tokens.list({ all: true })).map((t) => t.id)).toContain(created.id);
      expect(server.requests.findLast((r) => r.path === '/v1/tokens')?.query.get('all')).toBe('1');
    });

    it('revoke of an unknown token → NotFoundError; a bad scope → InvalidRequestError', async () => {
      await expect(client.tokens.revoke('no-such-token')).rejects.toBeInstanceOf(NotFoundError);
      await expect(client.tokens.create({ name: 'x', scope: 'root' as never })).rejects.toBeInstanceOf(
        InvalidRequestError,
      );
    });

    it('a write token may not manage tokens (403)', async () => {
      const { token } = await client.tokens.create({ name: 'writer', scope: 'write' });
      const writer = new MayflyClient({ baseUrl: server.url, token });
      await expect(writer.tokens.list()).rejects.toBeInstanceOf(ForbiddenError);
      await expect(writer.tokens.create({ name: 'escalate', scope: 'admin' })).rejects.toBeInstanceOf(
        ForbiddenError,
      );
    });
  });
});
