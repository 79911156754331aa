/**
 * The shapes shared by the Mayfly server, SDK and CLI: resources, requests, error codes.
 * Everything that crosses the HTTP API is described here once, with zod.
 */
import { z } from 'zod';

export const ENV_STATES = [
  'pending',
  'building',
  'creating',
  'ready',
  'sleeping',
  'destroying',
  'destroyed',
  'failed',
] as const;
export const EnvState = z.enum(ENV_STATES);
export type EnvState = z.infer<typeof EnvState>;

export const EnvKind = z.enum(['preview', 'ci', 'sandbox', 'agent']);
export type EnvKind = z.infer<typeof EnvKind>;

export const Failure = z.object({ step: z.string(), reason: z.string() });
export type Failure = z.infer<typeof Failure>;

export const ServiceStatus = z.object({
  name: z.string(),
  kind: z.enum(['service', 'job']),
  state: z.string(),
  health: z.string().nullable(),
  exitCode: z.number().nullable(),
});
export type ServiceStatus = z.infer<typeof ServiceStatus>;

export const Environment = z.object({
  id: z.string(),
  name: z.string(),
  project: z.string(),
  kind: EnvKind,
  state: EnvState,
  /** What the user asked for; `state` converges to it. */
  desired: z.enum(['present', 'absent']),
  /** service name → URL through the gateway, for every service with an HTTP port. */
  urls: z.record(z.string(), z.string()),
  services: z.array(ServiceStatus),
  failure: Failure.nullable(),
  templateFile: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  expiresAt: z.string().nullable(),
});
export type Environment = z.infer<typeof Environment>;

export const EnvEvent = z.object({
  id: z.number(),
  envId: z.string(),
  type: z.string(),
  state: EnvState.nullable(),
  message: z.string(),
  at: z.string(),
});
export type EnvEvent = z.infer<typeof EnvEvent>;

/** Environment names become DNS labels (`<service>--<name>.localhost`), so they are kept to that alphabet. */
export const EnvName = z
  .string()
  .min(1)
  .max(40)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and single hyphens, not at either end')
  .refine((s) => !s.includes('--'), 'must not contain "--" (it separates service and environment in URLs)');

export const CreateEnvironmentRequest = z.object({
  name: EnvName.optional(),
  project: z.string().min(1).max(63).default('default'),
  kind: EnvKind.default('preview'),
  template: z.object({
    /** File name as the user knows it, used in error messages and to tell Compose from mayfly.yaml. */
    filename: z.string().min(1),
    content: z.string(),
    /** Absolute directory that relative paths in the template (build contexts, env files) are resolved against. */
    dir: z.string().optional(),
  }),
  inputs: z.record(z.string(), z.string()).default({}),
  /** Time to live, e.g. `30m`, `2h`, `1d`; the environment is destroyed when it runs out. */
  ttl: z.string().optional(),
});
export type CreateEnvironmentRequest = z.input<typeof CreateEnvironmentRequest>;

export const ERROR_CODES = [
  'invalid_request',
  'invalid_template',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'quota_exceeded',
  'runtime_unavailable',
  'internal',
] as const;
export const ErrorCode = z.enum(ERROR_CODES);
export type ErrorCode = z.infer<typeof ErrorCode>;

export const TemplateIssue = z.object({
  file: z.string(),
  line: z.number().nullable(),
  column: z.number().nullable(),
  path: z.string(),
  message: z.string(),
});
export type TemplateIssue = z.infer<typeof TemplateIssue>;

export const ErrorBody = z.object({
  error: z.object({
    code: ErrorCode,
    message: z.string(),
    issues: z.array(TemplateIssue).optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

const DURATION_UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `90s`, `30m`, `2h`, `1d`, `1h30m` into milliseconds; returns null when it is not a duration. */
export function parseDuration(text: string): number | null {
  const trimmed = text.trim();
  if (!/^(\d+(\.\d+)?[smhd])+$/.test(trimmed)) return null;
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)([smhd])/g)) {
    total += Number(amount) * DURATION_UNITS[unit as string]!;
  }
  return total > 0 ? Math.round(total) : null;
}

/** API paths, so the SDK and the server cannot drift apart. */
export const ApiPaths = {
  health: '/healthz',
  environments: '/v1/environments',
  environment: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}`,
  events: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}/events`,
  logs: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}/logs`,
} as const;
