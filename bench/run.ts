/**
 * Benchmark: Mayfly against docker-compose on the example shop, in the same run, on the same
 * engine, with images already built. Prints a table and writes bench/results/<time>.json.
 *
 *   create   Mayfly: API request → state ready (every health check passed, the job done);
 *            and the same through `mayfly up`, the CLI process's start included
 *            docker-compose: `up -d` → the same health checks passing (compose v1 has no --wait)
 *   destroy  Mayfly: API request → destroyed (verified: no labelled object left)
 *            docker-compose: `down -v`
 *   RSS      the control plane process with 0 and with 50 ready environments
 *   CLI      start to exit of `mayfly --version` against `node -e 0` (Node's own start), and of
 *            `mayfly ls` against curl asking the API the same (median of BENCH_CLI_RUNS, interleaved)
 *
 *   previews a signed webhook → the preview ready, against git clone + build + up by hand
 *            (see bench/previews.ts)
 *
 *   sandboxes create → first command (warm pool and cold) against `docker run --rm`, exec round
 *            trip against `docker exec`, idle sandboxes that fit (see bench/sandboxes.ts)
 *
 *   kubernetes the example and one service on the cluster against Docker and the raw API, 20
 *            environments at once (see bench/kubernetes.ts)
 *
 *   dashboard 500 real environments in Chromium: opening the list and typing into its search,
 *            against a plain DOM table of the same JSON in the same browser (see bench/dashboard.ts)
 *
 *   seeding  a PostgreSQL seeded by a job (bulk load + many small statements) against the same
 *            restored from its snapshot and against no seed at all (see bench/seeding.ts)
 *
 * BENCH_ONLY=cli measures only the CLI start times (a few seconds, no docker-compose needed);
 * BENCH_ONLY=previews only the previews; BENCH_ONLY=sandboxes only the sandboxes; BENCH_ONLY=e2b
 * only the E2B path (see bench/e2b.ts); BENCH_ONLY=kubernetes only the cluster; BENCH_ONLY=dashboard
 * only the dashboard; BENCH_ONLY=seeding only seeded data.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  callApi as call,
  type ControlPlane as Plane,
  startControlPlane as startPlane,
  stopControlPlane,
} from '../packages/server/src/test-support/control-plane-process.js';
import { mayflyDown, mayflyUp, median, rssKb, timed, waitState } from './common.js';
import { benchDashboard, type DashboardBench } from './dashboard.js';
import { benchE2b } from './e2b.js';
import { benchKubernetes, type KubernetesBench } from './kubernetes.js';
import { benchPreviews, type PreviewBench } from './previews.js';
import { benchSandboxes, type SandboxBench } from './sandboxes.js';
import { benchSeeding, type SeedingBench } from './seeding.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const composeFile = path.join(root, 'examples/shop/compose.yaml');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RSS_ENVS = Number(process.env.BENCH_RSS_ENVS ?? 50);
const CLI_RUNS = Number(process.env.BENCH_CLI_RUNS ?? 21);
const ONLY = process.env.BENCH_ONLY;
if (
  ONLY !== undefined &&
  !['cli', 'previews', 'sandboxes', 'e2b', 'kubernetes', 'dashboard', 'seeding'].includes(ONLY)
)
  throw new Error(
    `BENCH_ONLY=${ONLY}: only "cli", "previews", "sandboxes", "e2b", "kubernetes", "dashboard" and "seeding" are known`,
  );
const mayflyBin = path.join(root, 'packages/cli/bin/mayfly.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function mayflyCliUp(plane: Plane, name: string) {
  await run(
    process.execPath,
    [path.join(root, 'packages/cli/bin/mayfly.js'), 'up', '-f', composeFile, '--name', name],
    {
      env: { ...process.env, MAYFLY_URL: plane.url, MAYFLY_TOKEN: plane.token },
    },
  );
}

const composeWith = (file: string, project: string, ...args: string[]) =>
  run('docker-compose', ['-p', project, '-f', file, ...args], { maxBuffer: 64 * 1024 * 1024 });
const compose = (project: string, ...args: string[]) => composeWith(composeFile, project, ...args);

/** Waits as Mayfly does: every container with a health check healthy, every one-off exited 0. */
async function composeUpAndWait(project: string, file = composeFile) {
  await composeWith(file, project, 'up', '-d');
  for (;;) {
    const { stdout } = await run('docker', [
      'ps',
      '-aq',
      '--filter',
      `label=com.docker.compose.project=${project}`,
    ]);
    const ids = stdout.split('\n').filter(Boolean);
    const { stdout: states } = await run('docker', [
      'inspect',
      '--format',
      '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}',
      ...ids,
    ]);
    const rows = states.trim().split('\n');
    const done = rows.every((r) => {
      const [status, health, code] = r.split(' ');
      return (
        (status === 'running' && (health === 'healthy' || health === 'none')) ||
        (status === 'exited' && code === '0')
      );
    });
    if (ids.length >= 4 && done) return;
    await sleep(50);
  }
}

