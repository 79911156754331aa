/**
 * {@link ReplicaRepository} over Kysely: each control-plane process says it is alive for a while,
 * timed by the database's clock (as leases are), so replicas agree on who is gone.
 */
import type { Kysely } from 'kysely';
import { dbNow, dbNowMinus, dbNowPlus } from './leases.js';
import type { Database, StoreDialect } from './schema.js';
import type { ReplicaRepository } from './store.js';

/** Rows of replicas silent this long are dropped. */
const FORGET_AFTER_MS = 60 * 60_000;

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
    // A replica silent for an hour says nothing any more.
    await this.db
      .deleteFrom('replicas')
      .where('alive_until', '<=', dbNowMinus(this.dialect, FORGET_AFTER_MS))
      .execute();
  }

  async alive(graceMs = 0): Promise<string[]> {
    const rows = await this.db
      .selectFrom('replicas')
      .select('id')
      .where('alive_until', '>', graceMs > 0 ? dbNowMinus(this.dialect, graceMs) : dbNow(this.dialect))
      .orderBy('id')
      .execute();
    return rows.map((r) => r.id);
  }

  async leave(id: string): Promise<void> {
    await this.db.deleteFrom('replicas').where('id', '=', id).execute();
  }
}
