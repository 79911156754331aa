/**
 * Retention: the store does not grow without end. Destroyed environments (with their timelines and
 * kept logs) are deleted after a while, every environment keeps a bounded number of events, webhook
 * deliveries are forgotten after a week, previews' readiness times after a month, and the
 * server's work dir loses uploaded bundles nobody used and folders of environments that are gone.
 */
import type { Workspaces } from '../sources/workspaces.js';
import type { Store } from '../store/store.js';

/** How long previews' times from webhook to ready are kept (the project page shows 30 days). */
export const READINESS_RETENTION_MS = 31 * 86_400_000;

/** How long webhook deliveries are kept: to recognise a redelivery, and to list them. */
export const WEBHOOK_DELIVERY_RETENTION_MS = 7 * 86_400_000;

export interface RetentionDeps {
  store: Store;
  workspaces: Workspaces;
  destroyedRetentionMs: number;
  maxEventsPerEnv: number;
  now?: Date;
}

export async function applyRetention(
  deps: RetentionDeps,
): Promise<{ environments: number; events: number; bundles: number }> {
  const now = deps.now ?? new Date();
  const environments = await deps.store.environments.deleteDestroyed(
    new Date(now.getTime() - deps.destroyedRetentionMs),
  );
  const events = await deps.store.events.prune({ maxPerEnv: deps.maxEventsPerEnv });
  const bundles = await deps.workspaces.sweep(now);
  // A forge redelivers within hours; a week of delivery ids is plenty to recognise one.
  await deps.store.projects.pruneDeliveries(new Date(now.getTime() - WEBHOOK_DELIVERY_RETENTION_MS));
  await deps.store.previews.pruneReadiness(new Date(now.getTime() - READINESS_RETENTION_MS));
  return { environments, events, bundles };
}
