/** {@link TokenRepository} over Kysely, for SQLite and PostgreSQL alike. */
import { createHash, randomBytes } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { nanoid } from 'nanoid';
import { type Database, fromDbTime, fromDbTimeOrNull, type TokensTable, toDbTime } from './schema.js';
import type { NewToken, TokenRecord, TokenRepository } from './store.js';

/** Prefix of every API token, so a leaked one is recognisable (e.g. by secret scanners). */
export const TOKEN_PREFIX = 'mfy_';
/** Prefix of a token in the form the e2b SDKs take as an API key (`e2b_` and lowercase hex). */
export const E2B_KEY_PREFIX = 'e2b_';

/** Whether a presented string has the form of one of this server's API tokens. */
export const isApiTokenForm = (token: string) =>
  token.startsWith(TOKEN_PREFIX) || token.startsWith(E2B_KEY_PREFIX);

/** SHA-256 of a plain token, lowercase hex: the only form in which a token is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * API tokens. Tokens carry 256 random bits, so a fast hash is enough (no salt or KDF needed) and
 * verification is a lookup by hash, which leaks nothing about the token through timing.
 */
export class KyselyTokenRepository implements TokenRepository {
  private lastStamp = 0;

  constructor(private readonly db: Kysely<Database>) {}

  /** Now, but after the previous token's creation, so "oldest first" is the order of creation. */
  private stamp(): Date {
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 1);
    return new Date(this.lastStamp);
  }

  /** The row of a new token: only its hash is kept. */
  private row(plain: string, token: NewToken) {
    return {
      id: `tok_${nanoid()}`,
      name: token.name,
      scopes: JSON.stringify(token.scopes),
      token_hash: hashToken(plain),
      created_at: toDbTime(this.stamp()),
      project: token.project ?? null,
      expires_at: token.expiresAt ? toDbTime(token.expiresAt) : null,
      revoked_at: null,
    };
  }

  async create(token: NewToken): Promise<{ token: string; record: TokenRecord }> {
    const plain =
      token.format === 'e2b'
        ? E2B_KEY_PREFIX + randomBytes(32).toString('hex')
        : TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const row = await this.db
      .insertInto('tokens')
      .values(this.row(plain, token))
      .returningAll()
      .executeTakeFirstOrThrow();
    return { token: plain, record: toRecord(row) };
  }

  async adopt(plain: string, token: NewToken): Promise<boolean> {
    const result = await this.db
      .insertInto('tokens')
      .values(this.row(plain, token))
      .onConflict((oc) => oc.column('token_hash').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  async verify(token: string, now: Date = new Date()): Promise<TokenRecord | null> {
    if (!isApiTokenForm(token)) return null;
    const row = await this.db
      .selectFrom('tokens')
      .selectAll()
      .where('token_hash', '=', hashToken(token))
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', toDbTime(now))]))
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async get(id: string): Promise<TokenRecord | null> {
    const row = await this.db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(options: { includeRevoked?: boolean } = {}): Promise<TokenRecord[]> {
    let query = this.db.selectFrom('tokens').selectAll();
    if (!options.includeRevoked) query = query.where('revoked_at', 'is', null);
    const rows = await query.orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async revoke(id: string): Promise<boolean> {
    // Kept, not deleted: a revoked token stays listable (who had access, until when).
    const result = await this.db
      .updateTable('tokens')
      .set({ revoked_at: toDbTime(new Date()) })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  /** Every token ever created, revoked and expired ones included. */
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
    project: row.project,
    createdAt: fromDbTime(row.created_at),
    expiresAt: fromDbTimeOrNull(row.expires_at),
    revokedAt: fromDbTimeOrNull(row.revoked_at),
  };
}
