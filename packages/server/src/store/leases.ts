/**
 * Work leases on rows (environments, previews): one replica works on a row at a time, and a
 * replica that dies gives it up when its lease runs out. Shared by every repository with leases.
 */
import { type Kysely, type RawBuilder, sql } from 'kysely';
import type { Database, StoreDialect } from './schema.js';

/** Tables with `id`, `lease_owner` and `lease_until` columns. */
type LeasedTable = 'environments' | 'previews';

/**
 * Takes the lease for `owner` if it is free, expired, or already `owner`'s; false when another
 * replica holds it. Lease times are the database's clock, never a replica's own, so replicas with
 * skewed clocks agree on expiry. On PostgreSQL uses `SELECT … FOR UPDATE SKIP LOCKED`.
 */
export async function claimLease(
  db: Kysely<Database>,
  dialect: StoreDialect,
  table: LeasedTable,
  id: string,
  owner: string,
  leaseMs: number,
): Promise<boolean> {
  const now = dbNow(dialect);
  const until = dbNowPlus(dialect, leaseMs);
  // biome-ignore lint/suspicious/noExplicitAny: the same columns in each leased table
  const isFree = (eb: any) =>
    eb.or([
      eb('lease_owner', 'is', null),
      eb('lease_owner', '=', owner),
      eb('lease_until', 'is', null),
      eb('lease_until', '<=', now),
    ]);
  if (dialect === 'sqlite') {
    // One conditional UPDATE is atomic in SQLite (writers are serialised by the database lock).
    const result = await db
      .updateTable(table)
      .set({ lease_owner: owner, lease_until: until })
      .where('id', '=', id)
      .where(isFree)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }
  return db.transaction().execute(async (trx) => {
    // SKIP LOCKED: when another replica is claiming (or updating) this row right now, give up
    // at once instead of queueing behind it; the caller tries again on its next pass.
    const locked = await trx
      .selectFrom(table)
      .select('id')
      .where('id', '=', id)
      .forUpdate()
      .skipLocked()
      .executeTakeFirst();
    if (!locked) return false;
    // The row is ours until commit, and this statement sees its latest committed version.
    const result = await trx
      .updateTable(table)
      .set({ lease_owner: owner, lease_until: until })
      .where('id', '=', id)
      .where(isFree)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  });
}

/** Gives the lease up, if `owner` still holds it. */
export async function releaseLease(
  db: Kysely<Database>,
  table: LeasedTable,
  id: string,
  owner: string,
): Promise<void> {
  await db
    .updateTable(table)
    .set({ lease_owner: null, lease_until: null })
    .where('id', '=', id)
    .where('lease_owner', '=', owner)
    .execute();
}

/** The database's current time, in the form timestamps are stored in. */
export function dbNow(dialect: StoreDialect): RawBuilder<string> {
  return dialect === 'postgres'
    ? // clock_timestamp(), not now(): the latter is the start of the transaction.
      sql<string>`clock_timestamp()`
    : sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`;
}

/** The database's current time minus `ms` milliseconds. */
export function dbNowMinus(dialect: StoreDialect, ms: number): RawBuilder<string> {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`${ms} ms ago`);
  return dialect === 'postgres'
    ? sql<string>`clock_timestamp() - ${ms}::double precision * interval '1 millisecond'`
    : sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ${`-${(ms / 1000).toFixed(3)} seconds`})`;
}

/** The database's current time plus `ms` milliseconds. */
export function dbNowPlus(dialect: StoreDialect, ms: number): RawBuilder<string> {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`lease of ${ms} ms`);
  return dialect === 'postgres'
    ? sql<string>`clock_timestamp() + ${ms}::double precision * interval '1 millisecond'`
    : sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ${`+${(ms / 1000).toFixed(3)} seconds`})`;
}
