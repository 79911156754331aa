import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { type FakeGitHub, type FakeGitHubOptions, startFakeGitHub } from '../../test-support/fake-github.js';
import { ForgeApiError } from '../forge-http.js';
import { DEPLOYMENT_DESCRIPTION_MAX, GitHubApi, type GitHubApiOptions } from './github-api.js';

const REPO = 'acme/web';
const MARKER = '<!-- mayfly:preview -->';
const SHA = 'a'.repeat(40);
const fast = { attempts: 3, baseDelayMs: 10, maxDelayMs: 40 };

let github: FakeGitHub | undefined;
afterEach(async () => {
  await github?.close();
  github = undefined;
});

async function setup(fake: FakeGitHubOptions = {}, client: Partial<GitHubApiOptions> = {}) {
  const gh = await startFakeGitHub(fake);
  github = gh;
  const api = new GitHubApi({ baseUrl: gh.url, token: gh.token, retry: fast, ...client });
  return { gh, api };
}

async function failure(promise: Promise<unknown>): Promise<ForgeApiError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ForgeApiError);
  return err as ForgeApiError;
}

const calls = (gh: FakeGitHub) => gh.calls.map((c) => `${c.method} ${c.path.replace(/\?.*/, '')}`);

describe('GitHubApi.upsertIssueComment', () => {
  it('creates the comment once, then edits it in place', async () => {
    const { gh, api } = await setup();
    const id = await api.upsertIssueComment(REPO, 7, MARKER, 'Preview starting');
    const again = await api.upsertIssueComment(
      REPO,
      7,
      MARKER,
      'Preview ready at http://web--pr-7.localhost',
    );
    expect(again).toBe(id);
    expect(gh.comments(REPO, 7)).toEqual([
      { id, body: `${MARKER}\nPreview ready at http://web--pr-7.localhost` },
    ]);
    expect(calls(gh)).toEqual([
      'GET /repos/acme/web/issues/7/comments',
      'POST /repos/acme/web/issues/7/comments',
      'GET /repos/acme/web/issues/7/comments',
      `PATCH /repos/acme/web/issues/comments/${id}`,
    ]);
    expect(gh.calls[0]?.path).toContain('per_page=100');
    // With the id remembered, one PATCH and nothing else.
    await api.upsertIssueComment(REPO, 7, MARKER, `${MARKER}\nPreview updated`, id);
    expect(calls(gh).at(-1)).toBe(`PATCH /repos/acme/web/issues/comments/${id}`);
    expect(gh.calls).toHaveLength(5);
    expect(gh.comments(REPO, 7)).toEqual([{ id, body: `${MARKER}\nPreview updated` }]);
    expect(gh.violations).toEqual([]);
  });

  it('sends the headers GitHub documents', async () => {
    const { gh, api } = await setup({}, { userAgent: 'mayfly-test/1.0' });
    await api.upsertIssueComment(REPO, 1, MARKER, 'hello');
    const post = gh.calls.find((c) => c.method === 'POST');
    expect(post?.headers).toMatchObject({
      accept: 'application/vnd.github+json',
      'x-github-api-version': '2022-11-28',
      authorization: `Bearer ${gh.token}`,
      'user-agent': 'mayfly-test/1.0',
    });
    expect(post?.headers['content-type']).toMatch(/^application\/json/);
    expect(post?.body).toEqual({ body: `${MARKER}\nhello` });
  });

  it('finds its comment by marker when the remembered id was deleted', async () => {
    const { gh, api } = await setup();
    const id = await api.upsertIssueComment(REPO, 3, MARKER, 'first');
    const stale = gh.addComment(REPO, 3, 'someone else');
    gh.deleteComment(REPO, stale);
    expect(await api.upsertIssueComment(REPO, 3, MARKER, 'second', stale)).toBe(id);
    expect(gh.comments(REPO, 3)).toEqual([{ id, body: `${MARKER}\nsecond` }]);
    expect(gh.violations).toEqual([]);
  });

  it('makes a new comment, once, when ours was deleted', async () => {
    const { gh, api } = await setup();
    const id = await api.upsertIssueComment(REPO, 4, MARKER, 'first');
    gh.deleteComment(REPO, id);
    const replacement = await api.upsertIssueComment(REPO, 4, MARKER, 'second', id);
    expect(replacement).not.toBe(id);
    expect(await api.upsertIssueComment(REPO, 4, MARKER, 'third', id)).toBe(replacement);
    expect(gh.comments(REPO, 4)).toEqual([{ id: replacement, body: `${MARKER}\nthird` }]);
  });

  it('finds the marker on page 3 by following Link rel="next"', async () => {
    const { gh, api } = await setup({ maxPerPage: 2 });
    for (let i = 0; i < 4; i++) gh.addComment(REPO, 9, `comment ${i}`);
    // A reply quoting our comment is not ours.
    gh.addComment(REPO, 9, `> ${MARKER}\n> quoted`);
    const ours = gh.addComment(REPO, 9, `${MARKER}\nold status`, 'mayfly[bot]');
    gh.addComment(REPO, 9, 'after');
    expect(await api.upsertIssueComment(REPO, 9, MARKER, 'new status')).toBe(ours);
    expect(gh.calls.map((c) => c.method)).toEqual(['GET', 'GET', 'GET', 'PATCH']);
    expect(gh.calls[2]?.path).toContain('page=3');
    expect(gh.comments(REPO, 9).find((c) => c.id === ours)?.body).toBe(`${MARKER}\nnew status`);
    expect(gh.violations).toEqual([]);
  });

  it('stops at maxPages and then creates', async () => {
    const { gh, api } = await setup({ maxPerPage: 1 }, { maxPages: 2 });
    for (let i = 0; i < 3; i++) gh.addComment(REPO, 2, `comment ${i}`);
    await api.upsertIssueComment(REPO, 2, MARKER, 'body');
    expect(gh.calls.map((c) => c.method)).toEqual(['GET', 'GET', 'POST']);
  });

  it('refuses a next-page link to another origin (it would carry the token)', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, {
      status: 200,
      body: [],
      headers: { link: '<http://elsewhere.example/page2>; rel="next"' },
    });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(err.kind).toBe('bad-response');
    expect(gh.calls).toHaveLength(1);
  });
});

