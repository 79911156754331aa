/**
 * The control plane's end of a sandbox agent's connections (see packages/agent/serve.go). The
 * control plane listens on a Unix socket in a directory of its own, mounted read-only into the
 * sandbox; the agent dials in and keeps a few connections idle; requests go out over them as
 * HTTP/1.1. The sandbox needs no network for it, and the control plane never opens a path the
 * sandbox could have swapped for a link.
 *
 * Everything that comes back is the sandbox's word, hence hostile: answers are bounded, streams
 * are read with backpressure, and nothing from them names a host path.
 */
import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { Duplex, Readable } from 'node:stream';

/** A JSON answer of the agent larger than this is refused (listings are capped in the agent too). */
const MAX_JSON_BYTES = 8 * 1024 * 1024;
/**
 * Connections one sandbox may hold open to the control plane: the agent's few idle ones, and one
 * per stream or tunnel in use. Anything in the sandbox can connect to the socket; past this it is
 * refused, so a connect loop cannot use up the control plane's file descriptors.
 */
export const MAX_CONNECTIONS = 64;
/** Idle connections kept; more (which only code in the sandbox would make) are closed. */
export const MAX_SPARE = 8;
/**
 * Connections a dialling channel opens ahead, as the agent keeps two dialled on Docker: opening one
 * through the platform (an exec) takes about 90 ms, an idle one answers at once.
 */
const DIALLED_AHEAD = 2;
/**
 * How long the agent has to answer a request's head once the whole request is sent, and to take
 * more of a request's body when it has stopped taking it (a hung or fake agent must not hang
 * callers); a call may give its own. A process may change the default (tests shorten it).
 */
export const agentTimeouts = { headMs: 30_000 };

/** What the agent answered when it refused a request. */
export class AgentError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The agent did not connect in time, or its connection broke. */
export class AgentUnavailableError extends Error {}

export class AgentChannel {
  private readonly spare = new Set<net.Socket>();
  /** Every connection open, in use or not: {@link close} ends them all at once. */
  private readonly connections = new Set<net.Socket>();
  private readonly waiting: ((socket: net.Socket) => void)[] = [];
  private closed = false;
  /** Connections being opened ahead (dialling channels). */
  private dialling = 0;

  private constructor(
    private readonly server: net.Server | null,
    readonly socketPath: string | null,
    /** Where the control plane opens the connections itself (see {@link dialing}). */
    private readonly dial?: () => Promise<Duplex>,
  ) {
    if (!server) return;
    server.maxConnections = MAX_CONNECTIONS;
    server.on('connection', (socket) => {
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
      this.accept(socket);
    });
  }

  /**
   * A channel whose connections the control plane opens, one per request, with `dial` (through
   * the platform's exec on Kubernetes, where no socket can be shared with a pod): the agent then
   * listens inside the sandbox, and nothing in the sandbox can open a connection to us.
   */
  static dialing(dial: () => Promise<Duplex>): AgentChannel {
    return new AgentChannel(null, null, dial);
  }

  /** Listens at `socketPath` (a stale socket there is replaced), writable by the sandbox's user. */
  static async listen(socketPath: string): Promise<AgentChannel> {
    await rm(socketPath, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // Connecting needs write permission on the socket; the sandbox's user is not ours.
    await chmod(socketPath, 0o666);
    return new AgentChannel(server, socketPath);
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter(socket);
      return;
    }
    if (this.spare.size >= MAX_SPARE) {
      socket.destroy();
      return;
    }
    this.spare.add(socket);
    socket.once('close', () => this.spare.delete(socket));
  }

