/** {@link KeptLogRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { Kysely } from 'kysely';
import { type Database, fromDbTime, toDbTime, withoutNul } from './schema.js';
import type { KeptLog, KeptLogRepository } from './store.js';

/** The last output of workloads, one row per (environment, workload), deleted with the environment. */
export class KyselyKeptLogRepository implements KeptLogRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async save(envId: string, workload: string, text: string): Promise<void> {
    const row = { env_id: envId, workload, text: withoutNul(text), at: toDbTime(new Date()) };
    await this.db
      .insertInto('kept_logs')
      .values(row)
      .onConflict((oc) => oc.columns(['env_id', 'workload']).doUpdateSet({ text: row.text, at: row.at }))
      .execute();
  }

  async list(envId: string): Promise<KeptLog[]> {
    const rows = await this.db
      .selectFrom('kept_logs')
      .selectAll()
      .where('env_id', '=', envId)
      .orderBy('workload')
      .execute();
    return rows.map((row) => ({
      envId: row.env_id,
      workload: row.workload,
      text: row.text,
      at: fromDbTime(row.at),
    }));
  }
}
