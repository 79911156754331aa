import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EnvPlan } from '../../plan/plan.js';
import { requiredAgentBinary, testInstanceName } from '../../test-support/global-setup.js';
import { envPlan, workload } from '../../test-support/plans.js';
import { applyPlan } from '../apply-plan.js';
import type { ProgressEvent } from '../runtime.js';
import { DockerRuntime } from './docker-runtime.js';
import { effectiveArgv, ReleaseFiles, unhealthySinceRelease } from './start-gate.js';

describe('effectiveArgv: what Docker would run', () => {
  const image = { Entrypoint: ['/entry.sh'], Cmd: ['serve', '--port', '80'] };
  it.each([
    ['nothing given: the image’s entrypoint and command', {}, ['/entry.sh', 'serve', '--port', '80']],
    ['a command: the image’s entrypoint with it', { command: ['run'] }, ['/entry.sh', 'run']],
    ['an entrypoint: the image’s command is dropped', { entrypoint: ['/bin/app'] }, ['/bin/app']],
    ['both', { entrypoint: ['/bin/app'], command: ['-v'] }, ['/bin/app', '-v']],
    ['an empty entrypoint: the image’s command alone', { entrypoint: [] }, ['serve', '--port', '80']],
    ['an empty command counts as none', { command: [] }, ['/entry.sh', 'serve', '--port', '80']],
  ])('%s', (_, given, expected) => {
    expect(effectiveArgv(given, image)).toEqual(expected);
  });

  it('an image with neither runs nothing (not gated: Docker says why at start)', () => {
    expect(effectiveArgv({}, { Entrypoint: null, Cmd: null })).toEqual([]);
  });
});

describe('unhealthySinceRelease', () => {
  const at = (ms: number) => new Date(ms).toISOString();
  const check = { retries: 2, startPeriodMs: 0 };
  it('ignores checks that ran while the container was held', () => {
    const log = [1, 2, 3, 4, 5].map((s) => ({ Start: at(s * 1000), ExitCode: 1 }));
    expect(unhealthySinceRelease(log, 4_500, check)).toBe(false);
    expect(unhealthySinceRelease(log, 3_500, check)).toBe(true);
  });
  it('counts only failures in a row at the end, after the start period', () => {
    const log = [
      { Start: at(5_000), ExitCode: 1 },
      { Start: at(6_000), ExitCode: 0 },
      { Start: at(7_000), ExitCode: 1 },
    ];
    expect(unhealthySinceRelease(log, 0, check)).toBe(false);
    expect(unhealthySinceRelease([...log, { Start: at(8_000), ExitCode: 1 }], 0, check)).toBe(true);
    expect(
      unhealthySinceRelease([...log, { Start: at(8_000), ExitCode: 1 }], 0, {
        ...check,
        startPeriodMs: 7_500,
      }),
    ).toBe(false);
  });
  it('more retries than Docker keeps results for: all five kept must fail', () => {
    const log = [1, 2, 3, 4, 5].map((s) => ({ Start: at(s * 1000), ExitCode: 1 }));
    expect(unhealthySinceRelease(log, 0, { retries: 30, startPeriodMs: 0 })).toBe(true);
    expect(unhealthySinceRelease(log.slice(1), 0, { retries: 30, startPeriodMs: 0 })).toBe(false);
  });
});

describe('ReleaseFiles', () => {
  it('keeps every workload in a directory of its own under the environment’s, whatever its name', () => {
    const files = new ReleaseFiles('/gates');
    expect(files.dirOf('env1', '..')).toBe('/gates/env1/w-..');
    expect(files.dirOf('env1', '.')).toBe('/gates/env1/w-.');
    expect(() => files.dirOf('env1', '../x')).toThrow();
    expect(() => files.dirOf('../x', 'web')).toThrow();
    expect(() => files.dirOf('', 'web')).toThrow();
  });
});

