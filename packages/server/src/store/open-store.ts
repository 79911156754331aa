/** Opens the store: SQLite under the data dir by default, PostgreSQL when given its URL. */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import { KyselyEnvironmentRepository } from './environment-repository.js';
import { KyselyEventRepository } from './event-repository.js';
import { migrateToLatest } from './migrations.js';
import type { Database, StoreDialect } from './schema.js';
import type { Store } from './store.js';
import { KyselyTokenRepository } from './token-repository.js';

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /**
   * `postgres://…` or `postgresql://…` for PostgreSQL; unset or empty for the SQLite file
   * `<dataDir>/mayfly.db`. Any other URL is refused.
   */
  url?: string;
  /** Directory of the SQLite file, created when missing. */
  dataDir: string;
  logger?: { info(obj: object, msg?: string): void };
}

/** The file name of the SQLite database inside the data dir. */
export const SQLITE_FILE_NAME = 'mayfly.db';

const PG_INT8_OID = 20;

/** A {@link Store} over one Kysely instance. */
class KyselyStore implements Store {
  readonly environments: KyselyEnvironmentRepository;
  readonly events: KyselyEventRepository;
  readonly tokens: KyselyTokenRepository;

  constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: StoreDialect,
    readonly instanceId: string,
  ) {
    this.environments = new KyselyEnvironmentRepository(db, dialect);
    this.events = new KyselyEventRepository(db);
    this.tokens = new KyselyTokenRepository(db);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

/**
 * The installation's id, made once and kept in the store: every replica of one installation
 * shares it, and a second installation on the same engine has another.
 */
async function ensureInstanceId(db: Kysely<Database>): Promise<string> {
  await db
    .insertInto('settings')
    .values({ key: 'instance_id', value: randomBytes(6).toString('hex') })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  const row = await db
    .selectFrom('settings')
    .select('value')
    .where('key', '=', 'instance_id')
    .executeTakeFirstOrThrow();
  return row.value;
}

/** True when `url` names a PostgreSQL database. */
export function isPostgresUrl(url: string | undefined): boolean {
  return url !== undefined && /^postgres(ql)?:\/\//i.test(url);
}

/**
 * Opens the store and applies pending migrations before returning. Several processes may open
 * the same database at once (replicas on PostgreSQL, or a CLI beside the server on SQLite).
 */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const { url, logger } = options;
  if (url && isPostgresUrl(url)) return openPostgres(url, logger);
  if (url) {
    // Falling back to SQLite for, say, a mysql:// URL would quietly split the data.
    throw new Error(
      `unsupported store URL scheme "${url.split(':')[0]}:" (use postgres:// or leave it unset)`,
    );
  }
  return openSqlite(options.dataDir, logger);
}

async function openSqlite(dataDir: string, logger: OpenStoreOptions['logger']): Promise<Store> {
  mkdirSync(dataDir, { recursive: true });
  const file = path.resolve(dataDir, SQLITE_FILE_NAME);
  const database = new SqliteDatabase(file);
  try {
    // First, so that even switching to WAL waits for another process opening the file right now.
    // Other processes on the same file (a second server, the CLI) then wait for locks, not fail.
    database.pragma('busy_timeout = 5000');
    database.pragma('journal_mode = WAL');
    database.pragma('foreign_keys = ON');
    // With WAL, NORMAL is still crash-safe (a power loss may only drop the last commits).
    database.pragma('synchronous = NORMAL');
  } catch (error) {
    database.close();
    throw error;
  }
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  try {
    const applied = await migrateSqliteFile(file, () => migrateToLatest(db, 'sqlite'));
    logger?.info({ dialect: 'sqlite', file, migrationsApplied: applied }, 'store opened');
    return new KyselyStore(db, 'sqlite', await ensureInstanceId(db));
  } catch (error) {
    await db.destroy();
    throw error;
  }
}

/** Migrations in progress in this process, by SQLite file. */
const sqliteMigrations = new Map<string, Promise<unknown>>();

/**
 * Runs one migration of `file` at a time in this process. Across processes SQLite's write lock
 * serialises them, but two connections in one process cannot wait on each other that way:
 * better-sqlite3 waits for a lock synchronously, blocking the event loop the holder needs to finish.
 */
async function migrateSqliteFile<T>(file: string, migrate: () => Promise<T>): Promise<T> {
  const previous = sqliteMigrations.get(file) ?? Promise.resolve();
  const current = previous.catch(() => {}).then(migrate);
  sqliteMigrations.set(file, current);
  try {
    return await current;
  } finally {
    if (sqliteMigrations.get(file) === current) sqliteMigrations.delete(file);
  }
}

async function openPostgres(url: string, logger: OpenStoreOptions['logger']): Promise<Store> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    types: {
      // bigint columns (event ids, TTLs, counts) as numbers; they stay far below 2^53.
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === PG_INT8_OID && format !== 'binary'
          ? (value: string) => Number(value)
          : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client losing its connection emits 'error' on the pool; unhandled it would end the
  // process. The pool replaces the client, so noting it is enough.
  pool.on('error', (error) =>
    logger?.info({ err: error.message }, 'store: idle PostgreSQL connection failed'),
  );
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db);
    const schema = rows[0]?.schema ?? undefined;
    const applied = await migrateToLatest(db, 'postgres', schema);
    logger?.info(
      { dialect: 'postgres', server: describePostgres(url), schema, migrationsApplied: applied },
      'store opened',
    );
    return new KyselyStore(db, 'postgres', await ensureInstanceId(db));
  } catch (error) {
    await db.destroy();
    throw error;
  }
}

/** host:port/database, without credentials, for logs. */
function describePostgres(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return 'postgres';
  }
}
