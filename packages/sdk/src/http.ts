import type * as z from 'zod';
import { ConnectionError, errorFromResponse, MayflyError } from './errors.js';

/** What the client sends: the part of `RequestInit` it uses. */
export interface FetchInit {
  method: string;
  headers: Record<string, string>;
  body?: string | Uint8Array | AsyncIterable<Uint8Array>;
  signal?: AbortSignal | null;
  /** Set for a streamed body (Node's fetch needs it). */
  duplex?: 'half';
}

/** What the client reads of an answer: the part of `Response` it uses. */
export interface FetchResponse {
  ok: boolean;
  status: number;
  statusText: string;
  text(): Promise<string>;
  body: ReadableStream<Uint8Array> | null;
}

/**
 * A `fetch`: Node's global one by default. Inject another to add proxies, retries or tracing, or
 * one on `node:http` that starts faster (the CLI's: the first global fetch of a process costs
 * about 300 ms of loading).
 */
export type FetchLike = (input: string, init: FetchInit) => Promise<FetchResponse>;

/** Query parameters; `undefined` and `false` are left out, `true` is sent as `1`. */
export type Query = Record<string, string | number | boolean | undefined>;

/** A request body that is not JSON: bytes, or a stream of them sent as it is read. */
export interface RawBody {
  contentType: string;
  data: Uint8Array | AsyncIterable<Uint8Array>;
}

/** One HTTP call to the API. */
export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as is, with its own content type; a stream is sent as it is read (chunked), never buffered. */
  raw?: RawBody;
  signal?: AbortSignal;
  /** Media type asked for; default `application/json`. */
  accept?: string;
}

/** How to reach the server. */
export interface HttpClientOptions {
  baseUrl: string;
  token?: string | undefined;
  fetch?: FetchLike | undefined;
}

/** Thin layer over fetch: auth header, JSON, error mapping, response validation. */
export class HttpClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: FetchLike;

  constructor(options: HttpClientOptions) {
    // Concatenated rather than resolved with `new URL(path, base)`, which would drop a path prefix
    // such as `https://example.com/mayfly`.
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token || undefined;
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init as RequestInit));
  }

  /** Sends a request and returns the response when it is 2xx; throws the mapped MayflyError otherwise. */
  async send(method: string, path: string, options: RequestOptions = {}): Promise<FetchResponse> {
    const url = this.baseUrl + path + queryString(options.query);
    const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    const init: FetchInit = { method, headers, signal: options.signal ?? null };
    if (options.raw !== undefined) {
      headers['content-type'] = options.raw.contentType;
      init.body = options.raw.data;
      // Node's fetch sends a streamed body only in half-duplex mode (the answer is read after it).
      if (!(options.raw.data instanceof Uint8Array)) init.duplex = 'half';
    } else if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(options.body);
    }
    let response: FetchResponse;
    try {
      response = await this.#fetch(url, init);
    } catch (err) {
      throw this.networkError(err, options.signal);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      throw errorFromResponse(response.status, response.statusText, text);
    }
    return response;
  }

  /** Sends a request and validates its JSON answer with `schema`. */
  async json<T>(
    method: string,
    path: string,
    schema: z.ZodType<T>,
    options: RequestOptions = {},
  ): Promise<T> {
    const response = await this.send(method, path, options);
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw this.networkError(err, options.signal);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new MayflyError(`${method} ${path}: the server answered with something that is not JSON`, {
        code: 'invalid_response',
        status: response.status,
      });
    }
    const result = schema.safeParse(data);
    if (!result.success) {
      const detail = result.error.issues
        .slice(0, 3)
        .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
        .join('; ');
      throw new MayflyError(`${method} ${path}: unexpected response shape (${detail})`, {
        code: 'invalid_response',
        status: response.status,
        cause: result.error,
      });
    }
    return result.data;
  }

  /** Network failures become ConnectionError; an abort the caller asked for is passed through untouched. */
  networkError(err: unknown, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted || err instanceof MayflyError) return err;
    const detail = errorCode(err) ?? causeMessage(err);
    return new ConnectionError(`cannot reach the Mayfly server at ${this.baseUrl} (${detail})`, {
      cause: err,
    });
  }
}

function queryString(query: Query | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === false) continue;
    params.set(key, value === true ? '1' : String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** The innermost message: `fetch failed` alone says little, its cause (e.g. `bad port`) says more. */
function causeMessage(err: unknown): string {
  let current: unknown = err;
  while (current instanceof Error && current.cause instanceof Error) current = current.cause;
  return current instanceof Error ? current.message : String(current);
}

/** Node's fetch reports `TypeError: fetch failed` with the system error (or an AggregateError of them) as cause. */
function errorCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; errors?: unknown[]; cause?: unknown };
    if (typeof candidate.code === 'string') return candidate.code;
    const first = candidate.errors?.[0] as { code?: unknown } | undefined;
    if (typeof first?.code === 'string') return first.code;
    current = candidate.cause;
  }
  return undefined;
}
