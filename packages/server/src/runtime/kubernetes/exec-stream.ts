/**
 * A command run in a pod's container through the API server's exec, as one byte stream: what is
 * written goes to its stdin, what it prints comes out. The client library's exec has no
 * backpressure either way (it buffers whatever comes, whatever is sent), which a stream of a
 * sandbox's files must have: here a write completes once the WebSocket has taken it, and the
 * WebSocket stops reading while the stream's reader is behind. Nothing of it is the client
 * library's but the kubeconfig's TLS and credentials.
 */
import { Duplex } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import WebSocket from 'ws';

/** The exec protocol's channels (v4.channel.k8s.io): one byte before each message's data. */
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;

/** A message larger than this is refused (kubelet sends small frames; a stream is many). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** How much of the command's stderr is kept to explain a failure. */
const STDERR_KEPT = 4096;

export interface ExecTarget {
  namespace: string;
  pod: string;
  container: string;
}

/** The command's exit was not 0, or the API server refused the exec; `message` says why. */
export class ExecFailedError extends Error {}

/**
 * Starts `command` in the container and resolves once the API server has taken the exec: the
 * stream ends when the command's stdout does, and fails with {@link ExecFailedError} when the
 * command exits non-zero (its stderr in the message) or the exec is refused.
 */
export async function execStream(
  config: KubeConfig,
  target: ExecTarget,
  command: string[],
  timeoutMs = 15_000,
): Promise<Duplex> {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig names no cluster');
  const query = new URLSearchParams({ container: target.container, stdin: 'true', stdout: 'true' });
  query.append('stderr', 'true');
  for (const word of command) query.append('command', word);
  const base = cluster.server.replace(/^http/, 'ws').replace(/\/$/, '');
  const url = `${base}/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/exec?${query}`;
  const options: WebSocket.ClientOptions = {
    maxPayload: MAX_MESSAGE_BYTES,
    handshakeTimeout: timeoutMs,
    perMessageDeflate: false,
  };
  await config.applyToHTTPSOptions(options as Parameters<KubeConfig['applyToHTTPSOptions']>[0]);
  const ws = new WebSocket(url, ['v4.channel.k8s.io'], options);
  // Listening before it opens: no message is missed.
  const stream = new ExecDuplex(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      ws.off('error', reject);
      resolve();
    });
    ws.once('error', reject);
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => {
        if (body.length < 4096) body += chunk.toString();
      });
      response.on('end', () => {
        let message = body;
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? body;
        } catch {}
        reject(new ExecFailedError(`exec refused (${response.statusCode}): ${message.trim()}`));
      });
    });
  }).catch((err: unknown) => {
    stream.destroy();
    throw err;
  });
  return stream;
}

class ExecDuplex extends Duplex {
  private stderr = '';

  constructor(private readonly ws: WebSocket) {
    super({ allowHalfOpen: true });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length < 1) return;
      const channel = data[0];
      const payload = data.subarray(1);
      if (channel === STDOUT) {
        if (payload.length > 0 && !this.push(payload)) ws.pause();
      } else if (channel === STDERR) {
        this.stderr = (this.stderr + payload.toString()).slice(-STDERR_KEPT);
      } else if (channel === STATUS) {
        this.onStatus(payload.toString());
      }
    });
    ws.on('close', () => {
      // The status comes before the close: a close without one ends the stream as it is. Closed
      // for good once what it brought is read (at once when nothing is left: an idle connection
      // the server closed is seen gone, not used).
      this.push(null);
      if (this.readableLength === 0) this.destroy();
      else this.once('end', () => this.destroy());
    });
    ws.on('error', (err) => {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CLOSING) this.destroy(err);
    });
  }

  private onStatus(text: string): void {
    let status: { status?: string; message?: string } = {};
    try {
      status = JSON.parse(text) as typeof status;
    } catch {}
    if (status.status === 'Success') {
      this.push(null);
      return;
    }
    const why = this.stderr.trim() || status.message || 'the command failed';
    this.destroy(new ExecFailedError(why));
  }

  override _read(): void {
    this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      done(new Error('the exec connection is closed'));
      return;
    }
    // Done once the WebSocket has written it: a writer faster than the pod waits.
    this.ws.send(Buffer.concat([Buffer.of(STDIN), chunk]), { binary: true }, (err) => done(err ?? null));
  }

  override _final(done: (err?: Error | null) => void): void {
    // Before Kubernetes 1.29 (the v5 protocol) stdin cannot be closed alone; what is sent over
    // this stream (HTTP) says where it ends.
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.ws.terminate();
    done(err);
  }

  // What Node's HTTP client may call on a socket it was given.
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  setTimeout(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}
