/**
 * Seeded data: a PostgreSQL seeded the way projects seed one — a bulk load (BENCH_SEED_ROWS rows,
 * about 100 MB with its index) and then many small statements, one round trip each, as an ORM's
 * fixtures run (BENCH_SEED_STATEMENTS) — brought up three ways in the same run, interleaved:
 *
 *   seeded    the seed job runs (`noSnapshot`: a snapshot is taken after it, as the first time)
 *   restored  the volume is a clone of that snapshot; the job is not run
 *   floor     the same database with no seed at all: the least any of them could take
 *
 * and the copy a snapshot is, measured alone against `cp -a`: on the Engine's file system, and on
 * an XFS made for the purpose (reflinks), where `mkfs.xfs` is installed. With a cluster
 * (MAYFLY_BENCH_KUBECONFIG), the three ways again on Kubernetes, where a snapshot is a claim of its
 * own namespace and copies are streamed between helper pods.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CoreV1Api, Exec, KubeConfig } from '@kubernetes/client-node';
import type { EnvEvent } from '../packages/contract/src/index.js';
import { namespaceName } from '../packages/server/src/runtime/kubernetes/manifests.js';
import { LABELS } from '../packages/server/src/runtime/runtime.js';
import {
  callApi as call,
  destroyAll,
  type ControlPlane as Plane,
  startControlPlane,
  stopControlPlane,
} from '../packages/server/src/test-support/control-plane-process.js';
import { mayflyDown, median, timed, waitState } from './common.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const agent = path.join(root, 'packages/agent/dist/mayfly-agent');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ROWS = Number(process.env.BENCH_SEED_ROWS ?? 200_000);
const STATEMENTS = Number(process.env.BENCH_SEED_STATEMENTS ?? 60_000);
const IMAGE = 'mayfly-bench/postgres:latest';

export interface SeedingBench {
  /** metric, value, baseline (or null), what the baseline is, unit. */
  rows: [string, number, number | null, string, string][];
  goals: Record<string, { value: number; goal: string; met: boolean }>;
  samples: Record<string, number[]>;
}

const ENV = `
      POSTGRES_USER: app
      POSTGRES_PASSWORD: bench-password
      POSTGRES_DB: app`;
const DB = `
  db:
    image: ${IMAGE}
    environment:${ENV}
    volumes: ["pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-q", "-h", "127.0.0.1"]
      interval: 1s
      timeout: 3s
      retries: 30`;
/** The seed: a bulk load, an index, then one statement per round trip, all through one session. */
const SEED_SCRIPT = [
  'set -eu',
  'export PGHOST=db PGUSER=app PGPASSWORD=bench-password PGDATABASE=app',
  'until pg_isready -q; do sleep 0.1; done',
  `psql -q -v ON_ERROR_STOP=1 -c "CREATE TABLE items (id bigint PRIMARY KEY, name text, body text); INSERT INTO items SELECT g, md5(g::text), repeat(md5(g::text), 6) FROM generate_series(1, ${ROWS}) g; CREATE INDEX items_name ON items (name);"`,
  'psql -q -v ON_ERROR_STOP=1 -c "CREATE TABLE fixtures (id serial PRIMARY KEY, item bigint, note text, at timestamptz DEFAULT now())"',
  `i=0; while [ $$i -lt ${STATEMENTS} ]; do i=$$((i+1)); echo "INSERT INTO fixtures (item, note) VALUES ($$i, 'fixture $$i');"; done | psql -q -v ON_ERROR_STOP=1`,
].join('\n');

const seededTemplate = `
services:${DB}
  seed:
    image: ${IMAGE}
    entrypoint: ["/bin/sh", "-c"]
    command:
      - |
${SEED_SCRIPT.split('\n')
  .map((l) => `        ${l}`)
  .join('\n')}
    depends_on: { db: { condition: service_healthy } }
    x-mayfly: { job: true }
volumes:
  pgdata: {}
x-mayfly:
  data:
    pgdata: { seededBy: seed }
`;
const floorTemplate = `
services:${DB}
volumes:
  pgdata: {}
`;

