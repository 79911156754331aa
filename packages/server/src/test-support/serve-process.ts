/**
 * A control plane in its own process, for tests that SIGKILL it: started with
 * `node --import tsx serve-process.ts <dataDir> <port> [dbUrl] [options as JSON]`, prints one JSON
 * line when it listens. Its installation is named after the test run (see `testInstanceName`).
 */
import { type StartOptions, startServer } from '../main.js';

const [dataDir, port, dbUrl, json] = process.argv.slice(2);
const extra = (json ? JSON.parse(json) : {}) as StartOptions;
const server = await startServer({
  dataDir,
  port: Number(port ?? 0),
  ...(dbUrl ? { dbUrl } : {}),
  reconcileIntervalMs: 200,
  gcIntervalMs: 1_000,
  leaseMs: 5_000,
  logLevel: 'warn',
  sandboxPool: { base: 0, code: 0 },
  sandboxPoolStartDelayMs: 0,
  ...(process.env.MAYFLY_TEST_RUN ? { instanceName: process.env.MAYFLY_TEST_RUN } : {}),
  ...extra,
});
process.stdout.write(
  `${JSON.stringify({ url: server.url, port: server.port, tokenFile: server.adminTokenFile, pid: process.pid })}\n`,
);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
