/**
 * The conformance suite every ImageBuilder must pass: builds from the context it is given, lists
 * and removes only its own images, never removes one in use, and stops a cancelled build on the
 * platform too. A builder's test file calls `describeImageBuilder(name, options)`.
 */
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import type { BuildPlan, EnvPlan } from '../plan/plan.js';
import { applyPlan } from '../runtime/apply-plan.js';
import type { Runtime } from '../runtime/runtime.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { envPlan, workload } from '../test-support/plans.js';
import { until } from '../test-support/until.js';
import type { ImageBuilder } from './image-builder.js';

export interface ImageBuilderCaseOptions {
  make: () => ImageBuilder;
  /** Where the images built are run, to check they are what was built and are kept while in use. */
  runtime: () => Runtime;
  /** True while the platform still runs build work whose command line contains `marker`. */
  buildWorkRunning?: (marker: string) => Promise<boolean>;
}

/** An uncompressed tar of the given files, as the layer above the builder hands a build context over. */
function contextTar(files: Record<string, string>): Readable {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, content);
  pack.finalize();
  return pack as unknown as Readable; // tar-stream's Pack is a streamx stream, readable like Node's
}

/** What a build needs besides its context: where the context came from no longer matters to the builder. */
const buildPlan = (args: Record<string, string> = {}): BuildPlan => ({
  context: '/nonexistent/the-builder-must-not-read-this',
  dockerfile: 'Dockerfile',
  args,
});

