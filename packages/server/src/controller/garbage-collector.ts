/**
 * Garbage collection: any runtime object labelled as Mayfly's that no live environment wants is
 * removed — objects of environments the store does not know, or already destroyed or failed
 * (a crash between recording and cleaning up leaves exactly those).
 */
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Store } from '../store/store.js';

export interface GarbageCollectorDeps {
  store: Store;
  runtime: Runtime;
  logger: Logger;
  metrics: Metrics;
  /** Environments this process is working on right now are never collected. */
  busy: (envId: string) => boolean;
}

/** Returns the ids of the environments whose leftovers were removed. */
export async function collectGarbage(deps: GarbageCollectorDeps): Promise<string[]> {
  const objects = await deps.runtime.listManaged();
  const byEnv = new Map<string, typeof objects>();
  for (const o of objects) byEnv.set(o.envId, [...(byEnv.get(o.envId) ?? []), o]);
  const collected: string[] = [];
  for (const [envId, leftovers] of byEnv) {
    // An object without an environment label cannot be attributed; never guess at it.
    if (!envId || deps.busy(envId)) continue;
    const env = await deps.store.environments.get(envId);
    const wanted = env && env.state !== 'destroyed' && env.state !== 'failed';
    if (wanted) continue;
    deps.logger.warn(
      { envId, objects: leftovers.map((o) => `${o.kind}:${o.id.slice(0, 12)}`) },
      'removing leaked runtime objects',
    );
    await deps.runtime.destroy(envId);
    for (const o of leftovers) deps.metrics.leaksCollected.inc({ kind: o.kind });
    if (env) {
      await deps.store.events.append({
        envId,
        type: 'gc',
        state: null,
        message: `garbage collection removed ${leftovers.length} leftover object(s)`,
      });
    }
    collected.push(envId);
  }
  return collected;
}
