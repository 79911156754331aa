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

export interface ResolveBuildsOptions {
  onProgress?: BuildProgress;
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
  const { onProgress, signal } = options;
  // First, the tag each workload needs (cheap, in order); then each distinct tag made once.
  // `present`: already seen to exist (a resolved image kept by a repair), not asked again.
  const tags = new Map<string, { build: BuildPlan; workload: string; present: boolean }>();
  const tagOf = new Map<string, string>();
  for (const workload of plan.workloads) {
    const { build } = workload.image;
    if (!build) continue;
    signal?.throwIfAborted();
    const step = `build:${workload.name}`;
    const resolved = workload.image.ref ?? null;
    if (resolved !== null && (tags.has(resolved) || (await builder.hasImage(resolved)))) {
      tagOf.set(workload.name, resolved);
      if (!tags.has(resolved)) tags.set(resolved, { build, workload: workload.name, present: true });
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
    if (!tags.has(tag)) tags.set(tag, { build, workload: workload.name, present: false });
  }

  const failed = new AbortController();
  const stop = signal ? AbortSignal.any([signal, failed.signal]) : failed.signal;
  const queue = [...tags];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [tag, { build, workload, present }] = next;
      stop.throwIfAborted();
      try {
        await ensureBuilt(builder, tag, build, workload, present, onProgress, stop);
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

/** Builds `tag` unless it is present; a build's failure is its workload's `build:` step. */
async function ensureBuilt(
  builder: ImageBuilder,
  tag: string,
  build: BuildPlan,
  workload: string,
  present: boolean,
  onProgress: BuildProgress | undefined,
  signal: AbortSignal,
): Promise<void> {
  if (present || (await builder.hasImage(tag))) {
    onProgress?.({ workload, status: 'reused', image: tag });
    return;
  }
  onProgress?.({ workload, status: 'building', image: tag });
  try {
    // The daemon itself would fetch an `ADD <url>`, from the host's network: refused.
    await assertBuildAllowed(build);
    const entries = await listContextFiles(build.context, build.dockerfile);
    const steps = new StepFilter();
    await builder.build(tag, build, {
      context: packContext(build.context, entries),
      onLog: (line) => {
        if (steps.accepts(line)) onProgress?.({ workload, status: 'step', step: line.slice(0, 120) });
      },
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new RuntimeStepError(`build:${workload}`, (err as Error).message);
  }
  onProgress?.({ workload, status: 'built', image: tag });
}

/** True when some workload's image still has to be resolved (or checked) by {@link resolveBuilds}. */
export const needsBuild = (plan: EnvPlan) => plan.workloads.some((w) => w.image.build);
