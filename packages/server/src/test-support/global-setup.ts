/**
 * Vitest global setup: the real things the integration tests drive must be there — a running
 * Docker Engine, the Debian base image, the test image, and a PostgreSQL for the store tests.
 * Each step is a no-op when already done, so a warm machine pays well under a second.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../../..');
export const TESTKIT_IMAGE = 'mayfly-test/testkit:latest';

const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });

export default function setup(): void {
  run('bash', ['scripts/ensure-docker.sh']);
  run('bash', ['scripts/ensure-base-image.sh']);
  run('docker', ['build', '-q', '-t', TESTKIT_IMAGE, path.join(here, 'images/testkit')]);
  if (!process.env.MAYFLY_TEST_PG_URL && process.env.MAYFLY_SKIP_PG !== '1') {
    const out = run('bash', ['scripts/ensure-postgres.sh']).trim().split('\n');
    process.env.MAYFLY_TEST_PG_URL = out.at(-1);
  }
}
