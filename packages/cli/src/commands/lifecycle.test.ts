/**
 * `mayfly sleep|wake|redeploy|keep|extend` and `mayfly project preview-token` for real: the bin as a child
 * process against an in-process server and the Docker Engine. One environment, of a project, is
 * taken through the lifecycle; the cases share it and run in order.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CreatedToken, Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../../server/src/test-support/global-setup.js';
import {
  requestViaGateway,
  startTestServer,
  type TestServer,
} from '../../../server/src/test-support/test-server.js';
import { composeTemplate, until } from '../../../server/src/test-support/until.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));
const NAME = 'life';
const PROJECT = 'lifeproj';

let t: TestServer;
let dir: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `mayfly args…` against the test server with its admin token, or `token`. */
function mayfly(args: string[], token?: string): Promise<Run> {
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_'))),
    MAYFLY_URL: t.server.url,
    MAYFLY_TOKEN: token ?? t.token,
    MAYFLY_HOME: join(dir, 'home'),
    NO_COLOR: '1',
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: dir, env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** `mayfly get NAME --json`, parsed. */
async function getJson(): Promise<Environment> {
  const run = await mayfly(['get', NAME, '--json']);
  expect(run.code, run.stderr).toBe(0);
  return Environment.parse(JSON.parse(run.stdout));
}

/** A GET of the environment's `web` through the gateway, with `headers`. */
function viaGateway(headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return requestViaGateway(t.server.port, `web--${NAME}.localhost`, '/', headers);
}

beforeAll(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-lifecycle-'));
  const project = await t.api('POST', '/v1/projects', {
    name: PROJECT,
    repo: 'file:///srv/git/acme/life.git',
  });
  expect(project.status, JSON.stringify(project.body)).toBe(201);
  const created = await t.api('POST', '/v1/environments', {
    name: NAME,
    project: PROJECT,
    ttl: '1h',
    template: composeTemplate(
      `  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "http", "--port", "8080", "--text", "hello from life"]\n    ports: ["8080"]\n`,
    ),
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  await t.waitForState(NAME, ['ready'], 60_000);
});

afterAll(async () => {
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mayfly sleep, wake, extend, keep', () => {
  it('sleep: one line on stderr, then the environment is sleeping and get says so', async () => {
    const run = await mayfly(['sleep', NAME]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(
      new RegExp(
        `^${NAME} (going to sleep|asleep): .*the next request \\(or \`mayfly wake ${NAME}\`\\) wakes it\\n$`,
      ),
    );

    const asleep = await until('state sleeping', async () => {
      const env = await getJson();
      return env.state === 'sleeping' ? env : undefined;
    });
    expect(asleep).toMatchObject({ sleep: true, desired: 'present' });
    const get = await mayfly(['get', NAME]);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toMatch(/^state +sleeping$/m);
    expect(get.stdout).toMatch(/^created by +token /m);
    expect(get.stdout).toMatch(/^sleeping +yes: containers stopped, volumes kept/m);
    expect(get.stdout).not.toMatch(/^kept /m);
  });

  it('wake --wait: progress on stderr, returns once ready; --json prints the environment', async () => {
    const run = await mayfly(['wake', NAME, '--wait', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const env = Environment.parse(JSON.parse(run.stdout));
    expect(env).toMatchObject({ name: NAME, state: 'ready', sleep: false });
    expect(run.stderr).toContain(`waking ${NAME}`);
    expect(run.stderr).toMatch(new RegExp(`${NAME} awake: ready \\(\\d+\\.\\ds\\)\\n$`));
    expect((await viaGateway({})).text).toContain('hello from life');
    const get = await mayfly(['get', NAME]);
    expect(get.stdout).not.toMatch(/^sleeping /m);
    // Awake already: said so, nothing waited for.
    const again = await mayfly(['wake', NAME]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe(`${NAME} awake: ready\n`);
  });

  it('redeploy: a new container for the service; --wait returns once ready; refused with why while it comes up', async () => {
    const containerOf = () =>
      execFileSync('docker', ['ps', '-q', '--filter', `label=mayfly.env=${envId}`], {
        encoding: 'utf8',
      }).trim();
    const envId = (await getJson()).id;
    const before = containerOf();
    expect(before).not.toBe('');
    const run = await mayfly(['redeploy', NAME, '--wait']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`redeploying ${NAME}`);
    expect(run.stderr).toMatch(new RegExp(`${NAME} redeployed: ready \\(\\d+\\.\\ds\\)\\n$`));
    const after = containerOf();
    expect(after).not.toBe('');
    expect(after).not.toBe(before);
    expect((await viaGateway({})).text).toContain('hello from life');
    // Without --wait it returns at once; asked again while it comes up: exit 1 with the server's why.
    const quick = await mayfly(['redeploy', NAME]);
    expect(quick.code, quick.stderr).toBe(0);
    expect(quick.stderr).toBe(
      `${NAME} redeploying: every service restarts in a new container; see: mayfly get ${NAME}\n`,
    );
    const twice = await mayfly(['redeploy', NAME]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/redeploy|coming up|not settled/i);
    await until('ready again', async () => ((await getJson()).state === 'ready' ? true : undefined));
  });

  it('extend: the end of the time to live moves back by the duration', async () => {
    const before = await getJson();
    expect(before.expiresAt).not.toBeNull();
    const run = await mayfly(['extend', NAME, '2h']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(new RegExp(`^${NAME} extended: expires in (2h5\\dm|3h) \\(at .+\\)\\n$`));
    const after = await getJson();
    expect(Date.parse(after.expiresAt!) - Date.parse(before.expiresAt!)).toBe(2 * 3_600_000);
  });

  it("extend with a bad duration: exit 2 with the server's message, nothing changed", async () => {
    const before = await getJson();
    const run = await mayfly(['extend', NAME, 'soon']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('mayfly: "soon" is not a duration like 30m, 2h or 1d');
    expect((await getJson()).expiresAt).toBe(before.expiresAt);
  });

  it('keep: no time to live any more, and get shows it kept', async () => {
    const run = await mayfly(['keep', NAME, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(Environment.parse(JSON.parse(run.stdout))).toMatchObject({ keep: true, expiresAt: null });
    expect(run.stderr).toBe(`${NAME} kept: no time to live, never put to sleep for being idle\n`);
    const get = await mayfly(['get', NAME]);
    expect(get.stdout).toMatch(/^expires +never$/m);
    expect(get.stdout).toMatch(/^kept +yes: no time to live, never put to sleep for being idle$/m);
  });

  it('an unknown environment exits 1 with the server message', async () => {
    const run = await mayfly(['sleep', 'no-such-env']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('no environment "no-such-env"');
  });
});

describe('mayfly project preview-token', () => {
  it('prints a new mfyp_ token alone on stdout each time; only the latest opens the previews', async () => {
    const first = await mayfly(['project', 'preview-token', PROJECT]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^mfyp_[A-Za-z0-9_-]+\n$/);
    expect(first.stderr).toContain('links with the previous one stop working');
    expect(first.stderr).toContain('?mayfly-token=');
    expect(first.stderr).toContain('X-Mayfly-Bypass');
    expect(first.stderr).toContain(`--access token`);
    expect(first.stderr).not.toContain(first.stdout.trim());

    const second = await mayfly(['project', 'preview-token', PROJECT]);
    expect(second.code, second.stderr).toBe(0);
    const [oldToken, newToken] = [first.stdout.trim(), second.stdout.trim()];
    expect(newToken).toMatch(/^mfyp_/);
    expect(newToken).not.toBe(oldToken);

    const update = await mayfly(['project', 'update', PROJECT, '--access', 'token']);
    expect(update.code, update.stderr).toBe(0);
    // The gateway remembers a project's access for a moment.
    await until('previews to need the token', async () =>
      (await viaGateway({})).status === 401 ? true : undefined,
    );
    const opened = await viaGateway({ 'x-mayfly-bypass': newToken });
    expect(opened.status).toBe(200);
    expect(opened.text).toContain('hello from life');
    expect((await viaGateway({ 'x-mayfly-bypass': oldToken })).status).toBe(401);
    // The note about public previews is gone once they need the token.
    const third = await mayfly(['project', 'preview-token', PROJECT]);
    expect(third.stderr).not.toContain('--access token');
  });

  it('a token that is not admin exits 1, forbidden, and prints no token', async () => {
    const made = await t.api<CreatedToken>('POST', '/v1/tokens', { name: 'writer', scope: 'write' });
    expect(made.status).toBe(201);
    const run = await mayfly(['project', 'preview-token', PROJECT], made.body.token);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^mayfly: forbidden: /);
  });
});
