/**
 * The gateway: routes `<service>--<env>.<baseDomain>` to that service's HTTP port, for plain
 * requests, streams and WebSocket upgrades alike. It shares the API's listener; `main.ts` hands it
 * every request whose Host names an environment.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { LRUCache } from 'lru-cache';
import type { UrlScheme } from '../controller/urls.js';
import { parseHost, parseSandboxHost } from '../controller/urls.js';
import type { Logger } from '../observability/logger.js';
import type { Endpoint, Runtime } from '../runtime/runtime.js';
import type { Store } from '../store/store.js';
import { errorPage } from './error-page.js';
import {
  decidePreviewAccess,
  type PreviewDecision,
  type PreviewPolicy,
  PUBLIC_PREVIEW,
} from './preview-access.js';

/** Requests held while environments wake, at most: in all, and for one environment. */
const MAX_HELD = 1_000;
const MAX_HELD_PER_ENV = 200;

export interface GatewayDeps {
  store: Store;
  runtime: Runtime;
  urls: UrlScheme;
  logger: Logger;
  /** How long a resolved upstream is reused before asking the store and runtime again. */
  cacheMs?: number;
  /** How long a host that routes nowhere (unknown, not ready) is answered from memory. */
  negativeCacheMs?: number;
  /** Hosts remembered at most; the least recently used are forgotten first. */
  cacheEntries?: number;
  /** Wakes a sleeping environment (a request came for it). */
  wake?: (envId: string) => Promise<unknown>;
  /** A request was routed to the environment (for idle policies). */
  onActivity?: (envId: string) => void;
  /** How long a request for a sleeping environment is held while it wakes; default 60 s. */
  wakeTimeoutMs?: number;
  /** Sandboxes, reached at `<port>--<sandbox id>.<base domain>` through their agent. */
  sandboxes?: SandboxPorts;
}

/** What the gateway needs of sandboxes: whether one is up, and a connection to one of its ports. */
export interface SandboxPorts {
  isServing(id: string): Promise<boolean>;
  tunnel(id: string, port: number): Promise<Duplex>;
}

/** An agent that hands the proxy one connection made beforehand (a tunnel into a sandbox). */
function oneConnectionAgent(connection: Duplex): http.Agent {
  const agent = new http.Agent({ keepAlive: false });
  (agent as unknown as { createConnection: () => Duplex }).createConnection = () => connection;
  return agent;
}

/** The part of an environment's record that routing needs. */
interface EnvRoutes {
  id: string;
  name: string;
  project: string;
  state: string;
  failureStep: string | null;
  /** Service → the container port the gateway routes to. */
  httpPorts: Map<string, number>;
}

type Resolution =
  | { ok: true; target: Endpoint; envId: string; envName: string }
  | {
      ok: false;
      status: number;
      title: string;
      detail: string;
      envName?: string;
      /** Asleep, or waking because a request came: worth waking and waiting for. */
      waking?: { envId: string; asleep: boolean };
    };

/**
 * The cache key of a Host header: lowercase, without port or a trailing dot, so `WEB--x.localhost.:80`
 * and `web--x.localhost` share one entry and a client cannot grow the cache by spelling one host many ways.
 */
export function normalizeHost(host: string | undefined): string {
  return (host ?? '').toLowerCase().replace(/:\d*$/, '').replace(/\.$/, '');
}

export class Gateway {
  private readonly proxy = createProxyServer({ xfwd: true, ws: true });
  private readonly cache: LRUCache<string, Resolution>;
  private readonly envCache: LRUCache<string, { routes: EnvRoutes | null }>;
  /** Environment → who may open its URLs (its project's access and token hash), for `cacheMs`. */
  private readonly accessCache: LRUCache<string, PreviewPolicy>;
  /** Upgraded connections (WebSockets) outlive the HTTP server's own tracking: closed by {@link close}. */
  private readonly sockets = new Set<Duplex>();
  /** One watcher per waking environment, shared by every request held for it. */
  private readonly wakeWatchers = new Map<string, Promise<void>>();
  /** Requests held while environments wake, in all and per environment (both bounded). */
  private held = 0;
  private readonly heldPerEnv = new Map<string, number>();
  /** Environments this gateway woke, and when: requests for them wait while they come up. */
  private readonly woken = new LRUCache<string, number>({ max: 10_000, ttl: 10 * 60_000 });

