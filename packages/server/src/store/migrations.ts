/**
 * Schema migrations, kept in code (nothing is read from disk at runtime) and applied by Kysely's
 * `Migrator`, which records them in `mayfly_migration` and serialises concurrent replicas with a
 * lock. Migrations are append-only: never edit one that has shipped, add the next one.
 */
import {
  type ColumnDefinitionBuilderCallback,
  type Kysely,
  type Migration,
  type MigrationResult,
  type MigrationResultSet,
  Migrator,
  sql,
} from 'kysely';
import type { Database, StoreDialect } from './schema.js';

function migrations(dialect: StoreDialect): Record<string, Migration> {
  const timestamp = dialect === 'postgres' ? 'timestamptz' : 'text';
  return {
    '0001-initial': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('environments')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('name', 'text', (col) => col.notNull())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('kind', 'text', (col) => col.notNull())
          .addColumn('state', 'text', (col) => col.notNull())
          .addColumn('desired', 'text', (col) => col.notNull())
          .addColumn('template_file', 'text', (col) => col.notNull())
          .addColumn('template_content', 'text', (col) => col.notNull())
          .addColumn('template_dir', 'text')
          .addColumn('inputs', 'text', (col) => col.notNull())
          .addColumn('plan', 'text')
          .addColumn('failure', 'text')
          .addColumn('ttl_ms', 'bigint')
          .addColumn('expires_at', sql.raw(timestamp))
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('updated_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', sql.raw(timestamp))
          .execute();
        // Names identify live environments; a destroyed one gives its name up for re-use.
        await db.schema
          .createIndex('environments_live_name_key')
          .unique()
          .on('environments')
          .column('name')
          .where(sql.ref('state'), '<>', 'destroyed')
          .execute();
        await db.schema
          .createIndex('environments_name_idx')
          .on('environments')
          .columns(['name', 'created_at'])
          .execute();
        await db.schema
          .createIndex('environments_project_idx')
          .on('environments')
          .columns(['project', 'created_at'])
          .execute();
        await db.schema.createIndex('environments_state_idx').on('environments').column('state').execute();
        await db.schema
          .createIndex('environments_expires_at_idx')
          .on('environments')
          .column('expires_at')
          .where(sql.ref('expires_at'), 'is not', null)
          .execute();

        let events = db.schema.createTable('events');
        events =
          dialect === 'postgres'
            ? events.addColumn('id', 'bigint', (col) => col.primaryKey().generatedAlwaysAsIdentity())
            : // AUTOINCREMENT: ids are never re-used, so `afterId` cursors stay valid.
              events.addColumn('id', 'integer', (col) => col.primaryKey().autoIncrement());
        await events
          .addColumn('env_id', 'text', (col) =>
            col.notNull().references('environments.id').onDelete('cascade'),
          )
          .addColumn('type', 'text', (col) => col.notNull())
          .addColumn('state', 'text')
          .addColumn('message', 'text', (col) => col.notNull())
          .addColumn('at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema.createIndex('events_env_id_idx').on('events').columns(['env_id', 'id']).execute();

        await db.schema
          .createTable('tokens')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('name', 'text', (col) => col.notNull())
          .addColumn('scopes', 'text', (col) => col.notNull())
          .addColumn('token_hash', 'text', (col) => col.notNull().unique())
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
      },
    },
    '0002-settings': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('settings')
          .addColumn('key', 'text', (col) => col.primaryKey())
          .addColumn('value', 'text', (col) => col.notNull())
          .execute();
      },
    },
    '0003-hardening': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        // One column per statement: SQLite's ALTER TABLE adds only one at a time.
        const addColumn = (
          table: string,
          column: string,
          type: string,
          build: ColumnDefinitionBuilderCallback = (col) => col,
        ) => db.schema.alterTable(table).addColumn(column, sql.raw(type), build).execute();
        // Bounded retries: failed attempts at the current step, and the backoff before the next.
        await addColumn('environments', 'attempts', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'retry_at', timestamp);
        // Scoped, expiring, revocable tokens; existing tokens stay unbound and never expire.
        await addColumn('tokens', 'project', 'text');
        await addColumn('tokens', 'expires_at', timestamp);
        await addColumn('tokens', 'revoked_at', timestamp);

        // The last output of a workload, readable after its containers are gone; goes with its env.
        await db.schema
          .createTable('kept_logs')
          .addColumn('env_id', 'text', (col) =>
            col.notNull().references('environments.id').onDelete('cascade'),
          )
          .addColumn('workload', 'text', (col) => col.notNull())
          .addColumn('text', 'text', (col) => col.notNull())
          .addColumn('at', sql.raw(timestamp), (col) => col.notNull())
          .addPrimaryKeyConstraint('kept_logs_pkey', ['env_id', 'workload'])
          .execute();

        // Images are shared by environments (content-addressed), so they are not tied to one by FK.
        await db.schema
          .createTable('built_images')
          .addColumn('ref', 'text', (col) => col.primaryKey())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('last_used_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema
          .createIndex('built_images_last_used_at_idx')
          .on('built_images')
          .column('last_used_at')
          .execute();
        // Retention looks up destroyed environments by age.
        await db.schema
          .createIndex('environments_destroyed_updated_at_idx')
          .on('environments')
          .column('updated_at')
          .where(sql.ref('state'), '=', 'destroyed')
          .execute();
      },
    },
    '0004-previews': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        const addColumn = (
          table: string,
          column: string,
          type: string,
          build: ColumnDefinitionBuilderCallback = (col) => col,
        ) => db.schema.alterTable(table).addColumn(column, sql.raw(type), build).execute();
        // Environments from git: the commit wanted, and updates in place counted by revision.
        await addColumn('environments', 'source', 'text');
        await addColumn('environments', 'revision', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'planned_revision', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'failed_revision', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'update_failure', 'text');
        // Lifecycle: asked to sleep (containers stopped, volumes kept), kept from TTL and idle
        // policies, and when the gateway last saw a request for it.
        await addColumn('environments', 'sleep', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'keep', 'integer', (col) => col.notNull().defaultTo(0));
        await addColumn('environments', 'last_active_at', timestamp);

        await db.schema
          .createTable('projects')
          .addColumn('name', 'text', (col) => col.primaryKey())
          .addColumn('repo_url', 'text', (col) => col.notNull())
          .addColumn('template_file', 'text')
          .addColumn('branch', 'text', (col) => col.notNull())
          .addColumn('forge', 'text', (col) => col.notNull())
          .addColumn('forge_repo', 'text', (col) => col.notNull())
          .addColumn('forge_api_url', 'text')
          .addColumn('policy', 'text', (col) => col.notNull())
          .addColumn('webhook_secret', 'text')
          .addColumn('forge_token', 'text')
          .addColumn('secret_inputs', 'text', (col) => col.notNull())
          // SHA-256 of the project's preview token (access: token); the token is shown once.
          .addColumn('preview_token_hash', 'text')
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('updated_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema
          .createIndex('projects_forge_repo_idx')
          .on('projects')
          .columns(['forge', 'forge_repo'])
          .execute();

        await db.schema
          .createTable('webhook_deliveries')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('event', 'text', (col) => col.notNull())
          .addColumn('received_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema
          .createIndex('webhook_deliveries_received_at_idx')
          .on('webhook_deliveries')
          .column('received_at')
          .execute();

        await db.schema
          .createTable('previews')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('number', 'integer')
          .addColumn('branch', 'text')
          .addColumn('env_name', 'text', (col) => col.notNull())
          .addColumn('head_sha', 'text', (col) => col.notNull())
          .addColumn('base_sha', 'text')
          .addColumn('head_ref', 'text', (col) => col.notNull())
          .addColumn('base_ref', 'text', (col) => col.notNull())
          .addColumn('clone_url', 'text')
          .addColumn('from_fork', 'integer', (col) => col.notNull())
          .addColumn('approved', 'integer', (col) => col.notNull())
          .addColumn('draft', 'integer', (col) => col.notNull())
          .addColumn('labels', 'text', (col) => col.notNull())
          .addColumn('title', 'text')
          .addColumn('url', 'text')
          .addColumn('open', 'integer', (col) => col.notNull())
          .addColumn('received_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('handled', 'text')
          .addColumn('decision', 'text')
          .addColumn('detail', 'text')
          .addColumn('env_id', 'text')
          .addColumn('comment_id', 'text')
          .addColumn('deployment_id', 'text')
          .addColumn('deployment_sha', 'text')
          .addColumn('reported', 'text')
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', sql.raw(timestamp))
          .addColumn('attempts', 'integer', (col) => col.notNull().defaultTo(0))
          .addColumn('retry_at', sql.raw(timestamp))
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('updated_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema.createIndex('previews_project_idx').on('previews').column('project').execute();
      },
    },
    '0005-sandboxes': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('sandboxes')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('template', 'text', (col) => col.notNull())
          // running | paused | ended
          .addColumn('state', 'text', (col) => col.notNull())
          .addColumn('ended_reason', 'text')
          .addColumn('metadata', 'text', (col) => col.notNull())
          .addColumn('cpu', sql.raw(dialect === 'postgres' ? 'double precision' : 'real'))
          .addColumn('memory_mb', 'integer', (col) => col.notNull())
          .addColumn('peak_memory_bytes', sql.raw(dialect === 'postgres' ? 'bigint' : 'integer'))
          .addColumn('created_by', 'text')
          .addColumn('started_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('expires_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('ended_at', sql.raw(timestamp))
          .execute();
        await db.schema.createIndex('sandboxes_state_idx').on('sandboxes').column('state').execute();
      },
    },
    '0006-sandbox-templates': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('sandbox_templates')
          .addColumn('name', 'text', (col) => col.primaryKey())
          // dockerfile | image
          .addColumn('source', 'text', (col) => col.notNull())
          .addColumn('image', 'text')
          // the workspace holding the Dockerfile's folder (kept: a collected image is built again)
          .addColumn('workspace', 'text')
          .addColumn('dockerfile', 'text')
          // JSON: user, workdir, env, cpu, memoryMb, pids, diskMb, isolation, pool
          .addColumn('settings', 'text', (col) => col.notNull())
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('updated_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
      },
    },
    '0007-replicas': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('replicas')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('alive_until', sql.raw(timestamp), (col) => col.notNull())
          .execute();
      },
    },
    '0008-dashboard-sessions': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        // api | session (the dashboard's cookie) | login (a one-time link that starts a session)
        await db.schema
          .alterTable('tokens')
          .addColumn('kind', 'text', (col) => col.notNull().defaultTo('api'))
          .execute();
        // A session's or link's token: it lives only as long as that one does.
        await db.schema.alterTable('tokens').addColumn('parent_id', 'text').execute();
      },
    },
    '0009-deliveries-and-readiness': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        for (const column of ['delivery_id', 'summary', 'outcome', 'event_json', 'redelivery_of']) {
          await db.schema.alterTable('webhook_deliveries').addColumn(column, 'text').execute();
        }
        // Received before outcomes were kept: not "being acted on".
        await db
          .updateTable('webhook_deliveries')
          .set({ outcome: '(received before Mayfly kept what it did)' })
          .execute();
        await db.schema
          .createIndex('webhook_deliveries_project_idx')
          .on('webhook_deliveries')
          .columns(['project', 'received_at'])
          .execute();
        await db.schema
          .createTable('preview_readiness')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('preview_id', 'text', (col) => col.notNull())
          .addColumn('env_name', 'text', (col) => col.notNull())
          .addColumn('number', 'integer')
          .addColumn('branch', 'text')
          .addColumn('head_sha', 'text', (col) => col.notNull())
          .addColumn('received_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('ready_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('ready_ms', 'integer', (col) => col.notNull())
          .execute();
        await db.schema
          .createIndex('preview_readiness_project_idx')
          .on('preview_readiness')
          .columns(['project', 'ready_at'])
          .execute();
      },
    },
    '0010-environment-origin': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema.alterTable('environments').addColumn('origin', 'text').execute();
      },
    },
    '0011-snapshots': {
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('snapshots')
          .addColumn('id', 'text', (col) => col.primaryKey())
          .addColumn('project', 'text', (col) => col.notNull())
          .addColumn('name', 'text', (col) => col.notNull())
          .addColumn('seed_key', 'text')
          .addColumn('volume', 'text', (col) => col.notNull())
          .addColumn('source_env_id', 'text', (col) => col.notNull())
          .addColumn('source_env_name', 'text', (col) => col.notNull())
          .addColumn('state', 'text', (col) => col.notNull())
          .addColumn('owner', 'text')
          .addColumn('size_bytes', 'bigint')
          .addColumn('created_at', sql.raw(timestamp), (col) => col.notNull())
          .addColumn('last_used_at', sql.raw(timestamp), (col) => col.notNull())
          .execute();
        await db.schema
          .createIndex('snapshots_project_name_idx')
          .unique()
          .on('snapshots')
          .columns(['project', 'name'])
          .execute();
        await db.schema
          .createIndex('snapshots_project_key_idx')
          .on('snapshots')
          .columns(['project', 'seed_key'])
          .execute();
      },
    },
    '0012-fork-previews-origin': {
      // Previews of pull requests from forks made before their environments' origin said so: told
      // now, so they are refused the project's snapshots made by hand as they are its secrets.
      // biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
      async up(db: Kysely<any>) {
        const rows: { id: string; origin: string | null }[] = await db
          .selectFrom('environments')
          .select(['id', 'origin'])
          .where('id', 'in', db.selectFrom('previews').select('env_id').where('from_fork', '=', 1))
          .execute();
        for (const row of rows) {
          const origin = row.origin
            ? JSON.parse(row.origin)
            : { createdBy: 'a preview of a pull request', pullRequest: null };
          await db
            .updateTable('environments')
            .set({ origin: JSON.stringify({ ...origin, fromFork: true }) })
            .where('id', '=', row.id)
            .execute();
        }
      },
    },
  };
}

