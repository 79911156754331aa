/**
 * The server decides what a template may touch: a template comes inline (no host paths at all) or
 * as an uploaded bundle unpacked into the server's own work dir. Nothing the client names on the
 * server's disk is read; binds point at private copies no container can swap; host paths outside
 * need the operator's `allowHostPaths`, and a socket only when it is listed itself.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { makeProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

type ErrorReply = { error: { code: string; message: string; issues?: { path: string; message: string }[] } };

const containerOf = (envId: string, workload: string) => `mayfly-${envId}-${workload}-1`;
const dockerExec = (container: string, script: string) =>
  execFileSync('docker', ['exec', container, 'sh', '-c', script], { encoding: 'utf8' });

describe('what a template may touch', () => {
  let t: TestServer;
  let allowed: string;
  let sockets: net.Server[];
  beforeAll(async () => {
    allowed = await mkdtemp(path.join(os.tmpdir(), 'mayfly-allowed-'));
    await writeFile(path.join(allowed, 'shared.txt'), 'from the operator\n');
    // Two sockets in the allowed folder: one the operator lists by its own path, one not.
    sockets = await Promise.all(
      ['listed.sock', 'unlisted.sock'].map(
        (name) =>
          new Promise<net.Server>((resolve) => {
            const server = net.createServer(() => {});
            server.listen(path.join(allowed, name), () => resolve(server));
          }),
      ),
    );
    t = await startTestServer({ allowHostPaths: [allowed, path.join(allowed, 'listed.sock'), '/var/run'] });
  });
  afterAll(async () => {
    await t.close();
    for (const server of sockets) server.close();
    await rm(allowed, { recursive: true, force: true });
  });

  const project = makeProject;

  it('refuses a client-given directory, and any host path in an inline template', async () => {
    const viaDir = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: {
        filename: 'compose.yaml',
        content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["/var/run/docker.sock:/sock"]\n`,
        dir: '/',
      },
    });
    expect(viaDir.status).toBe(400);
    expect(viaDir.body.error.message).toMatch(/dir/);
    const inline = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: {
        filename: 'compose.yaml',
        content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["/var/run/docker.sock:/sock"]\n`,
      },
    });
    expect(inline.status).toBe(400);
    // This server allows /var/run (for the test below), so it is the socket rule that refuses.
    expect(inline.body.error.message).toContain('only a socket path the operator lists itself');
    const elsewhere = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: {
        filename: 'compose.yaml',
        content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["/etc:/host-etc:ro"]\n`,
      },
    });
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body.error.issues?.[0]?.message).toContain('outside');
    expect((await t.api<{ items: Environment[] }>('GET', '/v1/environments?all=1')).body.items).toEqual([]);
  });

  it('refuses host paths outside the bundle: absolute, ~, .., and the Docker socket', async () => {
    for (const volume of ['/etc:/x', '~/.ssh:/x', '../..:/x', '/var/run/docker.sock:/sock']) {
      const dir = await project({
        'compose.yaml': `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["${volume}"]\n`,
      });
      const bundle = await t.upload(dir);
      const res = await t.api<ErrorReply>('POST', '/v1/environments', {
        template: { filename: 'compose.yaml', bundle },
      });
      expect(res.status, volume).toBe(400);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a hostile bundle at upload: a link out, a path out, a device', async () => {
    const archives: [string, (pack: tar.Pack) => void][] = [
      ['link out', (p) => p.entry({ name: 'etc', type: 'symlink', linkname: '/etc' })],
      ['path out', (p) => p.entry({ name: '../../escape.txt' }, 'x')],
      [
        'through a link',
        (p) => {
          p.entry({ name: 'sub', type: 'symlink', linkname: '.' });
          p.entry({ name: 'sub/x.txt' }, 'x');
        },
      ],
      ['device', (p) => p.entry({ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 })],
    ];
    for (const [what, fill] of archives) {
      const pack = tar.pack();
      pack.entry({ name: 'compose.yaml' }, 'services: {}\n');
      fill(pack);
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const chunk of pack) chunks.push(chunk as Buffer);
      const res = await fetch(`${t.server.url}/v1/bundles`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/x-tar' },
        body: Buffer.concat(chunks),
      });
      expect(res.status, what).toBe(400);
      expect(((await res.json()) as ErrorReply).error.code).toBe('invalid_request');
    }
  });

  it('lets the operator allow a host directory, but a socket only by its own path', async () => {
    const dir = await project({
      'compose.yaml': `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    volumes: ["${allowed}:/shared:ro"]\n`,
    });
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'allowed',
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(201);
    const env = await t.waitForState('allowed', ['ready', 'failed']);
    expect(env.failure).toBeNull();
    expect(dockerExec(containerOf(env.id, 'web'), 'cat /shared/shared.txt')).toBe('from the operator\n');
    await t.api('DELETE', '/v1/environments/allowed');
    await t.waitForState('allowed', ['destroyed']);
    await rm(dir, { recursive: true, force: true });

    const withSocket = (name: string) =>
      t.api<ErrorReply>('POST', '/v1/environments', {
        template: {
          filename: 'compose.yaml',
          content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["${path.join(allowed, name)}:/run/app.sock"]\n`,
        },
      });
    // Shared host paths are read-only: a container that could write along one could swap part of
    // it for a link to / before another container's next start.
    const inline = (volume: string) =>
      t.api<ErrorReply>('POST', '/v1/environments', {
        template: {
          filename: 'compose.yaml',
          content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    volumes: ["${volume}"]\n`,
        },
      });
    const writable = await inline(`${allowed}:/shared`);
    expect(writable.status).toBe(400);
    expect(writable.body.error.message).toContain('read-only');
    // An allowed folder that holds the Docker socket would hand it out whole.
    const dockerDir = await inline('/var/run:/host-run:ro');
    expect(dockerDir.status).toBe(400);
    expect(dockerDir.body.error.message).toContain('docker.sock');

    const unlisted = await withSocket('unlisted.sock');
    expect(unlisted.status).toBe(400);
    expect(unlisted.body.error.message).toContain('socket');
    const listed = await withSocket('listed.sock');
    expect(listed.status, JSON.stringify(listed.body)).toBe(201);
    await t.api('DELETE', `/v1/environments/${(listed.body as unknown as Environment).id}`);
  });

  it('a container that swaps a bound folder for a link to / never gets the host root mounted', async () => {
    // `swap` binds the whole template folder read-write and replaces ./data by a link to /;
    // `web` starts after it, binding ./data. Docker resolves bind sources at start, following links.
    const dir = await project({
      'data/marker.txt': 'the real data\n',
      'compose.yaml': `
services:
  swap:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "rm -rf /work/data && ln -s / /work/data && ls -la /work"]
    volumes: [".:/work"]
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    restart: always
    volumes: ["./data:/mnt"]
    depends_on:
      swap: { condition: service_completed_successfully }
`,
    });
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'swap',
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(201);
    const env = await t.waitForState('swap', ['ready', 'failed']);
    expect(env.failure).toBeNull();
    const web = containerOf(env.id, 'web');
    expect(dockerExec(web, 'ls /mnt')).toBe('marker.txt\n');
    // and again after a restart, when Docker resolves the source anew
    execFileSync('docker', ['restart', '-t', '1', web]);
    expect(dockerExec(web, 'ls /mnt; cat /mnt/marker.txt')).toBe('marker.txt\nthe real data\n');
    // the swap happened, in the job's own view
    const swapLog = await t.api<string>('GET', '/v1/environments/swap/logs?service=swap');
    expect(swapLog.body).toMatch(/data -> \//);
    await t.api('DELETE', '/v1/environments/swap');
    await t.waitForState('swap', ['destroyed']);
    await rm(dir, { recursive: true, force: true });
  });

  it('builds from the uploaded copy, sending the builder only what .dockerignore lets through', async () => {
    const dir = await project({
      'compose.yaml': `services:\n  app:\n    build: ./app\n    command: ["testkit", "sleep"]\n    env_file: .env\n`,
      '.env': 'GREETING=hello from the env file\n',
      'app/Dockerfile': `FROM ${TESTKIT_IMAGE}\nCOPY . /app\n`,
      'app/.dockerignore': '.env\n.git\nsecret.txt\n**/*.key\n',
      'app/.env': 'SHOULD_NOT=ship\n',
      'app/secret.txt': 'no\n',
      'app/sub/private.key': 'no\n',
      'app/main.txt': `nonce ${Date.now()} ${Math.random()}\n`,
    });
    await mkdir(path.join(dir, 'app/.git'));
    await writeFile(path.join(dir, 'app/.git/HEAD'), 'ref: refs/heads/main\n');
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'built',
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(201);
    const env = await t.waitForState('built', ['ready', 'failed']);
    expect(env.failure).toBeNull();
    const app = containerOf(env.id, 'app');
    const files = dockerExec(app, 'cd /app && find . -type f | sort').trim().split('\n');
    expect(files).toEqual(['./.dockerignore', './Dockerfile', './main.txt']);
    expect(dockerExec(app, 'echo "$GREETING"')).toBe('hello from the env file\n');
    const image = execFileSync('docker', ['inspect', '-f', '{{.Config.Image}}', app], {
      encoding: 'utf8',
    }).trim();
    await t.api('DELETE', '/v1/environments/built');
    await t.waitForState('built', ['destroyed']);
    execFileSync('docker', ['rmi', image]);
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a Dockerfile that makes the daemon fetch a URL from the host network, naming the line', async () => {
    const dir = await project({
      'compose.yaml': 'services:\n  app:\n    build: .\n    command: ["testkit", "sleep"]\n',
      Dockerfile: `FROM ${TESTKIT_IMAGE}\n# harmless\nadd \\\n  http://127.0.0.1:9/secret /secret\n`,
    });
    const res = await t.api<ErrorReply>('POST', '/v1/environments', {
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    expect(res.status).toBe(400);
    expect(res.body.error.issues?.[0]).toMatchObject({ path: 'services.app.build' });
    expect(res.body.error.issues?.[0]?.message).toMatch(/^Dockerfile line 3: /);
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the data dir private: 0700, database and admin token 0600', async () => {
    expect((await stat(t.dataDir)).mode & 0o777).toBe(0o700);
    for (const file of ['mayfly.db', 'admin-token']) {
      expect((await stat(path.join(t.dataDir, file))).mode & 0o777, file).toBe(0o600);
    }
  });
});
