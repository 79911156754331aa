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
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  callApi as call,
  type ControlPlane as Plane,
  startControlPlane as startPlane,
  stopControlPlane,
  uploadBundle,
  waitForState,
} from '../packages/server/src/test-support/control-plane-process.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const composeFile = path.join(root, 'examples/shop/compose.yaml');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RSS_ENVS = Number(process.env.BENCH_RSS_ENVS ?? 50);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

const waitState = (plane: Plane, name: string, states: string[]) =>
  waitForState(plane, name, states, 600_000);

/** As the CLI does it: the template's folder uploaded as a bundle, then the environment created from it. */
async function mayflyUp(plane: Plane, name: string, dir: string) {
  const bundle = await uploadBundle(plane, dir);
  await call(plane, 'POST', '/v1/environments', {
    name,
    template: { filename: 'compose.yaml', bundle },
  });
  await waitState(plane, name, ['ready']);
}

async function mayflyCliUp(plane: Plane, name: string) {
  await run(
    process.execPath,
    [path.join(root, 'packages/cli/bin/mayfly.js'), 'up', '-f', composeFile, '--name', name],
    {
      env: { ...process.env, MAYFLY_URL: plane.url, MAYFLY_TOKEN: plane.token },
    },
  );
}

async function mayflyDown(plane: Plane, name: string) {
  await call(plane, 'DELETE', `/v1/environments/${name}`);
  await waitState(plane, name, ['destroyed']);
}

const compose = (project: string, ...args: string[]) =>
  run('docker-compose', ['-p', project, '-f', composeFile, ...args], { maxBuffer: 64 * 1024 * 1024 });

/** Waits as Mayfly does: every container with a health check healthy, every one-off exited 0. */
async function composeUpAndWait(project: string) {
  await compose(project, 'up', '-d');
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

async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-'));
  const dir = path.dirname(composeFile);
  const plane = await startPlane(dataDir);
  try {
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
      ['control plane RSS, 0 envs (MiB)', (rssIdle / 1024).toFixed(1), '', ''],
      [`control plane RSS, ${RSS_ENVS} envs (MiB)`, (rssLoaded / 1024).toFixed(1), '', ''],
      [`destroy ${RSS_ENVS} envs (s)`, destroyAll.toFixed(2), '', ''],
    ];
    const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
    for (const row of table) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));

    const out = {
      at: new Date().toISOString(),
      rounds: ROUNDS,
      machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30) },
      seconds: results,
      median: Object.fromEntries(rows.map(([m, a, b]) => [m, { mayfly: a, compose: b, ratio: a / b }])),
      rssMiB: { idle: rssIdle / 1024, [`envs${RSS_ENVS}`]: rssLoaded / 1024 },
      destroyAllSeconds: destroyAll,
    };
    const resultsDir = path.join(root, 'bench/results');
    await mkdir(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `${out.at.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
    console.log(`\nwritten ${path.relative(root, file)}`);
  } finally {
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
