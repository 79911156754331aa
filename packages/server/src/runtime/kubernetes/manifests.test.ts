import { dumpYaml } from '@kubernetes/client-node';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import {
  LimitRange,
  Namespace,
  PersistentVolumeClaim,
  Pod,
  ResourceQuota,
  Secret,
  Service,
} from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { EnvPlan } from '../../plan/plan.js';
import { envPlan, httpService, workload } from '../../test-support/plans.js';
import { RuntimeStepError } from '../runtime.js';
import {
  type ClusterSettings,
  checkObjectNames,
  environmentManifests,
  filesSecretManifest,
  labelValue,
  type Manifest,
  namespaceName,
  objectName,
  podManifest,
  runsAs,
  serviceManifest,
  workloadManifest,
} from './manifests.js';

const settings: ClusterSettings = {
  instance: 'inst-1',
  runtimeClasses: { gvisor: 'gvisor' },
  gatewayPeers: [{ ipBlock: { cidr: '10.245.0.1/32' } }],
  quota: { pods: 20, requestsCpu: '4', requestsMemory: '4Gi', limitsMemory: '8Gi', storage: '20Gi' },
  containerDefaults: { cpuRequest: '50m', memoryRequest: '64Mi', memoryLimit: '512Mi' },
  volumeSize: '1Gi',
  dnsPolicy: 'Default',
};

/** The example shop's shape: a database with a volume, a migrate job, an API and a web front end. */
function shopPlan(): EnvPlan {
  const hc = {
    command: { exec: ['pg_isready', '-q'] },
    intervalMs: 1000,
    timeoutMs: 3000,
    retries: 5,
    startPeriodMs: 30000,
  };
  return {
    ...envPlan([
      workload({
        name: 'db',
        image: 'mayfly-build/shop:db',
        env: { POSTGRES_USER: 'shop' },
        mounts: [{ type: 'volume', source: 'db-data', target: '/var/lib/postgresql/data', readOnly: false }],
        healthcheck: hc,
        resources: { memoryBytes: 256 * 1024 * 1024, shmBytes: 64 * 1024 * 1024 },
        user: '999:999',
      }),
      workload({
        name: 'migrate',
        kind: 'job',
        image: 'mayfly-build/shop:db',
        command: ['migrate'],
        dependsOn: [{ name: 'db', condition: 'service_healthy' }],
      }),
      httpService('api', {
        image: 'mayfly-build/shop:api',
        aliases: ['backend'],
        files: [{ target: '/run/secrets/token', content: 's3cret', mode: 0o400 }],
        capDrop: ['ALL'],
        readOnlyRootFilesystem: true,
        mounts: [{ type: 'tmpfs', target: '/tmp', sizeBytes: 1024 * 1024, readOnly: false }],
        resources: { cpus: 0.5, memoryBytes: 32 * 1024 * 1024 },
      }),
      httpService('web', {
        image: 'mayfly-build/shop:web',
        healthcheck: undefined,
        extraHosts: [{ host: 'metadata.internal', ip: '10.9.9.9' }],
        labels: { 'com.example.team': 'shop', 'mayfly.env': 'forged' },
        replicas: 2,
        stopGracePeriodMs: 2500,
      }),
    ]),
    envId: 'abc123xyz0',
    envName: 'shop',
    project: 'shop',
    volumes: [{ name: 'db-data' }],
  };
}

const serviceIps = new Map([
  ['db', '10.96.0.10'],
  ['api', '10.96.0.11'],
  ['web', '10.96.0.12'],
]);

function allManifests(plan: EnvPlan): Manifest[] {
  const out: Manifest[] = [...environmentManifests(settings, plan)];
  for (const w of plan.workloads) {
    const svc = serviceManifest(settings, plan, w, w.name === 'db' ? [{ port: 5432, protocol: 'tcp' }] : []);
    if (svc) out.push(svc);
    const files = filesSecretManifest(settings, plan, w);
    if (files) out.push(files);
    out.push(
      workloadManifest(settings, plan, w, { image: `127.0.0.1:5000/${w.image.ref}`, serviceIps }, w.replicas),
    );
  }
  return out;
}

