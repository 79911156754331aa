import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { describeImageBuilder } from '../../images/image-builder.case.js';
import type { EnvPlan } from '../../plan/plan.js';
import { requiredAgentBinary, TESTKIT_IMAGE, testInstanceName } from '../../test-support/global-setup.js';
import { envPlan, workload } from '../../test-support/plans.js';
import { applyPlan } from '../apply-plan.js';
import { describeRuntime } from '../runtime.case.js';
import { DockerImageBuilder } from './docker-image-builder.js';
import { DockerRuntime } from './docker-runtime.js';
import { imageVolumeName } from './names.js';

const MiB = 1024 * 1024;
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();
const lines = (text: string) => text.split('\n').filter(Boolean);

/** Resolves once `condition` holds, polling; fails with `what` after `timeoutMs`. */
async function until(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const containerIds = (instance: string, envId: string, workload: string) =>
  lines(
    docker(
      'ps',
      '-aq',
      '--no-trunc',
      '--filter',
      `label=mayfly.instance=${instance}`,
      '--filter',
      `label=mayfly.env=${envId}`,
      '--filter',
      `label=mayfly.service=${workload}`,
    ),
  );

const conformanceInstance = `${testInstanceName()}-conformance`;
const gateDir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-gates-'));
afterAll(() => rmSync(gateDir, { recursive: true, force: true }));
// On Linux the host reaches containers on their bridge network directly, as the gateway does.
describeRuntime('docker', {
  make: () =>
    new DockerRuntime({
      instance: conformanceInstance,
      // The suite reads a 128 MiB log back whole: keep more than the default 30 MiB per container.
      containerLogLimits: { maxSizeBytes: 64 * MiB, maxFiles: 4 },
      // As the server runs it: containers that wait for others are started early, held at a gate.
      startGate: { agentBinary: requiredAgentBinary(), dir: gateDir },
    }),
  reach: async (endpoint) => `http://${endpoint.host}:${endpoint.port}`,
  workloadIds: async (envId, workload) => containerIds(conformanceInstance, envId, workload),
});

describeImageBuilder('docker', {
  make: () => new DockerImageBuilder({ instance: conformanceInstance }),
  runtime: () => new DockerRuntime({ instance: conformanceInstance }),
  // The legacy builder runs each RUN step in a container of its own, unlabelled.
  buildWorkRunning: async (marker) =>
    docker('ps', '-a', '--no-trunc', '--format', '{{.Command}}').includes(marker),
});

describe('DockerRuntime', () => {
  const instance = `${testInstanceName()}-docker`;
  // Sockets of this agent are the runtime's connections to the Engine: the tests count them.
  const agent = new http.Agent({ keepAlive: false });
  const runtime = new DockerRuntime({
    instance,
    // `agent` is passed on to every request by docker-modem, though missing from DockerOptions' type.
    docker: new Docker({ socketPath: '/var/run/docker.sock', agent } as Docker.DockerOptions),
  });
  const images = new DockerImageBuilder({ instance });
  const openSockets = () => Object.values(agent.sockets).reduce((n, list) => n + (list?.length ?? 0), 0);
  const made: EnvPlan[] = [];
  const track = (plan: EnvPlan) => {
    made.push(plan);
    return plan;
  };
  const builtTags: string[] = [];
  afterAll(async () => {
    // Every step runs even when one fails, so one failure does not leave the rest behind.
    const results: PromiseSettledResult<unknown>[] = await Promise.allSettled(
      made.map((plan) => runtime.destroy(plan.envId)),
    );
    results.push(...(await Promise.allSettled(builtTags.map((tag) => images.remove(tag)))));
    agent.destroy();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  });

  it('bounds the output the Engine keeps for every container', async () => {
    const plan = track(envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })]));
    await applyPlan(runtime, plan);
    const [id] = containerIds(instance, plan.envId, 'box');
    const logConfig = JSON.parse(docker('inspect', '--format', '{{json .HostConfig.LogConfig}}', id!));
    expect(logConfig).toEqual({
      Type: 'json-file',
      Config: { 'max-size': String(10 * MiB), 'max-file': '3' },
    });
    await runtime.destroy(plan.envId);
  });

  it('creates environment networks while the engine has an IPv6 network', async () => {
    const name = `mayflytest-ipv6-${randomUUID().slice(0, 8)}`;
    const hextet = randomUUID().slice(0, 4);
    docker('network', 'create', '--ipv6', '--subnet', `fd00:6d61:7966:${hextet}::/64`, name);
    try {
      const plan = track(envPlan([workload({ name: 'box', command: ['testkit', 'sleep'] })]));
      await applyPlan(runtime, plan);
      expect((await runtime.observe(plan.envId)).workloads).toMatchObject([
        { name: 'box', state: 'running' },
      ]);
      await runtime.destroy(plan.envId);
    } finally {
      docker('network', 'rm', name);
    }
  });

  it("keeps the data of an image's VOLUME across a repair, and destroy removes it", async () => {
    const tag = `mayfly-test/image-volume:${randomUUID().slice(0, 12)}`;
    builtTags.push(tag);
    const pack = tar.pack();
    pack.entry({ name: 'Dockerfile' }, `FROM ${TESTKIT_IMAGE}\nVOLUME /data\nVOLUME ["/var/lib/other/"]\n`);
    pack.finalize();
    await images.build(
      tag,
      { context: '/unused', dockerfile: 'Dockerfile', args: {} },
      { context: pack as unknown as NodeJS.ReadableStream },
    );
    const plan = track(
      envPlan(
        [
          workload({ name: 'keeper', image: tag, command: ['testkit', 'sleep'] }),
          // Mounts of the plan win: no volume of the image's is added where the plan mounts one.
          workload({
            name: 'covered',
            image: tag,
            command: ['testkit', 'sleep'],
            mounts: [{ type: 'volume', source: 'mine', target: '/data/', readOnly: false }],
          }),
        ],
        { volumes: [{ name: 'mine' }] },
      ),
    );
    await applyPlan(runtime, plan);
    await runtime.exec(plan.envId, 'keeper', [
      'sh',
      '-c',
      'echo kept > /data/file; echo too > /var/lib/other/f',
    ]);

    const volumesOf = (workloadName: string) => {
      const [id] = containerIds(instance, plan.envId, workloadName);
      const mounts: { Name: string; Destination: string }[] = JSON.parse(
        docker('inspect', '--format', '{{json .Mounts}}', id!),
      );
      return Object.fromEntries(mounts.map((m) => [m.Destination, m.Name]));
    };
    const keeperVolumes = volumesOf('keeper');
    expect(keeperVolumes['/data']).toMatch(new RegExp(`^mayfly-${plan.envId}-keeper-data-[0-9a-f]{8}$`));
    expect(keeperVolumes['/var/lib/other']).toMatch(
      new RegExp(`^mayfly-${plan.envId}-keeper-var-lib-other-[0-9a-f]{8}$`),
    );
    expect(volumesOf('covered')).toEqual({
      '/data': `mayfly-${plan.envId}-mine`,
      '/var/lib/other': expect.stringMatching(/-covered-var-lib-other-/),
    });

    // The container goes behind the driver's back; the next apply (a repair) recreates it.
    const [before] = containerIds(instance, plan.envId, 'keeper');
    docker('rm', '-f', before!);
    await applyPlan(runtime, plan);
    const [after] = containerIds(instance, plan.envId, 'keeper');
    expect(after).not.toBe(before);
    expect((await runtime.readFile(plan.envId, 'keeper', '/data/file')).toString()).toBe('kept\n');
    expect((await runtime.readFile(plan.envId, 'keeper', '/var/lib/other/f')).toString()).toBe('too\n');
    // Labelled as the environment's: listed as managed, and destroy takes it.
    const managed = await runtime.listManaged();
    expect(managed).toContainEqual(
      expect.objectContaining({ kind: 'volume', id: keeperVolumes['/data'], envId: plan.envId }),
    );

    // A template volume named as the image's would be is refused, whichever was made first: its
    // data must not stand in for the image's, nor the image's for a template's.
    const alias = (p: EnvPlan) =>
      imageVolumeName(p.envId, 'keeper', 1, '/data').slice(`mayfly-${p.envId}-`.length);
    const over = { ...plan, volumes: [...plan.volumes, { name: alias(plan) }] };
    await expect(applyPlan(runtime, over)).rejects.toMatchObject({
      step: `volume:${alias(plan)}`,
      reason: `volume "${alias(plan)}" would be ${keeperVolumes['/data']}, which stands for the VOLUME /data of an image: rename it`,
    });
    const first = track(envPlan([plan.workloads[0]!]));
    const before2 = { ...first, volumes: [{ name: alias(first) }] };
    await expect(applyPlan(runtime, before2)).rejects.toMatchObject({
      step: 'create:keeper',
      reason: expect.stringMatching(
        /VOLUME \/data would be .*, which is a volume of the template: rename that one$/,
      ),
    });
    await runtime.destroy(first.envId);

    await runtime.destroy(plan.envId);
    expect(lines(docker('volume', 'ls', '-q', '--filter', `label=mayfly.env=${plan.envId}`))).toEqual([]);
    expect(await images.remove(tag)).toBe(true);
  });

  /** The limits a build step sees in its own cgroup (v1 or v2), as its RUN prints them. */
  const buildStepLimits = async (limits?: { memoryBytes?: number; cpus?: number }) => {
    const tag = `mayfly-test/build-limits:${randomUUID().slice(0, 12)}`;
    builtTags.push(tag);
    const script = [
      'mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)',
      'cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max)',
      'echo limits $mem $cpu',
    ].join('; ');
    const pack = tar.pack();
    // A build arg that changes every time: the step runs, never comes from the cache.
    pack.entry({ name: 'Dockerfile' }, `FROM ${TESTKIT_IMAGE}\nARG NONCE\nRUN ${script}\n`);
    pack.finalize();
    const logs: string[] = [];
    const builder = limits ? new DockerImageBuilder({ instance, buildLimits: limits }) : images;
    await builder.build(
      tag,
      { context: '/unused', dockerfile: 'Dockerfile', args: { NONCE: randomUUID() } },
      { context: pack as unknown as NodeJS.ReadableStream, onLog: (line) => logs.push(line) },
    );
    const line = logs.find((l) => l.startsWith('limits '));
    expect(line).toBeDefined();
    const [memory, quota, period] = line!.split(' ').slice(1);
    return { memory, quota: Number(quota), period: Number(period) };
  };

  it('runs every build step with memory and CPU limits: 2 GiB and 1 CPU by default', async () => {
    expect(await buildStepLimits()).toEqual({
      memory: String(2 * 1024 * MiB),
      quota: 100_000,
      period: 100_000,
    });
    expect(await buildStepLimits({ memoryBytes: 256 * MiB, cpus: 0.5 })).toEqual({
      memory: String(256 * MiB),
      quota: 50_000,
      period: 100_000,
    });
  });

  it('fails a build step that uses more memory than the build limit', async () => {
    const tag = `mayfly-test/build-oom:${randomUUID().slice(0, 12)}`;
    builtTags.push(tag);
    const pack = tar.pack();
    // 512 MiB written for real (not merely reserved) under a 128 MiB limit, no swap on top.
    const dockerfile = `FROM ${TESTKIT_IMAGE}\nARG NONCE\nRUN python3 -c "b = b'x' * (512 * 1024 * 1024); print('survived', len(b))"\n`;
    pack.entry({ name: 'Dockerfile' }, dockerfile);
    pack.finalize();
    const logs: string[] = [];
    const err = await new DockerImageBuilder({ instance, buildLimits: { memoryBytes: 128 * MiB } })
      .build(
        tag,
        { context: '/unused', dockerfile: 'Dockerfile', args: { NONCE: randomUUID() } },
        { context: pack as unknown as NodeJS.ReadableStream, onLog: (line) => logs.push(line) },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/non-zero code: 137/); // killed by the OOM killer
    expect(logs.some((l) => l.startsWith('survived'))).toBe(false);
    expect(await images.hasImage(tag)).toBe(false);
  });

  it('refuses build limits that cannot work', () => {
    expect(() => new DockerImageBuilder({ buildLimits: { memoryBytes: 1024 } })).toThrow(/memoryBytes/);
    expect(() => new DockerImageBuilder({ buildLimits: { cpus: 0 } })).toThrow(/cpus/);
  });

  it('closes the connection to the Engine when a log reader gives up or aborts', async () => {
    const plan = track(
      envPlan([
        workload({
          name: 'chatty',
          // A few MiB of output, then silence: the follow stream has nothing more to say.
          command: ['sh', '-c', 'head -c 8000000 /dev/zero | tr "\\0" "x"; echo; exec testkit sleep'],
        }),
      ]),
    );
    await applyPlan(runtime, plan);
    await until(async () => openSockets() === 0, 'apply left no connection open');

    // A reader that stops after one chunk and destroys the stream: not everything was read.
    const partial = await runtime.logs(plan.envId, 'chatty');
    await new Promise((resolve) => partial.once('readable', resolve));
    expect(openSockets()).toBe(1);
    partial.destroy();
    await until(() => openSockets() === 0, 'the partly read log stream frees its socket');

    // A follower of a silent container: only the reader's side can end it.
    const followed = await runtime.logs(plan.envId, 'chatty', { follow: true, tail: 1 });
    followed.resume();
    expect(openSockets()).toBe(1);
    followed.destroy();
    await until(() => openSockets() === 0, 'the destroyed follower frees its socket');

    const abort = new AbortController();
    const aborted = await runtime.logs(plan.envId, 'chatty', { follow: true, tail: 1, signal: abort.signal });
    const ended = new Promise((resolve) => aborted.once('end', resolve));
    aborted.resume();
    abort.abort();
    await ended;
    await until(() => openSockets() === 0, 'the aborted follower frees its socket');
    await runtime.destroy(plan.envId);
  });
});
