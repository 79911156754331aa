/**
 * The real `mayfly` bin, run as a child process against a real in-process server and the real
 * Docker Engine, with templates on the test image (`mayfly-test/testkit`). One server is shared by
 * the whole file, and environments are reused across cases, which run in order.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreatedToken, Environment, Token } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TESTKIT_IMAGE } from '../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';

const BIN = fileURLToPath(new URL('../bin/mayfly.js', import.meta.url));

let t: TestServer;
let dir: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The outer environment without MAYFLY_*: the developer's own settings never leak in. */
function baseEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_')));
  return { ...base, MAYFLY_HOME: join(dir, 'home'), NO_COLOR: '1', ...env };
}

/** Runs `mayfly args…` in `cwd` (default: the temp dir) and resolves when it exits. */
function mayfly(args: string[], env: Record<string, string> = {}, cwd = dir): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd, env: baseEnv(env), timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A `mayfly` that keeps running (logs -f): its output so far, and its exit. */
interface Streaming {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function mayflyStreaming(args: string[], env: Record<string, string> = {}): Streaming {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: dir, env: baseEnv(env) });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  // Never outlive the file, whatever a failed assertion left running.
  streams.push(child);
  return { child, stdout: () => out, stderr: () => err, exited };
}
const streams: ChildProcess[] = [];

/** Points the CLI at the test server with its admin token. */
const remote = () => ({ MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token });

/** The id of the container of `service` in environment `envId`, found by label. */
function containerOf(envId: string, service: string): string {
  const id = execFileSync(
    'docker',
    ['ps', '-q', '--filter', `label=mayfly.env=${envId}`, '--filter', `label=mayfly.service=${service}`],
    { encoding: 'utf8' },
  ).trim();
  expect(id, `container of ${service} in ${envId}`).toMatch(/^[0-9a-f]+$/);
  return id;
}

/** A TCP listener that counts connections and answers none: proof that a command never called a server. */
async function connectionCounter(): Promise<{
  url: string;
  count: () => number;
  close: () => Promise<void>;
}> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    count: () => count,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function write(path: string, text: string): void {
  mkdirSync(join(dir, path, '..'), { recursive: true });
  writeFileSync(join(dir, path), text);
}

/** Two long-running services with names of different lengths, so the server pads `web` in merged logs. */
const APP = `services:
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    ports: ["8080"]
  ticker:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.2; done"]
`;

beforeAll(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-cli-'));
  write('app/compose.yaml', APP);
  // `mayfly up` with no -f finds this one in the current directory.
  write(
    'plain/mayfly.yaml',
    `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: testkit http --port 8080\n    ports: [8080]\n`,
  );
  write(
    'bad/compose.yaml',
    `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    ports: ["not-a-port"]\n    volumez: []\n`,
  );
  write(
    'fail/compose.yaml',
    `services:
  migrate:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo boom >&2; exit 3"]
    x-mayfly:
      job: true
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    depends_on:
      migrate:
        condition: service_completed_successfully
`,
  );
});

