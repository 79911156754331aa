/**
 * A terminal into a running sandbox over one WebSocket (what the dashboard's xterm.js talks to): a
 * login shell in a pty; its output comes as binary messages, keys go as binary messages, a resize
 * as a JSON text message; the end as a JSON text message, then the close.
 *
 * Who may open one: a browser cannot put a header on a WebSocket handshake, and the session
 * cookie alone must never open a shell (a page of another site can make the browser send it,
 * and another server on the same host name can read it). So a terminal starts with an ordinary
 * API request, `POST /v1/sandboxes/:id/terminal`, authenticated as every other (a bearer token,
 * or the dashboard's session with its header), which answers a ticket: one use, 30 seconds, for
 * that sandbox and whoever asked. The handshake carries the ticket as a subprotocol
 * (`mayfly-ticket.<ticket>`, not in the URL, which proxies log); a browser's Origin must be this
 * server's own. The shell hangs up (SIGHUP) when the socket closes, and the socket closes when
 * the token or session that asked is revoked.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { type ErrorCode, TerminalSize, TerminalTicket } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import * as z from 'zod';
import type { Access } from '../access/access.js';
import { ConflictError, QuotaExceededError } from '../controller/errors.js';
import { AgentProcessEvent, ndjsonLines } from '../sandbox/process-events.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import { requireAccess } from './auth.js';
import { toHttpError } from './errors.js';
import { OneUseTickets } from './one-use-tickets.js';
import { addRoute } from './route.js';

/** The subprotocol a terminal socket speaks (version 1: the messages above). */
export const TERMINAL_PROTOCOL = 'mayfly.terminal.v1';
/** The subprotocol that carries the ticket: this prefix and the ticket. */
export const TICKET_PROTOCOL_PREFIX = 'mayfly-ticket.';
const TICKET_TTL_MS = 30_000;
/** Terminals open at once on this server. */
const DEFAULT_MAX_TERMINALS = 64;
/** Largest message a client may send (keys, a paste); bigger closes the socket (1009). */
const MAX_MESSAGE_BYTES = 64 * 1024;
/** Keys waiting for the sandbox to take them, at most (with {@link MESSAGE_COST} each); more closes the socket. */
const MAX_PENDING_INPUT = 1024 * 1024;
/** What a message waiting to be typed costs besides its bytes (its buffer and bookkeeping). */
const MESSAGE_COST = 64;
/** Output waiting for a slow client: reading from the sandbox pauses above it. */
const MAX_BUFFERED_OUTPUT = 4 * 1024 * 1024;
/** A ping this often; no pong by the next one ends the socket. The token is checked again too. */
const HEARTBEAT_MS = 30_000;

const TERMINAL_PATH = /^\/v1\/sandboxes\/([A-Za-z0-9_-]{1,64})\/terminal$/;
/** A shell still running this long after its hang-up is killed. */
const KILL_AFTER_HANGUP_MS = 5000;

/** An open terminal: how to end it, and its work, done once its shell is hung up. */
interface OpenTerminal {
  end: (code: number, reason: string) => void;
  served: Promise<void>;
}

/** A text message from the client. */
const ClientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('resize'), cols: TerminalSize.shape.cols, rows: TerminalSize.shape.rows }),
]);

interface Issued {
  sandbox: string;
  access: Access;
  stillAllowed: () => Promise<boolean>;
}

export interface SandboxTerminalsOptions {
  sandboxes: SandboxService;
  logger: Logger;
  maxTerminals?: number;
}

