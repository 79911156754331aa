/**
 * API tokens: create with a scope (and optionally a project and a lifetime), list, revoke, and the
 * admin token the server bootstraps for the CLI on its own machine.
 */

import { readFile, rename, writeFile } from 'node:fs/promises';
import {
  type CreatedToken,
  type CreateTokenRequest as CreateTokenInput,
  CreateTokenRequest,
  parseDuration,
  TOKEN_TTL_MAX_MS,
  type Token,
} from '@mayfly/contract';
import { ConflictError, InvalidRequestError, NotFoundError } from '../controller/errors.js';
import type { Store, TokenRecord } from '../store/store.js';
import { type Access, accessOf, tokenScope } from './access.js';

export class TokenService {
  constructor(private readonly deps: { store: Store }) {}

  /** Who a bearer token is: its access, or null when it is unknown, expired or revoked. */
  async authenticate(token: string): Promise<Access | null> {
    const record = await this.deps.store.tokens.verify(token);
    return record ? accessOf(record) : null;
  }

  async create(input: CreateTokenInput): Promise<CreatedToken> {
    const req = CreateTokenRequest.parse(input);
    if (req.scope === 'admin' && req.project !== undefined) {
      throw new InvalidRequestError(
        'an admin token cannot be bound to a project: admin covers every project',
      );
    }
    let expiresAt: Date | null = null;
    if (req.ttl !== undefined) {
      const ms = parseDuration(req.ttl);
      if (ms === null)
        throw new InvalidRequestError(`ttl "${req.ttl}" is not a duration like 30m, 2h or 30d`);
      if (ms > TOKEN_TTL_MAX_MS)
        throw new InvalidRequestError(`ttl "${req.ttl}" is longer than the most allowed, 1825d`);
      expiresAt = new Date(Date.now() + ms);
    }
    const { token, record } = await this.deps.store.tokens.create({
      name: req.name,
      scopes: [req.scope],
      project: req.project ?? null,
      expiresAt,
      format: req.format,
    });
    return { ...toToken(record), token };
  }

  async list(options: { includeRevoked?: boolean } = {}): Promise<Token[]> {
    return (await this.deps.store.tokens.list(options)).map(toToken);
  }

  /** Revokes by id, or by name when exactly one live token has it. */
  async revoke(idOrName: string): Promise<Token> {
    const { tokens } = this.deps.store;
    let record = await tokens.get(idOrName);
    if (!record) {
      const named = (await tokens.list()).filter((t) => t.name === idOrName);
      if (named.length > 1) {
        throw new ConflictError(`${named.length} tokens are named "${idOrName}": revoke one by its id`);
      }
      record = named[0] ?? null;
    }
    if (!record) throw new NotFoundError(`no token "${idOrName}"`);
    if (record.revokedAt === null) await tokens.revoke(record.id);
    return toToken((await tokens.get(record.id)) ?? record);
  }

  /**
   * Takes the token in `file`, one the operator made (a Secret in a cluster, shared by every
   * replica), as an admin token, unless it was ever stored: a revoked one stays revoked.
   * @returns true when it was stored now.
   */
  async adoptAdmin(file: string): Promise<boolean> {
    const token = (await readFile(file, 'utf8')).trim();
    if (!/^mfy_[A-Za-z0-9_-]{43}$/.test(token)) {
      throw new Error(
        `${file} does not hold a Mayfly token: "mfy_" and 43 base64url characters (make one with: echo "mfy_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')")`,
      );
    }
    const adopted = await this.deps.store.tokens.adopt(token, {
      name: 'admin (operator)',
      scopes: ['admin'],
    });
    const record = await this.deps.store.tokens.verify(token);
    // Stored before and revoked since (or expired): starting with it would leave no admin.
    if (!record || tokenScope(record) !== 'admin')
      throw new Error(`the admin token in ${file} was revoked: make a new one and put it there`);
    return adopted;
  }

  /**
   * Makes sure `file` holds a working admin token for the CLI on this machine. The store decides,
   * not the file's presence: a token that no longer verifies (a new database behind an old data
   * dir, a revoked token) is replaced. Written to a temporary file and renamed, so it is never half there.
   * @returns true when a new token was created.
   */
  async bootstrapAdmin(file: string): Promise<boolean> {
    const existing = await readFile(file, 'utf8').then(
      (text) => text.trim(),
      () => '',
    );
    if (existing) {
      const record = await this.deps.store.tokens.verify(existing);
      if (record && tokenScope(record) === 'admin') return false;
    }
    const { token } = await this.deps.store.tokens.create({ name: 'admin (local)', scopes: ['admin'] });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, `${token}\n`, { mode: 0o600 });
    await rename(tmp, file);
    return true;
  }
}

/** The API resource of a token: never its hash. */
export function toToken(record: TokenRecord): Token {
  return {
    id: record.id,
    name: record.name,
    scope: tokenScope(record),
    project: record.project,
    createdAt: record.createdAt.toISOString(),
    expiresAt: record.expiresAt?.toISOString() ?? null,
    revokedAt: record.revokedAt?.toISOString() ?? null,
  };
}
