import {
  ApiPaths,
  type CreateEnvironmentRequest,
  EnvEvent,
  Environment,
  type EnvState,
} from '@mayfly/contract';
import * as z from 'zod';
import { TimeoutError, UnexpectedStateError } from './errors.js';
import type { HttpClient } from './http.js';
import { readLines } from './lines.js';

const EnvironmentList = z.object({ items: z.array(Environment) });
const EventList = z.object({ items: z.array(EnvEvent) });

/** Options of {@link EnvironmentsApi.list}. */
export interface ListEnvironmentsOptions {
  /** Only this project's environments. */
  project?: string;
  /** Include destroyed environments. */
  all?: boolean;
}

/** Options of {@link EnvironmentsApi.events}. */
export interface EventsOptions {
  /** Only events with an id greater than this one. */
  after?: number;
}

/** Options of {@link EnvironmentsApi.logs}. */
export interface LogsOptions {
  /** One service; without it, every service, each line prefixed with `service | `. */
  service?: string;
  /**
   * Start with the last N lines (0: none, only what follows with `follow`), or `'all'`; without it
   * the server's default (1000).
   */
  tail?: number | 'all';
  /** Keep streaming new lines until `signal` aborts or the environment is destroyed. */
  follow?: boolean;
  /**
   * The output of the environment's image builds (the last 256 KiB of each, kept whether the build
   * succeeded or failed) instead of the services' logs. Cannot go with `follow` (the server answers 400).
   */
  build?: boolean;
  /** Aborting ends the iteration quietly. */
  signal?: AbortSignal;
}

/** Options of {@link EnvironmentsApi.waitFor}. */
export interface WaitForOptions {
  /** States to wait for; default `['ready', 'failed']`. */
  states?: readonly EnvState[];
  /** Reject with a TimeoutError after this long; default: wait as long as it takes. */
  timeoutMs?: number;
  /** Called once for each new event, in order. */
  onEvent?: (event: EnvEvent) => void;
  /** Report only events after this id; default 0, i.e. the whole timeline. */
  after?: number;
  /** Time between polls; default 300 ms. */
  pollIntervalMs?: number;
  /** Aborting rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** The environment still gets fetched every this many polls even when no event arrived, in case one was missed. */
const FORCED_REFRESH_EVERY = 5;

/**
 * Environments: create from a template, list, inspect, follow, put to sleep and wake, keep or
 * extend, destroy. Reached as `client.environments`.
 */
export class EnvironmentsApi {
  readonly #http: HttpClient;

  /** @internal Use `new MayflyClient(...).environments`. */
  constructor(http: HttpClient) {
    this.#http = http;
  }

  /**
   * Asks for a new environment; it is returned in state `pending` and converges in the background
   * (see {@link EnvironmentsApi.waitFor}).
   * @throws InvalidTemplateError with `issues` when the template does not validate.
   * @throws ConflictError when the name is taken.
   */
  create(request: CreateEnvironmentRequest): Promise<Environment> {
    return this.#http.json('POST', ApiPaths.environments, Environment, { body: request });
  }

