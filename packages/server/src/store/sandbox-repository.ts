/** {@link SandboxRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { Kysely, Selectable } from 'kysely';
import {
  type Database,
  fromDbTime,
  fromDbTimeOrNull,
  type SandboxesTable,
  type SandboxTemplatesTable,
  toDbTime,
} from './schema.js';
import type {
  SandboxRecord,
  SandboxRepository,
  SandboxTemplateRecord,
  SandboxTemplateRepository,
} from './store.js';

function toRecord(row: Selectable<SandboxesTable>): SandboxRecord {
  return {
    id: row.id,
    template: row.template,
    state: row.state,
    endedReason: row.ended_reason as SandboxRecord['endedReason'],
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    cpu: row.cpu === null ? null : Number(row.cpu),
    memoryMb: row.memory_mb,
    peakMemoryBytes: row.peak_memory_bytes === null ? null : Number(row.peak_memory_bytes),
    createdBy: row.created_by,
    startedAt: fromDbTime(row.started_at),
    expiresAt: fromDbTime(row.expires_at),
    endedAt: fromDbTimeOrNull(row.ended_at),
  };
}

export class KyselySandboxRepository implements SandboxRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async insert(record: Omit<SandboxRecord, 'endedReason' | 'endedAt' | 'peakMemoryBytes'>): Promise<void> {
    await this.db
      .insertInto('sandboxes')
      .values({
        id: record.id,
        template: record.template,
        state: record.state,
        ended_reason: null,
        metadata: JSON.stringify(record.metadata),
        cpu: record.cpu,
        memory_mb: record.memoryMb,
        peak_memory_bytes: null,
        created_by: record.createdBy,
        started_at: toDbTime(record.startedAt),
        expires_at: toDbTime(record.expiresAt),
        ended_at: null,
      })
      .execute();
  }

  async get(id: string): Promise<SandboxRecord | null> {
    const row = await this.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(options: { states: SandboxRecord['state'][] }): Promise<SandboxRecord[]> {
    if (options.states.length === 0) return [];
    const rows = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('state', 'in', options.states)
      .orderBy('started_at', 'asc')
      .orderBy('id', 'asc')
      .execute();
    return rows.map(toRecord);
  }

  async setState(id: string, state: 'running' | 'paused'): Promise<boolean> {
    const result = await this.db
      .updateTable('sandboxes')
      .set({ state })
      .where('id', '=', id)
      .where('state', '!=', 'ended')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async setExpiry(id: string, expiresAt: Date): Promise<boolean> {
    const result = await this.db
      .updateTable('sandboxes')
      .set({ expires_at: toDbTime(expiresAt) })
      .where('id', '=', id)
      .where('state', '!=', 'ended')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async end(
    id: string,
    reason: NonNullable<SandboxRecord['endedReason']>,
    peakMemoryBytes: number | null,
  ): Promise<boolean> {
    const result = await this.db
      .updateTable('sandboxes')
      .set({
        state: 'ended',
        ended_reason: reason,
        ended_at: toDbTime(new Date()),
        peak_memory_bytes: peakMemoryBytes,
      })
      .where('id', '=', id)
      .where('state', '!=', 'ended')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async expiredBefore(at: Date): Promise<string[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .select('id')
      .where('state', '!=', 'ended')
      .where('expires_at', '<=', toDbTime(at))
      .execute();
    return rows.map((r) => r.id);
  }

  async forgetEndedBefore(at: Date): Promise<number> {
    const result = await this.db
      .deleteFrom('sandboxes')
      .where('state', '=', 'ended')
      .where('ended_at', '<', toDbTime(at))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}

function toTemplate(row: Selectable<SandboxTemplatesTable>): SandboxTemplateRecord {
  return {
    name: row.name,
    source: row.source,
    image: row.image,
    workspace: row.workspace,
    dockerfile: row.dockerfile,
    settings: JSON.parse(row.settings) as SandboxTemplateRecord['settings'],
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  };
}

/** {@link SandboxTemplateRepository} over Kysely. */
export class KyselySandboxTemplateRepository implements SandboxTemplateRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async put(
    record: Omit<SandboxTemplateRecord, 'createdAt' | 'updatedAt'>,
    at: Date,
  ): Promise<SandboxTemplateRecord | null> {
    return this.db.transaction().execute(async (tx) => {
      const before = await tx
        .selectFrom('sandbox_templates')
        .selectAll()
        .where('name', '=', record.name)
        .executeTakeFirst();
      const values = {
        source: record.source,
        image: record.image,
        workspace: record.workspace,
        dockerfile: record.dockerfile,
        settings: JSON.stringify(record.settings),
        updated_at: toDbTime(at),
      };
      await tx
        .insertInto('sandbox_templates')
        .values({ name: record.name, ...values, created_at: toDbTime(at) })
        .onConflict((oc) => oc.column('name').doUpdateSet(values))
        .execute();
      return before ? toTemplate(before) : null;
    });
  }

  async get(name: string): Promise<SandboxTemplateRecord | null> {
    const row = await this.db
      .selectFrom('sandbox_templates')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? toTemplate(row) : null;
  }

  async list(): Promise<SandboxTemplateRecord[]> {
    const rows = await this.db.selectFrom('sandbox_templates').selectAll().orderBy('name', 'asc').execute();
    return rows.map(toTemplate);
  }

  async remove(name: string): Promise<boolean> {
    const result = await this.db.deleteFrom('sandbox_templates').where('name', '=', name).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }
}