describe('GitHubApi deployments', () => {
  it('creates a deployment and statuses in the documented shapes', async () => {
    const { gh, api } = await setup();
    const id = await api.createDeployment(REPO, {
      ref: SHA,
      environment: 'pr-7',
      description: 'Mayfly preview',
      transientEnvironment: true,
      payload: { mayfly: { env: 'pr-7' } },
    });
    expect(gh.calls[0]?.body).toEqual({
      ref: SHA,
      environment: 'pr-7',
      description: 'Mayfly preview',
      auto_merge: false,
      required_contexts: [],
      transient_environment: true,
      production_environment: false,
      payload: { mayfly: { env: 'pr-7' } },
    });
    await api.createDeploymentStatus(REPO, id, {
      state: 'in_progress',
      logUrl: 'http://mayfly.localhost/envs/pr-7',
    });
    const long = 'x'.repeat(200);
    await api.createDeploymentStatus(REPO, id, {
      state: 'success',
      environmentUrl: 'http://web--pr-7.localhost',
      description: long,
      autoInactive: false,
    });
    expect(gh.calls[2]?.body).toEqual({
      state: 'success',
      environment_url: 'http://web--pr-7.localhost',
      description: `${'x'.repeat(DEPLOYMENT_DESCRIPTION_MAX - 1)}…`,
      auto_inactive: false,
    });
    const [deployment] = gh.deployments(REPO);
    expect(deployment).toMatchObject({
      id,
      ref: SHA,
      environment: 'pr-7',
      transient_environment: true,
      production_environment: false,
      auto_merge: false,
      required_contexts: [],
      statuses: [
        { state: 'in_progress', log_url: 'http://mayfly.localhost/envs/pr-7' },
        { state: 'success', environment_url: 'http://web--pr-7.localhost' },
      ],
    });
    expect(deployment?.statuses[1]?.description).toHaveLength(DEPLOYMENT_DESCRIPTION_MAX);
    expect(gh.violations).toEqual([]);
  });

  it('treats a 202 (GitHub merged instead of deploying) as an error', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, { status: 202, body: { message: 'Auto-merged main into topic on deployment.' } });
    const err = await failure(
      api.createDeployment(REPO, { ref: SHA, environment: 'pr-1', transientEnvironment: true }),
    );
    expect(err.message).toContain('Auto-merged');
    expect(err.status).toBe(202);
  });

  it('answers 404 for a status on a deployment that does not exist, without retrying', async () => {
    const { gh, api } = await setup();
    const err = await failure(api.createDeploymentStatus(REPO, 424242, { state: 'success' }));
    expect(err.status).toBe(404);
    expect(gh.calls).toHaveLength(1);
  });
});

