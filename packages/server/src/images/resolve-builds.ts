/** Gives every workload with a `build` its content-addressed image, building only what is missing. */
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import type { Runtime } from '../runtime/runtime.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import { workloadHash } from '../template/index.js';
import { buildContentHash, contentTag } from './content-tag.js';
import { listContextFiles, packContext } from './context-files.js';
import { assertBuildAllowed } from './dockerfile-policy.js';

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
  /** A destroy stops the build running and the ones still to come. */
  signal?: AbortSignal;
  /** Called for every image an environment uses (built or reused): the basis of image GC's "least recently used". */
  onImageUsed?: (image: string) => Promise<void>;
}

/**
 * Returns the plan with images and spec hashes filled in; builds run one at a time (2-core
 * machines). A workload whose image was resolved before (a repair, a restarted control plane) keeps
 * that image as long as it exists: a repair never rebuilds from a checkout that changed since. If
 * the image is gone (image GC, a user), it is rebuilt only when the context still hashes to it.
 */
export async function resolveBuilds(
  plan: EnvPlan,
  runtime: Runtime,
  options: ResolveBuildsOptions = {},
): Promise<EnvPlan> {
  const { onProgress, signal } = options;
  const built = new Map<string, string>();
  const workloads: WorkloadPlan[] = [];
  for (const workload of plan.workloads) {
    const { build } = workload.image;
    if (!build) {
      workloads.push(workload);
      continue;
    }
    signal?.throwIfAborted();
    const step = `build:${workload.name}`;
    const resolved = workload.image.ref ?? null;
    if (resolved !== null && (built.has(resolved) || (await runtime.hasImage(resolved)))) {
      if (!built.has(resolved)) onProgress?.({ workload: workload.name, status: 'reused', image: resolved });
      built.set(resolved, workload.name);
      await options.onImageUsed?.(resolved);
      workloads.push(workload);
      continue;
    }
    let image: string;
    try {
      image = contentTag(plan.project, await buildContentHash(build));
    } catch (err) {
      throw new RuntimeStepError(step, `cannot read build context: ${(err as Error).message}`);
    }
    if (resolved !== null && image !== resolved) {
      throw new RuntimeStepError(
        step,
        `image ${resolved} built for this environment is gone, and its build context has changed since; destroy and recreate the environment`,
      );
    }
    if (!built.has(image)) {
      if (await runtime.hasImage(image)) {
        onProgress?.({ workload: workload.name, status: 'reused', image });
      } else {
        onProgress?.({ workload: workload.name, status: 'building', image });
        try {
          // The daemon itself would fetch an `ADD <url>`, from the host's network: refused.
          await assertBuildAllowed(build);
          const entries = await listContextFiles(build.context, build.dockerfile);
          const steps = new StepFilter();
          await runtime.buildImage(image, build, {
            context: packContext(build.context, entries),
            onLog: (line) => {
              if (steps.accepts(line))
                onProgress?.({ workload: workload.name, status: 'step', step: line.slice(0, 120) });
            },
            ...(signal ? { signal } : {}),
          });
        } catch (err) {
          if (signal?.aborted) throw err;
          throw new RuntimeStepError(step, (err as Error).message);
        }
        onProgress?.({ workload: workload.name, status: 'built', image });
      }
      built.set(image, workload.name);
      await options.onImageUsed?.(image);
    }
    const { specHash: _old, ...rest } = { ...workload, image: { build, ref: image } };
    workloads.push({ ...rest, specHash: workloadHash(rest) });
  }
  return { ...plan, workloads };
}

/** True when some workload's image still has to be resolved (or checked) by {@link resolveBuilds}. */
export const needsBuild = (plan: EnvPlan) => plan.workloads.some((w) => w.image.build);
