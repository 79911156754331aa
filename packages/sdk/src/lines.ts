/**
 * Splits a byte stream into text lines, without their `\n` / `\r\n` ends. A last line without a
 * newline is yielded too.
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  /** A line longer than this (without its end) is refused rather than held. */
  maxLineChars = Number.POSITIVE_INFINITY,
): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  let pending = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let newline = pending.indexOf('\n');
      while (newline !== -1) {
        yield stripCarriageReturn(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf('\n');
      }
      if (pending.length > maxLineChars) throw new Error(`a line longer than ${maxLineChars} characters`);
    }
    pending += decoder.decode();
    if (pending.length > 0) yield stripCarriageReturn(pending);
  } finally {
    // Stops the download when the consumer leaves the loop early (break, return, throw).
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function stripCarriageReturn(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
