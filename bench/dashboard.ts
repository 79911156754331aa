/**
 * Dashboard benchmark (issue 11: "a list of 500 environments renders and filters without visible
 * lag"), in Debian's Chromium driven by playwright-core (nothing downloaded), on a control plane of
 * its own with BENCH_DASHBOARD_ENVS (500) real environments: one `testkit sleep` container each,
 * no ports, every one ready, named `web-0`…`shop-99` in projects alpha…delta so a search narrows.
 *
 *   open     navigation to `/` → every row in the table, the frame after it painted (timed in the
 *            page: performance.now() from navigation start); and "data in hand" → painted, the
 *            page's own work (the dashboard: its event stream's snapshot handed to its handler)
 *   type     one key after another into the search box ("web-1", "gamma"; BENCH_DASHBOARD_ROUNDS
 *            rounds): input event → the frame after the table shows the matching rows, painted;
 *            the median and slowest key; then clearing the search (back to every row)
 *   tasks    the longest main-thread task (PerformanceObserver `longtask`, which reports tasks of
 *            50 ms and more: "<50" means none) while opening, and while typing and clearing
 *   idle     the longest gap between frames over 5 s with every row shown, nothing typed
 *
 * Beside it, in the same browser and the same rounds, the raw tool: a plain page (no framework, the
 * dashboard's stylesheet) that fetches the same JSON (GET /v1/environments) from the same server
 * with the same session, builds the same table with DOM calls and filters by `display: none`.
 * Served by Playwright on the server's origin (page.route), not page.setContent: on about:blank it
 * could not ask the API, so its "open" would not include what the dashboard's includes.
 *
 * Creating and destroying the environments (BENCH_DASHBOARD_CONCURRENCY at once) is timed as
 * information; at the end none of their containers or networks may be left.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { type Browser, type BrowserContext, type CDPSession, chromium, type Page } from 'playwright-core';
import type { Environment } from '../packages/contract/src/index.js';
import {
  callApi as call,
  type ControlPlane as Plane,
  startControlPlane,
  stopControlPlane,
} from '../packages/server/src/test-support/control-plane-process.js';
import { median } from './common.js';

const run = promisify(execFile);
const ENVS = Number(process.env.BENCH_DASHBOARD_ENVS ?? 500);
const ROUNDS = Number(process.env.BENCH_DASHBOARD_ROUNDS ?? 7);
const CONCURRENCY = Number(process.env.BENCH_DASHBOARD_CONCURRENCY ?? 12);
const IDLE_MS = 5_000;
const CHROMIUM = '/usr/bin/chromium';
const IMAGE = 'mayfly-test/testkit:latest';
const TEMPLATE = `services:\n  app:\n    image: ${IMAGE}\n    command: ["testkit", "sleep"]\n`;
const PREFIXES = ['web', 'api', 'worker', 'docs', 'shop'];
const PROJECTS = ['alpha', 'beta', 'gamma', 'delta'];
/** Typed one key at a time; after each, the search is cleared (every row back). */
const QUERIES = ['web-1', 'gamma'];
/** Networks of this run's environments come from a range of their own, in /26s (1024 of them). */
const SUBNET_POOL = '10.216.0.0/16';
const SUBNET_SIZE = 26;
const BASELINE_PATH = '/__bench/plain-table';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One measured value: the dashboard's, the plain page's (null: no baseline), the unit. */
export type DashboardRow = [metric: string, dashboard: number | null, baseline: number | null, unit: string];

export interface DashboardBench {
  envs: number;
  rounds: number;
  concurrency: number;
  rows: DashboardRow[];
  /** Where the main thread's time went (Chrome's Performance.getMetrics), ms per measured action. */
  breakdown: Record<string, Record<'dashboard' | 'baseline', Record<string, number>>>;
  samples: Record<string, number[]>;
  /** Containers and networks of this run's environments found after the destroy (must be 0). */
  leftovers: number;
}

export const envName = (i: number) => `${PREFIXES[i % PREFIXES.length]}-${Math.floor(i / PREFIXES.length)}`;
export const envProject = (i: number) => PROJECTS[i % PROJECTS.length]!;

/** The dashboard's search: name or project contains the query, case-insensitive. */
const matches = (q: string, env: { name: string; project: string }) => {
  const query = q.trim().toLowerCase();
  return !query || env.name.toLowerCase().includes(query) || env.project.toLowerCase().includes(query);
};

