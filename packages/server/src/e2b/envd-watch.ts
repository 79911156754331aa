/**
 * Watching directories for E2B's `filesystem.Filesystem`: `WatchDir` (a server stream: what the JS
 * SDK's `files.watchDir` uses) and the polled watchers `CreateWatcher` / `GetWatcherEvents` /
 * `RemoveWatcher` (what the Python SDK's synchronous `watch_dir` uses), both on the sandbox agent's
 * watch (inotify inside the sandbox). Nothing here grows with what the sandbox does: a polled
 * watcher keeps a bounded number of changes, and watchers are counted per sandbox.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { SandboxFileEntry } from '@mayfly/contract';
import * as z from 'zod';
import type { Access } from '../access/access.js';
import { ndjsonLines } from '../sandbox/process-events.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import { ConnectError } from './connect-protocol.js';
import { entryInfo, resolvePath } from './envd-messages.js';

export const WatchDirRequest = z.object({
  path: z.string().min(1).max(4096),
  recursive: z.boolean().default(false),
  includeEntry: z.boolean().default(false),
  // Nothing in a sandbox is a network mount: accepted, and means nothing here.
  allowNetworkMounts: z.boolean().default(false),
});

const OPS = ['create', 'write', 'remove', 'rename', 'chmod'] as const;
/** The agent's watch events, checked: the sandbox (and so its agent) is not trusted. */
const AgentWatchEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('start') }),
  z.object({
    type: z.literal('event'),
    name: z.string().max(8192),
    op: z.enum(OPS),
    entry: SandboxFileEntry.optional(),
  }),
  z.object({
    type: z.literal('end'),
    code: z.enum(['removed', 'moved', 'overflow', 'too_many']),
    error: z.string().max(1024),
  }),
]);

/** E2B's `FilesystemEvent`. */
export interface FilesystemEvent {
  name: string;
  type: `EVENT_TYPE_${Uppercase<(typeof OPS)[number]>}`;
  entry?: ReturnType<typeof entryInfo>;
}

/** A watch in a sandbox, started (every directory it names is watched) and not yet closed. */
export class DirectoryWatch {
  private constructor(
    private readonly stream: IncomingMessage,
    private readonly lines: AsyncGenerator<string>,
  ) {}

  static async open(sandboxes: SandboxService, id: string, message: unknown, access: Access) {
    const request = WatchDirRequest.parse(message);
    const stream = await sandboxes.watchDir(
      id,
      resolvePath(request.path),
      { recursive: request.recursive, entry: request.includeEntry },
      access,
    );
    const lines = ndjsonLines(stream);
    try {
      const first = await lines.next();
      if (first.done || AgentWatchEvent.parse(JSON.parse(first.value)).type !== 'start')
        throw new ConnectError('unavailable', 'the sandbox went away before the watch started');
    } catch (err) {
      stream.destroy();
      throw err instanceof ConnectError
        ? err
        : new ConnectError('unavailable', 'the sandbox broke the watch');
    }
    return new DirectoryWatch(stream, lines);
  }

  /** The changes as they happen; ends when the watch is closed, throws when it ends by itself. */
  async *events(): AsyncGenerator<FilesystemEvent> {
    let event: z.output<typeof AgentWatchEvent>;
    try {
      for await (const line of this.lines) {
        event = AgentWatchEvent.parse(JSON.parse(line));
        if (event.type === 'end') {
          const code =
            event.code === 'overflow' || event.code === 'too_many' ? 'resource_exhausted' : 'not_found';
          throw new ConnectError(code, event.error);
        }
        if (event.type === 'event')
          yield {
            name: event.name,
            type: `EVENT_TYPE_${event.op.toUpperCase() as Uppercase<typeof event.op>}`,
            ...(event.entry ? { entry: entryInfo(event.entry) } : {}),
          };
      }
    } catch (err) {
      if (this.stream.destroyed && !(err instanceof ConnectError)) return; // closed here
      throw err instanceof ConnectError
        ? err
        : new ConnectError('unavailable', 'the sandbox broke the watch');
    }
    if (!this.stream.destroyed) throw new ConnectError('unavailable', 'the sandbox went away');
  }

  close(): void {
    this.stream.destroy();
  }
}

/** Limits of the polled watchers. */
export interface PolledWatcherLimits {
  /** Watchers one sandbox may have at once. */
  perSandbox: number;
  /** Changes a watcher keeps until they are read; more end it (as the kernel's queue would). */
  maxEvents: number;
  /** Bytes of unread changes (as JSON) a watcher keeps; more end it the same way. */
  maxBytes: number;
  /**
   * Bytes of unread changes kept by every watcher of this control plane together: a watcher whose
   * change would pass it ends, so many sandboxes' watchers cannot add up past the server's memory.
   */
  totalBytes: number;
  /** A watcher not read for this long is removed. */
  idleMs: number;
}

