/**
 * What the server has room for and what it holds now (the dashboard's overview): environments and
 * sandboxes against their limits, the warm pools, built images against their disk budget, and the
 * machine's memory. Server-wide, so only for tokens that are not bound to a project.
 */
import os from 'node:os';
import type { Capacity } from '@mayfly/contract';
import type { Access } from '../access/access.js';
import type { ImageBuilder } from '../images/image-builder.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import type { Store } from '../store/store.js';
import { ForbiddenError } from './errors.js';

export interface CapacityServiceDeps {
  store: Store;
  images: ImageBuilder;
  sandboxes?: SandboxService;
  limits: { maxEnvironments: number; maxSandboxes: number; imageBudgetBytes: number };
}

export class CapacityService {
  constructor(private readonly deps: CapacityServiceDeps) {}

  async capacity(access: Access): Promise<Capacity> {
    if (access.project !== null)
      throw new ForbiddenError("the server's capacity is shown only to tokens not bound to a project");
    const { store, images, sandboxes, limits } = this.deps;
    const [byState, built, live, templates] = await Promise.all([
      store.environments.countByState(),
      images.listBuilt(),
      sandboxes?.list(access, { states: ['running', 'paused'] }),
      sandboxes?.templates(access),
    ]);
    const { destroyed: _gone, ...existing } = byState;
    // One image may carry several tags: counted once.
    const distinct = new Map(built.map((image) => [image.id, image.sizeBytes]));
    return {
      environments: {
        used: Object.values(existing).reduce((sum, n) => sum + (n ?? 0), 0),
        max: limits.maxEnvironments,
        byState: Object.fromEntries(Object.entries(existing).filter(([, n]) => n)) as Record<string, number>,
      },
      sandboxes:
        live && templates
          ? {
              used: live.length,
              max: limits.maxSandboxes,
              memoryMb: live.reduce((sum, s) => sum + s.memoryMb, 0),
              pools: templates
                .filter((t) => t.pool.size > 0 || t.pool.ready > 0 || t.pool.starting > 0)
                .map((t) => ({ template: t.name, ...t.pool })),
            }
          : null,
      images: {
        count: distinct.size,
        bytes: [...distinct.values()].reduce((sum, size) => sum + size, 0),
        budgetBytes: limits.imageBudgetBytes,
      },
      host: { memoryBytes: os.totalmem(), availableMemoryBytes: os.freemem() },
    };
  }
}
