/**
 * The warm pool: sandboxes made ahead of time per template, so a create only claims one. A pooled
 * sandbox runs nothing but its agent until it is handed out, is handed out once (taken out of the
 * pool in the same step that hands it over), and is never given back. The pool is refilled in the
 * background, one sandbox at a time, and holds at most its memory budget (counted by each sandbox's
 * memory limit, what it may take once handed out).
 *
 * Pooled sandboxes have no record in the store: they carry the `mayfly.pool` label and their
 * replica's `mayfly.pool-owner`. The service's reconcile keeps off the ones this pool owns and the
 * ones of other replicas still alive, and removes any other unrecorded sandbox — so after a
 * restart or a replica's death, what the gone process had pooled is removed, never adopted.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from '../observability/logger.js';
import type { AgentChannel } from './agent-channel.js';

/** Label naming the template a pooled sandbox was made for. */
export const POOL_LABEL = 'mayfly.pool';

/** Label naming, by {@link poolOwnerTag}, the replica whose pool a pooled sandbox is in. */
export const POOL_OWNER_LABEL = 'mayfly.pool-owner';

/** A replica's id as a label value (any id fits: 20 hex characters of its SHA-256). */
export function poolOwnerTag(replica: string): string {
  return createHash('sha256').update(replica).digest('hex').slice(0, 20);
}

export interface PooledSandbox {
  id: string;
  template: string;
  channel: AgentChannel;
}

export interface PoolLevel {
  template: string;
  /** How many the pool keeps ready. */
  size: number;
  ready: number;
  starting: number;
}

export interface WarmPoolOptions {
  /** Sandboxes kept ready of a template (asked again whenever the pool fills). */
  sizeOf(template: string): number;
  /** The pool's sandboxes' memory limits add up to at most this. */
  memoryBudgetBytes: number;
  memoryBytesOf(template: string): number;
  /** Makes a sandbox of `template` named `id`, its agent connected; removes what it made if it fails. */
  make(template: string, id: string): Promise<AgentChannel>;
  /** Removes a pooled sandbox and everything it had. */
  discard(id: string, channel: AgentChannel | undefined): Promise<void>;
  logger: Logger;
  /** After a failed make, that template is not tried again for this long; default 30 s. */
  retryAfterMs?: number;
  /**
   * A take refills this much later (default 250 ms): the sandbox just handed out runs its first
   * commands while the machine is not busy making the next one, and a burst of takes is refilled
   * once it is over.
   */
  refillDelayMs?: number;
}

/** A new sandbox id: `[a-z0-9]`, 80 random bits, never starting with a digit (it is a host name label). */
export function newSandboxId(): string {
  return randomBytes(10).toString('hex').replace(/^\d/, 's');
}

