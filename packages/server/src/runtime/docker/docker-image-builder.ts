/**
 * DockerImageBuilder: the ImageBuilder seam over the Docker Engine's build API. Images are
 * labelled as built by this installation, so only those are listed and removed.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { BuildOptions, BuiltImage, ImageBuilder } from '../../images/image-builder.js';
import type { BuildPlan } from '../../plan/plan.js';
import { ByteTail, clipMiddle } from '../byte-tail.js';
import { LABELS } from '../runtime.js';
import { engineClient, imageExists, jsonMessages, statusCode } from './engine-api.js';
import { BUILT_BY_LABEL } from './names.js';

export interface BuildLimits {
  memoryBytes?: number;
  cpus?: number;
}

const DEFAULT_BUILD_LIMITS = { memoryBytes: 2 * 1024 * 1024 * 1024, cpus: 1 } as const;
/** `/dev/shm` of a build step: the Engine's own default, said explicitly (it counts as the step's memory). */
const BUILD_SHM_BYTES = 64 * 1024 * 1024;
const CPU_PERIOD_US = 100_000;

/** The bytes of output kept for a failed build's message: the end, whatever its line lengths. */
const LOG_TAIL_BYTES = 4096;

export interface DockerImageBuilderOptions {
  /** Defaults to `/var/run/docker.sock` (or DOCKER_HOST, as dockerode reads it). */
  socketPath?: string | undefined;
  docker?: Docker;
  /** The installation's id: labelled on every image built, and the only images listed. */
  instance?: string;
  /**
   * Limits of every container a build runs (each `RUN` step): memory (swap included, so no swap)
   * and CPUs; default 2 GiB and 1 CPU. The Engine's build API has no pids limit.
   */
  buildLimits?: BuildLimits;
}

export class DockerImageBuilder implements ImageBuilder {
  readonly name = 'docker';
  private readonly docker: Docker;
  private readonly instance: string;
  private readonly buildLimits: Required<BuildLimits>;

  constructor(options: DockerImageBuilderOptions = {}) {
    this.docker = engineClient(options);
    this.instance = options.instance ?? 'default';
    this.buildLimits = { ...DEFAULT_BUILD_LIMITS, ...options.buildLimits };
    const { memoryBytes, cpus } = this.buildLimits;
    if (!(Number.isInteger(memoryBytes) && memoryBytes >= 6 * 1024 * 1024)) {
      throw new RangeError(
        `buildLimits.memoryBytes must be a whole number of bytes ≥ 6 MiB, not ${memoryBytes}`,
      );
    }
    if (!(cpus > 0 && Math.round(cpus * CPU_PERIOD_US) >= 1000)) {
      throw new RangeError(`buildLimits.cpus must be at least 0.01, not ${cpus}`);
    }
  }

  hasImage(ref: string): Promise<boolean> {
    return imageExists(this.docker, ref);
  }

  /**
   * Sends `options.context` (an uncompressed tar) to the Engine's builder. The image is labelled
   * as built by this installation, so {@link listBuilt} and {@link remove} find it.
   * Aborting `options.signal` closes the request, which makes the Engine stop the build and
   * remove its intermediate container; the promise rejects with the signal's reason at once.
   * Every step runs with {@link DockerImageBuilderOptions.buildLimits}.
   */
  async build(tag: string, build: BuildPlan, options: BuildOptions): Promise<void> {
    const { context, onLog, signal } = options;
    try {
      signal?.throwIfAborted();
      const response = (await this.docker.buildImage(context, {
        t: tag,
        dockerfile: build.dockerfile,
        buildargs: build.args,
        ...(build.target ? { target: build.target } : {}),
        labels: { [BUILT_BY_LABEL]: 'mayfly', [LABELS.instance]: this.instance },
        rm: true,
        forcerm: true,
        // The limits below are the legacy builder's (BuildKit ignores them): ask for it by name.
        version: '1',
        memory: this.buildLimits.memoryBytes,
        memswap: this.buildLimits.memoryBytes, // equal to memory: no swap on top
        cpuperiod: CPU_PERIOD_US,
        cpuquota: Math.round(this.buildLimits.cpus * CPU_PERIOD_US),
        shmsize: BUILD_SHM_BYTES,
        abortSignal: signal,
      })) as unknown as IncomingMessage;
      await this.followBuild(response, onLog, signal);
    } catch (err) {
      signal?.throwIfAborted(); // the caller's reason, not whatever the cut connection raised
      throw err;
    } finally {
      // Whatever the builder did not read (it failed early, or we gave up) is not ours to keep open.
      const stream = context as Partial<Readable>;
      if (stream.destroy && !stream.readableEnded) stream.destroy();
    }
  }

