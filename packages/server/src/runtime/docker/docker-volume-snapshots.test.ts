/** Docker's volume snapshots against the shared conformance case (runtime/volume-snapshots.case.ts). */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import type { EnvPlan } from '../../plan/plan.js';
import { requiredAgentBinary, TESTKIT_IMAGE, testInstanceName } from '../../test-support/global-setup.js';
import { envPlan, workload } from '../../test-support/plans.js';
import { applyPlan } from '../apply-plan.js';
import { SnapshotGoneError } from '../runtime.js';
import { describeVolumeSnapshots } from '../volume-snapshots.case.js';
import { DockerImageBuilder } from './docker-image-builder.js';
import { DockerRuntime } from './docker-runtime.js';
import { DockerSandboxRuntime } from './docker-sandbox-runtime.js';

const instance = `${testInstanceName()}-snapshots`;
const make = () => new DockerRuntime({ instance, agentBinary: requiredAgentBinary() });

describeVolumeSnapshots('docker', { make });

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();

describe('Docker volume snapshots against hostile images', () => {
  const runtime = make();
  const images = new DockerImageBuilder({ instance });
  const made: EnvPlan[] = [];
  const tags: string[] = [];
  afterAll(async () => {
    await Promise.all(made.map((plan) => runtime.destroy(plan.envId)));
    await Promise.allSettled(tags.map((tag) => images.remove(tag)));
  });

  it('a clone of a snapshot removed meanwhile is refused, and the empty volume the Engine made for it removed', async () => {
    const plan = envPlan([workload({ name: 'db', command: ['testkit', 'sleep'] })], {
      volumes: [{ name: 'data' }],
    });
    made.push(plan);
    await runtime.prepareEnvironment(plan, AbortSignal.timeout(60_000));
    // No volume check before the copy to race with: the helper's own mount would make one.
    const id = `gone${randomUUID().slice(0, 8)}`;
    await expect(
      runtime.snapshots!.restore(plan, 'data', id, AbortSignal.timeout(60_000)),
    ).rejects.toBeInstanceOf(SnapshotGoneError);
    expect(docker('volume', 'ls', '-q', '--filter', `name=mayfly-snap-${id}`)).toBe('');
    expect(await runtime.snapshots!.exists(id)).toBe(false);
  });

  it("an image's Mayfly labels mean nothing: it is no snapshot helper, restarts nobody and stays observed", async () => {
    // Another environment's container, stopped: what a forged "stopped writers" list would start.
    const victim = envPlan([workload({ name: 'victim', command: ['testkit', 'sleep'] })]);
    made.push(victim);
    await applyPlan(runtime, victim);
    const victimId = docker('ps', '-q', '--no-trunc', '--filter', `label=mayfly.env=${victim.envId}`);
    docker('stop', '-t', '0', victimId);

    const tag = `mayfly-test/labelled:${randomUUID().slice(0, 12)}`;
    tags.push(tag);
    const pack = tar.pack();
    pack.entry(
      { name: 'Dockerfile' },
      [
        `FROM ${TESTKIT_IMAGE}`,
        `LABEL mayfly.helper=snapshot mayfly.stopped-writers=${victimId} mayfly.snapshot=forged mayfly.gated=true \\`,
        '  mayfly.sandbox=forged mayfly.probe=gvisor',
        '',
      ].join('\n'),
    );
    pack.finalize();
    await images.build(
      tag,
      { context: '/unused', dockerfile: 'Dockerfile', args: {} },
      { context: pack as unknown as NodeJS.ReadableStream },
    );
    const plan = envPlan([workload({ name: 'forger', image: tag, command: ['testkit', 'sleep'] })]);
    made.push(plan);
    await applyPlan(runtime, plan);
    const forgerId = docker('ps', '-q', '--no-trunc', '--filter', `label=mayfly.env=${plan.envId}`);
    expect(forgerId).toMatch(/^[0-9a-f]{64}$/);
    expect(docker('inspect', '-f', '{{index .Config.Labels "mayfly.helper"}}', forgerId)).toBe('');

    // The next apply looks for snapshot helpers left by a crash, to start the writers they name.
    await applyPlan(runtime, plan);
    expect(docker('ps', '-q', '--no-trunc', '--filter', `label=mayfly.env=${plan.envId}`)).toBe(forgerId);
    expect(docker('inspect', '-f', '{{.State.Running}}', victimId)).toBe('false');
    expect((await runtime.observe(plan.envId)).workloads.map((w) => [w.name, w.state])).toEqual([
      ['forger', 'running'],
    ]);
    // Nor is it a sandbox (which the sandbox service would stop and remove as one it has no record of).
    const sandboxes = new DockerSandboxRuntime({ instance, agentBinary: requiredAgentBinary() });
    expect(await sandboxes.list()).toEqual([]);
  });
});
