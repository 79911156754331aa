/** Template folders uploaded as bundles, staged in the server's work dir until an environment claims one. */
import type { Readable } from 'node:stream';
import type { Bundle } from '@mayfly/contract';
import type { Workspaces } from '../sources/workspaces.js';

export class BundleService {
  constructor(private readonly deps: { workspaces: Workspaces }) {}

  /** Unpacks the archive (limits and hostile entries checked as it streams in). */
  async upload(body: Readable): Promise<Bundle> {
    const staged = await this.deps.workspaces.stageBundle(body);
    return {
      id: staged.id,
      files: staged.files,
      bytes: staged.bytes,
      expiresAt: staged.expiresAt.toISOString(),
    };
  }
}
