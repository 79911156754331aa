/** {@link EventRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { EnvState } from '@mayfly/contract';
import type { Kysely, Selectable } from 'kysely';
import { type Database, type EventsTable, fromDbTime, toDbTime } from './schema.js';
import type { EventRecord, EventRepository } from './store.js';

/** The timeline of every environment, in one append-only table; ids increase in append order. */
export class KyselyEventRepository implements EventRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async append(event: Omit<EventRecord, 'id' | 'at'> & { at?: Date }): Promise<EventRecord> {
    const row = await this.db
      .insertInto('events')
      .values({
        env_id: event.envId,
        type: event.type,
        state: event.state,
        message: event.message,
        at: toDbTime(event.at ?? new Date()),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toRecord(row);
  }

  async list(envId: string, options: { afterId?: number } = {}): Promise<EventRecord[]> {
    let query = this.db.selectFrom('events').selectAll().where('env_id', '=', envId);
    if (options.afterId !== undefined) query = query.where('id', '>', options.afterId);
    const rows = await query.orderBy('id').execute();
    return rows.map(toRecord);
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