export function describeImageBuilder(name: string, options: ImageBuilderCaseOptions): void {
  const { buildWorkRunning } = options;
  describe(`ImageBuilder conformance: ${name}`, () => {
    const builder = options.make();
    const runtime = options.runtime();
    const made: EnvPlan[] = [];
    const track = (plan: EnvPlan) => {
      made.push(plan);
      return plan;
    };
    const builtTags: string[] = [];
    const newTag = () => {
      const tag = `mayfly-test/conformance-build:${randomUUID().slice(0, 12)}`;
      builtTags.push(tag);
      return tag;
    };
    afterAll(async () => {
      const results: PromiseSettledResult<unknown>[] = await Promise.allSettled(
        made.map((plan) => runtime.destroy(plan.envId)),
      );
      results.push(...(await Promise.allSettled(builtTags.map((tag) => builder.remove(tag)))));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });

    it('builds from the context it is given, lists the image, and removes it only once unused', async () => {
      const tag = newTag();
      const logs: string[] = [];
      await builder.build(tag, buildPlan({ GREETING: 'built with args' }), {
        context: contextTar({
          Dockerfile: `FROM ${TESTKIT_IMAGE}\nARG GREETING\nCOPY hello.txt /hello.txt\nRUN echo "$GREETING" > /greeting\n`,
          'hello.txt': 'from the context tar\n',
        }),
        onLog: (line) => logs.push(line),
      });
      expect(logs.length).toBeGreaterThan(0);
      expect(await builder.hasImage(tag)).toBe(true);
      const listed = (await builder.listBuilt()).find((image) => image.ref === tag);
      expect(listed).toMatchObject({ ref: tag });
      expect(listed!.sizeBytes).toBeGreaterThan(0);
      expect(Date.now() - listed!.createdAt.getTime()).toBeLessThan(10 * 60_000);

      const plan = track(envPlan([workload({ name: 'app', image: tag, command: ['testkit', 'sleep'] })]));
      await applyPlan(runtime, plan);
      expect((await runtime.readFile(plan.envId, 'app', '/hello.txt')).toString()).toBe(
        'from the context tar\n',
      );
      expect((await runtime.exec(plan.envId, 'app', ['cat', '/greeting'])).stdout).toBe('built with args\n');

      // In use: not removed, never forced.
      expect(await builder.remove(tag)).toBe(false);
      expect(await builder.hasImage(tag)).toBe(true);
      await runtime.destroy(plan.envId);
      expect(await builder.remove(tag)).toBe(true);
      expect(await builder.hasImage(tag)).toBe(false);
      expect((await builder.listBuilt()).some((image) => image.ref === tag)).toBe(false);
      expect(await builder.remove(tag)).toBe(true); // already gone
    });

    it('removing several tags of one image at once: every removal says gone, and the image is', async () => {
      const context = () => contextTar({ Dockerfile: `FROM ${TESTKIT_IMAGE}\nLABEL same=content\n` });
      const tags = [newTag(), newTag(), newTag(), newTag()];
      for (const tag of tags) await builder.build(tag, buildPlan(), { context: context() });
      expect(await Promise.all(tags.map((tag) => builder.remove(tag)))).toEqual([true, true, true, true]);
      for (const tag of tags) expect(await builder.hasImage(tag)).toBe(false);
    });

    it('a failing build rejects with the builder output; images it did not build are not listed or removable', async () => {
      const tag = newTag();
      const err = await builder
        .build(tag, buildPlan(), {
          context: contextTar({ Dockerfile: `FROM ${TESTKIT_IMAGE}\nRUN echo about-to-fail && exit 9\n` }),
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain('about-to-fail');
      expect(await builder.hasImage(tag)).toBe(false);
      expect((await builder.listBuilt()).some((image) => image.ref === TESTKIT_IMAGE)).toBe(false);
      await expect(builder.remove(TESTKIT_IMAGE)).rejects.toThrow();
      expect(await builder.hasImage(TESTKIT_IMAGE)).toBe(true);
    });

    it('a failing build that printed a lot rejects with only the end of its output', async () => {
      const tag = newTag();
      const err = await builder
        .build(tag, buildPlan(), {
          context: contextTar({
            // ~590 KB in short lines, then one 600 KB line, then the line that explains the failure.
            Dockerfile: `FROM ${TESTKIT_IMAGE}\nRUN seq 1 100000; head -c 600000 /dev/zero | tr '\\0' x; echo; echo the-last-words; exit 4\n`,
          }),
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      const message = (err as Error).message;
      expect(message).toMatch(/the-last-words/);
      expect(message).toMatch(/\b4\b/); // the exit code, in the builder's own failure line
      expect(Buffer.byteLength(message)).toBeLessThan(16 * 1024);
      expect(await builder.hasImage(tag)).toBe(false);
    });

    it('a cancelled build stops at once, on the platform too, and tags nothing', async () => {
      const tag = newTag();
      const marker = `build-marker-${randomUUID().slice(0, 8)}`;
      const abort = new AbortController();
      let abortedAt = 0;
      const building = builder.build(tag, buildPlan(), {
        context: contextTar({
          Dockerfile: `FROM ${TESTKIT_IMAGE}\nRUN echo ${marker}-running && sleep 120\n`,
        }),
        // Cancel once the long step runs (its output, not the step's title, names the marker).
        onLog: (line) => {
          if (line.startsWith(`${marker}-running`) && !abortedAt) {
            abortedAt = Date.now();
            abort.abort(new Error('cancelled by the test'));
          }
        },
        signal: abort.signal,
      });
      await expect(building).rejects.toThrow('cancelled by the test');
      expect(abortedAt).toBeGreaterThan(0);
      expect(Date.now() - abortedAt).toBeLessThan(5_000);
      if (buildWorkRunning) {
        await until(
          'the cancelled build step is gone',
          async () => ((await buildWorkRunning(marker)) ? undefined : true),
          20_000,
        );
      }
      expect(await builder.hasImage(tag)).toBe(false);

      // Already aborted: nothing is sent at all.
      const before = new AbortController();
      before.abort(new Error('never started'));
      await expect(
        builder.build(newTag(), buildPlan(), {
          context: contextTar({ Dockerfile: `FROM ${TESTKIT_IMAGE}\n` }),
          signal: before.signal,
        }),
      ).rejects.toThrow('never started');
    });
  });
}
