/**
 * Reading from and running in one container: its logs as a stream with backpressure, a command
 * with bounded output, and the end of its output for error messages.
 */
import type { IncomingMessage } from 'node:http';
import { pipeline, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import { ByteTail, outputTail } from '../byte-tail.js';
import {
  DEFAULT_EXEC_OUTPUT_BYTES,
  type ExecOptions,
  type ExecResult,
  type LogOptions,
  WorkloadNotFoundError,
} from '../runtime.js';
import { statusCode, untilAborted } from './engine-api.js';
import { DockerFrameReader, DockerLogDemuxer } from './log-demux.js';

/** The bytes of log kept for an error message: the end of the output, whatever its line lengths. */
const LOG_TAIL_BYTES = 4096;

/**
 * The Engine's log endpoint as a stream, in both modes: frames are demultiplexed as they come
 * and piped with backpressure, so a reader that stops reading stops the socket (nothing piles
 * up in this process). Aborting `signal` ends the stream (a clean end, not an error) and closes
 * the connection; so does destroying the returned stream.
 */
export async function openLogStream(docker: Docker, id: string, options: LogOptions = {}): Promise<Readable> {
  const { signal } = options;
  signal?.throwIfAborted();
  const query: Record<string, unknown> = { stdout: true, stderr: true, follow: !!options.follow };
  if (options.tail !== undefined) query.tail = options.tail;
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    docker.modem.dial(
      {
        path: `/containers/${id}/logs?`,
        method: 'GET',
        options: query,
        isStream: true,
        abortSignal: signal,
        statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
      },
      (err, result) => (err ? reject(err) : resolve(result as IncomingMessage)),
    );
  }).catch((err: unknown) => {
    signal?.throwIfAborted();
    if (statusCode(err) === 404) throw new WorkloadNotFoundError(`container ${id} is gone`);
    throw err;
  });
  const demuxer = new DockerLogDemuxer();
  const close = () => response.destroy();
  signal?.addEventListener('abort', close, { once: true });
  // A reader that gives up destroys the demuxer; the socket must close then even if the
  // container is silent (the pipeline only notices at the next chunk).
  demuxer.once('close', close);
  pipeline(untilAborted(response, signal), demuxer, () => {
    signal?.removeEventListener('abort', close);
    // An error is already on `demuxer` (the pipeline destroys it with the error).
  });
  return demuxer;
}

export async function execIn(
  container: Docker.Container,
  command: string[],
  options: ExecOptions = {},
): Promise<ExecResult> {
  // Read as fast as it comes and dropped but for the end: a command may print gigabytes.
  const limit = options.maxOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES;
  const out = new ByteTail(limit);
  const err = new ByteTail(limit);
  const exec = await container.exec({
    Cmd: command,
    AttachStdout: true,
    AttachStderr: true,
    AttachStdin: options.stdin !== undefined,
    Env: options.env ? Object.entries(options.env).map(([k, v]) => `${k}=${v}`) : undefined,
    WorkingDir: options.workingDir,
  });
  const stream = await exec.start({ hijack: true, stdin: options.stdin !== undefined });
  const frames = new DockerFrameReader((data, which) => (which === 'stderr' ? err : out).push(data));
  stream.on('data', (chunk: Buffer) => frames.write(chunk));
  stream.on('end', () => frames.end());
  stream.on('close', () => frames.end());
  if (options.stdin !== undefined) {
    stream.write(options.stdin);
    (stream as unknown as { end(): void }).end();
  }
  const finished = new Promise<void>((resolve, reject) => {
    stream.on('end', resolve);
    stream.on('close', resolve);
    stream.on('error', reject);
  });
  if (options.timeoutMs) {
    const timeout = new AbortController();
    const timer = sleep(options.timeoutMs, undefined, { signal: timeout.signal }).then(() => {
      // The Engine cannot kill an exec; closing our end at least frees the connection.
      (stream as unknown as { destroy(): void }).destroy();
      throw new Error(`command timed out after ${options.timeoutMs} ms`);
    });
    timer.catch(() => {});
    try {
      await Promise.race([finished, timer]);
    } finally {
      timeout.abort();
    }
  } else {
    await finished;
  }
  const info = await exec.inspect();
  return {
    exitCode: info.ExitCode ?? -1,
    stdout: out.text(),
    stderr: err.text(),
    stdoutTruncated: out.truncated,
    stderrTruncated: err.truncated,
  };
}

/** The end of a container's output for an error message: last lines, and at most a few KiB. */
export function logTail(docker: Docker, id: string, lines = 10): Promise<string> {
  return outputTail(() => openLogStream(docker, id, { tail: lines }), LOG_TAIL_BYTES);
}
