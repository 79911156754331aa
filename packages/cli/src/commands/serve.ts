import { isAbsolute } from 'node:path';
import { EGRESS_CIDR } from '@mayfly/contract';
import type { Command } from 'commander';
import { UsageError } from '../cli-error.js';
import { mayflyHome } from '../connection.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

/** What `startServer` of `@mayfly/server` accepts. */
export interface StartServerOptions {
  port?: number;
  host?: string;
  dataDir?: string;
  dbUrl?: string;
  baseDomain?: string;
  allowHostPaths?: string[];
  defaultMemoryBytes?: string;
  defaultPids?: number;
  instanceName?: string;
  sandboxPool?: Record<string, number>;
  sandboxPoolMemoryBytes?: string;
  sandboxGvisorRuntime?: string;
  sandboxAllowPrivate?: string[];
  maxSandboxes?: number;
  runtimeDriver?: 'docker' | 'kubernetes';
  kubeconfig?: string;
  kubeContext?: string;
  registry?: string;
  kubeLocalVolumes?: string;
  kubeStorageClass?: string;
  kubeGatewayFrom?: string[];
  kubeRuntimeClasses?: { gvisor?: string };
  sandboxRuntime?: 'docker' | 'kubernetes';
  kubeSandboxBlocked?: string[];
  kubeSkipPolicyCheck?: boolean;
  adminTokenFile?: string;
}

/** What `startServer` of `@mayfly/server` returns. */
export interface RunningServer {
  url: string;
  gatewayUrl: string;
  adminTokenFile: string | null;
  adminTokenCreated: boolean;
  close(): Promise<void>;
}

/** The part of `@mayfly/server` the CLI uses. */
export interface ServerModule {
  startServer(options: StartServerOptions): Promise<RunningServer>;
}

interface ServeOptions {
  port: string;
  host: string;
  data?: string;
  db?: string;
  baseDomain: string;
  allowHostPath: string[];
  defaultMemory?: string;
  defaultPids?: string;
  instanceName?: string;
  sandboxPool: string[];
  sandboxPoolMemory?: string;
  sandboxGvisorRuntime?: string;
  sandboxAllowPrivate: string[];
  maxSandboxes?: string;
  runtime: string;
  kubeconfig?: string;
  context?: string;
  registry?: string;
  kubeLocalVolumes?: string;
  kubeStorageClass?: string;
  kubeGatewayFrom: string[];
  kubeRuntimeClass: string[];
  sandboxRuntime: string;
  kubeSandboxBlocked: string[];
  kubeSkipPolicyCheck?: boolean;
  adminTokenFile?: string;
}

/** A Docker Engine runtime's name, as in daemon.json (the server's config checks it too). */
const RUNTIME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Where to find the server; replaced in tests. */
export interface ServeDeps {
  loadServer: () => Promise<ServerModule>;
}

const defaultDeps: ServeDeps = {
  // Imported on demand: the server and its native modules stay out of every other command's startup.
  loadServer: () => import('@mayfly/server'),
};