afterAll(async () => {
  for (const child of streams)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  // Destroys what the cases left (and what a failed case left half-way), then stops.
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mayfly up', () => {
  it('--json prints the ready Environment; the folder is uploaded; progress goes to stderr only', async () => {
    const run = await mayfly(
      ['up', '-f', 'app/compose.yaml', '--name', 'shown', '--ttl', '1h', '-i', 'BRANCH=main', '--json'],
      remote(),
    );
    expect(run.code, run.stderr).toBe(0);
    const env = Environment.parse(JSON.parse(run.stdout));
    expect(env).toMatchObject({ name: 'shown', state: 'ready', templateFile: 'compose.yaml' });
    expect(env.urls).toEqual({ web: `http://web--shown.localhost:${t.server.port}/` });
    const stderr = run.stderr.split('\n');
    expect(stderr.slice(0, 3)).toEqual([
      'uploading app',
      expect.stringMatching(/^uploaded app \(1 file, 2 KiB\) in \d+\.\ds$/),
      'creating shown from compose.yaml',
    ]);
    expect(run.stderr).toMatch(/^ +\d+\.\ds {2}creating {4}/m);
    expect(run.stderr).toMatch(/^ +\d+\.\ds {2}ready {7}/m);
    const page = await t.viaGateway('web--shown.localhost');
    expect(page).toMatchObject({ status: 200, text: expect.stringContaining('hello from') });
  });

  it('with no -f finds the template in the current folder, names the environment after the folder and prints each URL', async () => {
    const run = await mayfly(['up'], remote(), join(dir, 'plain'));
    expect(run.code, run.stderr).toBe(0);
    const name = /^(plain-[a-z0-9]+) is ready/.exec(run.stdout)?.[1];
    expect(name, run.stdout).toBeDefined();
    expect(run.stdout).toBe(
      `${name} is ready (${/\((\d+\.\ds)\)/.exec(run.stdout)?.[1]})\n  web  http://web--${name}.localhost:${t.server.port}/\n`,
    );
    expect(run.stderr).toContain(`creating ${name} from mayfly.yaml`);
  });

  it('an invalid template exits 2 with one `file:line:col  path  message` line per issue', async () => {
    const [human, json] = await Promise.all([
      mayfly(['up', '-f', 'bad/compose.yaml'], remote()),
      mayfly(['up', '-f', 'bad/compose.yaml', '--json'], remote()),
    ]);
    expect(human.code, human.stderr).toBe(2);
    expect(human.stdout).toBe('');
    const lines = human.stderr.split('\n').filter((l) => !l.startsWith('upload'));
    expect(lines[0]).toMatch(/^mayfly: .*invalid template/);
    expect(lines).toContainEqual(
      expect.stringMatching(/^compose\.yaml:4:13 {2}services\.web\.ports\[0\] {2}invalid port "not-a-port"/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^compose\.yaml:5:5 {2}services\.web\.volumez {2}unknown key/),
    );

    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({
      error: {
        code: 'invalid_template',
        issues: expect.arrayContaining([expect.objectContaining({ line: 4 })]),
      },
    });
  });

  it('a failed environment exits 1 with the step and the reason', async () => {
    const [human, json] = await Promise.all([
      mayfly(['up', '-f', 'fail/compose.yaml', '--name', 'will-fail'], remote()),
      mayfly(['up', '-f', 'fail/compose.yaml', '--json'], remote()),
    ]);
    expect(human.code, human.stderr).toBe(1);
    // The reason ends with what the job printed, indented under the summary.
    expect(human.stderr).toContain('mayfly: will-fail failed at job:migrate: exited with code 3\n  boom\n');
    expect(human.stderr).toContain('see: mayfly get will-fail   mayfly logs will-fail');
    expect(json.code).toBe(1);
    const failed = Environment.parse(JSON.parse(json.stdout));
    expect(failed).toMatchObject({
      state: 'failed',
      failure: { step: 'job:migrate', reason: expect.stringMatching(/^exited with code 3\nboom/) },
    });
    expect(failed.name).toMatch(/^fail-/);
  });

  it('--no-wait returns the pending environment', async () => {
    const run = await mayfly(
      ['up', '-f', 'plain/mayfly.yaml', '--name', 'no-wait', '--no-wait', '--json'],
      remote(),
    );
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ name: 'no-wait', state: 'pending' });
  });

  it('rejects bad input with exit code 2 before calling the server', async () => {
    const counter = await connectionCounter();
    try {
      const cases = [
        ['up', '--ttl', '2x'],
        ['up', '--name', 'Bad_Name'],
        ['up', '--project', 'Nope!'],
        ['up', '-i', 'novalue'],
        ['up', '-f', 'missing.yaml'],
        ['up', '-f', 'app/compose.yaml', '--root', 'plain'],
        ['up', '-f', 'app/compose.yaml', '--root', 'nowhere'],
        ['up', '--kind', 'nope'],
        ['up', '--bogus'],
        ['logs', 'x', '--tail', 'abc'],
        ['logs', 'x', '--tail', '-1'],
        ['logs', 'x', '--tail', '1e3'],
        ['token', 'create', 'x', '--scope', 'root'],
        ['token', 'create', 'x'],
        ['token', 'create', 'x', '--scope', 'read', '--ttl', 'soon'],
        ['token', 'create', 'evil\u001b[2J', '--scope', 'read'],
        ['token', 'create', 'x', '--scope', 'read', '--project', 'Not A Project'],
        ['frobnicate'],
      ];
      const runs = await Promise.all(
        cases.map((args) => mayfly(args, { MAYFLY_URL: counter.url, MAYFLY_TOKEN: 'x' })),
      );
      runs.forEach((run, index) => {
        expect(run.code, `${cases[index]?.join(' ')}: ${run.stderr}`).toBe(2);
        expect(run.stderr, cases[index]?.join(' ')).toMatch(/^mayfly: /);
      });
      expect(counter.count()).toBe(0);
    } finally {
      await counter.close();
    }
  });

  it('a name already taken exits 1 with the server message', async () => {
    const run = await mayfly(['up', '-f', 'plain/mayfly.yaml', '--name', 'shown'], remote());
    expect(run.code).toBe(1);
    expect(run.stderr.split('\n').filter((l) => l.startsWith('mayfly:'))).toEqual([
      expect.stringMatching(/^mayfly: .*shown.*(exists|taken)/),
    ]);
  });

  it('builds from the uploaded folder: an env file its .dockerignore lists is sent, an ignored file is not, and neither is in the image', async () => {
    write(
      'built/compose.yaml',
      `services:
  app:
    build: .
    env_file: secret.env
    command: ["sh", "-c", "ls -A /app; echo secret=$$SECRET; exec testkit sleep"]
`,
    );
    write('built/Dockerfile', `FROM ${TESTKIT_IMAGE}\nCOPY . /app\n`);
    write('built/.dockerignore', 'secret.env\nignored.txt\n');
    write('built/secret.env', 'SECRET=from-env-file\n');
    write('built/ignored.txt', 'must stay here\n');
    write('built/kept.txt', 'sent and built\n');
    const run = await mayfly(['up', '-f', 'built/compose.yaml', '--name', 'built', '--json'], remote());
    expect(run.code, run.stderr).toBe(0);
    // compose.yaml, Dockerfile, .dockerignore, kept.txt and the forced secret.env; not ignored.txt.
    expect(run.stderr).toMatch(/^uploaded built \(5 files, /m);
    let lines: string[] = [];
    await vi.waitFor(
      async () => {
        lines = (await mayfly(['logs', 'built', 'app'], remote())).stdout.split('\n');
        expect(lines).toContain('secret=from-env-file');
      },
      { timeout: 20_000, interval: 200 },
    );
    expect(lines).toContain('kept.txt');
    expect(lines).toContain('Dockerfile');
    expect(lines).not.toContain('secret.env');
    expect(lines).not.toContain('ignored.txt');
  });

  it("a folder past the server's bundle limit is refused with the server's message while it streams", async () => {
    const small = await startTestServer({ bundleMaxBytes: 256 * 1024 });
    try {
      write('big/compose.yaml', `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n`);
      // Random bytes: gzip cannot shrink them below the limit.
      writeFileSync(join(dir, 'big', 'blob.bin'), randomBytes(4 * 1024 * 1024));
      const run = await mayfly(['up', '-f', 'big/compose.yaml'], {
        MAYFLY_URL: small.server.url,
        MAYFLY_TOKEN: small.token,
      });
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toMatch(/^mayfly: .*larger than the limit of 262144 bytes/m);
      expect(run.stderr).not.toContain('cannot reach');
      expect((await small.api<{ items: unknown[] }>('GET', '/v1/environments')).body.items).toEqual([]);
    } finally {
      await small.close();
    }
  });

  it('--root sends a folder above the template, for paths that lie above it', async () => {
    write('nested/shared.env', 'GREETING=hi-from-root\n');
    write(
      'nested/deploy/compose.yaml',
      `services:
  echo:
    image: ${TESTKIT_IMAGE}
    env_file: ../shared.env
    command: ["sh", "-c", "echo greeting=$$GREETING; exec testkit sleep"]
`,
    );
    const [without, withRoot] = await Promise.all([
      mayfly(['up', '-f', 'nested/deploy/compose.yaml'], remote()),
      mayfly(['up', '-f', 'nested/deploy/compose.yaml', '--root', 'nested', '--json'], remote()),
    ]);
    expect(without.code, without.stderr).toBe(2);
    expect(without.stderr).toContain(
      'mayfly: note: env-file nested/shared.env is outside nested/deploy and is not sent; pass --root',
    );
    expect(without.stderr).toMatch(/^compose\.yaml:4:\d+ {2}services\.echo\.env_file/m);

    expect(withRoot.code, withRoot.stderr).toBe(0);
    const env = Environment.parse(JSON.parse(withRoot.stdout));
    expect(env).toMatchObject({ state: 'ready', templateFile: 'deploy/compose.yaml' });
    expect(env.name).toMatch(/^deploy-/);
    await vi.waitFor(
      async () => {
        const logs = await mayfly(['logs', env.name, 'echo'], remote());
        expect(logs.stdout).toBe('greeting=hi-from-root\n');
      },
      { timeout: 20_000, interval: 200 },
    );
  });
});

