import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { MayflyClient } from '@mayfly/sdk';
import { isServerUp, startLocalServer } from './auto-start.js';
import { UsageError } from './cli-error.js';
import { nodeFetch } from './node-fetch.js';
import { printStderr } from './output.js';

/**
 * Where the local server listens when neither `--server` nor `MAYFLY_URL` says otherwise:
 * port 7070, or `MAYFLY_PORT` when several local servers (say, one per data dir) must coexist.
 */
export function defaultServerUrl(env: Env = process.env): string {
  return `http://127.0.0.1:${env.MAYFLY_PORT || '7070'}`;
}

/** The program-wide options, available to every command. */
export interface GlobalOptions {
  server?: string | undefined;
  json: boolean;
}

type Env = Record<string, string | undefined>;

/** The local data directory: `MAYFLY_HOME`, else `~/.mayfly`. */
export function mayflyHome(env: Env = process.env): string {
  return env.MAYFLY_HOME || join(homedir(), '.mayfly');
}

/** Which server to talk to. */
export interface Target {
  url: string;
  /** True when neither `--server` nor `MAYFLY_URL` was given: the local default, started on demand. */
  implicit: boolean;
}

/** `--server`, else `MAYFLY_URL`, else the local default. */
export function resolveTarget(server: string | undefined, env: Env = process.env): Target {
  const given = server ?? (env.MAYFLY_URL || undefined);
  if (given === undefined) return { url: defaultServerUrl(env), implicit: true };
  let url: URL;
  try {
    url = new URL(given);
  } catch {
    throw new UsageError(`invalid server URL "${given}"`, 'use e.g. --server http://127.0.0.1:7070');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid server URL "${given}": only http and https are supported`);
  }
  return { url: given.replace(/\/+$/, ''), implicit: false };
}

/**
 * `MAYFLY_TOKEN`, else, for the local default server only, the admin token it wrote to
 * `<data dir>/admin-token`; undefined when there is neither.
 */
export function resolveToken(url: string, env: Env = process.env): string | undefined {
  if (env.MAYFLY_TOKEN) return env.MAYFLY_TOKEN;
  if (!isDefaultServer(url, env)) return undefined;
  try {
    return readFileSync(join(mayflyHome(env), 'admin-token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function isDefaultServer(url: string, env: Env): boolean {
  try {
    return new URL(url).origin === new URL(defaultServerUrl(env)).origin;
  } catch {
    return false;
  }
}

let lastUrl: string | undefined;

/** The URL of the server the last {@link connect} pointed at, if any (for error messages). */
export function lastServerUrl(): string | undefined {
  return lastUrl;
}

/**
 * A client for the server the options point at. With no server given, the local default is used
 * and started in the background first if nothing answers there.
 */
export async function connect(options: GlobalOptions, env: Env = process.env): Promise<MayflyClient> {
  const target = resolveTarget(options.server, env);
  lastUrl = target.url;
  if (target.implicit && !(await isServerUp(target.url))) {
    const { logFile } = await startLocalServer({ url: target.url, dataDir: mayflyHome(env) });
    printStderr(`started a local Mayfly server at ${target.url} (logs: ${logFile})`);
  }
  // Read after a possible start: a first start is what writes the admin token.
  return new MayflyClient({ baseUrl: target.url, token: resolveToken(target.url, env), fetch: nodeFetch });
}