  /** A connection opened by {@link dial}, given up after `timeoutMs`. */
  private async dialOne(dial: () => Promise<Duplex>, timeoutMs: number): Promise<net.Socket> {
    if (this.closed) throw new AgentUnavailableError('the sandbox channel is closed');
    let timer: NodeJS.Timeout | undefined;
    const dialling = dial();
    try {
      const stream = await Promise.race([
        dialling,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => {
            // One that opens after all is closed: nobody will use it.
            dialling.then(
              (late) => late.destroy(),
              () => {},
            );
            reject(new AgentUnavailableError(`the sandbox agent was not reached within ${timeoutMs} ms`));
          }, timeoutMs);
        }),
      ]);
      // Node's HTTP client takes any duplex stream as its connection.
      const socket = stream as net.Socket;
      socket.on('error', () => {});
      if (this.closed) {
        socket.destroy();
        throw new AgentUnavailableError('the sandbox channel is closed');
      }
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
      return socket;
    } catch (err) {
      if (err instanceof AgentUnavailableError) throw err;
      throw new AgentUnavailableError(`the sandbox agent: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Opens connections ahead until {@link DIALLED_AHEAD} are idle. Called after a connection is
   * taken, never in a loop: when the sandbox is gone, the failed ones are not tried again.
   */
  private dialAhead(dial: () => Promise<Duplex>): void {
    while (!this.closed && this.spare.size + this.dialling < DIALLED_AHEAD) {
      this.dialling++;
      this.dialOne(dial, 30_000).then(
        (socket) => {
          this.dialling--;
          if (this.closed || socket.destroyed) {
            socket.destroy();
            return;
          }
          this.spare.add(socket);
          socket.once('close', () => this.spare.delete(socket));
        },
        () => {
          this.dialling--;
        },
      );
    }
  }

  /** An idle connection of the agent's, as soon as there is one. */
  private async take(timeoutMs: number): Promise<net.Socket> {
    if (this.dial) {
      let socket: net.Socket | undefined;
      for (const idle of this.spare) {
        this.spare.delete(idle);
        if (!idle.destroyed) {
          socket = idle;
          break;
        }
      }
      socket ??= await this.dialOne(this.dial, timeoutMs);
      this.dialAhead(this.dial);
      return socket;
    }
    for (const socket of this.spare) {
      this.spare.delete(socket);
      if (!socket.destroyed) return Promise.resolve(socket);
    }
    if (this.closed) return Promise.reject(new AgentUnavailableError('the sandbox channel is closed'));
    return new Promise((resolve, reject) => {
      const give = (socket: net.Socket) => {
        clearTimeout(timer);
        resolve(socket);
      };
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(give), 1);
        reject(new AgentUnavailableError(`the sandbox agent did not connect within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.push(give);
    });
  }

  /** Closed: nothing more goes through it. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Resolves once the agent has a connection open (or, dialled, answers): it is up. */
  async ready(timeoutMs: number): Promise<void> {
    if (this.dial) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          await this.json('GET', '/v1/health', undefined, Math.max(1, deadline - Date.now()));
          return;
        } catch (err) {
          if (!(err instanceof AgentUnavailableError) || this.closed || Date.now() >= deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
    }
    const socket = await this.take(timeoutMs);
    this.accept(socket); // given back
  }

  /**
   * Sends a request and resolves with the response head; the body is a stream the caller reads
   * (or destroys). A non-2xx answer rejects with {@link AgentError}.
   */
  async open(
    method: string,
    path: string,
    options: {
      body?: Buffer | Readable;
      headers?: Record<string, string>;
      /** For a connection of the agent's to be free. */
      timeoutMs?: number;
      /**
       * For the head of the answer, from the end of the request's body, and for the agent to take
       * more of a body it stopped reading; default {@link agentTimeouts}.
       */
      headTimeoutMs?: number;
      signal?: AbortSignal;
    } = {},
  ): Promise<http.IncomingMessage> {
    const socket = await this.take(options.timeoutMs ?? 10_000);
    return new Promise((resolve, reject) => {
      const request = http.request({
        method,
        path,
        // One request per connection, closed by both ends after it: a connection left open
        // would count as idle for the agent, which would then stop dialling fresh ones.
        headers: { host: 'agent', ...options.headers, connection: 'close' },
        createConnection: () => socket,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      request.on('error', (err) =>
        reject(
          err.name === 'AbortError' ? err : new AgentUnavailableError(`the sandbox agent: ${err.message}`),
        ),
      );
      // The agent is timed only while the call waits for it: to take more of a body it stopped
      // reading, and to answer once the body is all sent. A body may take as long as its client
      // takes to send it (an upload over a slow link). Until the head of the answer; a stream
      // that then goes quiet is the caller's to end.
      const headTimeoutMs = options.headTimeoutMs ?? agentTimeouts.headMs;
      let timer: NodeJS.Timeout | undefined;
      let answered = false;
      const waitForAgent = (why: string) => {
        clearTimeout(timer);
        if (!answered) timer = setTimeout(() => request.destroy(new Error(why)), headTimeoutMs);
      };
      const stopWaiting = () => clearTimeout(timer);
      const sent = () => waitForAgent(`no answer within ${headTimeoutMs / 1000} s`);
      request.once('response', () => {
        answered = true;
        stopWaiting();
      });
      request.once('close', stopWaiting);
      request.on('response', (response) => {
        response.once('close', () => socket.destroy());
        const status = response.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          resolve(response);
          return;
        }
        readBounded(response, 64 * 1024)
          .then((text) => {
            const body = parseJson(text) as { code?: string; error?: string } | undefined;
            reject(
              new AgentError(status, body?.code ?? 'error', body?.error ?? `the agent answered ${status}`),
            );
          })
          .catch(reject);
      });
      const { body } = options;
      if (body === undefined || Buffer.isBuffer(body)) {
        request.end(body);
        sent();
        return;
      }
      // A body that fails (its client went away) ends the request too, never as a complete one:
      // the agent then keeps nothing of a half upload.
      sendBody(body, request, {
        stalled: () => waitForAgent(`the agent took none of the body for ${headTimeoutMs / 1000} s`),
        moving: stopWaiting,
      }).then(
        (complete) => {
          if (complete) sent();
        },
        (err: Error) => request.destroy(err),
      );
    });
  }

  /** A request with a JSON answer (bounded), or nothing for 204. */
  async json<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const response = await this.open(method, path, {
      ...(body === undefined
        ? {}
        : { body: Buffer.from(JSON.stringify(body)), headers: { 'content-type': 'application/json' } }),
      ...(timeoutMs ? { timeoutMs } : {}),
    });
    const text = await readBounded(response, MAX_JSON_BYTES);
    return (text ? parseJson(text) : undefined) as T;
  }

  /** A raw connection to `port` inside the sandbox (its loopback), through the agent. */
  async tunnel(port: number): Promise<net.Socket> {
    const socket = await this.take(10_000);
    return new Promise((resolve, reject) => {
      const request = http.request({
        method: 'GET',
        path: `/v1/ports/${port}`,
        headers: { host: 'agent', connection: 'Upgrade', upgrade: 'mayfly-tcp' },
        createConnection: () => socket,
      });
      request.on('upgrade', (_response, upgraded, head) => {
        if (head.length > 0) upgraded.unshift(head);
        resolve(upgraded as net.Socket);
      });
      request.on('response', (response) => {
        response.once('close', () => socket.destroy());
        readBounded(response, 64 * 1024).then((text) => {
          const body = parseJson(text) as { code?: string; error?: string } | undefined;
          reject(
            new AgentError(response.statusCode ?? 502, body?.code ?? 'error', body?.error ?? 'no tunnel'),
          );
        }, reject);
      });
      request.on('error', (err) => reject(new AgentUnavailableError(`the sandbox agent: ${err.message}`)));
      request.end();
    });
  }

  /** Stops listening and ends every connection at once, streams and tunnels included. */
  async close(): Promise<void> {
    this.closed = true;
    this.spare.clear();
    for (const socket of this.connections) socket.destroy();
    const { server, socketPath } = this;
    if (!server || !socketPath) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(socketPath, { force: true });
  }
}

