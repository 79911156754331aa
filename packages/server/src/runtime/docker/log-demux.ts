/**
 * Streaming reader of the Engine's multiplexed output format (logs and attach of a container
 * without a TTY): frames of an 8-byte header — stream type (0 stdin, 1 stdout, 2 stderr), three
 * zero bytes, payload length as uint32 big-endian — followed by the payload.
 */
import { Transform, type TransformCallback } from 'node:stream';

const HEADER_BYTES = 8;

/** Which stream a payload came on; output of an unframed (TTY) stream counts as stdout. */
export type OutputStream = 'stdout' | 'stderr';

/**
 * The frame parser: hands each payload on as it arrives, in the chunks it came in (no copy), with
 * the stream it belongs to. Nothing is held back beyond one partial header (at most 7 bytes).
 *
 * A stream that does not start with a valid header is not multiplexed (a TTY container's raw
 * output): it is passed through unchanged, as stdout.
 */
export class DockerFrameReader {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  /** Payload bytes of the current frame still to come. */
  private payloadLeft = 0;
  private stream: OutputStream = 'stdout';
  private framed = false;
  private raw = false;

  constructor(private readonly onPayload: (data: Buffer, stream: OutputStream) => void) {}

  write(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.raw) {
        this.onPayload(chunk.subarray(offset), 'stdout');
        break;
      }
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, chunk.length - offset);
        this.onPayload(chunk.subarray(offset, offset + take), this.stream);
        offset += take;
        this.payloadLeft -= take;
        continue;
      }
      const take = Math.min(HEADER_BYTES - this.headerFill, chunk.length - offset);
      chunk.copy(this.header, this.headerFill, offset, offset + take);
      this.headerFill += take;
      offset += take;
      if (this.headerFill < HEADER_BYTES) break; // the rest of the header comes with the next chunk
      this.headerFill = 0;
      const [type, zero1, zero2, zero3] = this.header;
      if (type! > 2 || zero1 !== 0 || zero2 !== 0 || zero3 !== 0) {
        // The Engine frames every write, so a bad header means the stream was never framed.
        this.raw = true;
        this.onPayload(Buffer.from(this.header), 'stdout');
        continue;
      }
      this.framed = true;
      this.stream = type === 2 ? 'stderr' : 'stdout';
      this.payloadLeft = this.header.readUInt32BE(4);
    }
  }

  /** The stream ended: fewer than 8 bytes in all were too short for a frame, so raw output. */
  end(): void {
    if (!this.framed && !this.raw && this.headerFill > 0) {
      this.onPayload(Buffer.from(this.header.subarray(0, this.headerFill)), 'stdout');
      this.headerFill = 0;
    }
  }
}

/**
 * Strips the frame headers and passes the payloads on as they arrive, stdout and stderr
 * interleaved (see {@link DockerFrameReader}). Being a Transform, a reader that does not read
 * stops the writes into it, and so the socket behind it.
 */
export class DockerLogDemuxer extends Transform {
  private readonly frames = new DockerFrameReader((data) => this.push(data));

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.frames.write(chunk);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.frames.end();
    callback();
  }
}
