/**
 * E2B's data plane (`E2B_SANDBOX_URL`: what the SDK calls envd) on Mayfly's sandbox agent: the
 * sandbox named by `E2b-Sandbox-Id`, its key (`X-Access-Token`) checked, then Connect RPC for
 * processes and the file system, and REST for file contents and health. Everything goes through
 * the sandbox service to the one agent in the sandbox; nothing here runs code of its own in it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Busboy } from '@fastify/busboy';
import type { SandboxFileEntry, SandboxProcess } from '@mayfly/contract';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as z from 'zod';
import type { Access } from '../access/access.js';
import { AgentProcessEvent, ndjsonLines } from '../sandbox/process-events.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import {
  CONNECT_CODES,
  type ConnectCode,
  ConnectError,
  MAX_REQUEST_BYTES,
  openRequestEnvelope,
  parseJson,
  requestMessages,
  ServerStream,
  sendUnary,
  timeoutOf,
} from './connect-protocol.js';
import { e2bError } from './control-routes.js';
import type { EnvdAccess } from './envd-access.js';
import { entryInfo, resolvePath } from './envd-messages.js';
import { DirectoryWatch, PolledWatchers } from './envd-watch.js';

export interface EnvdDeps {
  sandboxes: SandboxService;
  envdAccess: EnvdAccess;
}

/** The data plane acts for whoever holds the sandbox's key: sandboxes belong to no project. */
const HOLDER: Access = { tokenId: null, scope: 'write', project: null };
/** What an unknown, paused or ended sandbox answers on every path (as E2B's edge does). */
const GONE_STATUS = 502;
const MAX_COMMAND_MS = 24 * 3600_000;

declare module 'fastify' {
  interface FastifyRequest {
    sandboxId?: string;
  }
}

const Envs = z.record(z.string().max(4096), z.string().max(128 * 1024));
const Selector = z
  .object({ pid: z.number().int().positive().optional(), tag: z.string().max(128).optional() })
  .refine((p) => (p.pid === undefined) !== (p.tag === undefined), 'a process by its pid or its tag');
const StartRequest = z.object({
  process: z.object({
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string()).max(4096).default([]),
    envs: Envs.default({}),
    cwd: z.string().max(4096).optional(),
  }),
  pty: z.object({ size: z.object({ cols: z.number(), rows: z.number() }) }).optional(),
  tag: z.string().max(128).optional(),
  stdin: z.boolean().optional(),
});
const ConnectRequest = z.object({ process: Selector });
const SendSignalRequest = z.object({
  process: Selector,
  signal: z.enum(['SIGNAL_SIGKILL', 'SIGNAL_SIGTERM', 'SIGNAL_UNSPECIFIED']).default('SIGNAL_UNSPECIFIED'),
});
const CloseStdinRequest = z.object({ process: Selector });
const Input = z.object({ stdin: z.string().optional(), pty: z.string().optional() });
const SendInputRequest = z.object({ process: Selector, input: Input });
const StreamInputMessage = z.union([
  z.object({ start: z.object({ process: Selector }) }),
  z.object({ data: z.object({ input: Input }) }),
  z.object({ keepalive: z.object({}).loose() }),
]);
const UpdateRequest = z.object({
  process: Selector,
  pty: z.object({ size: z.object({ cols: z.number(), rows: z.number() }) }).optional(),
});
type ProcessEnd = Extract<AgentProcessEvent, { type: 'end' }>;
const PathRequest = z.object({ path: z.string().min(1).max(4096) });
const ListDirRequest = PathRequest.extend({ depth: z.number().int().min(0).max(32).optional() });
const WatcherRequest = z.object({ watcherId: z.string().min(1).max(64) });
const MoveRequest = z.object({
  source: z.string().min(1).max(4096),
  destination: z.string().min(1).max(4096),
});

