/**
 * The whole path on the real Docker Engine: API request → store → reconciler → Docker → gateway,
 * then teardown, TTL expiry, failure with its step, and garbage collection of orphans.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;

const appCompose = `
services:
  api:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "api of \${ENV_NAME}"]
    expose: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 30 }
    depends_on:
      seed: { condition: service_completed_successfully }
  seed:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo seeded"]
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    environment:
      API_URL: http://api:8080
      PUBLIC_URL: \${ENV_URL}
    ports: ["8080"]
    depends_on:
      api: { condition: service_healthy }
`;

const create = (t: TestServer, body: Record<string, unknown>) =>
  t.api<Environment>('POST', '/v1/environments', {
    template: { filename: 'compose.yaml', content: appCompose },
    ...body,
  });

describe('environment lifecycle on Docker', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ gcIntervalMs: 1_000 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('creates, routes through the gateway, and destroys leaving nothing', async () => {
    const res = await create(t, { name: 'life' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: 'life', state: 'pending', desired: 'present' });
    expect(Object.keys(res.body.urls)).toEqual(['web']);

    const ready = await t.waitForState('life', ['ready', 'failed']);
    expect(ready.failure).toBeNull();
    expect(ready.state).toBe('ready');
    expect(ready.urls.web).toBe(`http://web--life.localhost:${t.server.port}/`);
    expect(ready.services.map((s) => `${s.name}:${s.state}`).sort()).toEqual([
      'api:running',
      'seed:exited',
      'web:running',
    ]);

    const page = await t.viaGateway('web--life.localhost');
    expect(page).toMatchObject({ status: 200 });
    const noSuchLogs = await t.api<{ error: { code: string } }>(
      'GET',
      '/v1/environments/life/logs?service=nope',
    );
    expect(noSuchLogs).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    expect(page.text).toMatch(/^hello from /);
    // services reach each other by name, and inputs were interpolated
    expect((await t.viaGateway('web--life.localhost', '/env/API_URL')).text).toBe('http://api:8080');
    expect((await t.viaGateway('web--life.localhost', '/env/PUBLIC_URL')).text).toBe(ready.urls.web);
    // api has no published HTTP port: the gateway does not expose it
    expect((await t.viaGateway('api--life.localhost')).status).toBe(404);

    const states = (await t.events('life')).filter((e) => e.type === 'state').map((e) => e.state);
    expect(states).toEqual(['pending', 'creating', 'ready']);

    const del = await t.api<Environment>('DELETE', '/v1/environments/life');
    expect(del.status).toBe(202);
    const gone = await t.waitForState(ready.id, ['destroyed']);
    expect(gone.urls).toEqual({});
    expect(labelledObjects().filter((o) => o.includes(ready.id))).toEqual([]);
    expect((await t.viaGateway('web--life.localhost')).status).toBe(404);
    const after = (await t.events(ready.id)).filter((e) => e.type === 'state').map((e) => e.state);
    expect(after.slice(-2)).toEqual(['destroying', 'destroyed']);
  });

  it('proxies WebSocket upgrades and streamed responses', async () => {
    await create(t, { name: 'sockets' });
    await t.waitForState('sockets', ['ready']);
    const ws = new WebSocket(`ws://127.0.0.1:${t.server.port}/ws`, {
      headers: { host: 'web--sockets.localhost' },
    });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('ping through the gateway'));
      ws.on('message', (data) => resolve(data.toString()));
      ws.on('error', reject);
    });
    ws.close();
    expect(echoed).toBe('ping through the gateway');
    const streamed = await t.viaGateway('web--sockets.localhost', '/stream');
    expect(streamed.text.trim().split('\n')).toHaveLength(5);
    await t.api('DELETE', '/v1/environments/sockets');
    await t.waitForState('sockets', ['destroyed']);
  });

  it('answers unknown hosts with a clear 404 page', async () => {
    const res = await t.viaGateway('web--nosuch.localhost');
    expect(res.status).toBe(404);
    expect(res.text).toContain('There is no environment named &quot;nosuch&quot;');
  });

  it('destroys an environment when its TTL runs out', async () => {
    const res = await create(t, { name: 'short', ttl: '8s' });
    // 8 s leaves room to become ready first even on a busy machine. createdAt is the store's
    // monotonic stamp, which may run a few milliseconds ahead of the clock the TTL counted from.
    const lifetime = Date.parse(res.body.expiresAt!) - Date.parse(res.body.createdAt);
    expect(lifetime).toBeGreaterThan(8_000 - 50);
    expect(lifetime).toBeLessThanOrEqual(8_000);
    const gone = await t.waitForState('short', ['destroyed'], 60_000);
    expect(gone.desired).toBe('absent');
    const events = await t.events(gone.id);
    expect(events.filter((e) => e.type === 'state').map((e) => e.state)).toEqual([
      'pending',
      'creating',
      'ready',
      'destroying',
      'destroyed',
    ]);
    expect(events.find((e) => e.type === 'ttl')?.message).toBe('time to live ran out');
  });

  it('fails with the step and reason, and leaves nothing running', async () => {
    const broken = appCompose.replace(
      '["sh", "-c", "echo seeded"]',
      '["sh", "-c", "echo cannot seed >&2; exit 4"]',
    );
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'broken',
      template: { filename: 'compose.yaml', content: broken },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ createdBy: 'token admin (local)', pullRequest: null });
    const failed = await t.waitForState('broken', ['failed', 'ready']);
    expect(failed.state).toBe('failed');
    expect(failed.failure).toMatchObject({ step: 'job:seed' });
    expect(failed.failure!.reason).toMatch(/exited with code 4[\s\S]*cannot seed/);
    // failed is recorded first (so a crash leaves it to GC), then everything is removed
    const deadline = Date.now() + 10_000;
    while (labelledObjects().some((o) => o.includes(failed.id)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(labelledObjects().filter((o) => o.includes(failed.id))).toEqual([]);
    // the public error page names the step but never the reason (it may quote logs)
    const page = await t.viaGateway('web--broken.localhost');
    expect(page.status).toBe(503);
    expect(page.text).toContain('failed at job:seed');
    expect(page.text).not.toContain('cannot seed');
    await t.api('DELETE', '/v1/environments/broken');
    await t.waitForState('broken', ['destroyed']);
  });

  it('rejects a bad template with file, line and field, and records nothing', async () => {
    const before = (await t.api<{ items: Environment[] }>('GET', '/v1/environments?all=1')).body.items.length;
    const res = await t.api<{ error: { code: string; issues: unknown[] } }>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', content: 'services:\n  web:\n    command: ["x"]\n' },
    });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_template');
    expect(res.body.error.issues).toEqual([
      { file: 'compose.yaml', line: 3, column: 5, path: 'services.web', message: 'needs "image" or "build"' },
    ]);
    const after = (await t.api<{ items: Environment[] }>('GET', '/v1/environments?all=1')).body.items.length;
    expect(after).toBe(before);
  });

  it('lets a template without a directory name no host path', async () => {
    const res = await t.api<{ error: { code: string; issues: { path: string; message: string }[] } }>(
      'POST',
      '/v1/environments',
      {
        template: {
          filename: 'compose.yaml',
          content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["/var/run/docker.sock:/var/run/docker.sock"]\n`,
        },
      },
    );
    expect(res.status).toBe(400);
    expect(res.body.error.issues[0]).toMatchObject({ path: 'services.web.volumes[0]', line: 4 });
    expect(res.body.error.issues[0]!.message).toContain('outside the directory templates may use');
  });

  it('builds an image once, shows its steps, and reuses it for the next environment', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-build-'));
    // a nonce in the context makes this run's image new, so the build really happens
    await writeFile(path.join(dir, 'nonce.txt'), `${Date.now()}-${Math.random()}\n`);
    await writeFile(path.join(dir, 'Dockerfile'), `FROM ${TESTKIT_IMAGE}\nCOPY nonce.txt /nonce.txt\n`);
    const content =
      'services:\n  app:\n    build: .\n    command: ["testkit", "http", "--port", "8080"]\n    ports: ["8080"]\n';
    await writeFile(path.join(dir, 'compose.yaml'), content);
    const up = async (name: string) => {
      const bundle = await t.upload(dir);
      await t.api('POST', '/v1/environments', { name, template: { filename: 'compose.yaml', bundle } });
      await t.waitForState(name, ['ready']);
      return (await t.events(name)).map((e) => e.message);
    };
    const first = await up('built-1');
    expect(first).toContain('building images');
    expect(first.some((m) => /^app: Step 2\/\d+ : COPY nonce.txt/.test(m))).toBe(true);
    const image = /app: image built \((.+)\)/.exec(first.join('\n'))?.[1];
    expect(image).toMatch(/^mayfly-build\/default:[0-9a-f]{16}$/);
    const second = await up('built-2');
    expect(second).toContain(`app: image reused (${image})`);
    expect((await t.viaGateway('app--built-2.localhost', '/')).status).toBe(200);
    for (const name of ['built-1', 'built-2']) await t.api('DELETE', `/v1/environments/${name}`);
    for (const name of ['built-1', 'built-2']) await t.waitForState(name, ['destroyed']);
    execFileSync('docker', ['rmi', image!]);
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects requests without a valid token', async () => {
    const res = await fetch(`${t.server.url}/v1/environments`, { headers: { authorization: 'Bearer nope' } });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
  });

  it('repairs a ready environment whose container was removed behind its back', async () => {
    const created = await create(t, { name: 'drift' });
    await t.waitForState('drift', ['ready']);
    execFileSync('docker', ['rm', '-f', `mayfly-${created.body.id}-web-1`]);
    const deadline = Date.now() + 30_000;
    while (
      !(await t.events('drift')).some((e) => e.message.startsWith('repairing')) &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 200));
    }
    const repaired = await t.waitForState('drift', ['ready']);
    expect((await t.events('drift')).map((e) => e.message)).toContain('repairing: web not running');
    expect(repaired.services.find((s) => s.name === 'web')?.state).toBe('running');
    expect((await t.viaGateway('web--drift.localhost')).status).toBe(200);
    await t.api('DELETE', '/v1/environments/drift');
    await t.waitForState('drift', ['destroyed']);
  });

  it('garbage-collects labelled objects that no environment wants', async () => {
    const labels = [
      'mayfly.managed-by=mayfly',
      `mayfly.instance=${t.server.store.instanceId}`,
      'mayfly.env=orphan123',
    ];
    const id = execFileSync(
      'docker',
      ['run', '-d', ...labels.flatMap((l) => ['--label', l]), TESTKIT_IMAGE, 'testkit', 'sleep'],
      { encoding: 'utf8' },
    ).trim();
    // another installation's object on the same engine is not ours to collect
    const foreign = execFileSync(
      'docker',
      [
        'network',
        'create',
        '--label',
        'mayfly.managed-by=mayfly',
        '--label',
        'mayfly.instance=someone-else',
        '--label',
        'mayfly.env=theirs',
        `mayfly-foreign-${Date.now()}`,
      ],
      { encoding: 'utf8' },
    ).trim();
    const deadline = Date.now() + 20_000;
    while (labelledObjects().some((o) => o.includes(id.slice(0, 12))) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(labelledObjects().filter((o) => o.includes(id.slice(0, 12)))).toEqual([]);
    // the counter moves once the collector has verified the removal
    let metrics = '';
    for (let i = 0; i < 50 && !metrics.includes('mayfly_gc_leaks_collected_total{'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      metrics = await (await fetch(`${t.server.url}/metrics`)).text();
    }
    expect(metrics).toMatch(/mayfly_gc_leaks_collected_total\{kind="container"\} [1-9]/);
    await new Promise((r) => setTimeout(r, 1_500)); // at least one more collection
    expect(
      execFileSync('docker', ['network', 'inspect', '-f', '{{.Id}}', foreign], { encoding: 'utf8' }).trim(),
    ).toBe(foreign);
    execFileSync('docker', ['network', 'rm', foreign]);
  });
});
