/**
 * Previews end to end, with real parts: a local bare git repository as the forge's copy, signed
 * GitHub webhook deliveries built from GitHub's example payloads, the real Docker Engine, HTTP
 * through the gateway, and a test GitHub API that checks every request's documented shape.
 */
import { execFileSync } from 'node:child_process';
import type { Delivery, Environment, Preview, ReadinessStats } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeGitHub, startFakeGitHub } from '../test-support/fake-github.js';
import { type FakeGitLab, startFakeGitLab } from '../test-support/fake-gitlab.js';
import { makeTestRepo, type TestRepo } from '../test-support/git-repos.js';
import { deliver, pullRequestPayload, pushPayload, signedDelivery } from '../test-support/github-webhooks.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';

const SECRET = 'webhook-secret-of-the-test';
const REPO = 'acme/shop';
const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;

/** A three-tier app: a web page built from the repository, an API built from it, a database with a volume. */
const app = (page: string, version: string) => ({
  'compose.yaml': `
services:
  web:
    build: ./web
    command: ["sh", "-c", "exec testkit http --port 8080 --text \\"$$(cat /page.txt) api=$$MAYFLY_URL_API\\""]
    ports: ["8080"]
    depends_on:
      api: { condition: service_healthy }
  api:
    build: ./api
    command: ["sh", "-c", "exec testkit http --port 8080 --text \\"$$(cat /version.txt) pr=\${PR_NUMBER}\\""]
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
    depends_on: [db]
    volumes: ["./api/conf:/conf:ro"]
  db:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    volumes: ["data:/data"]
volumes:
  data: {}
`,
  'web/Dockerfile': `FROM ${TESTKIT_IMAGE}\nCOPY page.txt /page.txt\n`,
  'web/page.txt': page,
  'api/Dockerfile': `FROM ${TESTKIT_IMAGE}\nCOPY version.txt /version.txt\n`,
  'api/version.txt': version,
  'api/conf/greeting': 'hello from the repository',
});

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();

