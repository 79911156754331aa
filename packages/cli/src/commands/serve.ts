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
}

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
    .action((options: ServeOptions, command: Command) => serve(options, command, deps));
}

async function serve(options: ServeOptions, command: Command, deps: ServeDeps): Promise<void> {
  const globals = globalOptions(command);
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw new UsageError(`invalid --port "${options.port}"`);
  const dataDir = options.data ?? mayflyHome();

  const { startServer } = await deps.loadServer();
  const server = await startServer({
    port,
    host: options.host,
    dataDir,
    baseDomain: options.baseDomain,
    ...(options.db === undefined ? {} : { dbUrl: options.db }),
  });

  if (globals.json) {
    const { url, gatewayUrl, adminTokenFile, adminTokenCreated } = server;
    printJson({ url, gatewayUrl, adminTokenFile, adminTokenCreated, dataDir });
  } else {
    printStdout(`Mayfly server listening on ${server.url}`);
    printStdout(`  gateway  ${server.gatewayUrl}`);
    printStdout(`  data     ${dataDir}`);
    if (server.adminTokenCreated && server.adminTokenFile) {
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
