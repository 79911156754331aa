import { type Environment, ErrorBody, type ErrorCode, type TemplateIssue } from '@mayfly/contract';

/**
 * Every code a {@link MayflyError} can carry: the server's error codes, plus the ones the client
 * raises itself (`connection_failed`, `invalid_response`, `timeout`, `unexpected_state`).
 */
export type MayflyErrorCode =
  | ErrorCode
  | 'connection_failed'
  | 'invalid_response'
  | 'timeout'
  | 'unexpected_state';

/** What a {@link MayflyError} is made of, besides its message. */
export interface MayflyErrorInit {
  code: MayflyErrorCode;
  /** HTTP status of the response, or null when no response was received. */
  status?: number | null;
  /** Template problems with their positions, for `invalid_template`. */
  issues?: TemplateIssue[];
  cause?: unknown;
}

/** Options of the specific error classes, whose code is implied by the class. */
export type MayflyErrorOptions = Omit<MayflyErrorInit, 'code'>;

/**
 * Base class of every error the SDK throws. Catch this, or one of its subclasses, which mirror the
 * server's error codes (`err.code`) one to one.
 */
export class MayflyError extends Error {
  override name = 'MayflyError';
  readonly code: MayflyErrorCode;
  readonly status: number | null;
  readonly issues: TemplateIssue[];

  constructor(message: string, init: MayflyErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.status = init.status ?? null;
    this.issues = init.issues ?? [];
  }
}

/** 400 `invalid_request`: the request itself is malformed (bad name, bad TTL…). */
export class InvalidRequestError extends MayflyError {
  override name = 'InvalidRequestError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 400, ...options, code: 'invalid_request' });
  }
}

/** 400 `invalid_template`: the template did not validate; `issues` says where and why. */
export class InvalidTemplateError extends MayflyError {
  override name = 'InvalidTemplateError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 400, ...options, code: 'invalid_template' });
  }
}

/** 401 `unauthorized`: missing or wrong token. */
export class UnauthorizedError extends MayflyError {
  override name = 'UnauthorizedError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 401, ...options, code: 'unauthorized' });
  }
}

/** 403 `forbidden`: the token is valid but lacks the scope for this call. */
export class ForbiddenError extends MayflyError {
  override name = 'ForbiddenError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 403, ...options, code: 'forbidden' });
  }
}

/** 404 `not_found`: no such environment (or route). */
export class NotFoundError extends MayflyError {
  override name = 'NotFoundError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 404, ...options, code: 'not_found' });
  }
}

/** 409 `conflict`: e.g. the environment name is already taken. */
export class ConflictError extends MayflyError {
  override name = 'ConflictError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 409, ...options, code: 'conflict' });
  }
}

/** 429 `quota_exceeded`: a project or global limit was reached. */
export class QuotaExceededError extends MayflyError {
  override name = 'QuotaExceededError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 429, ...options, code: 'quota_exceeded' });
  }
}

/** 503 `runtime_unavailable`: the server cannot reach its container runtime (Docker, Kubernetes). */
export class RuntimeUnavailableError extends MayflyError {
  override name = 'RuntimeUnavailableError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: 503, ...options, code: 'runtime_unavailable' });
  }
}

/** The server could not be reached at all (connection refused, DNS failure, reset…). */
export class ConnectionError extends MayflyError {
  override name = 'ConnectionError';
  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, { status: null, ...options, code: 'connection_failed' });
  }
}

/** A wait (see `environments.waitFor`) ran out of time. */
export class TimeoutError extends MayflyError {
  override name = 'TimeoutError';
  /** The environment as last seen, if it was seen at all. */
  readonly environment: Environment | null;
  constructor(message: string, environment: Environment | null, options: MayflyErrorOptions = {}) {
    super(message, { status: null, ...options, code: 'timeout' });
    this.environment = environment;
  }
}

/**
 * A wait (see `environments.waitFor`) cannot succeed any more: the environment settled in
 * `failed` or `destroyed`, which the caller was not waiting for.
 */
export class UnexpectedStateError extends MayflyError {
  override name = 'UnexpectedStateError';
  readonly environment: Environment;
  constructor(message: string, environment: Environment, options: MayflyErrorOptions = {}) {
    super(message, { status: null, ...options, code: 'unexpected_state' });
    this.environment = environment;
  }
}

const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  429: 'quota_exceeded',
  503: 'runtime_unavailable',
};

/**
 * Builds the error for a non-2xx response: from its ErrorBody when it has one, else from the
 * status alone (a proxy in front of the server may answer with HTML).
 */
export function errorFromResponse(status: number, statusText: string, bodyText: string): MayflyError {
  let parsed: ErrorBody | null = null;
  try {
    const result = ErrorBody.safeParse(JSON.parse(bodyText));
    if (result.success) parsed = result.data;
  } catch {
    // not JSON: fall back to the status
  }
  const code = parsed?.error.code ?? CODE_BY_STATUS[status] ?? 'internal';
  const message = parsed?.error.message ?? `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  const options: MayflyErrorOptions = { status, issues: parsed?.error.issues ?? [] };
  switch (code) {
    case 'invalid_request':
      return new InvalidRequestError(message, options);
    case 'invalid_template':
      return new InvalidTemplateError(message, options);
    case 'unauthorized':
      return new UnauthorizedError(message, options);
    case 'forbidden':
      return new ForbiddenError(message, options);
    case 'not_found':
      return new NotFoundError(message, options);
    case 'conflict':
      return new ConflictError(message, options);
    case 'quota_exceeded':
      return new QuotaExceededError(message, options);
    case 'runtime_unavailable':
      return new RuntimeUnavailableError(message, options);
    default:
      return new MayflyError(message, { ...options, code });
  }
}
