/** Resolving the builds of one environment with the real Docker Engine builder. */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BuildPlan, WorkloadPlan } from '../plan/plan.js';
import { DockerImageBuilder } from '../runtime/docker/docker-image-builder.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import { TESTKIT_IMAGE, testInstanceName } from '../test-support/global-setup.js';
import { envPlan, workload } from '../test-support/plans.js';
import type { BuildOptions, ImageBuilder } from './image-builder.js';
import { BUILD_OUTPUT_MAX_BYTES, type BuildProgress, resolveBuilds } from './resolve-builds.js';

const builder = new DockerImageBuilder({ instance: `${testInstanceName()}-resolve-builds` });
const dir = mkdtempSync(join(tmpdir(), 'mayfly-resolve-builds-'));

afterAll(async () => {
  for (const image of await builder.listBuilt()) await builder.remove(image.ref);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A build context whose only step echoes a nonce (see {@link echoed}), takes `seconds`, then runs
 * `then`, and cannot come from the cache.
 */
async function slowContext(
  name: string,
  seconds: number,
  fail = false,
  then = 'true',
): Promise<WorkloadPlan['image']> {
  const context = join(dir, name);
  await mkdir(context, { recursive: true });
  const nonce = randomUUID();
  writeFileSync(
    join(context, 'Dockerfile'),
    `FROM ${TESTKIT_IMAGE}\nRUN echo ${nonce} && sleep ${seconds} && ${then}${fail ? ' && exit 7' : ''}\n`,
  );
  return { build: { context, dockerfile: 'Dockerfile', args: {} } };
}

/** The line the build of {@link slowContext} `name` echoes. */
const echoed = async (name: string) =>
  /RUN echo (\S+)/.exec(await readFile(join(dir, name, 'Dockerfile'), 'utf8'))![1]!;

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
    const outputs = new Map<string, string>();
    const err = (await resolveBuilds(plan, builder, {
      onBuildOutput: (w, text) => void outputs.set(w, text),
    }).catch((e: unknown) => e)) as RuntimeStepError;
    expect(err).toBeInstanceOf(RuntimeStepError);
    expect(err.step).toBe('build:bad');
    expect(err.reason).toMatch(/\b7\b/);
    // The 60 s build was cancelled, not waited for: it tagged nothing.
    expect((await builder.listBuilt()).length).toBe(before);
    // Both outputs were given before the failure was: the failed one's, what it echoed and why it
    // failed, and the stopped one's, saying what stopped it.
    const bad = outputs.get('bad')!.trimEnd().split('\n');
    expect(bad).toContain(await echoed('bad'));
    expect(bad.at(-1)).toMatch(/^build failed: .*returned a non-zero code: 7$/);
    expect(outputs.get('ok')!.trimEnd().split('\n').at(-1)).toBe('build stopped: build:bad failed');
  });

  it("gives each build's output, its last 256 KiB in whole lines, to every workload of its image", async () => {
    // About 590 KB of output: the echo at the start is left out, the end is kept.
    const image = await slowContext('chatty', 0, false, 'seq 1 100000');
    const plan = envPlan([
      workload({ name: 'chatty', image }),
      workload({ name: 'other', image: TESTKIT_IMAGE }),
    ]);
    plan.workloads.push({ ...plan.workloads[0]!, name: 'chatty2' });
    const calls: [string, string][] = [];
    await resolveBuilds(plan, builder, { onBuildOutput: (w, text) => void calls.push([w, text]) });

    expect(calls.map(([w]) => w)).toEqual(['chatty', 'chatty2']);
    const text = calls[0]![1];
    expect(calls[1]![1]).toBe(text);
    const [note, ...lines] = text.split('\n');
    expect(note).toMatch(/^\[… \d+ bytes of earlier output left out\]$/);
    expect(Buffer.byteLength(text) - Buffer.byteLength(`${note}\n`)).toBeLessThanOrEqual(
      BUILD_OUTPUT_MAX_BYTES,
    );
    expect(Buffer.byteLength(text)).toBeGreaterThan(BUILD_OUTPUT_MAX_BYTES - 100);
    // Whole lines from the first one kept: consecutive numbers up to the last.
    const first = Number(lines[0]);
    expect(Number.isInteger(first) && first > 1).toBe(true);
    expect(lines.slice(0, 3)).toEqual([`${first}`, `${first + 1}`, `${first + 2}`]);
    expect(lines).toContain('100000');
    expect(text).toMatch(/Successfully built/);
    expect(text).not.toContain(await echoed('chatty'));

    // Built now: reused, not built again, so there is no new output.
    calls.length = 0;
    await resolveBuilds(plan, builder, { onBuildOutput: (w, text) => void calls.push([w, text]) });
    expect(calls).toEqual([]);
  });

  it('keeps the end of a line longer than the bound, and the output survives a failing callback', async () => {
    const huge = 'é'.repeat(BUILD_OUTPUT_MAX_BYTES); // twice the bound in UTF-8
    const fake: ImageBuilder = {
      name: 'fake',
      hasImage: async () => false,
      async build(_tag: string, _build: BuildPlan, options: BuildOptions) {
        options.onLog?.('first');
        options.onLog?.(`x${huge}`);
      },
      listBuilt: async () => [],
      remove: async () => true,
    };
    const plan = envPlan([workload({ name: 'f', image: await slowContext('fake', 0) })]);
    const texts: string[] = [];
    const resolved = await resolveBuilds(plan, fake, {
      onBuildOutput: (_w, text) => {
        texts.push(text);
        throw new Error('the store is down');
      },
    });
    expect(resolved.workloads[0]!.image.ref).toMatch(/^mayfly-build\//);
    expect(texts).toHaveLength(1);
    const [note, kept, end] = texts[0]!.split('\n');
    expect(note).toMatch(/^\[… \d+ bytes of earlier output left out\]$/);
    expect(end).toBe('');
    // The long line's end, cut at a whole character, within the bound.
    expect(kept).toMatch(/^é+$/);
    expect(Buffer.byteLength(`${kept}\n`)).toBeLessThanOrEqual(BUILD_OUTPUT_MAX_BYTES);
    expect(Buffer.byteLength(kept!)).toBeGreaterThan(BUILD_OUTPUT_MAX_BYTES - 4);
  });
});
