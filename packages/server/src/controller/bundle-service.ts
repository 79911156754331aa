/** Template folders uploaded as bundles, staged in the server's work dir until an environment claims one. */
import type { Readable } from 'node:stream';
import type { Bundle } from '@mayfly/contract';
import type { Workspaces } from '../sources/workspaces.js';
import { QuotaExceededError } from './errors.js';

export interface BundleServiceDeps {
  workspaces: Workspaces;
  /** Bundles waiting to be used at once; with the per-bundle size limit, this bounds their disk. */
  maxStaged: number;
  bundleTtlMs: number;
}

export class BundleService {
  /** Uploads being unpacked right now: they count against `maxStaged` too. */
  private uploading = 0;

  constructor(private readonly deps: BundleServiceDeps) {}

  /** Unpacks the archive (limits and hostile entries checked as it streams in). */
  async upload(body: Readable): Promise<Bundle> {
    const { workspaces, maxStaged, bundleTtlMs } = this.deps;
    // Counted before the first await, so concurrent uploads see each other.
    this.uploading++;
    try {
      if ((await workspaces.stagedCount()) + this.uploading - 1 >= maxStaged) {
        throw new QuotaExceededError(
          `${maxStaged} uploaded bundles are waiting to be used: create environments from them, or wait until they expire (after ${Math.round(bundleTtlMs / 60_000)} minutes unused)`,
        );
      }
      const staged = await workspaces.stageBundle(body);
      return {
        id: staged.id,
        files: staged.files,
        bytes: staged.bytes,
        expiresAt: staged.expiresAt.toISOString(),
      };
    } finally {
      this.uploading--;
    }
  }
}
