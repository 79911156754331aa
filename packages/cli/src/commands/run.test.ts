/**
 * `mayfly run` for real: the bin against an in-process server and the Docker Engine. The command
 * it runs reaches the environment through the gateway, and the environment is gone afterwards
 * whatever happened.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../../server/src/test-support/test-server.js';
import { until } from '../../../server/src/test-support/until.js';
import { environmentVariables } from './run.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));
let t: TestServer;
let dir: string;

const env = () => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_'))),
  MAYFLY_URL: t.server.url,
  MAYFLY_TOKEN: t.token,
  MAYFLY_HOME: join(dir, 'home'),
});

function mayfly(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: dir, env: env(), timeout: 180_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** The environment's state, or `gone` once the server has forgotten it. */
async function stateOf(name: string): Promise<string> {
  const res = await t.api<Environment>('GET', `/v1/environments/${name}`);
  return res.status === 404 ? 'gone' : res.body.state;
}

beforeAll(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-run-'));
  writeFileSync(
    join(dir, 'compose.yaml'),
    [
      'services:',
      '  web-app:',
      `    image: ${TESTKIT_IMAGE}`,
      '    command: ["testkit", "http", "--port", "8080", "--text", "hello from web-app"]',
      '    ports: ["8080"]',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'broken.yaml'),
    `services:\n  migrate:\n    image: ${TESTKIT_IMAGE}\n    command: ["sh", "-c", "exit 4"]\n    x-mayfly: { job: true }\n`,
  );
  writeFileSync(
    join(dir, 'slow.yaml'),
    `services:\n  migrate:\n    image: ${TESTKIT_IMAGE}\n    command: ["sleep", "600"]\n    x-mayfly: { job: true }\n`,
  );
});

afterAll(async () => {
  await t.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('mayfly run', () => {
  it('names the variables after the services', () => {
    expect(
      environmentVariables({ name: 'ci-1', urls: { 'web-app': 'http://a/', api: 'http://b/' } }),
    ).toEqual({
      MAYFLY_ENV: 'ci-1',
      MAYFLY_URL_WEB_APP: 'http://a/',
      MAYFLY_URL_API: 'http://b/',
    });
  });

  it('runs the command against the environment, passes its output and exit code 0, and destroys it', async () => {
    // curl resolves *.localhost to loopback, as a CI job's HTTP client would.
    const run = await mayfly([
      'run',
      '-f',
      'compose.yaml',
      '--name',
      'run-ok',
      '--',
      'sh',
      '-c',
      'echo "env=$MAYFLY_ENV"; curl -sf "$MAYFLY_URL_WEB_APP"',
    ]);
    expect(run.stderr).toContain('running: sh -c');
    expect(run.stdout).toContain('env=run-ok');
    expect(run.stdout).toContain('hello from web-app');
    expect(run.code).toBe(0);
    expect(['destroyed', 'gone']).toContain(await stateOf('run-ok'));
  });

  it("exits with the command's code and destroys the environment when the command fails", async () => {
    const run = await mayfly(['run', '--name', 'run-fail', '--', 'sh', '-c', 'exit 7']);
    expect(run.code).toBe(7);
    expect(run.stderr).toContain('sh failed with exit code 7');
    expect(['destroyed', 'gone']).toContain(await stateOf('run-fail'));
  });

  it('--keep-on-failure keeps it and says how to destroy it', async () => {
    const run = await mayfly(['run', '--name', 'run-keep', '--keep-on-failure', '--', 'sh', '-c', 'exit 3']);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain('mayfly destroy run-keep');
    expect(await stateOf('run-keep')).toBe('ready');
    await t.api('DELETE', '/v1/environments/run-keep');
    await t.waitForState('run-keep', ['destroyed']);
  });

  it('an environment that never gets ready: exit 1 with the failing step, the command not run, the environment destroyed', async () => {
    const run = await mayfly([
      'run',
      '-f',
      'broken.yaml',
      '--name',
      'run-broken',
      '--',
      'sh',
      '-c',
      'echo should-not-run',
    ]);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(1);
    expect(run.stderr).toMatch(/run-broken failed at job:migrate: exited with code 4/);
    expect(run.stdout).not.toContain('should-not-run');
    expect(['destroyed', 'gone']).toContain(await stateOf('run-broken'));
  });

  it('SIGTERM reaches the command, and the environment is destroyed all the same', async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      [
        BIN,
        'run',
        '--name',
        'run-term',
        '--',
        'sh',
        '-c',
        'trap "echo got-term; exit 143" TERM; echo started; while :; do sleep 0.1; done',
      ],
      { cwd: dir, env: env() },
    );
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', () => {});
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await until('the command to start', () => (out.includes('started') ? true : undefined), 120_000);
      child.kill('SIGTERM');
      expect(await exited).toBe(143);
      expect(out).toContain('got-term');
      expect(['destroyed', 'gone']).toContain(await stateOf('run-term'));
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('SIGTERM while the environment comes up: the command never runs, the environment is destroyed', async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      [BIN, 'run', '-f', 'slow.yaml', '--name', 'run-early', '--', 'sh', '-c', 'echo should-not-run'],
      { cwd: dir, env: env() },
    );
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await until('the job to start', () => (err.includes('migrate: started') ? true : undefined), 120_000);
      child.kill('SIGTERM');
      expect(await exited).toBe(143);
      expect(out).not.toContain('should-not-run');
      expect(err).toContain('interrupted by SIGTERM before run-early was ready');
      expect(['destroyed', 'gone']).toContain(await stateOf('run-early'));
    } finally {
      child.kill('SIGKILL');
    }
  });
});
