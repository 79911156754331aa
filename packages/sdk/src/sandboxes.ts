/**
 * Sandboxes for untrusted code and agents, in the shape E2B's SDK made familiar:
 *
 * ```ts
 * const sbx = await Sandbox.create({ timeoutMs: 60_000 }); // MAYFLY_URL / MAYFLY_TOKEN
 * const { exitCode, stdout } = await sbx.commands.run('python3 -c "print(1 + 1)"');
 * await sbx.files.write('/home/user/data.txt', 'hello');
 * await sbx.kill();
 * ```
 */
import {
  type CreateSandboxRequest,
  type CreateSandboxTemplateRequest,
  type ProcessEvent,
  SandboxFileEntry,
  SandboxInfo,
  SandboxPaths,
  SandboxProcess,
  type SandboxState,
  SandboxTemplateInfo,
} from '@mayfly/contract';
import * as z from 'zod';
import { MayflyError, NotFoundError } from './errors.js';
import { type FetchLike, HttpClient } from './http.js';
import { readLines } from './lines.js';

/** Where the server is: options, else `MAYFLY_URL` and `MAYFLY_TOKEN`. */
export interface SandboxConnection {
  baseUrl?: string;
  token?: string;
  fetch?: FetchLike;
}

export interface SandboxCreateOptions extends SandboxConnection {
  template?: string;
  timeoutMs?: number;
  envs?: Record<string, string>;
  metadata?: Record<string, string>;
  cpu?: number;
  memoryMb?: number;
  /** IPv4 addresses, CIDRs or host names it may connect to; nothing else (default: no network). */
  allowOut?: string[];
}

export interface RunOptions {
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Killed (with everything it started) after this long; default 60 s, 0: no limit. */
  timeoutMs?: number;
  /** Written to its stdin, which is then closed; `true` keeps stdin open for `sendStdin`. */
  stdin?: string | Uint8Array | true;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  signal?: AbortSignal;
}

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The signal that ended it, if one did. */
  signal?: string;
}

/** A command's time ran out: it was killed. What it printed until then is kept. */
export class CommandTimeoutError extends MayflyError {
  constructor(
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super('the command ran past its timeout and was killed', { code: 'timeout' });
  }
}

const Entry = SandboxFileEntry;
const Entries = z.object({ entries: z.array(Entry) });
const Processes = z.object({ items: z.array(SandboxProcess) });
const Ok = z.object({ ok: z.literal(true) });
const MAX_EVENT_CHARS = 1024 * 1024;

function client(options: SandboxConnection = {}): HttpClient {
  const baseUrl = options.baseUrl ?? process.env.MAYFLY_URL;
  if (!baseUrl)
    throw new MayflyError('no server: pass baseUrl or set MAYFLY_URL', { code: 'invalid_request' });
  return new HttpClient({ baseUrl, token: options.token ?? process.env.MAYFLY_TOKEN, fetch: options.fetch });
}

/** A command started with `background: true`, or attached to. */
export class CommandHandle {
  #result: Promise<CommandResult>;
  constructor(
    readonly pid: number,
    result: Promise<CommandResult>,
    private readonly http: HttpClient,
    private readonly sandboxId: string,
  ) {
    this.#result = result;
    this.#result.catch(() => {}); // the caller may only ever kill it
  }

  /** Resolves when it ends, with its exit code and all it printed. */
  wait(): Promise<CommandResult> {
    return this.#result;
  }

  async sendStdin(data: string | Uint8Array, options: { close?: boolean } = {}): Promise<void> {
    await this.http.json('POST', SandboxPaths.stdin(this.sandboxId, this.pid), Ok, {
      raw: { contentType: 'application/octet-stream', data: bytes(data) },
      query: { close: options.close ? '1' : undefined },
    });
  }

  /** SIGKILL to it and everything it started. */
  async kill(signal = 'SIGKILL'): Promise<void> {
    await this.http.json('POST', SandboxPaths.signal(this.sandboxId, this.pid), Ok, { body: { signal } });
  }
}

const bytes = (data: string | Uint8Array) =>
  typeof data === 'string' ? new TextEncoder().encode(data) : data;

export class Commands {
  constructor(
    private readonly http: HttpClient,
    private readonly sandboxId: string,
  ) {}