const list = (plane: Plane) =>
  call<{ items: Environment[] }>(plane, 'GET', '/v1/environments').then((r) => r.items);

/**
 * Creates environment 0…n-1 with at most `concurrency` not yet ready at once. Progress is read from
 * the list (GET /v1/environments, the store only), every 250 ms, one request for all: the GET of
 * one environment asks the engine for its containers and networks, which with hundreds of
 * networks costs the Docker Engine seconds each (see the docs), and pollers would load what they time.
 */
export async function createAll(plane: Plane, n: number, concurrency: number, ids: Set<string>) {
  const start = performance.now();
  let next = 0;
  let reported = 0;
  for (;;) {
    const items = await list(plane);
    const failed = items.find((e) => e.state === 'failed');
    if (failed) throw new Error(`${failed.name} failed: ${failed.failure?.step}: ${failed.failure?.reason}`);
    const ready = items.filter((e) => e.state === 'ready').length;
    if (ready >= n) return (performance.now() - start) / 1000;
    if (ready >= reported + 50) {
      reported = ready - (ready % 50);
      const s = ((performance.now() - start) / 1000).toFixed(0);
      process.stderr.write(`dashboard: ${ready}/${n} ready (${s} s)\n`);
    }
    const posts: Promise<void>[] = [];
    for (let waiting = next - ready; waiting < concurrency && next < n; waiting++) {
      const i = next++;
      posts.push(
        call<Environment>(plane, 'POST', '/v1/environments', {
          name: envName(i),
          project: envProject(i),
          template: { filename: 'compose.yaml', content: TEMPLATE },
        }).then((env) => void ids.add(env.id)),
      );
    }
    await Promise.all(posts);
    if (performance.now() - start > 3_600_000) throw new Error(`${ready} of ${n} ready after an hour`);
    await sleep(250);
  }
}

/** Destroys every environment of the plane, at most `concurrency` tearing down at once; seconds. */
export async function destroyAll(plane: Plane, concurrency: number, ids: Set<string>) {
  const start = performance.now();
  const asked = new Set<string>();
  for (;;) {
    const items = await list(plane); // destroyed ones are not listed
    for (const e of items) ids.add(e.id);
    if (items.length === 0) return (performance.now() - start) / 1000;
    const tearingDown = items.filter((e) => asked.has(e.id) || e.desired === 'absent').length;
    const more = items.filter((e) => !asked.has(e.id) && e.desired !== 'absent');
    await Promise.all(
      more.slice(0, Math.max(0, concurrency - tearingDown)).map((e) => {
        asked.add(e.id);
        return call(plane, 'DELETE', `/v1/environments/${e.id}`);
      }),
    );
    if (performance.now() - start > 3_600_000) throw new Error(`${items.length} left after an hour`);
    await sleep(250);
  }
}

/** This run's environments' containers and networks still in the engine. */
async function leftoversOf(ids: Set<string>): Promise<string[]> {
  const label = '{{.Label "mayfly.env"}} {{.Names}}';
  const [containers, networks] = await Promise.all([
    run('docker', ['ps', '-a', '--filter', 'label=mayfly.env', '--format', label]),
    run('docker', [
      'network',
      'ls',
      '--filter',
      'label=mayfly.env',
      '--format',
      `${label.replace('Names', 'Name')}`,
    ]),
  ]);
  return [...containers.stdout.split('\n'), ...networks.stdout.split('\n')]
    .filter((line) => ids.has(line.split(' ')[0]!))
    .map((line) => line.split(' ')[1]!);
}

/**
 * Installed in every page before its own scripts (so CSP does not apply): marks when the data is
 * in hand and when every row is painted, collects long tasks, and times typing and idling.
 */
