/** {@link SnapshotRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { Kysely, Selectable } from 'kysely';
import { type Database, fromDbTime, type SnapshotsTable, toDbTime } from './schema.js';
import { SnapshotNameTakenError, type SnapshotRecord, type SnapshotRepository } from './store.js';

export class KyselySnapshotRepository implements SnapshotRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async create(
    input: Pick<SnapshotRecord, 'id' | 'project' | 'name' | 'seedKey' | 'volume' | 'sourceEnv' | 'owner'>,
  ): Promise<SnapshotRecord> {
    const now = toDbTime(new Date());
    try {
      await this.db
        .insertInto('snapshots')
        .values({
          id: input.id,
          project: input.project,
          name: input.name,
          seed_key: input.seedKey,
          volume: input.volume,
          source_env_id: input.sourceEnv.id,
          source_env_name: input.sourceEnv.name,
          state: 'creating',
          owner: input.owner,
          size_bytes: null,
          created_at: now,
          last_used_at: now,
        })
        .execute();
    } catch (err) {
      const e = err as { code?: string; message?: string };
      // The unique index on (project, name) is the only constraint an insert with a new id can break.
      if (e.code === '23505' || e.code === 'SQLITE_CONSTRAINT_UNIQUE')
        throw new SnapshotNameTakenError(input.project, input.name);
      throw err;
    }
    return (await this.get(input.id))!;
  }

  async markReady(id: string, sizeBytes: number): Promise<boolean> {
    const result = await this.db
      .updateTable('snapshots')
      .set({ state: 'ready', owner: null, size_bytes: sizeBytes })
      .where('id', '=', id)
      .where('state', '=', 'creating')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async get(id: string): Promise<SnapshotRecord | null> {
    const row = await this.db.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async findByName(project: string, name: string): Promise<SnapshotRecord | null> {
    const row = await this.db
      .selectFrom('snapshots')
      .selectAll()
      .where('project', '=', project)
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(project?: string): Promise<SnapshotRecord[]> {
    let query = this.db.selectFrom('snapshots').selectAll();
    if (project !== undefined) query = query.where('project', '=', project);
    const rows = await query.orderBy('project').orderBy('name').execute();
    return rows.map(toRecord);
  }

  async touch(id: string, at: Date = new Date()): Promise<void> {
    const usedAt = toDbTime(at);
    await this.db
      .updateTable('snapshots')
      .set({ last_used_at: usedAt })
      .where('id', '=', id)
      .where('last_used_at', '<', usedAt)
      .execute();
  }

  async delete(id: string): Promise<void> {
    await this.db.deleteFrom('snapshots').where('id', '=', id).execute();
  }
}

function toRecord(row: Selectable<SnapshotsTable>): SnapshotRecord {
  return {
    id: row.id,
    project: row.project,
    name: row.name,
    seedKey: row.seed_key,
    volume: row.volume,
    sourceEnv: { id: row.source_env_id, name: row.source_env_name },
    state: row.state === 'ready' ? 'ready' : 'creating',
    owner: row.owner,
    // PostgreSQL's bigint comes back as text.
    sizeBytes: row.size_bytes === null ? null : Number(row.size_bytes),
    createdAt: fromDbTime(row.created_at),
    lastUsedAt: fromDbTime(row.last_used_at),
  };
}
