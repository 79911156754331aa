/**
 * {@link ReplicaRepository} over Kysely: each control-plane process says it is alive for a while,
 * timed by the database's clock (as leases are), so replicas agree on who is gone.
 */
import type { Kysely } from 'kysely';
import { dbNow, dbNowPlus } from './leases.js';
import type { Database, StoreDialect } from './schema.js';
import type { ReplicaRepository } from './store.js';

export class KyselyReplicaRepository implements ReplicaRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: StoreDialect,
  ) {}

  async beat(id: string, ttlMs: number): Promise<void> {
    const until = dbNowPlus(this.dialect, ttlMs);
    await this.db
      .insertInto('replicas')
      .values({ id, alive_until: until })
      .onConflict((oc) => oc.column('id').doUpdateSet({ alive_until: until }))
      .execute();
    // A replica whose time ran out is gone: its row says nothing any more.
    await this.db.deleteFrom('replicas').where('alive_until', '<=', dbNow(this.dialect)).execute();
  }

  async alive(): Promise<string[]> {
    const rows = await this.db
      .selectFrom('replicas')
      .select('id')
      .where('alive_until', '>', dbNow(this.dialect))
      .orderBy('id')
      .execute();
    return rows.map((r) => r.id);
  }

  async leave(id: string): Promise<void> {
    await this.db.deleteFrom('replicas').where('id', '=', id).execute();
  }
}