interface PolledWatcher {
  id: string;
  sandboxId: string;
  watch: DirectoryWatch;
  events: FilesystemEvent[];
  /** Bytes (as JSON) of its unread events. */
  bytes: number;
  /** Why it ended by itself, told on the next read. */
  error?: ConnectError;
  idle: NodeJS.Timeout;
}

/** The polled watchers of every sandbox this control plane serves (in its memory, bounded). */
export class PolledWatchers {
  private readonly watchers = new Map<string, PolledWatcher>();
  /** Bytes of unread events across every watcher. */
  private unreadBytes = 0;

  constructor(
    private readonly sandboxes: SandboxService,
    private readonly limits: PolledWatcherLimits = {
      perSandbox: 16,
      maxEvents: 10_000,
      maxBytes: 4 * 1024 * 1024,
      totalBytes: 64 * 1024 * 1024,
      idleMs: 10 * 60_000,
    },
  ) {}

  async create(sandboxId: string, message: unknown, access: Access): Promise<string> {
    const count = [...this.watchers.values()].filter((w) => w.sandboxId === sandboxId).length;
    if (count >= this.limits.perSandbox)
      throw new ConnectError(
        'resource_exhausted',
        `a sandbox has at most ${this.limits.perSandbox} watchers: remove one first`,
      );
    const watch = await DirectoryWatch.open(this.sandboxes, sandboxId, message, access);
    const id = randomBytes(12).toString('hex');
    const watcher: PolledWatcher = { id, sandboxId, watch, events: [], bytes: 0, idle: this.idleTimer(id) };
    this.watchers.set(id, watcher);
    void this.collect(watcher);
    return id;
  }

  /** The changes since the last read (or the error that ended the watcher, which removes it). */
  take(sandboxId: string, watcherId: string): FilesystemEvent[] {
    const watcher = this.find(sandboxId, watcherId);
    const events = watcher.events.splice(0);
    this.unreadBytes -= watcher.bytes;
    watcher.bytes = 0;
    if (watcher.error && events.length === 0) {
      this.remove(sandboxId, watcherId);
      throw watcher.error;
    }
    watcher.idle.refresh();
    return events;
  }

  remove(sandboxId: string, watcherId: string): void {
    const watcher = this.find(sandboxId, watcherId);
    clearTimeout(watcher.idle);
    watcher.watch.close();
    this.unreadBytes -= watcher.bytes;
    watcher.bytes = 0;
    watcher.events = [];
    this.watchers.delete(watcherId);
  }

  /** Ends every watcher (the control plane is stopping). */
  closeAll(): void {
    for (const [id, watcher] of this.watchers) this.remove(watcher.sandboxId, id);
  }

  private find(sandboxId: string, watcherId: string): PolledWatcher {
    const watcher = this.watchers.get(watcherId);
    // Another sandbox's watcher is not found either (its id says nothing about it).
    if (!watcher || watcher.sandboxId !== sandboxId)
      throw new ConnectError('not_found', `watcher ${watcherId} not found`);
    return watcher;
  }

  private idleTimer(watcherId: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const watcher = this.watchers.get(watcherId);
      if (watcher) this.remove(watcher.sandboxId, watcherId);
    }, this.limits.idleMs);
    timer.unref();
    return timer;
  }

  private async collect(watcher: PolledWatcher): Promise<void> {
    try {
      for await (const event of watcher.watch.events()) {
        const size = JSON.stringify(event).length;
        const why =
          watcher.events.length >= this.limits.maxEvents
            ? `more than ${this.limits.maxEvents} changes were waiting to be read`
            : watcher.bytes + size > this.limits.maxBytes
              ? `more than ${this.limits.maxBytes} bytes of changes were waiting to be read`
              : this.unreadBytes + size > this.limits.totalBytes
                ? "the server's watchers together hold as many unread changes as it keeps"
                : undefined;
        if (why) {
          watcher.watch.close();
          throw new ConnectError('resource_exhausted', `${why}: the watcher ended`);
        }
        if (!this.watchers.has(watcher.id)) return; // removed meanwhile
        watcher.events.push(event);
        watcher.bytes += size;
        this.unreadBytes += size;
      }
    } catch (err) {
      watcher.error =
        err instanceof ConnectError ? err : new ConnectError('unavailable', 'the sandbox broke the watch');
    }
  }
}
