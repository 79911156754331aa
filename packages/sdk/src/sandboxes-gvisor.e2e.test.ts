/**
 * Sandboxes of a `gvisor` template: the same SDK calls, run in gVisor's kernel; what hostile code
 * tries is stopped (a fork bomb or a memory bomb ends its own sandbox, nobody else's); a server
 * whose Engine cannot run gVisor refuses such templates with why. Against a real server and real
 * Docker with Debian's runsc (registered by the test setup, scripts/ensure-gvisor.sh).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { E2bPaths } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';
import { InvalidRequestError, Sandbox } from './index.js';

describe('sandboxes under gVisor', () => {
  let t: TestServer;
  const connection = () => ({ baseUrl: t.server.url, token: t.token });
  const create = (options: Parameters<typeof Sandbox.create>[0] = {}) =>
    Sandbox.create({ ...connection(), template: 'gv', ...options });
  const ended = async (sbx: Sandbox) => {
    let info = await sbx.getInfo();
    for (let i = 0; i < 150 && info.state !== 'ended'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      info = await sbx.getInfo();
    }
    return info;
  };
  beforeAll(async () => {
    t = await startTestServer();
    const made = await t.api('POST', '/v1/sandbox-templates', {
      name: 'gv',
      image: TESTKIT_IMAGE,
      isolation: 'gvisor',
      memoryMb: 256,
      diskMb: 64,
      pids: 128,
    });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
  }, 60_000);
  afterAll(async () => {
    for (const s of await Sandbox.list(connection()))
      await (await Sandbox.connect(s.id, connection())).kill();
    await t.close();
  });

  it('runs commands and files as under runc, in gVisor’s kernel', async () => {
    const sbx = await create();
    const run = await sbx.commands.run('dmesg | head -1; echo out; echo err >&2; exit 4').catch((e) => e);
    expect(run).toMatchObject({ exitCode: 4, stdout: expect.stringMatching(/Starting gVisor.*\nout\n$/s) });
    const bytes = randomBytes(256 * 1024);
    await sbx.files.write('blob.bin', bytes);
    expect(Buffer.from(await sbx.files.read('blob.bin', { format: 'bytes' })).equals(bytes)).toBe(true);
    await sbx.kill();
  });

  it('terminals and directory watches work in gVisor’s kernel too', async () => {
    const sbx = await create();
    try {
      const headers = { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' };
      const shown = await fetch(`${t.server.url}/v1/sandboxes/${sbx.id}/processes`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ cmd: 'tty; stty size', pty: { cols: 90, rows: 30 } }),
      });
      const screen = (await shown.text())
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { type: string; data?: string })
        .map((e) => (e.type === 'pty' ? Buffer.from(e.data!, 'base64').toString() : ''))
        .join('');
      expect(screen).toMatch(/^\/dev\/pts\/\d+\r\n30 90\r\n$/);

      // A watch, through the E2B data plane (the only API that has one).
      const key = await t.api<{ token: string }>('POST', '/v1/tokens', {
        name: 'gv',
        scope: 'write',
        format: 'e2b',
      });
      const info = (await (
        await fetch(`${t.server.url}${E2bPaths.api}/sandboxes/${sbx.id}`, {
          headers: { 'x-api-key': key.body.token },
        })
      ).json()) as { envdAccessToken: string };
      const watchers = (method: string, body: unknown) =>
        fetch(`${t.server.url}${E2bPaths.sandbox}/filesystem.Filesystem/${method}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'e2b-sandbox-id': sbx.id,
            'x-access-token': info.envdAccessToken,
          },
          body: JSON.stringify(body),
        }).then(
          async (r) => (await r.json()) as { watcherId?: string; events?: { name: string; type: string }[] },
        );
      await sbx.commands.run('mkdir -p watched');
      const { watcherId } = await watchers('CreateWatcher', { path: 'watched' });
      expect(watcherId).toBeTruthy();
      await sbx.commands.run('echo x > watched/made.txt');
      const seen: { name: string; type: string }[] = [];
      for (let i = 0; i < 100 && !seen.some((e) => e.name === 'made.txt'); i++) {
        seen.push(...((await watchers('GetWatcherEvents', { watcherId })).events ?? []));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(seen).toContainEqual({ name: 'made.txt', type: 'EVENT_TYPE_CREATE' });
      await watchers('RemoveWatcher', { watcherId });
    } finally {
      await sbx.kill();
    }
  });

  it('a fork bomb ends its own sandbox (gVisor’s kernel runs out of host threads); the neighbour and the host go on', async () => {
    const neighbour = await create();
    const bomb = await create();
    await bomb.commands.run('f() { f | f & }; f; sleep 100', { timeoutMs: 10_000 }).catch(() => {});
    const info = await ended(bomb);
    expect(info).toMatchObject({ state: 'ended' });
    expect(['error', 'oom']).toContain(info.endedReason);
    expect((await neighbour.commands.run('echo alive')).stdout).toBe('alive\n');
    expect(execFileSync('sh', ['-c', 'echo host-ok'], { encoding: 'utf8' })).toBe('host-ok\n');
    await neighbour.kill();
  });

  it('a memory bomb ends its sandbox with oom recorded', async () => {
    const sbx = await create();
    await sbx.commands
      .run(`perl -e '$x = "a" x (1 << 20); @a = (); push @a, $x . $_ for 1 .. 100000'`, { timeoutMs: 30_000 })
      .catch(() => {});
    const info = await ended(sbx);
    expect(info).toMatchObject({ state: 'ended', endedReason: 'oom' });
    expect(execFileSync('sh', ['-c', 'echo host-ok'], { encoding: 'utf8' })).toBe('host-ok\n');
  });

  it('a gvisor template with more than 512 pids is refused (its host limit is ten times that)', async () => {
    const refused = await t.api<{ error: { message: string } }>('POST', '/v1/sandbox-templates', {
      name: 'gv-many',
      image: TESTKIT_IMAGE,
      isolation: 'gvisor',
      pids: 4096,
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/at most 512 pids/);
  });

  it('an allow-list is refused (gVisor has no network here), with why', async () => {
    const refused = await create({ allowOut: ['10.0.0.0/8'] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidRequestError);
    expect((refused as Error).message).toMatch(/runs under gvisor, which has no network here/);
  });

  it('a server whose Engine cannot run gVisor refuses gvisor templates, saying why; never runs them under runc', async () => {
    const other = await startTestServer({ sandboxGvisorRuntime: 'mayfly-no-such-runtime' });
    try {
      const refused = await other.api<{ error: { message: string } }>('POST', '/v1/sandbox-templates', {
        name: 'gv',
        image: TESTKIT_IMAGE,
        isolation: 'gvisor',
      });
      expect(refused.status).toBe(400);
      expect(refused.body.error.message).toMatch(
        /cannot run gvisor isolation \(it has: runc\): the Docker Engine has no "mayfly-no-such-runtime" runtime/,
      );
      expect((await other.api('GET', '/v1/sandbox-templates')).body).not.toMatchObject({
        items: expect.arrayContaining([expect.objectContaining({ name: 'gv' })]),
      });
    } finally {
      await other.close();
    }
  });
});
