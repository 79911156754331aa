/**
 * The real bin, run as a child process against a stand-in of the API server
 * (end-to-end tests against the real server live with the server).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeServer, startFakeServer } from '../../sdk/src/test-support/fake-server.js';

const BIN = fileURLToPath(new URL('../bin/mayfly.js', import.meta.url));

let server: FakeServer;
let dir: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `mayfly args…` in the temp dir; MAYFLY_* of the outer environment never leak in. */
function mayfly(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_')));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        cwd: dir,
        env: { ...base, MAYFLY_HOME: join(dir, 'home'), NO_COLOR: '1', ...env },
        timeout: 30_000,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Points the CLI at the stand-in server with the right token. */
const remote = () => ({ MAYFLY_URL: server.url, MAYFLY_TOKEN: server.token });

beforeAll(async () => {
  server = await startFakeServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-cli-'));
  writeFileSync(join(dir, 'mayfly.yaml'), 'services:\n  web:\n    image: nginx\n');
  writeFileSync(join(dir, 'bad.yaml'), 'INVALID\n');
  writeFileSync(join(dir, 'fail.yaml'), 'FAIL\n');
});

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('mayfly up', () => {
  it('--json prints the ready Environment, and progress goes to stderr only', async () => {
    const run = await mayfly(
      ['up', '-f', 'mayfly.yaml', '--name', 'json-up', '--ttl', '2h', '-i', 'BRANCH=main', '--json'],
      remote(),
    );
    expect(run.code).toBe(0);
    const env = Environment.parse(JSON.parse(run.stdout));
    expect(env).toMatchObject({
      name: 'json-up',
      state: 'ready',
      urls: { web: 'http://web--json-up.localhost:7070' },
    });
    expect(env.id).toMatch(/^env_/);
    expect(run.stderr).toMatch(/building\s+building 1 image/);
    expect(run.stderr).toMatch(/ready\s+all services ready/);

    const post = server.requests.findLast((r) => r.method === 'POST');
    expect(post?.body).toEqual({
      name: 'json-up',
      ttl: '2h',
      inputs: { BRANCH: 'main' },
      template: { filename: 'mayfly.yaml', content: 'services:\n  web:\n    image: nginx\n', dir },
    });
  });

  it('prints the name and each service URL when ready', async () => {
    const run = await mayfly(['up', '--name', 'human-up'], remote());
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /^human-up is ready \(\d+\.\ds\)\n {2}web {2}http:\/\/web--human-up\.localhost:7070\n$/,
    );
    expect(run.stderr).toContain('creating human-up from mayfly.yaml');
  });

  it('an invalid template exits 2 with one `file:line:col  path  message` line per issue', async () => {
    const run = await mayfly(['up', '-f', 'bad.yaml'], remote());
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.split('\n')).toEqual([
      'mayfly: invalid template (2 problems):',
      'bad.yaml:3:5  services.web.image  expected a string',
      'bad.yaml:7:1  volumez  unknown key',
      '',
    ]);
  });

  it('an invalid template under --json also prints the error body on stdout', async () => {
    const run = await mayfly(['up', '-f', 'bad.yaml', '--json'], remote());
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({
      error: { code: 'invalid_template', issues: [{ line: 3 }, { line: 7 }] },
    });
  });

  it('a failed environment exits 1 with the step and the reason', async () => {
    const run = await mayfly(['up', '-f', 'fail.yaml', '--name', 'will-fail'], remote());
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('mayfly: will-fail failed at start web: web exited with code 1');
    const json = await mayfly(['up', '-f', 'fail.yaml', '--json'], remote());
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ state: 'failed', failure: { step: 'start web' } });
  });

  it('--no-wait returns the pending environment', async () => {
    const run = await mayfly(['up', '--name', 'no-wait', '--no-wait', '--json'], remote());
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ name: 'no-wait', state: 'pending' });
  });

  it('rejects bad input with exit code 2 before calling the server', async () => {
    const before = server.requests.length;
    const cases = [
      ['up', '--ttl', '2x'],
      ['up', '--name', 'Bad_Name'],
      ['up', '-i', 'novalue'],
      ['up', '-f', 'missing.yaml'],
      ['up', '--kind', 'nope'],
      ['up', '--bogus'],
      ['logs', 'x', '--tail', 'abc'],
      ['frobnicate'],
    ];
    const runs = await Promise.all(cases.map((args) => mayfly(args, remote())));
    runs.forEach((run, index) => {
      expect(run.code, cases[index]?.join(' ')).toBe(2);
      expect(run.stderr, cases[index]?.join(' ')).toMatch(/^mayfly: /);
    });
    expect(server.requests.length).toBe(before);
  });

  it('a name already taken exits 1 with the server message', async () => {
    const run = await mayfly(['up', '--name', 'json-up'], remote());
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('mayfly: an environment named json-up already exists\n');
  });
});

