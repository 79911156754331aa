/**
 * Preview access end to end on a real server and Docker: a project with `access: token` keeps its
 * environments' URLs closed (401 page, never the app) until the secret link, its cookie or the
 * `X-Mayfly-Bypass` header is presented; the app never sees those credentials; API tokens and
 * preview tokens are not interchangeable; a rotated token stops working within the gateway's cache.
 */
import http from 'node:http';
import type { CreatedToken, Environment, Project } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]`;

/**
 * `web` says hello; `mirror` answers with the request head it received, so the test sees what the
 * gateway forwarded to the app (testkit does not reflect headers).
 */
const compose = `
services:
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "hello"]
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 30 }
  mirror:
    image: ${TESTKIT_IMAGE}
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 30 }
    command:
      - python3
      - -c
      - |
        import socket
        server = socket.create_server(("", 8080))
        while True:
            conn, _ = server.accept()
            head = b""
            while b"\\r\\n\\r\\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(head) + head)
            conn.close()
`;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

describe('preview access through the gateway', () => {
  let t: TestServer;
  /** A request to `<service>--<env>.localhost` on the server's port, with `headers`. */
  const gateway = (
    host: string,
    urlPath = '/',
    headers: Record<string, string> = {},
    method = 'GET',
  ): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: t.server.port, path: urlPath, method, headers: { host, ...headers } },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  const web = 'web--sealed-app.localhost';
  const mirror = 'mirror--sealed-app.localhost';
  let token = '';

  /** Waits until `token` opens the web service (the gateway caches a project's access briefly). */
  const acceptedWithin = (candidate: string, timeoutMs: number) =>
    until(
      'the preview token to be accepted',
      async () =>
        (await gateway(web, '/', { 'x-mayfly-bypass': candidate })).status === 200 ? true : undefined,
      timeoutMs,
    );

  const rotate = async () => {
    const res = await t.api<{ token: string }>('POST', '/v1/projects/sealed/preview-token');
    expect(res.status).toBe(201);
    expect(Object.keys(res.body)).toEqual(['token']);
    expect(res.body.token).toMatch(/^mfyp_[A-Za-z0-9_-]{43}$/);
    return res.body.token;
  };

  beforeAll(async () => {
    t = await startTestServer();
    for (const [name, access] of [
      ['sealed', 'token'],
      ['open', 'public'],
    ] as const) {
      const res = await t.api<Project>('POST', '/v1/projects', {
        name,
        repo: 'file:///nonexistent.git',
        forgeRepo: `acme/${name}`,
        policy: { access },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.hasPreviewToken).toBe(false);
    }
    for (const [name, project] of [
      ['sealed-app', 'sealed'],
      ['open-app', 'open'],
    ]) {
      const res = await t.api<Environment>('POST', '/v1/environments', {
        name,
        project,
        template: { filename: 'compose.yaml', content: compose },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    for (const name of ['sealed-app', 'open-app']) {
      const env = await t.waitForState(name, ['ready', 'failed']);
      expect(env.failure).toBeNull();
    }
  });
  afterAll(async () => {
    await t.close();
  });

  it('keeps everyone out while the project has no preview token', async () => {
    const res = await gateway(web);
    expect(res.status).toBe(401);
    expect(res.text).toContain('Preview token needed');
    expect(res.text).toContain('POST /v1/projects/sealed/preview-token');
    expect(res.text).not.toContain('hello');
  });

  it('makes a preview token that only an admin may ask for, shown once', async () => {
    const read = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'reader', scope: 'read' });
    const refused = await t.api('POST', '/v1/projects/sealed/preview-token', undefined, read.body.token);
    expect(refused.status).toBe(403);
    expect((await t.api('POST', '/v1/projects/nosuch/preview-token')).status).toBe(404);
    token = await rotate();
    // The gateway remembers a project's access for 2 s: the new token works within that.
    await acceptedWithin(token, 5_000);
    const project = await t.api<Project>('GET', '/v1/projects/sealed');
    expect(project.body.hasPreviewToken).toBe(true);
    expect(JSON.stringify(project.body)).not.toContain(token);
  });

  it('answers a request without a token with the 401 page, never the app', async () => {
    for (const host of [web, mirror]) {
      const res = await gateway(host);
      expect(res.status).toBe(401);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.text).toContain('Preview token needed');
      expect(res.text).toContain('X-Mayfly-Bypass');
      expect(res.text).not.toContain('hello');
      expect(res.text).not.toContain('GET /');
    }
  });

  it('turns the secret link into a cookie and a redirect without the token, and lets the cookie in', async () => {
    const link = await gateway(web, `/?lang=en&mayfly-token=${token}`);
    expect(link.status).toBe(302);
    expect(link.headers.location).toBe('/?lang=en');
    expect(link.headers['set-cookie']).toEqual([
      `mayfly-preview-sealed-app=${token}; HttpOnly; SameSite=Lax; Path=/`,
    ]);
    expect(link.text).not.toContain('hello');
    const cookie = link.headers['set-cookie']![0]!.split(';')[0]!;
    const followed = await gateway(web, link.headers.location, { cookie });
    expect(followed).toMatchObject({ status: 200, text: 'hello' });
    // the cookie is this environment's: another's name does not count
    const elsewhere = await gateway(web, '/', { cookie: cookie.replace('sealed-app', 'open-app') });
    expect(elsewhere.status).toBe(401);
  });

  it('lets X-Mayfly-Bypass in, and the app sees neither it nor the preview cookie', async () => {
    expect(await gateway(web, '/', { 'x-mayfly-bypass': token })).toMatchObject({
      status: 200,
      text: 'hello',
    });
    const seen = await gateway(mirror, '/who?x=1', {
      'X-Mayfly-Bypass': token,
      cookie: `session=abc; mayfly-preview-sealed-app=${token}; theme=dark`,
    });
    expect(seen.status).toBe(200);
    expect(seen.text).toMatch(/^GET \/who\?x=1 HTTP\/1\.1\r\n/);
    expect(seen.text).toMatch(/^cookie: session=abc; theme=dark\r$/im);
    expect(seen.text.toLowerCase()).not.toContain('x-mayfly-bypass');
    expect(seen.text).not.toContain(token);
    // the link's parameter is not forwarded either (a POST is let through rather than redirected)
    const posted = await gateway(mirror, `/form?mayfly-token=${token}`, {}, 'POST');
    expect(posted.status).toBe(200);
    expect(posted.text).toMatch(/^POST \/form HTTP\/1\.1\r\n/);
    expect(posted.text).not.toContain(token);
  });

  it('refuses a wrong token wherever it is presented', async () => {
    const wrong = `mfyp_${'x'.repeat(43)}`;
    for (const res of [
      await gateway(web, `/?mayfly-token=${wrong}`),
      await gateway(web, '/', { 'x-mayfly-bypass': wrong }),
      await gateway(web, '/', { cookie: `mayfly-preview-sealed-app=${wrong}` }),
    ]) {
      expect(res.status).toBe(401);
      expect(res.text).toContain('not valid');
      expect(res.text).not.toContain('hello');
    }
  });

  it('does not take an API token as a preview token, nor a preview token as an API token', async () => {
    for (const res of [
      await gateway(web, '/', { 'x-mayfly-bypass': t.token }),
      await gateway(web, `/?mayfly-token=${t.token}`),
    ]) {
      expect(res.status).toBe(401);
      expect(res.text).toContain('an API token is not a preview token');
      expect(res.text).not.toContain(t.token);
    }
    const api = await t.api('GET', '/v1/environments', undefined, token);
    expect(api.status).toBe(401);
  });

  it('refuses a WebSocket upgrade without a token (401, then the socket is closed) and lets one with the header through', async () => {
    const url = `ws://127.0.0.1:${t.server.port}/ws`;
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { host: web } });
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      ws.on('open', () => reject(new Error('the WebSocket opened without a token')));
      ws.on('error', reject);
    });
    expect(status).toBe(401);
    const ws = new WebSocket(url, { headers: { host: web, 'x-mayfly-bypass': token } });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('through'));
      ws.on('message', (data) => resolve(data.toString()));
      ws.on('error', reject);
    });
    ws.close();
    expect(echoed).toBe('through');
  });

  it('lets anyone into an environment of a public project', async () => {
    expect(await gateway('web--open-app.localhost')).toMatchObject({ status: 200, text: 'hello' });
  });

  it('stops taking the old token soon after a rotation, and takes the new one', async () => {
    const old = token;
    token = await rotate();
    expect(token).not.toBe(old);
    const started = Date.now();
    await until(
      'the old token to be refused',
      async () => ((await gateway(web, '/', { 'x-mayfly-bypass': old })).status === 401 ? true : undefined),
      10_000,
    );
    await acceptedWithin(token, 5_000);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await gateway(web, '/', { cookie: `mayfly-preview-sealed-app=${old}` })).status).toBe(401);
    expect((await gateway(web, `/?mayfly-token=${old}`)).status).toBe(401);
    expect(await gateway(web, '/', { 'x-mayfly-bypass': token })).toMatchObject({
      status: 200,
      text: 'hello',
    });
  });

  it('applies a change of access within the cache lifetime', async () => {
    const res = await t.api('PATCH', '/v1/projects/sealed', { policy: { access: 'public' } });
    expect(res.status).toBe(200);
    await until(
      'the environment to be public',
      async () => ((await gateway(web)).status === 200 ? true : undefined),
      10_000,
    );
  });
});
