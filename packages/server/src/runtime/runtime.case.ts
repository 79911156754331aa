/**
 * The conformance suite every Runtime driver must pass. A driver's test file calls
 * `describeRuntime(name, make, reach)` where `reach` turns a resolved endpoint into a URL the test
 * process can fetch (direct container IP for Docker, a port-forward for Kubernetes).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { envPlan, httpService, workload } from '../test-support/plans.js';
import type { Endpoint, EnvPlan, ProgressEvent, Runtime } from './runtime.js';
import { RuntimeStepError } from './runtime.js';

export interface RuntimeCaseOptions {
  make: () => Runtime;
  /** URL base (`http://host:port`) the test process can reach for an endpoint. */
  reach: (endpoint: Endpoint) => Promise<string>;
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return res.text();
}

export function describeRuntime(name: string, { make, reach }: RuntimeCaseOptions): void {
  describe(`Runtime conformance: ${name}`, () => {
    const runtime = make();
    const made: EnvPlan[] = [];
    const track = (plan: EnvPlan) => {
      made.push(plan);
      return plan;
    };
    afterAll(async () => {
      for (const plan of made) await runtime.destroy(plan.envId);
    });

    const appPlan = () =>
      track(
        envPlan(
          [
            httpService('db'),
            workload({
              name: 'migrate',
              kind: 'job',
              command: ['sh', '-c', 'echo migrated > /data/marker'],
              dependsOn: [{ name: 'db', condition: 'service_healthy' }],
              mounts: [{ type: 'volume', source: 'shared', target: '/data', readOnly: false }],
            }),
            httpService('api', {
              dependsOn: [
                { name: 'db', condition: 'service_healthy' },
                { name: 'migrate', condition: 'service_completed_successfully' },
              ],
              env: { GREETING: 'hi' },
              mounts: [{ type: 'volume', source: 'shared', target: '/data', readOnly: false }],
              resources: { memoryBytes: 64 * 1024 * 1024, pids: 64, cpus: 0.5 },
            }),
          ],
          { volumes: [{ name: 'shared' }] },
        ),
      );

    it('applies in dependency order and reports every workload', async () => {
      const plan = appPlan();
      const events: ProgressEvent[] = [];
      await runtime.apply(plan, { onProgress: (e) => events.push(e) });
      const order = events
        .filter((e) => e.type === 'workload' && e.phase === 'started')
        .map((e) => e.workload);
      expect(order).toEqual(['db', 'migrate', 'api']);
      // service_healthy really waits for health, service_completed_successfully for the exit
      const at = (workload: string, phase: string) =>
        events.findIndex((e) => e.type === 'workload' && e.workload === workload && e.phase === phase);
      expect(at('db', 'healthy')).toBeGreaterThan(-1);
      expect(at('db', 'healthy')).toBeLessThan(at('migrate', 'started'));
      expect(at('migrate', 'completed')).toBeLessThan(at('api', 'started'));

      const observed = await runtime.observe(plan.envId);
      expect(observed.exists).toBe(true);
      const byName = Object.fromEntries(observed.workloads.map((w) => [w.name, w]));
      // Ready once the service's own check passed; the platform's health status may lag a beat.
      expect(byName.db).toMatchObject({ state: 'running', kind: 'service' });
      expect(byName.api).toMatchObject({ state: 'running' });
      expect(byName.api!.health).toMatch(/^(healthy|starting)$/);
      expect(byName.migrate).toMatchObject({ kind: 'job', state: 'exited', exitCode: 0 });

      const endpoint = await runtime.resolveEndpoint(plan.envId, 'api', 8080);
      expect(endpoint).not.toBeNull();
      const base = await reach(endpoint!);
      expect(await getText(`${base}/`)).toBe('hello from api');
      expect(await getText(`${base}/env/GREETING`)).toBe('hi');

      // the job wrote into the shared volume before api started
      expect((await runtime.readFile(plan.envId, 'api', '/data/marker')).toString()).toBe('migrated\n');
      // limits are real cgroup limits
      const mem = await runtime.exec(plan.envId, 'api', [
        'sh',
        '-c',
        'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
      ]);
      expect(mem.stdout.trim()).toBe(String(64 * 1024 * 1024));

      // re-applying an unchanged plan touches nothing
      const again: ProgressEvent[] = [];
      await runtime.apply(plan, { onProgress: (e) => again.push(e) });
      expect(again.filter((e) => e.type === 'workload')).toHaveLength(3);
      expect(
        again
          .filter((e) => e.type === 'workload')
          .every((e) => e.type === 'workload' && e.phase === 'reused'),
      ).toBe(true);

      // a changed workload is replaced alone; the volume's data survives
      const changed = {
        ...plan,
        workloads: plan.workloads.map((w) =>
          w.name === 'api' ? httpService('api', { ...w, env: { GREETING: 'hello' } }) : w,
        ),
      };
      const replaced: ProgressEvent[] = [];
      await runtime.apply(changed, { onProgress: (e) => replaced.push(e) });
      const created = replaced
        .filter((e) => e.type === 'workload' && e.phase === 'creating')
        .map((e) => e.workload);
      expect(created).toEqual(['api']);
      const base2 = await reach((await runtime.resolveEndpoint(plan.envId, 'api', 8080))!);
      expect(await getText(`${base2}/env/GREETING`)).toBe('hello');
      expect((await runtime.readFile(plan.envId, 'api', '/data/marker')).toString()).toBe('migrated\n');

      await runtime.destroy(plan.envId);
      expect((await runtime.observe(plan.envId)).exists).toBe(false);
      expect((await runtime.listManaged()).filter((o) => o.envId === plan.envId)).toEqual([]);
    });

    it('exec streams stdout and stderr, passes stdin and returns the exit code', async () => {
      const plan = track(envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })]));
      await runtime.apply(plan);
      const result = await runtime.exec(plan.envId, 'box', ['sh', '-c', 'cat; echo err >&2; exit 3'], {
        stdin: 'from stdin\n',
      });
      expect(result).toEqual({ exitCode: 3, stdout: 'from stdin\n', stderr: 'err\n' });

      await runtime.writeFile(plan.envId, 'box', '/tmp/hello.txt', 'written by the test');
      expect((await runtime.readFile(plan.envId, 'box', '/tmp/hello.txt')).toString()).toBe(
        'written by the test',
      );
      await runtime.destroy(plan.envId);
    });

    it('returns logs, and follows them', async () => {
      const plan = track(envPlan([workload({ name: 'logger', command: ['testkit', 'log', '3'] })]));
      await runtime.apply(plan);
      let text = '';
      for (let i = 0; i < 50 && !text.includes('line 3'); i++) {
        text = '';
        for await (const chunk of await runtime.logs(plan.envId, 'logger')) text += chunk.toString();
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(text).toBe('line 1\nline 2\nline 3\n');

      const abort = new AbortController();
      const stream = await runtime.logs(plan.envId, 'logger', {
        follow: true,
        tail: 1,
        signal: abort.signal,
      });
      const first = await new Promise<string>((resolve) =>
        stream.once('data', (d: Buffer) => resolve(d.toString())),
      );
      expect(first).toContain('line 3');
      abort.abort();
      await runtime.destroy(plan.envId);
    });

    it('names the failing step: a job that exits non-zero', async () => {
      const plan = track(
        envPlan([
          workload({ name: 'migrate', kind: 'job', command: ['testkit', 'exit', '7'] }),
          httpService('web', {
            dependsOn: [{ name: 'migrate', condition: 'service_completed_successfully' }],
          }),
        ]),
      );
      const err = await runtime.apply(plan).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RuntimeStepError);
      expect((err as RuntimeStepError).step).toBe('job:migrate');
      expect((err as RuntimeStepError).reason).toMatch(/exited with code 7[\s\S]*exiting 7/);
      await runtime.destroy(plan.envId);
    });

    it('names the failing step: a health check that never passes', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'sick',
            command: ['testkit', 'sleep'],
            healthcheck: {
              test: ['CMD-SHELL', 'echo nope; exit 1'],
              intervalMs: 200,
              timeoutMs: 1000,
              retries: 2,
              startPeriodMs: 0,
            },
          }),
        ]),
      );
      const err = await runtime.apply(plan).catch((e: unknown) => e);
      expect((err as RuntimeStepError).step).toBe('health:sick');
      expect((err as RuntimeStepError).reason).toContain('nope');
      await runtime.destroy(plan.envId);
    });

    it('destroy is idempotent and lists nothing afterwards', async () => {
      const plan = track(envPlan([workload({ name: 'a', command: ['testkit', 'sleep'] })]));
      await runtime.apply(plan);
      expect((await runtime.listManaged()).some((o) => o.envId === plan.envId)).toBe(true);
      await Promise.all([runtime.destroy(plan.envId), runtime.destroy(plan.envId)]);
      await runtime.destroy(plan.envId);
      expect((await runtime.listManaged()).some((o) => o.envId === plan.envId)).toBe(false);
    });
  });
}