const pageScript = (expected: number) => `(() => {
  const b = (window.__bench = { dataAt: null, rowsAt: null, longtasks: [] });
  const take = (list) => { for (const e of list) b.longtasks.push({ start: e.startTime, ms: e.duration }); };
  let observer = null;
  try {
    observer = new PerformanceObserver((list) => take(list.getEntries()));
    observer.observe({ type: 'longtask', buffered: true });
  } catch {}
  b.now = () => performance.now();
  /** The longest task that started in [since, until], or null when none was 50 ms or more. */
  b.longest = (since, until) => {
    if (observer) take(observer.takeRecords());
    const ms = b.longtasks.filter((t) => t.start >= since && t.start <= until).map((t) => t.ms);
    return ms.length ? Math.max(...ms) : null;
  };
  b.visible = () => {
    let n = 0;
    for (const row of document.querySelectorAll('table tbody tr')) if (!row.hidden && row.style.display !== 'none') n++;
    return n;
  };
  /** cb(time) once the frame after the DOM shows \`count\` rows is painted (a task after that frame). */
  const whenShown = (count, cb, deadline) => {
    const check = () => {
      if (b.visible() === count) {
        const channel = new MessageChannel();
        channel.port1.onmessage = () => cb(performance.now());
        channel.port2.postMessage(0);
      } else if (performance.now() > deadline) cb(null);
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  };
  // The dashboard's data in hand: its event stream's snapshot, as its handler gets it.
  if (typeof EventSource === 'function') {
    const add = EventSource.prototype.addEventListener;
    EventSource.prototype.addEventListener = function (type, fn, options) {
      if (type === 'snapshot' && typeof fn === 'function') {
        const inner = fn;
        fn = function (event) {
          if (b.dataAt === null) b.dataAt = performance.now();
          return inner.call(this, event);
        };
      }
      return add.call(this, type, fn, options);
    };
  }
  whenShown(${expected}, (t) => { b.rowsAt = t; }, 120000);
  /** Types \`value\` into the search box; resolves with ms from the input event to painted rows. */
  /** (In a task of the page's own, as a key press is, not in the one that asks from outside.) */
  b.type = (value, count) => new Promise((resolve, reject) => setTimeout(() => {
    const input = document.querySelector('input[type=search]');
    const t0 = performance.now();
    input.value = value;
    input.dispatchEvent(new Event('input', { bubbles: true }));
    whenShown(count, (t) => (t === null ? reject(new Error('rows never matched ' + JSON.stringify(value) + ': ' + b.visible() + ' of ' + count)) : resolve(t - t0)), t0 + 30000);
  }, 0));
  /** The longest gap between two frames over \`ms\`, nothing done meanwhile. */
  b.idle = (ms) => new Promise((resolve) => {
    const start = performance.now();
    let last = start;
    let worst = 0;
    const step = () => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      if (now - start < ms) requestAnimationFrame(step);
      else resolve({ worst, since: start, until: now });
    };
    requestAnimationFrame(step);
  });
})();`;