/**
 * Applies every pending migration. On PostgreSQL pass the schema the tables live in
 * (`current_schema()`), so the migration bookkeeping is looked up there and not in whichever
 * schema of the database happens to have a table of that name.
 */
export async function migrateToLatest(
  db: Kysely<Database>,
  dialect: StoreDialect,
  schema?: string,
): Promise<string[]> {
  return migrate(db, dialect, schema, (migrator) => migrator.migrateToLatest());
}

/**
 * Applies migrations up to and including `name` only: tests use it to make a database as an
 * older release left it, then check that opening the store upgrades it.
 */
export async function migrateTo(
  db: Kysely<Database>,
  dialect: StoreDialect,
  name: string,
  schema?: string,
): Promise<string[]> {
  return migrate(db, dialect, schema, (migrator) => migrator.migrateTo(name));
}

async function migrate(
  db: Kysely<Database>,
  dialect: StoreDialect,
  schema: string | undefined,
  run: (migrator: Migrator) => Promise<MigrationResultSet>,
): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations(dialect) },
    migrationTableName: 'mayfly_migration',
    migrationLockTableName: 'mayfly_migration_lock',
    ...(schema ? { migrationTableSchema: schema } : {}),
  });
  const { error, results } =
    dialect === 'sqlite' ? await inWriteLock(db, () => run(migrator)) : await run(migrator);
  if (error) {
    const failed = results?.find((r: MigrationResult) => r.status === 'Error');
    throw new Error(`store migration ${failed?.migrationName ?? ''} failed: ${String(error)}`, {
      cause: error,
    });
  }
  return (results ?? []).map((r) => r.migrationName);
}

/**
 * Runs `fn` in a SQLite write transaction. Kysely's migrator takes no lock on SQLite (it assumes
 * one connection), yet a second process may open the same file at the same moment; `BEGIN
 * IMMEDIATE` makes it wait (busy_timeout) and then find the migrations done. It also makes a
 * migration all-or-nothing. Works because a SQLite Kysely has a single connection.
 */
async function inWriteLock<T>(db: Kysely<Database>, fn: () => Promise<T>): Promise<T> {
  await sql`begin immediate`.execute(db);
  try {
    const result = await fn();
    await sql`commit`.execute(db);
    return result;
  } catch (error) {
    await sql`rollback`.execute(db);
    throw error;
  }
}