describe('mayfly ls, get, logs', () => {
  it('ls prints a table, --json an array', async () => {
    const [run, json] = await Promise.all([mayfly(['ls'], remote()), mayfly(['ls', '--json'], remote())]);
    expect(run.code).toBe(0);
    const [header, ...rows] = run.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME\s+STATE\s+AGE\s+EXPIRES\s+URLS$/);
    expect(rows.find((r) => r.startsWith('shown '))).toMatch(
      new RegExp(
        `^shown\\s+ready\\s+\\d+[sm]\\s+in 5\\dm\\s+http://web--shown\\.localhost:${t.server.port}/$`,
      ),
    );
    expect(
      Environment.array()
        .parse(JSON.parse(json.stdout))
        .map((e) => e.name),
    ).toContain('shown');
  });

  it('get shows details and the timeline; an unknown one exits 1', async () => {
    const [run, json, unknown] = await Promise.all([
      mayfly(['get', 'shown'], remote()),
      mayfly(['get', 'shown', '--json'], remote()),
      mayfly(['get', 'nope'], remote()),
    ]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^name\s+shown$/m);
    expect(run.stdout).toMatch(/^state\s+ready$/m);
    expect(run.stdout).toMatch(/^template\s+compose\.yaml$/m);
    expect(run.stdout).toMatch(
      new RegExp(`^ {2}web\\s+service\\s+running\\s+.*http://web--shown\\.localhost:${t.server.port}/$`, 'm'),
    );
    expect(run.stdout).toMatch(/^ {2}ticker\s+service\s+running/m);
    expect(run.stdout).toMatch(/^timeline\n {2}\d\d:\d\d:\d\d\s+\+0\.0s\s+pending\s+\S/m);
    expect(run.stdout).toMatch(/ready\s+\S.*\n$/);
    expect(JSON.parse(json.stdout)).toMatchObject({ name: 'shown', events: expect.any(Array) });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('mayfly: no environment "nope"\n');
  });

  it('logs prints merged lines; --json names the service of every line, padded or not', async () => {
    const [all, json] = await Promise.all([
      mayfly(['logs', 'shown'], remote()),
      mayfly(['logs', 'shown', '--json'], remote()),
    ]);
    expect(all.code, all.stderr).toBe(0);
    // The real server pads names to the longest one, as Compose does.
    expect(all.stdout).toContain('web    | testkit http listening on :8080\n');
    expect(all.stdout).toMatch(/^ticker \| tick \d+$/m);
    const objects = json.stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { service: string | null; line: string });
    expect(objects.length).toBeGreaterThan(2);
    for (const o of objects) {
      expect(o.service === 'web' || o.service === 'ticker', JSON.stringify(o)).toBe(true);
      if (o.service === 'ticker') expect(o.line).toMatch(/^tick \d+$/);
    }
    expect(objects).toContainEqual({ service: 'web', line: 'testkit http listening on :8080' });
  });

  it('logs of one service, --tail N, --tail 0 and --tail all', async () => {
    const [one, none, all] = await Promise.all([
      mayfly(['logs', 'shown', 'ticker', '--tail', '1'], remote()),
      mayfly(['logs', 'shown', '--tail', '0'], remote()),
      mayfly(['logs', 'shown', 'web', '--tail', 'all'], remote()),
    ]);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/^tick \d+\n$/);
    expect(none).toMatchObject({ code: 0, stdout: '' });
    expect(all).toMatchObject({ code: 0, stdout: 'testkit http listening on :8080\n' });
  });

  it('logs -f --tail 0 shows only lines written after the request, and ends on SIGINT', async () => {
    const env = Environment.parse(JSON.parse((await mayfly(['get', 'shown', '--json'], remote())).stdout));
    const web = containerOf(env.id, 'web');
    const follow = mayflyStreaming(['logs', 'shown', 'web', '-f', '--tail', '0', '--json'], remote());
    // Until the stream is open, a line written now could come before it: write until one shows.
    let written = 0;
    await vi.waitFor(
      () => {
        execFileSync('docker', ['exec', web, 'sh', '-c', `echo late ${++written} >> /proc/1/fd/1`]);
        expect(follow.stdout()).toContain('"line":"late');
      },
      { timeout: 20_000, interval: 300 },
    );
    const seen = follow
      .stdout()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { service: string; line: string });
    // Nothing from before the request (the `listening` line), only late lines, in order.
    expect(
      seen.every((o) => o.service === 'web' && /^late \d+$/.test(o.line)),
      follow.stdout(),
    ).toBe(true);
    const numbers = seen.map((o) => Number(o.line.slice(5)));
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    follow.child.kill('SIGINT');
    expect(await follow.exited).toEqual({ code: 0, signal: null });
    expect(follow.stderr()).toBe('');
  });
});