/** The raw tool: the same table from the same JSON, with DOM calls; filtered with display: none. */
const baselinePage = (stylesheet: string | null) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plain table</title>
${stylesheet ? `<link rel="stylesheet" href="${stylesheet}">` : ''}
</head><body>
<header><strong>Mayfly</strong></header>
<main><section><h1>Environments</h1>
<div class="toolbar"><input type="search" placeholder="Search name or project" aria-label="Search environments"> <span class="muted" id="count"></span></div>
<table><thead><tr><th>Name</th><th>State</th><th class="wide">Project</th><th class="wide">Kind</th><th class="wide">Pull request</th><th class="wide">Created by</th><th>Age</th><th class="wide">Time left</th><th>URLs</th></tr></thead><tbody></tbody></table>
</section></main>
<script>
(async () => {
  const duration = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm';
    const h = Math.floor(m / 60);
    if (h < 24) return m % 60 ? h + 'h' + (m % 60) + 'm' : h + 'h';
    const d = Math.floor(h / 24);
    return h % 24 ? d + 'd' + (h % 24) + 'h' : d + 'd';
  };
  const res = await fetch('/v1/environments', { headers: { 'x-mayfly-dashboard': '1' } });
  const text = await res.text();
  window.__bench.dataAt = performance.now();
  const items = JSON.parse(text).items.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const now = Date.now();
  const rows = [];
  const fragment = document.createDocumentFragment();
  for (const env of items) {
    const tr = document.createElement('tr');
    tr.dataset.env = env.name;
    const cell = (content, cls) => {
      const td = document.createElement('td');
      if (cls) td.className = cls;
      if (content !== null) td.textContent = content;
      tr.appendChild(td);
      return td;
    };
    const link = document.createElement('a');
    link.href = '/environments/' + encodeURIComponent(env.name);
    link.textContent = env.name;
    cell(null).appendChild(link);
    cell(env.state, 'state-' + env.state);
    cell(env.project, 'wide');
    cell(env.kind, 'wide');
    const pr = cell(null, 'wide');
    if (env.pullRequest) {
      const a = document.createElement('a');
      a.href = env.pullRequest.url || '';
      a.textContent = '#' + env.pullRequest.number;
      pr.appendChild(a);
    }
    cell(env.createdBy || '—', 'wide');
    cell(duration(now - Date.parse(env.createdAt)));
    const left = env.expiresAt === null ? 'no limit' : Date.parse(env.expiresAt) <= now ? 'due' : duration(Date.parse(env.expiresAt) - now);
    cell(env.keep ? 'kept' : left, 'wide');
    const urls = cell(null);
    for (const [service, url] of Object.entries(env.urls)) {
      const div = document.createElement('div');
      const a = document.createElement('a');
      a.href = url;
      a.textContent = service;
      div.appendChild(a);
      urls.appendChild(div);
    }
    fragment.appendChild(tr);
    rows.push({ tr, name: env.name.toLowerCase(), project: env.project.toLowerCase() });
  }
  document.querySelector('tbody').appendChild(fragment);
  const count = document.getElementById('count');
  count.textContent = rows.length + ' of ' + rows.length;
  document.querySelector('input[type=search]').addEventListener('input', (e) => {
    const q = e.target.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const show = !q || row.name.includes(q) || row.project.includes(q);
      row.tr.style.display = show ? '' : 'none';
      if (show) shown++;
    }
    count.textContent = shown + ' of ' + rows.length;
  });
})();
</script></body></html>`;

type Which = 'dashboard' | 'baseline';
const METRICS = ['TaskDuration', 'ScriptDuration', 'RecalcStyleDuration', 'LayoutDuration'] as const;

/** Chrome's own count of main-thread time (seconds, cumulative), to tell script from style and layout. */
async function mainThread(cdp: CDPSession): Promise<Record<string, number>> {
  const { metrics } = (await cdp.send('Performance.getMetrics')) as {
    metrics: { name: string; value: number }[];
  };
  return Object.fromEntries(METRICS.map((m) => [m, metrics.find((x) => x.name === m)?.value ?? 0]));
}

interface Samples {
  openMs: number[];
  openFromDataMs: number[];
  keyMs: number[];
  clearMs: number[];
  longestOpenMs: (number | null)[];
  longestTypingMs: (number | null)[];
  idleWorstFrameMs: number[];
  idleLongestMs: (number | null)[];
  /** Main-thread time per action, ms: opening; each key or clear. */
  openThread: Record<string, number>[];
  keyThread: Record<string, number>[];
  clearThread: Record<string, number>[];
}
const emptySamples = (): Samples => ({
  openMs: [],
  openFromDataMs: [],
  keyMs: [],
  clearMs: [],
  longestOpenMs: [],
  longestTypingMs: [],
  idleWorstFrameMs: [],
  idleLongestMs: [],
  openThread: [],
  keyThread: [],
  clearThread: [],
});

const diffMs = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries(METRICS.map((m) => [m, ((b[m] ?? 0) - (a[m] ?? 0)) * 1000]));

/** Opens the page, waits for every row painted; returns its marks (ms since navigation start). */
async function open(page: Page, cdp: CDPSession, url: string, s: Samples | null) {
  await page.goto(url, { waitUntil: 'commit' });
  // Asked from here every 100 ms (waitForFunction would eval in the page, which its CSP refuses).
  for (let waited = 0; !(await page.evaluate('!!(window.__bench && window.__bench.rowsAt)')); waited += 100) {
    if (waited > 120_000) throw new Error(`${url}: the rows were never all painted`);
    await sleep(100);
  }
  const marks = (await page.evaluate(
    '({ dataAt: __bench.dataAt, rowsAt: __bench.rowsAt, longest: __bench.longest(0, __bench.rowsAt) })',
  )) as { dataAt: number | null; rowsAt: number; longest: number | null };
  const after = await mainThread(cdp);
  if (marks.dataAt === null) throw new Error(`${url}: the rows were painted, but no data was seen arriving`);
  if (s) {
    s.openMs.push(marks.rowsAt);
    s.openFromDataMs.push(marks.rowsAt - marks.dataAt);
    s.longestOpenMs.push(marks.longest);
    // Chrome counts afresh for each document: what the new one did from its start.
    s.openThread.push(diffMs({}, after));
  }
}

/** Each query typed a key at a time (100 ms apart, as a quick typist), then cleared. */
async function typing(page: Page, cdp: CDPSession, counts: (q: string) => number, total: number, s: Samples) {
  const since = (await page.evaluate('__bench.now()')) as number;
  for (const query of QUERIES) {
    for (let k = 1; k <= query.length + 1; k++) {
      const value = k <= query.length ? query.slice(0, k) : '';
      const expected = k <= query.length ? counts(value) : total;
      await sleep(100);
      const before = await mainThread(cdp);
      const ms = (await page.evaluate(`__bench.type(${JSON.stringify(value)}, ${expected})`)) as number;
      (value ? s.keyThread : s.clearThread).push(diffMs(before, await mainThread(cdp)));
      (value ? s.keyMs : s.clearMs).push(ms);
    }
  }
  await sleep(100);
  s.longestTypingMs.push((await page.evaluate(`__bench.longest(${since}, __bench.now())`)) as number | null);
}

async function idle(page: Page, s: Samples) {
  const r = (await page.evaluate(`__bench.idle(${IDLE_MS})`)) as {
    worst: number;
    since: number;
    until: number;
  };
  s.idleWorstFrameMs.push(r.worst);
  s.idleLongestMs.push((await page.evaluate(`__bench.longest(${r.since}, ${r.until})`)) as number | null);
}

/** Medians of the non-null values; null when every one was null (no long task at all). */
const medianOrNull = (xs: (number | null)[]) => {
  const known = xs.filter((x): x is number => x !== null);
  return known.length ? median(known) : null;
};
const maxOrNull = (xs: (number | null)[]) => {
  const known = xs.filter((x): x is number => x !== null);
  return known.length ? Math.max(...known) : null;
};
const perAction = (xs: Record<string, number>[]) =>
  Object.fromEntries(METRICS.map((m) => [m, median(xs.map((x) => x[m] ?? 0))]));

async function measureBrowser(
  context: BrowserContext,
  plane: Plane,
  items: { name: string; project: string }[],
): Promise<{ dashboard: Samples; baseline: Samples }> {
  const total = items.length;
  const counts = (q: string) => items.filter((e) => matches(q, e)).length;
  const html = await (await fetch(`${plane.url}/`)).text();
  const stylesheet = /<link rel="stylesheet"[^>]*href="(\/assets\/[^"]+\.css)"/.exec(html)?.[1] ?? null;
  const baselineHtml = baselinePage(stylesheet);
  await context.addInitScript({ content: pageScript(total) });
  await context.route(`${plane.url}${BASELINE_PATH}`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: baselineHtml }),
  );
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));

  // Logged in as a user is: the one-time link (the page asks nothing when no session exists).
  const { url: link } = await call<{ url: string }>(plane, 'POST', '/v1/dashboard/login-links');
  await page.goto(link);
  await page.getByRole('heading', { name: 'Environments' }).waitFor();
  if (new URL(page.url()).pathname !== '/') throw new Error(`login ended at ${page.url()}`);

  const urls: Record<Which, string> = {
    dashboard: `${plane.url}/`,
    baseline: `${plane.url}${BASELINE_PATH}`,
  };
  const samples = { dashboard: emptySamples(), baseline: emptySamples() };
  // Warm-up (not counted): the browser's caches and both pages' code compiled once.
  for (const which of ['dashboard', 'baseline'] as const) {
    await open(page, cdp, urls[which], null);
    await typing(page, cdp, counts, total, emptySamples());
  }
  // Rounds interleaved, so whatever else the machine does hits both alike.
  for (let r = 0; r < ROUNDS; r++) {
    process.stderr.write(`dashboard: browser round ${r + 1}/${ROUNDS}\n`);
    for (const which of ['dashboard', 'baseline'] as const) {
      await open(page, cdp, urls[which], samples[which]);
      await typing(page, cdp, counts, total, samples[which]);
    }
  }
  process.stderr.write(`dashboard: ${IDLE_MS / 1000} s idle on each page\n`);
  for (const which of ['dashboard', 'baseline'] as const) {
    await open(page, cdp, urls[which], null);
    await sleep(1_000);
    await idle(page, samples[which]);
  }
  if (errors.length) throw new Error(`errors in the page: ${errors.join('; ')}`);
  await page.close();
  return samples;
}

export async function benchDashboard(): Promise<DashboardBench> {
  // One network each, from the pool.
  if (!Number.isInteger(ENVS) || ENVS < 1 || ENVS > 2 ** (SUBNET_SIZE - 16))
    throw new Error(`BENCH_DASHBOARD_ENVS=${ENVS}: between 1 and ${2 ** (SUBNET_SIZE - 16)}`);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-dash-'));
  const plane = await startControlPlane(dataDir, undefined, {
    maxEnvironments: ENVS + 10,
    dockerSubnetPool: SUBNET_POOL,
    dockerSubnetSize: SUBNET_SIZE,
    // A server as it runs in production: the test settings of serve-process.ts (a pass every
    // 200 ms, garbage collection every second) would have it do far more than a user's would.
    reconcileIntervalMs: 2_000,
    gcIntervalMs: 30_000,
    logLevel: 'error',
  });
  let browser: Browser | undefined;
  const ids = new Set<string>();
  let createSeconds = 0;
  let destroySeconds = 0;
  let leftovers: string[] = [];
  let measured: { dashboard: Samples; baseline: Samples } | undefined;
  try {
    process.stderr.write(`dashboard: creating ${ENVS} environments, ${CONCURRENCY} at once…\n`);
    createSeconds = await createAll(plane, ENVS, CONCURRENCY, ids);

    const items = await list(plane);
    const notReady = items.filter((e) => e.state !== 'ready');
    if (items.length !== ENVS || notReady.length)
      throw new Error(`${items.length} environments, ${notReady.length} of them not ready`);

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    measured = await measureBrowser(context, plane, items);
  } finally {
    await browser?.close().catch(() => {});
    try {
      // Every environment this plane has (also those a failure left half made).
      process.stderr.write('dashboard: destroying the environments…\n');
      destroySeconds = await destroyAll(plane, CONCURRENCY, ids);
      leftovers = await leftoversOf(ids);
    } finally {
      await stopControlPlane(plane);
      await rm(dataDir, { recursive: true, force: true });
    }
  }
  if (leftovers.length)
    throw new Error(`${leftovers.length} containers or networks of this run left: ${leftovers.join(', ')}`);
  const { dashboard: d, baseline: b } = measured!;

  const rows: DashboardRow[] = [
    [`open /: navigation → ${ENVS} rows painted`, median(d.openMs), median(b.openMs), 'ms'],
    ['open /: data in hand → rows painted', median(d.openFromDataMs), median(b.openFromDataMs), 'ms'],
    [`type "${QUERIES.join('", "')}": key → rows painted, median`, median(d.keyMs), median(b.keyMs), 'ms'],
    ['type: slowest key', Math.max(...d.keyMs), Math.max(...b.keyMs), 'ms'],
    [`clear the search → ${ENVS} rows painted`, median(d.clearMs), median(b.clearMs), 'ms'],
    ['longest task, opening (median)', medianOrNull(d.longestOpenMs), medianOrNull(b.longestOpenMs), 'ms'],
    [
      'longest task, typing + clearing (worst)',
      maxOrNull(d.longestTypingMs),
      maxOrNull(b.longestTypingMs),
      'ms',
    ],
    [`idle ${IDLE_MS / 1000} s: longest frame`, median(d.idleWorstFrameMs), median(b.idleWorstFrameMs), 'ms'],
    [`idle ${IDLE_MS / 1000} s: longest task`, maxOrNull(d.idleLongestMs), maxOrNull(b.idleLongestMs), 'ms'],
    [`create ${ENVS} envs to ready, ${CONCURRENCY} at once`, createSeconds, null, 's'],
    [`destroy ${ENVS} envs, ${CONCURRENCY} at once`, destroySeconds, null, 's'],
  ];
  return {
    envs: ENVS,
    rounds: ROUNDS,
    concurrency: CONCURRENCY,
    rows,
    breakdown: {
      open: { dashboard: perAction(d.openThread), baseline: perAction(b.openThread) },
      key: { dashboard: perAction(d.keyThread), baseline: perAction(b.keyThread) },
      clear: { dashboard: perAction(d.clearThread), baseline: perAction(b.clearThread) },
    },
    samples: {
      dashboardOpenMs: d.openMs,
      baselineOpenMs: b.openMs,
      dashboardOpenFromDataMs: d.openFromDataMs,
      baselineOpenFromDataMs: b.openFromDataMs,
      dashboardKeyMs: d.keyMs,
      baselineKeyMs: b.keyMs,
      dashboardClearMs: d.clearMs,
      baselineClearMs: b.clearMs,
      dashboardIdleWorstFrameMs: d.idleWorstFrameMs,
      baselineIdleWorstFrameMs: b.idleWorstFrameMs,
    },
    leftovers: leftovers.length,
  };
}
