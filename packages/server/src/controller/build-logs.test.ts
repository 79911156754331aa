/**
 * Build output is kept: `GET /v1/environments/:id/logs?build=1` answers what an environment's image
 * builds printed, after a successful build and after one that failed the environment alike.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { makeProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

/**
 * `app` built (from a nonce, so the build really runs) with a step that echoes `marker`, then
 * fails when told to; `db` from an image, so it has no build.
 */
const project = (marker: string, fail = false) =>
  makeProject({
    nonce: `${randomUUID()}\n`,
    Dockerfile: `FROM ${TESTKIT_IMAGE}\nCOPY nonce /nonce\nRUN echo ${marker}${fail ? ' && exit 3' : ''}\n`,
    'compose.yaml': `services:
  app:
    build: .
    command: ["testkit", "sleep"]
  db:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
`,
  });

describe('build output', () => {
  let t: TestServer;
  const dirs: string[] = [];
  const logs = async (id: string, query: string) =>
    t.api<string | { error: { code: string; message: string } }>(
      'GET',
      `/v1/environments/${id}/logs?${query}`,
    );
  const create = async (name: string, dir: string) => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name,
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(201);
    return res.body;
  };

  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('is readable after a build that succeeded and after one that failed the environment', async () => {
    const okMarker = `built-marker-${randomUUID()}`;
    const badMarker = `failed-marker-${randomUUID()}`;
    dirs.push(await project(okMarker), await project(badMarker, true));
    // Both at once: the two builds run side by side.
    const [ok, bad] = await Promise.all([create('built', dirs[0]!), create('unbuilt', dirs[1]!)]);
    const [ready, failed] = await Promise.all([
      t.waitForState(ok.id, ['ready', 'failed'], 30_000),
      t.waitForState(bad.id, ['ready', 'failed'], 30_000),
    ]);
    expect(ready.failure).toBeNull();
    expect(failed.failure).toMatchObject({ step: 'build:app' });

    // Every service's build output, prefixed as the multi-service logs are: only app has one.
    const all = await logs(ok.id, 'build=1');
    expect(all.status).toBe(200);
    const allLines = (all.body as string).trimEnd().split('\n');
    expect(allLines).toContain(`app | ${okMarker}`);
    expect(allLines.every((line) => line.startsWith('app | '))).toBe(true);

    const app = await logs(ok.id, 'build=1&service=app');
    expect(app.status).toBe(200);
    const appLines = (app.body as string).trimEnd().split('\n');
    expect(appLines).toContain(okMarker);
    // The whole build, from its first step (the builder's own steps come after the Dockerfile's).
    expect(appLines[0]).toMatch(/^Step 1\/\d+ : FROM /);
    expect(appLines.some((line) => /^Step 3\/\d+ : RUN echo built-marker-/.test(line))).toBe(true);
    // `tail` applies.
    const last = await logs(ok.id, 'build=1&service=app&tail=1');
    expect((last.body as string).trimEnd().split('\n')).toEqual([appLines.at(-1)]);

    // The failed build's output, with why it failed as its last line, outlives the environment's failure.
    const failedApp = await logs(bad.id, 'build=true&service=app');
    expect(failedApp.status).toBe(200);
    const failedLines = (failedApp.body as string).trimEnd().split('\n');
    expect(failedLines).toContain(badMarker);
    expect(failedLines.at(-1)).toMatch(/^build failed: .*returned a non-zero code: 3$/);

    // A service without a build has none; an unknown service is not one; no following.
    const db = await logs(ok.id, 'build=1&service=db');
    expect(db.status).toBe(404);
    expect(db.body).toMatchObject({ error: { message: expect.stringMatching(/^no build output for "db"/) } });
    expect((await logs(ok.id, 'build=1&service=nosuch')).status).toBe(404);
    const follow = await logs(ok.id, 'build=1&follow=1');
    expect(follow.status).toBe(400);
    expect(follow.body).toMatchObject({
      error: { message: expect.stringMatching(/follow is not supported with build/) },
    });

    // The kept build output is not any service's logs.
    for (const id of [ok.id, bad.id]) {
      const plain = await logs(id, 'tail=all');
      expect(plain.status).toBe(200);
      expect(String(plain.body ?? '')).not.toMatch(/marker|Step \d|build failed/);
    }
    expect(String((await logs(bad.id, 'service=app')).body ?? '')).not.toMatch(/marker|Step \d/);
  });
});
