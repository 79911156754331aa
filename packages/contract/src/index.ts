/**
 * The shapes shared by the Mayfly server, SDK and CLI: resources, requests, error codes.
 * Everything that crosses the HTTP API is described here once, with zod.
 */
import * as z from 'zod';

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
  /** Asked to sleep (state `sleeping` once its containers are stopped); a request wakes it. */
  sleep: z.boolean(),
  /** Kept: no time to live, never put to sleep or destroyed for being idle. */
  keep: z.boolean(),
  /** When it was last used: the last request the gateway routed to it (to within a few seconds), or its becoming ready, being updated or woken. Idle policies count from here. */
  lastActiveAt: z.string().nullable(),
  /** For an environment from git (a preview): the commit it runs, or is being updated to. */
  commit: z.string().nullable(),
  /** The last update in place that failed (the previous version kept running), if the current revision's. */
  updateFailure: Failure.extend({ commit: z.string().nullable(), at: z.string() }).nullable(),
  /** Who or what asked for it, in words (`token ci-bot`, `preview of pull request #42`); null for one made before Mayfly kept it. */
  createdBy: z.string().nullable(),
  /** The pull request a preview is of: its number and web page (when the forge gave one). */
  pullRequest: z.object({ number: z.number(), url: z.string().nullable() }).nullable(),
  /**
   * Where the data of its volumes with data (`x-mayfly.data`) came from, once decided: `restored`
   * from the snapshot named, or `seeded` by the job named (and then `snapshot` is the one taken of
   * it, when one was to be).
   */
  data: z.array(
    z.object({
      volume: z.string(),
      origin: z.enum(['restored', 'seeded']),
      snapshot: z.string().nullable(),
      job: z.string().nullable(),
    }),
  ),
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

/** Longest `<service>--<environment>` host label: DNS allows 63 characters per label. */
export const DNS_LABEL_MAX = 63;

/** Environment names become DNS labels (`<service>--<name>.localhost`), so they are kept to that alphabet. */
export const EnvName = z
  .string()
  .min(1)
  .max(40)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and single hyphens, not at either end')
  .refine((s) => !s.includes('--'), 'must not contain "--" (it separates service and environment in URLs)');

/** Project names are labels on runtime objects and parts of image names: the same alphabet as environments. */
export const ProjectName = z
  .string()
  .min(1)
  .max(40)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and hyphens, not at either end');

/** Largest template file (UTF-8 bytes) the server reads; a bigger one is refused before parsing. */
export const TEMPLATE_MAX_BYTES = 1024 * 1024;

/** The template of an environment: sent inline, or read from a bundle uploaded before. */
export const TemplateRef = z
  .strictObject({
    /**
     * With `bundle`, the template's path inside the bundle (e.g. `compose.yaml`); otherwise the file
     * name as the user knows it. Used in error messages and to tell Compose from mayfly.yaml.
     */
    filename: z.string().min(1).max(255),
    /** The template itself, when it comes without a folder: it may then name no host path at all. */
    content: z.string().max(TEMPLATE_MAX_BYTES).optional(),
    /** Id of an uploaded bundle (`POST /v1/bundles`) holding the template's folder; used once. */
    bundle: z
      .string()
      .regex(/^[a-z0-9]{1,64}$/)
      .optional(),
    /**
     * Compose override files in the bundle (`mayfly up -f compose.yaml -f compose.ci.yaml`: all but
     * the first), merged onto the template in this order as Compose merges them; relative paths
     * in them resolve from the template's folder, as Compose's do from the first file's.
     */
    overrides: z.array(z.string().min(1).max(255)).max(10).optional(),
  })
  .refine((t) => (t.content === undefined) !== (t.bundle === undefined), {
    message: 'give the template either as "content" or as a "bundle", not both and not neither',
  })
  .refine((t) => t.overrides === undefined || t.bundle !== undefined, {
    message: 'override files ("overrides") are read from a "bundle": give the template as one',
    path: ['overrides'],
  });

export const CreateEnvironmentRequest = z.strictObject({
  name: EnvName.optional(),
  /** Without `name`, the generated one starts with this (made DNS-safe), e.g. the template's folder: `shop-k3v9`. */
  namePrefix: z.string().max(64).optional(),
  project: ProjectName.default('default'),
  kind: EnvKind.default('preview'),
  template: TemplateRef,
  inputs: z
    .record(
      z
        .string()
        .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
        .max(128),
      z.string().max(64 * 1024),
    )
    .refine((r) => Object.keys(r).length <= 200, 'at most 200 inputs')
    .default({}),
  /** Time to live, e.g. `30m`, `2h`, `1d`; the environment is destroyed when it runs out. */
  ttl: z.string().max(32).optional(),
  /** Compose profiles to activate, as `--profile` does; `*` activates all of them. */
  profiles: z
    .array(
      z
        .string()
        .max(64)
        .regex(/^(\*|[a-zA-Z0-9][a-zA-Z0-9_.-]*)$/, 'a profile name: letters, digits, "_", "." and "-"'),
    )
    .max(50)
    .default([]),
  /**
   * Seeded volumes (`x-mayfly.data`) are seeded by their job even when a snapshot of the same
   * seed exists, and the snapshot is taken again (`mayfly up --no-snapshot`).
   */
  noSnapshot: z.boolean().default(false),
});
export type CreateEnvironmentRequest = z.input<typeof CreateEnvironmentRequest>;