export class SandboxTerminals {
  private readonly tickets = new OneUseTickets<Issued>(TICKET_TTL_MS);
  private readonly sockets = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_MESSAGE_BYTES,
    perMessageDeflate: false,
    handleProtocols: (offered) => (offered.has(TERMINAL_PROTOCOL) ? TERMINAL_PROTOCOL : false),
  });
  /** Open terminals. */
  private readonly open = new Map<WebSocket, OpenTerminal>();
  /** Shutting down: nothing opens any more. */
  private closing = false;
  /** Handshakes accepted and not yet open (each holds a place under the limit). */
  private opening = 0;
  private readonly maxTerminals: number;

  constructor(private readonly options: SandboxTerminalsOptions) {
    this.maxTerminals = options.maxTerminals ?? DEFAULT_MAX_TERMINALS;
  }

  /** The route that hands out tickets. */
  register(app: FastifyInstance<Server>): void {
    addRoute(app, {
      method: 'POST',
      url: '/v1/sandboxes/:id/terminal',
      scope: 'write',
      summary: 'a ticket to open a terminal (a shell in a pty) in a running sandbox over a WebSocket',
      description: `Open \`GET /v1/sandboxes/{id}/terminal?cols=&rows=\` as a WebSocket within ${TICKET_TTL_MS / 1000} s with the subprotocols answered ("${TERMINAL_PROTOCOL}" and "${TICKET_PROTOCOL_PREFIX}<ticket>"). Binary messages are the terminal's output and, from the client, its keys; the client sends {"type":"resize","cols":N,"rows":N} as text; the server ends with {"type":"exit","exitCode":N,"signal"?} or {"type":"error","message"} as text, then closes. Closing the socket hangs the shell up (SIGHUP).`,
      params: z.object({ id: z.string().min(1).max(64).describe('sandbox id') }),
      response: { status: 201, description: 'the ticket', json: TerminalTicket },
      errors: { 404: 'no such sandbox', 409: 'it has ended or is paused', 429: 'too many terminals open' },
      handler: async ({ params, req }) => {
        const access = requireAccess(req);
        const sandbox = await this.options.sandboxes.get(params.id, access);
        if (sandbox.state !== 'running')
          throw new ConflictError(`the sandbox is ${sandbox.state}: a terminal needs it running`);
        if (this.open.size + this.opening >= this.maxTerminals) throw new QuotaExceededError(this.tooMany());
        const ticket = this.tickets.issue({
          sandbox: sandbox.id,
          access,
          stillAllowed: req.stillAllowed ?? (async () => true),
        });
        return {
          ticket,
          protocols: [TERMINAL_PROTOCOL, `${TICKET_PROTOCOL_PREFIX}${ticket}`],
          url: `/v1/sandboxes/${sandbox.id}/terminal`,
        };
      },
    });
  }

  /** Whether an upgrade request is for a terminal (then {@link handleUpgrade} answers it). */
  handles(req: IncomingMessage): boolean {
    return TERMINAL_PATH.test(pathOf(req.url));
  }

  /** Answers a terminal's handshake: refused with a status and why, or a socket with a shell. */
  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // An upgraded socket has no error listener of Node's any more: a client resetting the
    // connection while it is refused or checked would otherwise take the server down.
    socket.on('error', () => {});
    const refuse = (status: number, message: string) => refuseUpgrade(socket, status, message);
    const url = new URL(req.url ?? '/', 'http://terminal');
    const sandbox = TERMINAL_PATH.exec(url.pathname)?.[1];
    if (!sandbox) return refuse(404, 'no such terminal');
    const origin = req.headers.origin;
    if (origin !== undefined && hostOf(origin) !== req.headers.host)
      return refuse(403, 'a terminal opens only from a page of this server');
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim());
    if (!offered.includes(TERMINAL_PROTOCOL))
      return refuse(400, `a terminal speaks the subprotocol "${TERMINAL_PROTOCOL}"`);
    const size = TerminalSize.safeParse({
      cols: Number(url.searchParams.get('cols') ?? 80),
      rows: Number(url.searchParams.get('rows') ?? 24),
    });
    if (!size.success) return refuse(400, 'cols and rows are whole numbers from 1 to 1000');
    const ticket = offered
      .find((p) => p.startsWith(TICKET_PROTOCOL_PREFIX))
      ?.slice(TICKET_PROTOCOL_PREFIX.length);
    const issued = this.tickets.take(ticket);
    if (!issued)
      return refuse(401, 'a terminal needs a ticket from POST /v1/sandboxes/{id}/terminal (one use, 30 s)');
    if (issued.sandbox !== sandbox) return refuse(401, 'this ticket is for another sandbox');
    // A place is taken now, before anything is awaited: handshakes at once cannot pass the limit.
    if (this.open.size + this.opening >= this.maxTerminals) return refuse(429, this.tooMany());
    this.opening += 1;
    let placeHeld = true;
    const release = () => {
      if (placeHeld) this.opening -= 1;
      placeHeld = false;
    };
    socket.once('close', release);
    if (!(await issued.stillAllowed().catch(() => false))) {
      release();
      return refuse(401, 'the token or session that asked for this terminal has ended');
    }
    if (socket.destroyed) return release();
    if (this.closing) {
      release();
      return refuse(503, 'the server is stopping');
    }
    this.sockets.handleUpgrade(req, socket, head, (ws) => {
      release();
      // A client's protocol error (a message over the limit, a bad frame): ws closes the socket
      // with its code; unhandled, the event would take the server down.
      ws.on('error', () => {});
      if (this.closing) return ws.terminate();
      const terminal: OpenTerminal = { end: () => ws.terminate(), served: Promise.resolve() };
      this.open.set(ws, terminal);
      ws.once('close', () => this.open.delete(ws));
      terminal.served = this.serve(ws, sandbox, size.data, issued, terminal).catch((err) => {
        this.options.logger.warn({ err, sandbox }, 'a terminal failed');
        ws.terminate();
      });
    });
  }

  private tooMany(): string {
    return `${this.maxTerminals} terminals are open on this server already: close one first`;
  }

  /**
   * For the server's shutdown, before the sandboxes' channels close: no terminal opens any more,
   * every open one ends and its shell is hung up (waited for, at most 2 s), then the sockets are cut.
   */
  async close(): Promise<void> {
    this.closing = true;
    const served = [...this.open.values()].map((terminal) => {
      terminal.end(1001, 'the server is stopping');
      return terminal.served;
    });
    await Promise.race([Promise.all(served), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    for (const ws of this.open.keys()) ws.terminate();
    this.sockets.close();
  }

  private async serve(
    ws: WebSocket,
    id: string,
    size: TerminalSize,
    issued: Issued,
    terminal: OpenTerminal,
  ): Promise<void> {
    const { sandboxes } = this.options;
    const { access } = issued;
    const isOpen = () => ws.readyState === WebSocket.OPEN;
    const sendText = (message: object) => {
      if (isOpen()) ws.send(JSON.stringify(message));
    };
    let pid: number | undefined;
    let ended = false;
    let hungUp = false;
    let hangingUp: Promise<void> = Promise.resolve();
    let events: Readable | undefined;
    /**
     * Hangs the shell up (once), as closing a terminal window does; one that ignores it (`trap ''
     * HUP`) is killed a few seconds later.
     */
    const hangUp = (): Promise<void> => {
      if (pid === undefined || ended || hungUp) return hangingUp;
      hungUp = true;
      const shell = pid;
      hangingUp = sandboxes
        .signal(id, shell, { signal: 'SIGHUP' }, access)
        .catch(() => {})
        .then(() => {
          setTimeout(
            () => void sandboxes.signal(id, shell, { signal: 'SIGKILL' }, access).catch(() => {}),
            KILL_AFTER_HANGUP_MS,
          ).unref();
        });
      return hangingUp;
    };
    /** Ends the terminal now: the shell hung up, nothing more taken from the client. */
    const end = (code: number, reason: string) => {
      void hangUp();
      ws.close(code, reason);
      // A client that does not answer the close is cut.
      setTimeout(() => ws.terminate(), 2000).unref();
    };
    terminal.end = end;
    const fail = (err: unknown) => {
      const { status, body } = toHttpError(err);
      if (status >= 500) this.options.logger.warn({ err, sandbox: id }, 'a terminal failed');
      sendText({ type: 'error', message: body.error.message });
      end(1011, 'the terminal could not go on');
    };

    // Keys go to the sandbox one request at a time, in order; what comes meanwhile goes with the
    // next. Each message counts its bytes and a fixed cost, so many tiny ones are bounded too.
    let pending: Buffer[] = [];
    let pendingCost = 0;
    let typing = false;
    const type = async () => {
      if (typing) return;
      typing = true;
      try {
        while (pending.length > 0 && pid !== undefined && !ended && !hungUp && isOpen()) {
          const keys = Buffer.concat(pending);
          pending = [];
          pendingCost = 0;
          await sandboxes.stdin(id, pid, Readable.from([keys]), false, access).catch(() => {});
        }
      } finally {
        typing = false;
      }
    };
    // Sizes: only the latest matters, one request at a time.
    let wantedSize: TerminalSize | null = null;
    let resizing = false;
    const resize = async () => {
      if (resizing) return;
      resizing = true;
      try {
        while (wantedSize && pid !== undefined && !ended && !hungUp && isOpen()) {
          const next = wantedSize;
          wantedSize = null;
          await sandboxes.resize(id, pid, next, access).catch(() => {});
        }
      } finally {
        resizing = false;
      }
    };
    ws.on('message', (data, isBinary) => {
      if (!isOpen()) return; // closing: nothing more reaches the shell
      if (isBinary) {
        const bytes = Buffer.isBuffer(data) ? data : Buffer.concat([data].flat() as Buffer[]);
        if (bytes.length === 0) return;
        pendingCost += bytes.length + MESSAGE_COST;
        if (pendingCost > MAX_PENDING_INPUT) return end(1008, 'keys come faster than the sandbox takes them');
        pending.push(bytes);
        void type();
        return;
      }
      let message: z.output<typeof ClientMessage>;
      try {
        message = ClientMessage.parse(JSON.parse(data.toString()));
      } catch {
        return end(1003, 'a text message is {"type":"resize","cols":N,"rows":N}');
      }
      wantedSize = { cols: message.cols, rows: message.rows };
      void resize();
    });

    let alive = true;
    ws.on('pong', () => {
      alive = true;
    });
    const heartbeat = setInterval(() => {
      if (!alive) {
        void hangUp();
        return ws.terminate();
      }
      alive = false;
      ws.ping();
      void issued.stillAllowed().then(
        (allowed) => {
          if (!allowed) end(1008, 'the token or session that opened this terminal has ended');
        },
        () => {},
      );
    }, HEARTBEAT_MS);
    ws.once('close', () => {
      clearInterval(heartbeat);
      events?.destroy();
      void hangUp();
    });

    try {
      events = await sandboxes.run(
        id,
        {
          cmd: 'exec sh -c "command -v bash >/dev/null && exec bash -l || exec sh -l"',
          stdin: true,
          timeoutMs: 0,
          pty: size,
        },
        access,
      );
    } catch (err) {
      return fail(err);
    }
    try {
      for await (const line of ndjsonLines(events)) {
        const event = AgentProcessEvent.parse(JSON.parse(line));
        if (event.type === 'start') {
          pid = event.pid;
          // Closed while the shell started: hang it up now that its pid is known.
          if (!isOpen()) {
            await hangUp();
            break;
          }
          void type();
          void resize();
        } else if (event.type === 'end') {
          ended = true;
          sendText({
            type: 'exit',
            exitCode: event.exitCode,
            ...(event.signal ? { signal: event.signal } : {}),
          });
          ws.close(1000, 'the shell exited');
          return;
        } else if (ws.readyState === WebSocket.OPEN) {
          ws.send(Buffer.from(event.data, 'base64'), { binary: true });
          // A client that reads slower than the shell writes: stop reading the shell until it catches up.
          while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > MAX_BUFFERED_OUTPUT)
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } catch (err) {
      if (ws.readyState === WebSocket.OPEN) return fail(err);
      return;
    } finally {
      // Done only once the shell is hung up (the server's shutdown waits for it).
      await hangingUp;
    }
    if (!ended && ws.readyState === WebSocket.OPEN) {
      sendText({ type: 'error', message: 'the sandbox went away while the shell ran' });
      ws.close(1011, 'the sandbox went away');
    }
  }
}

function pathOf(url: string | undefined): string {
  const query = (url ?? '').indexOf('?');
  return query < 0 ? (url ?? '') : (url ?? '').slice(0, query);
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

const REFUSALS: Record<number, [ErrorCode, string]> = {
  400: ['invalid_request', 'Bad Request'],
  401: ['unauthorized', 'Unauthorized'],
  403: ['forbidden', 'Forbidden'],
  404: ['not_found', 'Not Found'],
  429: ['quota_exceeded', 'Too Many Requests'],
  503: ['runtime_unavailable', 'Service Unavailable'],
};

/** Answers a handshake that is refused: its status and why, as JSON, and the connection closed. */
function refuseUpgrade(socket: Duplex, status: number, message: string): void {
  const [code, reason] = REFUSALS[status] ?? ['invalid_request', 'Bad Request'];
  const body = JSON.stringify({ error: { code, message } });
  // Ended and then destroyed: a client that never closes its side holds nothing.
  socket.once('finish', () => socket.destroy());
  setTimeout(() => socket.destroy(), 5000).unref();
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