export function registerEnvdRoutes(app: FastifyInstance<Server>, deps: EnvdDeps): void {
  const { sandboxes, envdAccess } = deps;
  const watchers = new PolledWatchers(sandboxes);
  app.addHook('onClose', async () => watchers.closeAll());
  // Bodies are read by the handlers: bounded for RPCs, streamed into the sandbox for files.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  app.setErrorHandler((err, req, reply) => {
    const { status, body } =
      err instanceof ConnectError
        ? { status: CONNECT_CODES[err.code], body: { code: CONNECT_CODES[err.code], message: err.message } }
        : e2bError(err);
    if (status >= 500) req.log.error({ err }, 'e2b data plane request failed');
    void reply.status(status).send(body);
  });

  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url ?? '';
    // A signed link as the SDK builds it has no sandbox id: the sandbox whose key signed it is its.
    const id =
      req.headers['e2b-sandbox-id'] ??
      (route.endsWith('/files') && req.headers['x-access-token'] === undefined
        ? await signerOf(req)
        : undefined);
    const gone = () =>
      reply.status(GONE_STATUS).send({
        sandboxId: typeof id === 'string' ? id : '',
        message: 'The sandbox was not found',
        code: GONE_STATUS,
      });
    if (id === undefined && route.endsWith('/files'))
      return reply.status(401).send({ code: 401, message: 'the link is not signed by any running sandbox' });
    if (typeof id !== 'string' || !/^[a-z0-9]{1,40}$/.test(id)) return gone();
    const info = await sandboxes.get(id, HOLDER).catch(() => null);
    if (info?.state !== 'running') return gone();
    const token = req.headers['x-access-token'];
    const presented = typeof token === 'string' ? token : undefined;
    if (route.endsWith('/health')) return;
    // A signed link (the SDK's uploadUrl/downloadUrl) stands for the key on the file routes.
    const signed =
      route.endsWith('/files') && presented === undefined && signedFor(req, envdAccess.keyOf(id));
    if (!signed && !envdAccess.verify(id, presented)) {
      const message = 'missing or wrong X-Access-Token for this sandbox';
      // (A Connect client reads the code from the body's string, an E2B REST client from its number.)
      return reply.status(401).send({ code: route.includes('.') ? 'unauthenticated' : 401, message });
    }
    req.sandboxId = id;
  });
  const idOf = (req: FastifyRequest) => req.sandboxId!;

  /** The running sandbox whose key signed this file link (one hash per running sandbox). */
  async function signerOf(req: FastifyRequest): Promise<string | undefined> {
    const signature = (req.query as Record<string, unknown>).signature;
    if (typeof signature !== 'string' || !/^v1_[A-Za-z0-9+/]{43}$/.test(signature)) return undefined;
    const running = await sandboxes.list(HOLDER, { states: ['running'] });
    return running.find((s) => signedFor(req, envdAccess.keyOf(s.id)))?.id;
  }

  app.get('/health', async (_req, reply) => reply.status(204).send());

  app.get('/files', async (req, reply) => {
    const file = resolvePath(z.object({ path: z.string().min(1).max(4096) }).parse(req.query).path);
    const body = await sandboxes.readFile(idOf(req), file, HOLDER);
    const length = body.headers['content-length'];
    void reply.header('content-type', 'application/octet-stream');
    if (length !== undefined) void reply.header('content-length', length);
    return reply.send(body);
  });

  app.post('/files', async (req, reply) => {
    const query = z.object({ path: z.string().max(4096).optional() }).parse(req.query);
    const type = req.headers['content-type'] ?? '';
    const body = req.body as Readable;
    const written: SandboxFileEntry[] = [];
    if (type.startsWith('multipart/form-data')) {
      for await (const part of fileParts(req.raw.headers, body)) {
        const target = query.path ?? part.filename;
        if (!target) {
          part.stream.resume();
          throw new ConnectError('invalid_argument', 'a file part without a path');
        }
        written.push(await sandboxes.writeFile(idOf(req), resolvePath(target), part.stream, HOLDER));
      }
    } else {
      if (!query.path) throw new ConnectError('invalid_argument', 'path is required');
      const gzipped = /\bgzip\b/.test(String(req.headers['content-encoding'] ?? ''));
      let stream: Readable = body;
      if (gzipped) {
        // A client that goes away, or bytes that are not gzip, fail the write (not hang it).
        const gunzip = createGunzip();
        pipeline(body, gunzip).catch(() => {});
        stream = gunzip;
      }
      written.push(await sandboxes.writeFile(idOf(req), resolvePath(query.path), stream, HOLDER));
    }
    return reply.send(written.map((e) => ({ path: e.path, name: e.name, type: 'file' })));
  });

  // Connect RPC: every method answers in its own way, errors included.
  app.post('/process.Process/:method', async (req, reply) => {
    reply.hijack();
    const method = (req.params as { method: string }).method;
    try {
      if (method === 'Start' || method === 'Connect') return await streamProcess(req, reply, method);
      if (method === 'StreamInput') return await streamInput(req, reply);
      const message = await unaryMessage(req);
      const id = idOf(req);
      switch (method) {
        case 'List':
          return sendUnary(reply.raw, {
            processes: (await sandboxes.processes(id, HOLDER)).map(processInfo),
          });
        case 'SendInput': {
          const { process, input } = SendInputRequest.parse(message);
          // (A terminal's input is the command's stdin, on the agent's side.)
          const bytes = Buffer.from(input.pty ?? input.stdin ?? '', 'base64');
          await sandboxes.stdin(id, await pidOf(id, process), Readable.from([bytes]), false, HOLDER);
          return sendUnary(reply.raw, {});
        }
        case 'CloseStdin': {
          const { process } = CloseStdinRequest.parse(message);
          await sandboxes.stdin(id, await pidOf(id, process), Readable.from([]), true, HOLDER);
          return sendUnary(reply.raw, {});
        }
        case 'SendSignal': {
          const { process, signal } = SendSignalRequest.parse(message);
          await sandboxes.signal(
            id,
            await pidOf(id, process),
            { signal: signal === 'SIGNAL_SIGTERM' ? 'SIGTERM' : 'SIGKILL' },
            HOLDER,
          );
          return sendUnary(reply.raw, {});
        }
        case 'Update': {
          const { process, pty } = UpdateRequest.parse(message);
          if (pty) await sandboxes.resize(id, await pidOf(id, process), pty.size, HOLDER);
          return sendUnary(reply.raw, {});
        }
      }
      throw new ConnectError('unimplemented', `process.Process/${method} is not supported`);
    } catch (err) {
      return sendRpcError(reply, err);
    }
  });

  app.post('/filesystem.Filesystem/:method', async (req, reply) => {
    reply.hijack();
    const method = (req.params as { method: string }).method;
    try {
      if (method === 'WatchDir') return await streamWatch(req, reply);
      const message = await unaryMessage(req);
      const id = idOf(req);
      const op = (name: 'stat' | 'list' | 'mkdir' | 'rename' | 'remove', query: Record<string, string>) =>
        sandboxes.fileOp(id, name, query, HOLDER);
      switch (method) {
        case 'Stat': {
          const file = resolvePath(PathRequest.parse(message).path);
          return sendUnary(reply.raw, {
            entry: entryInfo((await op('stat', { path: file })) as SandboxFileEntry),
          });
        }
        case 'ListDir': {
          const { path: dir, depth } = ListDirRequest.parse(message);
          const listed = (await op('list', {
            path: resolvePath(dir),
            depth: String(Math.max(1, depth ?? 1)),
          })) as {
            entries: SandboxFileEntry[];
          };
          return sendUnary(reply.raw, { entries: listed.entries.map(entryInfo) });
        }
        case 'MakeDir': {
          const dir = resolvePath(PathRequest.parse(message).path);
          const existing = (await op('stat', { path: dir }).catch(() => null)) as SandboxFileEntry | null;
          if (existing?.type === 'dir')
            throw new ConnectError('already_exists', `directory ${dir} already exists`);
          if (existing) throw new ConnectError('invalid_argument', `${dir} exists and is not a directory`);
          await op('mkdir', { path: dir });
          return sendUnary(reply.raw, {
            entry: entryInfo((await op('stat', { path: dir })) as SandboxFileEntry),
          });
        }
        case 'Move': {
          const { source, destination } = MoveRequest.parse(message);
          const to = resolvePath(destination);
          await op('mkdir', { path: path.posix.dirname(to) });
          const entry = (await op('rename', { path: resolvePath(source), to })) as SandboxFileEntry;
          return sendUnary(reply.raw, { entry: entryInfo(entry) });
        }
        case 'Remove': {
          const file = resolvePath(PathRequest.parse(message).path);
          // Gone already is done (as `rm -rf`).
          await op('remove', { path: file }).catch((err: unknown) => {
            if (rpcCodeOf(err) !== 'not_found') throw err;
          });
          return sendUnary(reply.raw, {});
        }
        case 'CreateWatcher':
          return sendUnary(reply.raw, { watcherId: await watchers.create(id, message, HOLDER) });
        case 'GetWatcherEvents':
          return sendUnary(reply.raw, { events: watchers.take(id, WatcherRequest.parse(message).watcherId) });
        case 'RemoveWatcher':
          watchers.remove(id, WatcherRequest.parse(message).watcherId);
          return sendUnary(reply.raw, {});
      }
      throw new ConnectError('unimplemented', `filesystem.Filesystem/${method} is not supported`);
    } catch (err) {
      return sendRpcError(reply, err);
    }
  });

  /** The pid a selector names (by tag: the process started with it). */
  async function pidOf(id: string, selector: z.output<typeof Selector>): Promise<number> {
    if (selector.pid !== undefined) return selector.pid;
    const tagged = (await sandboxes.processes(id, HOLDER)).find((p) => p.tag === selector.tag);
    if (!tagged) throw new ConnectError('not_found', `process with tag ${selector.tag} not found`);
    return tagged.pid;
  }

  /**
   * StreamInput (client streaming): `start` names the process, then each `data` goes to its
   * input (stdin, or its terminal) as it arrives, one message at a time; the answer comes once
   * the client ends its stream. The process's input stays open (CloseStdin closes it).
   */
  async function streamInput(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const id = idOf(req);
    let input: PassThrough | undefined;
    let sent: Promise<void> | undefined;
    try {
      if (!String(req.headers['content-type'] ?? '').startsWith('application/connect+json'))
        throw new ConnectError('invalid_argument', 'a streaming call needs application/connect+json');
      for await (const message of requestMessages(req.body as Readable)) {
        const event = StreamInputMessage.parse(message);
        if ('start' in event) {
          if (input) throw new ConnectError('invalid_argument', 'start comes once, first');
          const pid = await pidOf(id, event.start.process);
          input = new PassThrough();
          sent = sandboxes.stdin(id, pid, input, false, HOLDER);
        } else if ('data' in event) {
          if (!input || !sent) throw new ConnectError('invalid_argument', 'start comes first');
          const bytes = Buffer.from(event.data.input.pty ?? event.data.input.stdin ?? '', 'base64');
          // The sandbox takes it in at its pace: the next message is read once this one is.
          if (!input.write(bytes)) await Promise.race([once(input, 'drain'), sent]);
        }
      }
      input?.end();
      await sent;
      const stream = new ServerStream(reply.raw);
      await stream.send({});
      stream.end();
    } catch (err) {
      input?.destroy();
      sent?.catch(() => {});
      new ServerStream(reply.raw).end(new ConnectError(rpcCodeOf(err), messageOf(err)));
    }
  }

  /**
   * WatchDir: `start` once the directory (and, recursive, every one under it) is watched, then
   * each change, keepalives while quiet, until the client goes away or its deadline
   * (Connect-Timeout-Ms) passes; a watch that ends by itself (its directory removed, changes
   * faster than the client reads) ends the stream with why.
   */
  async function streamWatch(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const stream = new ServerStream(reply.raw);
    let watch: DirectoryWatch | undefined;
    let keepalive: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    reply.raw.once('close', () => watch?.close());
    try {
      const message = await streamRequest(req);
      watch = await DirectoryWatch.open(sandboxes, idOf(req), message, HOLDER);
      if (reply.raw.destroyed) return watch.close();
      const timeoutMs = timeoutOf(req.headers['connect-timeout-ms']);
      let timedOut = false;
      if (timeoutMs > 0)
        deadline = setTimeout(() => {
          timedOut = true;
          watch?.close();
        }, timeoutMs);
      await stream.send({ start: {} });
      keepalive = keepaliveTimer(req, stream, { keepalive: {} });
      for await (const event of watch.events()) await stream.send({ filesystem: event });
      stream.end(
        timedOut ? new ConnectError('deadline_exceeded', 'the watch reached its timeout') : undefined,
      );
    } catch (err) {
      watch?.close();
      stream.end(new ConnectError(rpcCodeOf(err), messageOf(err)));
    } finally {
      clearInterval(keepalive);
      clearTimeout(deadline);
    }
  }

  /**
   * Start (a new process) or Connect (to a running one): the agent's events as Connect messages,
   * keepalives while quiet, and the end. Always HTTP 200 with errors in the end of the stream (a
   * streaming client reads its error there). Ending the stream does not end the process: its
   * deadline (Connect-Timeout-Ms, none without it) or a kill does.
   */
  async function streamProcess(
    req: FastifyRequest,
    reply: FastifyReply,
    method: 'Start' | 'Connect',
  ): Promise<void> {
    const id = idOf(req);
    const stream = new ServerStream(reply.raw);
    let events: IncomingMessage | undefined;
    // The client went away (now, or while the sandbox was asked): stop reading; the process lives on.
    reply.raw.once('close', () => events?.destroy());
    let keepalive: NodeJS.Timeout | undefined;
    try {
      const message = await streamRequest(req);
      let pid: number | undefined;
      if (method === 'Start') {
        const start = StartRequest.parse(message);
        const user = basicUser(req.headers.authorization);
        events = await sandboxes.runProgram(
          id,
          [start.process.cmd, ...start.process.args],
          {
            envs: start.process.envs,
            ...(start.process.cwd ? { cwd: start.process.cwd } : {}),
            ...(user ? { user } : {}),
            stdin: start.stdin ?? false,
            timeoutMs: Math.min(timeoutOf(req.headers['connect-timeout-ms']), MAX_COMMAND_MS),
            ...(start.tag ? { tag: start.tag } : {}),
            ...(start.pty ? { pty: start.pty.size } : {}),
          },
          HOLDER,
        );
      } else {
        pid = await pidOf(id, ConnectRequest.parse(message).process);
        events = await sandboxes.attach(id, pid, HOLDER);
      }
      if (reply.raw.destroyed) {
        events.destroy();
        return;
      }
      const startKeepalive = () => {
        keepalive ??= keepaliveTimer(req, stream, { event: { keepalive: {} } });
      };
      if (pid !== undefined) {
        await stream.send({ event: { start: { pid } } });
        startKeepalive();
      }
      let end: ProcessEnd | undefined;
      for await (const line of ndjsonLines(events)) {
        const event = AgentProcessEvent.parse(JSON.parse(line));
        if (event.type === 'start') {
          if (pid === undefined) await stream.send({ event: { start: { pid: event.pid } } });
          startKeepalive();
        } else if (event.type === 'stdout' || event.type === 'stderr' || event.type === 'pty') {
          await stream.send({ event: { data: { [event.type]: event.data } } });
        } else if (event.type === 'end') {
          end = event;
          await stream.send({ event: { end: endOf(event) } });
        }
      }
      stream.end(
        !end
          ? new ConnectError('unavailable', 'the sandbox went away while the command ran')
          : end.timedOut
            ? new ConnectError('deadline_exceeded', 'the command ran past its timeout and was killed')
            : undefined,
      );
    } catch (err) {
      events?.destroy();
      // What was asked is answered with its reason; a broken stream from the sandbox as gone.
      const code = rpcCodeOf(err);
      stream.end(
        code === 'internal'
          ? new ConnectError('unavailable', 'the sandbox went away while the command ran')
          : new ConnectError(code, messageOf(err)),
      );
    } finally {
      clearInterval(keepalive);
    }
  }
}