  /** Runs `cmd` by `/bin/sh -c` and resolves when it ends (any exit code). */
  run(cmd: string, options?: RunOptions & { background?: false }): Promise<CommandResult>;
  /** Starts `cmd` and resolves with a handle once it runs. */
  run(cmd: string, options: RunOptions & { background: true }): Promise<CommandHandle>;
  async run(
    cmd: string,
    options: RunOptions & { background?: boolean } = {},
  ): Promise<CommandResult | CommandHandle> {
    const response = await this.http.send('POST', SandboxPaths.processes(this.sandboxId), {
      body: {
        cmd,
        envs: options.envs ?? {},
        ...(options.cwd ? { cwd: options.cwd } : {}),
        ...(options.user ? { user: options.user } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        stdin: options.stdin !== undefined,
      },
      accept: 'application/x-ndjson',
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!response.body)
      throw new MayflyError('the server sent no event stream', { code: 'invalid_response' });
    const events = readLines(response.body, MAX_EVENT_CHARS)[Symbol.asyncIterator]();
    const first = await events.next();
    const start = first.done ? undefined : (JSON.parse(first.value) as ProcessEvent);
    if (start?.type !== 'start')
      throw new MayflyError('the command did not start', { code: 'invalid_response' });
    const result = collect(events, options);
    const handle = new CommandHandle(start.pid, result, this.http, this.sandboxId);
    if (options.stdin !== undefined && options.stdin !== true) {
      // A command that ended (or stopped reading) before its input was sent did not want it.
      await handle.sendStdin(options.stdin, { close: true }).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    }
    return options.background ? handle : result;
  }

  /** Commands running in the sandbox. */
  async list(): Promise<SandboxProcess[]> {
    return (await this.http.json('GET', SandboxPaths.processes(this.sandboxId), Processes)).items;
  }
}

/** Reads a command's events to its end, passing output on as it comes. */
async function collect(events: AsyncIterator<string>, options: RunOptions): Promise<CommandResult> {
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  const text = { stdout: '', stderr: '' };
  for (;;) {
    const next = await events.next();
    if (next.done)
      throw new MayflyError('the event stream ended before the command did', { code: 'invalid_response' });
    // An event is at most 32 KiB of output in base64: a line far longer is not one of ours.
    if (next.value.length > MAX_EVENT_CHARS)
      throw new MayflyError('the server sent an event too large to be one', { code: 'invalid_response' });
    const event = JSON.parse(next.value) as ProcessEvent;
    if (event.type === 'stdout' || event.type === 'stderr') {
      const chunk = decoders[event.type].decode(Buffer.from(event.data, 'base64'), { stream: true });
      text[event.type] += chunk;
      if (chunk) (event.type === 'stdout' ? options.onStdout : options.onStderr)?.(chunk);
    } else if (event.type === 'end') {
      text.stdout += decoders.stdout.decode();
      text.stderr += decoders.stderr.decode();
      if (event.timedOut) throw new CommandTimeoutError(text.stdout, text.stderr);
      return {
        exitCode: event.exitCode,
        stdout: text.stdout,
        stderr: text.stderr,
        ...(event.signal ? { signal: event.signal } : {}),
      };
    }
  }
}

export class Files {
  constructor(
    private readonly http: HttpClient,
    private readonly sandboxId: string,
  ) {}

  /** Writes a file (its folders made): text, bytes, or a stream sent as it is read. */
  async write(
    path: string,
    data: string | Uint8Array | AsyncIterable<Uint8Array>,
  ): Promise<SandboxFileEntry> {
    return this.http.json('PUT', SandboxPaths.files(this.sandboxId), Entry, {
      query: { path },
      raw: {
        contentType: 'application/octet-stream',
        data: typeof data === 'string' || data instanceof Uint8Array ? bytes(data) : data,
      },
    });
  }

  read(path: string, options?: { format?: 'text' }): Promise<string>;
  read(path: string, options: { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, options: { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  async read(
    path: string,
    options: { format?: 'text' | 'bytes' | 'stream' } = {},
  ): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const response = await this.http.send('GET', SandboxPaths.files(this.sandboxId), {
      query: { path },
      accept: 'application/octet-stream',
    });
    if (options.format === 'stream') return response.body ?? new ReadableStream();
    const chunks: Uint8Array[] = [];
    if (response.body)
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
    const all = Buffer.concat(chunks);
    return options.format === 'bytes' ? new Uint8Array(all) : all.toString('utf8');
  }

  async list(path: string, options: { depth?: number } = {}): Promise<SandboxFileEntry[]> {
    return (
      await this.http.json('GET', SandboxPaths.fileAction(this.sandboxId, 'list'), Entries, {
        query: { path, depth: options.depth },
      })
    ).entries;
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.http.json('GET', SandboxPaths.fileAction(this.sandboxId, 'stat'), Entry, {
        query: { path },
      });
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  async remove(path: string): Promise<void> {
    await this.http.json('DELETE', SandboxPaths.files(this.sandboxId), Ok, { query: { path } });
  }

  /** True when it was made now, false when it was there. */
  async makeDir(path: string): Promise<boolean> {
    const { created } = await this.http.json(
      'POST',
      SandboxPaths.fileAction(this.sandboxId, 'mkdir'),
      z.object({ created: z.boolean() }),
      { query: { path } },
    );
    return created;
  }

  async rename(from: string, to: string): Promise<SandboxFileEntry> {
    return this.http.json('POST', SandboxPaths.fileAction(this.sandboxId, 'rename'), Entry, {
      query: { path: from, to },
    });
  }
}

export class Sandbox {
  readonly commands: Commands;
  readonly files: Files;

  private constructor(
    readonly id: string,
    private readonly http: HttpClient,
    private readonly urlTemplate: string,
  ) {
    this.commands = new Commands(http, id);
    this.files = new Files(http, id);
  }

  static async create(options: SandboxCreateOptions = {}): Promise<Sandbox> {
    const http = client(options);
    const request: CreateSandboxRequest = {
      ...(options.template ? { template: options.template } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.envs ? { envs: options.envs } : {}),
      ...(options.metadata ? { metadata: options.metadata } : {}),
      ...(options.cpu !== undefined ? { cpu: options.cpu } : {}),
      ...(options.memoryMb !== undefined ? { memoryMb: options.memoryMb } : {}),
      ...(options.allowOut ? { allowOut: options.allowOut } : {}),
    };
    const info = await http.json('POST', SandboxPaths.sandboxes, SandboxInfo, { body: request });
    return new Sandbox(info.id, http, info.urlTemplate);
  }

  /** A handle on a sandbox that exists (running or paused). @throws NotFoundError */
  static async connect(id: string, options: SandboxConnection = {}): Promise<Sandbox> {
    const http = client(options);
    const info = await http.json('GET', SandboxPaths.sandbox(id), SandboxInfo);
    if (info.state === 'ended')
      throw new NotFoundError(`sandbox ${id} has ended (${info.endedReason})`, { status: 404 });
    return new Sandbox(id, http, info.urlTemplate);
  }

  /** Thaws a paused sandbox and returns a handle on it. */
  static async resume(id: string, options: SandboxConnection = {}): Promise<Sandbox> {
    const http = client(options);
    const info = await http.json('POST', SandboxPaths.resume(id), SandboxInfo);
    return new Sandbox(id, http, info.urlTemplate);
  }

  /** Running and paused ones by default; `metadata` entries must all match. */
  static async list(
    options: SandboxConnection & { metadata?: Record<string, string>; state?: SandboxState[] } = {},
  ): Promise<SandboxInfo[]> {
    const http = client(options);
    const { items } = await http.json(
      'GET',
      SandboxPaths.sandboxes,
      z.object({ items: z.array(SandboxInfo) }),
      {
        query: {
          state: options.state?.join(','),
          metadata: options.metadata ? new URLSearchParams(options.metadata).toString() : undefined,
        },
      },
    );
    return items;
  }

  /** The URL of `port` inside the sandbox, through the gateway (`http://<port>--<id>.<domain>:<port>/`). */
  getHost(port: number): string {
    return this.urlTemplate.replace('{port}', String(port));
  }

  getInfo(): Promise<SandboxInfo> {
    return this.http.json('GET', SandboxPaths.sandbox(this.id), SandboxInfo);
  }

  /** Its time is up `timeoutMs` from now. */
  async setTimeout(timeoutMs: number): Promise<void> {
    await this.http.json('POST', SandboxPaths.timeout(this.id), SandboxInfo, { body: { timeoutMs } });
  }

  /** Freezes every process in it, memory kept; `Sandbox.resume(id)` thaws it. */
  async pause(): Promise<void> {
    await this.http.json('POST', SandboxPaths.pause(this.id), SandboxInfo);
  }

  async kill(): Promise<void> {
    await this.http.json('DELETE', SandboxPaths.sandbox(this.id), SandboxInfo);
  }
}

/** Sandbox templates: list them, make one (from an uploaded folder or an image), forget one. */
export const SandboxTemplates = {
  async list(options: SandboxConnection = {}): Promise<SandboxTemplateInfo[]> {
    const { items } = await client(options).json(
      'GET',
      SandboxPaths.templates,
      z.object({ items: z.array(SandboxTemplateInfo) }),
    );
    return items;
  },
  /** Waits for the build: a folder is built with its Dockerfile before this resolves. */
  async put(
    request: CreateSandboxTemplateRequest,
    options: SandboxConnection = {},
  ): Promise<SandboxTemplateInfo> {
    return client(options).json('POST', SandboxPaths.templates, SandboxTemplateInfo, { body: request });
  },
  async remove(name: string, options: SandboxConnection = {}): Promise<void> {
    await client(options).json('DELETE', SandboxPaths.template(name), Ok);
  },
};
