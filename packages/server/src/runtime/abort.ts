/** Abort helpers for work that talks to a platform: a runtime driver's calls, and the apply above them. */

/**
 * Runs `fn` on every item, at most `limit` at once, checking `signal` before each. On an abort
 * nothing more starts and the promise rejects with the signal's reason at once: the calls under
 * way finish on their own (so `fn` must not create objects a teardown right after could miss).
 * On a failure nothing more starts either, and the promise rejects with it.
 */
export async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed && !signal.aborted) {
      await fn(items[next++]!).catch((err: unknown) => {
        failed = true;
        throw err;
      });
    }
  };
  await orAbort(Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker)), signal);
  signal.throwIfAborted();
}

/**
 * `promise`, or a rejection with the signal's reason as soon as `signal` aborts: for Engine calls
 * that cannot be cancelled (their requests are sent), so that an abort is not held up by them.
 * Never for a call that creates an object: it could land after the teardown that follows.
 */
export async function orAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  promise.catch(() => {}); // once given up on, its failure is nobody's to handle
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
