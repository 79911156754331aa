/**
 * Streaming reader of the Engine's multiplexed output format (logs and attach of a container
 * without a TTY): frames of an 8-byte header — stream type (0 stdin, 1 stdout, 2 stderr), three
 * zero bytes, payload length as uint32 big-endian — followed by the payload.
 */
import { Transform, type TransformCallback } from 'node:stream';

const HEADER_BYTES = 8;

/**
 * Strips the frame headers and passes the payloads on as they arrive, stdout and stderr
 * interleaved. Nothing is held back beyond one partial header (at most 7 bytes): a frame of any
 * size flows through in the chunks it came in, and being a Transform, a reader that does not
 * read stops the writes into it, and so the socket behind it.
 *
 * A stream that does not start with a valid header is not multiplexed (a TTY container's raw
 * output): it is passed through unchanged.
 */
export class DockerLogDemuxer extends Transform {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  /** Payload bytes of the current frame still to come. */
  private payloadLeft = 0;
  private framed = false;
  private raw = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.raw) {
        this.push(chunk.subarray(offset));
        break;
      }
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, chunk.length - offset);
        this.push(chunk.subarray(offset, offset + take));
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
        this.push(Buffer.from(this.header));
        continue;
      }
      this.framed = true;
      this.payloadLeft = this.header.readUInt32BE(4);
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    // Fewer than 8 bytes in all: too short for a frame, so raw output (`hi\n` of a TTY container).
    if (!this.framed && !this.raw && this.headerFill > 0) {
      this.push(Buffer.from(this.header.subarray(0, this.headerFill)));
    }
    callback();
  }
}
