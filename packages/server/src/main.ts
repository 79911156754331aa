/**
 * Composition root: config → store → runtime → controller → API + gateway on one listener.
 * The only module that picks a runtime driver.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { nanoid } from 'nanoid';
import { FULL_ACCESS } from './access/access.js';
import { TokenService } from './access/token-service.js';
import { buildApi } from './api/app.js';
import type { ScopedRoute } from './api/auth.js';
import { SandboxTerminals } from './api/sandbox-terminal.js';
import { defaultAgentBinary, inCheckout, loadConfig, type ServerConfigInput } from './config/config.js';
import { BundleService } from './controller/bundle-service.js';
import { CapacityService } from './controller/capacity-service.js';
import { EnvironmentFeed } from './controller/environment-feed.js';
import { EnvironmentService } from './controller/environment-service.js';
import { PreviewController } from './controller/preview-controller.js';
import { PreviewService } from './controller/preview-service.js';
import { ProjectService } from './controller/project-service.js';
import { Reconciler } from './controller/reconciler.js';
import type { UrlScheme } from './controller/urls.js';
import { loadDashboardAssets } from './dashboard/dashboard-assets.js';
import { DashboardSessions } from './dashboard/dashboard-sessions.js';
import { lockDataDir, prepareDataDir } from './data-dir/data-dir.js';
import { buildE2bApi, e2bPathOf } from './e2b/e2b-api.js';
import { Gateway } from './gateway/gateway.js';
import type { ImageBuilder } from './images/image-builder.js';
import { createLogger } from './observability/logger.js';
import { createMetrics } from './observability/metrics.js';
import { DockerImageBuilder } from './runtime/docker/docker-image-builder.js';
import { DockerImagePublisher } from './runtime/docker/docker-image-publisher.js';
import { DockerRuntime } from './runtime/docker/docker-runtime.js';
import { DockerSandboxRuntime } from './runtime/docker/docker-sandbox-runtime.js';
import { KubernetesRuntime } from './runtime/kubernetes/kubernetes-runtime.js';
import { KubernetesSandboxRuntime } from './runtime/kubernetes/kubernetes-sandbox-runtime.js';
import type { Runtime } from './runtime/runtime.js';
import { SandboxService } from './sandbox/sandbox-service.js';
import { builtInTemplates, SandboxTemplates } from './sandbox/sandbox-templates.js';
import { SnapshotService } from './snapshots/snapshot-service.js';
import { Workspaces } from './sources/workspaces.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';
import { ForgeReporter } from './triggers/forge-reporter.js';
import { WebhookService } from './triggers/webhook-service.js';

export const VERSION = '0.1.0';

export interface StartOptions extends ServerConfigInput {
  /** Replaces the Docker driver (tests of other drivers, or a Kubernetes runtime). */
  runtime?: Runtime;
  /** Replaces the Docker Engine's builder (a builder that pushes to a registry, for Kubernetes). */
  images?: ImageBuilder;
  logDestination?: NodeJS.WritableStream;
  /** How reports to GitHub/GitLab are retried (tests make it quick). */
  forgeRetry?: { attempts?: number; baseDelayMs?: number; maxDelayMs?: number };
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
  images: ImageBuilder;
  environments: EnvironmentService;
  reconciler: Reconciler;
  previewController: PreviewController;
  projects: ProjectService;
  workspaces: Workspaces;
  gateway: Gateway;
  /** Sandboxes, when this server has the agent binary and the Docker Engine for them. */
  sandboxes: SandboxService | undefined;
  /** The API's routes with the token scope each needs (what `/openapi.json` must document). */
  routes: ScopedRoute[];
  close(): Promise<void>;
}

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const {
    runtime: injectedRuntime,
    images: injectedImages,
    logDestination,
    forgeRetry,
    ...configInput
  } = options;
  const config = loadConfig(configInput);
  const logger = createLogger(config.logLevel, logDestination);
  if (config.sandboxRuntime === 'kubernetes' && config.runtimeDriver !== 'kubernetes')
    throw new Error('sandboxes run on a cluster only with environments there: --runtime kubernetes');
  const agentBinary = config.agentBinary ?? defaultAgentBinary();
  if (agentBinary && !existsSync(agentBinary))
    throw new Error(`the container agent ${agentBinary} does not exist`);
  prepareDataDir(config.dataDir);
  // With SQLite, one server per data dir: two would share the stable lease owner and fight.
  const unlock = config.dbUrl ? () => {} : lockDataDir(config.dataDir);
  const store = await openStore({
    url: config.dbUrl,
    dataDir: config.dataDir,
    logger,
    ...(config.instanceName ? { instanceName: config.instanceName } : {}),
  }).catch((err) => {
    unlock();
    throw err;
  });
  // Read at every scrape (a public route): one grouped count, never the rows themselves.
  const metrics = createMetrics(async () => {
    const { destroyed: _gone, ...live } = await store.environments.countByState();
    return live as Record<string, number>;
  });
  const runtime =
    injectedRuntime ??
    (config.runtimeDriver === 'kubernetes'
      ? new KubernetesRuntime({
          ...(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {}),
          ...(config.kubeContext ? { context: config.kubeContext } : {}),
          instance: store.instanceId,
          ...(agentBinary ? { agentBinary } : {}),
          ...(config.dockerSocket ? { socketPath: config.dockerSocket } : {}),
          publisher: new DockerImagePublisher({
            ...(config.dockerSocket ? { socketPath: config.dockerSocket } : {}),
            ...(config.registry ? { registry: config.registry } : {}),
          }),
          cluster: {
            gatewayPeers: config.kubeGatewayFrom.map((cidr) => ({ ipBlock: { cidr } })),
            runtimeClasses: config.kubeRuntimeClasses,
            ...(config.kubeLocalVolumes ? { localVolumes: { directory: config.kubeLocalVolumes } } : {}),
            ...(config.kubeStorageClass ? { storageClassName: config.kubeStorageClass } : {}),
          },
        })
      : undefined) ??
    new DockerRuntime({
      socketPath: config.dockerSocket,
      instance: store.instanceId,
      subnetPool: { base: config.dockerSubnetPool, size: config.dockerSubnetSize },
      containerLogLimits: { maxSizeBytes: Math.ceil(config.containerLogMaxBytes / 3), maxFiles: 3 },
      ...(agentBinary ? { startGate: { agentBinary, dir: path.join(config.dataDir, 'gates') } } : {}),
    });
  const images =
    injectedImages ??
    new DockerImageBuilder({
      socketPath: config.dockerSocket,
      instance: store.instanceId,
    });
  const workspaces = new Workspaces({
    root: path.join(config.dataDir, 'work'),
    limits: {
      maxBytes: config.bundleMaxBytes,
      maxFiles: config.bundleMaxFiles,
      maxPathLength: 1024,
      maxDepth: 64,
    },
    bundleTtlMs: config.bundleTtlMs,
  });

  const tokens = new TokenService({ store });
  // The operator's own token (several replicas share it), else one made for this machine's CLI.
  const adminTokenFile =
    config.adminTokenFile ?? (config.bootstrapAdminToken ? path.join(config.dataDir, 'admin-token') : null);
  const adminTokenCreated = await (config.adminTokenFile
    ? tokens.adoptAdmin(config.adminTokenFile)
    : adminTokenFile
      ? tokens.bootstrapAdmin(adminTokenFile)
      : Promise.resolve(false)
  ).catch(async (err) => {
    // Nothing else has started yet: a server that cannot start leaves its data dir free.
    await store.close();
    unlock();
    throw err;
  });

  const urls: UrlScheme = { scheme: config.publicScheme, baseDomain: config.baseDomain, port: config.port };
  // SQLite means one control plane on one machine: a stable owner lets a restarted process take
  // its own leases back at once instead of waiting for them to expire.
  const owner =
    config.replicaId ??
    (store.dialect === 'sqlite' ? `local@${os.hostname()}` : `${os.hostname()}-${nanoid(6)}`);
  const policy = {
    allowedHostPaths: config.allowHostPaths,
    protectedPaths: [
      config.dockerSocket ?? '/var/run/docker.sock',
      '/var/run/docker.sock',
      '/run/docker.sock',
      '/run/containerd/containerd.sock',
    ],
  };
  // Sandboxes need the agent binary and a Docker Engine of their own (not a test's stand-in).
  const sandboxRuntime = (agentBinary: string) =>
    config.sandboxRuntime === 'kubernetes'
      ? new KubernetesSandboxRuntime({
          ...(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {}),
          ...(config.kubeContext ? { context: config.kubeContext } : {}),
          instance: store.instanceId,
          agentBinary,
          ...(config.dockerSocket ? { socketPath: config.dockerSocket } : {}),
          publisher: new DockerImagePublisher({
            ...(config.dockerSocket ? { socketPath: config.dockerSocket } : {}),
            ...(config.registry ? { registry: config.registry } : {}),
          }),
          runtimeClasses: config.kubeRuntimeClasses,
          blockedOut: config.kubeSandboxBlocked,
          skipPolicyCheck: config.kubeSkipPolicyCheck,
        })
      : new DockerSandboxRuntime({
          ...(config.dockerSocket ? { socketPath: config.dockerSocket } : {}),
          instance: store.instanceId,
          agentBinary,
          gvisorRuntime: config.sandboxGvisorRuntime,
          // Environments' networks: no sandbox reaches them, whatever its allow-list says.
          blockedOut: [config.dockerSubnetPool],
        });
  const sandboxes =
    agentBinary && !injectedRuntime
      ? new SandboxService({
          store,
          runtime: sandboxRuntime(agentBinary),
          templates: new SandboxTemplates(
            builtInTemplates(inCheckout('packages/server/sandbox-templates') ?? ''),
            images,
            store,
            workspaces,
          ),
          dataDir: config.dataDir,
          urls,
          logger: logger.child({ component: 'sandboxes' }),
          poolSizes: config.sandboxPool,
          poolMemoryBytes: config.sandboxPoolMemoryBytes,
          poolStartDelayMs: config.sandboxPoolStartDelayMs,
          permittedPrivateRanges: config.sandboxAllowPrivate,
          maxSandboxes: config.maxSandboxes,
          replica: owner,
          replicaTtlMs: config.leaseMs,
        })
      : undefined;
  await sandboxes?.start();

  const gateway = new Gateway({
    store,
    runtime,
    urls,
    logger: logger.child({ component: 'gateway' }),
    cacheMs: config.gatewayCacheMs,
    negativeCacheMs: config.gatewayNegativeCacheMs,
    cacheEntries: config.gatewayCacheEntries,
    wake: async (envId) => {
      // A request may wake a preview, but not past its project's maxEnvironments.
      await previewController.makeRoomToWake(envId);
      return environments.wake(envId, FULL_ACCESS, 'woken by a request');
    },
    onActivity: (envId) => environments.recordActivity(envId),
    ...(sandboxes ? { sandboxes } : {}),
  });
  const planPolicy = {
    ...policy,
    defaultMemoryBytes: config.defaultMemoryBytes,
    defaultPids: config.defaultPids,
  };
  const snapshots: SnapshotService = new SnapshotService({
    store,
    runtime,
    logger: logger.child({ component: 'snapshots' }),
    owner,
    budgetBytes: config.snapshotBudgetBytes,
    manualPerProject: config.snapshotsPerProject,
    seedsPerProject: config.seedSnapshotsPerProject,
    // The reconciler's work lease: a snapshot by hand stops the environment's writers.
    exclusively: <T>(envId: string, work: (signal: AbortSignal) => Promise<T>): Promise<T | 'busy'> =>
      reconciler.exclusively(envId, work),
  });
  const reconciler: Reconciler = new Reconciler({
    store,
    runtime,
    snapshots,
    images,
    workspaces,
    policy,
    planner: { urls, workspaces, policy: planPolicy },
    logger: logger.child({ component: 'controller' }),
    metrics,
    owner,
    leaseMs: config.leaseMs,
    intervalMs: config.reconcileIntervalMs,
    gcIntervalMs: config.gcIntervalMs,
    maxAttempts: config.maxAttempts,
    bringUpTimeoutMs: config.bringUpTimeoutMs,
    runtimeUnavailableFailAfterMs: config.runtimeUnavailableFailAfterMs,
    desiredPollMs: config.desiredPollMs,
    imageBudgetBytes: config.imageBudgetBytes,
    imageGcGraceMs: config.imageGcGraceMs,
    destroyedRetentionMs: config.destroyedRetentionMs,
    maxEventsPerEnv: config.maxEventsPerEnv,
    onDestroyed: (env) => gateway.forget(env.name),
    onSettled: (env) => {
      gateway.forget(env.name);
      previewController.kick();
    },
  });
  const environments = new EnvironmentService({
    store,
    runtime,
    urls,
    workspaces,
    policy: planPolicy,
    defaultLogTail: config.logTailDefault,
    limits: { maxEnvironments: config.maxEnvironments, maxLogStreams: config.maxLogStreams },
    onChange: (id) => reconciler.changed(id),
  });
  const previewController: PreviewController = new PreviewController({
    store,
    environments,
    reporter: new ForgeReporter(forgeRetry ? { retry: forgeRetry } : {}),
    urls,
    logger: logger.child({ component: 'previews' }),
    owner,
    leaseMs: config.leaseMs,
    intervalMs: config.reconcileIntervalMs,
    tmpDir: path.join(config.dataDir, 'work', 'git'),
    dataDir: config.dataDir,
  });
  const previews = new PreviewService({ store, onChange: () => previewController.kick() });
  const projects = new ProjectService({
    store,
    destroyEnvironment: (id) => environments.destroy(id),
    onChange: () => previewController.kick(),
  });
  const webhooks = new WebhookService({ store, previews });
  const bundles = new BundleService({
    workspaces,
    maxStaged: config.bundleMaxStaged,
    bundleTtlMs: config.bundleTtlMs,
  });

  // E2B's API beside Mayfly's, on the same port (where sandboxes can run at all).
  const e2b = sandboxes
    ? await buildE2bApi({ sandboxes, tokens, store, logger, domain: config.baseDomain })
    : undefined;
  const environmentFeed = new EnvironmentFeed({
    environments,
    onError: (err) => logger.warn({ err }, 'reading environments for watchers failed'),
  });
  const dashboardDist = inCheckout('packages/dashboard/dist');
  const capacity = new CapacityService({
    store,
    images,
    ...(sandboxes ? { sandboxes } : {}),
    limits: {
      maxEnvironments: config.maxEnvironments,
      maxSandboxes: config.maxSandboxes,
      imageBudgetBytes: config.imageBudgetBytes,
    },
  });
  const terminals = sandboxes
    ? new SandboxTerminals({
        sandboxes,
        logger: logger.child({ component: 'terminals' }),
        maxTerminals: config.maxTerminals,
      })
    : undefined;
  const { app, routes } = await buildApi({
    environments,
    snapshots,
    capacity,
    environmentFeed,
    dashboard: {
      sessions: new DashboardSessions({ store, secureCookie: config.publicScheme === 'https' }),
      assets: dashboardDist ? await loadDashboardAssets(dashboardDist) : null,
    },
    ...(sandboxes ? { sandboxes } : {}),
    ...(terminals ? { terminals } : {}),
    tokens,
    bundles,
    projects,
    previews,
    webhooks,
    metrics,
    logger,
    version: VERSION,
    serverFactory: (handler) => {
      const server = http.createServer((req, res) => {
        const e2bPath = e2b ? e2bPathOf(req.url) : null;
        if (e2b && e2bPath && !gateway.handles(req)) {
          req.url = e2bPath;
          return e2b.routing(req, res);
        }
        if (!gateway.handles(req)) return handler(req, res);
        gateway.handleRequest(req, res).catch((err) => {
          logger.error({ err }, 'gateway failed');
          if (!res.headersSent) res.writeHead(500).end();
        });
      });
      server.on('upgrade', (req, socket, head) => {
        // Node takes its own error listener off an upgraded socket: a client resetting it while
        // it is answered must not take the server down.
        socket.on('error', () => {});
        if (!gateway.handles(req)) {
          if (!terminals?.handles(req)) return socket.destroy();
          return void terminals.handleUpgrade(req, socket, head).catch(() => socket.destroy());
        }
        gateway.handleUpgrade(req, socket, head).catch(() => socket.destroy());
      });
      return server;
    },
  });
  await app.listen({ port: config.port, host: config.host });
  const port = (app.server.address() as AddressInfo).port;
  urls.port = config.publicPort ?? port;
  reconciler.start();
  previewController.start();

  const hostForUrl = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  if (!agentBinary && !injectedRuntime)
    logger.warn(
      'no container agent (packages/agent/dist/mayfly-agent; run scripts/ensure-agent.sh, or set MAYFLY_AGENT_BINARY): services are started only once what they wait for is ready',
    );
  logger.info({ port, dataDir: config.dataDir, store: store.dialect, runtime: runtime.name }, 'mayfly is up');
  return {
    url: `http://${hostForUrl}:${port}`,
    gatewayUrl: `${config.publicScheme}://<service>--<environment>.${config.baseDomain}:${urls.port}/`,
    port,
    adminTokenFile,
    adminTokenCreated,
    store,
    runtime,
    images,
    environments,
    reconciler,
    previewController,
    projects,
    workspaces,
    gateway,
    sandboxes,
    routes,
    async close() {
      // Work in flight is aborted; open streams and WebSockets are cut rather than waited for.
      await previewController.stop();
      await terminals?.close();
      await sandboxes?.stop();
      await reconciler.stop();
      gateway.close();
      environmentFeed.close();
      await e2b?.close();
      await app.close();
      await store.close();
      unlock();
    },
  };
}
