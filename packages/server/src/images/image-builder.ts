/**
 * The ImageBuilder seam: how the images of `build:` workloads are made, kept track of and
 * removed, apart from the runtime that runs them. The Docker Engine's build API is one builder
 * (`runtime/docker/docker-image-builder.ts`); a builder that pushes to a registry for Kubernetes
 * is another. Above it, `resolve-builds.ts` decides what to build (content-addressed tags, reuse).
 */
import type { BuildPlan } from '../plan/plan.js';

export interface BuildOptions {
  /**
   * The build context as the builder must get it: an uncompressed tar of exactly the files to
   * send (`.dockerignore` already applied above the builder, see `images/context-files.ts`).
   */
  context: NodeJS.ReadableStream;
  /** Every line of output, as it comes. A failed build's error message keeps only the last few KiB. */
  onLog?: (line: string) => void;
  /** Aborting stops the build (the request to the builder is cancelled). */
  signal?: AbortSignal;
}

/** An image this installation built (see {@link ImageBuilder.build}). */
export interface BuiltImage {
  /** The tag it was built as, e.g. `mayfly-build/shop:0123abcd…`. */
  ref: string;
  id: string;
  sizeBytes: number;
  createdAt: Date;
}

export interface ImageBuilder {
  readonly name: string;
  /** True when `ref` is present where the runtime will run it. */
  hasImage(ref: string): Promise<boolean>;
  /** Builds `tag` from `build`, sending `options.context` as the context. */
  build(tag: string, build: BuildPlan, options: BuildOptions): Promise<void>;
  /** Images built by {@link build} that are still present. */
  listBuilt(): Promise<BuiltImage[]>;
  /**
   * Removes a built image; false (and nothing removed) when a workload still uses it. Refuses an
   * image this installation did not build.
   */
  remove(ref: string): Promise<boolean>;
}