/** The one message of a server-streaming request. */
async function streamRequest(req: FastifyRequest): Promise<unknown> {
  if (!String(req.headers['content-type'] ?? '').startsWith('application/connect+json'))
    throw new ConnectError('invalid_argument', 'a streaming call needs application/connect+json');
  return openRequestEnvelope(await readBody(req.body as Readable));
}

/** Sends `message` on a quiet stream every `Keepalive-Ping-Interval` seconds (50 without one). */
function keepaliveTimer(req: FastifyRequest, stream: ServerStream, message: unknown): NodeJS.Timeout {
  const interval = Number(req.headers['keepalive-ping-interval']);
  return setInterval(
    () => void stream.send(message),
    Number.isFinite(interval) && interval >= 1 ? Math.min(interval, 300) * 1000 : 50_000,
  );
}

function sendRpcError(reply: FastifyReply, err: unknown): void {
  const error = err instanceof ConnectError ? err : new ConnectError(rpcCodeOf(err), messageOf(err));
  if (reply.raw.headersSent) {
    reply.raw.end();
    return;
  }
  sendUnary(reply.raw, error);
}

/** A service error as the Connect code the SDK turns into the matching error class. */
function rpcCodeOf(err: unknown): ConnectCode {
  if (err instanceof ConnectError) return err.code;
  const { status } = e2bError(err);
  const byStatus: Record<number, ConnectCode> = {
    400: 'invalid_argument',
    401: 'unauthenticated',
    403: 'permission_denied',
    404: 'not_found',
    409: 'failed_precondition',
    429: 'resource_exhausted',
    503: 'unavailable',
  };
  return byStatus[status] ?? 'internal';
}

