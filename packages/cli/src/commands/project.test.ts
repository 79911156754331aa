/**
 * `mayfly project`, `mayfly apply` and `mayfly approve` for real: the bin as a child process
 * against an in-process server. Repositories are `file:///…` URLs that are never cloned, except
 * by the preview a fork's approval starts (which then fails, harmlessly). Cases share the server
 * and run in order.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Preview, Project } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  deliver,
  pullRequestPayload,
  signedDelivery,
} from '../../../server/src/test-support/github-webhooks.js';
import { startTestServer, type TestServer } from '../../../server/src/test-support/test-server.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));

let t: TestServer;
let dir: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Secrets used below: none may ever be printed. */
const WEB_SECRET = 'file-secret-0001';
const API_SECRET = 'env-secret-0002';
const API_TOKEN = 'forge-token-0002';
const DB_PASSWORD = 'db-password-0003';
const GH_TOKEN = 'gh-fallback-token-0004';
const APPLY_SECRET = 'apply-secret-0005';
const SHOP_KEY = 'shop-key-0006';
const SECRETS = [WEB_SECRET, API_SECRET, API_TOKEN, DB_PASSWORD, GH_TOKEN, APPLY_SECRET, SHOP_KEY];

/**
 * Runs `mayfly args…` against the test server with its admin token (or `env`'s), optionally with
 * `stdin`. The outer MAYFLY_* and forge tokens never leak in.
 */
function mayfly(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<Run> {
  const outer = Object.fromEntries(
    Object.entries(process.env).filter(
      ([key]) => !key.startsWith('MAYFLY_') && key !== 'GITHUB_TOKEN' && key !== 'GITLAB_TOKEN',
    ),
  );
  const env = {
    ...outer,
    MAYFLY_URL: t.server.url,
    MAYFLY_TOKEN: t.token,
    MAYFLY_HOME: join(dir, 'home'),
    NO_COLOR: '1',
    ...options.env,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd ?? dir, env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(options.stdin ?? '');
  });
}

function write(path: string, text: string): void {
  mkdirSync(dirname(join(dir, path)), { recursive: true });
  writeFileSync(join(dir, path), text);
}

async function projectOf(name: string): Promise<Project> {
  const res = await t.api<Project>('GET', `/v1/projects/${name}`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return Project.parse(res.body);
}

async function allProjects(): Promise<Project[]> {
  return (await t.api<{ items: Project[] }>('GET', '/v1/projects')).body.items;
}

function expectNoSecret(run: Run): void {
  for (const secret of SECRETS) {
    expect(run.stdout).not.toContain(secret);
    expect(run.stderr).not.toContain(secret);
  }
}

beforeAll(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'mayfly-project-'));
});

