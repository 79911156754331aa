/**
 * Crash safety: the control plane is SIGKILLed at chosen moments — each one observed before the
 * kill, so the test proves it landed mid-operation — during create (while a service starts, while
 * a job runs, during a build) and during destroy; a fresh process on the same data dir must
 * converge, run the job exactly once, and leave no orphan. A destroy during a create wins.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { EnvEvent, Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  callApi as call,
  destroyAll,
  startControlPlane as startPlane,
  stopControlPlane,
  uploadBundle,
  waitForState as waitState,
} from '../test-support/control-plane-process.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';
import { createPgSchema } from '../test-support/pg-schema.js';
import { nonceBuildProject } from '../test-support/projects.js';
import { until } from '../test-support/until.js';

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;
// Three tiers so a kill can land between any two steps: db → job → web. The job records each run
// in a volume and takes a few seconds, so a kill can land while it runs.
const compose = `
services:
  db:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 1; exec testkit http --port 8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
  migrate:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "echo run >> /runs/migrate; sleep 3; echo migrated"]
    volumes: ["runs:/runs"]
    depends_on: { db: { condition: service_healthy } }
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
volumes:
  runs: {}
`;

const containersOf = (envId: string) =>
  execFileSync('docker', ['ps', '-a', '-q', '--filter', `label=mayfly.env=${envId}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
const stateOf = (container: string) =>
  execFileSync('docker', ['inspect', '-f', '{{.State.Status}}', container], { encoding: 'utf8' }).trim();
/** Lines the migrate job wrote into its volume: one per run. */
const jobRuns = (envId: string) =>
  execFileSync(
    'docker',
    ['run', '--rm', '-v', `mayfly-${envId}-runs:/runs`, TESTKIT_IMAGE, 'cat', '/runs/migrate'],
    { encoding: 'utf8' },
  )
    .split('\n')
    .filter(Boolean).length;

const events = (plane: ControlPlane, env: string) =>
  call<{ items: EnvEvent[] }>(plane, 'GET', `/v1/environments/${env}/events`).then((r) => r.items);
const sawEvent = (plane: ControlPlane, env: string, message: string) =>
  until(`"${message}"`, async () =>
    (await events(plane, env)).some((e) => e.message === message) ? true : undefined,
  );

