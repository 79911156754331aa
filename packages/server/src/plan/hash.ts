/** Content hashes of planned workloads: equal workloads hash equal, whatever their key order. */
import { createHash } from 'node:crypto';
import type { WorkloadPlan } from './plan.js';

/**
 * SHA-256 (hex) of a canonical JSON of the workload: keys sorted at every level, undefined values
 * left out, `specHash` ignored if present. Equal workloads hash equal whatever their key order.
 */
export function workloadHash(workload: Omit<WorkloadPlan, 'specHash'>): string {
  const { specHash: _ignored, ...rest } = workload as Partial<WorkloadPlan>;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

/** JSON with keys sorted at every level and undefined values left out: equal values, equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
