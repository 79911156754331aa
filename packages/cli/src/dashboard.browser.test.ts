/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core; nothing is
 * downloaded): logged in with the link `mayfly dashboard --print-url` prints, an environment made
 * with `mayfly up` appears in the list by itself and turns ready, and one destroyed with `mayfly
 * destroy` leaves it. Screenshots of each page go to .mayfly/screenshots/.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';

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
    expect(await row.getByRole('link', { name: 'web' }).getAttribute('href')).toMatch(
      /^http:\/\/web--dash-live\.localhost:\d+\/$/,
    );
    // Search narrows the list.
    await page.getByLabel('Search environments').fill('no-such-name');
    await row.waitFor({ state: 'detached' });
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
    await row.getByRole('link', { name: id }).click();
    await page.getByText('connected').waitFor();
    await page.locator('.xterm').click();
    await page.keyboard.type('echo "hello from $(hostname) $((6 * 7))"');
    await page.keyboard.press('Enter');
    await page
      .locator('.xterm-rows')
      .getByText(/hello from \S+ 42/)
      .waitFor();
    await shot('sandbox-terminal');
    await cli(['sandbox', 'kill', id]);
    await page.getByRole('link', { name: 'Sandboxes', exact: true }).click();
    await row.getByText('ended (killed)').waitFor();
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
    await cli(['destroy', 'dash-broken']);
  });
});
