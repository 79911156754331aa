/**
 * A control plane in its own process, for tests that SIGKILL it: started with
 * `node --import tsx serve-process.ts <dataDir> <port> [dbUrl]`, prints one JSON line when it listens.
 */
import { startServer } from '../main.js';

const [dataDir, port, dbUrl] = process.argv.slice(2);
const server = await startServer({
  dataDir,
  port: Number(port ?? 0),
  ...(dbUrl ? { dbUrl } : {}),
  reconcileIntervalMs: 200,
  gcIntervalMs: 1_000,
  leaseMs: 5_000,
  logLevel: 'warn',
});
process.stdout.write(
  `${JSON.stringify({ url: server.url, port: server.port, tokenFile: server.adminTokenFile })}\n`,
);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