describe('mayfly ls, get, logs, destroy', () => {
  beforeAll(async () => {
    const run = await mayfly(['up', '--name', 'shown', '--ttl', '1h'], remote());
    expect(run.code).toBe(0);
  });

  it('ls prints a table', async () => {
    const run = await mayfly(['ls'], remote());
    expect(run.code).toBe(0);
    const [header, ...rows] = run.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME\s+STATE\s+AGE\s+EXPIRES\s+URLS$/);
    expect(rows.find((r) => r.startsWith('shown '))).toMatch(
      /^shown\s+ready\s+\d+s\s+in 59m\s+http:\/\/web--shown\.localhost:7070$/,
    );
  });

  it('ls --json prints an array of environments', async () => {
    const run = await mayfly(['ls', '--json'], remote());
    const list = Environment.array().parse(JSON.parse(run.stdout));
    expect(list.map((e) => e.name)).toContain('shown');
  });

  it('get shows details and the timeline', async () => {
    const run = await mayfly(['get', 'shown'], remote());
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^name\s+shown$/m);
    expect(run.stdout).toMatch(/^state\s+ready$/m);
    expect(run.stdout).toMatch(
      /^ {2}web\s+service\s+running\s+healthy\s+http:\/\/web--shown\.localhost:7070$/m,
    );
    expect(run.stdout).toMatch(/^timeline\n {2}\d\d:\d\d:\d\d\s+\+0\.0s\s+pending\s+environment created$/m);
    expect(run.stdout).toMatch(/ready\s+all services ready\n$/);
    const json = await mayfly(['get', 'shown', '--json'], remote());
    expect(JSON.parse(json.stdout)).toMatchObject({ name: 'shown', events: expect.any(Array) });
  });

  it('get of an unknown environment exits 1', async () => {
    const run = await mayfly(['get', 'nope'], remote());
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('mayfly: environment nope not found\n');
  });

  it('logs streams lines to stdout', async () => {
    const all = await mayfly(['logs', 'shown'], remote());
    expect(all.stdout).toBe('web | listening on :3000\nweb | GET / 200\ndb | database system is ready\n');
    const one = await mayfly(['logs', 'shown', 'web', '--tail', '1'], remote());
    expect(one.stdout).toBe('GET / 200\n');
    const json = await mayfly(['logs', 'shown', '--json'], remote());
    expect(
      json.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line))[2],
    ).toEqual({
      service: 'db',
      line: 'database system is ready',
    });
  });

  it('destroy waits until the environment is destroyed', async () => {
    const run = await mayfly(['destroy', 'shown'], remote());
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^shown destroyed \(\d+\.\ds\)\n$/);
    expect(run.stderr).toMatch(/destroying\s+destroy requested/);
    expect(run.stderr).toMatch(/destroyed\s+all resources removed/);
    expect(run.stderr).not.toContain('environment created');
    const ls = await mayfly(['ls', '--all', '--json'], remote());
    expect(JSON.parse(ls.stdout).find((e: Environment) => e.name === 'shown').state).toBe('destroyed');
  });
});

describe('server and token selection', () => {
  it('uses MAYFLY_URL and sends MAYFLY_TOKEN as a bearer token', async () => {
    const run = await mayfly(['ls', '--json'], { MAYFLY_URL: server.url, MAYFLY_TOKEN: server.token });
    expect(run.code).toBe(0);
    expect(server.requests.at(-1)?.authorization).toBe(`Bearer ${server.token}`);
  });

  it('--server wins over MAYFLY_URL, before or after the verb', async () => {
    const env = { MAYFLY_URL: 'http://127.0.0.1:9/', MAYFLY_TOKEN: server.token };
    expect((await mayfly(['--server', server.url, 'ls'], env)).code).toBe(0);
    expect((await mayfly(['ls', '--server', server.url], env)).code).toBe(0);
    const unreachable = await mayfly(['ls'], env);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain('mayfly: cannot reach the Mayfly server at http://127.0.0.1:9');
  });

  it('a wrong MAYFLY_TOKEN exits 1 with a hint', async () => {
    const run = await mayfly(['ls'], { MAYFLY_URL: server.url, MAYFLY_TOKEN: 'wrong' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('mayfly: missing or invalid token');
    expect(run.stderr).toContain('MAYFLY_TOKEN');
  });

  it('the admin-token file is not sent to a server other than the local default', async () => {
    const home = join(dir, 'home-with-token');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, 'admin-token'), `${server.token}\n`);
    const run = await mayfly(['ls'], { MAYFLY_URL: server.url, MAYFLY_HOME: home });
    expect(run.code).toBe(1);
    expect(server.requests.at(-1)?.authorization).toBeUndefined();
  });

  it('an invalid --server is a usage error', async () => {
    const run = await mayfly(['--server', 'not a url', 'ls']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('mayfly: invalid server URL "not a url"');
  });

  it('--version and --help exit 0', async () => {
    expect((await mayfly(['--version'])).stdout).toBe('0.1.0\n');
    const help = await mayfly(['up', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--no-wait');
  });
});
