/**
 * The last bytes of a stream of any length, in bounded memory: for exec output, health probes
 * and build output kept for error messages, where only the end matters and the whole may be huge.
 */
export class ByteTail {
  /** Holds at most `2 × limit` bytes; the kept tail is the last `limit` of `buf[0, used)`. */
  private buf: Buffer = Buffer.alloc(0);
  private used = 0;
  /** Every byte pushed, kept or not. */
  total = 0;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`invalid tail limit ${limit}`);
  }

  /** True once more was pushed than is kept. */
  get truncated(): boolean {
    return this.total > this.limit;
  }

  push(chunk: Buffer | string): void {
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.total += data.length;
    if (this.limit === 0 || data.length === 0) return;
    if (data.length >= this.limit) {
      this.reserve(this.limit);
      data.copy(this.buf, 0, data.length - this.limit);
      this.used = this.limit;
      return;
    }
    if (this.used + data.length > this.buf.length) {
      if (this.buf.length < 2 * this.limit) {
        this.reserve(Math.min(2 * this.limit, Math.max(2 * this.buf.length, this.used + data.length)));
      }
      if (this.used + data.length > this.buf.length) {
        // Full: slide the part still wanted to the front. Each slide frees at least `limit` bytes
        // for the next pushes, so the copying is linear in the bytes pushed.
        const keep = this.limit - data.length;
        this.buf.copyWithin(0, this.used - keep, this.used);
        this.used = keep;
      }
    }
    data.copy(this.buf, this.used);
    this.used += data.length;
  }

  /** The kept bytes (a copy). */
  bytes(): Buffer {
    return Buffer.from(this.buf.subarray(Math.max(0, this.used - this.limit), this.used));
  }

  /**
   * The kept bytes as UTF-8. A tail that starts inside a multi-byte character starts at the
   * next whole one instead of with a replacement character.
   */
  text(): string {
    let bytes = this.bytes();
    if (this.truncated) {
      let skip = 0;
      while (skip < 3 && skip < bytes.length && (bytes[skip]! & 0xc0) === 0x80) skip++;
      bytes = bytes.subarray(skip);
    }
    return bytes.toString('utf8');
  }

  /** Grows the buffer to `size` bytes, keeping its content. */
  private reserve(size: number): void {
    if (this.buf.length >= size) return;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.used);
    this.buf = next;
  }
}

/**
 * `text` cut to about `maxBytes` of UTF-8 for a message: its start and its end, with a note of
 * how much was left out in between (a long command line still shows what it was and how it ended).
 */
export function clipMiddle(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return text;
  const half = Math.floor(maxBytes / 2);
  const head = bytes
    .subarray(0, half)
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  const tail = new ByteTail(half);
  tail.push(bytes);
  return `${head}… [${bytes.length - 2 * half} bytes left out] …${tail.text()}`;
}

/**
 * The end of a workload's output for an error message: '' or a newline followed by the last lines
 * read from `open` (at most `limit` bytes: a single line can be huge). '' when it cannot be read.
 */
export async function outputTail(
  open: () => Promise<AsyncIterable<unknown>>,
  limit: number,
): Promise<string> {
  try {
    const kept = new ByteTail(limit);
    for await (const chunk of await open()) kept.push(chunk as Buffer);
    const text = kept.text().trim();
    return text ? `\n${text}` : '';
  } catch {
    return '';
  }
}
