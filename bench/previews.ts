/**
 * Previews benchmark: a signed webhook received → the preview's URL ready, for the example shop
 * kept in a local bare git repository, against doing the same by hand in the same run
 * (`git clone` + `docker-compose build` + `up -d` until healthy):
 *
 *   (a) first PR      a commit whose build contexts are new to Mayfly (cold content tags)
 *   (b) second PR     another PR with the same contents: nothing to build
 *   (c) push          a push to the first PR changing one service (web)
 *   (d) wake          a request to a preview put to sleep, answered by the app
 *
 * Goals from the issue: (b) < 0.5 × by hand; (c) ≤ building the changed service + 5 s; (d) < 5 s.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Preview } from '../packages/contract/src/index.js';
import {
  callApi as call,
  type ControlPlane as Plane,
} from '../packages/server/src/test-support/control-plane-process.js';
import { makeTestRepo } from '../packages/server/src/test-support/git-repos.js';
import {
  deliver,
  pullRequestPayload,
  signedDelivery,
} from '../packages/server/src/test-support/github-webhooks.js';

const run = promisify(execFile);
const SECRET = 'bench-webhook-secret';
const REPO = 'bench/shop';

export interface PreviewBench {
  rows: [string, number, number][];
  goals: Record<string, { value: number; goal: string; met: boolean }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Every file of the example, as `path → content`, with `nonce` added to each build context. */
async function exampleFiles(shopDir: string, nonce: string): Promise<Record<string, string>> {
  const { stdout } = await run('find', ['.', '-type', 'f'], { cwd: shopDir });
  const files: Record<string, string> = {};
  for (const rel of stdout.split('\n').filter(Boolean)) {
    files[rel.slice(2)] = await readFile(path.join(shopDir, rel), 'utf8');
  }
  for (const context of ['db', 'api', 'web']) files[`${context}/.bench-nonce`] = nonce;
  return files;
}

function get(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** By hand: clone the commit, build, up, and wait until every service is healthy (or its job done). */
async function byHand(
  repoUrl: string,
  branch: string,
  project: string,
  composeUpAndWait: (project: string, file: string) => Promise<void>,
): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-hand-'));
  try {
    return await timed(async () => {
      await run('git', ['clone', '--quiet', '--depth', '1', '--branch', branch, repoUrl, dir]);
      await run('docker-compose', ['-p', project, '-f', path.join(dir, 'compose.yaml'), 'build', '-q']);
      await composeUpAndWait(project, path.join(dir, 'compose.yaml'));
    });
  } finally {
    await run('docker-compose', ['-p', project, '-f', path.join(dir, 'compose.yaml'), 'down', '-v']).catch(
      () => {},
    );
    await rm(dir, { recursive: true, force: true });
  }
}

/** BENCH_DEBUG=1: the environment's events from the last one saying `from`, with their times. */
async function printTimeline(plane: Plane, env: string, from: string): Promise<void> {
  const { items } = await call<{ items: { at: string; type: string; message: string }[] }>(
    plane,
    'GET',
    `/v1/environments/${env}/events`,
  );
  const start = items.map((e) => e.message).lastIndexOf(from);
  for (const e of items.slice(Math.max(0, start)))
    process.stderr.write(`  ${e.at.slice(11, 23)} ${e.type} ${e.message}\n`);
}

