/**
 * The Connect protocol (connectrpc.com/docs/protocol) with the JSON codec, server side, as far as
 * the e2b SDK speaks it: unary calls (`application/json` in and out) and server-streaming calls
 * (one enveloped request message; enveloped answers and an end-of-stream envelope). Written here,
 * not taken from a Connect server library: those serve generated service definitions, and this
 * adapter has a handful of methods whose messages it checks with zod.
 */
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';

/** Connect's error codes, with the HTTP status a unary error is sent with. */
export const CONNECT_CODES = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
} as const;
export type ConnectCode = keyof typeof CONNECT_CODES;

export class ConnectError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
    /** Answered before the request was read to its end: the connection cannot be used again. */
    readonly closeConnection = false,
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

/** Flags of an envelope: a message (0), or the end of a stream (2). Compression (1) is not offered. */
const END_STREAM = 0b10;
const COMPRESSED = 0b01;

/** Largest request message read: requests are small (a command line, a path). */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/** The one message of a server-streaming request: its envelope checked and opened. */
export function openRequestEnvelope(body: Buffer): unknown {
  if (body.length < 5) throw new ConnectError('invalid_argument', 'incomplete envelope');
  const flags = body[0]!;
  const length = body.readUInt32BE(1);
  if (flags & COMPRESSED) throw new ConnectError('internal', 'compressed messages are not supported');
  if (length !== body.length - 5)
    throw new ConnectError('invalid_argument', 'the request must be exactly one envelope');
  return parseJson(body.subarray(5));
}

/**
 * The messages of a client-streaming request, each as soon as it has arrived whole (each at most
 * MAX_REQUEST_BYTES: nothing bigger is held).
 */
export async function* requestMessages(body: AsyncIterable<Buffer>): AsyncGenerator<unknown> {
  let buffered: Buffer = Buffer.alloc(0);
  for await (const chunk of body) {
    buffered = buffered.length > 0 ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered.length >= 5) {
      if (buffered[0]! & COMPRESSED)
        throw new ConnectError('internal', 'compressed messages are not supported');
      const length = buffered.readUInt32BE(1);
      if (length > MAX_REQUEST_BYTES)
        throw new ConnectError(
          'resource_exhausted',
          `a request message is at most ${MAX_REQUEST_BYTES} bytes`,
        );
      if (buffered.length < 5 + length) break;
      const payload = buffered.subarray(5, 5 + length);
      buffered = buffered.subarray(5 + length);
      yield parseJson(payload);
    }
  }
  if (buffered.length > 0) throw new ConnectError('invalid_argument', 'incomplete envelope');
}

export function parseJson(bytes: Buffer): unknown {
  try {
    return bytes.length === 0 ? {} : JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ConnectError('invalid_argument', 'the request is not JSON');
  }
}

export function envelope(message: unknown, flags = 0): Buffer {
  const payload = Buffer.from(JSON.stringify(message), 'utf8');
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** A unary answer or error. */
export function sendUnary(res: ServerResponse, result: unknown): void {
  const error = result instanceof ConnectError ? result : null;
  const body = JSON.stringify(error ? { code: error.code, message: error.message } : (result ?? {}));
  res.writeHead(error ? CONNECT_CODES[error.code] : 200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...(error?.closeConnection ? { connection: 'close' } : {}),
  });
  res.end(body);
}

/**
 * A server stream on `res`: always HTTP 200; messages as they come; `end` closes it with the
 * end-of-stream envelope (carrying the error, if any). Writes after the end, or after the client
 * went away, are dropped.
 */
export class ServerStream {
  private ended = false;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'content-type': 'application/connect+json' });
    res.flushHeaders();
  }

  get open(): boolean {
    return !this.ended && !this.res.destroyed;
  }

  /**
   * Sends a message; resolves once the client has taken in what was sent before (a client that
   * stops reading holds the sender, not the server's memory).
   */
  async send(message: unknown): Promise<void> {
    if (!this.open) return;
    if (this.res.write(envelope(message))) return;
    await Promise.race([once(this.res, 'drain'), once(this.res, 'close')]);
  }

  end(error?: ConnectError): void {
    if (!this.open) return;
    this.ended = true;
    this.res.end(envelope(error ? { error: { code: error.code, message: error.message } } : {}, END_STREAM));
  }
}

/** The client's deadline (`Connect-Timeout-Ms`); 0 without one (the SDK leaves it out for "no limit"). */
export function timeoutOf(header: string | string[] | undefined): number {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^\d{1,10}$/.test(value)) return 0;
  return Number(value);
}
