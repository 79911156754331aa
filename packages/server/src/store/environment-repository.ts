/** {@link EnvironmentRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { EnvKind, EnvState, Failure } from '@mayfly/contract';
import { type Kysely, type Selectable, sql, type Updateable } from 'kysely';
import { claimLease, releaseLease } from './leases.js';
import {
  type Database,
  type EnvironmentsTable,
  fromDbTime,
  fromDbTimeOrNull,
  type StoreDialect,
  toDbTime,
} from './schema.js';
import {
  type EnvironmentFilter,
  type EnvironmentPatch,
  type EnvironmentRecord,
  type EnvironmentRepository,
  type EnvOrigin,
  type GitSource,
  LeaseLostError,
  NameTakenError,
  type NewEnvironment,
  type UpdateFailure,
  type UpdateOptions,
} from './store.js';
import { readStoredPlan } from './stored-plan.js';

/** Thrown by {@link EnvironmentRepository.update} when no environment has the id. */
export class EnvironmentNotFoundError extends Error {
  constructor(readonly envId: string) {
    super(`no environment with id "${envId}"`);
    this.name = 'EnvironmentNotFoundError';
  }
}

/** States in which an environment that should exist needs no work. */
const SETTLED_PRESENT: EnvState[] = ['ready', 'failed', 'sleeping'];