describe('start gates on Docker', () => {
  const instance = `${testInstanceName()}-gates`;
  const gateDir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-gates-'));
  const make = () =>
    new DockerRuntime({ instance, startGate: { agentBinary: requiredAgentBinary(), dir: gateDir } });
  const runtime = make();
  const made: EnvPlan[] = [];
  afterAll(async () => {
    await Promise.allSettled(made.map((p) => runtime.destroy(p.envId)));
    rmSync(gateDir, { recursive: true, force: true });
  });
  const inspect = (envId: string, workload: string) =>
    JSON.parse(
      execFileSync('docker', ['inspect', `mayfly-${envId}-${workload}-1`], { encoding: 'utf8' }),
    )[0] as { State: { StartedAt: string; Health?: { Status: string } } };

  // `db` is healthy 3 s after it starts; `app` waits for it. The app prints when its own process
  // began, and has a strict health check of its own that fails as long as it is held.
  // `untilOpened`: db is ready only once the test writes /tmp/ready into it, however slow the machine.
  const gatedPlan = (untilOpened = false) => {
    const plan = envPlan([
      workload({
        name: 'db',
        command: untilOpened
          ? ['testkit', 'sleep']
          : ['sh', '-c', 'rm -f /tmp/ready; sleep 3; touch /tmp/ready; exec testkit sleep'],
        healthcheck: {
          command: { shell: 'test -f /tmp/ready' },
          intervalMs: 200,
          timeoutMs: 2_000,
          retries: 100,
          startPeriodMs: 0,
        },
      }),
      workload({
        name: 'app',
        command: ['sh', '-c', 'touch /tmp/up; echo "began $(date +%s%3N)"; exec testkit sleep'],
        dependsOn: [{ name: 'db', condition: 'service_healthy' }],
        // Empty at every start, so the check passes only once this run of the command has begun.
        mounts: [{ type: 'tmpfs', target: '/tmp', readOnly: false }],
        healthcheck: {
          command: { shell: 'test -f /tmp/up' },
          intervalMs: 100,
          // Generous: a loaded machine must not fail the check after the release by its slowness.
          timeoutMs: 10_000,
          retries: 1,
          startPeriodMs: 0,
        },
      }),
    ]);
    made.push(plan);
    return plan;
  };
  /** The app's start times in its log; polls for `expected` of them (Docker writes logs a little later). */
  const beganAt = async (envId: string, expected = 0) => {
    for (let tries = 0; ; tries++) {
      const stream = await runtime.logs(envId, 'app');
      let text = '';
      for await (const chunk of stream) text += chunk.toString();
      const times = [...text.matchAll(/began (\d+)/g)].map((m) => Number(m[1]));
      if (times.length >= expected || tries === 100) return times;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const healthyAt = (events: { at: number; event: ProgressEvent }[], name: string) =>
    events.find(
      (e) => e.event.type === 'workload' && e.event.workload === name && e.event.phase === 'healthy',
    )?.at ?? Number.NaN;

  const appRunning = (envId: string) =>
    execFileSync('docker', ['ps', '-q', '--filter', `name=mayfly-${envId}-app-1`], {
      encoding: 'utf8',
    }).trim() !== '';
  const waitUntil = async (condition: () => boolean) => {
    for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  };

  it('starts a waiting container at once, runs its command only once what it waits for is ready, and its checks while held do not fail it', async () => {
    const plan = gatedPlan(true);
    const events: { at: number; event: ProgressEvent }[] = [];
    const applying = applyPlan(runtime, plan, {
      onProgress: (event) => events.push({ at: Date.now(), event }),
    });
    // The container runs while db is not ready…
    await waitUntil(() => appRunning(plan.envId));
    expect(appRunning(plan.envId)).toBe(true);
    // …long enough for Docker to judge it unhealthy (retries: 1, every 100 ms)…
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(inspect(plan.envId, 'app').State.Health?.Status).toBe('unhealthy');
    // …and its own command has not begun.
    expect(await beganAt(plan.envId)).toEqual([]);
    const opened = Date.now();
    await runtime.writeFile(plan.envId, 'db', '/tmp/ready', 'yes');
    await applying;
    const [began] = await beganAt(plan.envId, 1);
    expect(began).toBeGreaterThanOrEqual(opened);
    expect(began).toBeGreaterThanOrEqual(healthyAt(events, 'db'));
    // The checks while held did not fail the apply: the app was judged on its own.
    expect(Number.isNaN(healthyAt(events, 'app'))).toBe(false);
  });

  it('a control plane restarted while a container is held sees it as created, and releases it', async () => {
    const plan = gatedPlan(true);
    const first = new AbortController();
    const applying = applyPlan(runtime, plan, { signal: first.signal });
    applying.catch(() => {});
    const stateOf = async (name: string) =>
      (await make().observe(plan.envId)).workloads.find((w) => w.name === name)?.state;
    // Held: running as far as Docker is concerned, created as far as Mayfly is.
    for (
      let i = 0;
      i < 200 &&
      execFileSync('docker', ['ps', '-q', '--filter', `name=mayfly-${plan.envId}-app-1`], {
        encoding: 'utf8',
      }).trim() === '';
      i++
    )
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await stateOf('app')).toBe('created');
    first.abort();
    await expect(applying).rejects.toThrow();
    expect(await beganAt(plan.envId)).toEqual([]);
    await runtime.writeFile(plan.envId, 'db', '/tmp/ready', 'yes');

    const restarted = make();
    const events: { at: number; event: ProgressEvent }[] = [];
    await applyPlan(restarted, plan, { onProgress: (event) => events.push({ at: Date.now(), event }) });
    const appPhases = events.flatMap((e) =>
      e.event.type === 'workload' && e.event.workload === 'app' ? [e.event.phase] : [],
    );
    expect(appPhases).toEqual(['started', 'healthy']); // not made again, not reused unreleased
    expect(await beganAt(plan.envId, 1)).toHaveLength(1);
    expect(await stateOf('app')).toBe('running');
  });

  it('woken from sleep, a waiting container is held again until what it waits for is ready', async () => {
    const plan = gatedPlan();
    await applyPlan(runtime, plan);
    const sleptAt = new Date();
    await runtime.stop(plan.envId);
    const events: { at: number; event: ProgressEvent }[] = [];
    await applyPlan(runtime, plan, {
      resumeStopped: { since: sleptAt },
      onProgress: (event) => events.push({ at: Date.now(), event }),
    });
    const began = await beganAt(plan.envId, 2);
    expect(began).toHaveLength(2);
    expect(began[1]).toBeGreaterThanOrEqual(healthyAt(events, 'db'));
    await runtime.destroy(plan.envId);
    expect(() => execFileSync('ls', [path.join(gateDir, plan.envId)], { stdio: 'ignore' })).toThrow();
  });
});
