/** Domain errors raised below the API; `api/errors.ts` is the one place that maps them to HTTP. */
export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';
}

export class QuotaExceededError extends Error {
  override name = 'QuotaExceededError';
}
