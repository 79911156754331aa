/** Domain errors raised below the API; `api/errors.ts` is the one place that maps them to HTTP. */
export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';
}

/** The caller is known but may not do this (scope, or a project it is not bound to). */
export class ForbiddenError extends Error {
  override name = 'ForbiddenError';
}

/** The request contradicts the current state (an ambiguous name, say). */
export class ConflictError extends Error {
  override name = 'ConflictError';
}

export class QuotaExceededError extends Error {
  override name = 'QuotaExceededError';
}