async function up(plane: Plane, name: string, content: string, extra: Record<string, unknown> = {}) {
  return timed(async () => {
    await call(plane, 'POST', '/v1/environments', {
      name,
      template: { filename: 'compose.yaml', content },
      ...extra,
    });
    const env = await waitState(plane, name, ['ready', 'failed']);
    if (env.state !== 'ready') throw new Error(`${name} failed: ${JSON.stringify(env.failure)}`);
  });
}

const ROWS_SQL = "SELECT (SELECT count(*) FROM items) || ' ' || (SELECT count(*) FROM fixtures)";

/** The rows an environment's database holds: a restored one must hold what the seeded one does. */
type RowsIn = (plane: Plane, name: string) => Promise<string>;

const rowsInContainer: RowsIn = async (plane, name) => {
  const env = await call<{ id: string }>(plane, 'GET', `/v1/environments/${name}`);
  const { stdout } = await run('docker', [
    'exec',
    '-e',
    'PGPASSWORD=bench-password',
    `mayfly-${env.id}-db-1`,
    ...['psql', '-h', '127.0.0.1', '-U', 'app', '-tAc', ROWS_SQL, 'app'],
  ]);
  return stdout.trim();
};

/** On the cluster: in the database's running pod, through the API's exec. */
function rowsInPod(kubeconfig: string): RowsIn {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig);
  const core = config.makeApiClient(CoreV1Api);
  return async (plane, name) => {
    const env = await call<{ id: string }>(plane, 'GET', `/v1/environments/${name}`);
    const namespace = namespaceName(env.id);
    const pods = await core.listNamespacedPod({ namespace, labelSelector: `${LABELS.workload}=db` });
    const pod = pods.items.find((p) => p.status?.phase === 'Running')?.metadata?.name;
    if (!pod) throw new Error(`no running db pod in ${namespace}`);
    let out = '';
    const stdout = new Writable({
      write(chunk, _encoding, done) {
        out += String(chunk);
        done();
      },
    });
    await new Promise<void>((resolve, reject) => {
      void new Exec(config)
        .exec(
          namespace,
          pod,
          'main',
          ['sh', '-c', `PGPASSWORD=bench-password psql -h 127.0.0.1 -U app -tAc "${ROWS_SQL}" app`],
          stdout,
          null,
          null,
          false,
          (status) => (status.status === 'Success' ? resolve() : reject(new Error(status.message))),
        )
        .catch(reject);
    });
    return out.trim();
  };
}

/** Seeded, restored and floor, interleaved, ROUNDS times, after one untimed seed; and the takes. */
async function rounds(plane: Plane, rowsIn: RowsIn, label: string) {
  const samples: Record<string, number[]> = { seeded: [], restored: [], floor: [], snapshotTake: [] };
  let sizeMiB = 0;
  // Untimed: the first seed, whose snapshot the restored rounds clone (and a warm page cache).
  await up(plane, 'seed-warm', seededTemplate);
  const rows = await rowsIn(plane, 'seed-warm');
  await mayflyDown(plane, 'seed-warm');
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`seeding${label}: round ${round}/${ROUNDS}…\n`);
    samples.floor!.push(await up(plane, `floor-${round}`, floorTemplate));
    await mayflyDown(plane, `floor-${round}`);
    samples.seeded!.push(await up(plane, `seeded-${round}`, seededTemplate, { noSnapshot: true }));
    const taken = (
      await call<{ items: EnvEvent[] }>(plane, 'GET', `/v1/environments/seeded-${round}/events`)
    ).items
      .map((e) => /^pgdata: snapshot \S+ taken: ([\d.]+) (KiB|MiB|GiB) in ([\d.]+) s/.exec(e.message))
      .find((m) => m !== null);
    if (taken) {
      samples.snapshotTake!.push(Number(taken[3]));
      sizeMiB = Number(taken[1]) * { KiB: 1 / 1024, MiB: 1, GiB: 1024 }[taken[2] as 'KiB'];
    }
    await mayflyDown(plane, `seeded-${round}`);
    samples.restored!.push(await up(plane, `restored-${round}`, seededTemplate));
    const restoredRows = await rowsIn(plane, `restored-${round}`);
    if (restoredRows !== rows) throw new Error(`restored rows ${restoredRows}, seeded ${rows}`);
    await mayflyDown(plane, `restored-${round}`);
  }
  return { samples, sizeMiB, rows };
}

