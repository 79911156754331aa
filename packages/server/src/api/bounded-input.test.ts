/**
 * Bounded inputs at the API: a hostile template is answered with an error quickly while other
 * requests go on being served; bodies have limits on every route; names that would break a URL's
 * DNS label are refused up front, and generated ones always fit.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { makeProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';

type ErrorReply = {
  error: { code: string; message: string; issues?: { line: number | null; message: string }[] };
};

/** 509 bytes that expand to 10^9 strings when every alias is followed (the issue's report). */
const BILLION_LAUGHS = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
services:
  web:
    image: x
    command: *i
`;

describe('bounded inputs', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (body: unknown) => t.api<ErrorReply>('POST', '/v1/environments', body);

  it('answers an alias bomb with an error naming the line within a second, while serving other requests', async () => {
    // CPU time, not wall time: on a busy machine the wall clock says more about the neighbours.
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const bomb = post({ template: { filename: 'compose.yaml', content: BILLION_LAUGHS } });
    const health = fetch(`${t.server.url}/healthz`).then((r) => ({
      status: r.status,
      ms: performance.now() - started,
    }));
    const [res, answered] = await Promise.all([bomb, health]);
    const cpu = process.cpuUsage(cpuBefore);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_template');
    expect(res.body.error.issues?.some((i) => i.line !== null && /alias/i.test(i.message))).toBe(true);
    // The issue's budget: the answer within a second of work, and the other request served meanwhile.
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(1_000);
    expect(answered.status).toBe(200);
    expect(answered.ms).toBeLessThan(5_000);
    expect((process.memoryUsage().rss / 1024 ** 2) | 0).toBeLessThan(1_024);
  });

  it('refuses a template over 1 MiB, and a body over the route limit, before reading it all', async () => {
    const big = await post({
      template: { filename: 'compose.yaml', content: `# ${'x'.repeat(1024 * 1024)}\nservices: {}\n` },
    });
    expect(big.status).toBe(400);
    const huge = await fetch(`${t.server.url}/v1/environments`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ template: { filename: 'c.yaml', content: 'x'.repeat(20 * 1024 * 1024) } }),
    });
    expect(huge.status).toBe(413);
    const tokenBody = await fetch(`${t.server.url}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x'.repeat(200 * 1024), scope: 'read' }),
    });
    expect(tokenBody.status).toBe(413);
    expect((await t.api<{ items: Environment[] }>('GET', '/v1/environments?all=1')).body.items).toEqual([]);
  });

  it('refuses a NUL character, unknown fields and oversized inputs with 400', async () => {
    const cases = [
      { template: { filename: 'compose.yaml', content: 'services:\n  web:\n    image: "a\0b"\n' } },
      { template: { filename: 'compose.yaml', content: 'services: {}' }, surprise: 1 },
      { template: { filename: 'compose.yaml', content: 'services: {}' }, inputs: { 'NOT A NAME': 'x' } },
      { template: { filename: 'compose.yaml', content: 'services: {}', bundle: 'abc' } },
      { template: { filename: 'compose.yaml' } },
      { template: { filename: 'compose.yaml', content: 'services: {}' }, project: '../../etc' },
    ];
    for (const body of cases) expect((await post(body)).status, JSON.stringify(body).slice(0, 80)).toBe(400);
  });

  it('refuses a name whose `<service>--<env>` label would pass 63 characters, and generates names that fit', async () => {
    const service = 's'.repeat(30);
    const content = `services:\n  ${service}:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "http"]\n    ports: ["8080"]\n`;
    const tooLong = await post({ name: 'e'.repeat(35), template: { filename: 'compose.yaml', content } });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.issues?.[0]?.message).toMatch(/DNS allows 63/);

    const generated = await t.api<Environment>('POST', '/v1/environments', {
      namePrefix: `A Very--Long ${'folder-'.repeat(6)}name-`,
      template: { filename: 'compose.yaml', content },
    });
    expect(generated.status, JSON.stringify(generated.body)).toBe(201);
    const name = generated.body.name;
    expect(name).not.toContain('--');
    expect(name).toMatch(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
    expect(`${service}--${name}`.length).toBeLessThanOrEqual(63);
    expect(generated.body.urls[service]).toContain(`${service}--${name}.`);
    await t.api('DELETE', `/v1/environments/${generated.body.id}`);
    await t.waitForState(generated.body.id, ['destroyed']);
  });
});

describe('uploaded bundles waiting to be used', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ bundleMaxStaged: 2 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('are capped: one more upload gets 429 with why, and one used makes room', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-staged-'));
    await writeFile(
      path.join(dir, 'compose.yaml'),
      `services:\n  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`,
    );
    const first = await t.upload(dir);
    await t.upload(dir);
    const third = await t.upload(dir).catch((err: Error) => err);
    expect(third).toBeInstanceOf(Error);
    expect((third as Error).message).toMatch(/^bundle upload: 429 2 uploaded bundles are waiting to be used/);
    const env = await t.api<Environment>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', bundle: first },
    });
    expect(env.status).toBe(201);
    expect(typeof (await t.upload(dir))).toBe('string');
    // a bundle is used once
    const again = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', bundle: first },
    });
    expect(again.status).toBe(400);
    expect(again.body.error.message).toMatch(/not found/);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('quotas and caps', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      maxEnvironments: 1,
      maxLogStreams: 2,
      bundleMaxStaged: 2,
      bundleMaxBytes: 1024 ** 2,
    });
  });
  afterAll(async () => {
    await t.close();
  });

  const two = `services:\n  a:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n  b:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`;

  it('refuses one environment too many, and one log stream too many, with 429 and why', async () => {
    const first = await t.api<Environment>('POST', '/v1/environments', {
      name: 'only',
      template: { filename: 'compose.yaml', content: two },
    });
    expect(first.status).toBe(201);
    const second = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', content: two },
    });
    expect(second.status).toBe(429);
    expect(second.body.error).toMatchObject({ code: 'quota_exceeded' });
    expect(second.body.error.message).toMatch(/1 environments exist, the most this server allows \(1\)/);
    await t.waitForState('only', ['ready']);

    const follow = new AbortController();
    const open = await fetch(`${t.server.url}/v1/environments/only/logs?follow=1`, {
      headers: { authorization: `Bearer ${t.token}` },
      signal: follow.signal,
    });
    expect(open.status).toBe(200);
    const more = await t.api<ErrorReply>('GET', '/v1/environments/only/logs?service=a');
    expect(more.status).toBe(429);
    expect(more.body.error.message).toMatch(/2 log streams are open/);
    follow.abort();
    await until('the streams to close', async () =>
      (await t.api('GET', '/v1/environments/only/logs?service=a')).status === 200 ? true : undefined,
    );

    await t.api('DELETE', '/v1/environments/only');
    await t.waitForState('only', ['destroyed']);
    const again = await t.api('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', content: two },
    });
    expect(again.status).toBe(201);
    await t.api('DELETE', `/v1/environments/${(again.body as Environment).id}`);
    await t.waitForState((again.body as Environment).id, ['destroyed']);
  });

  it('takes a tar body on the bundle route only: elsewhere it is refused before it is read', async () => {
    for (const path of ['/v1/tokens', '/v1/environments']) {
      const res = await fetch(`${t.server.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
        body: Buffer.alloc(10 * 1024 * 1024),
      });
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as ErrorReply).error.message).toBe(
        'this route takes a JSON body (content-type: application/json)',
      );
    }
  });

  it('refuses lifetimes past the maximum with 400, not a crash', async () => {
    const env = await t.api<ErrorReply>('POST', '/v1/environments', {
      ttl: '99999999999999d',
      template: { filename: 'compose.yaml', content: two },
    });
    expect(env.status).toBe(400);
    const token = await t.api<ErrorReply>('POST', '/v1/tokens', {
      name: 'x',
      scope: 'read',
      ttl: '99999999999999d',
    });
    expect(token.status).toBe(400);
  });

  it('caps what copies of nested bind sources may take', async () => {
    const dir = await makeProject({
      'd/d/d/big.bin': 'x'.repeat(400 * 1024),
      'compose.yaml': `services:\n  a:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["./:/a", "./d:/b", "./d/d:/c", "./d/d/d:/e"]\n`,
    });
    const res = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(
      /copies of the template's bind sources would take more than 1 MiB/,
    );
    await rm(dir, { recursive: true, force: true });
  });

  it('counts uploads under way against the staged-bundle cap', async () => {
    const dir = await makeProject({ 'compose.yaml': two });
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => t.upload(dir)));
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeLessThanOrEqual(2);
    expect(results.some((r) => r.status === 'rejected' && /429/.test(String(r.reason)))).toBe(true);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('a create that fails', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it('a create that fails leaves none of the files written for it', async () => {
    const envs = path.join(t.dataDir, 'work', 'envs');
    const before = await readdir(envs).catch(() => [] as string[]);
    const taken = await t.api<ErrorReply>('POST', '/v1/environments', {
      name: 'files-leak',
      template: { filename: 'compose.yaml', content: 'services:\n  a: { image: x }\n' },
    });
    expect(taken.status).toBe(201);
    const content = `configs:\n  c: { content: "${'x'.repeat(100_000)}" }\nservices:\n  a: { image: x, configs: [c] }\n`;
    for (let i = 0; i < 3; i++) {
      const res = await t.api<ErrorReply>('POST', '/v1/environments', {
        name: 'files-leak',
        template: { filename: 'compose.yaml', content },
      });
      expect(res.status).toBe(409);
    }
    const after = await readdir(envs).catch(() => [] as string[]);
    // The environment created has no files of its own (an inline template without configs); the
    // three refused had theirs written before the name was found taken, and removed.
    expect(after.filter((name) => !before.includes(name))).toEqual([]);
    await t.api('DELETE', '/v1/environments/files-leak');
  });
});
