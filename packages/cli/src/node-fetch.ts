/**
 * The SDK's `fetch`, on `node:http` / `node:https`. The CLI starts many short processes: Node 20's
 * global fetch costs about 300 ms to load on its first call (undici and its WebAssembly parser),
 * a plain request a few. It also reports a connection reset before the answer as an error, where
 * Node 20's fetch can leave the promise unsettled.
 */
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { FetchInit, FetchLike, FetchResponse } from '@mayfly/sdk';

export const nodeFetch: FetchLike = (input, init) =>
  new Promise<FetchResponse>((resolve, reject) => {
    const url = new URL(input);
    const client = url.protocol === 'https:' ? https : http;
    const signal = init.signal ?? undefined;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const request = client.request(url, { method: init.method, headers: init.headers, signal });
    request.once('error', reject);
    request.once('response', (response) => {
      resolve(answer(response));
    });
    send(request, init.body).catch((err: unknown) => request.destroy(err as Error));
  });

async function send(request: http.ClientRequest, body: FetchInit['body']): Promise<void> {
  if (body === undefined || typeof body === 'string' || body instanceof Uint8Array) {
    request.end(body);
    return;
  }
  // A stream is sent as it is read, chunked, waiting for the socket when it is full.
  for await (const chunk of body) {
    if (!request.write(chunk)) await new Promise((resolve) => request.once('drain', resolve));
  }
  request.end();
}

function answer(response: http.IncomingMessage): FetchResponse {
  // A connection cut while nobody reads the body must not crash the CLI; a reader still gets it.
  response.on('error', () => {});
  const status = response.statusCode ?? 0;
  let body: ReadableStream<Uint8Array> | null = null;
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: response.statusMessage ?? '',
    async text() {
      const chunks: Buffer[] = [];
      for await (const chunk of response) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
    // Made only when asked for (log streams): the web stream adapter is not free to load.
    get body() {
      body ??= Readable.toWeb(response) as ReadableStream<Uint8Array>;
      return body;
    },
  };
}
