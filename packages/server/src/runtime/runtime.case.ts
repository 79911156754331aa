import { afterAll, describe, expect, it, vi } from 'vitest';
import type { EnvPlan } from '../plan/plan.js';
import { envPlan, httpService, workload } from '../test-support/plans.js';
import { applyPlan } from './apply-plan.js';
import type { Endpoint, ProgressEvent, Runtime } from './runtime.js';
import { RuntimeStepError } from './runtime.js';

export interface RuntimeCaseOptions {
  /**
   * The driver under test. Its platform must keep at least 160 MiB of one container's output:
   * the suite writes a 128 MiB log and reads all of it back.
   */
  make: () => Runtime;
  /** URL base (`http://host:port`) the test process can reach for an endpoint. */
  reach: (endpoint: Endpoint) => Promise<string>;
  /**
   * The platform's ids of a workload's containers (or pods), when the driver can tell: proves
   * that a workload was not recreated behind the suite's back.
   */
  workloadIds?: (envId: string, workload: string) => Promise<string[]>;
  /**
   * What the platform cannot do as Docker does. Each changes what a case asserts to what the
   * platform does instead (documented for users); none skips a case.
   */
  differences?: {
    /**
     * A service's replicas cannot exist made but not started (Kubernetes starts a pod when it is
     * made): aborts are judged by how many were made.
     */
    noCreatedReplicas?: boolean;
    /** A sleep loses what containers wrote outside their volumes (pods are removed, not stopped). */
    sleepLosesContainerFiles?: boolean;
    /** Files put in before the start get their mode, not their owner. */
    fileOwnersIgnored?: boolean;
  };
}

const MiB = 1024 * 1024;

/** Resolves once `condition` holds, polling; fails with `what` after `timeoutMs`. */
async function until(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Samples this process's RSS every few ms until `stop()`, which gives the highest rise seen over
 * the RSS at the start. The samples run between I/O callbacks, so a stream read flat out is seen.
 */
function watchRss(): { stop: () => number } {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 10);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage().rss) - before;
    },
  };
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return res.text();
}

