/** The one place where domain errors become HTTP statuses and `ErrorBody` JSON. */
import type { ErrorBody, ErrorCode } from '@mayfly/contract';
import { ZodError } from 'zod';
import {
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  NotFoundError,
  QuotaExceededError,
} from '../controller/errors.js';
import { RuntimeUnavailableError, WorkloadNotFoundError } from '../runtime/runtime.js';
import { BundleError } from '../sources/bundle-unpack.js';
import { BindSourceError, BundleNotFoundError } from '../sources/workspaces.js';
import { EnvironmentNotFoundError } from '../store/environment-repository.js';
import { NameTakenError } from '../store/store.js';
import { TemplateError } from '../template/index.js';

export class UnauthorizedError extends Error {
  override name = 'UnauthorizedError';
}

export function toHttpError(err: unknown): { status: number; body: ErrorBody } {
  const body = (code: ErrorCode, message: string, extra: Partial<ErrorBody['error']> = {}) => ({
    error: { code, message, ...extra },
  });
  if (err instanceof TemplateError) {
    return { status: 400, body: body('invalid_template', err.message, { issues: err.issues }) };
  }
  if (err instanceof ZodError) {
    const message = err.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
    return { status: 400, body: body('invalid_request', message) };
  }
  if (
    err instanceof InvalidRequestError ||
    err instanceof BundleError ||
    err instanceof BundleNotFoundError ||
    err instanceof BindSourceError
  )
    return { status: 400, body: body('invalid_request', err.message) };
  if (err instanceof UnauthorizedError) return { status: 401, body: body('unauthorized', err.message) };
  if (err instanceof ForbiddenError) return { status: 403, body: body('forbidden', err.message) };
  if (
    err instanceof NotFoundError ||
    err instanceof EnvironmentNotFoundError ||
    err instanceof WorkloadNotFoundError
  )
    return { status: 404, body: body('not_found', err.message) };
  if (err instanceof NameTakenError || err instanceof ConflictError)
    return { status: 409, body: body('conflict', err.message) };
  if (err instanceof QuotaExceededError) return { status: 429, body: body('quota_exceeded', err.message) };
  if (err instanceof RuntimeUnavailableError)
    return { status: 503, body: body('runtime_unavailable', err.message) };
  // Fastify's own client errors (bad JSON, body too large); never a dependency's status codes.
  const { statusCode: fastifyStatus, code } = err as { statusCode?: number; code?: string };
  if (code?.startsWith('FST_') && fastifyStatus && fastifyStatus >= 400 && fastifyStatus < 500) {
    return { status: fastifyStatus, body: body('invalid_request', (err as Error).message) };
  }
  return { status: 500, body: body('internal', 'internal error; see the server log') };
}
