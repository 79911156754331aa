/**
 * Crash safety: the control plane is SIGKILLed at several moments during create and during
 * destroy; a fresh process on the same data dir must converge every environment and leave no orphan.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { labelledObjects } from '../test-support/leak-check.js';

const serveScript = fileURLToPath(new URL('../test-support/serve-process.ts', import.meta.url));
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

interface Plane {
  child: ChildProcess;
  url: string;
  token: string;
}

async function startPlane(dataDir: string): Promise<Plane> {
  const child = spawn(process.execPath, ['--import', 'tsx', serveScript, dataDir, '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('exit', (code) => reject(new Error(`control plane exited with ${code}`)));
  });
  const info = JSON.parse(line) as { url: string; tokenFile: string };
  return { child, url: info.url, token: (await readFile(info.tokenFile, 'utf8')).trim() };
}

function kill(plane: Plane): Promise<void> {
  return new Promise((resolve) => {
    plane.child.once('exit', () => resolve());
    plane.child.kill('SIGKILL');
  });
}

async function call<T>(plane: Plane, method: string, urlPath: string, body?: unknown): Promise<T> {
  const res = await fetch(`${plane.url}${urlPath}`, {
    method,
    headers: {
      authorization: `Bearer ${plane.token}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  return (await res.json()) as T;
}

async function waitState(
  plane: Plane,
  name: string,
  states: string[],
  timeoutMs = 90_000,
): Promise<Environment> {
  const deadline = Date.now() + timeoutMs;
  let env: Environment | null = null;
  while (Date.now() < deadline) {
    env = await call<Environment>(plane, 'GET', `/v1/environments/${name}`);
    if (states.includes(env.state)) return env;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${name} stuck: ${JSON.stringify(env)}`);
}

const containersOf = (envId: string) =>
  execFileSync('docker', ['ps', '-a', '-q', '--filter', `label=mayfly.env=${envId}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);

describe('crash safety (SIGKILL of the control plane)', () => {
  let dataDir: string;
  let plane: Plane;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-crash-'));
    plane = await startPlane(dataDir);
  });
  afterAll(async () => {
    plane.child.kill('SIGTERM');
    await new Promise((r) => plane.child.once('exit', r));
    await rm(dataDir, { recursive: true, force: true });
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
      await kill(plane);
      plane = await startPlane(dataDir);

      const ready = await waitState(plane, name, ['ready', 'failed']);
      expect(ready.failure).toBeNull();
      expect(ready.state).toBe('ready');
      // exactly one container per workload: nothing duplicated by the restart
      expect(containersOf(created.id)).toHaveLength(3);

      await call(plane, 'DELETE', `/v1/environments/${name}`);
      await new Promise((r) => setTimeout(r, killAfterMs / 10));
      await kill(plane);
      plane = await startPlane(dataDir);
      const gone = await waitState(plane, name, ['destroyed']);
      expect(gone.state).toBe('destroyed');
      expect(labelledObjects().filter((o) => o.includes(created.id))).toEqual([]);
    });
  }
});
