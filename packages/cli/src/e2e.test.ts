/**
 * The `mayfly` command against a real server, the real Docker Engine and the real example:
 * `up` builds and starts the shop, its URL shows rows seeded into PostgreSQL, `destroy` leaves
 * nothing. Also: with no server configured, the CLI starts one in the background.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labelledObjects } from '../../server/src/test-support/leak-check.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/mayfly.js');
const SEEDED = [
  'Mayfly Coffee Mug',
  'Ephemeral T-Shirt',
  'Sticker Pack',
  'Preview Cap',
  'Throwaway Notebook',
];

describe('mayfly CLI end to end', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  const cli = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...process.env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token, ...env },
      maxBuffer: 16 * 1024 * 1024,
    });

  it('brings the example up; its URL shows the seeded data; destroy leaves nothing', async () => {
    const up = await cli(['up', '-f', 'examples/shop/compose.yaml', '--name', 'shop-e2e', '--json']);
    const env = JSON.parse(up.stdout) as Environment;
    expect(env).toMatchObject({ name: 'shop-e2e', state: 'ready', failure: null });
    expect(env.urls).toEqual({ web: `http://web--shop-e2e.localhost:${t.server.port}/` });

    const page = await t.viaGateway('web--shop-e2e.localhost');
    expect(page.status).toBe(200);
    for (const product of SEEDED) expect(page.text).toContain(product);

    const human = await cli(['get', 'shop-e2e']);
    expect(human.stdout).toContain('ready');
    expect(human.stdout).toContain(env.urls.web);

    // a reader that is gone before the CLI writes (`| head`, `| true`) ends it quietly, status 0
    const piped = await run(
      'bash',
      ['-o', 'pipefail', '-c', `"${process.execPath}" "${bin}" get shop-e2e | true`],
      {
        cwd: root,
        env: { ...process.env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token },
      },
    );
    expect(piped.stderr).not.toContain('EPIPE');

    const ls = JSON.parse((await cli(['ls', '--json'])).stdout) as Environment[];
    expect(ls.map((e) => e.name)).toContain('shop-e2e');

    const logs = await cli(['logs', 'shop-e2e', 'migrate']);
    expect(logs.stdout.length).toBeGreaterThan(0);

    const down = JSON.parse((await cli(['destroy', 'shop-e2e', '--json'])).stdout) as Environment;
    expect(down.state).toBe('destroyed');
    expect(labelledObjects().filter((o) => o.includes(env.id))).toEqual([]);
  }, 900_000);

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
