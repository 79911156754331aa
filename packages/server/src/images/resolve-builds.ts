/** Gives every workload with a `build` its content-addressed image, building only what is missing. */

import { workloadHash } from '../plan/hash.js';
import type { BuildPlan, EnvPlan, WorkloadPlan } from '../plan/plan.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import { buildContentHash, contentTag } from './content-tag.js';
import { listContextFiles, packContext } from './context-files.js';
import { assertBuildAllowed } from './dockerfile-policy.js';
import type { ImageBuilder } from './image-builder.js';

export type BuildProgress = (
  event:
    | { workload: string; status: 'reused' | 'building' | 'built'; image: string }
    /** A build step starting (`Step 3/7 : RUN …`), so a long first build shows where it is. */
    | { workload: string; status: 'step'; step: string },
) => void;

const STEP = /^Step (\d+)\/(\d+) : /;

/**
 * The builder's own step lines, told from a build's output that only looks like them: a RUN step
 * printing `Step 1/1 : …` a million times must not become a million events. A step counts when
 * its number is the next one and its total is the build's (set by the first step).
 */
class StepFilter {
  private last = 0;
  private total: number | null = null;

  accepts(line: string): boolean {
    const match = STEP.exec(line);
    if (!match) return false;
    const n = Number(match[1]);
    const total = Number(match[2]);
    if (n !== this.last + 1 || n > total || (this.total !== null && total !== this.total)) return false;
    this.total = total;
    this.last = n;
    return true;
  }
}

/**
 * The last bytes of a build's output {@link ResolveBuildsOptions.onBuildOutput} gets: enough for
 * the whole output of most builds, and for the end of any (where a failure shows).
 */
export const BUILD_OUTPUT_MAX_BYTES = 256 * 1024;

/**
 * The last `limit` bytes of a stream of lines, in whole lines (a line longer than that keeps its
 * end), in bounded memory. Its own small class rather than the Docker driver's `ByteTail`: this
 * layer sits above the drivers and does not import them, and it gets lines, not byte chunks.
 */
class LineTail {
  private lines: string[] = [];
  private sizes: number[] = [];
  /** Index of the first kept line: dropping from the front does not copy the rest every time. */
  private head = 0;
  private bytes = 0;
  /** Bytes of output pushed but no longer kept. */
  private dropped = 0;

  constructor(private readonly limit: number) {}

  push(text: string): void {
    let line = text;
    let size = Buffer.byteLength(line) + 1; // with its newline
    if (size > this.limit) {
      line = lastBytes(line, this.limit - 1);
      const cut = Buffer.byteLength(line) + 1;
      this.dropped += size - cut;
      size = cut;
    }
    this.lines.push(line);
    this.sizes.push(size);
    this.bytes += size;
    while (this.bytes > this.limit) {
      this.bytes -= this.sizes[this.head]!;
      this.dropped += this.sizes[this.head]!;
      this.lines[this.head] = '';
      this.head++;
    }
    if (this.head >= 1024 && this.head * 2 >= this.lines.length) {
      this.lines = this.lines.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }

  /** The kept lines, each ending in a newline; after a note line when earlier output was left out. */
  text(): string {
    const kept = this.lines.slice(this.head);
    const body = kept.length > 0 ? `${kept.join('\n')}\n` : '';
    return this.dropped > 0 ? `[… ${this.dropped} bytes of earlier output left out]\n${body}` : body;
  }
}

/** The end of `text` in at most `maxBytes` of UTF-8, starting at a whole character. */
function lastBytes(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text);
  let start = Math.max(0, bytes.length - maxBytes);
  while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
  return bytes.subarray(start).toString('utf8');
}

/** The first line of an error's message (the Docker builder's adds the output's end after it). */
const firstLine = (err: unknown) =>
  (err instanceof Error ? err.message : String(err)).trim().split('\n', 1)[0] ?? '';

export interface ResolveBuildsOptions {
  onProgress?: BuildProgress;
  /**
   * Called once for every build that ran (the builder was started), whatever its end: built,
   * failed (a last line `build failed: …` says why) or stopped (`build stopped: …`, by a sibling's
   * failure or by `signal`), with the last {@link BUILD_OUTPUT_MAX_BYTES} of its output lines.
   * Not called for a reused image, nor for a build refused before it started. Workloads sharing
   * one image get the same output, each under its own name. Awaited before the build's outcome is
   * reported; a callback that throws or rejects does not fail the build (report it yourself).
   */
  onBuildOutput?: (workload: string, output: string) => void | Promise<void>;
  /** A destroy stops the builds running and the ones still to come. */
  signal?: AbortSignal;
  /** Called for every image an environment uses (built or reused): the basis of image GC's "least recently used". */
  onImageUsed?: (image: string) => Promise<void>;
  /** Distinct images built at once; default {@link DEFAULT_BUILD_CONCURRENCY}. */
  concurrency?: number;
}

/** Independent builds of one environment run side by side, this many at a time. */
export const DEFAULT_BUILD_CONCURRENCY = 3;

/**
 * Returns the plan with images and spec hashes filled in. Every distinct image is built once,
 * independent ones in parallel (a few at a time); the first failure stops the others. A workload
 * whose image was resolved before (a repair, a restarted control plane) keeps that image as long
 * as it exists: a repair never rebuilds from a checkout that changed since. If the image is gone
 * (image GC, a user), it is rebuilt only when the context still hashes to it.
 */