/**
 * Writes `body` into `request` as it comes, and ends the request once `body` has ended (resolving
 * true); a request that closes first (an early answer, an error) resolves false, and `body` is
 * destroyed. `stalled` is called when the request waits for the agent to take what was written,
 * `moving` when it has.
 */
async function sendBody(
  body: Readable,
  request: http.ClientRequest,
  on: { stalled: () => void; moving: () => void },
): Promise<boolean> {
  // Closed first, the request stops the body at once, not when its next piece comes.
  const stop = () => {
    if (!body.readableEnded) body.destroy();
  };
  request.once('close', stop);
  try {
    for await (const chunk of body) {
      if (request.destroyed) return false; // (leaving the loop destroys the body)
      if (!request.write(chunk)) {
        on.stalled();
        await new Promise<void>((resolve) => {
          const done = () => {
            request.off('drain', done);
            request.off('close', done);
            resolve();
          };
          request.on('drain', done);
          request.on('close', done);
        });
        on.moving();
      }
    }
  } finally {
    request.off('close', stop);
  }
  if (request.destroyed) return false;
  request.end();
  return true;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The whole body as text, refused past `limit` bytes (the stream is destroyed then). */
export async function readBounded(stream: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      stream.destroy();
      throw new AgentError(502, 'too_large', `the sandbox answered more than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
