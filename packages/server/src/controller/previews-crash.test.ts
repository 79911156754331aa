/**
 * Previews survive the control plane dying: SIGKILLed after "opened" was accepted and while the
 * environment builds (observed before the kill), a fresh process on the same data dir ends with
 * one environment and one comment on the pull request, never a second of either.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment, Preview } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  callApi,
  destroyAll,
  startControlPlane,
  stopControlPlane,
} from '../test-support/control-plane-process.js';
import { type FakeGitHub, startFakeGitHub } from '../test-support/fake-github.js';
import { makeTestRepo, type TestRepo } from '../test-support/git-repos.js';
import { deliver, pullRequestPayload, signedDelivery } from '../test-support/github-webhooks.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { until } from '../test-support/until.js';

const SECRET = 'crash-test-webhook-secret';
const REPO = 'acme/crash';

describe('previews when the control plane dies', () => {
  let github: FakeGitHub;
  let repo: TestRepo;
  let dataDir: string;
  let plane: ControlPlane | null = null;
  const options = { reconcileIntervalMs: 250, forgeRetry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 } };

  beforeAll(async () => {
    github = await startFakeGitHub();
    repo = await makeTestRepo();
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-previews-crash-'));
  });
  afterAll(async () => {
    if (plane) {
      await destroyAll(plane).catch(() => {});
      await stopControlPlane(plane);
    }
    await github?.close();
    await repo?.remove();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('killed between "opened" and ready: one environment, one comment', async () => {
    const base = await repo.commit(
      {
        'compose.yaml': `
services:
  web:
    build: .
    command: ["testkit", "http", "--port", "8080", "--text", "crash test"]
    ports: ["8080"]
`,
        // A build that takes a few seconds, so the kill lands while it runs.
        Dockerfile: `FROM ${TESTKIT_IMAGE}\nRUN sleep 4 && echo ${Date.now()} > /nonce\n`,
      },
      'the app',
    );
    const head = await repo.commit({ 'README.md': 'a change' }, 'a pull request', {
      branch: 'pr',
      pullRequest: 3,
    });

    plane = await startControlPlane(dataDir, undefined, options);
    await callApi(plane, 'POST', '/v1/projects', {
      name: 'crash',
      repo: repo.url,
      forgeRepo: REPO,
      forgeApiUrl: github.url,
      webhookSecret: SECRET,
      forgeToken: github.token,
    });
    const payload = pullRequestPayload({
      repo: REPO,
      number: 3,
      action: 'opened',
      headSha: head,
      baseSha: base,
    });
    expect((await deliver(plane.url, signedDelivery('pull_request', payload, SECRET))).status).toBe(202);
    const first = plane;
    await until(
      'the environment building',
      async () => {
        const res = await fetch(`${first.url}/v1/environments/crash-pr-3`, {
          headers: { authorization: `Bearer ${first.token}` },
        });
        if (res.status !== 200) return undefined;
        const env = (await res.json()) as Environment;
        return env.state === 'building' ? env : undefined;
      },
      60_000,
    );
    await stopControlPlane(plane, 'SIGKILL');

    plane = await startControlPlane(dataDir, undefined, options);
    const second = plane;
    await until(
      'the preview ready',
      async () => {
        const { items } = await callApi<{ items: Preview[] }>(second, 'GET', '/v1/projects/crash/previews');
        return items[0]?.state === 'ready' ? items[0] : undefined;
      },
      180_000,
      250,
    );
    const envs = await callApi<{ items: Environment[] }>(second, 'GET', '/v1/environments?all=1');
    expect(envs.items.map((e) => e.name)).toEqual(['crash-pr-3']);
    await until('the comment says ready', () =>
      github.comments(REPO, 3).some((c) => c.body.includes('ready')) ? true : undefined,
    );
    expect(github.comments(REPO, 3)).toHaveLength(1);
    expect(github.violations).toEqual([]);
  });
});
