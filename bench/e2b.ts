/**
 * The E2B path, in one run on one engine: create → first command (`true`) through the unmodified
 * `e2b` SDK against Mayfly's E2B API, beside the same through Mayfly's own SDK and `docker run --rm
 * IMAGE true` of the same image; BENCH_E2B_RUNS sequential (100) and BENCH_E2B_BURSTS bursts of 20
 * concurrent (5), median/p95/p99. One control plane whose pool keeps 20 ready, let refill (untimed)
 * before each sequential create and each burst, so every create is measured warm.
 *
 * Goals from the issue: the e2b path's median under 100 ms warm, and within 1.3 × Mayfly's own SDK.
 * (Hosted E2B publishes about 490 ms median sequential for the same loop.)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Sandbox as E2bSandbox } from 'e2b';
import { E2bPaths } from '../packages/contract/src/index.js';
import { Sandbox as MayflySandbox } from '../packages/sdk/src/index.js';
import {
  callApi as call,
  type ControlPlane as Plane,
  startControlPlane,
  stopControlPlane,
} from '../packages/server/src/test-support/control-plane-process.js';
import {
  baseTemplate,
  dockerRunSeries,
  percentile,
  poolReady,
  type SandboxBench,
  timedMs,
} from './sandboxes.js';

const RUNS = Number(process.env.BENCH_E2B_RUNS ?? 100);
const BURSTS = Number(process.env.BENCH_E2B_BURSTS ?? 5);
const BURST = 20;

/** One create → first command, timed; what kills it afterwards (untimed). */
type Loop = () => Promise<{ ms: number; kill: () => Promise<unknown> }>;

async function series(plane: Plane, loop: Loop) {
  const sequential: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await poolReady(plane, BURST);
    const { ms, kill } = await loop();
    sequential.push(ms);
    await kill();
  }
  const burst: number[] = [];
  for (let b = 0; b < BURSTS; b++) {
    await poolReady(plane, BURST);
    const results = await Promise.all(Array.from({ length: BURST }, loop));
    burst.push(...results.map((r) => r.ms));
    await Promise.all(results.map((r) => r.kill()));
  }
  return { sequential, burst };
}

export async function benchE2b(): Promise<SandboxBench> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-e2b-'));
  const plane = await startControlPlane(dataDir, undefined, {
    sandboxPool: { base: BURST, code: 0 },
    sandboxPoolMemoryBytes: '12g',
    logLevel: 'error',
  });
  let viaE2b: Awaited<ReturnType<typeof series>>;
  let viaSdk: Awaited<ReturnType<typeof series>>;
  let image: string;
  try {
    const key = await call<{ token: string }>(plane, 'POST', '/v1/tokens', {
      name: 'bench',
      scope: 'write',
      format: 'e2b',
    });
    const e2b = {
      apiKey: key.token,
      apiUrl: plane.url + E2bPaths.api,
      sandboxUrl: plane.url + E2bPaths.sandbox,
    };
    const mayfly = { baseUrl: plane.url, token: plane.token, template: 'base' };
    const e2bLoop: Loop = async () => {
      let sbx: E2bSandbox | undefined;
      const ms = await timedMs(async () => {
        sbx = await E2bSandbox.create('base', e2b);
        await sbx.commands.run('true');
      });
      return { ms, kill: () => sbx!.kill() };
    };
    const sdkLoop: Loop = async () => {
      let sbx: MayflySandbox | undefined;
      const ms = await timedMs(async () => {
        sbx = await MayflySandbox.create(mayfly);
        const { exitCode } = await sbx.commands.run('true');
        if (exitCode !== 0) throw new Error(`true exited ${exitCode}`);
      });
      return { ms, kill: () => sbx!.kill() };
    };
    // The first create builds the template's image when nothing has yet (untimed), both ways once.
    await (await sdkLoop()).kill();
    await (await e2bLoop()).kill();
    image = (await baseTemplate(plane)).image!;
    process.stderr.write('e2b: through Mayfly’s SDK…\n');
    viaSdk = await series(plane, sdkLoop);
    process.stderr.write('e2b: through the e2b SDK…\n');
    viaE2b = await series(plane, e2bLoop);
  } finally {
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  }
  process.stderr.write('e2b: docker run…\n');
  const docker = await dockerRunSeries(image, RUNS);

  const p = percentile;
  const rows: SandboxBench['rows'] = (
    [
      ['e2b SDK', viaE2b],
      ['Mayfly SDK', viaSdk],
    ] as const
  ).flatMap(([label, s]) =>
    (['sequential', 'burst'] as const).flatMap((kind) =>
      [50, 95, 99].map((q): SandboxBench['rows'][number] => [
        `create→first command via ${label}, ${kind === 'burst' ? `bursts of ${BURST}` : kind} p${q} (ms)`,
        p(s[kind], q),
        p(docker[kind], q),
      ]),
    ),
  );
  const e2bMedian = p(viaE2b.sequential, 50);
  const ratio = e2bMedian / p(viaSdk.sequential, 50);
  return {
    rows,
    goals: {
      'e2b SDK median, warm (ms)': { value: e2bMedian, goal: '< 100', met: e2bMedian < 100 },
      'e2b SDK median / Mayfly SDK median': { value: ratio, goal: '≤ 1.3', met: ratio <= 1.3 },
    },
    samples: {
      e2bSequential: viaE2b.sequential,
      e2bBurst: viaE2b.burst,
      sdkSequential: viaSdk.sequential,
      sdkBurst: viaSdk.burst,
      dockerRunSequential: docker.sequential,
      dockerRunBurst: docker.burst,
    },
  };
}
