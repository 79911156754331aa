/** Resolving the builds of one environment with the real Docker Engine builder. */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WorkloadPlan } from '../plan/plan.js';
import { DockerImageBuilder } from '../runtime/docker/docker-image-builder.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import { TESTKIT_IMAGE, testInstanceName } from '../test-support/global-setup.js';
import { envPlan, workload } from '../test-support/plans.js';
import { type BuildProgress, resolveBuilds } from './resolve-builds.js';

const builder = new DockerImageBuilder({ instance: `${testInstanceName()}-resolve-builds` });
const dir = mkdtempSync(join(tmpdir(), 'mayfly-resolve-builds-'));

afterAll(async () => {
  for (const image of await builder.listBuilt()) await builder.remove(image.ref);
  rmSync(dir, { recursive: true, force: true });
});

/** A build context whose only step takes `seconds` and cannot come from the cache. */
async function slowContext(name: string, seconds: number, fail = false): Promise<WorkloadPlan['image']> {
  const context = join(dir, name);
  await mkdir(context, { recursive: true });
  const nonce = randomUUID();
  writeFileSync(
    join(context, 'Dockerfile'),
    `FROM ${TESTKIT_IMAGE}\nRUN echo ${nonce} && sleep ${seconds}${fail ? ' && exit 7' : ''}\n`,
  );
  return { build: { context, dockerfile: 'Dockerfile', args: {} } };
}

describe('resolveBuilds', () => {
  it('builds the independent images of one environment side by side, each once', async () => {
    const plan = envPlan([
      workload({ name: 'a', image: await slowContext('a', 3) }),
      workload({ name: 'b', image: await slowContext('b', 3) }),
    ]);
    // A third workload with a's build shares its image: built once.
    plan.workloads.push({ ...plan.workloads[0]!, name: 'a2' });
    const events: Parameters<BuildProgress>[0][] = [];
    const resolved = await resolveBuilds(plan, builder, { onProgress: (e) => events.push(e) });

    const order = events
      .filter((e) => e.status === 'building' || e.status === 'built')
      .map((e) => `${e.status}:${e.workload}`);
    // Both started before either finished: they ran at the same time.
    expect(order.slice(0, 2).sort()).toEqual(['building:a', 'building:b']);
    expect(order.filter((e) => e.startsWith('building'))).toHaveLength(2);
    const refs = resolved.workloads.map((w) => w.image.ref);
    expect(refs[0]).toBe(refs[2]);
    expect(refs[0]).not.toBe(refs[1]);
    for (const ref of refs) expect(await builder.hasImage(ref!)).toBe(true);
  });

  it('a failing build fails its own step and stops the others', async () => {
    const plan = envPlan([
      workload({ name: 'ok', image: await slowContext('ok', 60) }),
      workload({ name: 'bad', image: await slowContext('bad', 1, true) }),
    ]);
    const before = (await builder.listBuilt()).length;
    const err = (await resolveBuilds(plan, builder).catch((e: unknown) => e)) as RuntimeStepError;
    expect(err).toBeInstanceOf(RuntimeStepError);
    expect(err.step).toBe('build:bad');
    expect(err.reason).toMatch(/\b7\b/);
    // The 60 s build was cancelled, not waited for: it tagged nothing.
    expect((await builder.listBuilt()).length).toBe(before);
  });
});