afterAll(async () => {
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mayfly project create', () => {
  it('reads the webhook secret from a file (trailing newline trimmed), takes --github from the URL, prints the webhook URL', async () => {
    write('hook.secret', `${WEB_SECRET}\n`);
    const run = await mayfly([
      'project',
      'create',
      'web',
      '--repo',
      'file:///srv/git/acme/web.git',
      '--webhook-secret-file',
      'hook.secret',
      '--ttl',
      '2h',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^created project web\n/);
    expect(run.stdout).toContain('github acme/web');
    expect(run.stdout).toContain(`${t.server.url}/webhooks/github`);
    expect(run.stdout).toMatch(/webhook secret +set \(from file hook\.secret\)/);
    expectNoSecret(run);

    const web = await projectOf('web');
    // The server defaults the GitHub repository to the URL's last two path segments.
    expect(web).toMatchObject({
      forge: 'github',
      forgeRepo: 'acme/web',
      hasWebhookSecret: true,
      hasForgeToken: false,
      policy: { ttl: '2h' },
    });
    // The secret stored is the file's content without its newline: it signs deliveries.
    const ping = (secret: string) =>
      deliver(
        t.server.url,
        signedDelivery('ping', { zen: 'hi', repository: { full_name: 'acme/web' } }, secret),
      );
    expect((await ping(WEB_SECRET)).status).toBeLessThan(300);
    expect((await ping(`${WEB_SECRET}\n`)).status).toBe(401);
  });

  it('reads secrets from the environment and stdin; --forge gitlab takes the whole path; GITHUB_TOKEN is a fallback for GitHub', async () => {
    write('db.secret', `${DB_PASSWORD}\r\n`);
    const [api, gh] = await Promise.all([
      mayfly(
        [
          'project',
          'create',
          'api',
          '--repo',
          'file:///srv/git/group/sub/api.git',
          '--forge',
          'gitlab',
          '--forge-token-file',
          '-',
          '--secret-input-file',
          'DB=db.secret',
          '--json',
        ],
        { env: { MAYFLY_WEBHOOK_SECRET: API_SECRET }, stdin: `${API_TOKEN}\n` },
      ),
      mayfly(['project', 'create', 'gh', '--repo', 'file:///srv/git/acme/gh.git', '--json'], {
        env: { GITHUB_TOKEN: GH_TOKEN },
      }),
    ]);
    expect(api.code, api.stderr).toBe(0);
    expect(Project.parse(JSON.parse(api.stdout))).toMatchObject({
      name: 'api',
      forge: 'gitlab',
      forgeRepo: 'srv/git/group/sub/api',
      hasWebhookSecret: true,
      hasForgeToken: true,
      secretInputs: ['DB'],
    });
    expect(api.stderr).toContain(`webhook URL: ${t.server.url}/webhooks/gitlab`);
    expect(gh.code, gh.stderr).toBe(0);
    expect(JSON.parse(gh.stdout)).toMatchObject({ hasForgeToken: true, hasWebhookSecret: false });
    expectNoSecret(api);
    expectNoSecret(gh);
  });

  it('never shows a secret in get or ls, and takes none from argv', async () => {
    const runs = await Promise.all([
      mayfly(['project', 'get', 'web', '--json']),
      mayfly(['project', 'get', 'api', '--json']),
      mayfly(['project', 'get', 'api']),
      mayfly(['project', 'ls']),
      mayfly(['project', 'ls', '--json']),
    ]);
    for (const run of runs) {
      expect(run.code, run.stderr).toBe(0);
      expectNoSecret(run);
    }
    const [webJson, apiJson, apiHuman, ls] = runs;
    expect(JSON.parse(webJson.stdout)).toMatchObject({ name: 'web', hasWebhookSecret: true, previews: [] });
    expect(JSON.parse(apiJson.stdout)).not.toHaveProperty('webhookSecret');
    expect(apiHuman.stdout).toMatch(/^webhook secret +set$/m);
    expect(apiHuman.stdout).toMatch(/^forge token +set$/m);
    expect(apiHuman.stdout).toMatch(/^secret inputs +DB$/m);
    expect(ls.stdout.split('\n')[0]).toMatch(/^NAME +REPO +FORGE REPO +BRANCH +ACCESS +PREVIEWS$/);
    expect(ls.stdout).toMatch(
      /^web +file:\/\/\/srv\/git\/acme\/web\.git +github:acme\/web +main +public +every PR, no drafts, ttl 2h$/m,
    );

    const before = await allProjects();
    const refused = await Promise.all([
      mayfly(['project', 'create', 'x', '--repo', 'file:///srv/x/y', '--webhook-secret', 'xyz']),
      mayfly(['project', 'create', 'x', '--repo', 'file:///srv/x/y', '--forge-token', 'xyz']),
      mayfly(['project', 'update', 'web', '--webhook-secret', 'xyz']),
      mayfly(['project', 'update', 'web', '--github-token', 'xyz']),
    ]);
    for (const run of refused) {
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^mayfly: unknown option '--(webhook-secret|forge-token|github-token)'/);
    }
    // No option of either command takes a secret's value.
    for (const verb of ['create', 'update']) {
      const help = await mayfly(['project', verb, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('--webhook-secret-file <file>');
      expect(help.stdout).not.toMatch(/--(webhook-secret|forge-token|github-token|secret-input) </);
    }

    write('empty.secret', '\n');
    const empty = await Promise.all([
      mayfly([
        'project',
        'create',
        'x',
        '--repo',
        'file:///srv/x/y',
        '--webhook-secret-file',
        'empty.secret',
      ]),
      mayfly(['project', 'create', 'x', '--repo', 'file:///srv/x/y'], { env: { MAYFLY_WEBHOOK_SECRET: '' } }),
      mayfly([
        'project',
        'create',
        'x',
        '--repo',
        'file:///srv/x/y',
        '--webhook-secret-file',
        'missing.secret',
      ]),
    ]);
    expect(empty.map((r) => r.code)).toEqual([2, 2, 2]);
    expect(empty[0]!.stderr).toBe('mayfly: the webhook secret in "empty.secret" is empty\n');
    expect(empty[1]!.stderr).toBe('mayfly: the webhook secret in $MAYFLY_WEBHOOK_SECRET is empty\n');
    expect(empty[2]!.stderr).toContain('cannot read the webhook secret from "missing.secret"');
    expect(await allProjects()).toEqual(before);
  });
});

describe('mayfly project update', () => {
  it('changes only the options given', async () => {
    const before = await projectOf('web');
    const run = await mayfly([
      'project',
      'update',
      'web',
      '--require-label',
      'preview',
      '--no-skip-drafts',
      '--branches',
      'main',
      '--branches',
      'release/*',
      '--max-environments',
      '3',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^updated project web\n/);
    const after = await projectOf('web');
    expect(after).toEqual({
      ...before,
      updatedAt: expect.any(String),
      policy: {
        ...before.policy,
        maxEnvironments: 3,
        filters: {
          ...before.policy.filters,
          requireLabel: 'preview',
          skipDrafts: false,
          branches: ['main', 'release/*'],
        },
      },
    });

    const cleared = await mayfly(['project', 'update', 'web', '--no-ttl', '--json']);
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(JSON.parse(cleared.stdout)).toEqual({
      ...after,
      updatedAt: expect.any(String),
      policy: { ...after.policy, ttl: null },
    });

    const [nothing, badTtl, unknown] = await Promise.all([
      mayfly(['project', 'update', 'web']),
      mayfly(['project', 'update', 'web', '--ttl', 'soon']),
      mayfly(['project', 'update', 'nope', '--ttl', '1h']),
    ]);
    expect(nothing).toMatchObject({ code: 2, stderr: expect.stringMatching(/^mayfly: nothing to change\n/) });
    expect(badTtl).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^mayfly: invalid --ttl "soon": /),
    });
    expect(unknown).toMatchObject({ code: 1, stderr: 'mayfly: no project "nope"\n' });
  });
});