/** Wall time of one process from spawn to exit, in ms; rejects unless it exits 0. */
function processMs(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      const ms = performance.now() - start;
      if (code === 0) resolve(ms);
      else reject(new Error(`${cmd} ${args.join(' ')}: ${signal ?? `exit code ${code}`}\n${stderr}`));
    });
  });
}

/**
 * How long the CLI takes to start and finish, against the raw tools in the same conditions: each
 * round runs the four commands one after the other, so load on the machine hits them alike.
 */
async function cliStartTimes(plane: Plane) {
  // The numbers are about the bundle users run; bin/mayfly.js would fall back to tsx without it.
  await run(process.execPath, [path.join(root, 'scripts/build.mjs'), '--if-stale']);
  if (!existsSync(path.join(root, 'packages/cli/dist/main.js')))
    throw new Error('packages/cli/dist not built');
  const env: NodeJS.ProcessEnv = { ...process.env, MAYFLY_URL: plane.url, MAYFLY_TOKEN: plane.token };
  delete env.MAYFLY_DEBUG; // it turns on source maps, which cost start time
  const commands = {
    node: () => processMs(process.execPath, ['-e', '0']),
    version: () => processMs(process.execPath, [mayflyBin, '--version'], env),
    curl: () =>
      processMs('curl', [
        '-sf',
        '-o',
        '/dev/null',
        '-H',
        `Authorization: Bearer ${plane.token}`,
        `${plane.url}/v1/environments`,
      ]),
    ls: () => processMs(process.execPath, [mayflyBin, 'ls'], env),
  };
  const ms = { node: [] as number[], version: [] as number[], curl: [] as number[], ls: [] as number[] };
  for (const fn of Object.values(commands)) await fn(); // warm the file cache; not counted
  for (let i = 0; i < CLI_RUNS; i++) {
    for (const [name, fn] of Object.entries(commands)) ms[name as keyof typeof ms].push(await fn());
  }
  const version = { mayfly: median(ms.version), node: median(ms.node) };
  const ls = { mayfly: median(ms.ls), curl: median(ms.curl) };
  return {
    samples: ms,
    rows: [
      ['`mayfly --version` vs `node -e 0` (ms)', version.mayfly, version.node],
      ['`mayfly ls` vs curl of the API (ms)', ls.mayfly, ls.curl],
    ] as const,
    median: {
      'mayfly --version (ms)': { ...version, ratio: version.mayfly / version.node },
      'mayfly ls (ms)': { ...ls, ratio: ls.mayfly / ls.curl },
    },
  };
}

function printTable(table: string[][]) {
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  for (const row of table) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
}