  constructor(private readonly deps: GatewayDeps) {
    this.cache = new LRUCache<string, Resolution>({
      max: deps.cacheEntries ?? 10_000,
      ttl: deps.cacheMs ?? 2_000,
    });
    this.envCache = new LRUCache<string, { routes: EnvRoutes | null }>({
      max: deps.cacheEntries ?? 10_000,
      ttl: deps.negativeCacheMs ?? 1_000,
    });
    this.accessCache = new LRUCache<string, PreviewPolicy>({
      max: deps.cacheEntries ?? 10_000,
      ttl: deps.cacheMs ?? 2_000,
    });
    this.proxy.on('error', (err, req, resOrSocket) => {
      this.cache.delete(normalizeHost(req.headers.host));
      deps.logger.warn({ host: req.headers.host, err: err.message }, 'upstream error');
      if (resOrSocket && 'writeHead' in resOrSocket) {
        const res = resOrSocket as ServerResponse;
        if (!res.headersSent) {
          sendPage(res, 502, 'Bad gateway', `The service did not answer: ${err.message}`);
        } else res.destroy();
      } else (resOrSocket as Duplex | undefined)?.destroy();
    });
  }

  /** True when the Host header names an environment's service (and so the gateway should answer). */
  handles(req: IncomingMessage): boolean {
    const host = normalizeHost(req.headers.host);
    return (
      parseHost(host, this.deps.urls.baseDomain) !== null ||
      (this.deps.sandboxes !== undefined && parseSandboxHost(host, this.deps.urls.baseDomain) !== null)
    );
  }

  /**
   * What the gateway needs of an environment, read once per `cacheMs` whatever the service name
   * asked for: requests for made-up services of one environment do not each read its whole record.
   */
  private async routesOf(envName: string): Promise<EnvRoutes | null> {
    const cached = this.envCache.get(envName);
    if (cached !== undefined) return cached.routes;
    const env = await this.deps.store.environments.getByName(envName);
    const routes: EnvRoutes | null = env
      ? {
          id: env.id,
          name: env.name,
          project: env.project,
          state: env.state,
          failureStep: env.failure?.step ?? null,
          httpPorts: new Map(
            (env.plan?.workloads ?? [])
              .filter((w) => w.kind === 'service')
              .flatMap((w) => {
                const port = w.ports.find((p) => p.http);
                return port ? [[w.name, port.container] as const] : [];
              }),
          ),
        }
      : null;
    this.envCache.set(envName, { routes });
    return routes;
  }

  /** How many hosts are remembered right now (bounded by `cacheEntries`). */
  get cachedHosts(): number {
    return this.cache.size;
  }

  /** Drops what is remembered about an environment's hosts (it was destroyed, say). */
  forget(envName: string): void {
    this.envCache.delete(envName);
    this.accessCache.delete(envName);
    for (const [key, value] of this.cache.entries()) {
      if (value.envName === envName) this.cache.delete(key);
    }
  }

  /**
   * Who may open the URLs of the environment that `req` names: its project's `access` and token.
   * Checked on every request before anything else (routing, waking, proxying); on `allow`, the
   * preview credentials are taken out of the request, so the app never sees them.
   */
  private async checkAccess(req: IncomingMessage, upgrade: boolean): Promise<PreviewDecision> {
    const parsed = parseHost(normalizeHost(req.headers.host), this.deps.urls.baseDomain);
    const decision = decidePreviewAccess(
      {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: req.headers,
        envName: parsed?.envName ?? '',
        secure: this.deps.urls.scheme === 'https',
        upgrade,
      },
      parsed ? await this.previewPolicyOf(parsed.envName) : PUBLIC_PREVIEW,
    );
    if (decision.kind === 'allow') {
      req.url = decision.url;
      req.headers = decision.headers;
    }
    return decision;
  }

  private async previewPolicyOf(envName: string): Promise<PreviewPolicy> {
    const cached = this.accessCache.get(envName);
    if (cached) return cached;
    const env = await this.routesOf(envName);
    // Not remembered: the 404 does not need it, and an environment created next gets its policy at once.
    if (!env) return PUBLIC_PREVIEW;
    // Environments outside projects, and of projects without a record, are public.
    const project = env.project === 'default' ? null : await this.deps.store.projects.get(env.project);
    const policy: PreviewPolicy = {
      access: project?.policy.access ?? 'public',
      tokenHash: project?.previewTokenHash ?? null,
      project: env.project,
    };
    this.accessCache.set(envName, policy);
    return policy;
  }

