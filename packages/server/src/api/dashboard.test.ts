/**
 * The dashboard over HTTP, as a browser and an attacker see it: the app and its assets served at
 * `/` (gzip, a strict content security policy), sessions from a one-time login link or a token
 * (an HTTP-only cookie that is never an API token, taken only with the dashboard's header, and
 * that dies with its token), and the live feed of environments the list page follows.
 */
import http from 'node:http';
import type { Capacity, CreatedToken, DashboardLoginLink, Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

const HEADER = { 'x-mayfly-dashboard': '1' };
const sleeper = `services:\n  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`;

describe('the dashboard', () => {
  let t: TestServer;
  let url: string;
  beforeAll(async () => {
    t = await startTestServer();
    url = t.server.url;
  });
  afterAll(async () => {
    await t.close();
  });

  /** A session from a login link made with `token`: the cookie's value and the response. */
  const login = async (token = t.token) => {
    const link = await t.api<DashboardLoginLink>('POST', '/v1/dashboard/login-links', undefined, token);
    expect(link.status).toBe(201);
    const code = new URL(link.body.url).hash.slice(1);
    const res = await fetch(`${url}/dashboard/session`, {
      method: 'POST',
      headers: { ...HEADER, 'content-type': 'application/json' },
      body: JSON.stringify({ link: code }),
    });
    const cookie = res.headers.get('set-cookie') ?? '';
    return { res, code, cookie, session: /^mayfly_session=([^;]*)/.exec(cookie)?.[1] ?? '', link: link.body };
  };
  const withSession = (session: string, path: string, init: RequestInit = {}, header = true) =>
    fetch(`${url}${path}`, {
      ...init,
      headers: { cookie: `mayfly_session=${session}`, ...(header ? HEADER : {}), ...init.headers },
    });

  it('serves the app at / and its pages, gzipped, with a content security policy; assets by exact name only', async () => {
    for (const page of ['/', '/login', '/overview', '/environments/web', '/projects', '/projects/shop']) {
      const res = await fetch(`${url}${page}`, { headers: { 'accept-encoding': 'gzip' } });
      expect(res.status, page).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('content-encoding')).toBe('gzip');
      expect(res.headers.get('content-security-policy')).toMatch(
        /default-src 'self'.*frame-ancestors 'none'/,
      );
      const html = await res.text();
      expect(html).toMatch(/<div id="app">/);
      // Every script and style is this server's own (nothing from a CDN).
      // (The icon is an empty inline one: no request for /favicon.ico.)
      const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)]
        .map((m) => m[1]!)
        .filter((r) => r !== 'data:,');
      expect(refs.length).toBeGreaterThan(0);
      for (const ref of refs) {
        expect(ref).toMatch(/^\/assets\/[\w.-]+$/);
        const asset = await fetch(`${url}${ref}`);
        expect(asset.status, ref).toBe(200);
        expect(asset.headers.get('cache-control')).toMatch(/immutable/);
      }
    }
    for (const bad of ['/assets/..%2Fpackage.json', '/assets/%2e%2e%2findex.html', '/assets/nothing.js']) {
      expect((await fetch(`${url}${bad}`)).status, bad).toBe(404);
    }
    // An unknown API path is still the API's: a token is needed.
    expect((await fetch(`${url}/v1/nothing`)).status).toBe(401);
  });

  it('logs in once per link: an HTTP-only, same-site cookie with the scope of the token that made the link', async () => {
    const reader = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'dash-reader', scope: 'read' });
    const { res, code, cookie, session, link } = await login(reader.body.token);
    expect(link.url).toMatch(new RegExp(`^${url}/login#mfl_[\\w-]{43}$`));
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ scope: 'read', project: null });
    expect(cookie).toMatch(/^mayfly_session=mfs_[\w-]{43}; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    // the link works once
    const again = await fetch(`${url}/dashboard/session`, {
      method: 'POST',
      headers: { ...HEADER, 'content-type': 'application/json' },
      body: JSON.stringify({ link: code }),
    });
    expect(again.status).toBe(401);
    expect(((await again.json()) as { error: { message: string } }).error.message).toMatch(/used or expired/);
    // the session reads, with the header; it may not write (read scope)
    expect((await withSession(session, '/v1/environments')).status).toBe(200);
    const write = await withSession(session, '/v1/environments', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'nope', template: { filename: 'compose.yaml', content: sleeper } }),
    });
    expect(write.status).toBe(403);
    expect(((await write.json()) as { error: { message: string } }).error.message).toMatch(/scope "read"/);
    const info = await withSession(session, '/dashboard/session');
    expect(await info.json()).toMatchObject({ scope: 'read' });
  });

  it('a session is no API token, is taken only with the dashboard header, and dies with its token or on logout', async () => {
    const writer = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'dash-writer', scope: 'write' });
    const { session } = await login(writer.body.token);
    // as a bearer token: unknown
    expect((await t.api('GET', '/v1/environments', undefined, session)).status).toBe(401);
    // the cookie without the header (what another site's form or script would send): refused
    const forged = await withSession(session, '/v1/environments', {}, false);
    expect(forged.status).toBe(403);
    expect(
      (
        await withSession(
          session,
          '/v1/environments',
          {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'sec-fetch-site': 'same-origin' },
            body: '{}',
          },
          false,
        )
      ).status,
    ).toBe(403);
    // an API token as the cookie: not a session
    expect((await withSession(t.token, '/v1/environments')).status).toBe(401);
    // starting a session needs the header too, and a real link or token
    const noHeader = await fetch(`${url}/dashboard/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: writer.body.token }),
    });
    expect(noHeader.status).toBe(403);
    for (const body of [
      { link: 'mfl_nothing' },
      { token: 'mfy_nothing' },
      { link: session },
      {},
      { link: 'x'.repeat(10_000) },
    ]) {
      const res = await fetch(`${url}/dashboard/session`, {
        method: 'POST',
        headers: { ...HEADER, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status, JSON.stringify(body).slice(0, 40)).toBe(401);
    }
    // a token typed in starts one too, without the token in the cookie
    const typed = await fetch(`${url}/dashboard/session`, {
      method: 'POST',
      headers: { ...HEADER, 'content-type': 'application/json' },
      body: JSON.stringify({ token: writer.body.token }),
    });
    expect(typed.status).toBe(201);
    const typedSession = /^mayfly_session=([^;]*)/.exec(typed.headers.get('set-cookie') ?? '')?.[1] ?? '';
    expect(typedSession).toMatch(/^mfs_/);
    // logging out ends that one session
    const out = await withSession(typedSession, '/dashboard/session', { method: 'DELETE' });
    expect(out.headers.get('set-cookie')).toMatch(/^mayfly_session=; Path=\/; Max-Age=0/);
    expect((await withSession(typedSession, '/v1/environments')).status).toBe(401);
    expect((await withSession(session, '/v1/environments')).status).toBe(200);
    // the token revoked: its sessions end
    expect((await t.api('DELETE', `/v1/tokens/${writer.body.id}`)).status).toBe(200);
    const ended = await withSession(session, '/v1/environments');
    expect(ended.status).toBe(401);
    expect(((await ended.json()) as { error: { message: string } }).error.message).toMatch(
      /session has ended/,
    );
    // sessions and links are not listed as tokens
    const listed = await t.api<{ items: { name: string }[] }>('GET', '/v1/tokens?all=1');
    expect(listed.body.items.map((i) => i.name)).not.toContain('dashboard session');
  });

  it('a session makes no login link, one link replaces the session a browser had, two session cookies are refused, and links are capped', async () => {
    const { session } = await login();
    const fromSession = await withSession(session, '/v1/dashboard/login-links', { method: 'POST' });
    expect(fromSession.status).toBe(403);
    expect(((await fromSession.json()) as { error: { message: string } }).error.message).toMatch(
      /made with an API token/,
    );
    // a second login in the same browser ends the first session
    const link = await t.api<DashboardLoginLink>('POST', '/v1/dashboard/login-links');
    const replaced = await fetch(`${url}/dashboard/session`, {
      method: 'POST',
      headers: { ...HEADER, 'content-type': 'application/json', cookie: `mayfly_session=${session}` },
      body: JSON.stringify({ link: new URL(link.body.url).hash.slice(1) }),
    });
    expect(replaced.status).toBe(201);
    expect((await withSession(session, '/v1/environments')).status).toBe(401);
    // two cookies of that name (another host of the domain set one): neither is trusted
    const fresh = /^mayfly_session=([^;]*)/.exec(replaced.headers.get('set-cookie') ?? '')?.[1] ?? '';
    const two = await fetch(`${url}/v1/environments`, {
      headers: { ...HEADER, cookie: `mayfly_session=${fresh}; mayfly_session=${session}` },
    });
    expect(two.status).toBe(401);
    expect(((await two.json()) as { error: { message: string } }).error.message).toMatch(/more than one/);
    // unused links are capped per token
    const capped = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'dash-links', scope: 'read' });
    const statuses: number[] = [];
    for (let i = 0; i < 21; i++)
      statuses.push((await t.api('POST', '/v1/dashboard/login-links', undefined, capped.body.token)).status);
    expect(statuses.slice(0, 20).every((s) => s === 201)).toBe(true);
    expect(statuses[20]).toBe(429);
  });

  it('takes the cookie without the header only for a same-origin fetch the browser vouches for (an event stream)', async () => {
    const { session } = await login();
    // (node:http, not fetch: fetch sets Sec-Fetch-Mode itself.)
    const watch = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.get(
          `${url}/v1/watch/environments`,
          { headers: { cookie: `mayfly_session=${session}`, ...headers } },
          (res) => {
            resolve(res.statusCode ?? 0);
            res.destroy();
          },
        );
        req.on('error', reject);
      });
    expect(await watch({ 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors' })).toBe(200);
    expect(await watch({ 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors' })).toBe(403);
    expect(await watch({ 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'cors' })).toBe(403);
    expect(await watch({ 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'navigate' })).toBe(403);
    expect(await watch({})).toBe(403);
  });

  it('ends an open event stream once the token behind its session is revoked', async () => {
    const reader = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'dash-revoked', scope: 'read' });
    const { session } = await login(reader.body.token);
    const res = await withSession(session, '/v1/watch/environments');
    expect(res.status).toBe(200);
    const body = res.body!.getReader();
    expect((await body.read()).done).toBe(false); // the snapshot
    expect((await t.api('DELETE', `/v1/tokens/${reader.body.id}`)).status).toBe(200);
    // Asked again every 5 s: the stream ends (a reset, or its end).
    const ended = await (async () => {
      for (;;) {
        const next = await body.read().catch(() => ({ done: true }));
        if (next.done) return true;
      }
    })();
    expect(ended).toBe(true);
  });

  it('serves at most 10 watchers per token, even when they all come at once, with 429 and why', async () => {
    const { session } = await login();
    const abort = new AbortController();
    try {
      const answers = await Promise.all(
        Array.from({ length: 12 }, () =>
          withSession(session, '/v1/watch/environments', { signal: abort.signal }),
        ),
      );
      const statuses = answers.map((r) => r.status).sort();
      expect(statuses).toEqual([...Array(10).fill(200), 429, 429]);
      const refused = answers.find((r) => r.status === 429)!;
      expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/per token/);
    } finally {
      abort.abort();
    }
  });

  it('ends a followed log once the token it was opened with is revoked', async () => {
    const created = await t.api<Environment>('POST', '/v1/environments', {
      name: 'followed',
      template: { filename: 'compose.yaml', content: sleeper },
    });
    expect(created.status).toBe(201);
    await t.waitForState('followed', ['ready']);
    const reader = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'log-reader', scope: 'read' });
    const res = await fetch(`${url}/v1/environments/followed/logs?follow=1`, {
      headers: { authorization: `Bearer ${reader.body.token}` },
    });
    expect(res.status).toBe(200);
    const body = res.body!.getReader();
    expect((await t.api('DELETE', `/v1/tokens/${reader.body.id}`)).status).toBe(200);
    // Asked again every 5 s: the stream ends (a reset, or its end) although the service runs on.
    for (;;) {
      const next = await body.read().catch(() => ({ done: true }));
      if (next.done) break;
    }
    expect((await t.api<Environment>('GET', '/v1/environments/followed')).body.state).toBe('ready');
    await t.api('DELETE', '/v1/environments/followed');
    await t.waitForState('followed', ['destroyed']);
  });

  it('pushes environments as they change to a watcher: a snapshot, then each change and each one gone', async () => {
    const { session } = await login();
    const abort = new AbortController();
    const res = await withSession(session, '/v1/watch/environments', { signal: abort.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    /** The next event for which `match` is true (earlier ones are skipped). */
    const next = async (match: (type: string, data: string) => boolean) => {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1] ?? '';
          const data = /^data: (.*)$/m.exec(block)?.[1] ?? '';
          if (match(type, data)) return { type, data };
          continue;
        }
        const { value, done } = await reader.read();
        if (done) throw new Error('the stream ended');
        buffer += value;
      }
    };
    // Beside it, a session bound to another project: it must see nothing of this one.
    const bound = await t.api<CreatedToken>('POST', '/v1/tokens', {
      name: 'dash-other',
      scope: 'read',
      project: 'other',
    });
    const other = await login(bound.body.token);
    const otherAbort = new AbortController();
    const otherRes = await withSession(other.session, '/v1/watch/environments', {
      signal: otherAbort.signal,
    });
    let otherText = '';
    void (async () => {
      const r = otherRes.body!.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await r.read().catch(() => ({ value: '', done: true }));
        if (done) return;
        otherText += value;
      }
    })();
    try {
      expect((await next((type) => type === 'snapshot')).type).toBe('snapshot');
      // Made by the session: the environment says whose dashboard it came from.
      const made = await withSession(session, '/v1/environments', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'watched', template: { filename: 'compose.yaml', content: sleeper } }),
      });
      const created = { status: made.status, body: (await made.json()) as Environment };
      expect(created.status).toBe(201);
      expect(created.body.createdBy).toBe('token admin (local) (dashboard)');
      const ready = await next(
        (type, data) => type === 'change' && (JSON.parse(data) as Environment).state === 'ready',
      );
      expect(JSON.parse(ready.data)).toMatchObject({ name: 'watched', state: 'ready' });
      await t.api('DELETE', '/v1/environments/watched');
      expect((await next((type) => type === 'gone')).data).toBe(created.body.id);
      // The other project's watcher got its (empty) snapshot and nothing of this environment.
      expect(otherText).toMatch(/^event: snapshot\ndata: \[\]\n\n/);
      expect(otherText).not.toContain(created.body.id);
    } finally {
      abort.abort();
      otherAbort.abort();
    }
  });

  it("answers the server's capacity to tokens not bound to a project, with what it holds against its limits", async () => {
    const made = await t.api('POST', '/v1/environments', {
      name: 'counted',
      template: {
        filename: 'compose.yaml',
        content: `services:\n  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`,
      },
    });
    expect(made.status).toBe(201);
    await t.waitForState('counted', ['ready']);
    const capacity = await t.api<Capacity>('GET', '/v1/capacity');
    expect(capacity.status).toBe(200);
    expect(capacity.body.environments).toMatchObject({ used: 1, max: 200, byState: { ready: 1 } });
    expect(capacity.body.images.budgetBytes).toBeGreaterThan(0);
    expect(capacity.body.host.memoryBytes).toBeGreaterThan(capacity.body.host.availableMemoryBytes);
    // Sessions see it as their token would.
    const { session } = await login();
    expect((await withSession(session, '/v1/capacity')).status).toBe(200);
    const bound = (
      await t.api<{ token: string }>('POST', '/v1/tokens', { name: 'p', scope: 'read', project: 'elsewhere' })
    ).body.token;
    const refused = await t.api<{ error: { message: string } }>('GET', '/v1/capacity', undefined, bound);
    expect(refused.status).toBe(403);
    expect(refused.body.error.message).toContain('not bound to a project');
    await t.api('DELETE', '/v1/environments/counted');
    await t.waitForState('counted', ['destroyed']);
  });
});