export function describeRuntime(
  name: string,
  { make, reach, workloadIds, differences = {} }: RuntimeCaseOptions,
): void {
  describe(`Runtime conformance: ${name}`, () => {
    const runtime = make();
    const made: EnvPlan[] = [];
    const track = (plan: EnvPlan) => {
      made.push(plan);
      return plan;
    };
    afterAll(async () => {
      // Every step runs even when one fails, so one failure does not leave the rest behind.
      const results: PromiseSettledResult<unknown>[] = await Promise.allSettled(
        made.map((plan) => runtime.destroy(plan.envId)),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });

    /** A service with a volume and a job that appends one line to it each time it runs. */
    const dbWithJobOnce = () => [
      workload({
        name: 'db',
        command: ['testkit', 'sleep'],
        mounts: [{ type: 'volume', source: 'data', target: '/data', readOnly: false }],
      }),
      workload({
        name: 'migrate',
        kind: 'job',
        command: ['sh', '-c', 'echo once >> /data/runs'],
        mounts: [{ type: 'volume', source: 'data', target: '/data', readOnly: false }],
        dependsOn: [{ name: 'db', condition: 'service_started' }],
      }),
    ];

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
      await applyPlan(runtime, plan, { onProgress: (e) => events.push(e) });
      const order = events.flatMap((e) =>
        e.type === 'workload' && e.phase === 'started' ? [e.workload] : [],
      );
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
      await applyPlan(runtime, plan, { onProgress: (e) => again.push(e) });
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
      await applyPlan(runtime, changed, { onProgress: (e) => replaced.push(e) });
      const created = replaced.flatMap((e) =>
        e.type === 'workload' && e.phase === 'creating' ? [e.workload] : [],
      );
      expect(created).toEqual(['api']);
      const base2 = await reach((await runtime.resolveEndpoint(plan.envId, 'api', 8080))!);
      expect(await getText(`${base2}/env/GREETING`)).toBe('hello');
      expect((await runtime.readFile(plan.envId, 'api', '/data/marker')).toString()).toBe('migrated\n');

      await runtime.destroy(plan.envId);
      expect((await runtime.observe(plan.envId)).exists).toBe(false);
      expect((await runtime.listManaged()).filter((o) => o.envId === plan.envId)).toEqual([]);
    });

    it('a service that exits 0 is done, as Compose sees it, unless its restart policy would restart it', async () => {
      const plan = track(
        envPlan(
          [
            workload({
              name: 'once',
              command: ['sh', '-c', 'echo did-it > /data/done'],
              mounts: [{ type: 'volume', source: 'd', target: '/data', readOnly: false }],
            }),
            workload({
              name: 'after',
              command: ['testkit', 'sleep'],
              dependsOn: [{ name: 'once', condition: 'service_started' }],
              mounts: [{ type: 'volume', source: 'd', target: '/data', readOnly: false }],
            }),
          ],
          { volumes: [{ name: 'd' }] },
        ),
      );
      await applyPlan(runtime, plan);
      expect((await runtime.readFile(plan.envId, 'after', '/data/done')).toString()).toBe('did-it\n');
      const ids = await workloadIds?.(plan.envId, 'once');
      // Applied again: a service that ran to its end is not run again.
      const again: ProgressEvent[] = [];
      await applyPlan(runtime, plan, { onProgress: (e) => again.push(e) });
      expect(
        again
          .filter((e) => e.type === 'workload' && e.workload === 'once')
          .map((e) => e.type === 'workload' && e.phase),
      ).toEqual(['reused']);
      if (workloadIds) expect(await workloadIds(plan.envId, 'once')).toEqual(ids);

      // A check that never passes: it cannot be taken for ready while it briefly runs.
      const failing = track(
        envPlan([
          workload({
            name: 'boom',
            command: ['sh', '-c', 'sleep 1; echo bad-exit; exit 3'],
            healthcheck: {
              command: { shell: 'test -f /never' },
              intervalMs: 500,
              timeoutMs: 2_000,
              retries: 100,
              startPeriodMs: 0,
            },
          }),
        ]),
      );
      const err = (await applyPlan(runtime, failing).catch((e: unknown) => e)) as RuntimeStepError;
      expect(err).toBeInstanceOf(RuntimeStepError);
      expect(err.step).toBe('start:boom');
      expect(err.reason).toMatch(/exited with code 3[\s\S]*bad-exit/);

      // `always` brings it back: its clean exit is never taken as done (a crash loop, if seen).
      const looping = track(
        envPlan([workload({ name: 'loop', command: ['sh', '-c', 'exit 0'], restart: 'always' })]),
      );
      const loopEvents: ProgressEvent[] = [];
      const loopErr = await applyPlan(runtime, looping, { onProgress: (e) => loopEvents.push(e) }).catch(
        (e: unknown) => e,
      );
      if (loopErr !== undefined) expect((loopErr as RuntimeStepError).step).toBe('start:loop');
      expect(loopEvents.some((e) => e.type === 'workload' && e.phase === 'completed')).toBe(false);
      await Promise.all([plan, failing, looping].map((p) => runtime.destroy(p.envId)));
    });

    it('a service that crashed after it was ready is made again by the next apply (a repair)', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'crashy',
            command: ['sh', '-c', 'while [ ! -f /tmp/stop ]; do sleep 0.2; done; exit 3'],
          }),
        ]),
      );
      await applyPlan(runtime, plan);
      const before = await workloadIds?.(plan.envId, 'crashy');
      await runtime.writeFile(plan.envId, 'crashy', '/tmp/stop', 'now');
      await until(
        async () =>
          (await runtime.observe(plan.envId)).workloads.some((w) => w.state === 'exited' && w.exitCode === 3),
        'the service to crash',
      );
      await applyPlan(runtime, plan);
      expect((await runtime.observe(plan.envId)).workloads).toMatchObject([
        { name: 'crashy', state: 'running' },
      ]);
      if (workloadIds) expect(await workloadIds(plan.envId, 'crashy')).not.toEqual(before);
      await runtime.destroy(plan.envId);
    });

    it('stop puts the environment to sleep keeping everything; applying with resumeStopped wakes it as it was', async () => {
      const plan = track(
        envPlan(
          [
            ...dbWithJobOnce(),
            // A service that does its work and exits 0 (restart: no): done before the sleep, it
            // stays done after the wake.
            workload({
              name: 'once',
              restart: 'no',
              command: ['sh', '-c', 'echo ran >> /data/once'],
              mounts: [{ type: 'volume', source: 'data', target: '/data', readOnly: false }],
            }),
          ],
          { volumes: [{ name: 'data' }] },
        ),
      );
      await applyPlan(runtime, plan);
      await runtime.writeFile(plan.envId, 'db', '/tmp/in-the-container', 'kept');
      const before = await workloadIds?.(plan.envId, 'db');
      // Docker's clock and ours agree to within the second the wake allows.
      await new Promise((r) => setTimeout(r, 1_100));
      const sleptAt = new Date(Date.now() - 1_000);
      await runtime.stop(plan.envId);
      await runtime.stop(plan.envId); // idempotent
      expect((await runtime.observe(plan.envId)).workloads.find((w) => w.name === 'db')).toMatchObject({
        state: 'exited',
      });
      await applyPlan(runtime, plan, { resumeStopped: { since: sleptAt } });
      expect((await runtime.observe(plan.envId)).workloads.find((w) => w.name === 'db')).toMatchObject({
        state: 'running',
      });
      if (workloadIds) expect(await workloadIds(plan.envId, 'db')).toEqual(before);
      if (differences.sleepLosesContainerFiles) {
        await expect(runtime.readFile(plan.envId, 'db', '/tmp/in-the-container')).rejects.toThrow();
      } else {
        expect((await runtime.readFile(plan.envId, 'db', '/tmp/in-the-container')).toString()).toBe('kept');
      }
      // The job ran once, before the sleep; waking does not run it again.
      expect((await runtime.exec(plan.envId, 'db', ['cat', '/data/runs'])).stdout).toBe('once\n');
      expect((await runtime.exec(plan.envId, 'db', ['cat', '/data/once'])).stdout).toBe('ran\n');
      await runtime.destroy(plan.envId);
    });

    it('recreateServices (a redeploy) makes every running service anew; a job that ran and the volume stay', async () => {
      const plan = track(envPlan([...dbWithJobOnce()], { volumes: [{ name: 'data' }] }));
      await applyPlan(runtime, plan);
      await runtime.writeFile(plan.envId, 'db', '/tmp/in-the-container', 'old');
      const before = await workloadIds?.(plan.envId, 'db');
      await applyPlan(runtime, plan, { recreateServices: true });
      expect((await runtime.observe(plan.envId)).workloads.find((w) => w.name === 'db')).toMatchObject({
        state: 'running',
      });
      if (workloadIds) expect(await workloadIds(plan.envId, 'db')).not.toEqual(before);
      // A new container: what was written into the old one's own files is gone; the volume is not.
      await expect(runtime.readFile(plan.envId, 'db', '/tmp/in-the-container')).rejects.toThrow();
      expect((await runtime.exec(plan.envId, 'db', ['cat', '/data/runs'])).stdout).toBe('once\n');
      await runtime.destroy(plan.envId);
    });

    it('puts files in before the start, with their mode and owner, and mounts tmpfs', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'box',
            command: ['testkit', 'sleep'],
            files: [
              { target: '/run/secrets/token', content: 's3cr3t', mode: 0o400, uid: '1000', gid: '1000' },
              { target: '/etc/app/app.conf', content: 'a = 1\n', mode: 0o444 },
            ],
            mounts: [{ type: 'tmpfs', target: '/scratch', sizeBytes: 4 * MiB, readOnly: false }],
          }),
        ]),
      );
      await applyPlan(runtime, plan);
      const run = async (script: string) =>
        (await runtime.exec(plan.envId, 'box', ['sh', '-c', script])).stdout.trim();
      expect(await run('cat /run/secrets/token; echo; stat -c "%a %u %g" /run/secrets/token')).toBe(
        differences.fileOwnersIgnored ? 's3cr3t\n400 0 0' : 's3cr3t\n400 1000 1000',
      );
      expect(await run('cat /etc/app/app.conf; stat -c "%a" /etc/app/app.conf')).toBe('a = 1\n444');
      expect(await run('grep " /scratch " /proc/mounts | cut -d" " -f3')).toBe('tmpfs');
      await runtime.destroy(plan.envId);
    });

    it('exec streams stdout and stderr, passes stdin and returns the exit code', async () => {
      const plan = track(envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })]));
      await applyPlan(runtime, plan);
      const result = await runtime.exec(plan.envId, 'box', ['sh', '-c', 'cat; echo err >&2; exit 3'], {
        stdin: 'from stdin\n',
      });
      expect(result).toEqual({
        exitCode: 3,
        stdout: 'from stdin\n',
        stderr: 'err\n',
        stdoutTruncated: false,
        stderrTruncated: false,
      });

      await runtime.writeFile(plan.envId, 'box', '/tmp/hello.txt', 'written by the test');
      expect((await runtime.readFile(plan.envId, 'box', '/tmp/hello.txt')).toString()).toBe(
        'written by the test',
      );
      await runtime.destroy(plan.envId);
    });

    it('exec keeps the end of what a command prints, at most maxOutputBytes of each stream, and says so', async () => {
      const plan = track(envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })]));
      await applyPlan(runtime, plan);
      const small = await runtime.exec(
        plan.envId,
        'box',
        ['sh', '-c', 'printf 0123456789; printf abcdefgh >&2; exit 2'],
        { maxOutputBytes: 4 },
      );
      expect(small).toEqual({
        exitCode: 2,
        stdout: '6789',
        stderr: 'efgh',
        stdoutTruncated: true,
        stderrTruncated: true,
      });
      const exact = await runtime.exec(plan.envId, 'box', ['printf', '0123'], { maxOutputBytes: 4 });
      expect(exact).toMatchObject({ stdout: '0123', stdoutTruncated: false });

      // ~500 MB on stdout: read and dropped as it comes, 1 MiB (the default) kept, memory flat.
      const rss = watchRss();
      const big = await runtime.exec(plan.envId, 'box', [
        'sh',
        '-c',
        'head -c 500000000 /dev/zero; echo the-end; echo err-end >&2',
      ]);
      const rise = rss.stop();
      expect(big.exitCode).toBe(0);
      expect(big.stdoutTruncated).toBe(true);
      expect(Buffer.byteLength(big.stdout)).toBe(MiB);
      expect(big.stdout.endsWith('\0the-end\n')).toBe(true);
      expect(big).toMatchObject({ stderr: 'err-end\n', stderrTruncated: false });
      // What is read and dropped waits for the garbage collector (~40 MiB seen); kept, it would be ≥ 400 MB.
      expect(rise).toBeLessThan(96 * MiB);
      await runtime.destroy(plan.envId);
    });

    it('a health check that prints a lot is judged by its exit code, with memory flat', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'loud',
            command: ['testkit', 'sleep'],
            healthcheck: {
              command: { shell: 'head -c 400000000 /dev/zero; exit 0' },
              // The driver's own probe decides here (the platform's first one would come later).
              intervalMs: 120_000,
              timeoutMs: 110_000,
              retries: 3,
              startPeriodMs: 0,
            },
          }),
        ]),
      );
      const events: ProgressEvent[] = [];
      const rss = watchRss();
      await applyPlan(runtime, plan, { onProgress: (e) => events.push(e) });
      const rise = rss.stop();
      expect(events).toContainEqual({ type: 'workload', workload: 'loud', phase: 'healthy' });
      // What is read and dropped waits for the garbage collector (~40 MiB seen); kept, it would be ≥ 400 MB.
      expect(rise).toBeLessThan(96 * MiB);
      await runtime.destroy(plan.envId);
    });

    it('returns logs, and follows them', async () => {
      const plan = track(envPlan([workload({ name: 'logger', command: ['testkit', 'log', '3'] })]));
      await applyPlan(runtime, plan);
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
      // The container is silent now: only the abort can end the stream, and it ends it cleanly.
      const outcome = new Promise<string>((resolve) => {
        stream.once('end', () => resolve('end'));
        stream.once('error', (err) => resolve(`error: ${err.message}`));
      });
      stream.resume();
      abort.abort();
      expect(await outcome).toBe('end');
      await runtime.destroy(plan.envId);
    });

    it('streams a big log with backpressure: a reader that stops keeps memory flat and then gets every byte', async () => {
      // 128 MiB in numbered 8 KiB lines, so a lost, repeated or reordered byte shows.
      const lineBytes = 8192;
      const lines = (128 * MiB) / lineBytes;
      const script = [
        'import sys',
        'w = sys.stdout.buffer.write',
        `for i in range(${lines}): w(b'%07d' % i + b'x' * ${lineBytes - 8} + b'\\n')`,
      ].join('\n');
      const plan = track(
        envPlan([workload({ name: 'noisy', kind: 'job', command: ['python3', '-c', script] })]),
      );
      await applyPlan(runtime, plan); // the job has exited: its whole output is there to read

      const rssBefore = process.memoryUsage().rss;
      const stream = await runtime.logs(plan.envId, 'noisy');
      // Nobody reads. Wait until the stream stops filling: with backpressure that is at once, with
      // its buffer full; without, only once the whole log sits in this process.
      let last = -1;
      let unchanged = 0;
      await until(() => {
        unchanged = stream.readableLength === last ? unchanged + 1 : 0;
        last = stream.readableLength;
        return unchanged >= 10;
      }, 'the unread log stream stops filling');
      expect(stream.readableLength).toBeLessThan(MiB);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * MiB);

      let received = 0;
      let carry: Buffer = Buffer.alloc(0);
      let nextLine = 0;
      let badLine: string | null = null;
      let rssPeak = 0;
      for await (const chunk of stream) {
        received += (chunk as Buffer).length;
        carry = carry.length ? Buffer.concat([carry, chunk as Buffer]) : (chunk as Buffer);
        while (carry.length >= lineBytes) {
          const line = carry.subarray(0, lineBytes);
          if (
            badLine === null &&
            (line.subarray(0, 7).toString() !== String(nextLine).padStart(7, '0') ||
              line[lineBytes - 1] !== 0x0a)
          ) {
            badLine = `line ${nextLine}: ${line.subarray(0, 16).toString()}…`;
          }
          nextLine++;
          carry = carry.subarray(lineBytes);
        }
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss - rssBefore);
      }
      expect(badLine).toBeNull();
      expect(received).toBe(128 * MiB);
      expect(nextLine).toBe(lines);
      expect(rssPeak).toBeLessThan(96 * MiB);
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
      const err = await applyPlan(runtime, plan).catch((e: unknown) => e);
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
              command: { shell: 'echo nope; exit 1' },
              intervalMs: 200,
              timeoutMs: 1000,
              retries: 2,
              startPeriodMs: 0,
            },
          }),
        ]),
      );
      const err = await applyPlan(runtime, plan).catch((e: unknown) => e);
      expect((err as RuntimeStepError).step).toBe('health:sick');
      expect((err as RuntimeStepError).reason).toContain('nope');
      await runtime.destroy(plan.envId);
    });

    it('destroy is idempotent and lists nothing afterwards', async () => {
      const plan = track(envPlan([workload({ name: 'a', command: ['testkit', 'sleep'] })]));
      await applyPlan(runtime, plan);
      expect((await runtime.listManaged()).some((o) => o.envId === plan.envId)).toBe(true);
      await Promise.all([runtime.destroy(plan.envId), runtime.destroy(plan.envId)]);
      await runtime.destroy(plan.envId);
      expect((await runtime.listManaged()).some((o) => o.envId === plan.envId)).toBe(false);
    });

    it('never runs a job twice: a created one is started, a running one waited for (control plane restarts)', async () => {
      const data = [{ type: 'volume' as const, source: 'data', target: '/data', readOnly: false }];
      const plan = track(
        envPlan(
          [
            // Healthy only once the test opens it, so the job can be caught created but not started.
            workload({
              name: 'gate',
              command: ['testkit', 'sleep'],
              healthcheck: {
                command: { shell: 'test -f /tmp/open' },
                intervalMs: 500,
                timeoutMs: 2_000,
                retries: 1_000,
                startPeriodMs: 0,
              },
            }),
            workload({
              name: 'once',
              kind: 'job',
              command: ['sh', '-c', 'echo ran >> /data/runs; sleep 4'],
              dependsOn: [{ name: 'gate', condition: 'service_healthy' }],
              mounts: data,
            }),
            workload({
              name: 'box',
              command: ['testkit', 'sleep'],
              dependsOn: [{ name: 'once', condition: 'service_completed_successfully' }],
              mounts: data,
            }),
          ],
          { volumes: [{ name: 'data' }] },
        ),
      );
      const stateOf = async (name: string) =>
        (await runtime.observe(plan.envId)).workloads.find((w) => w.name === name)?.state;

      // 1. The control plane dies while the job waits for its dependency.
      const first = new AbortController();
      const applying = applyPlan(runtime, plan, { signal: first.signal });
      applying.catch(() => {});
      // Every workload is made at once and started in order: the job can be made before the gate
      // it waits for has started, so both are waited for.
      await until(
        async () => (await stateOf('gate')) === 'running' && (await stateOf('once')) === 'created',
        'the gate runs and the job is created, not started',
      );
      const ids = await workloadIds?.(plan.envId, 'once');
      first.abort();
      await expect(applying).rejects.toThrow();
      expect(await stateOf('once')).toBe('created');

      // 2. The next one starts it, and dies while it runs.
      await runtime.writeFile(plan.envId, 'gate', '/tmp/open', 'yes');
      const second = new AbortController();
      const events2: ProgressEvent[] = [];
      const applying2 = applyPlan(runtime, plan, {
        signal: second.signal,
        onProgress: (e) => events2.push(e),
      });
      applying2.catch(() => {});
      await until(async () => (await stateOf('once')) === 'running', 'the job runs');
      second.abort();
      await expect(applying2).rejects.toThrow();
      expect(await stateOf('once')).toBe('running'); // the kill landed while the job ran
      const phases = (events: ProgressEvent[]) =>
        events
          .filter((e) => e.type === 'workload' && e.workload === 'once')
          .map((e) => e.type === 'workload' && e.phase);
      expect(phases(events2)).toEqual(['started']);

      // 3. The next one waits for the same run to finish.
      const events3: ProgressEvent[] = [];
      await applyPlan(runtime, plan, { onProgress: (e) => events3.push(e) });
      expect(phases(events3)).not.toContain('creating');
      expect(phases(events3)).not.toContain('started');
      expect(phases(events3)).toContain('completed');
      if (workloadIds) expect(await workloadIds(plan.envId, 'once')).toEqual(ids);
      expect((await runtime.readFile(plan.envId, 'box', '/data/runs')).toString()).toBe('ran\n');
      await runtime.destroy(plan.envId);
    });

    it('while seeded data is to be snapshotted only the seed runs, until afterSeed is done after every seed job', async () => {
      const data = [{ type: 'volume' as const, source: 'data', target: '/data', readOnly: false }];
      const append = (line: string) => ['sh', '-c', `echo ${line} >> /data/rows`];
      const plan = track(
        envPlan(
          [
            workload({ name: 'db', command: ['testkit', 'sleep'], mounts: data, stopGracePeriodMs: 1000 }),
            workload({
              name: 'migrate',
              kind: 'job',
              command: ['sh', '-c', 'sleep 2; echo migrate >> /data/rows'],
              mounts: data,
              dependsOn: [{ name: 'db', condition: 'service_started' }],
            }),
            // Seeds another volume, and writes the first's data too (as fixtures write a database).
            workload({
              name: 'fixtures',
              kind: 'job',
              command: ['sh', '-c', 'sleep 3; echo fixtures >> /data/rows; echo x > /files/x'],
              mounts: [...data, { type: 'volume', source: 'files', target: '/files', readOnly: false }],
              dependsOn: [{ name: 'db', condition: 'service_started' }],
            }),
            // Outside the seed: waits only for db, and its health check writes the data too, as
            // would making it (a file of its own put under the volume's mount).
            workload({
              name: 'web',
              command: ['sh', '-c', 'echo web >> /data/rows; exec testkit sleep'],
              mounts: data,
              files: [{ target: '/data/planted', content: 'web', mode: 0o644 }],
              dependsOn: [{ name: 'db', condition: 'service_started' }],
              healthcheck: {
                command: { exec: append('checked') },
                intervalMs: 200,
                timeoutMs: 2_000,
                retries: 100,
                startPeriodMs: 0,
              },
            }),
          ],
          {
            volumes: [
              {
                name: 'data',
                data: { seededBy: 'migrate' },
                origin: { seeded: { key: 'k1', takeSnapshot: true } },
              },
              {
                name: 'files',
                data: { seededBy: 'fixtures' },
                origin: { seeded: { key: 'k2', takeSnapshot: false } },
              },
            ],
          },
        ),
      );
      const rows = async () => (await runtime.readFile(plan.envId, 'db', '/data/rows')).toString();
      const seen: { volumes: string[]; rows: string; web: boolean; planted: boolean }[] = [];
      const events: ProgressEvent[] = [];
      await applyPlan(runtime, plan, {
        onProgress: (e) => events.push(e),
        afterSeed: async (volumes) => {
          seen.push({
            volumes,
            rows: await rows(),
            web: (await runtime.observe(plan.envId)).workloads.some((w) => w.name === 'web'),
            planted: await runtime.readFile(plan.envId, 'db', '/data/planted').then(
              () => true,
              () => false,
            ),
          });
        },
      });
      // Called once, after both seed jobs, before anything of web ran (not even its health check)
      // or was even made: only data is snapshotted (k2's is not to be).
      expect(seen).toEqual([{ volumes: ['data'], rows: 'migrate\nfixtures\n', web: false, planted: false }]);
      expect(events).toContainEqual({
        type: 'data',
        message: "web: held until the seed's snapshot is taken (only the seed runs before it)",
      });
      expect((await rows()).split('\n').slice(0, 3)).toEqual(['migrate', 'fixtures', 'web']);

      // Applied again (a repair, a redeploy): the jobs are done, so nothing is snapshotted or held.
      const again: ProgressEvent[] = [];
      const afterSeed = vi.fn(async () => {});
      await applyPlan(runtime, plan, { recreateServices: true, onProgress: (e) => again.push(e), afterSeed });
      expect(afterSeed).not.toHaveBeenCalled();
      expect(again.filter((e) => e.type === 'data')).toEqual([]);

      // The seed job changed (an update, or its container gone): it runs again, on data that has
      // lived beside web since, so it is not snapshotted and nothing is held.
      const changed = {
        ...plan,
        workloads: plan.workloads.map((w) =>
          w.name === 'migrate'
            ? workload({
                name: 'migrate',
                kind: 'job',
                command: ['sh', '-c', 'echo again >> /data/rows'],
                mounts: data,
                dependsOn: [{ name: 'db', condition: 'service_started' }],
              })
            : w,
        ),
      };
      /** Applies `p`: nothing is snapshotted, and the timeline says why, in `said` alone. */
      const keepsNone = async (p: EnvPlan, said: string) => {
        const events: ProgressEvent[] = [];
        await applyPlan(runtime, p, { onProgress: (e) => events.push(e), afterSeed });
        expect(afterSeed).not.toHaveBeenCalled();
        expect(events.filter((e) => e.type === 'data')).toEqual([{ type: 'data', message: said }]);
      };
      await keepsNone(
        changed,
        'migrate: seeds data; no snapshot kept: volume data was there before this bring-up',
      );
      expect((await rows()).split('\n')).toContain('again');

      await runtime.destroy(plan.envId);

      // A new seed job on a new volume, reading one that was there (written by web): the new
      // volume is empty, but what the job makes of the old data is not the seed's alone.
      const lived = track(
        envPlan(
          [
            workload({
              name: 'web',
              command: ['sh', '-c', 'echo web > /data/rows; exec testkit sleep'],
              mounts: data,
            }),
          ],
          { volumes: [{ name: 'data' }] },
        ),
      );
      await applyPlan(runtime, lived);
      const reader: EnvPlan = {
        ...lived,
        workloads: [
          ...lived.workloads,
          workload({
            name: 'copier',
            kind: 'job',
            command: ['sh', '-c', 'cp /data/rows /fresh/rows'],
            mounts: [...data, { type: 'volume', source: 'fresh', target: '/fresh', readOnly: false }],
          }),
        ],
        volumes: [
          ...lived.volumes,
          {
            name: 'fresh',
            data: { seededBy: 'copier' },
            origin: { seeded: { key: 'k3', takeSnapshot: true } },
          },
        ],
      };
      await keepsNone(
        reader,
        'copier: seeds fresh; no snapshot kept: volume data was there before this bring-up',
      );
      await runtime.destroy(lived.envId);
    });

    it('a job that failed with the same spec fails again without running again', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'flaky',
            kind: 'job',
            command: ['sh', '-c', 'echo "run $(cat /proc/sys/kernel/random/uuid)"; exit 5'],
          }),
        ]),
      );
      const first = (await applyPlan(runtime, plan).catch((e: unknown) => e)) as RuntimeStepError;
      expect(first).toBeInstanceOf(RuntimeStepError);
      expect(first.step).toBe('job:flaky');
      expect(first.reason).toMatch(/exited with code 5[\s\S]*run [0-9a-f-]{36}/);
      const ids = await workloadIds?.(plan.envId, 'flaky');
      const events: ProgressEvent[] = [];
      const again = (await applyPlan(runtime, plan, { onProgress: (e) => events.push(e) }).catch(
        (e: unknown) => e,
      )) as RuntimeStepError;
      expect(again).toBeInstanceOf(RuntimeStepError);
      expect(again.step).toBe('job:flaky');
      // The same output (its random id included): the same run, reported again, not a new one.
      expect(again.reason).toBe(first.reason);
      expect(events.some((e) => e.type === 'workload' && e.phase === 'started')).toBe(false);
      if (workloadIds) expect(await workloadIds(plan.envId, 'flaky')).toEqual(ids);
      await runtime.destroy(plan.envId);
    });

    it('an abort stops apply while it creates many containers: nothing more is created, nothing started', async () => {
      const plan = track(envPlan([workload({ name: 'many', command: ['testkit', 'sleep'], replicas: 40 })]));
      const abort = new AbortController();
      const applying = applyPlan(runtime, plan, { signal: abort.signal });
      applying.catch(() => {});
      await until(
        async () => (await runtime.observe(plan.envId)).workloads.length > 0,
        'the first container exists',
      );
      abort.abort(new Error('destroy requested'));
      const abortedAt = Date.now();
      await expect(applying).rejects.toThrow('destroy requested');
      expect(Date.now() - abortedAt).toBeLessThan(2_000);
      const { workloads } = await runtime.observe(plan.envId);
      expect(workloads.length).toBeLessThan(20);
      // Made and started at once where replicas cannot wait made: then only that nothing more comes.
      if (!differences.noCreatedReplicas) expect(workloads.filter((w) => w.state !== 'created')).toEqual([]);
      await new Promise((r) => setTimeout(r, 1_000));
      expect((await runtime.observe(plan.envId)).workloads.length).toBe(workloads.length);
      await runtime.destroy(plan.envId);
      expect((await runtime.listManaged()).filter((o) => o.envId === plan.envId)).toEqual([]);
    });

    it('an abort stops apply while it starts many containers: the rest are never started', async () => {
      const plan = track(envPlan([workload({ name: 'many', command: ['testkit', 'sleep'], replicas: 40 })]));
      const abort = new AbortController();
      const applying = applyPlan(runtime, plan, { signal: abort.signal });
      applying.catch(() => {});
      // Where making a replica starts it (no created-but-not-started state), the abort comes once
      // the first is made: waiting for it to run would let the rest be made meanwhile.
      await until(
        async () =>
          (await runtime.observe(plan.envId)).workloads.some(
            (w) => differences.noCreatedReplicas || w.state === 'running',
          ),
        differences.noCreatedReplicas ? 'the first replica is made' : 'the first container runs',
        60_000,
      );
      abort.abort(new Error('destroy requested'));
      const abortedAt = Date.now();
      await expect(applying).rejects.toThrow('destroy requested');
      expect(Date.now() - abortedAt).toBeLessThan(2_000);
      const { workloads } = await runtime.observe(plan.envId);
      if (differences.noCreatedReplicas) {
        // The rest were never made (a made pod starts), and none is made after the abort.
        expect(workloads.length).toBeLessThan(30);
        await new Promise((r) => setTimeout(r, 1_000));
        expect((await runtime.observe(plan.envId)).workloads.length).toBe(workloads.length);
      } else {
        expect(workloads).toHaveLength(40);
        expect(workloads.filter((w) => w.state !== 'created').length).toBeLessThan(30);
      }
      await runtime.destroy(plan.envId);
      expect((await runtime.listManaged()).filter((o) => o.envId === plan.envId)).toEqual([]);
    });

    it('a crash-looping service fails its start step with its last output, long before the timeout', async () => {
      const plan = track(
        envPlan([
          workload({
            name: 'crashy',
            command: ['sh', '-c', 'echo "crashing on purpose"; exit 3'],
            restart: 'always',
            healthcheck: {
              command: { shell: 'test -f /tmp/never' },
              intervalMs: 1_000,
              timeoutMs: 1_000,
              retries: 100,
              startPeriodMs: 0,
            },
          }),
        ]),
      );
      const started = Date.now();
      const err = (await applyPlan(runtime, plan).catch((e: unknown) => e)) as RuntimeStepError;
      expect(err).toBeInstanceOf(RuntimeStepError);
      expect(err.step).toBe('start:crashy');
      expect(err.reason).toMatch(/keeps crashing \(restarted \d+ times[\s\S]*crashing on purpose/);
      expect(Date.now() - started).toBeLessThan(30_000);
      await runtime.destroy(plan.envId);
    });
  });
}
