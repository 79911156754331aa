import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import type { WorkloadPlan } from '../plan/plan.js';
import {
  type LoadOptions,
  loadTemplate,
  plan,
  TEMPLATE_LIMITS,
  type Template,
  workloadHash,
} from './index.js';
import { WORKLOAD_DEFAULTS } from './normalize.js';

const shop = join(dirname(fileURLToPath(import.meta.url)), 'testdata', 'shop');
const target = { envId: 'env_1', envName: 'pr-42', project: 'shop' };

const loadShop = (filename: string, options: LoadOptions = {}) =>
  loadTemplate({ filename, content: readFileSync(join(shop, filename), 'utf8'), dir: shop }, options);

const hashes = (template: Template) =>
  Object.fromEntries(plan(template, target).workloads.map((w) => [w.name, w.specHash]));

const inputs = { COMMIT_SHA: 'abc123' };
const serviceUrl = (service: string) => `http://${service}--pr-42.localhost`;

describe('plan', () => {
  test('is deterministic: same input, same plan, same hashes', () => {
    for (const file of ['mayfly.yaml', 'compose.yaml']) {
      const a = plan(loadShop(file, { inputs, serviceUrl }), target);
      const b = plan(loadShop(file, { inputs, serviceUrl }), target);
      expect(b).toEqual(a);
    }
  });

  test('a changed input changes only the hash of the workload that uses it', () => {
    const before = hashes(loadShop('mayfly.yaml', { inputs, serviceUrl }));
    const after = hashes(
      loadShop('mayfly.yaml', { inputs: { ...inputs, BRANCH: 'feat/login' }, serviceUrl }),
    );
    expect(Object.keys(after)).toEqual(Object.keys(before));
    const changed = Object.keys(before).filter((name) => before[name] !== after[name]);
    expect(changed).toEqual(['api']);
  });

  test('the order of keys in the file does not change any hash', () => {
    const a = 'services:\n  web:\n    image: nginx\n    env: { A: "1", B: "2" }\n    ports: [80]\n';
    const b = 'services:\n  web:\n    ports: [80]\n    env: { B: "2", A: "1" }\n    image: nginx\n';
    const load = (content: string) => loadTemplate({ filename: 'mayfly.yaml', content });
    expect(hashes(load(b))).toEqual(hashes(load(a)));
  });

  test('copies the target, sorts volumes, and orders workloads by dependencies then name', () => {
    const content = [
      'services:',
      '  zeta: { image: z }',
      '  web: { image: w, dependsOn: [api] }',
      '  api: { image: a, dependsOn: [db, cache] }',
      '  db: { image: d, volumes: ["pg:/data"] }',
      '  cache: { image: c, volumes: ["/cache"] }',
      'jobs:',
      '  alpha: { image: j, dependsOn: [db] }',
      'volumes: { pg: {} }',
      '',
    ].join('\n');
    const envPlan = plan(loadTemplate({ filename: 'mayfly.yaml', content }), target);
    expect(envPlan.workloads.map((w) => w.name)).toEqual(['cache', 'db', 'alpha', 'api', 'web', 'zeta']);
    expect(envPlan.volumes).toEqual([{ name: 'cache-cache' }, { name: 'pg' }]);
    expect(envPlan).toMatchObject({ envId: 'env_1', envName: 'pr-42', project: 'shop', isolation: 'runc' });
  });

  test('orders a long chain of dependencies, and appends a cycle by name', () => {
    const n = TEMPLATE_LIMITS.maxWorkloads;
    const chain = Array.from({ length: n }, (_, i) => `  s${i}: { image: x, dependsOn: [s${i + 1}] }`);
    chain[n - 1] = `  s${n - 1}: { image: x }`;
    const envPlan = plan(
      loadTemplate({ filename: 'mayfly.yaml', content: `services:\n${chain.join('\n')}\n` }),
      target,
    );
    expect(envPlan.workloads.map((w) => w.name)).toEqual(
      Array.from({ length: n }, (_, i) => `s${n - 1 - i}`),
    );
    const template = loadTemplate({
      filename: 'mayfly.yaml',
      content: 'services:\n  b: { image: x }\n  a: { image: x }\n',
    });
    // A loaded template has no cycle; one made by hand is still ordered.
    template.workloads[0]!.dependsOn = [{ name: 'a', condition: 'service_started' }];
    template.workloads[1]!.dependsOn = [{ name: 'b', condition: 'service_started' }];
    expect(plan(template, target).workloads.map((w) => w.name)).toEqual(['a', 'b']);
  });

  test('does not share objects with the template', () => {
    const template = loadShop('compose.yaml', { inputs });
    const envPlan = plan(template, target);
    envPlan.workloads[0]!.env.CHANGED = 'yes';
    expect(template.workloads.some((w) => 'CHANGED' in w.env)).toBe(false);
  });

  test('specHash is workloadHash of the workload', () => {
    const envPlan = plan(loadShop('compose.yaml', { inputs }), target);
    for (const { specHash, ...workload } of envPlan.workloads) expect(workloadHash(workload)).toBe(specHash);
  });
});

describe('workloadHash', () => {
  const base: Omit<WorkloadPlan, 'specHash'> = {
    name: 'web',
    kind: 'service',
    image: { ref: 'nginx' },
    ...WORKLOAD_DEFAULTS,
    env: { A: '1', B: '2' },
    ports: [{ container: 80, protocol: 'tcp', http: true }],
    dependsOn: [],
    mounts: [],
    resources: {},
    replicas: 1,
    restart: 'no',
  };

  test('is a sha256 hex digest', () => {
    expect(workloadHash(base)).toMatch(/^[0-9a-f]{64}$/);
  });

  test('ignores key order, undefined fields and a present specHash', () => {
    const reordered = { ...base, env: { B: '2', A: '1' }, workingDir: undefined, specHash: 'stale' };
    expect(workloadHash(reordered)).toBe(workloadHash(base));
  });

  test('changes with any value, including list order', () => {
    expect(workloadHash({ ...base, image: { ref: 'nginx:2' } })).not.toBe(workloadHash(base));
    expect(workloadHash({ ...base, env: { ...base.env, C: '3' } })).not.toBe(workloadHash(base));
    const twoPorts = {
      ...base,
      ports: [...base.ports, { container: 81, protocol: 'tcp' as const, http: false }],
    };
    const swapped = { ...base, ports: [...twoPorts.ports].reverse() };
    expect(workloadHash(swapped)).not.toBe(workloadHash(twoPorts));
  });
});