function messageOf(err: unknown): string {
  return err instanceof ConnectError ? err.message : e2bError(err).body.message;
}

async function unaryMessage(req: FastifyRequest): Promise<unknown> {
  if (!String(req.headers['content-type'] ?? '').startsWith('application/json'))
    throw new ConnectError('invalid_argument', 'a unary call needs application/json');
  return parseJson(await readBody(req.body as Readable));
}

async function readBody(stream: Readable | undefined): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > MAX_REQUEST_BYTES) {
      // The rest is read and dropped, so the client gets the answer (nothing more is kept).
      stream.resume();
      throw new ConnectError(
        'resource_exhausted',
        `a request message is at most ${MAX_REQUEST_BYTES} bytes`,
        true,
      );
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** The user of `Authorization: Basic base64(user:)`, as the SDK sends it. */
function basicUser(header: string | undefined): string | undefined {
  const encoded = /^Basic\s+([A-Za-z0-9+/=]{1,200})$/i.exec(header ?? '')?.[1];
  if (!encoded) return undefined;
  const user = Buffer.from(encoded, 'base64').toString('utf8').split(':')[0];
  return user || undefined;
}

/** E2B's end event from the agent's (Go's wording, which the SDK shows in its errors). */
function endOf(event: ProcessEnd) {
  if (event.signal) {
    const name = event.signal === 'SIGKILL' ? 'killed' : event.signal.toLowerCase().replace(/^sig/, '');
    return { exitCode: -1, exited: false, status: `signal: ${name}`, error: `signal: ${name}` };
  }
  const status = `exit status ${event.exitCode}`;
  return {
    exitCode: event.exitCode,
    exited: true,
    status,
    ...(event.exitCode !== 0 ? { error: status } : {}),
  };
}

function processInfo(p: SandboxProcess) {
  return {
    pid: p.pid,
    ...(p.tag ? { tag: p.tag } : {}),
    config: { cmd: p.cmd[0] ?? '', args: p.cmd.slice(1), envs: {}, cwd: p.cwd },
  };
}

/**
 * A signed `/files` URL (the SDK's `uploadUrl`/`downloadUrl`): `v1_` and the unpadded base64 of
 * SHA-256 over `path:operation:user:key[:expiry]`, compared in constant time, not past its expiry.
 */
function signedFor(req: FastifyRequest, key: string): boolean {
  const query = req.query as Record<string, string | undefined>;
  const signature = query.signature;
  if (!signature) return false;
  const expiry = query.signature_expiration;
  if (expiry !== undefined && !(/^\d{1,12}$/.test(expiry) && Number(expiry) * 1000 > Date.now()))
    return false;
  const operation = req.method === 'GET' ? 'read' : 'write';
  const raw = [query.path ?? '', operation, query.username ?? '', key, ...(expiry ? [expiry] : [])].join(':');
  const expected = `v1_${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
  const [a, b] = [Buffer.from(expected), Buffer.from(signature)];
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The file parts of a multipart upload, one at a time (each is written before the next is read). */
async function* fileParts(
  headers: IncomingMessage['headers'],
  body: Readable,
): AsyncGenerator<{ filename: string | undefined; stream: Readable }> {
  const parts = new PassThrough({ objectMode: true });
  const busboy = new Busboy({
    headers: headers as never,
    preservePath: true,
    limits: { files: 1000, fields: 100 },
  });
  busboy.on('file', (field, stream, filename) => {
    if (field !== 'file') {
      stream.resume();
      return;
    }
    // Paused until it is this part's turn: the writer reads it.
    parts.write({ filename: filename || undefined, stream });
  });
  busboy.on('finish', () => parts.end());
  // A client that goes away mid-upload ends the parts with an error (busboy alone would wait).
  pipeline(body, busboy).catch((err: Error) => parts.destroy(err));
  for await (const part of parts) yield part as { filename: string | undefined; stream: Readable };
}
