/** A throwaway PostgreSQL schema on MAYFLY_TEST_PG_URL, for tests that run whole servers on PostgreSQL. */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The creation time after the prefix lets a later run drop what a crashed run left behind. */
export const SCHEMA_PREFIX = 'mayfly_test_';

export function testPgUrl(): string {
  const url = process.env.MAYFLY_TEST_PG_URL;
  if (!url) throw new Error('MAYFLY_TEST_PG_URL is not set (scripts/ensure-postgres.sh prints one)');
  return url;
}

export interface PgSchema {
  /** The schema's name. */
  name: string;
  /** The base URL with `search_path` set to the schema. */
  url: string;
  /** Runs SQL in the schema, as an admin connection. */
  rows(query: string): Promise<Record<string, unknown>[]>;
  drop(): Promise<void>;
}

export async function createPgSchema(baseUrl = testPgUrl()): Promise<PgSchema> {
  const schema = `${SCHEMA_PREFIX}${Date.now()}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  await admin.query(`set search_path to ${schema}`);
  const url = new URL(baseUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    name: schema,
    url: url.toString(),
    rows: async (query) => (await admin.query(query)).rows,
    async drop() {
      try {
        await admin.query(`drop schema ${schema} cascade`);
      } finally {
        await admin.end();
      }
    },
  };
}