describe('mayfly apply', () => {
  const PROJECTS = `projects:
  - name: shop
    repo: file:///srv/git/acme/shop.git
    template: deploy/compose.yaml
    webhookSecretFile: secrets/hook
    secretInputs:
      API_KEY: { env: SHOP_KEY }
    policy:
      ttl: 2d
      filters: { branches: [main] }
  - name: blog
    repo: file:///srv/git/team/blog.git
    forge: gitlab
    webhookSecretEnv: BLOG_HOOK
`;
  const env = { SHOP_KEY, BLOG_HOOK: APPLY_SECRET };

  it('creates, then reports unchanged, then updated after an edit; secret paths are relative to the file', async () => {
    write('conf/projects.yaml', PROJECTS);
    write('conf/secrets/hook', `${APPLY_SECRET}\n`);
    // Run from elsewhere: secrets/hook is found beside the file, not in the current folder.
    mkdirSync(join(dir, 'elsewhere'), { recursive: true });
    const file = join(dir, 'conf/projects.yaml');
    const first = await mayfly(['apply', '-f', file], { env, cwd: join(dir, 'elsewhere') });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe('created shop\ncreated blog\n');
    expect(first.stderr).toContain(`shop: point its GitHub webhook at ${t.server.url}/webhooks/github`);

    const second = await mayfly(['apply', '-f', 'conf/projects.yaml'], { env });
    expect(second).toMatchObject({ code: 0, stdout: 'unchanged shop\nunchanged blog\n' });

    write('conf/projects.yaml', PROJECTS.replace('ttl: 2d', 'ttl: 3d'));
    const third = await mayfly(['apply', '-f', 'conf/projects.yaml', '--json'], { env });
    expect(third.code, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout)).toEqual([
      { name: 'shop', action: 'updated' },
      { name: 'blog', action: 'unchanged' },
    ]);
    for (const run of [first, second, third]) expectNoSecret(run);

    expect(await projectOf('shop')).toMatchObject({
      template: 'deploy/compose.yaml',
      forgeRepo: 'acme/shop',
      hasWebhookSecret: true,
      secretInputs: ['API_KEY'],
      policy: { ttl: '3d', filters: { branches: ['main'], skipDrafts: true } },
    });
    expect(await projectOf('blog')).toMatchObject({ forge: 'gitlab', forgeRepo: 'srv/git/team/blog' });
  });

  it('refuses a literal secret and a bad field, naming the project, field and line, and changes nothing', async () => {
    const before = await allProjects();
    write(
      'literal.yaml',
      `projects:
  - name: fresh
    repo: file:///srv/git/acme/fresh.git
    webhookSecret: literal-secret-value
`,
    );
    write(
      'bad.yaml',
      `projects:
  - name: fresh
    repo: file:///srv/git/acme/fresh.git
  - name: blog
    repo: file:///srv/git/team/blog.git
    forge: gitlab
    policy:
      ttl: soon
    forge_repo: team/blog
`,
    );
    const [literal, bad, badJson, missingEnv] = await Promise.all([
      mayfly(['apply', '-f', 'literal.yaml'], { env }),
      mayfly(['apply', '-f', 'bad.yaml'], { env }),
      mayfly(['apply', '-f', 'bad.yaml', '--json'], { env }),
      mayfly(['apply', '-f', 'conf/projects.yaml']),
    ]);
    expect(literal.code).toBe(2);
    expect(literal.stderr).toContain(
      'literal.yaml:4:5: project 1 "fresh": webhookSecret: a secret is not written in this file',
    );
    expect(literal.stderr).toMatch(/use webhookSecretFile: PATH or webhookSecretEnv: VARIABLE/);
    expect(literal.stderr).not.toContain('literal-secret-value');
    expect(literal.stderr).toMatch(/^mayfly: literal\.yaml is not valid: 1 error; nothing was sent$/m);

    expect(bad.code).toBe(2);
    expect(bad.stderr.split('\n')).toEqual([
      'bad.yaml:8:12: project 2 "blog": policy.ttl: a duration like 30m, 2h or 7d',
      'bad.yaml:9:5: project 2 "blog": forge_repo: unknown field',
      'mayfly: bad.yaml is not valid: 2 errors; nothing was sent',
      '',
    ]);
    expect(badJson.code).toBe(2);
    expect(JSON.parse(badJson.stdout)).toMatchObject({
      error: {
        code: 'invalid_usage',
        issues: [{ file: 'bad.yaml', line: 8, column: 12, path: 'projects[1].policy.ttl' }, { line: 9 }],
      },
    });
    expect(missingEnv.code).toBe(2);
    expect(missingEnv.stderr).toContain('project 1 "shop": secretInputs.API_KEY.env: $SHOP_KEY is not set');
    expect(await allProjects()).toEqual(before);
  });
});