/** `mayfly serve`: run the control plane in the foreground. */
export function registerServe(program: Command, deps: ServeDeps = defaultDeps): void {
  program
    .command('serve')
    .description('run the Mayfly server (API, controller, gateway) in the foreground')
    .option('--port <port>', 'port of the API', '7070')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--data <dir>', 'data directory (default: $MAYFLY_HOME, else ~/.mayfly)')
    .option('--db <url>', 'database URL, e.g. postgres://… (default: SQLite in the data directory)')
    .option('--base-domain <domain>', 'domain of environment URLs: <service>--<env>.<domain>', 'localhost')
    .option(
      '--allow-host-path <dir>',
      'a host directory templates may bind or read besides their own uploaded folder (repeatable; a socket only by its own path)',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--default-memory <size>',
      'memory limit of every container whose template sets none (default: 1g)',
    )
    .option('--default-pids <n>', 'pids limit of every container whose template sets none (default: 1024)')
    .option(
      '--instance-name <name>',
      'names a new installation: runtime objects are labelled mayfly.instance=<name>-<random>',
    )
    .option(
      '--sandbox-pool <template=n>',
      'sandboxes of a template kept ready so a create only claims one (repeatable; default: base=2, code=2; 0 turns it off)',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--sandbox-pool-memory <size>',
      "the warm pool's sandboxes' memory limits add up to at most this (default: 4g)",
    )
    .option(
      '--sandbox-allow-private <cidr>',
      'a private address range sandboxes may list in --allow-out (repeatable; default: none, so 0.0.0.0/0 is the public internet only)',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--sandbox-gvisor-runtime <name>',
      "the Docker Engine's runtime that runs gvisor sandbox templates (default: runsc)",
    )
    .option('--max-sandboxes <n>', 'sandboxes running or paused at once; one more is refused (default: 250)')
    .option('--runtime <name>', 'where environments run: docker or kubernetes', 'docker')
    .option(
      '--kubeconfig <file>',
      'the cluster (--runtime kubernetes; default: in-cluster config, else ~/.kube/config)',
    )
    .option('--context <name>', 'a context of the kubeconfig other than its current one')
    .option('--registry <host:port>', 'registry the cluster pulls from: images are pushed there')
    .option(
      '--kube-local-volumes <dir>',
      'a cluster without a storage provisioner: named volumes are directories under <dir> on the node',
    )
    .option(
      '--kube-storage-class <name>',
      "the StorageClass of environments' volumes (default: the cluster's default); where a VolumeSnapshotClass has its driver, seeds' snapshots are the storage's",
    )
    .option(
      '--kube-gateway-from <cidr>',
      "where the gateway's connections come from, let in by every environment's NetworkPolicy (repeatable)",
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--kube-runtime-class <isolation=name>',
      'the RuntimeClass that runs an isolation class, e.g. gvisor=gvisor (repeatable; none: such environments are refused)',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--sandbox-runtime <name>',
      "where sandboxes run: docker, or kubernetes (with --runtime kubernetes; the cluster's network plugin must enforce NetworkPolicies)",
      'docker',
    )
    .option(
      '--kube-sandbox-blocked <cidr>',
      "a range no sandbox on the cluster reaches whatever --sandbox-allow-private permits: the cluster's pod and service ranges (repeatable)",
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option(
      '--kube-skip-policy-check',
      'make sandboxes on the cluster without first checking that its network plugin enforces NetworkPolicies (on a cluster that does not, sandboxes reach its network)',
    )
    .option(
      '--admin-token-file <file>',
      'an admin token you made (mfy_ and 43 base64url characters), shared by replicas, instead of a generated one',
    )
    .action((options: ServeOptions, command: Command) => serve(options, command, deps));
}

async function serve(options: ServeOptions, command: Command, deps: ServeDeps): Promise<void> {
  const globals = globalOptions(command);
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw new UsageError(`invalid --port "${options.port}"`);
  const dataDir = options.data ?? mayflyHome();
  for (const dir of options.allowHostPath) {
    if (!isAbsolute(dir)) throw new UsageError(`invalid --allow-host-path "${dir}": give an absolute path`);
  }
  const pids = options.defaultPids === undefined ? undefined : Number(options.defaultPids);
  if (pids !== undefined && !(Number.isInteger(pids) && pids > 0)) {
    throw new UsageError(`invalid --default-pids "${options.defaultPids}": expected a whole number above 0`);
  }
  const maxSandboxes = options.maxSandboxes === undefined ? undefined : Number(options.maxSandboxes);
  if (
    maxSandboxes !== undefined &&
    !(Number.isInteger(maxSandboxes) && maxSandboxes > 0 && maxSandboxes <= 10_000)
  ) {
    throw new UsageError(
      `invalid --max-sandboxes "${options.maxSandboxes}": expected a whole number from 1 to 10000`,
    );
  }
  for (const cidr of options.sandboxAllowPrivate) {
    if (!(EGRESS_CIDR.test(cidr) && cidr.includes('/')))
      throw new UsageError(`invalid --sandbox-allow-private "${cidr}"`, 'an IPv4 CIDR such as 10.20.0.0/16');
  }
  if (options.sandboxGvisorRuntime !== undefined && !RUNTIME_NAME.test(options.sandboxGvisorRuntime))
    throw new UsageError(
      `invalid --sandbox-gvisor-runtime "${options.sandboxGvisorRuntime}"`,
      'a runtime name from daemon.json: letters, digits, ".", "_" and "-"',
    );

  if (options.runtime !== 'docker' && options.runtime !== 'kubernetes')
    throw new UsageError(`invalid --runtime "${options.runtime}"`, 'docker or kubernetes');
  if (options.runtime === 'docker') {
    for (const [flag, value] of [
      ['--kubeconfig', options.kubeconfig],
      ['--context', options.context],
      ['--registry', options.registry],
      ['--kube-local-volumes', options.kubeLocalVolumes],
      ['--kube-storage-class', options.kubeStorageClass],
    ] as const) {
      if (value !== undefined) throw new UsageError(`${flag} needs --runtime kubernetes`);
    }
  }
  if (options.registry !== undefined && !/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(options.registry))
    throw new UsageError(
      `invalid --registry "${options.registry}"`,
      'a registry as HOST:PORT, such as 127.0.0.1:5000',
    );
  for (const cidr of options.kubeGatewayFrom) {
    if (!(EGRESS_CIDR.test(cidr) && cidr.includes('/')))
      throw new UsageError(`invalid --kube-gateway-from "${cidr}"`, 'an IPv4 CIDR such as 10.245.0.1/32');
  }
  const runtimeClasses: { gvisor?: string } = {};
  for (const entry of options.kubeRuntimeClass) {
    const match = /^(gvisor)=([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)$/.exec(entry);
    if (!match)
      throw new UsageError(
        `invalid --kube-runtime-class "${entry}"`,
        'ISOLATION=NAME, such as gvisor=gvisor (the isolation classes a cluster maps: gvisor)',
      );
    runtimeClasses.gvisor = match[2];
  }
  if (options.kubeRuntimeClass.length > 0 && options.runtime !== 'kubernetes')
    throw new UsageError('--kube-runtime-class needs --runtime kubernetes');
  if (options.sandboxRuntime !== 'docker' && options.sandboxRuntime !== 'kubernetes')
    throw new UsageError(`invalid --sandbox-runtime "${options.sandboxRuntime}"`, 'docker or kubernetes');
  if (options.sandboxRuntime === 'kubernetes' && options.runtime !== 'kubernetes')
    throw new UsageError('--sandbox-runtime kubernetes needs --runtime kubernetes');
  for (const cidr of options.kubeSandboxBlocked) {
    if (!(EGRESS_CIDR.test(cidr) && cidr.includes('/')))
      throw new UsageError(`invalid --kube-sandbox-blocked "${cidr}"`, 'an IPv4 CIDR such as 10.244.0.0/16');
  }
  if (options.kubeSandboxBlocked.length > 0 && options.sandboxRuntime !== 'kubernetes')
    throw new UsageError('--kube-sandbox-blocked needs --sandbox-runtime kubernetes');
  if (options.kubeSkipPolicyCheck && options.sandboxRuntime !== 'kubernetes')
    throw new UsageError('--kube-skip-policy-check needs --sandbox-runtime kubernetes');
  // A permitted private range would hold the cluster's own: say which ranges stay shut.
  if (
    options.sandboxRuntime === 'kubernetes' &&
    options.sandboxAllowPrivate.length > 0 &&
    options.kubeSandboxBlocked.length === 0
  )
    throw new UsageError(
      '--sandbox-allow-private with --sandbox-runtime kubernetes needs --kube-sandbox-blocked',
      "give the cluster's pod and service ranges, which no sandbox may reach",
    );
  if (options.kubeLocalVolumes !== undefined && !isAbsolute(options.kubeLocalVolumes))
    throw new UsageError(`invalid --kube-local-volumes "${options.kubeLocalVolumes}": give an absolute path`);
  if (options.kubeStorageClass !== undefined) {
    if (options.kubeLocalVolumes !== undefined)
      throw new UsageError(
        `invalid --kube-storage-class "${options.kubeStorageClass}" with --kube-local-volumes`,
        'local volumes are node directories of no storage class: give one of the two',
      );
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(options.kubeStorageClass))
      throw new UsageError(
        `invalid --kube-storage-class "${options.kubeStorageClass}"`,
        'a StorageClass name',
      );
  }

  if (options.adminTokenFile !== undefined && !isAbsolute(options.adminTokenFile))
    throw new UsageError(`invalid --admin-token-file "${options.adminTokenFile}": give an absolute path`);

  const pool: Record<string, number> = {};
  for (const entry of options.sandboxPool) {
    const match = /^([a-z0-9][a-z0-9-]{0,62})=(\d{1,3})$/.exec(entry);
    if (!match) throw new UsageError(`invalid --sandbox-pool "${entry}"`, 'use TEMPLATE=N, such as base=4');
    pool[match[1]!] = Number(match[2]);
  }
  for (const [flag, size] of [
    ['--default-memory', options.defaultMemory],
    ['--sandbox-pool-memory', options.sandboxPoolMemory],
  ] as const) {
    if (size !== undefined && !/^\d+(\.\d+)?\s*([kmgt]i?b?|b)?$/i.test(size))
      throw new UsageError(`invalid ${flag} "${size}"`, 'use a size such as 512m or 2g');
  }

  const { startServer } = await deps.loadServer();
  const server = await startServer({
    port,
    host: options.host,
    dataDir,
    baseDomain: options.baseDomain,
    ...(options.db === undefined ? {} : { dbUrl: options.db }),
    allowHostPaths: options.allowHostPath,
    ...(options.defaultMemory === undefined ? {} : { defaultMemoryBytes: options.defaultMemory }),
    ...(pids === undefined ? {} : { defaultPids: pids }),
    ...(options.instanceName === undefined ? {} : { instanceName: options.instanceName }),
    sandboxPool: pool,
    ...(options.sandboxPoolMemory === undefined ? {} : { sandboxPoolMemoryBytes: options.sandboxPoolMemory }),
    ...(options.sandboxGvisorRuntime === undefined
      ? {}
      : { sandboxGvisorRuntime: options.sandboxGvisorRuntime }),
    sandboxAllowPrivate: options.sandboxAllowPrivate,
    ...(maxSandboxes === undefined ? {} : { maxSandboxes }),
    runtimeDriver: options.runtime,
    ...(options.kubeconfig === undefined ? {} : { kubeconfig: options.kubeconfig }),
    ...(options.context === undefined ? {} : { kubeContext: options.context }),
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    ...(options.kubeLocalVolumes === undefined ? {} : { kubeLocalVolumes: options.kubeLocalVolumes }),
    ...(options.kubeStorageClass === undefined ? {} : { kubeStorageClass: options.kubeStorageClass }),
    kubeGatewayFrom: options.kubeGatewayFrom,
    kubeRuntimeClasses: runtimeClasses,
    sandboxRuntime: options.sandboxRuntime,
    kubeSandboxBlocked: options.kubeSandboxBlocked,
    ...(options.kubeSkipPolicyCheck ? { kubeSkipPolicyCheck: true } : {}),
    ...(options.adminTokenFile === undefined ? {} : { adminTokenFile: options.adminTokenFile }),
  });

  if (globals.json) {
    const { url, gatewayUrl, adminTokenFile, adminTokenCreated } = server;
    printJson({ url, gatewayUrl, adminTokenFile, adminTokenCreated, dataDir });
  } else {
    printStdout(`Mayfly server listening on ${server.url}`);
    printStdout(`  gateway  ${server.gatewayUrl}`);
    printStdout(`  data     ${dataDir}`);
    if (server.adminTokenCreated && server.adminTokenFile && options.adminTokenFile === undefined) {
      printStdout(`  admin token written to ${server.adminTokenFile}`);
      printStdout('  (the CLI on this machine uses it; other clients: export MAYFLY_TOKEN=$(cat that file))');
    }
    printStdout('Press Ctrl-C to stop.');
  }

  await new Promise<void>((resolve, reject) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        printStderr(`received ${signal} again: exiting without waiting`);
        process.exit(1);
      }
      stopping = true;
      printStderr(`received ${signal}: stopping`);
      server.close().then(() => {
        process.removeListener('SIGINT', stop);
        process.removeListener('SIGTERM', stop);
        printStderr('stopped');
        resolve();
      }, reject);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
