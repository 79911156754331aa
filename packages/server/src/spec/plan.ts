/** From a loaded template to the concrete plan of one environment: pure and deterministic. */
import { createHash } from 'node:crypto';
import type { EnvPlan, WorkloadPlan } from '../runtime/runtime.js';
import type { Template } from './load.js';

/**
 * SHA-256 (hex) of a canonical JSON of the workload: keys sorted at every level, undefined values
 * left out, `specHash` ignored if present. Equal workloads hash equal whatever their key order.
 */
export function workloadHash(workload: Omit<WorkloadPlan, 'specHash'>): string {
  const { specHash: _ignored, ...rest } = workload as Partial<WorkloadPlan>;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

function canonicalJson(value: unknown): string {
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

/**
 * The plan of one environment from `template`. Workloads come in dependency order (a workload
 * after everything it depends on), ties broken by name; volumes by name. No IO, clock or
 * randomness: the same template and target always give the same plan, hashes included.
 */
export function plan(
  template: Template,
  target: { envId: string; envName: string; project: string },
): EnvPlan {
  const workloads = dependencyOrder(template.workloads).map((w) => {
    const copy = structuredClone(w);
    return { ...copy, specHash: workloadHash(copy) };
  });
  const volumes = [...new Set(template.volumes.map((v) => v.name))].sort().map((name) => ({ name }));
  return {
    envId: target.envId,
    envName: target.envName,
    project: target.project,
    workloads,
    volumes,
    isolation: template.isolation,
  };
}

/**
 * Topological order (Kahn), always taking the smallest name among the ready ones. Dependencies on
 * unknown workloads are ignored, and any cycle (a loaded template has none) is appended by name.
 */
function dependencyOrder<W extends Omit<WorkloadPlan, 'specHash'>>(workloads: readonly W[]): W[] {
  const byName = new Map(workloads.map((w) => [w.name, w]));
  const waitingOn = new Map(
    workloads.map((w) => [
      w.name,
      new Set(w.dependsOn.map((d) => d.name).filter((n) => byName.has(n) && n !== w.name)),
    ]),
  );
  const ordered: W[] = [];
  const remaining = new Set([...byName.keys()].sort());
  while (remaining.size > 0) {
    const next = [...remaining].find((name) => waitingOn.get(name)!.size === 0) ?? [...remaining][0]!;
    remaining.delete(next);
    ordered.push(byName.get(next)!);
    for (const deps of waitingOn.values()) deps.delete(next);
  }
  return ordered;
}
