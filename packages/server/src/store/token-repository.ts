/** {@link TokenRepository} over Kysely, for SQLite and PostgreSQL alike. */
import { createHash, randomBytes } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { nanoid } from 'nanoid';
import { type Database, fromDbTime, fromDbTimeOrNull, type TokensTable, toDbTime } from './schema.js';
import type { NewToken, TokenKind, TokenRecord, TokenRepository } from './store.js';

/** Prefix of every API token, so a leaked one is recognisable (e.g. by secret scanners). */
export const TOKEN_PREFIX = 'mfy_';
/** Prefix of a token in the form the e2b SDKs take as an API key (`e2b_` and lowercase hex). */
export const E2B_KEY_PREFIX = 'e2b_';

/** Prefix of a dashboard session (the cookie's value; never an API token). */
export const SESSION_PREFIX = 'mfs_';
/** Prefix of a one-time dashboard login link's code. */
export const LOGIN_PREFIX = 'mfl_';

/** Whether a presented string has the form of one of this server's API tokens. */
export const isApiTokenForm = (token: string) =>
  token.startsWith(TOKEN_PREFIX) || token.startsWith(E2B_KEY_PREFIX);

/** Whether a presented string has the form of a token of `kind`. */
function hasForm(token: string, kind: TokenKind): boolean {
  if (kind === 'session') return token.startsWith(SESSION_PREFIX);
  if (kind === 'login') return token.startsWith(LOGIN_PREFIX);
  return isApiTokenForm(token);
}

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
      kind: token.kind ?? 'api',
      parent_id: token.parentId ?? null,
    };
  }

  async create(token: NewToken): Promise<{ token: string; record: TokenRecord }> {
    const random = randomBytes(32);
    const plain =
      token.kind === 'session'
        ? SESSION_PREFIX + random.toString('base64url')
        : token.kind === 'login'
          ? LOGIN_PREFIX + random.toString('base64url')
          : token.format === 'e2b'
            ? E2B_KEY_PREFIX + random.toString('hex')
            : TOKEN_PREFIX + random.toString('base64url');
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

  async verify(token: string, now: Date = new Date(), kind: TokenKind = 'api'): Promise<TokenRecord | null> {
    if (!hasForm(token, kind)) return null;
    const row = await this.db
      .selectFrom('tokens')
      .selectAll()
      .where('token_hash', '=', hashToken(token))
      .where((eb) => this.live(eb, kind, now))
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async consumeLogin(token: string, now: Date = new Date()): Promise<TokenRecord | null> {
    if (!hasForm(token, 'login')) return null;
    // One conditional UPDATE: of two callers at once, only one finds it unrevoked.
    const row = await this.db
      .updateTable('tokens')
      .set({ revoked_at: toDbTime(now) })
      .where('token_hash', '=', hashToken(token))
      .where((eb) => this.live(eb, 'login', now))
      .returningAll()
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async countChildren(
    parentId: string,
    kind: Exclude<TokenKind, 'api'>,
    now: Date = new Date(),
  ): Promise<number> {
    const { n } = await this.db
      .selectFrom('tokens')
      .where('parent_id', '=', parentId)
      .where((eb) => this.live(eb, kind, now))
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  async forgetEndedChildren(before: Date): Promise<number> {
    const at = toDbTime(before);
    const result = await this.db
      .deleteFrom('tokens')
      .where('kind', 'in', ['session', 'login'])
      .where((eb) => eb.or([eb('revoked_at', '<', at), eb('expires_at', '<', at)]))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** A token of `kind`, neither revoked nor expired at `now`, and its parent (if any) too. */
  // biome-ignore lint/suspicious/noExplicitAny: Kysely's expression builder over the tokens table
  private live(eb: any, kind: TokenKind, now: Date) {
    const at = toDbTime(now);
    return eb.and([
      eb('kind', '=', kind),
      eb('revoked_at', 'is', null),
      eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', at)]),
      eb.or([
        eb('parent_id', 'is', null),
        eb.exists(
          eb
            .selectFrom('tokens as parent')
            .select('parent.id')
            .whereRef('parent.id', '=', 'tokens.parent_id')
            .where('parent.revoked_at', 'is', null)
            // biome-ignore lint/suspicious/noExplicitAny: as above
            .where((p: any) => p.or([p('parent.expires_at', 'is', null), p('parent.expires_at', '>', at)])),
        ),
      ]),
    ]);
  }

  async get(id: string): Promise<TokenRecord | null> {
    const row = await this.db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toRecord(row) : null;
  }

  async list(options: { includeRevoked?: boolean } = {}): Promise<TokenRecord[]> {
    let query = this.db.selectFrom('tokens').selectAll().where('kind', '=', 'api');
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

  /** Every API token ever created, revoked and expired ones included. */
  async count(): Promise<number> {
    const { n } = await this.db
      .selectFrom('tokens')
      .where('kind', '=', 'api')
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
    parentId: row.parent_id,
  };
}
