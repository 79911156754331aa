/** {@link TokenRepository} over Kysely, for SQLite and PostgreSQL alike. */
import { createHash, randomBytes } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { nanoid } from 'nanoid';
import { type Database, fromDbTime, type TokensTable, toDbTime } from './schema.js';
import type { TokenRecord, TokenRepository } from './store.js';

/** Prefix of every API token, so a leaked one is recognisable (e.g. by secret scanners). */
export const TOKEN_PREFIX = 'mfy_';

/** SHA-256 of a plain token, lowercase hex: the only form in which a token is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * API tokens. Tokens carry 256 random bits, so a fast hash is enough (no salt or KDF needed) and
 * verification is a lookup by hash, which leaks nothing about the token through timing.
 */
export class KyselyTokenRepository implements TokenRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async create(name: string, scopes: string[]): Promise<{ token: string; record: TokenRecord }> {
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const row = await this.db
      .insertInto('tokens')
      .values({
        id: `tok_${nanoid()}`,
        name,
        scopes: JSON.stringify(scopes),
        token_hash: hashToken(token),
        created_at: toDbTime(new Date()),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { token, record: toRecord(row) };
  }

  async verify(token: string): Promise<TokenRecord | null> {
    if (!token.startsWith(TOKEN_PREFIX)) return null;
    const row = await this.db
      .selectFrom('tokens')
      .selectAll()
      .where('token_hash', '=', hashToken(token))
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async count(): Promise<number> {
    const { n } = await this.db
      .selectFrom('tokens')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    return Number(n);
  }
}

function toRecord(row: Selectable<TokensTable>): TokenRecord {
  return {
    id: row.id,
    name: row.name,
    scopes: JSON.parse(row.scopes) as string[],
    createdAt: fromDbTime(row.created_at),
  };
}
