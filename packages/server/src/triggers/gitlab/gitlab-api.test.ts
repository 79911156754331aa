import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { type FakeGitLab, type FakeGitLabOptions, startFakeGitLab } from '../../test-support/fake-gitlab.js';
import { ForgeApiError } from '../forge-http.js';
import { GitLabApi, type GitLabApiOptions } from './gitlab-api.js';

const PROJECT = 'acme/platform/web';
const ENCODED = 'acme%2Fplatform%2Fweb';
const MARKER = '<!-- mayfly:preview -->';
const fast = { attempts: 3, baseDelayMs: 10, maxDelayMs: 40 };

let gitlab: FakeGitLab | undefined;
afterEach(async () => {
  await gitlab?.close();
  gitlab = undefined;
});

async function setup(fake: FakeGitLabOptions = {}, client: Partial<GitLabApiOptions> = {}) {
  const gl = await startFakeGitLab(fake);
  gitlab = gl;
  const api = new GitLabApi({ baseUrl: gl.url, token: gl.token, retry: fast, ...client });
  return { gl, api };
}

const calls = (gl: FakeGitLab) => gl.calls.map((c) => `${c.method} ${c.path.replace(/\?.*/, '')}`);

describe('GitLabApi.upsertMergeRequestNote', () => {
  it('creates the note once, then edits it in place', async () => {
    const { gl, api } = await setup();
    const id = await api.upsertMergeRequestNote(PROJECT, 12, MARKER, 'Preview starting');
    expect(await api.upsertMergeRequestNote(PROJECT, 12, MARKER, 'Preview ready')).toBe(id);
    expect(gl.notes(PROJECT, 12)).toEqual([{ id, body: `${MARKER}\nPreview ready` }]);
    const notes = `/api/v4/projects/${ENCODED}/merge_requests/12/notes`;
    expect(calls(gl)).toEqual([`GET ${notes}`, `POST ${notes}`, `GET ${notes}`, `PUT ${notes}/${id}`]);
    expect(gl.calls[0]?.path).toMatch(/sort=asc/);
    expect(gl.calls[1]?.headers['private-token']).toBe(gl.token);
    expect(gl.calls[1]?.body).toEqual({ body: `${MARKER}\nPreview starting` });

    await api.upsertMergeRequestNote(PROJECT, 12, MARKER, 'Preview updated', id);
    expect(calls(gl).slice(4)).toEqual([`PUT ${notes}/${id}`]);
    expect(gl.violations).toEqual([]);
  });

  it('falls back to the marker search when the remembered note is gone', async () => {
    const { gl, api } = await setup();
    const id = await api.upsertMergeRequestNote(PROJECT, 3, MARKER, 'one');
    gl.deleteNote(PROJECT, id);
    const again = await api.upsertMergeRequestNote(PROJECT, 3, MARKER, 'two', id);
    expect(again).not.toBe(id);
    expect(await api.upsertMergeRequestNote(PROJECT, 3, MARKER, 'three', id)).toBe(again);
    expect(gl.notes(PROJECT, 3)).toEqual([{ id: again, body: `${MARKER}\nthree` }]);
    expect(gl.violations).toEqual([]);
  });

  it('follows x-next-page without a Link header, skipping system notes', async () => {
    const { gl, api } = await setup({ maxPerPage: 2, omitLinkHeader: true });
    gl.addNote(PROJECT, 5, `${MARKER}\nnot ours: a system note`, { system: true });
    for (let i = 0; i < 3; i++) gl.addNote(PROJECT, 5, `note ${i}`);
    const ours = gl.addNote(PROJECT, 5, `${MARKER}\nold`, { username: 'mayfly-bot' });
    expect(await api.upsertMergeRequestNote(PROJECT, 5, MARKER, 'new')).toBe(ours);
    expect(gl.calls.map((c) => c.method)).toEqual(['GET', 'GET', 'GET', 'PUT']);
    expect(gl.calls[2]?.path).toContain('page=3');
    expect(gl.violations).toEqual([]);
  });

  it('follows Link rel="next" and works under a relative URL root with Bearer auth', async () => {
    const { gl } = await setup({ maxPerPage: 1, pathPrefix: '/gitlab' });
    const api = new GitLabApi({
      baseUrl: `${gl.url}/api/v4/`,
      token: gl.token,
      authHeader: 'bearer',
      retry: fast,
    });
    gl.addNote(PROJECT, 1, 'first');
    const ours = gl.addNote(PROJECT, 1, `intro\n${MARKER}\nbody`);
    expect(await api.upsertMergeRequestNote(PROJECT, 1, MARKER, 'replaced')).toBe(ours);
    expect(gl.calls.every((c) => c.path.startsWith(`/gitlab/api/v4/projects/${ENCODED}/`))).toBe(true);
    expect(gl.calls[0]?.headers.authorization).toBe(`Bearer ${gl.token}`);
    expect(gl.calls[0]?.headers['private-token']).toBeUndefined();
    expect(gl.violations).toEqual([]);
  });

  it('retries 502s, does not retry a 404, and keeps the token out of errors', async () => {
    const { gl, api } = await setup({ failFirst: 2, projects: [PROJECT] });
    await api.upsertMergeRequestNote(PROJECT, 2, MARKER, 'x');
    expect(gl.calls.map((c) => c.status)).toEqual([502, 502, 200, 201]);

    const err = await api.upsertMergeRequestNote('acme/missing', 2, MARKER, 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ForgeApiError);
    expect(err).toMatchObject({ status: 404, attempts: 1 });
    expect((err as Error).message).toBe(
      'GitLab GET /projects/acme%2Fmissing/merge_requests/2/notes: answered 404: 404 Project Not Found',
    );
    expect(inspect(err)).not.toContain(gl.token);
    expect(gl.violations).toEqual([]);
  });

  it('the fake rejects and records an unknown parameter', async () => {
    const { gl } = await setup();
    const res = await fetch(`${gl.url}/api/v4/projects/${ENCODED}/merge_requests/1/notes`, {
      method: 'POST',
      headers: { 'private-token': gl.token, 'content-type': 'application/json' },
      body: JSON.stringify({ body: 'x', title: 'no' }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: 'title is not allowed' });
    expect(gl.violations).toEqual([
      `POST /api/v4/projects/${ENCODED}/merge_requests/1/notes: body: title is not allowed`,
    ]);
    const unencoded = await fetch(`${gl.url}/api/v4/projects/${PROJECT}/merge_requests/1/notes`, {
      headers: { 'private-token': gl.token },
    });
    expect(unencoded.status).toBe(404);
    expect(gl.violations[1]).toContain('URL-encoded');
  });
});
