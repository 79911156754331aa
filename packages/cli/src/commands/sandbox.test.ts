/** `mayfly sandbox …` as users run it (the built CLI), against a real server and real Docker. */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SandboxInfo } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../server/src/test-support/test-server.js';
import { shellQuote } from './sandbox.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));
let t: TestServer;
let dir: string;

function mayfly(args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_'))),
    MAYFLY_URL: t.server.url,
    MAYFLY_TOKEN: t.token,
    MAYFLY_HOME: join(dir, 'home'),
    NO_COLOR: '1',
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: dir, env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

describe('mayfly sandbox', () => {
  let id: string;
  beforeAll(async () => {
    t = await startTestServer();
    dir = mkdtempSync(join(tmpdir(), 'mayfly-cli-sbx-'));
    const created = await mayfly(['sandbox', 'create', '--timeout', '10m', '--env', 'GREETING=hello']);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    id = created.stdout.trim();
  }, 300_000);
  afterAll(async () => {
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('create prints the id; exec passes output through and exits with the command’s code', async () => {
    expect(id).toMatch(/^[a-z0-9]+$/);
    const ok = await mayfly([
      'sandbox',
      'exec',
      id,
      '--',
      'sh',
      '-c',
      'echo "$GREETING $0"; echo err >&2',
      'it’s me',
    ]);
    expect(ok).toEqual({ code: 0, stdout: 'hello it’s me\n', stderr: 'err\n' });
    const failed = await mayfly([
      'sandbox',
      'exec',
      id,
      '--cwd',
      '/tmp',
      '--env',
      'X=1',
      '--',
      'sh',
      '-c',
      'pwd; echo $X; exit 9',
    ]);
    expect(failed).toMatchObject({ code: 9, stdout: '/tmp\n1\n' });
  });

  it('exec forwards stdin', async () => {
    const piped = await mayfly(['sandbox', 'exec', id, '--', 'tr', 'a-z', 'A-Z'], 'quiet words\n');
    expect(piped).toMatchObject({ code: 0, stdout: 'QUIET WORDS\n' });
  });

  it('cp copies a binary file in and out, byte for byte', async () => {
    const data = randomBytes(256 * 1024);
    writeFileSync(join(dir, 'in.bin'), data);
    const up = await mayfly(['sandbox', 'cp', 'in.bin', `${id}:/home/user/copy.bin`]);
    expect(up.code).toBe(0);
    const down = await mayfly(['sandbox', 'cp', `${id}:/home/user/copy.bin`, 'out.bin']);
    expect(down.code).toBe(0);
    expect(readFileSync(join(dir, 'out.bin')).equals(data)).toBe(true);
    const both = await mayfly(['sandbox', 'cp', 'in.bin', 'out.bin']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/exactly one side must be ID:\/path/);
  });

  it('ls lists it; kill ends it; ls --all shows why it ended', async () => {
    const listed = await mayfly(['sandbox', 'ls']);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+base\\s+running`, 'm'));
    const json = JSON.parse((await mayfly(['sandbox', 'ls', '--json'])).stdout) as { items: SandboxInfo[] };
    expect(json.items.map((s) => s.id)).toContain(id);
    const other = (await mayfly(['sandbox', 'create'])).stdout.trim();
    expect((await mayfly(['sandbox', 'kill', other])).code).toBe(0);
    expect((await mayfly(['sandbox', 'ls'])).stdout).not.toContain(other);
    const all = (await mayfly(['sandbox', 'ls', '--all'])).stdout;
    expect(all).toMatch(/MEMORY PEAK/);
    // Why it ended, and the most memory it used.
    expect(all).toMatch(
      new RegExp(`^${other}\\s+base\\s+ended \\(killed\\)\\s+.*\\d+(\\.\\d+)? [KMG]i?B\\s*$`, 'm'),
    );
    const gone = await mayfly(['sandbox', 'exec', other, '--', 'true']);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(/ended/);
  });

  it('template build makes a template of a folder: its sandboxes get its files, variables, workdir and limits', async () => {
    const folder = join(dir, 'tpl');
    mkdirSync(folder);
    writeFileSync(
      join(folder, 'Dockerfile'),
      'FROM mayfly/debian:bookworm\nCOPY . /opt/ctx/\nRUN echo from-template > /opt/marker\n',
    );
    writeFileSync(join(folder, '.dockerignore'), 'secret.txt\n');
    writeFileSync(join(folder, 'secret.txt'), 'not sent\n');
    const built = await mayfly([
      'template',
      'build',
      folder,
      '--name',
      'cli-tpl',
      '--env',
      'GREETING=from-tpl',
      '--memory',
      '256m',
      '--disk',
      '64m',
      '--workdir',
      '/work',
    ]);
    expect(built.stderr).toMatch(/building cli-tpl/);
    expect(built.code).toBe(0);
    expect(built.stdout).toMatch(/^cli-tpl ready \(mayfly-build\/sandbox:[0-9a-f]+\)$/m);
    expect((await mayfly(['template', 'ls'])).stdout).toMatch(
      /^cli-tpl\s+dockerfile\s+mayfly-build\S+\s+1 cpu, 256 MiB\s+runc\s+0\/0$/m,
    );

    const sbx = (await mayfly(['sandbox', 'create', '--template', 'cli-tpl'])).stdout.trim();
    const inside = await mayfly([
      'sandbox',
      'exec',
      sbx,
      '--',
      'sh',
      '-c',
      'cat /opt/marker; ls -A /opt/ctx | tr "\\n" " "; echo; echo "$GREETING"; pwd; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; touch /work/w && echo writable',
    ]);
    expect(inside.stdout).toBe(
      `from-template\n.dockerignore Dockerfile \nfrom-tpl\n/work\n${256 * 1024 * 1024}\nwritable\n`,
    );
    await mayfly(['sandbox', 'kill', sbx]);

    // A failed build changes nothing: the template stays as it was.
    writeFileSync(join(folder, 'Dockerfile'), 'FROM mayfly/debian:bookworm\nRUN exit 3\n');
    const failed = await mayfly(['template', 'build', folder, '--name', 'cli-tpl']);
    // (A request the server refuses is exit 2, as for every verb.)
    expect(failed.code).toBe(2);
    expect(failed.stderr).toMatch(/building template "cli-tpl" failed/);
    expect((await mayfly(['template', 'ls'])).stdout).toMatch(
      /^cli-tpl\s+dockerfile\s+mayfly-build\S+\s+1 cpu, 256 MiB/m,
    );

    // An image the engine has, named; one it lacks is refused with why.
    const named = await mayfly([
      'template',
      'build',
      '--image',
      'mayfly/debian:bookworm',
      '--name',
      'cli-img',
      '--json',
    ]);
    expect(JSON.parse(named.stdout)).toMatchObject({
      name: 'cli-img',
      source: 'image',
      image: 'mayfly/debian:bookworm',
    });
    const missing = await mayfly([
      'template',
      'build',
      '--image',
      'mayfly/no-such:image',
      '--name',
      'cli-none',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/not on this server's Docker Engine/);

    expect((await mayfly(['template', 'rm', 'cli-tpl'])).stdout).toBe('removed cli-tpl\n');
    expect((await mayfly(['template', 'rm', 'cli-img'])).code).toBe(0);
    const gone = await mayfly(['sandbox', 'create', '--template', 'cli-tpl']);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toMatch(/no sandbox template "cli-tpl"/);
  });

  it('refuses templates it cannot honour, with why', async () => {
    const put = (body: Record<string, unknown>) =>
      t.api<{ error: { message: string } }>('POST', '/v1/sandbox-templates', {
        image: 'mayfly/debian:bookworm',
        ...body,
      });
    expect((await put({ name: 'base' })).status).toBe(409);
    expect((await put({ name: 'x', user: '0' })).status).toBe(400);
    expect((await put({ name: 'x', workdir: '/proc/self' })).status).toBe(400);
    expect((await put({ name: 'x', workdir: '/a/../etc' })).status).toBe(400);
    expect((await put({ name: 'x', memoryMb: 256, diskMb: 200 })).body.error.message).toMatch(/2 × diskMb/);
    expect((await put({ name: 'x', bundle: 'b', image: 'i' })).status).toBe(400);
    // The test setup registers gVisor; where it is missing: sandboxes-gvisor.e2e.test.ts.
    const isolated = await put({ name: 'x-gvisor', isolation: 'gvisor' });
    expect(isolated.status).toBe(201);
    await t.api('DELETE', '/v1/sandbox-templates/x-gvisor');
    // The daemon would fetch an ADD <url> from the host's network: refused before any build.
    const hostile = join(dir, 'hostile');
    mkdirSync(hostile);
    writeFileSync(join(hostile, 'Dockerfile'), 'FROM mayfly/debian:bookworm\nADD http://127.0.0.1:9/x /x\n');
    const fetched = await put({ name: 'x-add', image: undefined, bundle: await t.upload(hostile) });
    expect(fetched.status).toBe(400);
    expect(fetched.body.error.message).toMatch(/building template "x-add" failed/);
    // Images whose own settings would undo a sandbox's limits: a volume (unbounded disk), Mayfly's labels.
    for (const [tag, line, why] of [
      ['mayfly-test/sbx-volume:1', 'VOLUME /data', /declares volumes \(\/data\)/],
      ['mayfly-test/sbx-label:1', 'LABEL mayfly.env=someone-else', /Mayfly's own labels \(mayfly\.env\)/],
    ] as const) {
      execFileSync('docker', ['build', '-q', '-t', tag, '-'], {
        input: `FROM mayfly/debian:bookworm\n${line}\n`,
      });
      try {
        const refused = await put({ name: 'x-image', image: tag });
        expect(refused.status).toBe(400);
        expect(refused.body.error.message).toMatch(why);
      } finally {
        execFileSync('docker', ['rmi', tag]);
      }
    }
    const names = (await t.api<{ items: { name: string }[] }>('GET', '/v1/sandbox-templates')).body.items.map(
      (i) => i.name,
    );
    expect(names).toEqual(['base', 'code']);
  });

  it('quotes words for the shell only where needed', () => {
    expect(shellQuote('ls')).toBe('ls');
    expect(shellQuote('/a/b.txt')).toBe('/a/b.txt');
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('$(rm -rf /)')).toBe("'$(rm -rf /)'");
  });
});