describe('mayfly token, and scopes', () => {
  let reader: string;

  it('token create prints the token once (alone on stdout), ls lists it, revoke revokes it', async () => {
    const [created, json] = await Promise.all([
      mayfly(['token', 'create', 'reader', '--scope', 'read', '--ttl', '30d'], remote()),
      mayfly(['token', 'create', 'doomed', '--scope', 'write', '--project', 'shop', '--json'], remote()),
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^\S{20,}\n$/);
    reader = created.stdout.trim();
    expect(created.stderr).toMatch(
      /created token reader \(tok_\S+\): scope read, every project, expires in 29d23h/,
    );
    expect(created.stderr).toContain('not shown again');
    const doomed = CreatedToken.parse(JSON.parse(json.stdout));
    expect(doomed).toMatchObject({ name: 'doomed', scope: 'write', project: 'shop', expiresAt: null });

    // A name another client gave may hold terminal escapes: the table never prints them.
    expect((await t.api('POST', '/v1/tokens', { name: 'evil\u001b[31mred', scope: 'read' })).status).toBe(
      201,
    );
    const ls = await mayfly(['token', 'ls'], remote());
    expect(ls.code).toBe(0);
    expect(ls.stdout).not.toContain('\u001b');
    expect(ls.stdout).toContain('evil?[31mred');
    const [header, ...rows] = ls.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^ID\s+NAME\s+SCOPE\s+PROJECT\s+CREATED\s+EXPIRES\s+REVOKED$/);
    expect(rows).toContainEqual(
      expect.stringMatching(/^tok_\S+\s+reader\s+read\s+-\s+\d{4}-\d\d-\d\d\s+in 29d23h\s+-$/),
    );
    expect(rows).toContainEqual(
      expect.stringMatching(new RegExp(`^${doomed.id}\\s+doomed\\s+write\\s+shop\\s+\\S+\\s+never\\s+-$`)),
    );
    expect(ls.stdout).not.toContain(reader);

    const revoked = await mayfly(['token', 'revoke', 'doomed'], remote());
    expect(revoked).toMatchObject({ code: 0, stdout: `revoked token doomed (${doomed.id})\n` });
    const [live, all, unknown, withRevoked] = await Promise.all([
      mayfly(['token', 'ls', '--json'], remote()),
      mayfly(['token', 'ls', '--all', '--json'], remote()),
      mayfly(['token', 'revoke', 'no-such-token'], remote()),
      mayfly(['ls'], { MAYFLY_URL: t.server.url, MAYFLY_TOKEN: doomed.token }),
    ]);
    expect(
      Token.array()
        .parse(JSON.parse(live.stdout))
        .map((x) => x.name),
    ).not.toContain('doomed');
    const listed = Token.array().parse(JSON.parse(all.stdout));
    expect(listed.find((x) => x.id === doomed.id)?.revokedAt).not.toBeNull();
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('mayfly: no token "no-such-token"\n');
    expect(withRevoked.code).toBe(1);
    expect(withRevoked.stderr).toContain('mayfly: invalid, expired or revoked token');
  });

  it('a read token may list, but destroy, up and token verbs exit 1 with "forbidden"', async () => {
    const asReader = { MAYFLY_URL: t.server.url, MAYFLY_TOKEN: reader };
    const [ls, destroy, up, tokens] = await Promise.all([
      mayfly(['ls', '--json'], asReader),
      mayfly(['destroy', 'shown'], asReader),
      mayfly(['up', '-f', 'plain/mayfly.yaml', '--name', 'by-reader'], asReader),
      mayfly(['token', 'ls'], asReader),
    ]);
    expect(ls.code).toBe(0);
    for (const run of [destroy, up, tokens]) {
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toMatch(
        /^mayfly: forbidden: this token has scope "read"; this needs "(write|admin)"$/m,
      );
      expect(run.stderr).toContain('mayfly token create');
    }
    const still = await t.api<Environment>('GET', '/v1/environments/shown');
    expect(still.body).toMatchObject({ state: 'ready', desired: 'present' });
    expect((await t.api('GET', '/v1/environments/by-reader')).status).toBe(404);
  });
});

