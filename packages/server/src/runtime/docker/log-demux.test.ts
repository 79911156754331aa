import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DockerLogDemuxer } from './log-demux.js';

function frame(type: number, payload: Buffer | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const header = Buffer.alloc(8);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

/** Feeds `chunks` through a demuxer and returns what comes out. */
async function demux(chunks: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const part of Readable.from(chunks).pipe(new DockerLogDemuxer())) out.push(part as Buffer);
  return Buffer.concat(out);
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const parts: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, buf.length]) {
    parts.push(buf.subarray(from, cut));
    from = cut;
  }
  return parts;
}

describe('DockerLogDemuxer', () => {
  const frames = [
    frame(1, 'line 1\n'),
    frame(2, 'error: x\n'),
    frame(1, ''),
    frame(1, Buffer.alloc(300, 'a')),
    frame(2, 'tail'),
  ];
  const wire = Buffer.concat(frames);
  const expected = Buffer.concat([
    Buffer.from('line 1\nerror: x\n'),
    Buffer.alloc(300, 'a'),
    Buffer.from('tail'),
  ]);

  it('joins stdout and stderr payloads in order, whole', async () => {
    expect(await demux([wire])).toEqual(expected);
  });

  it('gives the same bytes whatever the chunk boundaries: every one-cut and two-cut split', async () => {
    for (let i = 0; i <= wire.length; i++) {
      expect(await demux(splitAt(wire, [i]))).toEqual(expected);
    }
    // Two cuts close together cover a header split over three chunks and tiny frames in a chunk.
    for (let i = 0; i <= 40; i++) {
      for (let j = i; j <= Math.min(i + 12, wire.length); j++) {
        expect(await demux(splitAt(wire, [i, j]))).toEqual(expected);
      }
    }
  });

  it('copes with one byte per chunk', async () => {
    const bytes = [...wire].map((b) => Buffer.from([b]));
    expect(await demux(bytes)).toEqual(expected);
  });

  it('streams a big frame as it arrives instead of waiting for its end', async () => {
    const payload = Buffer.alloc(4 * 1024 * 1024, 'z');
    const big = frame(1, payload);
    const demuxer = new DockerLogDemuxer();
    let received = 0;
    demuxer.on('data', (d: Buffer) => {
      received += d.length;
    });
    const chunk = 64 * 1024;
    // Write all but the last chunk: nearly all of the payload must already be out.
    for (let at = 0; at < big.length - chunk; at += chunk) {
      demuxer.write(big.subarray(at, Math.min(at + chunk, big.length - chunk)));
    }
    await new Promise((resolve) => setImmediate(resolve));
    expect(received).toBe(payload.length - chunk);
    demuxer.end(big.subarray(big.length - chunk));
    await new Promise((resolve) => demuxer.on('end', resolve));
    expect(received).toBe(payload.length);
  });

  it('pushes back on a writer while nobody reads', () => {
    const demuxer = new DockerLogDemuxer();
    const big = frame(1, Buffer.alloc(1024 * 1024, 'y'));
    let accepted = 0;
    for (let at = 0; at < big.length; at += 16 * 1024) {
      accepted++;
      if (!demuxer.write(big.subarray(at, at + 16 * 1024))) break;
    }
    // A few chunks fill the buffers; the writer is told to wait long before a megabyte is in.
    expect(accepted).toBeLessThan(8);
    expect(demuxer.readableLength).toBeLessThanOrEqual(64 * 1024);
    demuxer.destroy();
  });

  it('passes output through unchanged when it is not multiplexed (a TTY container)', async () => {
    expect((await demux([Buffer.from('plain text output\n')])).toString()).toBe('plain text output\n');
    expect((await demux([Buffer.from('hi\n')])).toString()).toBe('hi\n');
    expect((await demux([Buffer.from('hi'), Buffer.from(' there, tty\n')])).toString()).toBe(
      'hi there, tty\n',
    );
  });

  it('ends quietly on a stream cut inside a frame, keeping what arrived', async () => {
    const cut = Buffer.concat([frame(1, 'complete\n'), frame(1, 'partial payload').subarray(0, 12)]);
    expect((await demux([cut])).toString()).toBe('complete\npart');
    expect((await demux([Buffer.concat([frame(1, 'a'), Buffer.from([1, 0, 0])])])).toString()).toBe('a');
  });
});