describe('crash safety (SIGKILL of the control plane)', () => {
  let dataDir: string;
  let plane: ControlPlane;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-crash-'));
    plane = await startPlane(dataDir);
  });
  afterAll(async () => {
    await destroyAll(plane);
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  });

  const restart = async () => {
    await stopControlPlane(plane, 'SIGKILL');
    plane = await startPlane(dataDir);
  };

  /** Kills during destroy — seen `destroying` with containers still there — then converges. */
  const destroyWithKill = async (name: string, envId: string) => {
    await call(plane, 'DELETE', `/v1/environments/${name}`);
    await until('teardown under way', async () => {
      const { state } = await call<Environment>(plane, 'GET', `/v1/environments/${name}`);
      return state === 'destroying' && containersOf(envId).length > 0 ? true : undefined;
    });
    await restart();
    expect((await waitState(plane, name, ['destroyed'])).state).toBe('destroyed');
    expect(labelledObjects().filter((o) => o.includes(envId))).toEqual([]);
  };

  it('converges after a kill while a service starts, and after a kill during destroy', async () => {
    const created = await call<Environment>(plane, 'POST', '/v1/environments', {
      name: 'crash-db',
      template: { filename: 'compose.yaml', content: compose },
    });
    await sawEvent(plane, 'crash-db', 'db: started');
    expect((await call<Environment>(plane, 'GET', '/v1/environments/crash-db')).state).toBe('creating');
    await restart();
    const ready = await waitState(plane, 'crash-db', ['ready', 'failed']);
    expect(ready).toMatchObject({ state: 'ready', failure: null });
    expect(containersOf(created.id)).toHaveLength(3);
    expect(jobRuns(created.id)).toBe(1);
    await destroyWithKill('crash-db', created.id);
  });

  it('a job running when the control plane dies is waited for, not run again', async () => {
    const created = await call<Environment>(plane, 'POST', '/v1/environments', {
      name: 'crash-job',
      template: { filename: 'compose.yaml', content: compose },
    });
    await sawEvent(plane, 'crash-job', 'migrate: started');
    const job = `mayfly-${created.id}-migrate-1`;
    expect(stateOf(job)).toBe('running');
    const jobId = execFileSync('docker', ['inspect', '-f', '{{.Id}}', job], { encoding: 'utf8' }).trim();
    await restart();
    const ready = await waitState(plane, 'crash-job', ['ready', 'failed']);
    expect(ready).toMatchObject({ state: 'ready', failure: null });
    expect(execFileSync('docker', ['inspect', '-f', '{{.Id}}', job], { encoding: 'utf8' }).trim()).toBe(
      jobId,
    );
    expect(jobRuns(created.id)).toBe(1);
    await destroyWithKill('crash-job', created.id);
  });

  it('converges after a kill during a build', async () => {
    const dir = await nonceBuildProject('RUN sleep 3\n');
    const created = await call<Environment>(plane, 'POST', '/v1/environments', {
      name: 'crash-build',
      template: { filename: 'compose.yaml', bundle: await uploadBundle(plane, dir) },
    });
    await until('the build to run its slow step', async () =>
      (await events(plane, 'crash-build')).some((e) => /^app: Step 3\/\d+ : RUN sleep 3/.test(e.message))
        ? true
        : undefined,
    );
    expect((await call<Environment>(plane, 'GET', '/v1/environments/crash-build')).state).toBe('building');
    await restart();
    const ready = await waitState(plane, 'crash-build', ['ready', 'failed']);
    expect(ready).toMatchObject({ state: 'ready', failure: null });
    const image = execFileSync(
      'docker',
      ['inspect', '-f', '{{.Config.Image}}', `mayfly-${created.id}-app-1`],
      {
        encoding: 'utf8',
      },
    ).trim();
    await destroyWithKill('crash-build', created.id);
    execFileSync('docker', ['rmi', image]);
    await rm(dir, { recursive: true, force: true });
  });

  it('a destroy during a create wins: nothing is left, the slow step is not waited out', async () => {
    const gated = `services:\n  slow:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    healthcheck: { test: ["CMD", "test", "-e", "/tmp/never"], interval: 1s, retries: 100000 }\n`;
    const created = await call<Environment>(plane, 'POST', '/v1/environments', {
      name: 'crash-race',
      template: { filename: 'compose.yaml', content: gated },
    });
    await sawEvent(plane, 'crash-race', 'slow: started');
    expect((await call<Environment>(plane, 'GET', '/v1/environments/crash-race')).state).toBe('creating');
    await call(plane, 'DELETE', '/v1/environments/crash-race');
    expect((await waitState(plane, 'crash-race', ['destroyed'], 20_000)).state).toBe('destroyed');
    expect(labelledObjects().filter((o) => o.includes(created.id))).toEqual([]);
    const states = (await events(plane, 'crash-race')).filter((e) => e.type === 'state').map((e) => e.state);
    expect(states).toEqual(['pending', 'creating', 'destroying', 'destroyed']);
  });

  it("converges on PostgreSQL too, where a killed replica's lease must expire first", async () => {
    const schema = await createPgSchema();
    const pgDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-crash-pg-'));
    let pgPlane = await startPlane(pgDir, schema.url);
    try {
      const created = await call<Environment>(pgPlane, 'POST', '/v1/environments', {
        name: 'crash-pg',
        template: { filename: 'compose.yaml', content: compose },
      });
      await sawEvent(pgPlane, 'crash-pg', 'migrate: started');
      await stopControlPlane(pgPlane, 'SIGKILL');
      pgPlane = await startPlane(pgDir, schema.url);
      const ready = await waitState(pgPlane, 'crash-pg', ['ready', 'failed']);
      expect(ready).toMatchObject({ state: 'ready', failure: null });
      expect(containersOf(created.id)).toHaveLength(3);
      expect(jobRuns(created.id)).toBe(1);
      await call(pgPlane, 'DELETE', '/v1/environments/crash-pg');
      await until('teardown under way', async () => {
        const { state } = await call<Environment>(pgPlane, 'GET', '/v1/environments/crash-pg');
        return state === 'destroying' && containersOf(created.id).length > 0 ? true : undefined;
      });
      await stopControlPlane(pgPlane, 'SIGKILL');
      pgPlane = await startPlane(pgDir, schema.url);
      expect((await waitState(pgPlane, 'crash-pg', ['destroyed'])).state).toBe('destroyed');
      expect(labelledObjects().filter((o) => o.includes(created.id))).toEqual([]);
    } finally {
      await stopControlPlane(pgPlane);
      await schema.drop();
      await rm(pgDir, { recursive: true, force: true });
    }
  });
});