  /** Lists environments, newest first as the server orders them; destroyed ones only with `all`. */
  async list(options: ListEnvironmentsOptions = {}): Promise<Environment[]> {
    const { items } = await this.#http.json('GET', ApiPaths.environments, EnvironmentList, {
      query: { project: options.project, all: options.all },
    });
    return items;
  }

  /** Gets one environment by id or name. @throws NotFoundError */
  get(idOrName: string): Promise<Environment> {
    return this.#http.json('GET', ApiPaths.environment(idOrName), Environment);
  }

  /**
   * Asks for an environment to be torn down and returns it right away (desired `absent`); its state
   * then goes `destroying` → `destroyed`. @throws NotFoundError
   */
  destroy(idOrName: string): Promise<Environment> {
    return this.#http.json('DELETE', ApiPaths.environment(idOrName), Environment);
  }

  /**
   * Puts an environment to sleep: its containers stop, its volumes stay, and it returns right away
   * (`sleep` true; `state` turns `sleeping` once they are stopped). The next request through the
   * gateway, or {@link EnvironmentsApi.wake}, starts it again. Asking again is harmless.
   * @throws NotFoundError; ConflictError when it is being destroyed or has failed.
   */
  sleep(idOrName: string): Promise<Environment> {
    return this.#lifecycle(idOrName, 'sleep');
  }

  /**
   * Wakes an environment that sleeps (or was asked to): its services start again in dependency
   * order. Returns right away; wait for `ready` with {@link EnvironmentsApi.waitFor}. An environment
   * that is awake is left as it is.
   * @throws NotFoundError; ConflictError when it is being destroyed.
   */
  wake(idOrName: string): Promise<Environment> {
    return this.#lifecycle(idOrName, 'wake');
  }

  /**
   * Keeps an environment: no time to live (`expiresAt` null), never put to sleep or destroyed for
   * being idle, until it is destroyed by hand. {@link EnvironmentsApi.extend} gives it a time to
   * live again.
   * @throws NotFoundError; ConflictError when it is being destroyed.
   */
  keep(idOrName: string): Promise<Environment> {
    return this.#lifecycle(idOrName, 'keep');
  }

  /**
   * Pushes the end of an environment's time to live back by `by` (`30m`, `2h`, `1d`, `1h30m`…),
   * counted from now when it has none or it has passed; a kept environment stops being kept.
   * @throws InvalidRequestError for a malformed duration, or one past the most allowed (365 days
   *   from now); NotFoundError; ConflictError when it is being destroyed.
   */
  extend(idOrName: string, by: string): Promise<Environment> {
    return this.#http.json('POST', `${ApiPaths.environment(idOrName)}/extend`, Environment, {
      query: { by },
    });
  }

  /**
   * Makes every service anew: new containers from the images it has (built again only if gone),
   * volumes kept, run-once jobs that finished not run again. A failed environment is tried again
   * from the start; a sleeping one wakes this way. Returns right away (state `pending`); wait for
   * `ready` with {@link EnvironmentsApi.waitFor}.
   * @throws NotFoundError; ConflictError while it is coming up, going to sleep or waking, being
   * updated or destroyed.
   */
  redeploy(idOrName: string): Promise<Environment> {
    return this.#lifecycle(idOrName, 'redeploy');
  }

  #lifecycle(idOrName: string, verb: 'sleep' | 'wake' | 'keep' | 'redeploy'): Promise<Environment> {
    return this.#http.json('POST', `${ApiPaths.environment(idOrName)}/${verb}`, Environment);
  }

  /** The environment's timeline, oldest first. */
  async events(idOrName: string, options: EventsOptions = {}): Promise<EnvEvent[]> {
    const { items } = await this.#http.json('GET', ApiPaths.events(idOrName), EventList, {
      query: { after: options.after },
    });
    return items;
  }

  /**
   * Log lines of one service, or of all of them (prefixed `service | `). With `follow` the iteration
   * goes on until `signal` aborts, the consumer breaks out of the loop, or the environment is destroyed.
   * The request is sent when iteration starts, so errors surface from the first `next()`.
   */
  async *logs(idOrName: string, options: LogsOptions = {}): AsyncGenerator<string, void, undefined> {
    // Our own controller, so that leaving the loop early also closes a followed stream.
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) return;
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const response = await this.#http.send('GET', ApiPaths.logs(idOrName), {
        query: {
          service: options.service,
          tail: options.tail,
          follow: options.follow,
          build: options.build,
        },
        signal: controller.signal,
        accept: 'text/plain',
      });
      if (!response.body) return;
      try {
        yield* readLines(response.body);
      } catch (err) {
        // The stream broke off midway (server stopped, connection reset).
        throw this.#http.networkError(err, controller.signal);
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }

  /**
   * Polls the timeline until the environment is in one of `states` and resolves with it, calling
   * `onEvent` for every new event on the way (the event that completes the wait included).
   * @throws TimeoutError when `timeoutMs` runs out.
   * @throws UnexpectedStateError when the environment can no longer get there: it is `destroyed`, or
   *   it turned `failed` during the wait (a failure from before `after` does not count, so that
   *   waiting for a failed environment to be destroyed works).
   */
  async waitFor(idOrName: string, options: WaitForOptions = {}): Promise<Environment> {
    const states = options.states ?? ['ready', 'failed'];
    const interval = options.pollIntervalMs ?? 300;
    const deadline =
      options.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.timeoutMs;
    let cursor = options.after ?? 0;
    const reached = new Set<EnvState>();
    const drainEvents = async (): Promise<boolean> => {
      const events = await this.events(idOrName, { after: cursor });
      for (const event of events) {
        cursor = Math.max(cursor, event.id);
        if (event.state) reached.add(event.state);
        options.onEvent?.(event);
      }
      return events.length > 0;
    };

    let last: Environment | null = null;
    for (let poll = 0; ; poll++) {
      options.signal?.throwIfAborted();
      const changed = await drainEvents();
      if (last === null || changed || poll % FORCED_REFRESH_EVERY === 0) {
        last = await this.get(idOrName);
        if (states.includes(last.state) || last.state === 'failed' || last.state === 'destroyed') {
          // Events written between the two requests above still belong to this wait.
          await drainEvents();
          if (states.includes(last.state)) return last;
          if (last.state === 'destroyed' || reached.has('failed')) {
            const why = last.failure ? ` at ${last.failure.step}: ${last.failure.reason}` : '';
            throw new UnexpectedStateError(
              `environment ${last.name} is ${last.state}${why} (waited for ${states.join(' or ')})`,
              last,
            );
          }
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new TimeoutError(
          `timed out after ${formatMs(options.timeoutMs ?? 0)} waiting for ${idOrName} to be ${states.join(' or ')} (state: ${last.state})`,
          last,
        );
      }
      await sleep(Math.min(interval, left), options.signal);
    }
  }
}

/** Like `timers/promises` setTimeout, but rejects with the signal's own reason rather than a generic AbortError. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10}s` : `${ms}ms`;
}
