/**
 * Composition root: config → store → runtime → controller → API + gateway on one listener.
 * The only module that picks a runtime driver.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { nanoid } from 'nanoid';
import { buildApi } from './api/app.js';
import { loadConfig, type ServerConfigInput } from './config/config.js';
import { EnvironmentService } from './controller/environment-service.js';
import { Reconciler } from './controller/reconciler.js';
import type { UrlScheme } from './controller/urls.js';
import { Gateway } from './gateway/gateway.js';
import { createLogger } from './observability/logger.js';
import { createMetrics } from './observability/metrics.js';
import { DockerRuntime } from './runtime/docker/docker-runtime.js';
import type { Runtime } from './runtime/runtime.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';

export const VERSION = '0.1.0';

export interface StartOptions extends ServerConfigInput {
  /** Replaces the Docker driver (tests of other drivers, or a Kubernetes runtime). */
  runtime?: Runtime;
  logDestination?: NodeJS.WritableStream;
}

export interface RunningServer {
  /** Base URL of the API. */
  url: string;
  /** Example of an environment URL, with the placeholders users substitute. */
  gatewayUrl: string;
  port: number;
  adminTokenFile: string | null;
  adminTokenCreated: boolean;
  store: Store;
  runtime: Runtime;
  environments: EnvironmentService;
  reconciler: Reconciler;
  close(): Promise<void>;
}

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const { runtime: injectedRuntime, logDestination, ...configInput } = options;
  const config = loadConfig(configInput);
  const logger = createLogger(config.logLevel, logDestination);
  await mkdir(config.dataDir, { recursive: true });
  const unlock = config.dbUrl ? () => {} : lockDataDir(config.dataDir);
  const store = await openStore({ url: config.dbUrl, dataDir: config.dataDir, logger }).catch((err) => {
    unlock();
    throw err;
  });
  const metrics = createMetrics(async () => {
    const counts: Record<string, number> = {};
    for (const env of await store.environments.list()) counts[env.state] = (counts[env.state] ?? 0) + 1;
    return counts;
  });
  const runtime =
    injectedRuntime ??
    new DockerRuntime({
      socketPath: config.dockerSocket,
      instance: store.instanceId,
      subnetPool: { base: config.dockerSubnetPool, size: config.dockerSubnetSize },
    });

  const { file: adminTokenFile, created: adminTokenCreated } = config.bootstrapAdminToken
    ? await bootstrapAdminToken(store, config.dataDir)
    : { file: null, created: false };

  const urls: UrlScheme = { scheme: config.publicScheme, baseDomain: config.baseDomain, port: config.port };
  // SQLite means one control plane on one machine: a stable owner lets a restarted process take
  // its own leases back at once instead of waiting for them to expire.
  const owner =
    config.replicaId ??
    (store.dialect === 'sqlite' ? `local@${os.hostname()}` : `${os.hostname()}-${nanoid(6)}`);
  const reconciler = new Reconciler({
    store,
    runtime,
    logger: logger.child({ component: 'controller' }),
    metrics,
    owner,
    leaseMs: config.leaseMs,
    intervalMs: config.reconcileIntervalMs,
    gcIntervalMs: config.gcIntervalMs,
  });
  const environments = new EnvironmentService({
    store,
    runtime,
    urls,
    onChange: (id) => reconciler.changed(id),
  });
  const gateway = new Gateway({ store, runtime, urls, logger: logger.child({ component: 'gateway' }) });

  const app = await buildApi({
    store,
    runtime,
    environments,
    metrics,
    logger,
    version: VERSION,
    serverFactory: (handler) => {
      const server = http.createServer((req, res) => {
        if (!gateway.handles(req)) return handler(req, res);
        gateway.handleRequest(req, res).catch((err) => {
          logger.error({ err }, 'gateway failed');
          if (!res.headersSent) res.writeHead(500).end();
        });
      });
      server.on('upgrade', (req, socket, head) => {
        if (!gateway.handles(req)) return socket.destroy();
        gateway.handleUpgrade(req, socket, head).catch(() => socket.destroy());
      });
      return server;
    },
  });
  await app.listen({ port: config.port, host: config.host });
  const port = (app.server.address() as AddressInfo).port;
  urls.port = config.publicPort ?? port;
  reconciler.start();

  const hostForUrl = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  logger.info({ port, dataDir: config.dataDir, store: store.dialect, runtime: runtime.name }, 'mayfly is up');
  return {
    url: `http://${hostForUrl}:${port}`,
    gatewayUrl: `${config.publicScheme}://<service>--<environment>.${config.baseDomain}:${urls.port}/`,
    port,
    adminTokenFile,
    adminTokenCreated,
    store,
    runtime,
    environments,
    reconciler,
    async close() {
      await reconciler.stop();
      gateway.close();
      await app.close();
      await store.close();
      unlock();
    },
  };
}

/**
 * The admin token file is what the CLI on this machine authenticates with. It is made on first
 * start, and again whenever it is missing (deleted, or a crash came between insert and write):
 * written to a temporary file and renamed, so it is never half there.
 */
async function bootstrapAdminToken(
  store: Store,
  dataDir: string,
): Promise<{ file: string; created: boolean }> {
  const file = path.join(dataDir, 'admin-token');
  if (existsSync(file)) return { file, created: false };
  const { token } = await store.tokens.create('admin', ['admin']);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${token}\n`, { mode: 0o600 });
  await rename(tmp, file);
  return { file, created: true };
}

/**
 * With SQLite, one server per data dir: two would share the stable lease owner and fight over
 * every environment. The lock is a pid file, so it also tells users which process to stop; a
 * dead owner's lock is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'server.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (holder && isAlive(holder)) {
        throw new Error(
          `another Mayfly server (pid ${holder}) is using ${dataDir}; stop it or use another --data dir`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock ${dataDir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
