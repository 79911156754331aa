/** Small helpers for the Docker Engine API as dockerode exposes it: status codes and streamed JSON. */
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import Docker from 'dockerode';

/** The Engine client a driver was given, or one on `socketPath` (default: as dockerode reads DOCKER_HOST). */
export function engineClient(options: {
  docker?: Docker | undefined;
  socketPath?: string | undefined;
}): Docker {
  return options.docker ?? new Docker(options.socketPath ? { socketPath: options.socketPath } : undefined);
}

/** True when the Engine has the image `ref`. */
export async function imageExists(docker: Docker, ref: string): Promise<boolean> {
  return (await imageId(docker, ref)) !== null;
}

/** The image's id (its content), null when the Engine has no such image. */
export async function imageId(docker: Docker, ref: string): Promise<string | null> {
  try {
    return (await docker.getImage(ref).inspect()).Id;
  } catch (err) {
    if (statusCode(err) === 404) return null;
    throw err;
  }
}

export const statusCode = (err: unknown): number | undefined => (err as { statusCode?: number })?.statusCode;
/** A `.catch` handler that swallows the given HTTP statuses (404: already gone…) and rethrows the rest. */
export const ignore =
  (...codes: number[]) =>
  (err: unknown) => {
    if (!codes.includes(statusCode(err) ?? -1)) throw err;
  };

/**
 * The chunks of `source` until it ends, or until `signal` aborts: the read that the abort cuts
 * short then ends normally, so the stream built on it ends instead of failing.
 */
export async function* untilAborted(
  source: Readable,
  signal: AbortSignal | undefined,
): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of source) yield chunk as Buffer;
  } catch (err) {
    if (!signal?.aborted) throw err;
  }
}

export interface BuildMessage {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** The builder's newline-delimited JSON messages; a line that is not JSON is skipped. */
export async function* jsonMessages(source: Readable): AsyncGenerator<BuildMessage> {
  // A decoder, not chunk.toString(): a character may be split over two chunks.
  const decoder = new StringDecoder('utf8');
  let pending = '';
  for await (const chunk of source) {
    pending += decoder.write(chunk as Buffer);
    // The Engine sends one small message per write; a line this long is not from it.
    if (pending.length > 8 * 1024 * 1024) throw new Error('the builder sent an oversized message');
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const message = parseJson(line);
      if (message) yield message;
    }
  }
  const last = parseJson(pending + decoder.end());
  if (last) yield last;
}

function parseJson(line: string): BuildMessage | undefined {
  if (!line.trim()) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === 'object' ? (value as BuildMessage) : undefined;
  } catch {
    return undefined;
  }
}
