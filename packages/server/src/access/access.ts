/**
 * Who is asking, as services see it: the token's scope and, for a project-bound token, the one
 * project it may see and change. The API fills it in from the token; in-process callers (tests,
 * the composition root) use {@link FULL_ACCESS}.
 */
import { TOKEN_SCOPES, type TokenScope } from '@mayfly/contract';
import { ForbiddenError } from '../controller/errors.js';
import type { TokenRecord } from '../store/store.js';

export interface Access {
  /** The token's id; null for in-process callers. */
  tokenId: string | null;
  scope: TokenScope;
  /** Only this project's environments exist for the caller; null: every project. */
  project: string | null;
}

/** Unrestricted access, for callers inside the server process. */
export const FULL_ACCESS: Access = Object.freeze({ tokenId: null, scope: 'admin', project: null });

/** True when the caller may see an object of `project` (others do not exist for it: 404, not 403). */
export function canSee(access: Access, project: string): boolean {
  return access.project === null || access.project === project;
}

/**
 * The project a create by this caller goes to: the one asked for, which a project-bound token may
 * only name if it is its own (an unnamed one defaults to the token's project).
 */
export function projectForCreate(access: Access, asked: string | undefined, fallback: string): string {
  if (access.project === null) return asked ?? fallback;
  if (asked !== undefined && asked !== access.project) {
    throw new ForbiddenError(
      `this token is bound to project "${access.project}"; it cannot create in "${asked}"`,
    );
  }
  return access.project;
}

/** The highest scope among a token's stored scopes (unknown names are ignored). */
export function tokenScope(record: Pick<TokenRecord, 'scopes'>): TokenScope {
  let best: TokenScope = 'read';
  for (const scope of TOKEN_SCOPES) if (record.scopes.includes(scope)) best = scope;
  return best;
}

/** The caller a verified token stands for. */
export function accessOf(record: TokenRecord): Access {
  return { tokenId: record.id, scope: tokenScope(record), project: record.project };
}
