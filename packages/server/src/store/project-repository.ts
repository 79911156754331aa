/** {@link ProjectRepository} over Kysely, for SQLite and PostgreSQL alike. */
import { type Forge, ProjectPolicy } from '@mayfly/contract';
import type { Kysely, Selectable, Updateable } from 'kysely';
import {
  type Database,
  fromDbTime,
  type ProjectsTable,
  type StoreDialect,
  toDbTime,
  type WebhookDeliveriesTable,
  withoutNul,
} from './schema.js';
import {
  type DeliveryRecord,
  type NewDelivery,
  type NewProject,
  ProjectExistsError,
  type ProjectPatch,
  type ProjectRecord,
  type ProjectRepository,
} from './store.js';

export class KyselyProjectRepository implements ProjectRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: StoreDialect,
  ) {}

  async create(project: NewProject): Promise<ProjectRecord> {
    const now = toDbTime(new Date());
    try {
      const row = await this.db
        .insertInto('projects')
        .values({
          name: project.name,
          repo_url: project.repoUrl,
          template_file: project.templateFile,
          branch: project.branch,
          forge: project.forge,
          forge_repo: project.forgeRepo,
          forge_api_url: project.forgeApiUrl,
          policy: JSON.stringify(project.policy),
          webhook_secret: project.webhookSecret,
          forge_token: project.forgeToken,
          secret_inputs: JSON.stringify(project.secretInputs),
          preview_token_hash: null,
          created_at: now,
          updated_at: now,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toRecord(row);
    } catch (error) {
      if (this.isDuplicate(error)) throw new ProjectExistsError(project.name);
      throw error;
    }
  }

  async get(name: string): Promise<ProjectRecord | null> {
    const row = await this.db.selectFrom('projects').selectAll().where('name', '=', name).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(): Promise<ProjectRecord[]> {
    const rows = await this.db.selectFrom('projects').selectAll().orderBy('name').execute();
    return rows.map(toRecord);
  }

  async findByForgeRepo(forge: Forge, forgeRepo: string): Promise<ProjectRecord[]> {
    // GitHub and GitLab treat owner and repository names case-insensitively.
    const rows = await this.db.selectFrom('projects').selectAll().where('forge', '=', forge).execute();
    return rows.map(toRecord).filter((p) => p.forgeRepo.toLowerCase() === forgeRepo.toLowerCase());
  }

  async update(name: string, patch: ProjectPatch): Promise<ProjectRecord | null> {
    const values: Updateable<ProjectsTable> = { updated_at: toDbTime(new Date()) };
    if (patch.repoUrl !== undefined) values.repo_url = patch.repoUrl;
    if (patch.templateFile !== undefined) values.template_file = patch.templateFile;
    if (patch.branch !== undefined) values.branch = patch.branch;
    if (patch.forge !== undefined) values.forge = patch.forge;
    if (patch.forgeRepo !== undefined) values.forge_repo = patch.forgeRepo;
    if (patch.forgeApiUrl !== undefined) values.forge_api_url = patch.forgeApiUrl;
    if (patch.policy !== undefined) values.policy = JSON.stringify(patch.policy);
    if (patch.webhookSecret !== undefined) values.webhook_secret = patch.webhookSecret;
    if (patch.forgeToken !== undefined) values.forge_token = patch.forgeToken;
    if (patch.secretInputs !== undefined) values.secret_inputs = JSON.stringify(patch.secretInputs);
    if (patch.previewTokenHash !== undefined) values.preview_token_hash = patch.previewTokenHash;
    const row = await this.db
      .updateTable('projects')
      .set(values)
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async delete(name: string): Promise<boolean> {
    // A project made again under the name starts with no deliveries of the old one.
    await this.db.deleteFrom('webhook_deliveries').where('project', '=', name).execute();
    const result = await this.db.deleteFrom('projects').where('name', '=', name).executeTakeFirst();
    return result.numDeletedRows > 0n;
  }

  async recordDelivery(delivery: NewDelivery): Promise<boolean> {
    // Insert-or-nothing in one statement: two replicas given the same delivery agree on who acts.
    const result = await this.db
      .insertInto('webhook_deliveries')
      .values({
        id: delivery.id,
        project: delivery.project,
        event: delivery.event,
        delivery_id: delivery.deliveryId,
        summary: delivery.summary === null ? null : withoutNul(delivery.summary),
        event_json: delivery.eventJson === null ? null : withoutNul(delivery.eventJson),
        redelivery_of: delivery.redeliveryOf ?? null,
        outcome: null,
        received_at: toDbTime(new Date()),
      })
      .onConflict((oc) => oc.column('id').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  async setDeliveryOutcome(id: string, outcome: string): Promise<void> {
    await this.db
      .updateTable('webhook_deliveries')
      .set({ outcome: withoutNul(outcome) })
      .where('id', '=', id)
      .execute();
  }

  async getDelivery(id: string): Promise<DeliveryRecord | null> {
    const row = await this.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row ? toDelivery(row) : null;
  }

  async listDeliveries(project: string, limit: number): Promise<DeliveryRecord[]> {
    const rows = await this.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('project', '=', project)
      .orderBy('received_at', 'desc')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toDelivery);
  }

  async pruneDeliveries(before: Date): Promise<number> {
    const result = await this.db
      .deleteFrom('webhook_deliveries')
      .where('received_at', '<', toDbTime(before))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  private isDuplicate(error: unknown): boolean {
    const e = error as { code?: string };
    return this.dialect === 'postgres' ? e.code === '23505' : e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
  }
}

function toRecord(row: Selectable<ProjectsTable>): ProjectRecord {
  return {
    name: row.name,
    repoUrl: row.repo_url,
    templateFile: row.template_file,
    branch: row.branch,
    forge: row.forge as Forge,
    forgeRepo: row.forge_repo,
    forgeApiUrl: row.forge_api_url,
    // Parsed again so a policy stored by an older release gets today's defaults.
    policy: ProjectPolicy.parse(JSON.parse(row.policy)),
    webhookSecret: row.webhook_secret,
    forgeToken: row.forge_token,
    secretInputs: JSON.parse(row.secret_inputs) as Record<string, string>,
    previewTokenHash: row.preview_token_hash,
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  };
}

function toDelivery(row: Selectable<WebhookDeliveriesTable>): DeliveryRecord {
  return {
    id: row.id,
    project: row.project,
    event: row.event,
    // Rows from before the column: the id's last part (project names hold no colon).
    deliveryId: row.delivery_id ?? row.id.split(':').slice(2).join(':'),
    summary: row.summary,
    eventJson: row.event_json,
    redeliveryOf: row.redelivery_of,
    outcome: row.outcome,
    receivedAt: fromDbTime(row.received_at),
  };
}
