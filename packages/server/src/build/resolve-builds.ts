/** Gives every workload with a `build` its content-addressed image, building only what is missing. */
import type { EnvPlan, Runtime, WorkloadPlan } from '../runtime/runtime.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import { workloadHash } from '../spec/index.js';
import { buildContentHash, contentTag } from './content-tag.js';

export type BuildProgress = (
  event:
    | { workload: string; status: 'reused' | 'building' | 'built'; image: string }
    /** A build step starting (`Step 3/7 : RUN …`), so a long first build shows where it is. */
    | { workload: string; status: 'step'; step: string },
) => void;

const STEP = /^Step \d+\/\d+ : /;

/** Returns the plan with images and spec hashes filled in; builds run one at a time (2-core machines). */
export async function resolveBuilds(
  plan: EnvPlan,
  runtime: Runtime,
  onProgress?: BuildProgress,
  signal?: AbortSignal,
): Promise<EnvPlan> {
  const built = new Map<string, string>();
  const workloads: WorkloadPlan[] = [];
  for (const workload of plan.workloads) {
    if (!workload.build) {
      workloads.push(workload);
      continue;
    }
    // A running build is not interrupted, but a destroy stops the ones still to come.
    signal?.throwIfAborted();
    let image: string;
    try {
      image = contentTag(plan.project, await buildContentHash(workload.build));
    } catch (err) {
      throw new RuntimeStepError(
        `build:${workload.name}`,
        `cannot read build context: ${(err as Error).message}`,
      );
    }
    if (!built.has(image)) {
      if (await runtime.hasImage(image)) {
        onProgress?.({ workload: workload.name, status: 'reused', image });
      } else {
        onProgress?.({ workload: workload.name, status: 'building', image });
        try {
          await runtime.buildImage(image, workload.build, (line) => {
            if (STEP.test(line))
              onProgress?.({ workload: workload.name, status: 'step', step: line.slice(0, 120) });
          });
        } catch (err) {
          throw new RuntimeStepError(`build:${workload.name}`, (err as Error).message);
        }
        onProgress?.({ workload: workload.name, status: 'built', image });
      }
      built.set(image, workload.name);
    }
    const { specHash: _old, ...rest } = { ...workload, image };
    workloads.push({ ...rest, specHash: workloadHash(rest) });
  }
  return { ...plan, workloads };
}

export const needsBuild = (plan: EnvPlan) => plan.workloads.some((w) => w.build);
