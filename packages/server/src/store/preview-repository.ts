/** {@link PreviewRepository} over Kysely, for SQLite and PostgreSQL alike. */
import type { Kysely, Selectable, Updateable } from 'kysely';
import { claimLease, releaseLease } from './leases.js';
import {
  type Database,
  fromDbTime,
  fromDbTimeOrNull,
  type PreviewReadinessTable,
  type PreviewsTable,
  type StoreDialect,
  toDbTime,
} from './schema.js';
import {
  LeaseLostError,
  type PreviewFacts,
  type PreviewPatch,
  type PreviewRecord,
  type PreviewRepository,
  type Readiness,
  type UpdateOptions,
} from './store.js';

const bit = (value: boolean) => (value ? 1 : 0);

export class KyselyPreviewRepository implements PreviewRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: StoreDialect,
  ) {}

  async upsert(facts: PreviewFacts, options: { approved?: boolean } = {}): Promise<PreviewRecord> {
    const now = toDbTime(new Date());
    const values = {
      project: facts.project,
      number: facts.number,
      branch: facts.branch,
      env_name: facts.envName,
      head_sha: facts.headSha,
      base_sha: facts.baseSha,
      head_ref: facts.headRef,
      base_ref: facts.baseRef,
      clone_url: facts.cloneUrl,
      from_fork: bit(facts.fromFork),
      draft: bit(facts.draft),
      labels: JSON.stringify(facts.labels),
      title: facts.title,
      url: facts.url,
      open: bit(facts.open),
      updated_at: now,
    };
    return this.db.transaction().execute(async (trx) => {
      // PostgreSQL: the row is locked until commit; SQLite serialises writers by itself.
      let read = trx.selectFrom('previews').select(['head_sha']).where('id', '=', facts.id);
      if (this.dialect === 'postgres') read = read.forUpdate();
      const current = await read.executeTakeFirst();
      if (!current) {
        const row = await trx
          .insertInto('previews')
          .values({
            id: facts.id,
            ...values,
            approved: bit(options.approved ?? false),
            received_at: now,
            handled: null,
            decision: null,
            detail: null,
            env_id: null,
            comment_id: null,
            deployment_id: null,
            deployment_sha: null,
            reported: null,
            lease_owner: null,
            lease_until: null,
            attempts: 0,
            retry_at: null,
            created_at: now,
          })
          .onConflict((oc) => oc.column('id').doUpdateSet(values))
          .returningAll()
          .executeTakeFirstOrThrow();
        return toRecord(row);
      }
      const row = await trx
        .updateTable('previews')
        .set({
          ...values,
          // A new head starts the clock of "webhook to ready" again, and is worked on at once.
          ...(current.head_sha !== facts.headSha ? { received_at: now, attempts: 0, retry_at: null } : {}),
        })
        .where('id', '=', facts.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      return toRecord(row);
    });
  }

  async get(id: string): Promise<PreviewRecord | null> {
    const row = await this.db.selectFrom('previews').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(filter: { project?: string } = {}): Promise<PreviewRecord[]> {
    let query = this.db.selectFrom('previews').selectAll();
    if (filter.project !== undefined) query = query.where('project', '=', filter.project);
    const rows = await query.orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async listActive(): Promise<PreviewRecord[]> {
    const rows = await this.db
      .selectFrom('previews')
      .selectAll()
      .where((eb) => eb.or([eb('open', '=', 1), eb('decision', 'is', null), eb('decision', '<>', 'closed')]))
      .where((eb) => eb.or([eb('retry_at', 'is', null), eb('retry_at', '<=', toDbTime(new Date()))]))
      .orderBy('updated_at')
      .execute();
    return rows.map(toRecord);
  }

  async update(id: string, patch: PreviewPatch, options: UpdateOptions = {}): Promise<PreviewRecord> {
    const values: Updateable<PreviewsTable> = { updated_at: toDbTime(new Date()) };
    if (patch.approved !== undefined) values.approved = bit(patch.approved);
    if (patch.handled !== undefined) values.handled = patch.handled;
    if (patch.decision !== undefined) values.decision = patch.decision;
    if (patch.detail !== undefined) values.detail = patch.detail;
    if (patch.envId !== undefined) values.env_id = patch.envId;
    if (patch.commentId !== undefined) values.comment_id = patch.commentId;
    if (patch.deploymentId !== undefined) values.deployment_id = patch.deploymentId;
    if (patch.deploymentSha !== undefined) values.deployment_sha = patch.deploymentSha;
    if (patch.reported !== undefined) values.reported = patch.reported;
    if (patch.attempts !== undefined) values.attempts = patch.attempts;
    if (patch.retryAt !== undefined)
      values.retry_at = patch.retryAt === null ? null : toDbTime(patch.retryAt);
    let query = this.db.updateTable('previews').set(values).where('id', '=', id);
    if (options.owner !== undefined) query = query.where('lease_owner', '=', options.owner);
    const row = await query.returningAll().executeTakeFirst();
    if (!row) {
      if (options.owner !== undefined && (await this.get(id))) throw new LeaseLostError(id, options.owner);
      throw new Error(`no preview "${id}"`);
    }
    return toRecord(row);
  }

  claim(id: string, owner: string, leaseMs: number): Promise<boolean> {
    return claimLease(this.db, this.dialect, 'previews', id, owner, leaseMs);
  }

  release(id: string, owner: string): Promise<void> {
    return releaseLease(this.db, 'previews', id, owner);
  }

  async deleteForProject(project: string): Promise<number> {
    await this.db.deleteFrom('preview_readiness').where('project', '=', project).execute();
    const result = await this.db.deleteFrom('previews').where('project', '=', project).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async recordReadiness(r: Readiness): Promise<void> {
    await this.db
      .insertInto('preview_readiness')
      .values({
        id: `${r.previewId}@${r.headSha}`,
        project: r.project,
        preview_id: r.previewId,
        env_name: r.envName,
        number: r.number,
        branch: r.branch,
        head_sha: r.headSha,
        received_at: toDbTime(r.receivedAt),
        ready_at: toDbTime(r.readyAt),
        ready_ms: Math.min(Math.max(0, Math.round(r.readyMs)), 2 ** 31 - 1),
      })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
  }

  async listReadiness(project: string, since: Date, limit: number): Promise<Readiness[]> {
    const rows = await this.db
      .selectFrom('preview_readiness')
      .selectAll()
      .where('project', '=', project)
      .where('ready_at', '>=', toDbTime(since))
      .orderBy('ready_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toReadiness);
  }

  async pruneReadiness(before: Date): Promise<number> {
    const result = await this.db
      .deleteFrom('preview_readiness')
      .where('ready_at', '<', toDbTime(before))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}

function toRecord(row: Selectable<PreviewsTable>): PreviewRecord {
  return {
    id: row.id,
    project: row.project,
    number: row.number === null ? null : Number(row.number),
    branch: row.branch,
    envName: row.env_name,
    headSha: row.head_sha,
    baseSha: row.base_sha,
    headRef: row.head_ref,
    baseRef: row.base_ref,
    cloneUrl: row.clone_url,
    fromFork: Number(row.from_fork) === 1,
    approved: Number(row.approved) === 1,
    draft: Number(row.draft) === 1,
    labels: JSON.parse(row.labels) as string[],
    title: row.title,
    url: row.url,
    open: Number(row.open) === 1,
    receivedAt: fromDbTime(row.received_at),
    handled: row.handled,
    decision: row.decision,
    detail: row.detail,
    envId: row.env_id,
    commentId: row.comment_id,
    deploymentId: row.deployment_id,
    deploymentSha: row.deployment_sha,
    reported: row.reported,
    leaseOwner: row.lease_owner,
    leaseUntil: fromDbTimeOrNull(row.lease_until),
    attempts: Number(row.attempts),
    retryAt: fromDbTimeOrNull(row.retry_at),
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  };
}

function toReadiness(row: Selectable<PreviewReadinessTable>): Readiness {
  return {
    project: row.project,
    previewId: row.preview_id,
    envName: row.env_name,
    number: row.number,
    branch: row.branch,
    headSha: row.head_sha,
    receivedAt: fromDbTime(row.received_at),
    readyAt: fromDbTime(row.ready_at),
    readyMs: Number(row.ready_ms),
  };
}
