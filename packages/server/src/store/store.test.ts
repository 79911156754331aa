/**
 * Runs the store suite against SQLite (a temp dir) and PostgreSQL (`MAYFLY_TEST_PG_URL`, e.g. from
 * `scripts/ensure-postgres.sh`; each test in a schema of its own, dropped afterwards).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { createPgSchema, SCHEMA_PREFIX } from '../test-support/pg-schema.js';
import { migrateTo } from './migrations.js';
import { openStore, SQLITE_FILE_NAME } from './open-store.js';
import type { Database } from './schema.js';
import { describeStore, type StoreTarget } from './store.case.js';
import type { EventRecord } from './store.js';

const sqliteTarget: StoreTarget = {
  dialect: 'sqlite',
  async create() {
    const root = await mkdtemp(path.join(tmpdir(), 'mayfly-store-'));
    // not created beforehand: openStore makes it
    const dataDir = path.join(root, 'data', 'nested');
    const file = path.join(dataDir, SQLITE_FILE_NAME);
    return {
      open: () => openStore({ dataDir }),
      async rows(query) {
        const db = new SqliteDatabase(file, { fileMustExist: true });
        try {
          db.pragma('busy_timeout = 5000');
          const statement = db.prepare(query);
          if (statement.reader) return statement.all() as Record<string, unknown>[];
          statement.run();
          return [];
        } finally {
          db.close();
        }
      },
      async migrateTo(name) {
        mkdirSync(dataDir, { recursive: true });
        const db = new Kysely<Database>({
          dialect: new SqliteDialect({ database: new SqliteDatabase(file) }),
        });
        try {
          await migrateTo(db, 'sqlite', name);
        } finally {
          await db.destroy();
        }
      },
      drop: () => rm(root, { recursive: true, force: true }),
    };
  },
};

describeStore('sqlite', sqliteTarget);

describe('store on sqlite: the file', () => {
  it('lives in the data dir, in WAL mode, with foreign keys on', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'mayfly-store-'));
    try {
      const lines: string[] = [];
      const store = await openStore({
        dataDir: root,
        logger: { info: (_obj, msg) => lines.push(msg ?? '') },
      });
      await store.close();
      expect(lines).toEqual(['store opened']);
      const db = new SqliteDatabase(path.join(root, SQLITE_FILE_NAME), { readonly: true });
      try {
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      } finally {
        db.close();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('is readable by its owner only, its -wal and -shm files too, in a data dir of mode 0700', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'mayfly-store-'));
    const previousUmask = process.umask(0o022); // the usual umask, which would make files 0644
    try {
      const dataDir = path.join(root, 'data');
      const store = await openStore({ dataDir });
      const env = await store.environments.create({
        id: 'env_perm',
        name: 'perm',
        project: 'default',
        kind: 'sandbox',
        templateFile: 'mayfly.yaml',
        templateContent: '',
        templateDir: null,
        inputs: {},
        plan: null,
        ttlMs: null,
        expiresAt: null,
      });
      await store.events.append({ envId: env.id, type: 'note', state: null, message: 'written' });
      const mode = (name: string) => (statSync(path.join(dataDir, name)).mode & 0o777).toString(8);
      // while open, with writes in the WAL not yet checkpointed
      expect(mode(`${SQLITE_FILE_NAME}-wal`)).toBe('600');
      expect(mode(`${SQLITE_FILE_NAME}-shm`)).toBe('600');
      expect(mode(SQLITE_FILE_NAME)).toBe('600');
      expect((statSync(dataDir).mode & 0o777).toString(8)).toBe('700');
      await store.close();
      expect(mode(SQLITE_FILE_NAME)).toBe('600');
    } finally {
      process.umask(previousUmask);
      await rm(root, { recursive: true, force: true });
    }
  });

  it('tightens a database file an older release left readable by others', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'mayfly-store-'));
    try {
      for (const suffix of ['', '-wal', '-shm']) {
        writeFileSync(path.join(root, SQLITE_FILE_NAME + suffix), '', { mode: 0o644 });
      }
      // an empty file is a valid, empty SQLite database; empty -wal/-shm files are rebuilt
      const store = await openStore({ dataDir: root });
      try {
        for (const suffix of ['', '-wal', '-shm']) {
          expect((statSync(path.join(root, SQLITE_FILE_NAME + suffix)).mode & 0o777).toString(8)).toBe('600');
        }
      } finally {
        await store.close();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('refuses a URL it does not know rather than fall back to SQLite', async () => {
    const dataDir = path.join(tmpdir(), `mayfly-store-unused-${randomBytes(4).toString('hex')}`);
    await expect(openStore({ url: 'mysql://x@localhost/db', dataDir })).rejects.toThrow(
      /unsupported store URL/,
    );
    expect(existsSync(dataDir)).toBe(false);
  });
});

const pgUrl = process.env.MAYFLY_TEST_PG_URL;

function postgresTarget(baseUrl: string): StoreTarget {
  return {
    dialect: 'postgres',
    async create() {
      const schema = await createPgSchema(baseUrl);
      return {
        open: () => openStore({ url: schema.url, dataDir: path.join(tmpdir(), 'mayfly-store-unused') }),
        rows: schema.rows,
        async migrateTo(name) {
          const db = new Kysely<Database>({
            dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: schema.url, max: 1 }) }),
          });
          try {
            await migrateTo(db, 'postgres', name, schema.name);
          } finally {
            await db.destroy();
          }
        },
        drop: schema.drop,
      };
    },
  };
}

if (pgUrl) {
  describe('store on postgres: test schemas', () => {
    beforeAll(async () => {
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      try {
        const { rows } = await admin.query<{ nspname: string }>(
          'select nspname from pg_namespace where nspname like $1',
          [`${SCHEMA_PREFIX}%`],
        );
        for (const { nspname } of rows) {
          const created = Number(nspname.slice(SCHEMA_PREFIX.length).split('_')[0]);
          if (created < Date.now() - 3_600_000) await admin.query(`drop schema if exists ${nspname} cascade`);
        }
      } finally {
        await admin.end();
      }
    });

    it('isolates each test in its own schema', async () => {
      const target = postgresTarget(pgUrl);
      const [a, b] = await Promise.all([target.create(), target.create()]);
      try {
        const storeA = await a.open();
        const storeB = await b.open();
        await storeA.tokens.create({ name: 'only-in-a', scopes: [] });
        expect(await storeA.tokens.count()).toBe(1);
        expect(await storeB.tokens.count()).toBe(0);
        await Promise.all([storeA.close(), storeB.close()]);
      } finally {
        await Promise.all([a.drop(), b.drop()]);
      }
    });
  });
  describeStore('postgres', postgresTarget(pgUrl));

  describe('store on postgres: events committed out of order', () => {
    it('never lets a reader’s cursor skip an event whose transaction commits after a later one', async () => {
      const schema = await createPgSchema(pgUrl);
      // The writer's connections carry the schema's name, to find them in pg_stat_activity.
      const writerUrl = new URL(schema.url);
      writerUrl.searchParams.set('application_name', schema.name);
      const dataDir = path.join(tmpdir(), 'mayfly-store-unused');
      const writer = await openStore({ url: writerUrl.toString(), dataDir });
      const reader = await openStore({ url: schema.url, dataDir });
      try {
        const env = await writer.environments.create({
          id: 'env_order',
          name: 'order',
          project: 'default',
          kind: 'ci',
          templateFile: 'mayfly.yaml',
          templateContent: '',
          templateDir: null,
          inputs: {},
          plan: null,
          ttlMs: null,
          expiresAt: null,
        });
        // An append of 'slow' holds its transaction open for a second after its row has its id,
        // as a busy database or a slow network would.
        await schema.rows(`create function slow_event() returns trigger language plpgsql as $$
          begin if new.message = 'slow' then perform pg_sleep(1); end if; return new; end $$`);
        await schema.rows(
          'create trigger slow_event after insert on events for each row execute function slow_event()',
        );

        const seen: EventRecord[] = [];
        let cursor = 0;
        const poll = async () => {
          const batch = await reader.events.list(env.id, { afterId: cursor });
          seen.push(...batch);
          cursor = batch.at(-1)?.id ?? cursor;
        };
        await poll();
        const append = (message: string) =>
          writer.events.append({ envId: env.id, type: 'log', state: null, message });
        const slow = append('slow');
        await waitFor(
          async () =>
            (
              await schema.rows(
                `select 1 from pg_stat_activity where application_name = '${schema.name}' and wait_event = 'PgSleep'`,
              )
            ).length > 0,
        );
        const fast = append('fast');
        let settled = false;
        const both = Promise.all([slow, fast]).finally(() => {
          settled = true;
        });
        // the reader polls all along, as a `logs -f` or the dashboard would
        while (!settled) {
          await poll();
          await sleep(10);
        }
        const [slowEvent, fastEvent] = await both;
        await poll();
        expect(seen.map((e) => e.message)).toEqual(['slow', 'fast']);
        expect(fastEvent.id).toBeGreaterThan(slowEvent.id);
      } finally {
        await Promise.all([writer.close(), reader.close()]);
        await schema.drop();
      }
    });
  });
} else if (process.env.MAYFLY_SKIP_PG !== '1') {
  describe('store on postgres', () => {
    it('has a PostgreSQL to test against', () => {
      throw new Error(
        'MAYFLY_TEST_PG_URL is not set, so the PostgreSQL store was not tested. Start one with ' +
          '`export MAYFLY_TEST_PG_URL=$(bash scripts/ensure-postgres.sh | tail -1)`, ' +
          'or set MAYFLY_SKIP_PG=1 to skip these tests on purpose.',
      );
    });
  });
}

/** Polls `condition` until it holds; fails after `timeoutMs`. */
async function waitFor(condition: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}