/** Every environment and snapshot gone, the control plane stopped and its data removed. */
async function cleanUp(plane: Plane, dataDir: string) {
  await destroyAll(plane);
  const { items } = await call<{ items: { project: string; name: string }[] }>(plane, 'GET', '/v1/snapshots');
  for (const s of items) await call(plane, 'DELETE', `/v1/snapshots/${s.project}/${s.name}`);
  await stopControlPlane(plane);
  await rm(dataDir, { recursive: true, force: true });
}

/** The rounds' rows and goals, the label saying where they ran. */
function results(r: Awaited<ReturnType<typeof rounds>>, label: string) {
  const m = (k: string) => median(r.samples[k]!);
  const restoredOverSeeded = m('restored') / m('seeded');
  const aboveFloor = m('restored') - m('floor');
  const rows: SeedingBench['rows'] = [
    [`create → ready, seeded (job + snapshot)${label}`, m('seeded'), m('floor'), 'no seed', 's'],
    [`create → ready, restored from the snapshot${label}`, m('restored'), m('seeded'), 'seeded', 's'],
    [`create → ready, no seed at all (floor)${label}`, m('floor'), null, '', 's'],
    [`snapshot taken (writers stopped and started again)${label}`, m('snapshotTake'), null, '', 's'],
    [`snapshot size${label}`, r.sizeMiB, null, '', 'MiB'],
  ];
  const goals: SeedingBench['goals'] = {
    [`restored ≤ 0.3 × seeded${label}`]: {
      value: restoredOverSeeded,
      goal: '≤ 0.30',
      met: restoredOverSeeded <= 0.3,
    },
    [`restored within 1 s of the floor${label}`]: {
      value: aboveFloor,
      goal: '≤ 1.00 s',
      met: aboveFloor <= 1,
    },
  };
  const [items, fixtures] = r.rows.split(' ').map(Number);
  return { rows, goals, samples: { ...r.samples, rows: [items!, fixtures!] } };
}

/**
 * On the Docker Engine; and on the cluster of `kubeconfig` too when one is given (scripts/bench.sh
 * gives the test cluster's for the whole run and BENCH_ONLY=seeding), where snapshots are copied
 * between namespaces through helper pods — or, with MAYFLY_BENCH_K8S_STORAGE_CLASS naming a storage
 * class whose CSI driver snapshots, taken and cloned by the storage.
 */
