/** {@link EventRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { EnvState } from '@mayfly/contract';
import { type Kysely, type Selectable, sql } from 'kysely';
import {
  type Database,
  type EventsTable,
  fromDbTime,
  type StoreDialect,
  toDbTime,
  withoutNul,
} from './schema.js';
import type { EventRecord, EventRepository } from './store.js';

/**
 * First key of the PostgreSQL advisory locks that serialise the appends of one environment (the
 * second is the hash of its id). Two-key advisory locks never collide with one-key ones, such as
 * the lock Kysely's migrator takes; the value only keeps them apart from other two-key users.
 */
export const EVENT_APPEND_LOCK_SPACE = 0x6d66_7901;

/** The timeline of every environment, in one append-only table; ids increase in commit order per environment. */
export class KyselyEventRepository implements EventRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: StoreDialect,
  ) {}

  async append(event: Omit<EventRecord, 'id' | 'at'> & { at?: Date }): Promise<EventRecord> {
    const insert = (db: Kysely<Database>) =>
      db
        .insertInto('events')
        .values({
          env_id: event.envId,
          type: event.type,
          state: event.state,
          message: withoutNul(event.message),
          at: toDbTime(event.at ?? new Date()),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
    // SQLite has one writer at a time and commits each insert as it takes its id.
    if (this.dialect === 'sqlite') return toRecord(await insert(this.db));
    // On PostgreSQL an identity id is taken at insert and becomes visible at commit: two
    // concurrent appends could commit ids 11 then 10, and a reader resuming after 11 would never
    // see 10. Holding a per-environment lock from before the id is taken until commit makes ids
    // of one environment visible in order.
    const row = await this.db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(EVENT_APPEND_LOCK_SPACE)}, hashtext(${event.envId}))`.execute(
        trx,
      );
      return insert(trx);
    });
    return toRecord(row);
  }

  async list(envId: string, options: { afterId?: number } = {}): Promise<EventRecord[]> {
    let query = this.db.selectFrom('events').selectAll().where('env_id', '=', envId);
    if (options.afterId !== undefined) query = query.where('id', '>', options.afterId);
    const rows = await query.orderBy('id').execute();
    return rows.map(toRecord);
  }

  async prune(options: { maxPerEnv: number }): Promise<number> {
    const { maxPerEnv } = options;
    if (!Number.isSafeInteger(maxPerEnv) || maxPerEnv < 0) {
      throw new RangeError(`maxPerEnv must be a non-negative integer, not ${maxPerEnv}`);
    }
    // Deleting only the oldest events leaves every reader's `afterId` cursor valid.
    const result = await this.db
      .deleteFrom('events')
      .where('id', 'in', (eb) =>
        eb
          .selectFrom((inner) =>
            inner
              .selectFrom('events')
              // State transitions are the timeline's skeleton (and tell a repair from a first
              // bring-up): they are kept; the chatter between them is what gets pruned.
              .where('type', '<>', 'state')
              .select([
                'id',
                sql<number>`row_number() over (partition by env_id order by id desc)`.as('newer_first'),
              ])
              .as('ranked'),
          )
          .select('ranked.id')
          .where('ranked.newer_first', '>', maxPerEnv),
      )
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}

function toRecord(row: Selectable<EventsTable>): EventRecord {
  return {
    // PostgreSQL's bigint arrives as a number only because open-store installs a parser for it.
    id: Number(row.id),
    envId: row.env_id,
    type: row.type,
    state: row.state as EnvState | null,
    message: row.message,
    at: fromDbTime(row.at),
  };
}
