/** A control plane in a child process (serve-process.ts), for crash tests and benchmarks. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Environment } from '@mayfly/contract';

const serveScript = fileURLToPath(new URL('./serve-process.ts', import.meta.url));

/** Where an API answers, and the token to ask it with. */
export interface ApiTarget {
  url: string;
  token: string;
}

export interface ControlPlane extends ApiTarget {
  child: ChildProcess;
}

/** With `dbUrl`, the store is PostgreSQL and the lease owner differs per process, as with replicas. */
export async function startControlPlane(dataDir: string, dbUrl?: string): Promise<ControlPlane> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', serveScript, dataDir, '0', ...(dbUrl ? [dbUrl] : [])],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('exit', (code) => reject(new Error(`control plane exited with ${code}`)));
  });
  const info = JSON.parse(line) as { url: string; tokenFile: string };
  return { child, url: info.url, token: (await readFile(info.tokenFile, 'utf8')).trim() };
}

/** Ends the process the given way (SIGKILL to simulate a crash) and waits for it to be gone. */
export function stopControlPlane(plane: ControlPlane, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  return new Promise((resolve) => {
    if (plane.child.exitCode !== null || plane.child.signalCode !== null) return resolve();
    plane.child.once('exit', () => resolve());
    plane.child.kill(signal);
  });
}

export async function callApi<T>(
  plane: ApiTarget,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<T> {
  const res = await fetch(`${plane.url}${urlPath}`, {
    method,
    headers: {
      authorization: `Bearer ${plane.token}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = (await res.json()) as T;
  if (res.status >= 400) throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export async function waitForState(
  plane: ApiTarget,
  name: string,
  states: string[],
  timeoutMs = 120_000,
): Promise<Environment> {
  const deadline = Date.now() + timeoutMs;
  let env: Environment | null = null;
  while (Date.now() < deadline) {
    env = await callApi<Environment>(plane, 'GET', `/v1/environments/${name}`);
    if (states.includes(env.state)) return env;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name} did not reach ${states.join('/')}: ${JSON.stringify(env)}`);
}
