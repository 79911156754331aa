import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MayflyClient } from '@mayfly/sdk';
import { CliError } from './cli-error.js';
import { nodeFetch } from './node-fetch.js';

/** This CLI's own executable, which the background server is started with. */
export const CLI_BIN = fileURLToPath(new URL('../bin/mayfly.js', import.meta.url));

/** Options of {@link startLocalServer}. */
export interface StartLocalServerOptions {
  /** Where the server must answer, e.g. `http://127.0.0.1:7070`; its port is passed to `serve`. */
  url: string;
  /** Passed as `--data`; `server.log` is written there. */
  dataDir: string;
  /** The CLI entry point to run `serve` with; default this CLI's bin. */
  bin?: string;
  /** How long to wait for /healthz; default 30 s. */
  timeoutMs?: number;
}

/** Answers whether a Mayfly server responds on `url` within `timeoutMs`. */
export async function isServerUp(url: string, timeoutMs = 2000): Promise<boolean> {
  try {
    const health = await new MayflyClient({ baseUrl: url, fetch: nodeFetch }).health({
      signal: AbortSignal.timeout(timeoutMs),
    });
    return health.ok;
  } catch {
    return false;
  }
}

/**
 * Starts `mayfly serve` as a detached background process that outlives this command, with its
 * output in `<dataDir>/server.log`, and waits until it answers on /healthz.
 * @returns the log file's path and the server's process id.
 */
export async function startLocalServer(
  options: StartLocalServerOptions,
): Promise<{ logFile: string; pid: number }> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  mkdirSync(options.dataDir, { recursive: true });
  const logFile = join(options.dataDir, 'server.log');
  const port = new URL(options.url).port || '7070';
  const log = openSync(logFile, 'a');
  let exit: string | null = null;
  let pid = 0;
  try {
    const child = spawn(
      process.execPath,
      [options.bin ?? CLI_BIN, 'serve', '--port', port, '--data', options.dataDir],
      { detached: true, stdio: ['ignore', log, log] },
    );
    child.once('exit', (code, signal) => {
      exit = signal ? `killed by ${signal}` : `exit code ${code}`;
    });
    child.once('error', (err) => {
      exit = err.message;
    });
    child.unref();
    pid = child.pid ?? 0;
  } finally {
    closeSync(log);
  }

  const deadline = Date.now() + timeoutMs;
  let exitSeenAt: number | null = null;
  while (Date.now() < deadline) {
    if (await isServerUp(options.url, 1000)) return { logFile, pid };
    if (exit !== null) {
      exitSeenAt ??= Date.now();
      // Another `mayfly` may have started a server at the same moment: ours then exits on
      // EADDRINUSE while theirs comes up. Give that one a few seconds before giving up.
      if (Date.now() - exitSeenAt > 5000) {
        throw new CliError(`the local Mayfly server exited during startup (${exit})`, 1, {
          hint: `see ${logFile}`,
        });
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new CliError(
    `the local Mayfly server did not answer on ${options.url} within ${timeoutMs / 1000}s`,
    1,
    {
      hint: `see ${logFile}`,
    },
  );
}
