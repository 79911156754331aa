/** `mayfly sandbox …` as users run it (the built CLI), against a real server and real Docker. */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
    expect((await mayfly(['sandbox', 'ls', '--all'])).stdout).toMatch(
      new RegExp(`^${other}\\s+base\\s+ended \\(killed\\)`, 'm'),
    );
    const gone = await mayfly(['sandbox', 'exec', other, '--', 'true']);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(/ended/);
  });

  it('quotes words for the shell only where needed', () => {
    expect(shellQuote('ls')).toBe('ls');
    expect(shellQuote('/a/b.txt')).toBe('/a/b.txt');
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('$(rm -rf /)')).toBe("'$(rm -rf /)'");
  });
});
