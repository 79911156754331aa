/** From a loaded template to the concrete plan of one environment: pure and deterministic. */
import { workloadHash } from '../plan/hash.js';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import type { Template } from './load.js';

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
  const byName = new Map(template.volumes.map((v) => [v.name, v]));
  const volumes = [...byName.keys()].sort().map((name) => {
    const data = byName.get(name)?.data;
    return data ? { name, data: { ...data } } : { name };
  });
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
 * The ready names are kept in a heap, so thousands of workloads cost n log n, not n².
 */
function dependencyOrder<W extends Omit<WorkloadPlan, 'specHash'>>(workloads: readonly W[]): W[] {
  const byName = new Map(workloads.map((w) => [w.name, w]));
  const names = [...byName.keys()].sort();
  const waitingOn = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const w of workloads) {
    const deps = new Set(w.dependsOn.map((d) => d.name).filter((n) => byName.has(n) && n !== w.name));
    waitingOn.set(w.name, deps.size);
    for (const dep of deps) {
      const list = dependents.get(dep);
      if (list) list.push(w.name);
      else dependents.set(dep, [w.name]);
    }
  }
  const ready = new MinHeap(names.filter((name) => waitingOn.get(name) === 0));
  const done = new Set<string>();
  const ordered: W[] = [];
  let smallest = 0;
  while (done.size < names.length) {
    let next = ready.pop();
    if (next === undefined) {
      // Only a cycle is left: take the smallest remaining name.
      while (done.has(names[smallest]!)) smallest++;
      next = names[smallest]!;
    }
    if (done.has(next)) continue;
    done.add(next);
    ordered.push(byName.get(next)!);
    for (const dependent of dependents.get(next) ?? []) {
      const left = waitingOn.get(dependent)! - 1;
      waitingOn.set(dependent, left);
      if (left === 0 && !done.has(dependent)) ready.push(dependent);
    }
  }
  return ordered;
}

/** A binary min-heap of strings, ordered as `<` orders them (as `Array.prototype.sort` does). */
class MinHeap {
  private readonly items: string[] = [];

  constructor(initial: readonly string[]) {
    for (const item of initial) this.push(item);
  }

  push(item: string): void {
    const { items } = this;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent]! <= items[i]!) break;
      [items[parent], items[i]] = [items[i]!, items[parent]!];
      i = parent;
    }
  }

  pop(): string | undefined {
    const { items } = this;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let min = i;
        if (left < items.length && items[left]! < items[min]!) min = left;
        if (right < items.length && items[right]! < items[min]!) min = right;
        if (min === i) break;
        [items[min], items[i]] = [items[i]!, items[min]!];
        i = min;
      }
    }
    return top;
  }
}
