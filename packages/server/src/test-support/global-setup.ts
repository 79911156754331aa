/**
 * Vitest global setup: the real things the integration tests drive must be there — the CLI bundle
 * built from the current sources, a running Docker Engine, the Debian base image, the container agent, the test image,
 * and a PostgreSQL for the store tests.
 * Each step is a no-op when already done, so a warm machine pays well under a second.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultAgentBinary } from '../config/config.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../../..');
export const TESTKIT_IMAGE = 'mayfly-test/testkit:latest';

/**
 * Every installation a test starts is named after this run (`instanceName`), so the leak check
 * counts only this run's objects, whatever else (a quick-start server, another run) shares the engine.
 */
export function testInstanceName(): string {
  const run = process.env.MAYFLY_TEST_RUN;
  if (!run) throw new Error('MAYFLY_TEST_RUN is not set: run the tests through vitest (global setup)');
  return run;
}

/** The container agent, which global setup builds: its absence is a broken setup, not a skip. */
export function requiredAgentBinary(): string {
  const binary = defaultAgentBinary();
  if (!binary) throw new Error('packages/agent/dist/mayfly-agent is missing: run scripts/ensure-agent.sh');
  return binary;
}

const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });

export default function setup(): void {
  process.env.MAYFLY_TEST_RUN ??= `test-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  // The tests run the CLI as users do, through bin/mayfly.js, which runs the bundle in
  // packages/cli/dist: rebuilt here when any source is newer, so a test never runs stale code.
  run(process.execPath, ['scripts/build.mjs', '--if-stale']);
  run('bash', ['scripts/ensure-docker.sh']);
  run('bash', ['scripts/ensure-base-image.sh']);
  run('bash', ['scripts/ensure-agent.sh']);
  run('docker', ['build', '-q', '-t', TESTKIT_IMAGE, path.join(here, 'images/testkit')]);
  if (!process.env.MAYFLY_TEST_PG_URL && process.env.MAYFLY_SKIP_PG !== '1') {
    const out = run('bash', ['scripts/ensure-postgres.sh']).trim().split('\n');
    process.env.MAYFLY_TEST_PG_URL = out.at(-1);
  }
}
