/**
 * Runs the store suite against SQLite (a temp dir) and PostgreSQL (`MAYFLY_TEST_PG_URL`, e.g. from
 * `scripts/ensure-postgres.sh`; each test in a schema of its own, dropped afterwards).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { createPgSchema, SCHEMA_PREFIX } from '../test-support/pg-schema.js';
import { openStore, SQLITE_FILE_NAME } from './open-store.js';
import { describeStore, type StoreTarget } from './store.case.js';

const sqliteTarget: StoreTarget = {
  dialect: 'sqlite',
  async create() {
    const root = await mkdtemp(path.join(tmpdir(), 'mayfly-store-'));
    // not created beforehand: openStore makes it
    const dataDir = path.join(root, 'data', 'nested');
    return {
      open: () => openStore({ dataDir }),
      async rows(query) {
        const db = new SqliteDatabase(path.join(dataDir, SQLITE_FILE_NAME), { readonly: true });
        try {
          return db.prepare(query).all() as Record<string, unknown>[];
        } finally {
          db.close();
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
        await storeA.tokens.create('only-in-a', []);
        expect(await storeA.tokens.count()).toBe(1);
        expect(await storeB.tokens.count()).toBe(0);
        await Promise.all([storeA.close(), storeB.close()]);
      } finally {
        await Promise.all([a.drop(), b.drop()]);
      }
    });
  });
  describeStore('postgres', postgresTarget(pgUrl));
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
