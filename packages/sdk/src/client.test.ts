import { createServer } from 'node:net';
import type { EnvEvent } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConflictError,
  ConnectionError,
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

const template = (content = 'services: {}\n') => ({ filename: 'mayfly.yaml', content, dir: '/tmp/app' });

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
      expect(err).toMatchObject({ code: 'unauthorized', status: 401, message: 'missing or invalid token' });
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
      expect(lines).toEqual(['web | listening on :3000', 'web | GET / 200', 'db | database system is ready']);
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
});