describe('mayfly approve', () => {
  it("builds a fork's pull request once approved; an unknown one exits 1 with the server's message", async () => {
    // web's filters (updated above): PRs into main with the label "preview".
    const delivery = signedDelivery(
      'pull_request',
      pullRequestPayload({
        repo: 'acme/web',
        number: 7,
        action: 'opened',
        headSha: 'a'.repeat(40),
        baseSha: 'b'.repeat(40),
        forkRepo: 'stranger/web',
        labels: ['preview'],
      }),
      WEB_SECRET,
    );
    expect((await deliver(t.server.url, delivery)).status).toBe(202);
    await vi.waitFor(
      async () => {
        const { body } = await t.api<{ items: Preview[] }>('GET', '/v1/projects/web/previews');
        expect(body.items).toMatchObject([{ number: 7, state: 'awaiting-approval' }]);
      },
      { timeout: 10_000, interval: 100 },
    );
    const get = await mayfly(['project', 'get', 'web']);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toMatch(/^ {2}PR +STATE +ENVIRONMENT +DETAIL$/m);
    expect(get.stdout).toMatch(
      /^ {2}#7 +awaiting-approval +web-pr-7 +from a fork: not built until approved/m,
    );

    const [approved, unknown, notNumber, noProject] = await Promise.all([
      mayfly(['approve', 'web', '7']),
      mayfly(['approve', 'web', '99']),
      mayfly(['approve', 'web', 'seven']),
      mayfly(['approve', 'nope', '1', '--json']),
    ]);
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toMatch(/^approved pull request #7 of web at aaaaaaaaaaaa: \w/);
    const { body } = await t.api<{ items: Preview[] }>('GET', '/v1/projects/web/previews');
    expect(body.items[0]).toMatchObject({ number: 7, approved: true });
    expect(unknown).toMatchObject({ code: 1, stderr: 'mayfly: project "web" has no pull request #99\n' });
    expect(notNumber.code).toBe(2);
    expect(notNumber.stderr).toContain('invalid pull request number "seven"');
    expect(noProject.code).toBe(1);
    expect(JSON.parse(noProject.stdout)).toMatchObject({ error: { code: 'not_found' } });
  });
});

describe('scopes and delete', () => {
  it('a read token bound to a project sees only it and cannot create projects (exit 1, forbidden)', async () => {
    const created = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'web-reader',
      scope: 'read',
      project: 'web',
    });
    expect(created.status).toBe(201);
    const asReader = { MAYFLY_TOKEN: created.body.token };
    const [create, ls, apply] = await Promise.all([
      mayfly(['project', 'create', 'sneaky', '--repo', 'file:///srv/git/acme/sneaky.git'], { env: asReader }),
      mayfly(['project', 'ls', '--json'], { env: asReader }),
      mayfly(['apply', '-f', 'conf/projects.yaml'], {
        env: { ...asReader, SHOP_KEY, BLOG_HOOK: APPLY_SECRET },
      }),
    ]);
    expect(create.code).toBe(1);
    expect(create.stderr).toMatch(/^mayfly: forbidden: /);
    expect(apply.code).toBe(1);
    expect(apply.stderr).toMatch(/^mayfly: forbidden: /);
    expect(ls.code, ls.stderr).toBe(0);
    expect((JSON.parse(ls.stdout) as Project[]).map((p) => p.name)).toEqual(['web']);
    expect((await t.api('GET', '/v1/projects/sneaky')).status).toBe(404);
  });

  it('delete says its environments are destroyed, and the project is gone', async () => {
    const help = await mayfly(['project', 'delete', '--help']);
    expect(help.stdout).toContain('destroyed');
    const run = await mayfly(['project', 'delete', 'blog']);
    expect(run).toMatchObject({ code: 0, stdout: 'deleted project blog (it had no environments)\n' });
    expect((await t.api('GET', '/v1/projects/blog')).status).toBe(404);
    const again = await mayfly(['project', 'delete', 'blog']);
    expect(again).toMatchObject({ code: 1, stderr: 'mayfly: no project "blog"\n' });
    // web may have an environment by now (the approved pull request): it goes with the project.
    const web = await mayfly(['project', 'delete', 'web', '--json']);
    expect(web.code, web.stderr).toBe(0);
    expect(JSON.parse(web.stdout)).toMatchObject({ name: 'web', deleted: true });
  });
});
