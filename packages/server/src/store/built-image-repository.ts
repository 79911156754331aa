/** {@link BuiltImageRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { Kysely } from 'kysely';
import { type Database, fromDbTime, toDbTime } from './schema.js';
import type { BuiltImageRecord, BuiltImageRepository } from './store.js';

/** Images Mayfly built and when they were last used, for garbage collection in LRU order. */
export class KyselyBuiltImageRepository implements BuiltImageRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async touch(ref: string, project: string, at: Date = new Date()): Promise<void> {
    const lastUsedAt = toDbTime(at);
    await this.db
      .insertInto('built_images')
      .values({ ref, project, last_used_at: lastUsedAt })
      .onConflict((oc) =>
        oc
          .column('ref')
          .doUpdateSet({ project, last_used_at: lastUsedAt })
          // Never backward: a late report of an older use must not make a busy image look idle.
          .where('built_images.last_used_at', '<', lastUsedAt),
      )
      .execute();
  }

  async list(): Promise<BuiltImageRecord[]> {
    const rows = await this.db
      .selectFrom('built_images')
      .selectAll()
      .orderBy('last_used_at')
      .orderBy('ref')
      .execute();
    return rows.map((row) => ({
      ref: row.ref,
      project: row.project,
      lastUsedAt: fromDbTime(row.last_used_at),
    }));
  }

  async delete(ref: string): Promise<void> {
    await this.db.deleteFrom('built_images').where('ref', '=', ref).execute();
  }
}
