/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core; nothing is
 * downloaded): logged in with the link `mayfly dashboard --print-url` prints, an environment made
 * with `mayfly up` appears in the list by itself and turns ready, and one destroyed with `mayfly
 * destroy` leaves it. Screenshots of each page go to .mayfly/screenshots/.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTestRepo } from '../../server/src/test-support/git-repos.js';
import {
  deliver,
  pullRequestPayload,
  signedDelivery,
} from '../../server/src/test-support/github-webhooks.js';
import { TESTKIT_IMAGE } from '../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';
import { until } from '../../server/src/test-support/until.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/mayfly.js');
const screenshots = path.join(root, '.mayfly/screenshots');
const CHROMIUM = '/usr/bin/chromium';

describe('the dashboard in a browser', () => {
  let t: TestServer;
  let browser: Browser;
  let page: Page;
  let dir: string;
  const violations: string[] = [];
  const cli = (args: string[]) =>
    run(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...process.env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token },
      maxBuffer: 16 * 1024 * 1024,
    });
  const shot = (name: string) =>
    page.screenshot({ path: path.join(screenshots, `dashboard-${name}.png`), fullPage: true });

  beforeAll(async () => {
    t = await startTestServer();
    dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-dashboard-'));
    await writeFile(
      path.join(dir, 'compose.yaml'),
      `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "http", "--port", "8080"]\n    ports: ["8080"]\n`,
    );
    await mkdir(screenshots, { recursive: true });
    // As root, Chromium runs only without its own sandbox (the test machine's user).
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    // Whatever the pages do, the content security policy never has to refuse it.
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
    });
  });
  afterEach(() => {
    expect(violations.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('logs in with the one-time link; a second use of it is refused', async () => {
    const { stdout } = await cli(['dashboard', '--print-url']);
    const link = stdout.trim();
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/login#mfl_/);
    await page.goto(link);
    await page.getByRole('heading', { name: 'Environments' }).waitFor();
    expect(new URL(page.url()).pathname).toBe('/');
    // The code is gone from the address bar and the history.
    expect(page.url()).not.toContain('mfl_');
    const cookies = await page.context().cookies();
    expect(cookies.find((c) => c.name === 'mayfly_session')).toMatchObject({
      httpOnly: true,
      sameSite: 'Strict',
    });
    await shot('environments-empty');

    // A link opened where a session is: asked first; declined, the session stays as it was.
    const second = (await cli(['dashboard', '--print-url'])).stdout.trim();
    const asked = new Promise<string>((resolve) =>
      page.once('dialog', (dialog) => {
        resolve(dialog.message());
        void dialog.dismiss();
      }),
    );
    await page.goto(second);
    expect(await asked).toMatch(/logged in already \(admin\)/);
    await page.getByRole('heading', { name: 'Environments' }).waitFor();
    expect((await page.context().cookies()).find((c) => c.name === 'mayfly_session')?.value).toBe(
      cookies.find((c) => c.name === 'mayfly_session')?.value,
    );

    // Another browser (no session) with the same link: refused.
    const elsewhere = await browser.newContext();
    const other = await elsewhere.newPage();
    await other.goto(link);
    await other.getByRole('alert').waitFor();
    expect(await other.getByRole('alert').textContent()).toMatch(/invalid, used or expired/);
    await elsewhere.close();
  });

  it('shows an environment made with mayfly up without a reload, ready with its URL, and drops it when destroyed', async () => {
    const row = page.locator('tr[data-env="dash-live"]');
    expect(await row.count()).toBe(0);
    await cli(['up', '-f', path.join(dir, 'compose.yaml'), '--name', 'dash-live', '--no-wait']);
    await row.waitFor();
    await row.locator('.state-ready').waitFor({ timeout: 120_000 });
    await row.getByText(/^token /).waitFor();
    expect(await row.getByRole('link', { name: 'web' }).getAttribute('href')).toMatch(
      /^http:\/\/web--dash-live\.localhost:\d+\/$/,
    );
    // Search narrows the list.
    await page.getByLabel('Search environments').fill('no-such-name');
    await row.waitFor({ state: 'hidden' });
    await page.getByText('0 of ').waitFor();
    await page.getByLabel('Search environments').fill('dash');
    await row.waitFor();
    await shot('environments');

    await cli(['destroy', 'dash-live']);
    await row.waitFor({ state: 'detached', timeout: 120_000 });
  });

  it('opens an environment: its service and timeline, a log line followed live; destroyed from the page, it leaves the list', async () => {
    await cli(['up', '-f', path.join(dir, 'compose.yaml'), '--name', 'dash-detail']);
    const row = page.locator('tr[data-env="dash-detail"]');
    await row.getByRole('link', { name: 'dash-detail' }).click();
    expect(new URL(page.url()).pathname).toBe('/environments/dash-detail');
    await page.getByRole('heading', { name: /dash-detail/ }).waitFor();
    await page.getByRole('cell', { name: 'web', exact: true }).waitFor();
    await page
      .getByText(/creating → ready|ready/)
      .first()
      .waitFor();
    const logs = page.getByRole('log', { name: 'Logs' });
    await logs.getByText('testkit http listening on :8080').waitFor();
    // A search keeps only the lines that have it.
    await page.getByLabel('Search the logs').fill('no such line');
    expect((await logs.textContent())?.trim()).toBe('');
    await page.getByLabel('Search the logs').fill('listening');
    await logs.getByText('listening').waitFor();
    await shot('environment');

    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Destroy' }).click();
    await page.getByRole('heading', { name: 'Environments' }).waitFor();
    await row.waitFor({ state: 'detached', timeout: 120_000 });
    const gone = await t.api<{ state: string }>('GET', '/v1/environments/dash-detail');
    expect(gone.body.state).toBe('destroyed');
  });

  it('opens a terminal into a sandbox: a command typed runs there and its output shows', async () => {
    const id = (await cli(['sandbox', 'create', '--timeout', '10m'])).stdout.trim();
    await page.getByRole('link', { name: 'Sandboxes', exact: true }).click();
    const row = page.locator(`tr[data-sandbox="${id}"]`);
    await row.locator('.state-running').waitFor();
    const socket = page.waitForEvent('websocket');
    await row.getByRole('link', { name: id }).click();
    // A WebSocket of this server's carries the terminal.
    expect((await socket).url()).toMatch(
      new RegExp(
        `^${t.server.url.replace(/^http/, 'ws')}/v1/sandboxes/${id}/terminal\\?cols=\\d+&rows=\\d+$`,
      ),
    );
    await page.getByText('connected').waitFor();
    await page.locator('.xterm').click();
    await page.keyboard.type('echo "hello from $(hostname) $((6 * 7))"');
    await page.keyboard.press('Enter');
    await page
      .locator('.xterm-rows')
      .getByText(/hello from \S+ 42/)
      .waitFor();
    await shot('sandbox-terminal');
    await page.keyboard.type('exit 7');
    await page.keyboard.press('Enter');
    await page.getByText('the shell exited (7)').waitFor();
    await cli(['sandbox', 'kill', id]);
    await page.getByRole('link', { name: 'Sandboxes', exact: true }).click();
    await row.getByText('ended (killed)').waitFor();
  });

  it("shows a sandbox's CPU and memory now, and its files: a folder listed, a file uploaded into it and downloaded again", async () => {
    const id = (await cli(['sandbox', 'create', '--timeout', '10m'])).stdout.trim();
    try {
      await cli(['sandbox', 'exec', id, '--', 'sh', '-c', 'mkdir -p docs && echo hello > docs/readme.txt']);
      await page.getByRole('link', { name: 'Sandboxes', exact: true }).click();
      const row = page.locator(`tr[data-sandbox="${id}"]`);
      await row
        .locator('.usage-now')
        .getByText(/\d(\.\d)? (KiB|MiB|GiB)/)
        .waitFor();
      await row.getByRole('link', { name: id }).click();

      // What it uses now: memory at once, CPU from the second reading on.
      await page
        .locator('[data-usage="memory"]')
        .getByText(/^\d+(\.\d)? (KiB|MiB|GiB)/)
        .waitFor();
      await page
        .locator('[data-usage="cpu"]')
        .getByText(/^\d+(\.\d)?%/)
        .waitFor();

      // Its home is listed; into a folder and back up.
      const files = page.getByRole('table', { name: 'Files' });
      await files.getByRole('button', { name: 'docs/' }).click();
      await files.getByRole('cell', { name: 'readme.txt', exact: true }).waitFor();
      await page.getByRole('button', { name: '↑ Up' }).click();
      await files.getByRole('button', { name: 'docs/' }).click();
      await files.getByRole('cell', { name: 'readme.txt', exact: true }).waitFor();

      // Uploaded into the folder shown; a name that looks like markup stays text.
      const bytes = randomBytes(64 * 1024);
      const hostile = '<img src=x onerror=alert(1)>.txt';
      await page.getByLabel('Upload files to this folder').setInputFiles([
        { name: 'upload.bin', mimeType: 'application/octet-stream', buffer: bytes },
        { name: hostile, mimeType: 'text/plain', buffer: Buffer.from('x') },
      ]);
      await files.getByRole('cell', { name: 'upload.bin', exact: true }).waitFor();
      await files.getByRole('cell', { name: hostile, exact: true }).waitFor();
      expect(await files.locator('img').count()).toBe(0);
      const stat = await t.api<{ size: number }>(
        'GET',
        `/v1/sandboxes/${id}/files/stat?path=docs/upload.bin`,
      );
      expect(stat.body.size).toBe(bytes.length);

      // Downloaded: the same bytes, under its name.
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        files.getByRole('button', { name: 'Download upload.bin' }).click(),
      ]);
      expect(download.suggestedFilename()).toBe('upload.bin');
      expect((await readFile(await download.path())).equals(bytes)).toBe(true);

      // Names made inside the sandbox (which is not trusted): a newline, a right-to-left override,
      // the longest a name may be: listed as the text they are, each with its own row.
      const long = `${'n'.repeat(251)}.txt`;
      await cli([
        'sandbox',
        'exec',
        id,
        '--',
        'sh',
        '-c',
        `cd docs && touch "$(printf 'line\\nbreak.txt')" "$(printf '\\342\\200\\256txt.exe')" ${long}`,
      ]);
      await page.getByRole('button', { name: '↑ Up' }).click();
      await files.getByRole('button', { name: 'docs/' }).click();
      // What hides or reorders text is written out: "\u202etxt.exe" would show as "exe.txt".
      await files.getByRole('cell', { name: 'line⟨U+000A⟩break.txt', exact: true }).waitFor();
      await files.getByRole('cell', { name: '⟨U+202E⟩txt.exe', exact: true }).waitFor();
      await files.getByRole('cell', { name: long, exact: true }).waitFor();
      expect(await files.locator('img').count()).toBe(0);
      await shot('sandbox-files');
    } finally {
      await cli(['sandbox', 'kill', id]);
    }
  });

  it('shows a failed environment with the step that failed and why', async () => {
    await writeFile(
      path.join(dir, 'broken.yaml'),
      // (A job the web service waits for: its failure is certain, not a race with readiness.)
      `services:\n  migrate:\n    image: ${TESTKIT_IMAGE}\n    command: ["sh", "-c", "echo giving up; exit 3"]\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    depends_on:\n      migrate: { condition: service_completed_successfully }\n`,
    );
    await cli(['up', '-f', path.join(dir, 'broken.yaml'), '--name', 'dash-broken', '--no-wait']);
    await page.goto(`${t.server.url}/environments/dash-broken`);
    const failure = page.getByRole('status');
    await failure.waitFor({ timeout: 120_000 });
    expect(await failure.textContent()).toMatch(/^Failed at job:migrate: exited with code 3/);
    await shot('environment-failed');

    // Redeployed from the page: tried again from the start, and it fails the same way again.
    await page.getByRole('button', { name: 'Redeploy' }).click();
    await page.getByText('redeploy requested: every service restarts in a new container').waitFor();
    await until(
      'the redeploy to fail again',
      async () => {
        const events = (
          await t.api<{ items: { state: string | null }[] }>('GET', '/v1/environments/dash-broken/events')
        ).body.items;
        return events.filter((e) => e.state === 'failed').length === 2 ? true : undefined;
      },
      120_000,
      200,
    );
    await failure.waitFor();

    // The overview lists it among recent failures, beside what the server holds.
    await page.getByRole('link', { name: 'Overview', exact: true }).click();
    const listed = page.locator('li[data-failed-env="dash-broken"]');
    await listed.waitFor();
    expect(await listed.textContent()).toMatch(/failed at job:migrate: exited with code 3/);
    expect(await page.locator('[data-meter="Environments"] dd').textContent()).toMatch(/^1 of \d+$/);
    expect(await page.locator('[data-meter="Built images"] dd').textContent()).toMatch(
      /^\d+(\.\d)? ?(B|KiB|MiB|GiB) of \d+(\.\d)? (MiB|GiB|TiB) \(\d+\)$/,
    );
    await page.locator('[data-meter="Sandboxes"]').waitFor();
    await page.getByRole('link', { name: 'Prometheus metrics' }).waitFor();
    await shot('overview');
    await cli(['destroy', 'dash-broken']);
  });

  it('a project: its pull request with its environment, deliveries and what each did (one redelivered from the page), time from webhook to ready', async () => {
    const repo = await makeTestRepo();
    const secret = 'a-secret-of-the-test';
    const pullRequest = (action: 'opened' | 'closed', head: string, base: string) =>
      deliver(
        t.server.url,
        signedDelivery(
          'pull_request',
          pullRequestPayload({ repo: 'acme/dash', number: 41, action, headSha: head, baseSha: base }),
          secret,
          `delivery-41-${action}`,
        ),
      );
    try {
      const compose = await readFile(path.join(dir, 'compose.yaml'), 'utf8');
      const base = await repo.commit({ 'compose.yaml': compose }, 'app');
      const head = await repo.commit({ 'README.md': 'a change' }, 'change', {
        branch: 'feature',
        pullRequest: 41,
      });
      const created = await t.api('POST', '/v1/projects', {
        name: 'dash',
        repo: repo.url,
        forgeRepo: 'acme/dash',
        webhookSecret: secret,
      });
      expect(created.status).toBe(201);
      expect((await pullRequest('opened', head, base)).status).toBe(202);

      await page.getByRole('link', { name: 'Projects', exact: true }).click();
      await page.locator('tr[data-project="dash"]').getByRole('link', { name: 'dash' }).click();
      const pr = page.locator('tr[data-preview="41"]');
      await pr.locator('.state-ready').waitFor({ timeout: 180_000 });
      expect(await pr.getByRole('link', { name: '#41' }).getAttribute('href')).toMatch(/^https:\/\//);
      await pr.getByRole('link', { name: 'dash-pr-41' }).waitFor();

      // The time it took, as a figure and in the chart (today's bar).
      await page
        .locator('[data-figure="p50"]')
        .getByText(/^\d+(\.\d)?s$|^\d+m\d+s$/)
        .waitFor();
      await page.locator(`svg.chart g[data-day="${new Date().toISOString().slice(0, 10)}"]`).waitFor();

      const delivery = page.locator('tr[data-delivery="delivery-41-opened"]');
      await delivery.getByText(`pull request #41 opened at ${head.slice(0, 12)}`).waitFor();
      await delivery.getByText(/: recorded$/).waitFor();
      await delivery.getByRole('button', { name: 'Redeliver' }).click();
      await page
        .getByRole('status')
        .getByText(/^redelivered: pull request #41/)
        .waitFor();
      await page
        .locator('tr[data-delivery^="redeliver-"]')
        .getByText(/redelivery of delivery-41-opened/)
        .waitFor();
      await shot('project');

      // The environments' list says what made it and links its pull request.
      await page.getByRole('link', { name: 'Environments', exact: true }).click();
      const env = page.locator('tr[data-env="dash-pr-41"]');
      await env.getByText('preview of pull request #41').waitFor();
      expect(await env.getByRole('link', { name: '#41' }).getAttribute('href')).toMatch(/^https:\/\//);
      await page.goBack();

      await pullRequest('closed', head, base);
      await t.waitForState('dash-pr-41', ['destroyed']);
      // Closed since: the page says why a redeliver of the opening is refused.
      await delivery.getByRole('button', { name: 'Redeliver' }).click();
      await page
        .getByRole('alert')
        .getByText(/has been closed since/)
        .waitFor();
    } finally {
      await t.api('DELETE', '/v1/projects/dash');
      await repo.remove();
    }
  });
});
