/** An in-process Mayfly server on a random port with its own data dir, and helpers to drive it. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { EnvEvent, Environment, EnvState } from '@mayfly/contract';
import { type RunningServer, type StartOptions, startServer } from '../main.js';
import { uploadBundle, waitForState } from './control-plane-process.js';
import { testInstanceName } from './global-setup.js';

export interface TestServer {
  server: RunningServer;
  dataDir: string;
  token: string;
  /** A JSON call with the admin token, or with `token` when given. */
  api<T = unknown>(
    method: string,
    urlPath: string,
    body?: unknown,
    token?: string,
  ): Promise<{ status: number; body: T }>;
  /** Uploads `dir` as a bundle (as `mayfly up` does) and returns its id. */
  upload(dir: string): Promise<string>;
  waitForState(idOrName: string, states: EnvState[], timeoutMs?: number): Promise<Environment>;
  events(idOrName: string): Promise<EnvEvent[]>;
  /** GET through the gateway: connects to 127.0.0.1 and names the environment in the Host header. */
  viaGateway(host: string, urlPath?: string): Promise<{ status: number; text: string }>;
  /** Destroys what the test left (unless told not to: an unreachable runtime cannot), then stops. */
  close(options?: { destroyEnvironments?: boolean }): Promise<void>;
}

export async function startTestServer(options: StartOptions = {}): Promise<TestServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-test-'));
  const server = await startServer({
    port: 0,
    dataDir,
    reconcileIntervalMs: 250,
    gcIntervalMs: 60_000,
    logLevel: 'silent',
    instanceName: testInstanceName(),
    // No warm sandboxes unless a test asks: other tests' servers do not make containers they never use.
    sandboxPool: { base: 0, code: 0 },
    sandboxPoolStartDelayMs: 0,
    ...options,
  });
  const token = (await readFile(server.adminTokenFile!, 'utf8')).trim();

  const api: TestServer['api'] = async (method, urlPath, body, asToken = token) => {
    const res = await fetch(`${server.url}${urlPath}`, {
      method,
      headers: {
        authorization: `Bearer ${asToken}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (a log stream): the text as it is
    }
    return { status: res.status, body: parsed as never };
  };

  return {
    server,
    dataDir,
    token,
    api,
    upload: (dir) => uploadBundle({ url: server.url, token }, dir),
    waitForState: (idOrName, states, timeoutMs = 120_000) =>
      waitForState({ url: server.url, token }, idOrName, states, timeoutMs),
    async events(idOrName) {
      return (await api<{ items: EnvEvent[] }>('GET', `/v1/environments/${idOrName}/events`)).body.items;
    },
    viaGateway: (host, urlPath = '/') => requestViaGateway(server.port, host, urlPath),
    async close({ destroyEnvironments = true } = {}) {
      // A test that failed half-way must not leave its environments running.
      const { items } = destroyEnvironments
        ? (await api<{ items: Environment[] }>('GET', '/v1/environments')).body
        : { items: [] };
      await Promise.all(items.map((e) => api('DELETE', `/v1/environments/${e.id}`)));
      await Promise.all(
        items.map((e) => waitForState({ url: server.url, token }, e.id, ['destroyed'], 60_000)),
      );
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A GET to the gateway at `at` (a port on 127.0.0.1, or an address and port) for `host`, with
 * `headers` (Node's resolver has no `*.localhost`).
 */
export function requestViaGateway(
  at: number | { address: string; port: number },
  host: string,
  urlPath = '/',
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const { address, port } = typeof at === 'number' ? { address: '127.0.0.1', port: at } : at;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: address, port, path: urlPath, headers: { host, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}
