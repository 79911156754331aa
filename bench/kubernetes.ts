/**
 * Kubernetes benchmark, in one run, on the cluster of MAYFLY_BENCH_KUBECONFIG (scripts/bench.sh
 * starts the test cluster when none is given), the images already built and pushed:
 *
 *   example create → ready, destroy   the example shop through a control plane running it on the
 *                                     cluster, beside one running it on the Docker Engine
 *   one service create → ready        Mayfly on the cluster (namespace, quota, policy, Service,
 *                                     pod, readiness and the Service routing), beside the raw API:
 *                                     a namespace and a pod with the same readiness probe, created
 *                                     and waited for by hand; and its destroy beside deleting the
 *                                     namespace and waiting until it is gone (its pod then gets
 *                                     its 30 s grace period, where Mayfly's destroy kills at once)
 *   20 environments at once           time until all are ready, with the control plane's CPU time
 *                                     and peak memory meanwhile, beside the same on Docker
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { DockerImagePublisher } from '../packages/server/src/runtime/docker/docker-image-publisher.js';
import {
  type ControlPlane as Plane,
  startControlPlane,
  stopControlPlane,
} from '../packages/server/src/test-support/control-plane-process.js';
import { cpuSeconds, mayflyDown, mayflyUp, mayflyUpInline, median, rssKb, timed } from './common.js';
import { sleep } from './sandboxes.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const AT_ONCE = 20;
const TESTKIT = 'mayfly-test/testkit:latest';

export interface KubernetesBench {
  /** metric, on Kubernetes, the baseline, which baseline */
  rows: [string, number, number, string][];
  samples: Record<string, number[]>;
}

const light = `services:
  web:
    image: ${TESTKIT}
    command: ["testkit", "http", "--port", "8080"]
    ports: ["8080"]
`;

/** Creates `names` at once from `template`, waits until all are ready; CPU and peak RSS meanwhile. */
async function createAtOnce(plane: Plane, names: string[]) {
  const pid = plane.child.pid!;
  const cpuBefore = await cpuSeconds(pid);
  let peakKb = await rssKb(pid);
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakKb = Math.max(peakKb, await rssKb(pid));
      await sleep(200);
    }
  })();
  const seconds = await timed(() => Promise.all(names.map((name) => mayflyUpInline(plane, name, light))));
  sampling = false;
  await sampler;
  const cpu = (await cpuSeconds(pid)) - cpuBefore;
  const destroy = await timed(() => Promise.all(names.map((name) => mayflyDown(plane, name))));
  return { seconds, cpu, peakMiB: peakKb / 1024, destroy };
}

/** A namespace and one pod with a TCP readiness probe, through the API by hand: the floor. */
async function rawPod(core: CoreV1Api, image: string, round: number) {
  const namespace = `bench-raw-${process.pid}-${round}`;
  const pod: V1Pod = {
    metadata: { name: 'web' },
    // As Mayfly makes its pods: no service-account token, no service variables.
    spec: {
      dnsPolicy: 'Default',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      containers: [
        {
          name: 'web',
          image,
          command: ['testkit', 'http', '--port', '8080'],
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
        },
      ],
    },
  };
  let create: number;
  try {
    create = await timed(async () => {
      await core.createNamespace({ body: { metadata: { name: namespace } } });
      await core.createNamespacedPod({ namespace, body: pod });
      for (;;) {
        const got = await core.readNamespacedPod({ namespace, name: 'web' });
        if (got.status?.containerStatuses?.[0]?.ready) return;
        await sleep(50);
      }
    });
  } catch (err) {
    await core.deleteNamespace({ name: namespace, gracePeriodSeconds: 0 }).catch(() => {});
    throw err;
  }
  const destroy = await timed(async () => {
    // What Mayfly does too: the namespace's own deletion gives its pods their 30 s of grace (and
    // the namespace controller backs off meanwhile), so the pods are killed by hand.
    await core.deleteNamespace({ name: namespace, gracePeriodSeconds: 0 });
    await core.deleteCollectionNamespacedPod({ namespace, gracePeriodSeconds: 0 });
    for (;;) {
      const gone = await core.readNamespace({ name: namespace }).then(
        () => false,
        () => true,
      );
      if (gone) return;
      await sleep(50);
    }
  });
  return { create, destroy };
}