export class WarmPool {
  private readonly ready = new Map<string, PooledSandbox[]>();
  /** Template of every sandbox the pool owns, ready or still being made. */
  private readonly owned = new Map<string, string>();
  /** Templates the pool fills: those asked for at least once (or whose image is there already). */
  private readonly active = new Set<string>();
  private readonly failedAt = new Map<string, number>();
  /** Being made for what a template was before it changed: removed once made. */
  private readonly stale = new Set<string>();
  private filling: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly options: WarmPoolOptions) {}

  /** Fills `template`'s share from now on (a no-op for templates with no pool size). */
  activate(template: string): void {
    if (this.options.sizeOf(template) <= 0) return;
    this.active.add(template);
    this.refill();
  }

  /** A ready sandbox of `template`, no longer the pool's; `undefined` when none is ready. */
  take(template: string): PooledSandbox | undefined {
    const sandbox = this.ready.get(template)?.shift();
    if (sandbox) this.owned.delete(sandbox.id);
    this.refillSoon();
    return sandbox;
  }

  owns(id: string): boolean {
    return this.owned.has(id);
  }

  /** A pooled sandbox died: it leaves the pool (and is removed), and another is made. */
  drop(id: string): void {
    const template = this.owned.get(id);
    if (template === undefined) return;
    const list = this.ready.get(template) ?? [];
    const index = list.findIndex((s) => s.id === id);
    if (index === -1) return; // still being made: its make fails and cleans up
    const [sandbox] = list.splice(index, 1);
    this.owned.delete(id);
    if (sandbox) void this.discardQuietly(sandbox);
    this.refill();
  }

  level(template: string): PoolLevel {
    const ready = this.ready.get(template)?.length ?? 0;
    return { template, size: this.options.sizeOf(template), ready, starting: this.current(template) - ready };
  }

  /** Sandboxes of what `template` is now, ready or being made. */
  private current(template: string): number {
    let n = 0;
    for (const [id, t] of this.owned) if (t === template && !this.stale.has(id)) n++;
    return n;
  }

  /**
   * The template changed (or is gone): what the pool holds of it is removed, what it is making
   * is removed once made, and it is filled again (from its new size) once activated again.
   */
  flush(template: string): void {
    const stale = this.ready.get(template) ?? [];
    this.ready.delete(template);
    for (const sandbox of stale) this.owned.delete(sandbox.id);
    // Still owned (housekeeping keeps off, the budget counts them) until made, then removed.
    for (const [id, t] of this.owned) if (t === template) this.stale.add(id);
    for (const sandbox of stale) void this.discardQuietly(sandbox);
    this.active.delete(template);
    this.failedAt.delete(template);
  }

  /** Waits for the background refill to settle (tests and the benchmark). */
  async settled(): Promise<void> {
    while (this.filling || this.refillPending) {
      if (this.filling) await this.filling;
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Stops filling and removes every pooled sandbox. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    this.refillPending = false;
    await this.filling;
    const all = [...this.ready.values()].flat();
    this.ready.clear();
    for (const sandbox of all) this.owned.delete(sandbox.id);
    for (const sandbox of all) await this.discardQuietly(sandbox);
  }

  private refillTimer: NodeJS.Timeout | undefined;
  private refillPending = false;

  private refillSoon(): void {
    clearTimeout(this.refillTimer);
    this.refillPending = true;
    this.refillTimer = setTimeout(() => {
      this.refillPending = false;
      this.refill();
    }, this.options.refillDelayMs ?? 250);
    this.refillTimer.unref();
  }

  /** Removes a sandbox the pool gave up; a failure is logged (housekeeping removes it later). */
  private async discardQuietly(sandbox: PooledSandbox): Promise<void> {
    await this.options
      .discard(sandbox.id, sandbox.channel)
      .catch((err) =>
        this.options.logger.warn({ err, sandbox: sandbox.id }, 'removing a pooled sandbox failed'),
      );
  }

  /** Starts making what is missing, unless that is under way already. */
  refill(): void {
    if (this.closed || this.filling) return;
    this.filling = this.fill().finally(() => {
      this.filling = undefined;
    });
  }

  /** One sandbox at a time, the template with the fewest first, until every one is full or the budget is. */
  private async fill(): Promise<void> {
    for (;;) {
      const template = this.nextToFill();
      if (template === undefined || this.closed) return;
      const id = newSandboxId();
      this.owned.set(id, template);
      try {
        const channel = await this.options.make(template, id);
        if (this.closed || !this.owned.has(id) || this.stale.has(id)) {
          await this.options.discard(id, channel);
          this.owned.delete(id);
          this.stale.delete(id);
          continue;
        }
        const list = this.ready.get(template) ?? [];
        list.push({ id, template, channel });
        this.ready.set(template, list);
      } catch (err) {
        this.owned.delete(id);
        // Made for what the template was: its failure says nothing of what it is now.
        if (this.stale.delete(id)) continue;
        this.failedAt.set(template, Date.now());
        this.options.logger.warn({ err, template }, 'making a pooled sandbox failed; trying again later');
      }
    }
  }

  private nextToFill(): string | undefined {
    let used = 0;
    for (const t of this.owned.values()) used += this.options.memoryBytesOf(t);
    // The template with the fewest ready (or coming) goes first: a template with a large pool does
    // not take the whole budget before the others have any.
    let best: { template: string; current: number } | undefined;
    for (const template of this.active) {
      const failed = this.failedAt.get(template);
      if (failed !== undefined && Date.now() - failed < (this.options.retryAfterMs ?? 30_000)) continue;
      if (used + this.options.memoryBytesOf(template) > this.options.memoryBudgetBytes) continue;
      const current = this.current(template);
      if (current < this.options.sizeOf(template) && (!best || current < best.current))
        best = { template, current };
    }
    return best?.template;
  }
}
