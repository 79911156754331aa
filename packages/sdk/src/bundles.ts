import { ApiPaths, Bundle } from '@mayfly/contract';
import type { HttpClient } from './http.js';

/** What {@link BundlesApi.upload} sends: a tar archive, gzip'd or not, whole or as a stream. */
export type BundleBody = Uint8Array | AsyncIterable<Uint8Array>;

/** Options of {@link BundlesApi.upload}. */
export interface UploadBundleOptions {
  /**
   * Whether the archive is gzip'd; by default it is told from its first bytes (the gzip magic
   * number), so a plain tar and a `.tar.gz` both work without saying which.
   */
  gzip?: boolean;
  signal?: AbortSignal;
}

const GZIP_MAGIC = [0x1f, 0x8b] as const;

/**
 * Bundles: a template's folder packed as a tar, uploaded before the environment that uses it is
 * created (`template: { filename, bundle: id }`). Reached as `client.bundles`.
 */
export class BundlesApi {
  readonly #http: HttpClient;

  /** @internal Use `new MayflyClient(...).bundles`. */
  constructor(http: HttpClient) {
    this.#http = http;
  }

  /**
   * Uploads a tar archive (a Node `Readable`, any async iterable of bytes, or the bytes themselves).
   * A stream is sent as it is read, so a large folder is never held in memory. The server unpacks
   * it into its own work dir, checking limits and refusing hostile entries as it goes.
   * @throws InvalidRequestError when the server refuses the archive (too large, a link pointing outside…).
   * @throws the source stream's own error, unchanged, when reading the body fails.
   */
  async upload(body: BundleBody, options: UploadBundleOptions = {}): Promise<Bundle> {
    let sourceError: { error: unknown } | null = null;
    let data: BundleBody;
    let gzip = options.gzip;
    if (body instanceof Uint8Array) {
      data = body;
      gzip ??= startsWithGzipMagic(body);
    } else {
      const iterator = bytesOf(body, (error) => {
        sourceError = { error };
      });
      // The first bytes tell gzip from tar; they are then sent ahead of the rest.
      let head: Uint8Array = new Uint8Array(0);
      while (head.byteLength < GZIP_MAGIC.length) {
        const next = await iterator.next();
        if (sourceError) throw (sourceError as { error: unknown }).error;
        if (next.done) break;
        head = concat(head, next.value);
      }
      gzip ??= startsWithGzipMagic(head);
      data = prepend(head, iterator);
    }
    try {
      return await this.#http.json('POST', ApiPaths.bundles, Bundle, {
        raw: { contentType: gzip ? 'application/gzip' : 'application/x-tar', data },
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      // A failing source surfaces as itself, not as "cannot reach the server".
      if (sourceError) throw (sourceError as { error: unknown }).error;
      // The server answered (or went away) before reading it all: stop producing the rest.
      (body as { destroy?: () => void }).destroy?.();
      throw err;
    }
  }
}

function startsWithGzipMagic(bytes: Uint8Array): boolean {
  return bytes[0] === GZIP_MAGIC[0] && bytes[1] === GZIP_MAGIC[1];
}

const encoder = new TextEncoder();

/** The source as Uint8Array chunks (a Readable with an encoding set yields strings); reports its failure. */
async function* bytesOf(
  source: AsyncIterable<Uint8Array | string>,
  onError: (error: unknown) => void,
): AsyncGenerator<Uint8Array, void, undefined> {
  try {
    for await (const chunk of source) {
      const bytes = typeof chunk === 'string' ? encoder.encode(chunk) : chunk;
      if (bytes.byteLength > 0) yield bytes;
    }
  } catch (err) {
    onError(err);
    throw err;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

async function* prepend(
  head: Uint8Array,
  rest: AsyncGenerator<Uint8Array, void, undefined>,
): AsyncGenerator<Uint8Array, void, undefined> {
  if (head.byteLength > 0) yield head;
  yield* rest;
}
