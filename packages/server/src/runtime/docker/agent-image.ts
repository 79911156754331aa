/**
 * The agent as an image of its own (`/mayfly-agent`, nothing else), for platforms that cannot
 * bind-mount a file of the Engine's host into a container: a Kubernetes pod's init container copies
 * it from there into the sandbox. Imported, not built (no base image, no builder), and named by
 * the binary's content, so a new agent is a new image and an old one is never overwritten.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import type { ImagePublisher } from '../../images/image-publisher.js';
import { imageExists, jsonMessages } from './engine-api.js';

/** The agent's `--max-bytes` argument for a copy bounded by `maxBytes` (none when unbounded). */
export function maxBytesFlag(maxBytes: number | undefined): string[] {
  return maxBytes && maxBytes > 0 ? [`--max-bytes=${Math.floor(maxBytes)}`] : [];
}

export const AGENT_IMAGE_REPOSITORY = 'mayfly/agent';

/**
 * The agent's image as a cluster pulls it: made and published once per process (again after a
 * failure).
 */
export function publishedAgentImage(
  docker: Docker,
  agentBinary: string,
  publisher: ImagePublisher,
): (signal: AbortSignal) => Promise<string> {
  let ref: Promise<string> | undefined;
  return (signal) => {
    ref ??= ensureAgentImage(docker, agentBinary).then(
      async (local) => (await publisher.publish(local, signal)).ref,
    );
    ref.catch(() => {
      ref = undefined;
    });
    return ref;
  };
}

/** Makes (once per binary) and names the local image holding `agentBinary` at `/mayfly-agent`. */
export async function ensureAgentImage(docker: Docker, agentBinary: string): Promise<string> {
  const binary = await readFile(agentBinary);
  const tag = createHash('sha256').update(binary).digest('hex').slice(0, 16);
  const ref = `${AGENT_IMAGE_REPOSITORY}:${tag}`;
  if (await imageExists(docker, ref)) return ref;
  const pack = tar.pack();
  pack.entry({ name: 'mayfly-agent', size: binary.length, mode: 0o755 }, binary);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const stream = (await docker.importImage(Readable.from([Buffer.concat(chunks)]) as never, {
    repo: AGENT_IMAGE_REPOSITORY,
    tag,
  })) as unknown as Readable;
  for await (const message of jsonMessages(stream))
    if (message.error) throw new Error(`making ${ref}: ${message.error}`);
  return ref;
}