export async function benchPreviews(
  plane: Plane,
  shopDir: string,
  composeUpAndWait: (project: string, file: string) => Promise<void>,
): Promise<PreviewBench> {
  const repo = await makeTestRepo();
  const port = Number(new URL(plane.url).port);
  try {
    const nonce = `${Date.now()}-${Math.random()}`;
    const main = await repo.commit(await exampleFiles(shopDir, nonce), 'the shop');
    await call(plane, 'POST', '/v1/projects', {
      name: 'bench',
      repo: repo.url,
      forgeRepo: REPO,
      webhookSecret: SECRET,
    });
    const previews = async () =>
      (await call<{ items: Preview[] }>(plane, 'GET', '/v1/projects/bench/previews')).items;
    const waitReady = async (number: number, head: string) => {
      for (;;) {
        const p = (await previews()).find((x) => x.number === number);
        if (p?.state === 'failed') throw new Error(`preview #${number} failed: ${p.detail}`);
        if (p?.state === 'ready' && p.headSha === head) return;
        await sleep(50);
      }
    };
    const send = (number: number, action: 'opened' | 'synchronize', head: string) =>
      deliver(
        plane.url,
        signedDelivery(
          'pull_request',
          pullRequestPayload({ repo: REPO, number, action, headSha: head, baseSha: main }),
          SECRET,
        ),
      );

    // (a) the first PR: its images are new to Mayfly.
    const pr1 = await repo.commit({ 'README.md': 'first PR' }, 'first PR', { branch: 'one', pullRequest: 1 });
    process.stderr.write('previews (a): first PR…\n');
    const a = await timed(async () => {
      await send(1, 'opened', pr1);
      await waitReady(1, pr1);
    });
    const aHand = await byHand(repo.url, 'one', 'benchhanda', composeUpAndWait);

    // (b) a second PR, same contents: nothing to build.
    const pr2 = await repo.commit({ 'README.md': 'second PR' }, 'second PR', {
      branch: 'two',
      pullRequest: 2,
    });
    process.stderr.write('previews (b): second PR…\n');
    const b = await timed(async () => {
      await send(2, 'opened', pr2);
      await waitReady(2, pr2);
    });
    if (process.env.BENCH_DEBUG)
      await printTimeline(plane, 'bench-pr-2', `requested: commit ${pr2.slice(0, 12)}`);
    const bHand = await byHand(repo.url, 'two', 'benchhandb', composeUpAndWait);

    // (c) a push to the first PR changing the web service only.
    const server = await readFile(path.join(shopDir, 'web/server.py'), 'utf8');
    const push = await repo.commit({ 'web/server.py': `${server}\n# changed ${nonce}\n` }, 'change web', {
      branch: 'one',
      pullRequest: 1,
    });
    process.stderr.write('previews (c): a push changing one service…\n');
    const c = await timed(async () => {
      await send(1, 'synchronize', push);
      await waitReady(1, push);
    });
    if (process.env.BENCH_DEBUG)
      await printTimeline(plane, 'bench-pr-1', `update requested: commit ${push.slice(0, 12)}`);
    // What building that one service costs by hand, for the goal of (c).
    const webDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-web-'));
    await cp(path.join(shopDir, 'web'), webDir, { recursive: true });
    await writeFile(path.join(webDir, 'server.py'), `${server}\n# changed by hand ${nonce}\n`);
    const webBuild = await timed(() =>
      run('docker', ['build', '-q', '-t', 'mayfly-bench/web-by-hand', webDir]),
    );
    await rm(webDir, { recursive: true, force: true });
    await run('docker', ['rmi', 'mayfly-bench/web-by-hand']).catch(() => {});
    const cHand = await byHand(repo.url, 'one', 'benchhandc', composeUpAndWait);

    // (d) wake: a request to a sleeping preview, until the app answers it — alone on the engine
    // (the second PR's preview is torn down first), as the by-hand side is.
    await call(plane, 'DELETE', '/v1/environments/bench-pr-2');
    for (;;) {
      const { items } = await call<{ items: { name: string }[] }>(plane, 'GET', '/v1/environments');
      if (!items.some((e) => e.name === 'bench-pr-2')) break;
      await sleep(100);
    }
    await call(plane, 'POST', '/v1/environments/bench-pr-1/sleep');
    for (;;) {
      const env = await call<{ state: string }>(plane, 'GET', '/v1/environments/bench-pr-1');
      if (env.state === 'sleeping') break;
      await sleep(50);
    }
    process.stderr.write('previews (d): wake from sleep…\n');
    const host = `web--bench-pr-1.localhost:${port}`;
    const d = await timed(async () => {
      const status = await get(port, host);
      if (status !== 200) throw new Error(`the woken preview answered ${status}`);
    });
    if (process.env.BENCH_DEBUG) await printTimeline(plane, 'bench-pr-1', 'woken by a request');
    // By hand: docker-compose stop, then start and wait until healthy again.
    const dHand = await (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-hand-'));
      const file = path.join(dir, 'compose.yaml');
      try {
        await run('git', ['clone', '--quiet', '--depth', '1', repo.url, dir]);
        await run('docker-compose', ['-p', 'benchhandd', '-f', file, 'build', '-q']);
        await composeUpAndWait('benchhandd', file);
        await run('docker-compose', ['-p', 'benchhandd', '-f', file, 'stop']);
        return await timed(async () => {
          await run('docker-compose', ['-p', 'benchhandd', '-f', file, 'start']);
          await composeUpAndWait('benchhandd', file);
        });
      } finally {
        await run('docker-compose', ['-p', 'benchhandd', '-f', file, 'down', '-v']).catch(() => {});
        await rm(dir, { recursive: true, force: true });
      }
    })();

    await call(plane, 'DELETE', '/v1/projects/bench');
    return {
      rows: [
        ['preview (a) first PR, webhook → ready (s)', a, aHand],
        ['preview (b) second PR, no changes (s)', b, bHand],
        ['preview (c) push changing web (s)', c, cHand],
        ['preview (d) wake from sleep → 200 (s)', d, dHand],
      ],
      goals: {
        'b < 0.5 × by hand': { value: b / bHand, goal: '< 0.5', met: b / bHand < 0.5 },
        'c ≤ build of web + 5 s': {
          value: c,
          goal: `≤ ${(webBuild + 5).toFixed(2)} s (web builds in ${webBuild.toFixed(2)} s)`,
          met: c <= webBuild + 5,
        },
        'd < 5 s': { value: d, goal: '< 5 s', met: d < 5 },
      },
    };
  } finally {
    await repo.remove();
  }
}