  private async followBuild(
    response: IncomingMessage,
    onLog: BuildOptions['onLog'],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    // After the response began, the request's own abort handling is not enough for every Node
    // version: destroying the response is what ends the read below.
    const stop = () => response.destroy();
    signal?.addEventListener('abort', stop, { once: true });
    // The end of the output for the error message: a few KiB, whatever the size of the messages.
    const tail = new ByteTail(LOG_TAIL_BYTES);
    let partial = '';
    let failure: string | undefined;
    let imageId: string | undefined;
    const emit = (text: string) => {
      tail.push(text);
      const lines = (partial + text).split('\n');
      partial = lines.pop()!.slice(-4096);
      for (const line of lines) if (line.trim()) onLog?.(line.trimEnd());
    };
    try {
      for await (const message of jsonMessages(response)) {
        if (typeof message.stream === 'string') emit(message.stream);
        if (message.error || message.errorDetail) {
          failure = message.errorDetail?.message ?? message.error ?? 'build failed';
        }
        if (typeof message.aux?.ID === 'string') imageId = message.aux.ID;
      }
    } catch (err) {
      signal?.throwIfAborted();
      throw err;
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    signal?.throwIfAborted();
    if (partial.trim()) onLog?.(partial.trimEnd());
    const output = `${tail.truncated ? '…' : ''}${tail.text().trim()}`;
    if (failure) throw new Error(`${clipMiddle(failure.trim(), LOG_TAIL_BYTES)}\n${output}`.trim());
    if (!imageId) throw new Error(`the builder ended without producing an image\n${output}`.trim());
  }

  /** Images this installation built, one entry per tag (an untagged one is listed by its id). */
  async listBuilt(): Promise<BuiltImage[]> {
    const images = await this.docker.listImages({
      filters: { label: [`${BUILT_BY_LABEL}=mayfly`, `${LABELS.instance}=${this.instance}`] },
    });
    return images.flatMap((image) => {
      const tags = (image.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
      return (tags.length > 0 ? tags : [image.Id]).map((ref) => ({
        ref,
        id: image.Id,
        sizeBytes: image.Size,
        createdAt: new Date(image.Created * 1000),
      }));
    });
  }

  /**
   * Removes a built image, never forcing: false when a container (running or not) still uses it,
   * true when it is gone (or was already). Refuses an image this installation did not build, so a
   * wrong ref cannot delete a base image or another installation's build.
   */
  async remove(ref: string): Promise<boolean> {
    let labels: Record<string, string>;
    try {
      labels = (await this.docker.getImage(ref).inspect()).Config?.Labels ?? {};
    } catch (err) {
      if (statusCode(err) === 404) return true;
      throw err;
    }
    if (labels[BUILT_BY_LABEL] !== 'mayfly' || labels[LABELS.instance] !== this.instance) {
      throw new Error(`image ${ref} was not built by this installation; not removing it`);
    }
    try {
      await this.docker.getImage(ref).remove();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return true;
      if (statusCode(err) === 409) return false;
      // Two tags of one image removed at once: the Engine may answer the second with a 500
      // ("unrecognized image ID") while the first deletes the image. Gone is gone.
      if (!(await imageExists(this.docker, ref))) return true;
      throw err;
    }
  }
}
