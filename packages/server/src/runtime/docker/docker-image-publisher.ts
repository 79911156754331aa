/**
 * Publishes images of the local Docker Engine to a registry a cluster pulls from (the
 * ImagePublisher seam, `images/image-publisher.ts`): tagged by their content under the registry's
 * `mayfly-env/` (`registryRef`) and pushed.
 * A push of an image already pushed (same image id to the same reference) is skipped.
 */
import type { IncomingMessage } from 'node:http';
import type Docker from 'dockerode';
import { type ImagePublisher, type PublishedImage, registryRef } from '../../images/image-publisher.js';
import { clipMiddle } from '../byte-tail.js';
import { engineClient, imageExists, jsonMessages } from './engine-api.js';

const ERROR_BYTES = 4096;
const MAX_REMEMBERED = 1000;

export interface DockerImagePublisherOptions {
  /** `HOST:PORT` of the registry the cluster pulls from; none: the cluster pulls references as given. */
  registry?: string;
  docker?: Docker;
  socketPath?: string;
}

export class DockerImagePublisher implements ImagePublisher {
  private readonly docker: Docker;
  private readonly registry: string | undefined;
  /** Image ids already pushed, by pushed reference; a concurrent second publish shares the first. */
  private readonly pushed = new Map<string, Promise<void>>();

  constructor(options: DockerImagePublisherOptions = {}) {
    this.docker = engineClient(options);
    this.registry = options.registry;
  }

  async publish(ref: string, signal: AbortSignal): Promise<PublishedImage> {
    if (!(await imageExists(this.docker, ref))) await this.pull(ref, signal);
    const image = await this.docker.getImage(ref).inspect();
    const ports = Object.keys(image.Config?.ExposedPorts ?? {}).flatMap((key) => {
      const match = /^(\d+)(?:\/(tcp|udp))?$/.exec(key);
      return match ? [{ port: Number(match[1]), protocol: (match[2] ?? 'tcp') as 'tcp' | 'udp' }] : [];
    });
    if (!this.registry) return { ref, ports };
    const target = registryRef(this.registry, ref, image.Id);
    const key = `${target}@${image.Id}`;
    let push = this.pushed.get(key);
    if (!push) {
      push = this.push(ref, target, signal);
      this.pushed.set(key, push);
      push.catch(() => this.pushed.delete(key));
      // Every build makes a new image: only the newest pushes are remembered.
      if (this.pushed.size > MAX_REMEMBERED) this.pushed.delete(this.pushed.keys().next().value!);
    }
    await push;
    return { ref: target, ports };
  }

  private async push(ref: string, target: string, signal: AbortSignal): Promise<void> {
    const colon = target.lastIndexOf(':');
    const repo = target.slice(0, colon);
    const tag = target.slice(colon + 1);
    await this.docker.getImage(ref).tag({ repo, tag });
    const response = (await this.docker.getImage(target).push({
      tag,
      abortSignal: signal,
      authconfig: { serveraddress: this.registry },
    })) as unknown as IncomingMessage;
    await this.readMessages(response, `cannot push ${ref} to ${target}`, signal);
  }

  private async pull(ref: string, signal: AbortSignal): Promise<void> {
    const response = (await this.docker.pull(ref, { abortSignal: signal })) as unknown as IncomingMessage;
    await this.readMessages(response, `image ${ref} is not present and could not be pulled`, signal);
  }

  private async readMessages(response: IncomingMessage, what: string, signal: AbortSignal): Promise<void> {
    const stop = () => response.destroy();
    signal.addEventListener('abort', stop, { once: true });
    let failure: string | undefined;
    try {
      for await (const message of jsonMessages(response)) {
        if (message.error || message.errorDetail) failure = message.errorDetail?.message ?? message.error;
      }
    } finally {
      signal.removeEventListener('abort', stop);
    }
    signal.throwIfAborted();
    if (failure) throw new Error(`${what}: ${clipMiddle(failure, ERROR_BYTES)}`);
  }
}
