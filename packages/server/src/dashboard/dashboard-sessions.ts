/**
 * Dashboard sessions: a one-time login link (`mayfly dashboard`), or an API token typed in once,
 * starts a session whose token lives only in an HTTP-only cookie. A session is never an API token
 * (the bearer check refuses its form, the cookie check takes nothing else), has the scope and
 * project of the token that started it, and dies with that token (revoked or expired) or after
 * its own lifetime. Only hashes are stored, as for API tokens.
 */
import type { Access } from '../access/access.js';
import { accessOf, tokenScope } from '../access/access.js';
import { UnauthorizedError } from '../api/errors.js';
import { ForbiddenError, QuotaExceededError } from '../controller/errors.js';
import type { Store, TokenRecord } from '../store/store.js';

/** The cookie holding a session. */
export const SESSION_COOKIE = 'mayfly_session';
/** A login link works this long, once. */
export const LOGIN_LINK_TTL_MS = 5 * 60_000;
/** A session lasts this long at most. */
export const SESSION_TTL_MS = 12 * 60 * 60_000;
/** Unused login links one token may have at once. */
const MAX_LINKS_PER_TOKEN = 20;
/** Live sessions one token may have at once. */
const MAX_SESSIONS_PER_TOKEN = 50;

/** The session cookie's name: with `__Host-` where it is `Secure` (no subdomain can set one). */
export const sessionCookieName = (secure: boolean) => (secure ? `__Host-${SESSION_COOKIE}` : SESSION_COOKIE);

export interface StartedSession {
  /** The cookie's value. */
  session: string;
  access: Access;
  expiresAt: Date;
}

export class DashboardSessions {
  /** The cookie a session rides in (see {@link sessionCookieName}). */
  readonly cookieName: string;

  constructor(private readonly deps: { store: Store; secureCookie: boolean }) {
    this.cookieName = sessionCookieName(deps.secureCookie);
  }

  /**
   * A login link's code, for the caller's own scope and project; it works once, for 5 minutes.
   * Only an API token makes one: from a session, a link would start a session that outlives the
   * revocation of the token behind it.
   */
  async createLink(access: Access): Promise<{ code: string; expiresAt: Date }> {
    if (!access.tokenId) throw new UnauthorizedError('a login link is made with a token');
    const { tokens } = this.deps.store;
    const maker = await tokens.get(access.tokenId);
    if (!maker || maker.parentId !== null)
      throw new ForbiddenError(
        'a login link is made with an API token (mayfly dashboard), not from a session',
      );
    await this.forgetEnded();
    if ((await tokens.countChildren(maker.id, 'login')) >= MAX_LINKS_PER_TOKEN)
      throw new QuotaExceededError(
        `this token has ${MAX_LINKS_PER_TOKEN} unused login links: use one, or wait 5 minutes for them to expire`,
      );
    const expiresAt = new Date(Date.now() + LOGIN_LINK_TTL_MS);
    const { token } = await this.deps.store.tokens.create({
      name: 'dashboard login link',
      scopes: [access.scope],
      project: access.project,
      expiresAt,
      kind: 'login',
      parentId: access.tokenId,
    });
    return { code: token, expiresAt };
  }

  /** A session from a login link's code (used up here) or an API token (which stays as it was). */
  async start(input: { link?: string; token?: string }): Promise<StartedSession> {
    const { tokens } = this.deps.store;
    let parent: TokenRecord | null = null;
    if (typeof input.link === 'string' && input.link.length <= 200) {
      const link = await tokens.consumeLogin(input.link);
      parent = link?.parentId ? await tokens.get(link.parentId) : null;
      // The link's own scope and project (those of the token that made it at the time).
      if (link && parent) parent = { ...parent, scopes: link.scopes, project: link.project };
      if (!parent)
        throw new UnauthorizedError(
          'this login link is invalid, used or expired: run mayfly dashboard again',
        );
    } else if (typeof input.token === 'string' && input.token.length <= 200) {
      parent = await tokens.verify(input.token);
      if (!parent) throw new UnauthorizedError('invalid, expired or revoked token');
    } else {
      throw new UnauthorizedError('give a login link or an API token');
    }
    if ((await tokens.countChildren(parent.id, 'session')) >= MAX_SESSIONS_PER_TOKEN)
      throw new QuotaExceededError(
        `this token has ${MAX_SESSIONS_PER_TOKEN} dashboard sessions: log out of one (they end after 12 hours)`,
      );
    const ttlEnd = Date.now() + SESSION_TTL_MS;
    const expiresAt = new Date(parent.expiresAt ? Math.min(ttlEnd, parent.expiresAt.getTime()) : ttlEnd);
    const { token, record } = await tokens.create({
      name: 'dashboard session',
      scopes: [tokenScope(parent)],
      project: parent.project,
      expiresAt,
      kind: 'session',
      parentId: parent.id,
    });
    return { session: token, access: accessOf(record), expiresAt };
  }

  /** Who a session cookie is, or null (unknown, ended, expired, or its token is gone). */
  async authenticate(session: string): Promise<{ access: Access; expiresAt: Date } | null> {
    const record = await this.deps.store.tokens.verify(session, undefined, 'session');
    return record?.expiresAt ? { access: accessOf(record), expiresAt: record.expiresAt } : null;
  }

  /** Sessions and links that ended more than a day ago are deleted (when links are made). */
  private async forgetEnded(): Promise<void> {
    await this.deps.store.tokens.forgetEndedChildren(new Date(Date.now() - 24 * 60 * 60_000));
  }

  /** Ends a session (logging out); nothing when it is not one. */
  async end(session: string): Promise<void> {
    const record = await this.deps.store.tokens.verify(session, undefined, 'session');
    if (record) await this.deps.store.tokens.revoke(record.id);
  }
}
