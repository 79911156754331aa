/**
 * Sleep and wake on the real Docker Engine, through the gateway: an environment put to sleep
 * keeps its containers and data; a request wakes it (held until ready, or a page that reloads
 * for a browser); idle policies put unused previews to sleep; extend and keep change its time.
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';

const template = `
services:
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "awake"]
    ports: ["8080"]
  db:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    volumes: ["data:/data"]
volumes:
  data: {}
`;

/** Slower to come up (a 7 s job before the web service) than `gone`'s idle time and its checks' period. */
const slowTemplate = `
services:
  setup:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 7"]
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "awake"]
    ports: ["8080"]
    depends_on:
      setup:
        condition: service_completed_successfully
`;

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();

describe('sleep and wake', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  const create = async (
    name: string,
    extra: Record<string, unknown> = {},
    states: Environment['state'][] = ['ready'],
    content = template,
  ) => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name,
      template: { filename: 'compose.yaml', content },
      ...extra,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return t.waitForState(name, states);
  };
  /** The idle time counts from becoming ready (not from the create, however long it took). */
  const idleAfterReady = async (name: string, after: string, action: string) => {
    const events = await t.events(name);
    const ready = events.find((e) => e.state === 'ready');
    const idle = events.find((e) =>
      e.message.includes(`idle for ${after} (the project's idle policy): ${action}`),
    );
    expect(ready && idle, JSON.stringify(events)).toBeTruthy();
    // Less half a second: the ready event is written just after the time it counts from.
    expect(Date.parse(idle!.at) - Date.parse(ready!.at)).toBeGreaterThanOrEqual(
      parseInt(after, 10) * 1000 - 500,
    );
  };
  const request = (host: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; text: string; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: t.server.port, path: '/', headers: { host, ...headers } },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  const containers = (envId: string) =>
    docker(
      'ps',
      '-a',
      '--no-trunc',
      '--filter',
      `label=mayfly.env=${envId}`,
      '--format',
      '{{.ID}} {{.State}}',
    )
      .split('\n')
      .sort();

  it('asleep: containers stopped and kept; a request wakes it and is answered once it is ready', async () => {
    const env = await create('nap');
    const host = `web--nap.localhost:${t.server.port}`;
    const db = docker(
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      `label=mayfly.env=${env.id}`,
      '--filter',
      'label=mayfly.service=db',
    );
    docker('exec', db, 'sh', '-c', 'echo row > /data/rows');
    const before = containers(env.id).map((line) => line.split(' ')[0]);

    expect((await t.api('POST', '/v1/environments/nap/sleep')).status).toBe(200);
    await t.waitForState('nap', ['sleeping']);
    expect(containers(env.id).map((line) => line.split(' ')[1])).toEqual(['exited', 'exited']);

    // Not a browser: held until the environment is ready, then answered by the app.
    const answer = await request(host);
    expect(answer).toMatchObject({ status: 200, text: 'awake' });
    expect((await t.api<Environment>('GET', '/v1/environments/nap')).body).toMatchObject({
      state: 'ready',
      sleep: false,
    });
    expect(containers(env.id).map((line) => line.split(' ')[0])).toEqual(before);
    expect(docker('exec', db, 'cat', '/data/rows')).toBe('row');
    const messages = (await t.events('nap')).map((e) => e.message);
    expect(messages).toContain('woken by a request');
    expect(messages).toContain('waking up');
  });

  it('a browser gets a page that reloads itself while the environment wakes', async () => {
    await create('doze');
    await t.api('POST', '/v1/environments/doze/sleep');
    await t.waitForState('doze', ['sleeping']);
    const host = `web--doze.localhost:${t.server.port}`;
    const page = await request(host, { accept: 'text/html,application/xhtml+xml' });
    expect(page.status).toBe(503);
    expect(page.headers['retry-after']).toBe('1');
    expect(page.text).toContain('http-equiv="refresh"');
    expect(page.text).toContain('Waking up');
    await until('the page answers', async () => {
      const again = await request(host, { accept: 'text/html' });
      return again.status === 200 && again.text === 'awake' ? again : undefined;
    });
  });

  it('extend pushes the time to live back; keep removes it', async () => {
    const env = await create('long', { ttl: '1h' });
    const before = Date.parse(env.expiresAt!);
    const extended = await t.api<Environment>('POST', '/v1/environments/long/extend?by=2h');
    expect(extended.status).toBe(200);
    expect(Date.parse(extended.body.expiresAt!) - before).toBe(2 * 3_600_000);
    expect((await t.api('POST', '/v1/environments/long/extend?by=soon')).status).toBe(400);
    const kept = await t.api<Environment>('POST', '/v1/environments/long/keep');
    expect(kept.body).toMatchObject({ keep: true, expiresAt: null });
  });

  it("a project's idle policy puts unused previews to sleep, never a kept one", async () => {
    expect(
      (
        await t.api('POST', '/v1/projects', {
          name: 'idle',
          repo: 'file:///nonexistent/idle.git',
          forgeRepo: 'acme/idle',
          policy: { idle: { after: '1s', action: 'sleep' } },
        })
      ).status,
    ).toBe(201);
    // It may be put to sleep before a poll sees it ready; the kept one is kept before it can be.
    const kept = await t.api('POST', '/v1/environments', {
      name: 'idle-kept',
      project: 'idle',
      kind: 'preview',
      template: { filename: 'compose.yaml', content: template },
    });
    expect(kept.status).toBe(201);
    expect((await t.api('POST', '/v1/environments/idle-kept/keep')).status).toBe(200);
    await t.waitForState('idle-kept', ['ready']);
    await create('idle-one', { project: 'idle', kind: 'preview' }, ['ready', 'sleeping']);
    await t.waitForState('idle-one', ['sleeping'], 60_000);
    await idleAfterReady('idle-one', '1s', 'put to sleep');
    expect((await t.api<Environment>('GET', '/v1/environments/idle-kept')).body.state).toBe('ready');
    // Woken by a request, it serves it.
    expect(await request(`web--idle-one.localhost:${t.server.port}`)).toMatchObject({
      status: 200,
      text: 'awake',
    });
  });

  it("an idle policy may destroy instead, and a push's update restarts the time to live", async () => {
    expect(
      (
        await t.api('POST', '/v1/projects', {
          name: 'gone',
          repo: 'file:///nonexistent/gone.git',
          forgeRepo: 'acme/gone',
          policy: { idle: { after: '6s', action: 'destroy' } },
        })
      ).status,
    ).toBe(201);
    // Idle for 6 s from ready, though created 7 s before it was.
    await create(
      'gone-one',
      { project: 'gone', kind: 'preview' },
      ['ready', 'destroying', 'destroyed'],
      slowTemplate,
    );
    await t.waitForState('gone-one', ['destroyed'], 60_000);
    await idleAfterReady('gone-one', '6s', 'destroyed');

    // The time to live of a preview counts from its last update.
    const source = {
      repoUrl: 'file:///nonexistent/gone.git',
      commit: 'a'.repeat(40),
      ref: null,
      templateFile: null,
    };
    const env = await t.server.environments.createFromSource({
      name: 'gone-two',
      project: 'gone',
      kind: 'preview',
      source,
      inputs: {},
      ttlMs: 3_600_000,
      origin: { createdBy: 'the test', pullRequest: null },
    });
    await new Promise((r) => setTimeout(r, 50));
    const updated = await t.server.environments.updateSource(env.id, {
      source: { ...source, commit: 'b'.repeat(40) },
      inputs: {},
    });
    expect(updated.expiresAt!.getTime()).toBeGreaterThan(env.expiresAt!.getTime());
    expect(updated.expiresAt!.getTime() - Date.now()).toBeGreaterThan(3_599_000);
    expect(updated.revision).toBe(2);
  });

  it('redeploy: every service in a new container, its volume and a job that ran kept; a failed one tried again; refused mid-way', async () => {
    const withJob = `
services:
  seed:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo seeded >> /data/runs"]
    volumes: ["data:/data"]
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "up"]
    ports: ["8080"]
    volumes: ["data:/data"]
    depends_on:
      seed: { condition: service_completed_successfully }
volumes:
  data: {}
`;
    const env = await create('again', {}, ['ready'], withJob);
    const container = (service: string) =>
      docker(
        'ps',
        '-aq',
        '--no-trunc',
        '--filter',
        `label=mayfly.env=${env.id}`,
        '--filter',
        `label=mayfly.service=${service}`,
      );
    const webBefore = container('web');
    const seedBefore = container('seed');
    docker('exec', webBefore, 'sh', '-c', 'echo kept > /data/mine');

    const reader = (await t.api<{ token: string }>('POST', '/v1/tokens', { name: 'r', scope: 'read' })).body
      .token;
    expect((await t.api('POST', '/v1/environments/again/redeploy', undefined, reader)).status).toBe(403);
    const res = await t.api<Environment>('POST', '/v1/environments/again/redeploy');
    expect(res.status).toBe(200);
    expect(res.body.state).toBe('pending');
    // While it comes up again, another redeploy is refused and changes nothing.
    const twice = await t.api<{ error: { message: string } }>('POST', '/v1/environments/again/redeploy');
    expect(twice.status).toBe(409);
    expect(twice.body.error.message).toContain('redeploy once it is ready');
    await t.waitForState('again', ['ready']);
    const webAfter = container('web');
    expect(webAfter).not.toBe(webBefore);
    expect(container('seed')).toBe(seedBefore);
    expect(docker('exec', webAfter, 'cat', '/data/mine', '/data/runs')).toBe('kept\nseeded');
    expect((await t.viaGateway(`web--again.localhost:${t.server.port}`)).text).toBe('up');
    expect((await t.events('again')).map((e) => e.message)).toContain(
      'redeploy requested: every service restarts in a new container',
    );

    // A failed environment is tried again from the start (and fails again the same way here).
    const failing = `services:\n  job:\n    image: ${TESTKIT_IMAGE}\n    command: ["sh", "-c", "exit 3"]\n    restart: "no"\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    depends_on:\n      job: { condition: service_completed_successfully }\n`;
    await create('again-failed', {}, ['failed'], failing);
    const retried = await t.api<Environment>('POST', '/v1/environments/again-failed/redeploy');
    expect(retried.status).toBe(200);
    expect(retried.body.failure).toBeNull();
    const failedAgain = await t.waitForState('again-failed', ['failed']);
    expect(failedAgain.failure?.step).toMatch(/job/);
    expect((await t.events('again-failed')).filter((e) => e.state === 'failed')).toHaveLength(2);

    expect((await t.api('POST', '/v1/environments/no-such/redeploy')).status).toBe(404);
    await t.api('DELETE', '/v1/environments/again');
    await t.api('DELETE', '/v1/environments/again-failed');
    await t.waitForState('again', ['destroyed']);
    await t.waitForState('again-failed', ['destroyed']);
  });
});
