/**
 * Environment changes pushed to whoever watches (the dashboard's live list): while anyone
 * watches, the environments are read once a second and each watcher is sent those that changed,
 * or went, that its token may see. One read serves every watcher, however many there are; a
 * watcher that does not keep up is dropped rather than buffered without bound.
 */
import type { Environment } from '@mayfly/contract';
import { type Access, canSee, FULL_ACCESS } from '../access/access.js';
import type { EnvironmentService } from './environment-service.js';
import { QuotaExceededError } from './errors.js';

export type FeedEvent =
  | { type: 'snapshot'; items: Environment[] }
  | { type: 'change'; environment: Environment }
  | { type: 'gone'; id: string };

interface Watcher {
  access: Access;
  send(event: FeedEvent): boolean;
}

export interface EnvironmentFeedOptions {
  environments: Pick<EnvironmentService, 'list' | 'toResource'>;
  /** How often the environments are read while anyone watches; default 1 s. */
  intervalMs?: number;
  /** Watchers at once; past it, a watch is refused (429). Default 200. */
  maxWatchers?: number;
  /** Watchers with one token (or session) at once; default 10. */
  maxWatchersPerToken?: number;
  onError?(err: unknown): void;
}

export class EnvironmentFeed {
  private readonly watchers = new Set<Watcher>();
  /** What watchers were last sent, by id, as JSON (a change is any difference). */
  private known = new Map<string, { project: string; json: string; env: Environment }>();
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;

  constructor(private readonly options: EnvironmentFeedOptions) {}

  /**
   * Starts sending `send` the environments `access` sees: a snapshot, then each change. `send`
   * returns false when the watcher cannot take more (it is then dropped, and `onDrop` called).
   * Returns the function that stops it.
   */
  async watch(access: Access, send: Watcher['send'], onDrop: () => void): Promise<() => void> {
    if (this.watchers.size === 0) await this.readOnce();
    // Counted after the read, in the same step as the add below: a burst of watches all waiting
    // for the first read cannot pass the limits together.
    const max = this.options.maxWatchers ?? 200;
    if (this.watchers.size >= max)
      throw new QuotaExceededError(`at most ${max} watchers of the environments at once: close one`);
    const perToken = this.options.maxWatchersPerToken ?? 10;
    if ([...this.watchers].filter((w) => w.access.tokenId === access.tokenId).length >= perToken)
      throw new QuotaExceededError(`at most ${perToken} watchers of the environments per token: close one`);
    const watcher: Watcher = {
      access,
      send: (event) => {
        if (send(event)) return true;
        stop();
        onDrop();
        return false;
      },
    };
    const stop = () => {
      this.watchers.delete(watcher);
      if (this.watchers.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
    this.watchers.add(watcher);
    watcher.send({
      type: 'snapshot',
      items: [...this.known.values()].filter((k) => canSee(access, k.project)).map((k) => k.env),
    });
    this.timer ??= setInterval(() => {
      this.readOnce().catch((err) => this.options.onError?.(err));
    }, this.options.intervalMs ?? 1_000);
    return stop;
  }

  /** One read at a time: a watch and the timer share the one under way. */
  private readOnce(): Promise<void> {
    this.reading ??= this.read().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async read(): Promise<void> {
    const records = await this.options.environments.list(FULL_ACCESS);
    const next = new Map<string, { project: string; json: string; env: Environment }>();
    for (const record of records) {
      const env = await this.options.environments.toResource(record);
      next.set(env.id, { project: env.project, json: JSON.stringify(env), env });
    }
    const events: { project: string; event: FeedEvent }[] = [];
    for (const [id, now] of next) {
      if (this.known.get(id)?.json !== now.json)
        events.push({ project: now.project, event: { type: 'change', environment: now.env } });
    }
    for (const [id, was] of this.known) {
      if (!next.has(id)) events.push({ project: was.project, event: { type: 'gone', id } });
    }
    this.known = next;
    for (const watcher of [...this.watchers]) {
      for (const { project, event } of events) {
        if (canSee(watcher.access, project) && !watcher.send(event)) break;
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.watchers.clear();
  }
}