describe('GitHubApi transport', () => {
  it('retries 502s with backoff and then succeeds', async () => {
    const retries: number[] = [];
    const { gh, api } = await setup({ failFirst: 2 }, { onRetry: (r) => retries.push(r.delayMs) });
    const started = Date.now();
    const id = await api.createDeployment(REPO, {
      ref: SHA,
      environment: 'pr-2',
      transientEnvironment: true,
    });
    expect(id).toBeGreaterThan(0);
    expect(gh.calls.map((c) => c.status)).toEqual([502, 502, 201]);
    expect(retries).toHaveLength(2);
    // Equal jitter: 5..10 ms, then 10..20 ms.
    expect(retries[0]).toBeGreaterThanOrEqual(5);
    expect(retries[1]).toBeGreaterThanOrEqual(10);
    expect(Date.now() - started).toBeGreaterThanOrEqual(15);
    expect(gh.deployments(REPO)).toHaveLength(1);
  });

  it('gives up after the attempts with the last status', async () => {
    const { gh, api } = await setup({ failFirst: 5 });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(err).toMatchObject({ status: 502, kind: 'http', attempts: 3 });
    expect(gh.calls).toHaveLength(3);
  });

  it('does not retry a 4xx: a missing repository is a 404 at once', async () => {
    const { gh, api } = await setup({ repos: [REPO] });
    const err = await failure(api.upsertIssueComment('acme/nope', 1, MARKER, 'x'));
    expect(err).toMatchObject({ status: 404, kind: 'http', method: 'GET', attempts: 1 });
    expect(err.message).toBe('GitHub GET /repos/acme/nope/issues/1/comments: answered 404: Not Found');
    expect(gh.calls).toHaveLength(1);
    expect(gh.violations).toEqual([]);
  });

  it('never puts the token in an error, even when GitHub echoes it', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, { status: 400, body: { message: `token ${gh.token} is malformed` } });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(err.message).toContain('is malformed');
    expect(err.message).not.toContain(gh.token);
    expect(inspect(err)).not.toContain(gh.token);

    const wrong = new GitHubApi({ baseUrl: gh.url, token: 'ghp_wrongWrongWrong', retry: fast });
    const denied = await failure(
      wrong.createDeployment(REPO, { ref: SHA, environment: 'e', transientEnvironment: true }),
    );
    expect(denied.status).toBe(401);
    expect(inspect(denied)).not.toContain('ghp_wrongWrongWrong');
    gh.violations.length = 0;

    const unreachable = new GitHubApi({ baseUrl: 'http://127.0.0.1:1', token: gh.token, retry: fast });
    const down = await failure(unreachable.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(down).toMatchObject({ kind: 'network', status: null, attempts: 3 });
    expect(inspect(down)).not.toContain(gh.token);
  });

  it('times out a slow answer; retries a GET after a timeout but not a POST', async () => {
    const { gh, api } = await setup({}, { timeoutMs: 100 });
    gh.delayNext(1, 400);
    const post = await failure(
      api.createDeployment(REPO, { ref: SHA, environment: 'e', transientEnvironment: true }),
    );
    expect(post).toMatchObject({ kind: 'timeout', status: null, attempts: 1 });
    expect(post.message).toContain('no answer within 100 ms');
    expect(gh.calls).toHaveLength(1);

    gh.delayNext(1, 400);
    await api.upsertIssueComment(REPO, 5, MARKER, 'x');
    expect(gh.calls.slice(1).map((c) => c.method)).toEqual(['GET', 'GET', 'POST']);
  });

  it('waits out a secondary rate limit (403 with retry-after) but not a plain 403', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, {
      status: 403,
      headers: { 'retry-after': '0' },
      body: { message: 'You have exceeded a secondary rate limit.' },
    });
    await api.upsertIssueComment(REPO, 1, MARKER, 'x');
    expect(gh.calls[0]?.status).toBe(403);
    expect(gh.comments(REPO, 1)).toHaveLength(1);

    gh.respondNext(1, { status: 403, body: { message: 'Resource not accessible by integration' } });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'y'));
    expect(err).toMatchObject({ status: 403, attempts: 1 });
  });

  it('fails at once, with retryAfterMs, when the rate limit resets too late to wait', async () => {
    const { gh, api } = await setup();
    const reset = Math.floor(Date.now() / 1000) + 3600;
    gh.respondNext(1, {
      status: 403,
      headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) },
      body: { message: 'API rate limit exceeded' },
    });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(err.status).toBe(403);
    expect(err.retryAfterMs).toBeGreaterThan(3_500_000);
    expect(gh.calls).toHaveLength(1);
  });

  it('honours retry-after on a 429', async () => {
    const delays: number[] = [];
    const { gh, api } = await setup({}, { onRetry: (r) => delays.push(r.delayMs) });
    gh.respondNext(1, { status: 429, headers: { 'retry-after': '1' } });
    await api.createDeployment(REPO, { ref: SHA, environment: 'e', transientEnvironment: true });
    expect(delays).toEqual([1000]);
    expect(gh.calls.map((c) => c.status)).toEqual([429, 201]);
  });

  it('stops on abort', async () => {
    const { gh, api } = await setup({}, { retry: { attempts: 5, baseDelayMs: 10_000, maxDelayMs: 10_000 } });
    gh.failNext(1);
    const controller = new AbortController();
    const pending = api.upsertIssueComment(REPO, 1, MARKER, 'x', null, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    const err = await failure(pending);
    expect(err.kind).toBe('aborted');
    expect(gh.calls).toHaveLength(1);
  });

  it('follows a same-origin redirect (a renamed repository) but not one to another host', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, { status: 307, headers: { location: `${gh.url}/repos/acme/renamed/deployments` } });
    await api.createDeployment(REPO, { ref: SHA, environment: 'e', transientEnvironment: true });
    expect(calls(gh)).toEqual(['POST /repos/acme/web/deployments', 'POST /repos/acme/renamed/deployments']);
    expect(gh.deployments('acme/renamed')).toHaveLength(1);

    gh.respondNext(1, { status: 301, headers: { location: 'http://elsewhere.example/repos/acme/web' } });
    const err = await failure(
      api.createDeployment(REPO, { ref: SHA, environment: 'e', transientEnvironment: true }),
    );
    expect(err).toMatchObject({ kind: 'bad-response', status: 301 });
    expect(gh.calls).toHaveLength(3);
  });

  it('refuses an answer larger than the body limit', async () => {
    const { gh, api } = await setup();
    gh.respondNext(1, { status: 200, body: [{ id: 1, body: 'x'.repeat(6 * 1024 * 1024) }] });
    const err = await failure(api.upsertIssueComment(REPO, 1, MARKER, 'x'));
    expect(err).toMatchObject({ kind: 'too-large', status: 200 });
  });

  it('works against a GitHub Enterprise base URL with a path prefix', async () => {
    const { gh } = await setup({ pathPrefix: '/api/v3' });
    expect(gh.url).toMatch(/\/api\/v3$/);
    for (const baseUrl of [gh.url, `${gh.url}/`]) {
      const api = new GitHubApi({ baseUrl, token: gh.token, retry: fast });
      await api.upsertIssueComment(REPO, 11, MARKER, 'enterprise');
      const id = await api.createDeployment(REPO, {
        ref: SHA,
        environment: 'pr-11',
        transientEnvironment: true,
      });
      await api.createDeploymentStatus(REPO, id, { state: 'success', environmentUrl: 'http://x.localhost' });
    }
    expect(gh.calls.every((c) => c.path.startsWith('/api/v3/repos/acme/web/'))).toBe(true);
    expect(gh.comments(REPO, 11)).toHaveLength(1);
    // auto_inactive leaves transient deployments alone, so both keep their success.
    expect(gh.deployments(REPO).map((d) => d.statuses.map((s) => s.state))).toEqual([
      ['success'],
      ['success'],
    ]);
    expect(gh.violations).toEqual([]);
  });
});

