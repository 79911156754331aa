/** Opens the store: SQLite under the data dir by default, PostgreSQL when given its URL. */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import { KyselyBuiltImageRepository } from './built-image-repository.js';
import { KyselyEnvironmentRepository } from './environment-repository.js';
import { KyselyEventRepository } from './event-repository.js';
import { KyselyKeptLogRepository } from './kept-log-repository.js';
import { migrateToLatest } from './migrations.js';
import { KyselyPreviewRepository } from './preview-repository.js';
import { KyselyProjectRepository } from './project-repository.js';
import { KyselyReplicaRepository } from './replica-repository.js';
import { KyselySandboxRepository, KyselySandboxTemplateRepository } from './sandbox-repository.js';
import type { Database, StoreDialect } from './schema.js';
import { KyselySnapshotRepository } from './snapshot-repository.js';
import type { Store } from './store.js';
import { KyselyTokenRepository } from './token-repository.js';

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** For a new store: its instance id becomes `<instanceName>-<random>` (see `ServerConfig.instanceName`). */
  instanceName?: string;
  /**
   * `postgres://…` or `postgresql://…` for PostgreSQL; unset or empty for the SQLite file
   * `<dataDir>/mayfly.db`. Any other URL is refused.
   */
  url?: string;
  /** Directory of the SQLite file, created (mode 0700) when missing. */
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
  readonly logs: KyselyKeptLogRepository;
  readonly images: KyselyBuiltImageRepository;
  readonly projects: KyselyProjectRepository;
  readonly previews: KyselyPreviewRepository;
  readonly sandboxes: KyselySandboxRepository;
  readonly sandboxTemplates: KyselySandboxTemplateRepository;
  readonly replicas: KyselyReplicaRepository;
  readonly snapshots: KyselySnapshotRepository;

  constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: StoreDialect,
    readonly instanceId: string,
  ) {
    this.environments = new KyselyEnvironmentRepository(db, dialect);
    this.events = new KyselyEventRepository(db, dialect);
    this.tokens = new KyselyTokenRepository(db);
    this.logs = new KyselyKeptLogRepository(db);
    this.images = new KyselyBuiltImageRepository(db);
    this.projects = new KyselyProjectRepository(db, dialect);
    this.previews = new KyselyPreviewRepository(db, dialect);
    this.sandboxes = new KyselySandboxRepository(db);
    this.sandboxTemplates = new KyselySandboxTemplateRepository(db);
    this.replicas = new KyselyReplicaRepository(db, dialect);
    this.snapshots = new KyselySnapshotRepository(db);
  }

  async secret(purpose: string): Promise<Buffer> {
    const key = `secret:${purpose}`;
    await this.db
      .insertInto('settings')
      .values({ key, value: randomBytes(32).toString('hex') })
      .onConflict((oc) => oc.column('key').doNothing())
      .execute();
    const row = await this.db
      .selectFrom('settings')
      .select('value')
      .where('key', '=', key)
      .executeTakeFirstOrThrow();
    return Buffer.from(row.value, 'hex');
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

/**
 * The installation's id, made once and kept in the store: every replica of one installation
 * shares it, and a second installation on the same engine has another.
 */
async function ensureInstanceId(db: Kysely<Database>, name?: string): Promise<string> {
  const random = randomBytes(6).toString('hex');
  await db
    .insertInto('settings')
    .values({ key: 'instance_id', value: name ? `${name}-${random}` : random })
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
  if (url && isPostgresUrl(url)) return openPostgres(url, logger, options.instanceName);
  if (url) {
    // Falling back to SQLite for, say, a mysql:// URL would quietly split the data.
    throw new Error(
      `unsupported store URL scheme "${url.split(':')[0]}:" (use postgres:// or leave it unset)`,
    );
  }
  return openSqlite(options.dataDir, logger, options.instanceName);
}

async function openSqlite(
  dataDir: string,
  logger: OpenStoreOptions['logger'],
  instanceName: string | undefined,
): Promise<Store> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.resolve(dataDir, SQLITE_FILE_NAME);
  restrictToOwner(file);
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
    return new KyselyStore(db, 'sqlite', await ensureInstanceId(db, instanceName));
  } catch (error) {
    await db.destroy();
    throw error;
  }
}

/**
 * Makes the database file readable by its owner only (it holds token hashes and templates):
 * created 0600 before SQLite opens it, and tightened when an older release left it wider.
 * SQLite gives its -wal and -shm files the database file's mode when it creates them; ones left
 * wider by an older release are tightened too.
 */
function restrictToOwner(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  for (const name of [file, `${file}-wal`, `${file}-shm`]) {
    let mode: number;
    try {
      mode = statSync(name).mode;
    } catch {
      continue; // -wal/-shm exist only while (or after) the database is open
    }
    if ((mode & 0o077) !== 0) chmodSync(name, mode & 0o700);
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

async function openPostgres(
  url: string,
  logger: OpenStoreOptions['logger'],
  instanceName: string | undefined,
): Promise<Store> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    // A replica cut off mid-transaction (a lease claim, an event append under its advisory lock)
    // must not hold row or advisory locks until its TCP connection dies, which can take hours:
    // the server ends such a session, and this side gives up on a query that does not answer.
    idle_in_transaction_session_timeout: 10_000,
    query_timeout: 30_000,
    connectionTimeoutMillis: 10_000,
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
  // A client lent out (a transaction between two of its queries) loses the pool's listener: its
  // connection ending then (the server restarted, a session ended by a timeout) would emit
  // 'error' with no one listening and end the process. Its query fails on its own, and the pool
  // drops a client that ended when it is given back.
  pool.on('connect', (client) =>
    client.on('error', (error) =>
      logger?.info({ err: error.message }, 'store: PostgreSQL connection in use failed'),
    ),
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
    return new KyselyStore(db, 'postgres', await ensureInstanceId(db, instanceName));
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
