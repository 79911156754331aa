/** Prometheus metrics; the registry is created per server and injected, never global. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface Metrics {
  registry: Registry;
  envsByState: Gauge<'state'>;
  createSeconds: Histogram<'outcome'>;
  destroySeconds: Histogram;
  leaksCollected: Counter<'kind'>;
  reconcileErrors: Counter;
}

/** `countByState` is read at scrape time, so replicas agree and no counter drifts. */
export function createMetrics(countByState?: () => Promise<Record<string, number>>): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'mayfly_process_' });
  const buckets = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300];
  return {
    registry,
    envsByState: new Gauge({
      name: 'mayfly_environments',
      help: 'Environments by state',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        if (!countByState) return;
        this.reset();
        for (const [state, n] of Object.entries(await countByState())) this.set({ state }, n);
      },
    }),
    createSeconds: new Histogram({
      name: 'mayfly_environment_create_seconds',
      help: 'Time from request to ready (or failed)',
      labelNames: ['outcome'],
      buckets,
      registers: [registry],
    }),
    destroySeconds: new Histogram({
      name: 'mayfly_environment_destroy_seconds',
      help: 'Time from destroy request to verified gone',
      buckets,
      registers: [registry],
    }),
    leaksCollected: new Counter({
      name: 'mayfly_gc_leaks_collected_total',
      help: 'Labelled runtime objects that no environment wanted, removed by garbage collection',
      labelNames: ['kind'],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: 'mayfly_reconcile_errors_total',
      help: 'Reconcile passes that threw',
      registers: [registry],
    }),
  };
}
