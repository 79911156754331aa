import { ApiPaths, type CreateSnapshotRequest, Snapshot } from '@mayfly/contract';
import * as z from 'zod';
import type { HttpClient } from './http.js';

const SnapshotList = z.object({ items: z.array(Snapshot) });

/**
 * Snapshots of volumes: seeded data kept after a seed job's first success (`x-mayfly.data`) and
 * cloned into later environments, and snapshots made by hand. Reached as `client.snapshots`.
 */
export class SnapshotsApi {
  readonly #http: HttpClient;

  /** @internal Use `new MayflyClient(...).snapshots`. */
  constructor(http: HttpClient) {
    this.#http = http;
  }

  /** Every snapshot the token may see, or one project's. */
  async list(options: { project?: string } = {}): Promise<Snapshot[]> {
    const { items } = await this.#http.json('GET', ApiPaths.snapshots, SnapshotList, {
      query: { project: options.project },
    });
    return items;
  }

  /**
   * Snapshots a ready environment's volume under `name` (its project's), which templates can then
   * name (`x-mayfly.data.VOLUME.snapshot: NAME`).
   * @throws ConflictError when the environment is not ready or the name is taken.
   */
  create(environment: string, request: CreateSnapshotRequest): Promise<Snapshot> {
    return this.#http.json('POST', ApiPaths.environmentSnapshots(environment), Snapshot, { body: request });
  }

  /** Removes a snapshot; environments made from it keep their data. */
  remove(project: string, name: string): Promise<Snapshot> {
    return this.#http.json('DELETE', ApiPaths.snapshot(project, name), Snapshot);
  }
}
