/** Reading the last lines of a workload's output to keep in the store, bounded in size. */
import type { Runtime } from '../runtime/runtime.js';

/** At most this much of one workload's output is kept, whatever its line count. */
export const KEPT_LOG_MAX_BYTES = 64 * 1024;

/** The last `lines` lines of the workload's output (its last {@link KEPT_LOG_MAX_BYTES} at most), or null when it has none. */
export async function readKeptLogs(
  runtime: Runtime,
  envId: string,
  workload: string,
  lines: number,
): Promise<string | null> {
  const stream = await runtime.logs(envId, workload, { tail: lines, follow: false });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    chunks.push(buf);
    size += buf.length;
    // Keep only the newest bytes: drop whole chunks from the front once past the bound.
    while (size - (chunks[0]?.length ?? 0) >= KEPT_LOG_MAX_BYTES) size -= chunks.shift()!.length;
  }
  const all = Buffer.concat(chunks);
  const text = all.subarray(Math.max(0, all.length - KEPT_LOG_MAX_BYTES)).toString('utf8');
  return text.length > 0 ? text : null;
}
