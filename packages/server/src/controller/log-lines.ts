/**
 * Shaping log output for the API: several services' streams merged line by line, each line
 * prefixed `service | ` (padded, as Compose does), with backpressure all the way down — a slow
 * reader pauses the sources instead of piling output up in memory — and lines kept to a bounded
 * length (a process that never prints a newline cannot make one line grow without end).
 */
import { finished, PassThrough, Readable } from 'node:stream';

/** A line longer than this is cut into pieces of this size, each its own line. */
export const MAX_LINE_BYTES = 64 * 1024;

/** Merges `sources` into one stream of prefixed lines; ends when every source has ended or `signal` aborts. */
export function prefixLines(
  sources: { service: string; stream: Readable }[],
  signal?: AbortSignal,
): Readable {
  const out = new PassThrough({ highWaterMark: 64 * 1024 });
  const width = Math.max(0, ...sources.map((s) => s.service.length));
  let open = sources.length;
  if (open === 0) {
    out.end();
    return out;
  }
  const paused = new Set<Readable>();
  const write = (text: string, from: Readable) => {
    if (out.writableEnded || out.destroyed) return;
    if (!out.write(text) && !paused.has(from)) {
      paused.add(from);
      from.pause();
    }
  };
  out.on('drain', () => {
    for (const stream of paused) stream.resume();
    paused.clear();
  });
  const finish = () => {
    if (--open === 0 && !out.writableEnded) out.end();
  };
  for (const { service, stream } of sources) {
    const prefix = `${service.padEnd(width)} | `;
    let rest = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      let buf = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
      for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10)) {
        emit(buf.subarray(0, nl));
        buf = buf.subarray(nl + 1);
      }
      while (buf.length >= MAX_LINE_BYTES) {
        emit(buf.subarray(0, MAX_LINE_BYTES));
        buf = buf.subarray(MAX_LINE_BYTES);
      }
      rest = Buffer.from(buf);
    });
    const emit = (line: Buffer) => write(`${prefix}${line.toString('utf8')}\n`, stream);
    // Once per source, whether it ended, failed or was destroyed.
    finished(stream, () => {
      if (rest.length > 0) emit(rest);
      rest = Buffer.alloc(0);
      finish();
    });
  }
  const stop = () => {
    for (const { stream } of sources) stream.destroy();
    if (!out.writableEnded) out.end();
  };
  if (signal?.aborted) stop();
  else signal?.addEventListener('abort', stop, { once: true });
  out.once('close', () => {
    signal?.removeEventListener('abort', stop);
    for (const { stream } of sources) stream.destroy();
  });
  return out;
}

/** Kept (stored) output of a workload as a stream, the last `tail` lines of it when given. */
export function keptLogStream(text: string, tail: number | undefined): Readable {
  // Bytes, like the runtime's log streams, so `prefixLines` reads both the same way.
  const bytes = (chunks: string[]) =>
    Readable.from(
      chunks.map((c) => Buffer.from(c, 'utf8')),
      { objectMode: false },
    );
  if (tail === undefined) return bytes([text]);
  if (tail === 0) return bytes([]);
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  return bytes([`${lines.slice(-tail).join('\n')}\n`]);
}
