/** Awaiting a condition instead of sleeping a fixed time, and other small helpers the integration tests share. */

/** Polls `probe` until it returns something other than undefined; fails naming `what` after `timeoutMs`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** An inline Compose template with the given `services:` body (indented two spaces). */
export const composeTemplate = (services: string) => ({
  filename: 'compose.yaml',
  content: `services:\n${services}`,
});
