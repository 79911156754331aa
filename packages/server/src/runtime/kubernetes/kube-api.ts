/** The Kubernetes API clients the driver uses, and how it reads their errors. Nothing else here. */

import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  Exec,
  KubeConfig,
  NetworkingV1Api,
  StorageV1Api,
} from '@kubernetes/client-node';

export interface KubeConnection {
  /** A kubeconfig file; none: in-cluster config inside a pod, else the default kubeconfig. */
  kubeconfig?: string;
  /** A context of the kubeconfig other than its current one. */
  context?: string;
}

export interface KubeClients {
  config: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  networking: NetworkingV1Api;
  /** Storage classes, and the snapshot API's objects (snapshot.storage.k8s.io) where the cluster serves it. */
  storage: StorageV1Api;
  custom: CustomObjectsApi;
  exec: Exec;
}

/** In a pod with no kubeconfig given, the in-cluster config is used. */
const inCluster = (connection: KubeConnection) =>
  !connection.kubeconfig && Boolean(process.env.KUBERNETES_SERVICE_HOST);

/** The namespace this process runs in as a pod using the in-cluster config, else undefined. */
export function ownNamespace(
  connection: KubeConnection,
  file = '/var/run/secrets/kubernetes.io/serviceaccount/namespace',
): string | undefined {
  if (!inCluster(connection)) return undefined;
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function kubeClients(connection: KubeConnection = {}): KubeClients {
  const config = new KubeConfig();
  if (connection.kubeconfig) config.loadFromFile(connection.kubeconfig);
  else if (inCluster(connection)) config.loadFromCluster();
  else config.loadFromDefault();
  if (connection.context) config.setCurrentContext(connection.context);
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    apps: config.makeApiClient(AppsV1Api),
    batch: config.makeApiClient(BatchV1Api),
    networking: config.makeApiClient(NetworkingV1Api),
    storage: config.makeApiClient(StorageV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
    exec: new Exec(config),
  };
}

/** Waiting reasons after which a container will not start by itself. */
export const STUCK_REASONS = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
  'CreateContainerConfigError',
  'CreateContainerError',
  'RunContainerError',
]);

/** The HTTP status of a failed API call (`ApiException.code`), if it has one. */
export const statusOf = (err: unknown): number | undefined => {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
};

/** Resolves to undefined when the call failed with one of `codes` (e.g. 404: already gone). */
export async function unless<T>(codes: number[], call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (err) {
    if (codes.includes(statusOf(err) ?? -1)) return undefined;
    throw err;
  }
}

/** The message the API server gave with a failed call, for an error users read. */
export function apiMessage(err: unknown): string {
  const body = (err as { body?: unknown })?.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {}
  } else if (body && typeof body === 'object' && 'message' in body) {
    return String((body as { message: unknown }).message);
  }
  return (err as Error)?.message ?? String(err);
}

/**
 * A GET whose body is streamed (a pod's log): the response as a Readable that honours
 * backpressure. Rejects with the server's message for a status other than 200.
 */
export async function streamGet(config: KubeConfig, path: string): Promise<IncomingMessage> {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig names no cluster');
  const url = new URL(path, cluster.server);
  const options: https.RequestOptions = {
    method: 'GET',
    hostname: url.hostname,
    port: url.port,
    path: url.pathname + url.search,
    headers: {},
  };
  await config.applyToHTTPSOptions(options);
  return new Promise((resolve, reject) => {
    const request = https.request(options, (response) => {
      if (response.statusCode === 200) {
        resolve(response);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        if (size < 64 * 1024) chunks.push(chunk);
        size += chunk.length;
      });
      response.on('end', () => {
        const error = Object.assign(new Error(`GET ${url.pathname}: ${response.statusCode}`), {
          code: response.statusCode,
          body: Buffer.concat(chunks).toString('utf8'),
        });
        reject(error);
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}