export async function benchSeeding(kubeconfig = process.env.MAYFLY_BENCH_KUBECONFIG): Promise<SeedingBench> {
  process.stderr.write('seeding: building the PostgreSQL image…\n');
  await run('docker', ['build', '-q', '-t', IMAGE, path.join(root, 'examples/shop/db')]);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-seeding-'));
  const plane = await startControlPlane(dataDir, undefined, { logLevel: 'error' });
  let onDocker: ReturnType<typeof results>;
  try {
    onDocker = results(await rounds(plane, rowsInContainer, ''), '');
  } finally {
    await cleanUp(plane, dataDir);
  }
  let onCluster: ReturnType<typeof results> | undefined;
  if (kubeconfig) {
    const storageClass = process.env.MAYFLY_BENCH_K8S_STORAGE_CLASS;
    const clusterDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-bench-seeding-k8s-'));
    const cluster = await startControlPlane(clusterDir, undefined, {
      logLevel: 'error',
      runtimeDriver: 'kubernetes',
      kubeconfig,
      registry: process.env.MAYFLY_BENCH_REGISTRY ?? '127.0.0.1:5000',
      // A storage class whose CSI driver snapshots (MAYFLY_BENCH_K8S_STORAGE_CLASS): the storage's
      // snapshots and clones; else the test cluster's node directories, copied by helper pods.
      ...(storageClass
        ? { kubeStorageClass: storageClass }
        : { kubeLocalVolumes: process.env.MAYFLY_BENCH_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes' }),
      kubeGatewayFrom: ['10.245.0.1/32'],
    });
    try {
      const on = storageClass ? `k8s, ${storageClass}` : 'k8s';
      onCluster = results(
        await rounds(cluster, rowsInPod(kubeconfig), ` (${on})`),
        storageClass ? `, on Kubernetes (${storageClass})` : ', on Kubernetes',
      );
    } finally {
      await cleanUp(cluster, clusterDir);
    }
  }
  const copies = await copyTimes();
  return {
    rows: [...onDocker.rows, ...copies, ...(onCluster?.rows ?? [])],
    goals: { ...onDocker.goals, ...onCluster?.goals },
    samples: {
      ...onDocker.samples,
      ...Object.fromEntries(
        Object.entries(onCluster?.samples ?? {}).map(([k, v]) => [`${k}OnKubernetes`, v]),
      ),
    },
  };
}

/**
 * The copy a snapshot (and a restore) is, alone: `mayfly-agent copy` against `cp -a` on the same
 * 100 MB tree (one large file, 2000 small ones), caches dropped before each; on the file system of
 * /var/lib/docker, and on a loop-mounted XFS where reflinks make a copy share the blocks.
 */
async function copyTimes(): Promise<SeedingBench['rows']> {
  const rows: SeedingBench['rows'] = [];
  const dockerRoot = '/var/lib/docker';
  const fsType = (await run('stat', ['-f', '-c', '%T', dockerRoot])).stdout.trim();
  rows.push(...(await copyOn(await mkdtemp(path.join(dockerRoot, 'mayfly-bench-copy-')), fsType)));
  const hasXfs = await run('sh', ['-c', 'command -v mkfs.xfs']).then(
    () => true,
    () => false,
  );
  if (!hasXfs) {
    process.stderr.write('seeding: no mkfs.xfs (apt-get install xfsprogs): reflink copies not measured\n');
    return rows;
  }
  const image = path.join(os.tmpdir(), 'mayfly-bench-xfs.img');
  const mount = path.join(os.tmpdir(), 'mayfly-bench-xfs');
  await run('truncate', ['-s', '1G', image]);
  await run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', image]);
  await mkdir(mount, { recursive: true });
  await run('mount', ['-o', 'loop', image, mount]);
  try {
    rows.push(...(await copyOn(path.join(mount, 'work'), 'xfs (loop, reflink)')));
  } finally {
    await run('umount', [mount]);
    await rm(image, { force: true });
    await rm(mount, { recursive: true, force: true });
  }
  return rows;
}

async function copyOn(dir: string, label: string): Promise<SeedingBench['rows']> {
  const src = path.join(dir, 'src');
  const sh = (script: string) => run('sh', ['-c', script], { maxBuffer: 16 * 1024 * 1024 });
  await mkdir(dir, { recursive: true });
  try {
    await sh(
      `mkdir -p ${src} && dd if=/dev/urandom of=${src}/big bs=1M count=90 status=none && i=0; while [ $i -lt 2000 ]; do i=$((i+1)); head -c 5000 /dev/urandom > ${src}/f$i; done; sync`,
    );
    const agentTimes: number[] = [];
    const cpTimes: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      for (const [times, command] of [
        [agentTimes, `${agent} copy ${src} ${dir}/a${i}`],
        [cpTimes, `cp -a ${src}/. ${dir}/c${i}/`],
      ] as const) {
        await sh(`mkdir -p ${dir}/a${i} ${dir}/c${i}; sync; echo 3 > /proc/sys/vm/drop_caches`);
        times.push(await timed(() => sh(command)));
      }
    }
    return [
      [
        `copy 100 MB, 2001 files, ${label}: mayfly-agent copy`,
        median(agentTimes),
        median(cpTimes),
        'cp -a',
        's',
      ],
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
