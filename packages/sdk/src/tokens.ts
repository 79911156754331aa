import { ApiPaths, CreatedToken, type CreateTokenRequest, Token } from '@mayfly/contract';
import * as z from 'zod';
import type { HttpClient } from './http.js';

const TokenList = z.object({ items: z.array(Token) });

/** Options of {@link TokensApi.list}. */
export interface ListTokensOptions {
  /** Include revoked tokens. */
  all?: boolean;
}

/**
 * API tokens: create with a scope (`read`, `write` or `admin`), list, revoke. Every call needs an
 * `admin` token. Reached as `client.tokens`.
 */
export class TokensApi {
  readonly #http: HttpClient;

  /** @internal Use `new MayflyClient(...).tokens`. */
  constructor(http: HttpClient) {
    this.#http = http;
  }

  /**
   * Creates a token. The answer holds the token itself (`token`): the server keeps only a hash, so
   * this is the one time it can be read.
   * @throws ForbiddenError when the caller's token is not `admin`.
   * @throws InvalidRequestError for a bad name, scope, project or ttl.
   */
  create(request: CreateTokenRequest): Promise<CreatedToken> {
    return this.#http.json('POST', ApiPaths.tokens, CreatedToken, { body: request });
  }

  /** Lists tokens (never their secrets); revoked ones only with `all`. */
  async list(options: ListTokensOptions = {}): Promise<Token[]> {
    const { items } = await this.#http.json('GET', ApiPaths.tokens, TokenList, {
      query: { all: options.all },
    });
    return items;
  }

  /**
   * Revokes a token by id, or by name when exactly one live token has it; revoking a revoked token
   * is not an error. @returns the token as it is now, `revokedAt` set.
   * @throws NotFoundError when there is no such token; ConflictError when the name is ambiguous.
   */
  revoke(idOrName: string): Promise<Token> {
    return this.#http.json('DELETE', ApiPaths.token(idOrName), Token);
  }
}