describe('mayfly destroy', () => {
  it('waits until the environment is destroyed; a follower of its logs ends by itself', async () => {
    const follow = mayflyStreaming(['logs', 'shown', '-f', '--tail', '1'], remote());
    await vi.waitFor(() => expect(follow.stdout()).toMatch(/tick \d+\n/), { timeout: 20_000, interval: 100 });

    const run = await mayfly(['destroy', 'shown'], remote());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^shown destroyed \(\d+\.\ds\)\n$/);
    expect(run.stderr).toMatch(/destroying\s+\S/);
    expect(run.stderr).toMatch(/destroyed\s+\S/);
    expect(run.stderr).not.toMatch(/pending/);
    // No signal: the stream ends because the environment is gone.
    expect(await follow.exited).toEqual({ code: 0, signal: null });

    const ls = await mayfly(['ls', '--all', '--json'], remote());
    expect(
      Environment.array()
        .parse(JSON.parse(ls.stdout))
        .find((e) => e.name === 'shown')?.state,
    ).toBe('destroyed');
  });
});

describe('server and token selection', () => {
  it('uses MAYFLY_URL and MAYFLY_TOKEN; without a token the server refuses with a hint', async () => {
    const [ok, anonymous] = await Promise.all([
      mayfly(['ls', '--json'], remote()),
      mayfly(['ls'], { MAYFLY_URL: t.server.url }),
    ]);
    expect(ok.code).toBe(0);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain('mayfly: missing bearer token');
    expect(anonymous.stderr).toContain('MAYFLY_TOKEN');
  });

  it('--server wins over MAYFLY_URL, before or after the verb', async () => {
    const counter = await connectionCounter();
    try {
      const env = { MAYFLY_URL: counter.url, MAYFLY_TOKEN: t.token };
      const [before, after, unreachable] = await Promise.all([
        mayfly(['--server', t.server.url, 'ls'], env),
        mayfly(['ls', '--server', t.server.url], env),
        mayfly(['ls'], env),
      ]);
      expect(before.code, before.stderr).toBe(0);
      expect(after.code, after.stderr).toBe(0);
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).toContain(`mayfly: cannot reach the Mayfly server at ${counter.url}`);
      expect(counter.count()).toBeGreaterThan(0);
    } finally {
      await counter.close();
    }
  });

  it('a wrong MAYFLY_TOKEN exits 1 with a hint', async () => {
    const run = await mayfly(['ls'], { MAYFLY_URL: t.server.url, MAYFLY_TOKEN: 'wrong' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('mayfly: invalid, expired or revoked token');
    expect(run.stderr).toContain('MAYFLY_TOKEN');
  });

  it('the admin-token file is not sent to a server other than the local default', async () => {
    const home = join(dir, 'home-with-token');
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, 'admin-token'), `${t.token}\n`);
    const run = await mayfly(['ls'], { MAYFLY_URL: t.server.url, MAYFLY_HOME: home });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('mayfly: missing bearer token');
  });

  it('an invalid --server is a usage error', async () => {
    const run = await mayfly(['--server', 'not a url', 'ls']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('mayfly: invalid server URL "not a url"');
  });

  it('--version and --help exit 0', async () => {
    const [version, up, token] = await Promise.all([
      mayfly(['--version']),
      mayfly(['up', '--help']),
      mayfly(['token', 'create', '--help']),
    ]);
    expect(version.stdout).toBe('0.1.0\n');
    expect(up.code).toBe(0);
    expect(up.stdout).toContain('--no-wait');
    expect(up.stdout).toContain('--root <dir>');
    expect(token.code).toBe(0);
    expect(token.stdout).toContain('--scope <scope>');
  });
});