/** Environments in a table of the store's database, through Kysely. */
export class KyselyEnvironmentRepository implements EnvironmentRepository {
  private lastStamp = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: StoreDialect,
  ) {}

  /**
   * The time for `createdAt`/`updatedAt`: now, but always after the previous stamp, so two writes
   * within one millisecond still give `updatedAt` a new value.
   */
  private stamp(): Date {
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 1);
    return new Date(this.lastStamp);
  }

  async create(env: NewEnvironment): Promise<EnvironmentRecord> {
    const now = toDbTime(this.stamp());
    try {
      const row = await this.db
        .insertInto('environments')
        .values({
          id: env.id,
          name: env.name,
          project: env.project,
          kind: env.kind,
          state: 'pending',
          desired: 'present',
          template_file: env.templateFile,
          template_content: env.templateContent,
          template_dir: env.templateDir,
          inputs: JSON.stringify(env.inputs),
          plan: env.plan === null ? null : JSON.stringify(env.plan),
          failure: null,
          ttl_ms: env.ttlMs,
          expires_at: env.expiresAt === null ? null : toDbTime(env.expiresAt),
          created_at: now,
          updated_at: now,
          lease_owner: null,
          lease_until: null,
          attempts: 0,
          retry_at: null,
          source: env.source ? JSON.stringify(env.source) : null,
          revision: env.revision ?? 0,
          planned_revision: 0,
          failed_revision: 0,
          update_failure: null,
          sleep: 0,
          keep: 0,
          last_active_at: null,
          origin: env.origin ? JSON.stringify(env.origin) : null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toRecord(row);
    } catch (error) {
      throw this.nameTaken(error, env.name) ?? error;
    }
  }

  async get(id: string): Promise<EnvironmentRecord | null> {
    const row = await this.db.selectFrom('environments').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async getByName(name: string): Promise<EnvironmentRecord | null> {
    const row = await this.db
      .selectFrom('environments')
      .selectAll()
      .where('name', '=', name)
      // the live one (at most one, by the unique index) first, then the newest destroyed one
      .orderBy(sql`case when state = 'destroyed' then 1 else 0 end`)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async countByState(): Promise<Partial<Record<EnvState, number>>> {
    const rows = await this.db
      .selectFrom('environments')
      .select(['state', (eb) => eb.fn.countAll().as('n')])
      .groupBy('state')
      .execute();
    return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
  }

  async list(filter: EnvironmentFilter = {}): Promise<EnvironmentRecord[]> {
    let query = this.db.selectFrom('environments').selectAll();
    if (filter.project !== undefined) query = query.where('project', '=', filter.project);
    if (filter.states !== undefined) {
      if (filter.states.length === 0) return [];
      query = query.where('state', 'in', filter.states);
    }
    // Asking for `destroyed` by state counts as asking to include them.
    if (!filter.includeDestroyed && !filter.states?.includes('destroyed')) {
      query = query.where('state', '<>', 'destroyed');
    }
    const rows = await query.orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async update(id: string, patch: EnvironmentPatch, options: UpdateOptions = {}): Promise<EnvironmentRecord> {
    const values: Updateable<EnvironmentsTable> = {
      updated_at: toDbTime(this.stamp()),
    };
    if (patch.state !== undefined) values.state = patch.state;
    if (patch.desired !== undefined) values.desired = patch.desired;
    if (patch.name !== undefined) values.name = patch.name;
    if (patch.plan !== undefined) values.plan = patch.plan === null ? null : JSON.stringify(patch.plan);
    if (patch.failure !== undefined)
      values.failure = patch.failure === null ? null : JSON.stringify(patch.failure);
    if (patch.expiresAt !== undefined)
      values.expires_at = patch.expiresAt === null ? null : toDbTime(patch.expiresAt);
    if (patch.attempts !== undefined) values.attempts = patch.attempts;
    if (patch.retryAt !== undefined)
      values.retry_at = patch.retryAt === null ? null : toDbTime(patch.retryAt);
    if (patch.source !== undefined)
      values.source = patch.source === null ? null : JSON.stringify(patch.source);
    if (patch.revision !== undefined) values.revision = patch.revision;
    if (patch.plannedRevision !== undefined) values.planned_revision = patch.plannedRevision;
    if (patch.failedRevision !== undefined) values.failed_revision = patch.failedRevision;
    if (patch.updateFailure !== undefined)
      values.update_failure = patch.updateFailure === null ? null : JSON.stringify(patch.updateFailure);
    if (patch.inputs !== undefined) values.inputs = JSON.stringify(patch.inputs);
    if (patch.templateContent !== undefined) values.template_content = patch.templateContent;
    if (patch.templateFile !== undefined) values.template_file = patch.templateFile;
    if (patch.sleep !== undefined) values.sleep = patch.sleep ? 1 : 0;
    if (patch.keep !== undefined) values.keep = patch.keep ? 1 : 0;
    if (patch.lastActiveAt !== undefined)
      values.last_active_at = patch.lastActiveAt === null ? null : toDbTime(patch.lastActiveAt);
    if (patch.ttlMs !== undefined) values.ttl_ms = patch.ttlMs;
    let row: Selectable<EnvironmentsTable> | undefined;
    try {
      let query = this.db.updateTable('environments').set(values).where('id', '=', id);
      // Fencing in the same statement as the write: a claim by another replica either committed
      // before it (no row matches) or waits for it, never lands in between.
      if (options.owner !== undefined) query = query.where('lease_owner', '=', options.owner);
      row = await query.returningAll().executeTakeFirst();
    } catch (error) {
      // A rename, or bringing a destroyed environment back, can collide with a live name.
      const name = patch.name ?? (await this.get(id))?.name ?? '';
      throw this.nameTaken(error, name) ?? error;
    }
    if (!row) {
      if (options.owner !== undefined && (await this.get(id))) throw new LeaseLostError(id, options.owner);
      throw new EnvironmentNotFoundError(id);
    }
    return toRecord(row);
  }

  async listNeedingWork(now: Date): Promise<EnvironmentRecord[]> {
    const rows = await this.db
      .selectFrom('environments')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb.and([eb('desired', '=', 'present'), eb('state', 'not in', SETTLED_PRESENT)]),
          eb.and([eb('desired', '=', 'absent'), eb('state', '<>', 'destroyed')]),
          eb.and([eb('desired', '=', 'present'), eb('expires_at', '<=', toDbTime(now))]),
          // asked to sleep while ready, or to wake while sleeping
          eb.and([eb('desired', '=', 'present'), eb('sleep', '=', 1), eb('state', '=', 'ready')]),
          eb.and([eb('desired', '=', 'present'), eb('sleep', '=', 0), eb('state', '=', 'sleeping')]),
          // an update in place asked for and not yet made (nor failed)
          eb.and([
            eb('desired', '=', 'present'),
            eb('state', '=', 'ready'),
            eb('revision', '>', eb.ref('planned_revision')),
            eb('revision', '>', eb.ref('failed_revision')),
          ]),
        ]),
      )
      // backing off after a failed attempt
      .where((eb) => eb.or([eb('retry_at', 'is', null), eb('retry_at', '<=', toDbTime(now))]))
      .orderBy('updated_at')
      .orderBy('id')
      .execute();
    return rows.map(toRecord);
  }

  claim(id: string, owner: string, leaseMs: number): Promise<boolean> {
    return claimLease(this.db, this.dialect, 'environments', id, owner, leaseMs);
  }

  async release(id: string, owner: string): Promise<void> {
    await releaseLease(this.db, 'environments', id, owner);
  }

  async deleteDestroyed(before: Date): Promise<number> {
    // Events and kept logs go with their environment (foreign keys with ON DELETE CASCADE).
    // Desired `absent` too: a destroyed environment someone asked back is about to be re-created.
    const result = await this.db
      .deleteFrom('environments')
      .where('state', '=', 'destroyed')
      .where('desired', '=', 'absent')
      .where('updated_at', '<', toDbTime(before))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** A {@link NameTakenError} when `error` is the live-name index's violation, else undefined. */
  private nameTaken(error: unknown, name: string): NameTakenError | undefined {
    if (!(error instanceof Error)) return undefined;
    const e = error as Error & { code?: string; constraint?: string };
    const isLiveName =
      this.dialect === 'postgres'
        ? e.code === '23505' && e.constraint === 'environments_live_name_key'
        : e.code === 'SQLITE_CONSTRAINT_UNIQUE' && e.message.includes('environments.name');
    return isLiveName ? new NameTakenError(name) : undefined;
  }
}

function parseJson<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

function toRecord(row: Selectable<EnvironmentsTable>): EnvironmentRecord {
  return {
    id: row.id,
    name: row.name,
    project: row.project,
    kind: row.kind as EnvKind,
    state: row.state as EnvState,
    desired: row.desired as EnvironmentRecord['desired'],
    templateFile: row.template_file,
    templateContent: row.template_content,
    templateDir: row.template_dir,
    inputs: JSON.parse(row.inputs) as Record<string, string>,
    plan: row.plan === null ? null : readStoredPlan(row.plan),
    failure: parseJson<Failure>(row.failure),
    ttlMs: row.ttl_ms === null ? null : Number(row.ttl_ms),
    expiresAt: fromDbTimeOrNull(row.expires_at),
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
    leaseOwner: row.lease_owner,
    leaseUntil: fromDbTimeOrNull(row.lease_until),
    attempts: row.attempts,
    retryAt: fromDbTimeOrNull(row.retry_at),
    source: parseJson<GitSource>(row.source),
    revision: row.revision,
    plannedRevision: row.planned_revision,
    failedRevision: row.failed_revision,
    updateFailure: parseJson<UpdateFailure>(row.update_failure),
    sleep: Number(row.sleep) === 1,
    keep: Number(row.keep) === 1,
    lastActiveAt: fromDbTimeOrNull(row.last_active_at),
    origin: parseJson<EnvOrigin>(row.origin),
  };
}
