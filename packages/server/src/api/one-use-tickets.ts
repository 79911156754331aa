/**
 * One-use tickets: a random string that stands for what an authenticated request asked for, taken
 * once by a request that cannot carry the credential itself (a WebSocket handshake from a
 * browser, a download the browser makes as a navigation). Kept in memory, for a short time, at most
 * `max` at once (the oldest are dropped first).
 */
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';

export class OneUseTickets<T extends object> {
  private readonly tickets: LRUCache<string, T>;

  constructor(
    readonly ttlMs: number,
    max = 1000,
  ) {
    this.tickets = new LRUCache<string, T>({ max, ttl: ttlMs });
  }

  /** A new ticket for `value`. */
  issue(value: T): string {
    const ticket = randomBytes(24).toString('base64url');
    this.tickets.set(ticket, value);
    return ticket;
  }

  /** What `ticket` stands for, once: undefined for an unknown, expired or used one. */
  take(ticket: string | undefined): T | undefined {
    if (!ticket) return undefined;
    const value = this.tickets.get(ticket);
    this.tickets.delete(ticket);
    return value;
  }
}