async function writeResults(out: { at: string; [key: string]: unknown }) {
  const resultsDir = path.join(root, 'bench/results');
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${out.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwritten ${path.relative(root, file)}`);
}

const machine = () => ({ cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30) });

/** The CLI part of the results file: medians (with their ratio to the raw tool) and every sample. */
function cliJson(cli: Awaited<ReturnType<typeof cliStartTimes>>) {
  return { cliMedian: cli.median, cliMs: cli.samples };
}

const sandboxTable = (s: SandboxBench, first = 'mayfly') => [
  ['metric', first, 'docker run', 'ratio'],
  ...s.rows.map(([m, a, b]) => [
    m,
    Number.isInteger(a) ? String(a) : a.toFixed(1),
    b === null ? '' : b.toFixed(1),
    b === null ? '' : (a / b).toFixed(2),
  ]),
  ...Object.entries(s.goals).map(([what, g]) => [
    `goal: ${what}`,
    g.value.toFixed(2),
    g.goal,
    g.met ? 'met' : 'NOT MET',
  ]),
];
const sandboxJson = (s: SandboxBench) => ({
  sandboxes: Object.fromEntries(
    s.rows.map(([m, a, b]) => [m, { mayfly: a, docker: b, ratio: b === null ? null : a / b }]),
  ),
  sandboxGoals: s.goals,
  sandboxSamplesMs: s.samples,
});

const e2bJson = (s: SandboxBench) => ({
  e2b: Object.fromEntries(
    s.rows.map(([m, a, b]) => [m, { value: a, docker: b, ratio: b === null ? null : a / b }]),
  ),
  e2bGoals: s.goals,
  e2bSamplesMs: s.samples,
});

const kubernetesTable = (k: KubernetesBench) => [
  ['metric', 'on Kubernetes', 'baseline', 'ratio', 'baseline is'],
  ...k.rows.map(([m, a, b, what]) => [m, a.toFixed(2), b.toFixed(2), (a / b).toFixed(2), what]),
];
const kubernetesJson = (k: KubernetesBench) => ({
  kubernetes: Object.fromEntries(
    k.rows.map(([m, a, b, what]) => [m, { kubernetes: a, baseline: b, baselineIs: what, ratio: a / b }]),
  ),
  kubernetesSamplesSeconds: k.samples,
});

const dashboardTable = (d: DashboardBench) => [
  ['metric', 'dashboard', 'plain DOM', 'ratio'],
  ...d.rows.map(([m, a, b, unit]) => {
    const cell = (x: number | null) =>
      x === null ? (unit === 'ms' ? '<50' : '') : x.toFixed(unit === 's' ? 1 : x < 100 ? 1 : 0);
    return [
      `${m} (${unit})`,
      cell(a),
      b === null && unit === 's' ? '' : cell(b),
      a === null || b === null ? '' : (a / b).toFixed(2),
    ];
  }),
];
const dashboardJson = (d: DashboardBench) => ({
  dashboard: {
    envs: d.envs,
    rounds: d.rounds,
    concurrency: d.concurrency,
    ...Object.fromEntries(
      d.rows.map(([m, a, b, unit]) => [
        `${m} (${unit})`,
        { dashboard: a, plainDom: b, ratio: a === null || b === null ? null : a / b },
      ]),
    ),
  },
  dashboardMainThreadMs: d.breakdown,
  dashboardSamplesMs: d.samples,
  dashboardLeftovers: d.leftovers,
});

const seedingTable = (s: SeedingBench) => [
  ['metric', 'mayfly', 'baseline', 'ratio', 'baseline is'],
  ...s.rows.map(([m, a, b, what, unit]) => [
    `${m} (${unit})`,
    a.toFixed(2),
    b === null ? '' : b.toFixed(2),
    b === null ? '' : (a / b).toFixed(2),
    what,
  ]),
  ...Object.entries(s.goals).map(([what, g]) => [
    `goal: ${what}`,
    g.value.toFixed(2),
    g.goal,
    g.met ? 'met' : 'NOT MET',
    '',
  ]),
];
const seedingJson = (s: SeedingBench) => ({
  seeding: Object.fromEntries(
    s.rows.map(([m, a, b, what, unit]) => [
      `${m} (${unit})`,
      { mayfly: a, baseline: b, baselineIs: what, ratio: b === null ? null : a / b },
    ]),
  ),
  seedingGoals: s.goals,
  seedingSamples: s.samples,
});

async function main() {
  if (ONLY === 'seeding') {
    const seeding = await benchSeeding();
    printTable(seedingTable(seeding));
    await writeResults({
      at: new Date().toISOString(),
      only: 'seeding',
      rounds: ROUNDS,
      machine: machine(),
      ...seedingJson(seeding),
    });
    return;
  }
  if (ONLY === 'kubernetes') {
    const kubernetes = await benchKubernetes(path.dirname(composeFile));
    printTable(kubernetesTable(kubernetes));
    await writeResults({
      at: new Date().toISOString(),
      only: 'kubernetes',
      rounds: ROUNDS,
      machine: machine(),
      ...kubernetesJson(kubernetes),
    });
    return;
  }
  if (ONLY === 'dashboard') {
    const dashboard = await benchDashboard();
    printTable(dashboardTable(dashboard));
    console.log('(<50: no task of 50 ms or more, what the browser counts as a long task)');
    await writeResults({
      at: new Date().toISOString(),
      only: 'dashboard',
      machine: machine(),
      ...dashboardJson(dashboard),
    });
    return;
  }
  if (ONLY === 'e2b') {
    const e2b = await benchE2b();
    printTable(sandboxTable(e2b, 'value'));
    await writeResults({ at: new Date().toISOString(), only: 'e2b', machine: machine(), ...e2bJson(e2b) });
    return;
  }
  if (ONLY === 'sandboxes') {
    const sandboxes = await benchSandboxes();
    printTable(sandboxTable(sandboxes));
    await writeResults({
      at: new Date().toISOString(),
      only: 'sandboxes',
      machine: machine(),
      ...sandboxJson(sandboxes),
    });
    return;
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-'));
  const dir = path.dirname(composeFile);
  const plane = await startPlane(dataDir);
  try {
    // First, while no environment keeps the engine and the control plane busy.
    process.stderr.write(`CLI start times (${CLI_RUNS} runs)…\n`);
    const cli = await cliStartTimes(plane);
    const cliRows = cli.rows.map(([m, a, b]) => [m, a.toFixed(0), b.toFixed(0), (a / b).toFixed(2)]);
    if (ONLY === 'cli') {
      printTable([['metric', 'mayfly', 'baseline', 'ratio'], ...cliRows]);
      const at = new Date().toISOString();
      await writeResults({ at, only: 'cli', cliRuns: CLI_RUNS, machine: machine(), ...cliJson(cli) });
      return;
    }

    const previewTable = (p: PreviewBench) => [
      ['metric', 'mayfly', 'by hand', 'ratio'],
      ...p.rows.map(([m, a, b]) => [m, a.toFixed(2), b.toFixed(2), (a / b).toFixed(2)]),
      ...Object.entries(p.goals).map(([what, g]) => [
        `goal: ${what}`,
        typeof g.value === 'number' ? g.value.toFixed(2) : String(g.value),
        g.goal,
        g.met ? 'met' : 'NOT MET',
      ]),
    ];
    const previewJson = (p: PreviewBench) => ({
      previews: Object.fromEntries(p.rows.map(([m, a, b]) => [m, { mayfly: a, byHand: b, ratio: a / b }])),
      previewGoals: p.goals,
    });
    if (ONLY === 'previews') {
      await compose('benchwarm', 'build');
      const previews = await benchPreviews(plane, dir, composeUpAndWait);
      printTable(previewTable(previews));
      await writeResults({
        at: new Date().toISOString(),
        only: 'previews',
        machine: machine(),
        ...previewJson(previews),
      });
      return;
    }

    // Warm-up: both tools build their images once; nothing below measures a build.
    process.stderr.write('warming up (building images if needed)…\n');
    await mayflyUp(plane, 'bench-warm', dir);
    await mayflyDown(plane, 'bench-warm');
    await compose('benchwarm', 'build');
    await composeUpAndWait('benchwarm');
    await compose('benchwarm', 'down', '-v');

    const results = {
      mayflyCreate: [] as number[],
      mayflyCliCreate: [] as number[],
      composeCreate: [] as number[],
      mayflyDestroy: [] as number[],
      composeDestroy: [] as number[],
    };
    for (let i = 0; i < ROUNDS; i++) {
      process.stderr.write(`round ${i + 1}/${ROUNDS}\n`);
      results.mayflyCreate.push(await timed(() => mayflyUp(plane, `bench-${i}`, dir)));
      await mayflyDown(plane, `bench-${i}`);
      // The same through the CLI, process start included, as a user types it.
      results.mayflyCliCreate.push(await timed(() => mayflyCliUp(plane, `bench-${i}`)));
      results.mayflyDestroy.push(await timed(() => mayflyDown(plane, `bench-${i}`)));
      results.composeCreate.push(await timed(() => composeUpAndWait(`bench${i}`)));
      results.composeDestroy.push(await timed(() => compose(`bench${i}`, 'down', '-v')));
    }

    process.stderr.write(`control plane RSS with 0 and ${RSS_ENVS} environments…\n`);
    await sleep(500);
    const rssIdle = await rssKb(plane.child.pid!);
    const light = `services:\n  app:\n    image: mayfly-test/testkit:latest\n    command: ["testkit", "sleep"]\n`;
    const names = Array.from({ length: RSS_ENVS }, (_, i) => `rss-${i}`);
    for (const name of names)
      await call(plane, 'POST', '/v1/environments', {
        name,
        template: { filename: 'compose.yaml', content: light },
      });
    for (const name of names) await waitState(plane, name, ['ready']);
    await sleep(1000);
    const rssLoaded = await rssKb(plane.child.pid!);
    const destroyAll = await timed(async () => {
      for (const name of names) await call(plane, 'DELETE', `/v1/environments/${name}`);
      for (const name of names) await waitState(plane, name, ['destroyed']);
    });

    const rows = [
      ['create, example to ready (s)', median(results.mayflyCreate), median(results.composeCreate)],
      ['create via `mayfly up` CLI (s)', median(results.mayflyCliCreate), median(results.composeCreate)],
      ['destroy, example (s)', median(results.mayflyDestroy), median(results.composeDestroy)],
    ] as const;
    const table = [
      ['metric', 'mayfly', 'docker-compose', 'ratio'],
      ...rows.map(([m, a, b]) => [m, a.toFixed(2), b.toFixed(2), (a / b).toFixed(2)]),
      ...cliRows,
      ['control plane RSS, 0 envs (MiB)', (rssIdle / 1024).toFixed(1), '', ''],
      [`control plane RSS, ${RSS_ENVS} envs (MiB)`, (rssLoaded / 1024).toFixed(1), '', ''],
      [`destroy ${RSS_ENVS} envs (s)`, destroyAll.toFixed(2), '', ''],
    ];
    printTable(table);
    console.log('(the CLI rows compare with the tool they name, not docker-compose)');
    process.stderr.write('previews…\n');
    const previews = await benchPreviews(plane, dir, composeUpAndWait);
    console.log('');
    printTable(previewTable(previews));
    process.stderr.write('sandboxes…\n');
    const sandboxes = await benchSandboxes();
    console.log('');
    printTable(sandboxTable(sandboxes));
    process.stderr.write('e2b…\n');
    const e2b = await benchE2b();
    console.log('');
    printTable(sandboxTable(e2b, 'value'));
    process.stderr.write('dashboard…\n');
    const dashboard = await benchDashboard();
    console.log('');
    printTable(dashboardTable(dashboard));
    process.stderr.write('seeding…\n');
    const seeding = await benchSeeding();
    console.log('');
    printTable(seedingTable(seeding));
    // With a cluster (scripts/bench.sh starts one unless MAYFLY_SKIP_KUBERNETES=1).
    const kubernetes = process.env.MAYFLY_BENCH_KUBECONFIG ? await benchKubernetes(dir) : null;
    if (kubernetes) {
      console.log('');
      printTable(kubernetesTable(kubernetes));
    }

    await writeResults({
      at: new Date().toISOString(),
      rounds: ROUNDS,
      cliRuns: CLI_RUNS,
      machine: machine(),
      seconds: results,
      median: Object.fromEntries(rows.map(([m, a, b]) => [m, { mayfly: a, compose: b, ratio: a / b }])),
      rssMiB: { idle: rssIdle / 1024, [`envs${RSS_ENVS}`]: rssLoaded / 1024 },
      destroyAllSeconds: destroyAll,
      ...cliJson(cli),
      ...previewJson(previews),
      ...sandboxJson(sandboxes),
      ...e2bJson(e2b),
      ...dashboardJson(dashboard),
      ...seedingJson(seeding),
      ...(kubernetes ? kubernetesJson(kubernetes) : {}),
    });
  } finally {
    // The example's seeded database is kept as a snapshot: not past this run.
    const { items } = await call<{ items: { project: string; name: string }[] }>(
      plane,
      'GET',
      '/v1/snapshots',
    );
    for (const s of items) await call(plane, 'DELETE', `/v1/snapshots/${s.project}/${s.name}`);
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