export async function benchKubernetes(exampleDir: string): Promise<KubernetesBench> {
  const kubeconfig = process.env.MAYFLY_BENCH_KUBECONFIG;
  if (!kubeconfig) throw new Error('MAYFLY_BENCH_KUBECONFIG is not set (scripts/bench.sh sets it)');
  const registry = process.env.MAYFLY_BENCH_REGISTRY ?? '127.0.0.1:5000';
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig);
  const core = config.makeApiClient(CoreV1Api);
  const dirs = [
    await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-k8s-')),
    await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-docker-')),
  ];
  const onCluster = await startControlPlane(dirs[0]!, undefined, {
    runtimeDriver: 'kubernetes',
    kubeconfig,
    registry,
    kubeLocalVolumes: process.env.MAYFLY_BENCH_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes',
    kubeGatewayFrom: ['10.245.0.1/32'],
  });
  const onDocker = await startControlPlane(dirs[1]!);
  try {
    // Warm-up: images built, pushed and pulled once; nothing below measures a build or a pull.
    process.stderr.write('kubernetes: warming up…\n');
    for (const plane of [onCluster, onDocker]) {
      await mayflyUp(plane, 'warm', exampleDir);
      await mayflyDown(plane, 'warm');
      await mayflyUpInline(plane, 'warm-one', light);
      await mayflyDown(plane, 'warm-one');
    }
    // The same image the environments run, as the publisher pushed it (named by its content).
    const testkit = (
      await new DockerImagePublisher({ registry }).publish(TESTKIT, new AbortController().signal)
    ).ref;
    await rawPod(core, testkit, -1);

    const s = {
      exampleCreateK8s: [] as number[],
      exampleCreateDocker: [] as number[],
      exampleDestroyK8s: [] as number[],
      exampleDestroyDocker: [] as number[],
      oneCreateK8s: [] as number[],
      oneCreateRaw: [] as number[],
      oneDestroyK8s: [] as number[],
      oneDestroyRaw: [] as number[],
    };
    for (let i = 0; i < ROUNDS; i++) {
      process.stderr.write(`kubernetes: round ${i + 1}/${ROUNDS}\n`);
      s.exampleCreateK8s.push(await timed(() => mayflyUp(onCluster, `shop-${i}`, exampleDir)));
      s.exampleDestroyK8s.push(await timed(() => mayflyDown(onCluster, `shop-${i}`)));
      s.exampleCreateDocker.push(await timed(() => mayflyUp(onDocker, `shop-${i}`, exampleDir)));
      s.exampleDestroyDocker.push(await timed(() => mayflyDown(onDocker, `shop-${i}`)));
      s.oneCreateK8s.push(await timed(() => mayflyUpInline(onCluster, `one-${i}`, light)));
      s.oneDestroyK8s.push(await timed(() => mayflyDown(onCluster, `one-${i}`)));
      const raw = await rawPod(core, testkit, i);
      s.oneCreateRaw.push(raw.create);
      s.oneDestroyRaw.push(raw.destroy);
    }

    process.stderr.write(`kubernetes: ${AT_ONCE} environments at once…\n`);
    const names = Array.from({ length: AT_ONCE }, (_, i) => `burst-${i}`);
    const k8s = await createAtOnce(onCluster, names);
    const docker = await createAtOnce(onDocker, names);

    return {
      rows: [
        [
          'example create → ready (s)',
          median(s.exampleCreateK8s),
          median(s.exampleCreateDocker),
          'on Docker',
        ],
        ['example destroy (s)', median(s.exampleDestroyK8s), median(s.exampleDestroyDocker), 'on Docker'],
        ['one service create → ready (s)', median(s.oneCreateK8s), median(s.oneCreateRaw), 'raw API'],
        ['one service destroy (s)', median(s.oneDestroyK8s), median(s.oneDestroyRaw), 'raw API'],
        [`${AT_ONCE} at once, all ready (s)`, k8s.seconds, docker.seconds, 'on Docker'],
        [`${AT_ONCE} at once, control plane CPU (s)`, k8s.cpu, docker.cpu, 'on Docker'],
        [`${AT_ONCE} at once, control plane peak RSS (MiB)`, k8s.peakMiB, docker.peakMiB, 'on Docker'],
        [`${AT_ONCE} at once, destroy all (s)`, k8s.destroy, docker.destroy, 'on Docker'],
      ],
      samples: s,
    };
  } finally {
    await Promise.all([stopControlPlane(onCluster), stopControlPlane(onDocker)]);
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }
}
