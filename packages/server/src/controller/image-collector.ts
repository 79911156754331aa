/**
 * Image garbage collection: images Mayfly built may take at most a disk budget. Past it, the least
 * recently used ones that no live environment's plan names are removed, oldest first, until the
 * total fits; an image a container still uses is never forced out.
 */

import type { ImageBuilder } from '../images/image-builder.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/store.js';

export interface ImageCollectorDeps {
  store: Store;
  images: ImageBuilder;
  logger: Logger;
  budgetBytes: number;
  /**
   * An image used (built, or reused by an environment) more recently than this is never removed:
   * a bring-up records its plan only after all its builds, and must not lose an image meanwhile.
   */
  graceMs: number;
  now?: Date;
}

/** Returns the refs removed. */
export async function collectImages(deps: ImageCollectorDeps): Promise<string[]> {
  const images = await deps.images.listBuilt();
  let total = images.reduce((sum, image) => sum + image.sizeBytes, 0);
  if (total <= deps.budgetBytes) return [];
  const inUse = new Set<string>();
  for (const env of await deps.store.environments.list()) {
    for (const w of env.plan?.workloads ?? []) if (w.image.ref) inUse.add(w.image.ref);
  }
  // Least recently used first; an image the store never saw used counts as oldest (by its build time).
  const lastUsed = new Map((await deps.store.images.list()).map((r) => [r.ref, r.lastUsedAt.getTime()]));
  const now = (deps.now ?? new Date()).getTime();
  const usedAt = (image: { ref: string; createdAt: Date }) =>
    lastUsed.get(image.ref) ?? image.createdAt.getTime();
  const candidates = images
    .filter((image) => !inUse.has(image.ref) && now - usedAt(image) >= deps.graceMs)
    .sort((a, b) => usedAt(a) - usedAt(b));
  const removed: string[] = [];
  for (const image of candidates) {
    if (total <= deps.budgetBytes) break;
    if (!(await deps.images.remove(image.ref))) continue;
    await deps.store.images.delete(image.ref);
    total -= image.sizeBytes;
    removed.push(image.ref);
    deps.logger.info(
      { image: image.ref, sizeBytes: image.sizeBytes },
      'removed a built image past the disk budget',
    );
  }
  return removed;
}