export async function resolveBuilds(
  plan: EnvPlan,
  builder: ImageBuilder,
  options: ResolveBuildsOptions = {},
): Promise<EnvPlan> {
  const { signal } = options;
  // First, the tag each workload needs (cheap, in order); then each distinct tag made once.
  // `present`: already seen to exist (a resolved image kept by a repair), not asked again.
  // `workloads`: every workload using the tag, the first one (the build's step and progress) first.
  const tags = new Map<string, { build: BuildPlan; workloads: string[]; present: boolean }>();
  const tagOf = new Map<string, string>();
  for (const workload of plan.workloads) {
    const { build } = workload.image;
    if (!build) continue;
    signal?.throwIfAborted();
    const step = `build:${workload.name}`;
    const resolved = workload.image.ref ?? null;
    if (resolved !== null && (tags.has(resolved) || (await builder.hasImage(resolved)))) {
      tagOf.set(workload.name, resolved);
      const known = tags.get(resolved);
      if (known) known.workloads.push(workload.name);
      else tags.set(resolved, { build, workloads: [workload.name], present: true });
      continue;
    }
    let tag: string;
    try {
      tag = contentTag(plan.project, await buildContentHash(build));
    } catch (err) {
      throw new RuntimeStepError(step, `cannot read build context: ${(err as Error).message}`);
    }
    if (resolved !== null && tag !== resolved) {
      throw new RuntimeStepError(
        step,
        `image ${resolved} built for this environment is gone, and its build context has changed since; destroy and recreate the environment`,
      );
    }
    tagOf.set(workload.name, tag);
    const known = tags.get(tag);
    if (known) known.workloads.push(workload.name);
    else tags.set(tag, { build, workloads: [workload.name], present: false });
  }

  const failed = new AbortController();
  const stop = signal ? AbortSignal.any([signal, failed.signal]) : failed.signal;
  const queue = [...tags];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [tag, { build, workloads, present }] = next;
      stop.throwIfAborted();
      try {
        await ensureBuilt(builder, tag, build, workloads, present, options, stop);
        await options.onImageUsed?.(tag);
      } catch (err) {
        failed.abort(err);
        throw err;
      }
    }
  };
  const concurrency = Math.max(1, options.concurrency ?? DEFAULT_BUILD_CONCURRENCY);
  const results = await Promise.allSettled(Array.from({ length: Math.min(concurrency, tags.size) }, worker));
  signal?.throwIfAborted();
  // The failure that stopped the others, not the abort it caused in them.
  if (failed.signal.aborted) throw failed.signal.reason;
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;

  const workloads = plan.workloads.map((workload): WorkloadPlan => {
    const tag = tagOf.get(workload.name);
    const { build } = workload.image;
    if (tag === undefined || !build || workload.image.ref === tag) return workload;
    const { specHash: _old, ...rest } = { ...workload, image: { build, ref: tag } };
    // The tag is a hash of everything the build reads: where the context was checked out (a new
    // folder for every push of a preview) does not make the container a different one.
    return { ...rest, specHash: workloadHash({ ...rest, image: { ref: tag } }) };
  });
  return { ...plan, workloads };
}

/**
 * Builds `tag` unless it is present; a build's failure is its first workload's `build:` step. The
 * output of a build that ran goes to every workload of `workloads` (see `onBuildOutput`).
 */
async function ensureBuilt(
  builder: ImageBuilder,
  tag: string,
  build: BuildPlan,
  workloads: string[],
  present: boolean,
  options: Pick<ResolveBuildsOptions, 'onProgress' | 'onBuildOutput'>,
  signal: AbortSignal,
): Promise<void> {
  const { onProgress, onBuildOutput } = options;
  const workload = workloads[0]!;
  if (present || (await builder.hasImage(tag))) {
    onProgress?.({ workload, status: 'reused', image: tag });
    return;
  }
  onProgress?.({ workload, status: 'building', image: tag });
  const output = new LineTail(BUILD_OUTPUT_MAX_BYTES);
  let ran = false;
  try {
    // The daemon itself would fetch an `ADD <url>`, from the host's network: refused.
    await assertBuildAllowed(build);
    const entries = await listContextFiles(build.context, build.dockerfile);
    const steps = new StepFilter();
    ran = true;
    await builder.build(tag, build, {
      context: packContext(build.context, entries),
      onLog: (line) => {
        output.push(line);
        if (steps.accepts(line)) onProgress?.({ workload, status: 'step', step: line.slice(0, 120) });
      },
      signal,
    });
  } catch (err) {
    if (ran)
      output.push(
        signal.aborted ? `build stopped: ${stopReason(signal.reason)}` : `build failed: ${firstLine(err)}`,
      );
    if (signal.aborted) throw signal.reason;
    throw new RuntimeStepError(`build:${workload}`, (err as Error).message);
  } finally {
    if (ran && onBuildOutput) {
      const text = output.text();
      for (const name of workloads) {
        try {
          await onBuildOutput(name, text);
        } catch {
          // Keeping the output is the caller's concern: the build's outcome stands.
        }
      }
    }
  }
  onProgress?.({ workload, status: 'built', image: tag });
}

/** Why a build was stopped, in a few words: a sibling's failed step, a timeout, a destroy. */
function stopReason(reason: unknown): string {
  if (reason instanceof RuntimeStepError) return `${reason.step} failed`;
  return firstLine(reason) || 'aborted';
}

/** True when some workload's image still has to be resolved (or checked) by {@link resolveBuilds}. */
export const needsBuild = (plan: EnvPlan) => plan.workloads.some((w) => w.image.build);
