import { ApiPaths, DashboardLoginLink } from '@mayfly/contract';
import * as z from 'zod';
import { BundlesApi } from './bundles.js';
import { EnvironmentsApi } from './environments.js';
import { type FetchLike, HttpClient } from './http.js';
import { ProjectsApi } from './projects.js';
import { SnapshotsApi } from './snapshots.js';
import { TokensApi } from './tokens.js';

/** What `GET /healthz` answers. */
export const HealthResponse = z.object({ ok: z.boolean(), version: z.string() });
export type HealthResponse = z.infer<typeof HealthResponse>;

/** Options of {@link MayflyClient}. */
export interface MayflyClientOptions {
  /** Where the API listens, e.g. `http://127.0.0.1:7070`. */
  baseUrl: string;
  /** API token, sent as `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /**
   * Replaces Node's global fetch. Note: Node 20's own fetch (undici 6) never settles a request
   * whose connection is reset before the request is written; pass undici 7's `fetch` to get a
   * ConnectionError in that case too.
   */
  fetch?: FetchLike | undefined;
}

/**
 * Typed client of the Mayfly REST API.
 *
 * @example
 * ```ts
 * const mayfly = new MayflyClient({ baseUrl: 'http://127.0.0.1:7070', token: process.env.MAYFLY_TOKEN });
 * const env = await mayfly.environments.create({ template: { filename: 'mayfly.yaml', content } });
 * // or, with a folder (build contexts, env files): upload it as a tar first
 * const bundle = await mayfly.bundles.upload(createReadStream('app.tar.gz'));
 * await mayfly.environments.create({ template: { filename: 'compose.yaml', bundle: bundle.id } });
 * const ready = await mayfly.environments.waitFor(env.id, { onEvent: (e) => console.log(e.message) });
 * ```
 */
export class MayflyClient {
  /** Environments: create, list, get, destroy, events, logs, waitFor. */
  readonly environments: EnvironmentsApi;
  /** Template folders uploaded as tar archives, for `template: { filename, bundle }`. */
  readonly bundles: BundlesApi;
  /** API tokens and their scopes (needs an `admin` token). */
  readonly tokens: TokensApi;
  /** Projects (repositories whose pull requests get previews), their previews, approvals. */
  readonly projects: ProjectsApi;
  /** Snapshots of seeded volumes, and those made by hand. */
  readonly snapshots: SnapshotsApi;
  /** The API's base URL, without a trailing slash. */
  readonly baseUrl: string;
  readonly #http: HttpClient;

  constructor(options: MayflyClientOptions) {
    this.#http = new HttpClient(options);
    this.baseUrl = this.#http.baseUrl;
    this.environments = new EnvironmentsApi(this.#http);
    this.bundles = new BundlesApi(this.#http);
    this.tokens = new TokensApi(this.#http);
    this.projects = new ProjectsApi(this.#http);
    this.snapshots = new SnapshotsApi(this.#http);
  }

  /**
   * A one-time link that logs a browser into the dashboard with this token's scope and project
   * (works once, for 5 minutes; the session it starts ends with this token).
   */
  dashboardLoginLink(): Promise<DashboardLoginLink> {
    return this.#http.json('POST', ApiPaths.dashboardLoginLinks, DashboardLoginLink);
  }

  /** Checks that the server is up; needs no token. @throws ConnectionError when nothing answers. */
  health(options: { signal?: AbortSignal } = {}): Promise<HealthResponse> {
    return this.#http.json('GET', ApiPaths.health, HealthResponse, options);
  }
}
