/**
 * Crash safety: the control plane is SIGKILLed at several moments during create and during
 * destroy; a fresh process on the same data dir must converge every environment and leave no orphan.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  callApi as call,
  startControlPlane as startPlane,
  stopControlPlane,
  waitForState as waitState,
} from '../test-support/control-plane-process.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';
import { createPgSchema } from '../test-support/pg-schema.js';

const HEALTH = `["CMD", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]`;
// Three tiers so a kill can land between any two steps: db → job → web.
const compose = `
services:
  db:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 1; exec testkit http --port 8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
  migrate:
    image: ${TESTKIT_IMAGE}
    command: ["sh", "-c", "sleep 0.5; echo migrated"]
    depends_on: { db: { condition: service_healthy } }
  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080"]
    ports: ["8080"]
    healthcheck: { test: ${HEALTH}, interval: 1s, retries: 60 }
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
`;

const containersOf = (envId: string) =>
  execFileSync('docker', ['ps', '-a', '-q', '--filter', `label=mayfly.env=${envId}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);

describe('crash safety (SIGKILL of the control plane)', () => {
  let dataDir: string;
  let plane: ControlPlane;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-crash-'));
    plane = await startPlane(dataDir);
  });
  afterAll(async () => {
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
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
      await new Promise((r) => setTimeout(r, 1_400));
      await stopControlPlane(pgPlane, 'SIGKILL');
      pgPlane = await startPlane(pgDir, schema.url);
      const ready = await waitState(pgPlane, 'crash-pg', ['ready', 'failed']);
      expect(ready).toMatchObject({ state: 'ready', failure: null });
      expect(containersOf(created.id)).toHaveLength(3);
      await call(pgPlane, 'DELETE', '/v1/environments/crash-pg');
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

  // Kill points spread over the create: before the first container, while db starts, while the job
  // runs, while web starts.
  for (const killAfterMs of [0, 300, 1_400, 2_600]) {
    it(`converges after a kill ${killAfterMs} ms into create, and after a kill during destroy`, async () => {
      const name = `crash-${killAfterMs}`;
      const created = await call<Environment>(plane, 'POST', '/v1/environments', {
        name,
        template: { filename: 'compose.yaml', content: compose },
      });
      await new Promise((r) => setTimeout(r, killAfterMs));
      await stopControlPlane(plane, 'SIGKILL');
      plane = await startPlane(dataDir);

      const ready = await waitState(plane, name, ['ready', 'failed']);
      expect(ready.failure).toBeNull();
      expect(ready.state).toBe('ready');
      // exactly one container per workload: nothing duplicated by the restart
      expect(containersOf(created.id)).toHaveLength(3);

      await call(plane, 'DELETE', `/v1/environments/${name}`);
      await new Promise((r) => setTimeout(r, killAfterMs / 10));
      await stopControlPlane(plane, 'SIGKILL');
      plane = await startPlane(dataDir);
      const gone = await waitState(plane, name, ['destroyed']);
      expect(gone.state).toBe('destroyed');
      expect(labelledObjects().filter((o) => o.includes(created.id))).toEqual([]);
    });
  }
});
