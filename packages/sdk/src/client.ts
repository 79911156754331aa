import { ApiPaths } from '@mayfly/contract';
import { z } from 'zod';
import { EnvironmentsApi } from './environments.js';
import { type FetchLike, HttpClient } from './http.js';

/** What `GET /healthz` answers. */
export const HealthResponse = z.object({ ok: z.boolean(), version: z.string() });
export type HealthResponse = z.infer<typeof HealthResponse>;

/** Options of {@link MayflyClient}. */
export interface MayflyClientOptions {
  /** Where the API listens, e.g. `http://127.0.0.1:7070`. */
  baseUrl: string;
  /** API token, sent as `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** Replaces Node's global fetch. */
  fetch?: FetchLike | undefined;
}

/**
 * Typed client of the Mayfly REST API.
 *
 * @example
 * ```ts
 * const mayfly = new MayflyClient({ baseUrl: 'http://127.0.0.1:7070', token: process.env.MAYFLY_TOKEN });
 * const env = await mayfly.environments.create({ template: { filename: 'mayfly.yaml', content } });
 * const ready = await mayfly.environments.waitFor(env.id, { onEvent: (e) => console.log(e.message) });
 * ```
 */
export class MayflyClient {
  /** Environments: create, list, get, destroy, events, logs, waitFor. */
  readonly environments: EnvironmentsApi;
  /** The API's base URL, without a trailing slash. */
  readonly baseUrl: string;
  readonly #http: HttpClient;

  constructor(options: MayflyClientOptions) {
    this.#http = new HttpClient(options);
    this.baseUrl = this.#http.baseUrl;
    this.environments = new EnvironmentsApi(this.#http);
  }

  /** Checks that the server is up; needs no token. @throws ConnectionError when nothing answers. */
  health(options: { signal?: AbortSignal } = {}): Promise<HealthResponse> {
    return this.#http.json('GET', ApiPaths.health, HealthResponse, options);
  }
}