/** A template folder uploaded as a tar (gzip'd or not), unpacked by the server into its own work dir. */
export const Bundle = z.object({
  id: z.string(),
  files: z.number().int(),
  /** Uncompressed size. */
  bytes: z.number().int(),
  /** An unused bundle is deleted after this. */
  expiresAt: z.string(),
});
export type Bundle = z.infer<typeof Bundle>;

/**
 * What a token may do, each including the ones before it: `read` (list, get, events, logs),
 * `write` (create and destroy environments, upload bundles), `admin` (tokens, settings).
 */
export const TOKEN_SCOPES = ['read', 'write', 'admin'] as const;
export const TokenScope = z.enum(TOKEN_SCOPES);
export type TokenScope = z.infer<typeof TokenScope>;

/** True when a token of scope `held` may do what needs `needed`. */
export function scopeAllows(held: TokenScope, needed: TokenScope): boolean {
  return TOKEN_SCOPES.indexOf(held) >= TOKEN_SCOPES.indexOf(needed);
}

export const Token = z.object({
  id: z.string(),
  name: z.string(),
  scope: TokenScope,
  /** Bound to one project: sees and changes only its environments. */
  project: z.string().nullable(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});
export type Token = z.infer<typeof Token>;

export const CreateTokenRequest = z.strictObject({
  name: z.string().min(1).max(100),
  scope: TokenScope,
  project: ProjectName.optional(),
  /** Lifetime, e.g. `30d`; without it the token lives until revoked. */
  ttl: z.string().max(32).optional(),
  /**
   * The token's form: `mayfly` (`mfy_…`, the default) or `e2b` (`e2b_<hex>`, the form the e2b SDKs
   * take as an API key; see docs/e2b.md). Both are the same kind of token with the same scopes.
   */
  format: z.enum(['mayfly', 'e2b']).default('mayfly'),
});
export type CreateTokenRequest = z.input<typeof CreateTokenRequest>;

/** The answer to a token creation: the only time the token itself is shown. */
export const CreatedToken = Token.extend({ token: z.string() });
export type CreatedToken = z.infer<typeof CreatedToken>;

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

/** The longest time to live an environment may have (a longer one is refused, not clamped). */
export const ENV_TTL_MAX_MS = 365 * 86_400_000;
/** The longest lifetime a token may be given. */
export const TOKEN_TTL_MAX_MS = 5 * 365 * 86_400_000;

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

/** `MAYFLY_URL_API` for a service `api`: upper-cased, every character not a letter or digit `_`. */
export function serviceUrlVariable(service: string): string {
  return `MAYFLY_URL_${service.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** Template files looked for, in this order, when none is named (`mayfly up`, a project's repository). */
export const DEFAULT_TEMPLATES = [
  'mayfly.yaml',
  'mayfly.yml',
  'compose.yaml',
  'compose.yml',
  'docker-compose.yaml',
  'docker-compose.yml',
] as const;

/** API paths, so the SDK and the server cannot drift apart. */
/** A one-time link that logs a browser into the dashboard (`POST /v1/dashboard/login-links`). */
export const DashboardLoginLink = z.object({
  /** Works once, until `expiresAt`; its code is in the fragment. */
  url: z.string(),
  expiresAt: z.string(),
});
export type DashboardLoginLink = z.infer<typeof DashboardLoginLink>;

export const ApiPaths = {
  health: '/healthz',
  environments: '/v1/environments',
  environment: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}`,
  events: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}/events`,
  logs: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}/logs`,
  bundles: '/v1/bundles',
  tokens: '/v1/tokens',
  dashboardLoginLinks: '/v1/dashboard/login-links',
  watchEnvironments: '/v1/watch/environments',
  capacity: '/v1/capacity',
  snapshots: '/v1/snapshots',
  snapshot: (project: string, name: string) =>
    `/v1/snapshots/${encodeURIComponent(project)}/${encodeURIComponent(name)}`,
  environmentSnapshots: (idOrName: string) => `/v1/environments/${encodeURIComponent(idOrName)}/snapshots`,
  token: (id: string) => `/v1/tokens/${encodeURIComponent(id)}`,
  projects: '/v1/projects',
  project: (name: string) => `/v1/projects/${encodeURIComponent(name)}`,
  previews: (project: string) => `/v1/projects/${encodeURIComponent(project)}/previews`,
  deliveries: (project: string) => `/v1/projects/${encodeURIComponent(project)}/deliveries`,
  redeliver: (project: string, delivery: string) =>
    `/v1/projects/${encodeURIComponent(project)}/deliveries/${encodeURIComponent(delivery)}/redeliver`,
  readiness: (project: string) => `/v1/projects/${encodeURIComponent(project)}/readiness`,
  approve: (project: string, number: number) =>
    `/v1/projects/${encodeURIComponent(project)}/previews/${number}/approve`,
  githubWebhook: '/webhooks/github',
  gitlabWebhook: '/webhooks/gitlab',
} as const;

export * from './capacity.js';
export * from './projects.js';
export * from './sandboxes.js';
export * from './snapshots.js';
