/**
 * The `mayfly` command against a real server, the real Docker Engine and the real example
 * (test-support/example-round-trip.ts; e2e.k8s.test.ts runs it on Kubernetes). Also: with no
 * server configured, the CLI starts one in the background.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labelledObjects } from '../../server/src/test-support/leak-check.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';
import { exampleRoundTrip, removeSnapshots } from './test-support/example-round-trip.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/mayfly.js');
describe('mayfly CLI end to end', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    // A snapshot outlives its environment: one a failed round trip left is removed here.
    await removeSnapshots(cli);
    await t.close();
  });

  const cli = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...process.env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token, ...env },
      maxBuffer: 16 * 1024 * 1024,
    });

  it('brings the example up; its URL shows the seeded data; destroy leaves nothing', async () => {
    await exampleRoundTrip({
      cli,
      port: t.server.port,
      name: 'shop-e2e',
      leftOf: (envId) => labelledObjects().filter((o) => o.includes(envId)),
    });
  }, 900_000);

  it('a reader gone before the CLI writes (`| head`, `| true`) ends it quietly, status 0', async () => {
    const piped = await run('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${bin}" ls | true`], {
      cwd: root,
      env: { ...process.env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token },
    });
    expect(piped.stderr).not.toContain('EPIPE');
  });

  it('reports a bad template with file, line and field and exits 2', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bad-'));
    const file = path.join(dir, 'compose.yaml');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(file, 'services:\n  web:\n    image: x\n    ports: ["not-a-port"]\n'),
    );
    const err = (await cli(['up', '-f', file]).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/compose\.yaml:4:\d+\s+services\.web\.ports/);
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a local server in the background when none is configured', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'mayfly-home-'));
    const port = await freePort();
    const env: Record<string, string> = {
      MAYFLY_HOME: home,
      MAYFLY_PORT: String(port),
      MAYFLY_URL: '',
      MAYFLY_TOKEN: '',
    };
    try {
      const first = await cli(['ls', '--json'], env);
      expect(first.stderr).toContain(`started a local Mayfly server at http://127.0.0.1:${port}`);
      expect(JSON.parse(first.stdout)).toEqual([]);
      // the second command finds it running and uses the admin token it wrote
      const second = await cli(['ls'], env);
      expect(second.stderr).not.toContain('started');
    } finally {
      const pid = Number(await readFile(path.join(home, 'server.pid'), 'utf8').catch(() => '0'));
      if (pid) {
        process.kill(pid, 'SIGTERM');
        while (isAlive(pid)) await new Promise((r) => setTimeout(r, 100));
      }
      await rm(home, { recursive: true, force: true });
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
