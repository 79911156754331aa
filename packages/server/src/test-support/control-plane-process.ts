/** A control plane in a child process (serve-process.ts), for crash tests and benchmarks. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Environment } from '@mayfly/contract';
import { packBundle } from '../sources/bundle-pack.js';

const serveScript = fileURLToPath(new URL('./serve-process.ts', import.meta.url));

/** Where an API answers, and the token to ask it with. */
export interface ApiTarget {
  url: string;
  token: string;
}

export interface ControlPlane extends ApiTarget {
  child: ChildProcess;
  /** What the process wrote to stderr so far (with `stderr: 'pipe'`). */
  stderr(): string;
}

/**
 * With `dbUrl`, the store is PostgreSQL and the lease owner differs per process, as with replicas.
 * `options` are more `startServer` options (JSON-serialisable); `stderr: 'pipe'` keeps the child's log
 * output in {@link ControlPlane.stderr} instead of passing it through.
 */
export async function startControlPlane(
  dataDir: string,
  dbUrl?: string,
  options: Record<string, unknown> = {},
  io: { stderr?: 'inherit' | 'pipe' } = {},
): Promise<ControlPlane> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', serveScript, dataDir, '0', dbUrl ?? '', JSON.stringify(options)],
    { stdio: ['ignore', 'pipe', io.stderr ?? 'inherit'] },
  );
  const stderr: string[] = [];
  child.stderr?.on('data', (d: Buffer) => stderr.push(d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('exit', (code) => reject(new Error(`control plane exited with ${code}`)));
  });
  const info = JSON.parse(line) as { url: string; tokenFile: string };
  return {
    child,
    url: info.url,
    token: (await readFile(info.tokenFile, 'utf8')).trim(),
    stderr: () => stderr.join(''),
  };
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

/** Destroys every environment the plane knows (what a failed test left) and waits until they are gone. */
export async function destroyAll(plane: ApiTarget): Promise<void> {
  const { items } = await callApi<{ items: Environment[] }>(plane, 'GET', '/v1/environments');
  await Promise.all(items.map((e) => callApi(plane, 'DELETE', `/v1/environments/${e.id}`)));
  await Promise.all(items.map((e) => waitForState(plane, e.id, ['destroyed'], 120_000)));
}

/** Uploads `dir` as a template bundle, as `mayfly up` does; returns the bundle id. */
export async function uploadBundle(plane: ApiTarget, dir: string): Promise<string> {
  const body = await packBundle(dir, { maxBytes: 64 * 1024 ** 2 });
  const res = await fetch(`${plane.url}/v1/bundles`, {
    method: 'POST',
    headers: { authorization: `Bearer ${plane.token}`, 'content-type': 'application/gzip' },
    body: body as unknown as ReadableStream,
    duplex: 'half',
  } as RequestInit);
  const json = (await res.json()) as { id: string; error?: { message: string } };
  if (res.status !== 201) throw new Error(`bundle upload: ${res.status} ${json.error?.message}`);
  return json.id;
}

export async function waitForState(
  plane: ApiTarget,
  name: string,
  states: string[],
  timeoutMs = 120_000,
  options: { retryUnreachable?: boolean } = {},
): Promise<Environment> {
  const deadline = Date.now() + timeoutMs;
  let env: Environment | null = null;
  while (Date.now() < deadline) {
    const res = await fetch(`${plane.url}/v1/environments/${encodeURIComponent(name)}`, {
      headers: { authorization: `Bearer ${plane.token}` },
    }).catch((err: unknown) => {
      // Behind a Service, a request may reach a replica that was just killed: ask again.
      if (options.retryUnreachable) return null;
      throw err;
    });
    if (!res) {
      await new Promise((r) => setTimeout(r, 250));
      continue;
    }
    // Retention may delete a destroyed environment's record right after it is destroyed.
    if (res.status === 404 && states.includes('destroyed'))
      return { ...(env as Environment), state: 'destroyed' };
    env = (await res.json()) as Environment;
    if (res.status >= 400)
      throw new Error(`GET /v1/environments/${name}: ${res.status} ${JSON.stringify(env)}`);
    if (states.includes(env.state)) return env;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name} did not reach ${states.join('/')}: ${JSON.stringify(env)}`);
}