  /**
   * `<port>--<id>` (or E2B's `<port>-<id>`) where `id` is a sandbox this control plane serves: its
   * port, reached through its agent (a sandbox has no network of its own). Public like E2B's: the
   * id (80 random bits) is the key.
   */
  private async sandboxTarget(req: IncomingMessage): Promise<{ id: string; port: number } | null> {
    if (!this.deps.sandboxes) return null;
    const parsed = parseSandboxHost(normalizeHost(req.headers.host), this.deps.urls.baseDomain);
    if (!parsed) return null;
    return (await this.deps.sandboxes.isServing(parsed.id)) ? parsed : null;
  }

  private async sandboxTunnel(target: { id: string; port: number }): Promise<Duplex | string> {
    try {
      return await this.deps.sandboxes!.tunnel(target.id, target.port);
    } catch (err) {
      return `Nothing answers on port ${target.port} of sandbox ${target.id}: ${(err as Error).message}`;
    }
  }

  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const sandbox = await this.sandboxTarget(req);
    if (sandbox) {
      const tunnel = await this.sandboxTunnel(sandbox);
      if (typeof tunnel === 'string') return sendPage(res, 502, 'Bad gateway', tunnel);
      this.proxy.web(req, res, {
        target: { host: 'sandbox', port: sandbox.port },
        agent: oneConnectionAgent(tunnel),
      });
      return;
    }
    const access = await this.checkAccess(req, false);
    if (access.kind !== 'allow') {
      res.writeHead(access.status, access.headers).end(access.body);
      return;
    }
    let resolved = await this.resolve(req.headers.host);
    if (!resolved.ok && resolved.waking) {
      await this.wake(resolved.waking.envId);
      // A browser gets a page that says so and reloads itself; anything else is held until ready.
      if ((req.method === 'GET' || req.method === 'HEAD') && /text\/html/.test(req.headers.accept ?? '')) {
        const body = errorPage(
          503,
          'Waking up',
          `Environment "${resolved.envName}" was asleep and is starting again; this page reloads by itself.`,
          1,
        );
        res.writeHead(503, {
          'content-type': 'text/html; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          'retry-after': '1',
          'cache-control': 'no-store',
        });
        res.end(body);
        return;
      }
      resolved = await this.waitWhileWaking(req.headers.host, res);
    }
    if (!resolved.ok) return sendPage(res, resolved.status, resolved.title, resolved.detail);
    this.deps.onActivity?.(resolved.envId);
    this.proxy.web(req, res, { target: { host: resolved.target.host, port: resolved.target.port } });
  }

  /** Asks for the environment to wake (once per wake, whatever the number of requests). */
  private async wake(envId: string): Promise<void> {
    const at = this.woken.get(envId);
    if (at !== undefined && Date.now() - at < 5_000) return;
    this.woken.set(envId, Date.now());
    await this.deps
      .wake?.(envId)
      .catch((err: Error) =>
        this.deps.logger.warn({ envId, err: err.message }, 'could not wake the environment'),
      );
  }

  /** Resolves the host again and again while the environment wakes, until it routes or gives up. */
  /**
   * Holds a request while its environment wakes. All requests for one environment share one
   * watcher (one store read every 250 ms, whatever their number), and how many may wait is
   * bounded, per environment and in all: past that, 503 with Retry-After.
   */
  private async waitWhileWaking(host: string | undefined, res: ServerResponse | null): Promise<Resolution> {
    const key = normalizeHost(host);
    const envName = parseHost(key, this.deps.urls.baseDomain)?.envName ?? '';
    const heldHere = this.heldPerEnv.get(envName) ?? 0;
    if (this.held >= MAX_HELD || heldHere >= MAX_HELD_PER_ENV) {
      return {
        ok: false,
        status: 503,
        title: 'Busy waking up',
        detail: `Too many requests are waiting for environment "${envName}" to wake; try again shortly.`,
      };
    }
    this.held++;
    this.heldPerEnv.set(envName, heldHere + 1);
    try {
      let watcher = this.wakeWatchers.get(envName);
      if (!watcher) {
        watcher = this.watchWake(envName).finally(() => this.wakeWatchers.delete(envName));
        this.wakeWatchers.set(envName, watcher);
      }
      const closed = new Promise<void>((resolve) => res?.once('close', () => resolve()));
      await Promise.race([watcher, closed]);
      this.cache.delete(key);
      const resolved = await this.resolve(host);
      if (!resolved.ok && resolved.waking) {
        return {
          ok: false,
          status: 503,
          title: 'Still waking up',
          detail: `Environment "${envName}" did not finish waking up in time; try again shortly.`,
        };
      }
      return resolved;
    } finally {
      this.held--;
      const left = (this.heldPerEnv.get(envName) ?? 1) - 1;
      if (left > 0) this.heldPerEnv.set(envName, left);
      else this.heldPerEnv.delete(envName);
    }
  }

  /** Asleep, or coming up after this gateway woke it: a request for it waits. */
  private asleepOrWaking(env: EnvRoutes): boolean {
    return (
      env.state === 'sleeping' ||
      (['pending', 'building', 'creating'].includes(env.state) && this.woken.has(env.id))
    );
  }

  /** Resolves once the environment is no longer asleep or waking (or the wake timeout passed). */
  private async watchWake(envName: string): Promise<void> {
    const deadline = Date.now() + (this.deps.wakeTimeoutMs ?? 60_000);
    while (Date.now() <= deadline) {
      this.envCache.delete(envName);
      const env = await this.routesOf(envName);
      if (!env || !this.asleepOrWaking(env)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const sandbox = await this.sandboxTarget(req);
    if (sandbox) {
      const tunnel = await this.sandboxTunnel(sandbox);
      if (typeof tunnel === 'string') {
        socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      this.proxy.ws(req, socket, head, {
        target: { host: 'sandbox', port: sandbox.port },
        agent: oneConnectionAgent(tunnel),
      });
      return;
    }
    const access = await this.checkAccess(req, true);
    if (access.kind !== 'allow') {
      socket.end(`HTTP/1.1 ${access.status} Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    let resolved = await this.resolve(req.headers.host);
    if (!resolved.ok && resolved.waking) {
      await this.wake(resolved.waking.envId);
      resolved = await this.waitWhileWaking(req.headers.host, null);
    }
    if (!resolved.ok) {
      socket.end(
        `HTTP/1.1 ${resolved.status} ${resolved.title}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
      );
      return;
    }
    this.deps.onActivity?.(resolved.envId);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    this.proxy.ws(req, socket, head, { target: { host: resolved.target.host, port: resolved.target.port } });
  }

  /** Stops proxying and cuts open WebSocket connections (shutdown must not wait for them). */
  close(): void {
    this.proxy.close();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  private async resolve(host: string | undefined): Promise<Resolution> {
    const key = normalizeHost(host);
    const cached = this.cache.get(key);
    if (cached) return cached;
    const resolution = await this.lookup(key);
    // Routes are remembered briefly; misses more briefly still, so a new environment answers soon.
    this.cache.set(key, resolution, {
      ttl: resolution.ok ? (this.deps.cacheMs ?? 2_000) : (this.deps.negativeCacheMs ?? 1_000),
    });
    return resolution;
  }

  private async lookup(host: string): Promise<Resolution> {
    const parsed = parseHost(host, this.deps.urls.baseDomain);
    if (!parsed)
      return { ok: false, status: 404, title: 'Not found', detail: `No environment answers at ${host}.` };
    const { envName } = parsed;
    const env = await this.routesOf(envName);
    if (!env || env.state === 'destroyed') {
      return {
        ok: false,
        envName,
        status: 404,
        title: 'Not found',
        detail: `There is no environment named "${envName}".`,
      };
    }
    const port = env.httpPorts.get(parsed.service);
    if (port === undefined) {
      return {
        ok: false,
        envName,
        status: 404,
        title: 'Not found',
        detail: `Environment "${env.name}" has no HTTP service named "${parsed.service}".`,
      };
    }
    if (this.asleepOrWaking(env)) {
      return {
        ok: false,
        envName,
        status: 503,
        title: 'Asleep',
        detail: `Environment "${env.name}" is asleep; a request wakes it.`,
        waking: { envId: env.id, asleep: env.state === 'sleeping' },
      };
    }
    if (env.state !== 'ready') {
      return {
        ok: false,
        envName,
        status: 503,
        title: 'Not ready',
        // The step only: the reason may quote logs, and this page needs no token.
        detail: `Environment "${env.name}" is ${env.state}${env.failureStep ? ` (failed at ${env.failureStep})` : ''}.`,
      };
    }
    const target = await this.deps.runtime.resolveEndpoint(env.id, parsed.service, port);
    if (!target) {
      return {
        ok: false,
        envName,
        status: 503,
        title: 'Not running',
        detail: `Service "${parsed.service}" is not running.`,
      };
    }
    return { ok: true, target, envId: env.id, envName };
  }
}

function sendPage(res: ServerResponse, status: number, title: string, detail: string): void {
  const body = errorPage(status, title, detail);
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}