describe('the fake GitHub', () => {
  it('rejects and records a body with an unknown key', async () => {
    const { gh } = await setup();
    const res = await fetch(`${gh.url}/repos/${REPO}/issues/1/comments`, {
      method: 'POST',
      headers: {
        accept: 'application/vnd.github+json',
        'x-github-api-version': '2022-11-28',
        authorization: `Bearer ${gh.token}`,
        'user-agent': 'test',
        'content-type': 'application/json',
      },
      body: JSON.stringify({ body: 'x', title: 'nope' }),
    });
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({
      message: expect.stringContaining('"title" is not a permitted key.'),
      documentation_url: expect.any(String),
    });
    expect(gh.violations).toEqual([
      'POST /repos/acme/web/issues/1/comments: body: "title" is not a permitted key.',
    ]);
    expect(gh.comments(REPO, 1)).toEqual([]);
  });

  it('rejects and records a missing header, a missing field and a bad state', async () => {
    const { gh } = await setup();
    const headers = {
      accept: 'application/vnd.github+json',
      authorization: `Bearer ${gh.token}`,
      'user-agent': 'test',
      'content-type': 'application/json',
    };
    const noVersion = await fetch(`${gh.url}/repos/${REPO}/deployments`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ ref: 'main' }),
    });
    expect(noVersion.status).toBe(400);
    const withVersion = { ...headers, 'x-github-api-version': '2022-11-28' };
    const noRef = await fetch(`${gh.url}/repos/${REPO}/deployments`, {
      method: 'POST',
      headers: withVersion,
      body: JSON.stringify({ environment: 'x' }),
    });
    expect(noRef.status).toBe(422);
    const id = (await (
      await fetch(`${gh.url}/repos/${REPO}/deployments`, {
        method: 'POST',
        headers: withVersion,
        body: JSON.stringify({ ref: 'main' }),
      })
    ).json()) as { id: number };
    const badState = await fetch(`${gh.url}/repos/${REPO}/deployments/${id.id}/statuses`, {
      method: 'POST',
      headers: withVersion,
      body: JSON.stringify({ state: 'done' }),
    });
    expect(badState.status).toBe(422);
    expect(gh.violations).toHaveLength(3);
    expect(gh.violations[1]).toContain('"ref" wasn\'t supplied.');
  });
});