/** The manifest as the API server gets it (the client's models rename `from`, `default`). */
const wire = (m: Manifest) => parse(dumpYaml(m)) as Record<string, unknown>;

const models: Record<string, new (data: never) => { validate(): void }> = {
  Namespace,
  ResourceQuota,
  LimitRange,
  NetworkPolicy,
  PersistentVolumeClaim,
  Service,
  Secret,
  Deployment,
  StatefulSet,
  Job,
};

const DNS_LABEL = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$/;

describe('Kubernetes manifests', () => {
  it('match the snapshot of the example shop', async () => {
    const yaml = allManifests(shopPlan())
      .map((m) => dumpYaml(m))
      .join('---\n');
    await expect(yaml).toMatchFileSnapshot('__snapshots__/shop.yaml');
  });

  it('are valid against the official schemas, and their names and labels are what Kubernetes accepts', () => {
    const plans = [shopPlan(), { ...shopPlan(), isolation: 'gvisor' as const }];
    for (const plan of plans) {
      for (const manifest of allManifests(plan)) {
        const Model = models[manifest.kind!];
        expect(Model, manifest.kind).toBeDefined();
        expect(() => new Model!(wire(manifest) as never).validate(), `${manifest.kind}`).not.toThrow();
        expect(manifest.metadata!.name).toMatch(DNS_LABEL);
        for (const value of Object.values(manifest.metadata!.labels ?? {}))
          expect(value).toMatch(LABEL_VALUE);
      }
    }
  });

  it('name objects by the Compose names, never two names alike', () => {
    expect(objectName('web')).toBe('web');
    const names = ['my_db', 'my-db', 'My-DB', '1db', 'a.b', 'x'.repeat(200), '_'];
    const made = names.map(objectName);
    expect(new Set(made).size).toBe(names.length);
    for (const n of made) expect(n).toMatch(DNS_LABEL);
    expect(namespaceName('abc123xyz0')).toBe('mayfly-abc123xyz0');
    expect(namespaceName('Weird_ID.with.dots')).toMatch(DNS_LABEL);
    expect(labelValue('shop')).toBe('shop');
    expect(labelValue('a/b')).toMatch(LABEL_VALUE);
    expect(labelValue('-'.repeat(100))).toMatch(LABEL_VALUE);
    expect(labelValue('a/b')).not.toBe(labelValue('a_b'));
  });

  it('reach every workload by its Compose name and aliases at its Service address, without DNS', () => {
    const plan = shopPlan();
    const web = workloadManifest(settings, plan, plan.workloads[3]!, { image: 'i', serviceIps }, 2);
    expect(web.spec!.template.spec!.hostAliases).toEqual([
      { ip: '10.96.0.10', hostnames: ['db'] },
      { ip: '10.96.0.11', hostnames: ['api', 'backend'] },
      { ip: '10.96.0.12', hostnames: ['web'] },
      { ip: '10.9.9.9', hostnames: ['metadata.internal'] },
    ]);
    // the template's own labels are annotations, and may not pose as Mayfly's
    expect(web.spec!.template.metadata!.annotations!['com.example.team']).toBe('shop');
    expect(web.spec!.template.metadata!.labels!['mayfly.env']).toBe('abc123xyz0');
    expect(web.spec!.template.spec!.automountServiceAccountToken).toBe(false);
  });

  it('give a Service the ports the image exposes too, and none to a workload with no port', () => {
    const plan = shopPlan();
    const db = serviceManifest(settings, plan, plan.workloads[0]!, [{ port: 5432, protocol: 'tcp' }]);
    expect(db!.spec!.ports!.map((p) => p.port)).toEqual([5432]);
    expect(serviceManifest(settings, plan, plan.workloads[1]!, [])).toBeNull();
  });

  it('run a service with volumes as a StatefulSet, a job as a Job never retried', () => {
    const plan = shopPlan();
    const facts = { image: 'i', serviceIps };
    expect(workloadManifest(settings, plan, plan.workloads[0]!, facts, 1).kind).toBe('StatefulSet');
    const job = workloadManifest(settings, plan, plan.workloads[1]!, facts, 1);
    expect(job.kind).toBe('Job');
    expect((job.spec as { backoffLimit: number }).backoffLimit).toBe(0);
    expect(workloadManifest(settings, plan, plan.workloads[2]!, facts, 0).kind).toBe('Deployment');
  });

  it("follow Compose's restart policy: controllers for always, Mayfly's own pods for no and on-failure", () => {
    const plan = shopPlan();
    const facts = { image: 'i', serviceIps };
    expect(runsAs(workload({ name: 'a', restart: 'always' }))).toBe('controller');
    expect(runsAs(workload({ name: 'a', restart: 'unless-stopped' }))).toBe('controller');
    expect(runsAs(workload({ name: 'a', restart: 'no' }))).toBe('pods');
    expect(runsAs(workload({ name: 'a', kind: 'job', restart: 'always' }))).toBe('job');
    const never = podManifest(settings, plan, workload({ name: 'once', restart: 'no' }), facts, 1);
    expect(never.spec?.restartPolicy).toBe('Never');
    const onFailure = podManifest(
      settings,
      plan,
      workload({ name: 'retry', restart: 'on-failure' }),
      facts,
      2,
    );
    expect(onFailure.spec?.restartPolicy).toBe('OnFailure');
    expect(onFailure.metadata?.name).toBe('retry-2');
    expect(() => new Pod(wire(onFailure) as never).validate()).not.toThrow();
  });

  it('ask for no more than a workload may use', () => {
    const plan = shopPlan();
    const api = workloadManifest(settings, plan, plan.workloads[2]!, { image: 'i', serviceIps }, 1);
    const resources = api.spec!.template.spec!.containers[0]!.resources!;
    expect(resources.limits).toEqual({ memory: String(32 * 1024 * 1024), cpu: '500m' });
    expect(resources.requests).toEqual({ memory: String(32 * 1024 * 1024), cpu: '50m' });
  });

  it('refuse what a cluster cannot do, saying why', () => {
    const bind = envPlan([
      workload({ name: 'w', mounts: [{ type: 'bind', source: '/etc', target: '/host', readOnly: true }] }),
    ]);
    const named = envPlan([workload({ name: 'w', user: 'postgres' })]);
    const gvisor = envPlan([workload({ name: 'w' })], { isolation: 'gvisor' });
    const facts = { image: 'i', serviceIps: new Map() };
    expect(() => workloadManifest(settings, bind, bind.workloads[0]!, facts, 1)).toThrow(
      /bind mount of \/etc/,
    );
    expect(() => workloadManifest(settings, named, named.workloads[0]!, facts, 1)).toThrow(/uid or uid:gid/);
    expect(() =>
      workloadManifest({ ...settings, runtimeClasses: {} }, gvisor, gvisor.workloads[0]!, facts, 1),
    ).toThrow(RuntimeStepError);
  });
});

describe('object names', () => {
  it('two names of the plan that would be one object are refused, with both names', () => {
    const alias = objectName('db_data');
    expect(alias).toMatch(/^db-data-[0-9a-f]{6}$/);
    const volumes = [{ name: 'db_data' }, { name: alias }];
    const refused = (() => {
      try {
        checkObjectNames({ workloads: [], volumes });
      } catch (err) {
        return err;
      }
    })();
    expect(refused).toBeInstanceOf(RuntimeStepError);
    expect((refused as RuntimeStepError).reason).toBe(
      `volumes "db_data" and "${alias}" would have one name on Kubernetes ("${alias}"): rename one`,
    );
    // A Compose service name may start with a digit; a Kubernetes name may not.
    expect(() =>
      checkObjectNames({
        workloads: [workload({ name: '1api' }), workload({ name: objectName('1api') })],
        volumes: [],
      }),
    ).toThrow(/workloads "1api" and "api-[0-9a-f]{6}" would have one name/);
    // Different names, different objects: nothing to refuse.
    expect(() =>
      checkObjectNames({
        workloads: [workload({ name: '1api' }), workload({ name: 'api' })],
        volumes: [{ name: 'db_data' }, { name: 'db-data' }],
      }),
    ).not.toThrow();
  });
});
