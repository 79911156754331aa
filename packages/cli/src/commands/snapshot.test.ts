/**
 * `mayfly up --no-snapshot`, `mayfly get` and `mayfly snapshot ls|create|rm` for real: the bin
 * against an in-process server and the Docker Engine, with a template whose volume is seeded by
 * a job.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Snapshot } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { TESTKIT_IMAGE } from '../../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../../server/src/test-support/test-server.js';
import { runCli } from '../test-support/run-cli.js';

const TEMPLATE = `
services:
  db:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "exec sleep 100000"]
    volumes: ["data:/data"]
  seed:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo seeded >> /data/rows"]
    volumes: ["data:/data"]
    x-mayfly: { job: true }
volumes:
  data: {}
x-mayfly:
  data:
    data: { seededBy: seed }
`;

let t: TestServer;
let dir: string;
const mayfly = (args: string[]) =>
  runCli(args, {
    cwd: dir,
    env: { MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token, MAYFLY_HOME: join(dir, 'home') },
  });

beforeAll(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-snapshot-cli-'));
  writeFileSync(join(dir, 'compose.yaml'), TEMPLATE);
});
afterAll(async () => {
  for (const s of await listed()) await mayfly(['snapshot', 'rm', s.name, '--project', s.project]);
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function listed(): Promise<Snapshot[]> {
  const run = await mayfly(['snapshot', 'ls', '--json']);
  expect(run.code, run.stderr).toBe(0);
  return z.array(Snapshot).parse(JSON.parse(run.stdout));
}

describe('mayfly snapshot, up --no-snapshot, get', () => {
  it('says where the data came from, lists, makes and removes snapshots', async () => {
    expect((await mayfly(['snapshot', 'ls'])).stdout).toBe('no snapshots\n');
    const first = await mayfly(['up', '--name', 'snap-a']);
    expect(first.code, first.stderr).toBe(0);
    const [kept] = await listed();
    expect(kept).toMatchObject({ kind: 'seed', volume: 'data', state: 'ready' });
    expect((await mayfly(['get', 'snap-a'])).stdout).toMatch(
      new RegExp(`data data\\s+seeded by seed; kept as snapshot ${kept!.name}\\n`),
    );

    const second = await mayfly(['up', '--name', 'snap-b']);
    expect(second.code, second.stderr).toBe(0);
    expect((await mayfly(['get', 'snap-b'])).stdout).toMatch(
      new RegExp(`data data\\s+restored from snapshot ${kept!.name} \\(seed not run\\)\\n`),
    );
    const table = (await mayfly(['snapshot', 'ls'])).stdout.split('\n');
    expect(table[0]).toMatch(/^NAME\s+PROJECT\s+KIND\s+VOLUME\s+SIZE\s+FROM\s+STATE\s+LAST USED$/);
    expect(table[1]).toMatch(
      new RegExp(`^${kept!.name}\\s+default\\s+seed\\s+data\\s+\\d+ B\\s+snap-a\\s+ready\\s+`),
    );

    const forced = await mayfly(['up', '--name', 'snap-c', '--no-snapshot']);
    expect(forced.code, forced.stderr).toBe(0);
    expect((await mayfly(['get', 'snap-c'])).stdout).toMatch(/data data\s+seeded by seed; kept as snapshot /);
    expect((await listed()).map((s) => s.sourceEnvironment.name)).toEqual(['snap-c']);

    const made = await mayfly(['snapshot', 'create', 'snap-b', 'data', '--name', 'golden']);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toBe('golden\n');
    expect(made.stderr).toContain('templates name it as x-mayfly: { data: { data: { snapshot: golden } } }');
    const bad = await mayfly(['snapshot', 'create', 'snap-b', 'data', '--name', '../Golden']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('a snapshot name is 1 to 63 lowercase letters');
    const taken = await mayfly(['snapshot', 'create', 'snap-b', 'data', '--name', 'golden']);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain('project "default" already has a snapshot named "golden"');

    const removed = await mayfly(['snapshot', 'rm', 'golden']);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stderr).toBe('removed snapshot golden of project default\n');
    const again = await mayfly(['snapshot', 'rm', 'golden']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('project "default" has no snapshot named "golden"');
    for (const name of ['snap-a', 'snap-b', 'snap-c']) expect((await mayfly(['destroy', name])).code).toBe(0);
  });
});