describe('previews from pull requests', () => {
  let t: TestServer;
  let github: FakeGitHub;
  let repo: TestRepo;
  let mainSha: string;

  const previewOf = async (number: number) => {
    const { body } = await t.api<{ items: Preview[] }>('GET', '/v1/projects/shop/previews');
    return body.items.find((p) => p.number === number);
  };
  const waitPreview = (number: number, state: Preview['state'], headSha?: string) =>
    until(
      `preview #${number} ${state}${headSha ? ` at ${headSha.slice(0, 7)}` : ''}`,
      async () => {
        const p = await previewOf(number);
        if (p?.state === 'failed' && state !== 'failed')
          throw new Error(`preview #${number} failed: ${p.detail}`);
        return p && p.state === state && (!headSha || p.headSha === headSha) ? p : undefined;
      },
      180_000,
      200,
    );
  const containerOf = async (env: string, service: string) => {
    const { id } = (await t.api<Environment>('GET', `/v1/environments/${env}`)).body;
    return docker(
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      `label=mayfly.env=${id}`,
      '--filter',
      `label=mayfly.service=${service}`,
    );
  };
  const send = (facts: Parameters<typeof pullRequestPayload>[0], secret = SECRET, id?: string) =>
    deliver(t.server.url, signedDelivery('pull_request', pullRequestPayload(facts), secret, id));

  beforeAll(async () => {
    github = await startFakeGitHub();
    repo = await makeTestRepo();
    mainSha = await repo.commit(app('main page', 'api v1'), 'the app');
    t = await startTestServer({ forgeRetry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 } });
    const created = await t.api('POST', '/v1/projects', {
      name: 'shop',
      repo: repo.url,
      forgeRepo: REPO,
      forgeApiUrl: github.url,
      webhookSecret: SECRET,
      forgeToken: github.token,
    });
    expect(created.status).toBe(201);
  });
  afterAll(async () => {
    await t?.close();
    await github?.close();
    await repo?.remove();
  });

  it('a pull request gets its environment, updated in place on a push, torn down on close; GitHub hears of each step once', async () => {
    const head1 = await repo.commit({ 'web/page.txt': 'PR one' }, 'change the page', {
      branch: 'feature',
      pullRequest: 7,
    });

    // Forged: refused, nothing recorded.
    const forged = await send(
      { repo: REPO, number: 7, action: 'opened', headSha: head1, baseSha: mainSha },
      'not-the-secret',
    );
    expect(forged.status).toBe(401);
    expect((await previewOf(7)) ?? null).toBeNull();

    const id = 'delivery-opened-7';
    const opened = await send(
      { repo: REPO, number: 7, action: 'opened', headSha: head1, baseSha: mainSha },
      SECRET,
      id,
    );
    expect(opened.status).toBe(202);
    // GitHub redelivers: nothing happens twice.
    const again = await send(
      { repo: REPO, number: 7, action: 'opened', headSha: head1, baseSha: mainSha },
      SECRET,
      id,
    );
    expect(again.status).toBe(202);
    expect(again.body).toContain('already received');

    await waitPreview(7, 'ready', head1);
    const env = (await t.api<Environment>('GET', '/v1/environments/shop-pr-7')).body;
    expect(env.urls.web).toMatch(/^http:\/\/web--shop-pr-7\./);
    // Who made it, and the pull request it is of (the list and the dashboard show both).
    expect(env).toMatchObject({ createdBy: 'preview of pull request #7', pullRequest: { number: 7 } });
    expect(env.pullRequest!.url).toMatch(/^https?:\/\//);
    const page = await t.viaGateway(`web--shop-pr-7.localhost:${t.server.port}`);
    expect(page.status).toBe(200);
    expect(page.text).toBe(`PR one api=http://api--shop-pr-7.localhost:${t.server.port}/`);
    expect((await t.viaGateway(`api--shop-pr-7.localhost:${t.server.port}`)).text).toBe('api v1 pr=7');

    // What survives an update: the database's container and its data, the API's image and container.
    const dbBefore = await containerOf('shop-pr-7', 'db');
    const apiBefore = await containerOf('shop-pr-7', 'api');
    const webBefore = await containerOf('shop-pr-7', 'web');
    const apiImage = docker('inspect', '--format', '{{.Image}}', apiBefore);
    const webImage = docker('inspect', '--format', '{{.Image}}', webBefore);
    docker('exec', dbBefore, 'sh', '-c', 'echo row-1 > /data/rows');

    const head2 = await repo.commit({ 'web/page.txt': 'PR one, second push' }, 'change the page again', {
      branch: 'feature',
      pullRequest: 7,
    });
    expect(
      (await send({ repo: REPO, number: 7, action: 'synchronize', headSha: head2, baseSha: mainSha })).status,
    ).toBe(202);
    await waitPreview(7, 'ready', head2);
    expect((await t.viaGateway(`web--shop-pr-7.localhost:${t.server.port}`)).text).toMatch(
      /^PR one, second push /,
    );
    expect(await containerOf('shop-pr-7', 'db')).toBe(dbBefore);
    expect(await containerOf('shop-pr-7', 'api')).toBe(apiBefore);
    expect(docker('inspect', '--format', '{{.Image}}', await containerOf('shop-pr-7', 'api'))).toBe(apiImage);
    expect(await containerOf('shop-pr-7', 'web')).not.toBe(webBefore);
    expect(docker('inspect', '--format', '{{.Image}}', await containerOf('shop-pr-7', 'web'))).not.toBe(
      webImage,
    );
    expect(docker('exec', dbBefore, 'cat', '/data/rows')).toBe('row-1');
    // A file of the repository, bound read-only, unchanged by the push: the same copy, the same container.
    expect(docker('exec', apiBefore, 'cat', '/conf/greeting')).toBe('hello from the repository');
    const events = (await t.events('shop-pr-7')).map((e) => e.message);
    expect(events).toContain(`updated to ${head2.slice(0, 12)}: replaced web`);

    // One comment, edited in place; a deployment per pushed commit, each in progress then successful.
    await until('the comment says the second push is ready', () => {
      const comments = github.comments(REPO, 7);
      return comments.length === 1 &&
        comments[0]!.body.includes(head2.slice(0, 12)) &&
        comments[0]!.body.includes('ready')
        ? comments
        : undefined;
    });
    const [comment] = github.comments(REPO, 7);
    expect(comment!.body).toContain(`http://web--shop-pr-7.localhost:${t.server.port}/`);
    expect(comment!.body).toMatch(/ready \d+\.\d s after the webhook/);
    const deployments = github.deployments(REPO);
    expect(deployments.map((d) => [d.ref, d.environment])).toEqual([
      [head1, 'preview/pr-7'],
      [head2, 'preview/pr-7'],
    ]);
    for (const d of deployments) {
      expect(d.statuses.map((s) => s.state)).toEqual(['in_progress', 'success']);
      expect(d.statuses[1]!.environment_url).toBe(`http://web--shop-pr-7.localhost:${t.server.port}/`);
    }

    // Closed: the environment goes, the comment says so, the deployment is inactive.
    expect(
      (await send({ repo: REPO, number: 7, action: 'closed', headSha: head2, baseSha: mainSha })).status,
    ).toBe(202);
    await t.waitForState('shop-pr-7', ['destroyed']);
    await until('the comment says it was torn down', () =>
      github.comments(REPO, 7)[0]?.body.includes('torn down') ? true : undefined,
    );
    await until('the last deployment is inactive', () =>
      github.deployments(REPO).at(-1)?.statuses.at(-1)?.state === 'inactive' ? true : undefined,
    );
    expect(github.comments(REPO, 7)).toHaveLength(1);

    // Reopened at the same commit: built again; closed again: gone again, still one comment.
    await send({ repo: REPO, number: 7, action: 'reopened', headSha: head2, baseSha: mainSha });
    await waitPreview(7, 'ready', head2);
    expect((await t.viaGateway(`web--shop-pr-7.localhost:${t.server.port}`)).text).toMatch(
      /^PR one, second push /,
    );
    await send({ repo: REPO, number: 7, action: 'closed', headSha: head2, baseSha: mainSha });
    await t.waitForState('shop-pr-7', ['destroyed']);
    expect(github.comments(REPO, 7)).toHaveLength(1);
    expect(github.violations).toEqual([]);
  });

  it("deliveries are listed with what each did, redelivered while their head stands, and each preview's time to ready is kept", async () => {
    const head1 = await repo.commit({ 'web/page.txt': 'PR thirty' }, 'a page', {
      branch: 'thirty',
      pullRequest: 30,
    });
    const facts = { repo: REPO, number: 30, action: 'opened' as const, headSha: head1, baseSha: mainSha };
    expect((await send(facts, 'not-the-secret', 'forged-30')).status).toBe(401);
    expect((await send(facts, SECRET, 'opened-30')).status).toBe(202);
    await waitPreview(30, 'ready', head1);

    type Deliveries = { items: Delivery[] };
    const listed = async () => (await t.api<Deliveries>('GET', '/v1/projects/shop/deliveries')).body.items;
    const opened = (await listed()).find((d) => d.id === 'opened-30');
    expect(opened).toMatchObject({
      event: 'pull_request',
      summary: `pull request #30 opened at ${head1.slice(0, 12)}`,
      outcome: `pull request #30 (opened) at ${head1.slice(0, 12)}: recorded`,
      redeliveryOf: null,
      redeliverable: true,
    });
    // A forged delivery is neither acted on nor kept.
    expect((await listed()).map((d) => d.id)).not.toContain('forged-30');

    // Time from the webhook to ready, kept for the project's page.
    const stats = (await t.api<ReadinessStats>('GET', '/v1/projects/shop/readiness')).body;
    const sample = stats.items.find((i) => i.environment === 'shop-pr-30');
    expect(sample).toMatchObject({ number: 30, headSha: head1 });
    expect(sample!.readyMs).toBeGreaterThan(0);
    expect(Date.parse(sample!.readyAt) - Date.parse(sample!.receivedAt)).toBe(sample!.readyMs);
    expect(stats.p50Ms).toBeGreaterThan(0);
    expect(stats.p95Ms).toBeGreaterThanOrEqual(stats.p50Ms!);
    expect(stats.perDay.at(-1)?.day).toBe(new Date().toISOString().slice(0, 10));

    // Redelivered: a new delivery that says what it repeats and what it did.
    const again = await t.api<Delivery>('POST', '/v1/projects/shop/deliveries/opened-30/redeliver');
    expect(again.status).toBe(201);
    expect(again.body).toMatchObject({ redeliveryOf: 'opened-30', outcome: opened!.outcome });
    expect(again.body.id).toMatch(/^redeliver-/);
    expect((await listed())[0]!.id).toBe(again.body.id);

    // Who may: read-only tokens may list but not redeliver; another project's token sees nothing.
    const token = async (body: object) =>
      (await t.api<{ token: string }>('POST', '/v1/tokens', { name: 'x', ...body })).body.token;
    const reader = await token({ scope: 'read' });
    expect((await t.api('GET', '/v1/projects/shop/deliveries', undefined, reader)).status).toBe(200);
    expect(
      (await t.api('POST', '/v1/projects/shop/deliveries/opened-30/redeliver', undefined, reader)).status,
    ).toBe(403);
    expect(
      (await t.api('POST', '/v1/projects', { name: 'elsewhere', repo: repo.url, forgeRepo: 'acme/else' }))
        .status,
    ).toBe(201);
    const stranger = await token({ scope: 'write', project: 'elsewhere' });
    for (const [method, path] of [
      ['GET', '/v1/projects/shop/deliveries'],
      ['GET', '/v1/projects/shop/readiness'],
      ['POST', '/v1/projects/shop/deliveries/opened-30/redeliver'],
    ] as const)
      expect((await t.api(method, path, undefined, stranger)).status).toBe(404);
    expect((await t.api('POST', '/v1/projects/shop/deliveries/no-such/redeliver')).status).toBe(404);
    expect((await t.api('GET', '/v1/projects/shop/deliveries?limit=1000')).status).toBe(400);

    // Once the pull request moved on, the old delivery would take it back: refused, nothing done.
    const head2 = await repo.commit({ 'web/page.txt': 'PR thirty, again' }, 'a push', {
      branch: 'thirty',
      pullRequest: 30,
    });
    expect((await send({ ...facts, action: 'synchronize', headSha: head2 }, SECRET, 'sync-30')).status).toBe(
      202,
    );
    const before = (await listed()).length;
    const refused = await t.api<{ error: { message: string } }>(
      'POST',
      '/v1/projects/shop/deliveries/opened-30/redeliver',
    );
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain(`has moved on to ${head2.slice(0, 12)}`);
    expect((await listed()).length).toBe(before);
    expect((await previewOf(30))?.headSha).toBe(head2);

    await waitPreview(30, 'ready', head2);
    // Events Mayfly ignores are answered, not kept (they would crowd out the ones it acted on).
    const ignored = await deliver(
      t.server.url,
      signedDelivery('issues', pullRequestPayload(facts), SECRET, 'issues-30'),
    );
    expect(ignored.body).toContain('ignored');
    expect((await listed()).map((d) => d.id)).not.toContain('issues-30');

    await send({ ...facts, action: 'closed', headSha: head2 });
    await t.waitForState('shop-pr-30', ['destroyed']);
    // Closed since: even a delivery of its head would open it again; refused.
    const reopen = await t.api<{ error: { message: string } }>(
      'POST',
      '/v1/projects/shop/deliveries/sync-30/redeliver',
    );
    expect(reopen.status).toBe(409);
    expect(reopen.body.error.message).toContain('pull request #30 has been closed since');
    expect((await t.api('DELETE', '/v1/projects/elsewhere')).status).toBe(200);
  });

  it('a failing push leaves the previous version running and says why; GitHub never sees it green', async () => {
    const head1 = await repo.commit({ 'web/page.txt': 'PR nine' }, 'a page', {
      branch: 'nine',
      pullRequest: 9,
    });
    await send({
      repo: REPO,
      number: 9,
      action: 'opened',
      headSha: head1,
      baseSha: mainSha,
      headRef: 'nine',
    });
    await waitPreview(9, 'ready', head1);
    const broken = await repo.commit(
      { 'web/Dockerfile': `FROM ${TESTKIT_IMAGE}\nRUN echo the-build-breaks && exit 3\n` },
      'break the build',
      {
        branch: 'nine',
        pullRequest: 9,
      },
    );
    await send({
      repo: REPO,
      number: 9,
      action: 'synchronize',
      headSha: broken,
      baseSha: mainSha,
      headRef: 'nine',
    });
    const failed = await waitPreview(9, 'failed', broken);
    expect(failed.detail).toContain('the previous version keeps running');
    expect(failed.detail).toContain('build:web');
    expect((await t.viaGateway(`web--shop-pr-9.localhost:${t.server.port}`)).text).toMatch(/^PR nine /);
    const env = (await t.api<Environment>('GET', '/v1/environments/shop-pr-9')).body;
    expect(env.state).toBe('ready');
    await until('the failed deployment', () => {
      const d = github.deployments(REPO).find((x) => x.ref === broken);
      return d?.statuses.at(-1)?.state === 'failure' ? d : undefined;
    });
    const last = github.deployments(REPO).find((x) => x.ref === broken)!;
    expect(last.statuses.map((s) => s.state)).not.toContain('success');
    await send({
      repo: REPO,
      number: 9,
      action: 'closed',
      headSha: broken,
      baseSha: mainSha,
      headRef: 'nine',
    });
    await t.waitForState('shop-pr-9', ['destroyed']);
  });

  it('a pull request from a fork is not built until approved, and never gets the secret inputs nor snapshots made by hand', async () => {
    expect(
      (await t.api('PATCH', '/v1/projects/shop', { secretInputs: { API_KEY: 'the-project-secret' } })).status,
    ).toBe(200);
    const head = await repo.commit(
      {
        'web/page.txt': 'from a fork',
        'compose.yaml': app('x', 'y')['compose.yaml'].replace('pr=$', 'key=$' + '{API_KEY} pr=$'),
      },
      'a fork',
      { branch: 'fork', pullRequest: 8 },
    );
    const facts = {
      repo: REPO,
      number: 8,
      action: 'opened' as const,
      headSha: head,
      baseSha: mainSha,
      forkRepo: 'mallory/shop',
    };
    expect((await send(facts)).status).toBe(202);
    const waiting = await waitPreview(8, 'awaiting-approval');
    expect(waiting.detail).toContain('mayfly approve shop 8');
    const envs = (await t.api<{ items: Environment[] }>('GET', '/v1/environments')).body.items;
    expect(envs.map((e) => e.name)).not.toContain('shop-pr-8');
    await until('the comment asks for approval', () =>
      github.comments(REPO, 8)[0]?.body.includes('waiting for approval') ? true : undefined,
    );

    expect((await t.api('POST', '/v1/projects/shop/previews/8/approve')).status).toBe(200);
    await waitPreview(8, 'ready', head);
    expect((await t.viaGateway(`api--shop-pr-8.localhost:${t.server.port}`)).text).toBe('api v1 key= pr=8');
    await send({ ...facts, action: 'closed' });
    await t.waitForState('shop-pr-8', ['destroyed']);

    // Nor the project's snapshots made by hand (a production dump, say), whatever its template asks.
    const asks = await repo.commit(
      {
        'compose.yaml': `${app('x', 'y')['compose.yaml']}x-mayfly:\n  data:\n    data: { snapshot: golden }\n`,
      },
      'a fork that wants the dump',
      { branch: 'fork-dump', pullRequest: 18 },
    );
    const dump = { ...facts, number: 18, headSha: asks };
    expect((await send(dump)).status).toBe(202);
    await waitPreview(18, 'awaiting-approval');
    expect((await t.api('POST', '/v1/projects/shop/previews/18/approve')).status).toBe(200);
    await waitPreview(18, 'failed', asks);
    expect((await t.api<Environment>('GET', '/v1/environments/shop-pr-18')).body.failure).toEqual({
      step: 'restore:data',
      reason:
        'a pull request from a fork is given no snapshot made by hand ("golden"), as it is given none of the project\'s secret inputs',
    });
    await send({ ...dump, action: 'closed' });
    await t.waitForState('shop-pr-18', ['destroyed']);
    expect(github.comments(REPO, 8)).toHaveLength(1);
    expect(github.violations).toEqual([]);
  });

  it("a branch environment follows pushes to the project's branch, when the project asks for one", async () => {
    const push = (before: string, after: string, branch = 'main') =>
      deliver(t.server.url, signedDelivery('push', pushPayload(REPO, branch, before, after), SECRET));
    const head = await repo.commit({ 'web/page.txt': 'main, pushed' }, 'a push to main');
    const ignored = await push(mainSha, head);
    expect(ignored.status).toBe(202);
    expect(ignored.body).toContain('no branch environment');
    expect((await t.api('PATCH', '/v1/projects/shop', { policy: { branchEnvironment: true } })).status).toBe(
      200,
    );
    expect((await push(mainSha, head, 'other')).body).toContain('not main');
    expect((await push(mainSha, head)).status).toBe(202);
    const main = await until(
      'shop-main ready',
      async () => {
        const res = await t.api<Environment>('GET', '/v1/environments/shop-main');
        return res.status === 200 && res.body.state === 'ready' ? res.body : undefined;
      },
      180_000,
      200,
    );
    expect(main).toMatchObject({ createdBy: 'preview of branch main', pullRequest: null });
    expect((await t.viaGateway(`web--shop-main.localhost:${t.server.port}`)).text).toMatch(/^main, pushed /);
    // The branch goes: so does its environment.
    const gone = pushPayload(REPO, 'main', head, '0'.repeat(40));
    Object.assign(gone, { deleted: true });
    expect((await deliver(t.server.url, signedDelivery('push', gone, SECRET))).status).toBe(202);
    await t.waitForState('shop-main', ['destroyed']);
    expect(github.violations).toEqual([]);
  });

  it('over maxEnvironments the least recently used preview sleeps; the mayfly:keep label keeps one', async () => {
    expect((await t.api('PATCH', '/v1/projects/shop', { policy: { maxEnvironments: 1 } })).status).toBe(200);
    const h11 = await repo.commit({ 'web/page.txt': 'eleven' }, 'eleven', {
      branch: 'eleven',
      pullRequest: 11,
    });
    await send({
      repo: REPO,
      number: 11,
      action: 'opened',
      headSha: h11,
      baseSha: mainSha,
      headRef: 'eleven',
    });
    await waitPreview(11, 'ready', h11);
    const h12 = await repo.commit({ 'web/page.txt': 'twelve' }, 'twelve', {
      branch: 'twelve',
      pullRequest: 12,
    });
    await send({
      repo: REPO,
      number: 12,
      action: 'opened',
      headSha: h12,
      baseSha: mainSha,
      headRef: 'twelve',
    });
    await waitPreview(12, 'ready', h12);
    const eleven = await t.waitForState('shop-pr-11', ['sleeping']);
    expect(eleven.sleep).toBe(true);
    // Still reachable: a request wakes it.
    expect((await t.viaGateway(`web--shop-pr-11.localhost:${t.server.port}`)).text).toMatch(/^eleven /);
    // …and waking it keeps the project under its limit: the other one goes to sleep.
    await t.waitForState('shop-pr-12', ['sleeping']);
    // A push to a sleeping preview wakes it on the plan it had, then updates it in place.
    const h12b = await repo.commit({ 'web/page.txt': 'twelve, pushed while asleep' }, 'twelve b', {
      branch: 'twelve',
      pullRequest: 12,
    });
    await send({
      repo: REPO,
      number: 12,
      action: 'synchronize',
      headSha: h12b,
      baseSha: mainSha,
      headRef: 'twelve',
    });
    await waitPreview(12, 'ready', h12b);
    expect((await t.viaGateway(`web--shop-pr-12.localhost:${t.server.port}`)).text).toMatch(
      /^twelve, pushed while asleep /,
    );
    const twelve = (await t.events('shop-pr-12')).map((e) => e.message);
    expect(twelve).toContain('waking up');
    expect(twelve).toContain(`updated to ${h12b.slice(0, 12)}: replaced web`);
    await t.waitForState('shop-pr-11', ['sleeping']);

    await send({
      repo: REPO,
      number: 12,
      action: 'labeled',
      headSha: h12b,
      baseSha: mainSha,
      headRef: 'twelve',
      labels: ['mayfly:keep'],
    });
    await until('shop-pr-12 kept', async () => {
      const env = (await t.api<Environment>('GET', '/v1/environments/shop-pr-12')).body;
      return env.keep && env.expiresAt === null ? env : undefined;
    });
    await t.api('PATCH', '/v1/projects/shop', { policy: { maxEnvironments: null } });
    for (const [number, head, ref] of [
      [11, h11, 'eleven'],
      [12, h12b, 'twelve'],
    ] as const) {
      await send({ repo: REPO, number, action: 'closed', headSha: head, baseSha: mainSha, headRef: ref });
      await t.waitForState(`shop-pr-${number}`, ['destroyed']);
    }
  });

  it("the project's filters: drafts wait, and only pull requests changing matching paths are built", async () => {
    expect(
      (
        await t.api('PATCH', '/v1/projects/shop', {
          policy: { filters: { paths: ['web/**'], branches: ['main'] } },
        })
      ).status,
    ).toBe(200);
    // Based on main as it is now (earlier tests pushed to it).
    const mainNow = repo.revParse('refs/heads/main');
    const apiOnly = await repo.commit({ 'api/version.txt': 'api v2' }, 'api only', {
      branch: 'f13',
      pullRequest: 13,
    });
    const base = { repo: REPO, number: 13, headSha: apiOnly, baseSha: mainNow, headRef: 'f13' };
    await send({ ...base, action: 'opened', draft: true });
    expect((await waitPreview(13, 'skipped')).detail).toContain('draft');
    await send({ ...base, action: 'ready_for_review' });
    await until('skipped for its paths', async () =>
      (await previewOf(13))?.detail?.includes('changes no path matching web/**') ? true : undefined,
    );
    const other = await repo.commit({ 'web/page.txt': 'fourteen' }, 'web', {
      branch: 'f14',
      pullRequest: 14,
    });
    await send({
      repo: REPO,
      number: 14,
      action: 'opened',
      headSha: other,
      baseSha: mainSha,
      headRef: 'f14',
      baseRef: 'release',
    });
    expect((await waitPreview(14, 'skipped')).detail).toContain('the branch release matches none of main');
    await send({
      repo: REPO,
      number: 14,
      action: 'closed',
      headSha: other,
      baseSha: mainSha,
      headRef: 'f14',
      baseRef: 'release',
    });
    await send({ ...base, action: 'closed' });
    const names = (await t.api<{ items: Environment[] }>('GET', '/v1/environments')).body.items.map(
      (e) => e.name,
    );
    expect(names).not.toContain('shop-pr-13');
    expect(names).not.toContain('shop-pr-14');
    await t.api('PATCH', '/v1/projects/shop', { policy: { filters: { paths: [], branches: [] } } });
  });

  it('GitLab merge requests: token checked, environment built, one note edited in place', async () => {
    const gitlab: FakeGitLab = await startFakeGitLab();
    try {
      expect(
        (
          await t.api('POST', '/v1/projects', {
            name: 'lab',
            repo: repo.url,
            forge: 'gitlab',
            forgeRepo: 'acme/lab',
            forgeApiUrl: gitlab.url,
            webhookSecret: 'gitlab-secret-token',
            forgeToken: gitlab.token,
          })
        ).status,
      ).toBe(201);
      const head = await repo.commit({ 'web/page.txt': 'merge request' }, 'an MR', { branch: 'mr' });
      // GitLab keeps a merge request's head as refs/merge-requests/<iid>/head.
      execFileSync('git', [
        '--git-dir',
        repo.url.slice('file://'.length),
        'update-ref',
        'refs/merge-requests/4/head',
        head,
      ]);
      const project = {
        id: 21,
        name: 'lab',
        path_with_namespace: 'acme/lab',
        web_url: 'https://gitlab.example.com/acme/lab',
        git_http_url: 'https://gitlab.example.com/acme/lab.git',
        git_ssh_url: 'git@gitlab.example.com:acme/lab.git',
        default_branch: 'main',
      };
      const mr = (action: string) => ({
        object_kind: 'merge_request',
        event_type: 'merge_request',
        user: { id: 1, name: 'Dev', username: 'dev' },
        project,
        object_attributes: {
          id: 400,
          iid: 4,
          target_branch: 'main',
          source_branch: 'mr',
          source_project_id: 21,
          target_project_id: 21,
          title: 'An MR',
          state: action === 'close' ? 'closed' : 'opened',
          url: 'https://gitlab.example.com/acme/lab/-/merge_requests/4',
          source: project,
          target: project,
          last_commit: { id: head, message: 'an MR' },
          draft: false,
          work_in_progress: false,
          action,
        },
        labels: [],
      });
      const send = (action: string, token: string) =>
        fetch(`${t.server.url}/webhooks/gitlab`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'x-gitlab-event': 'Merge Request Hook',
            'x-gitlab-token': token,
            'x-gitlab-event-uuid': `uuid-${action}-${token.length}`,
          },
          body: JSON.stringify(mr(action)),
        });
      expect((await send('open', 'wrong-token')).status).toBe(401);
      expect((await send('open', 'gitlab-secret-token')).status).toBe(202);
      await until(
        'lab-pr-4 ready',
        async () => {
          const res = await t.api<Environment>('GET', '/v1/environments/lab-pr-4');
          return res.status === 200 && res.body.state === 'ready' ? res.body : undefined;
        },
        180_000,
        200,
      );
      expect((await t.viaGateway(`web--lab-pr-4.localhost:${t.server.port}`)).text).toMatch(
        /^merge request /,
      );
      await until('the note says ready', () =>
        gitlab.notes('acme/lab', 4)[0]?.body.includes('ready') ? true : undefined,
      );
      expect((await send('close', 'gitlab-secret-token')).status).toBe(202);
      await t.waitForState('lab-pr-4', ['destroyed']);
      await until('the note says torn down', () =>
        gitlab.notes('acme/lab', 4)[0]?.body.includes('torn down') ? true : undefined,
      );
      expect(gitlab.notes('acme/lab', 4)).toHaveLength(1);
      expect(gitlab.violations).toEqual([]);
    } finally {
      await gitlab.close();
    }
  });
});
