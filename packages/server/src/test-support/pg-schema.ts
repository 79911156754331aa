/** A throwaway PostgreSQL schema on MAYFLY_TEST_PG_URL, for tests that run whole servers on PostgreSQL. */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Same prefix as the store suite's schemas, so a crashed run's leftovers are swept the same way. */
const SCHEMA_PREFIX = 'mayfly_test_';

export function testPgUrl(): string {
  const url = process.env.MAYFLY_TEST_PG_URL;
  if (!url) throw new Error('MAYFLY_TEST_PG_URL is not set (scripts/ensure-postgres.sh prints one)');
  return url;
}

export async function createPgSchema(baseUrl = testPgUrl()): Promise<{ url: string; drop(): Promise<void> }> {
  const schema = `${SCHEMA_PREFIX}${Date.now()}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  const url = new URL(baseUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    async drop() {
      try {
        await admin.query(`drop schema ${schema} cascade`);
      } finally {
        await admin.end();
      }
    },
  };
}
