/**
 * Projects: a repository whose pull requests (and, if asked, branches) get preview environments.
 * Shared by the server (API validation), the CLI (`mayfly project`, `mayfly apply`) and the SDK.
 */
import { z } from 'zod';

/** Project names go into environment names (`<project>-pr-<n>`), which are DNS labels: kept short. */
export const PROJECT_NAME_MAX = 24;

export const GitProjectName = z
  .string()
  .min(1)
  .max(PROJECT_NAME_MAX)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and hyphens, not at either end')
  .refine((s) => !s.includes('--'), 'must not contain "--" (it separates service and environment in URLs)');

export const FORGES = ['github', 'gitlab'] as const;
export const Forge = z.enum(FORGES);
export type Forge = z.infer<typeof Forge>;

const Duration = z
  .string()
  .max(32)
  .regex(/^(\d+(\.\d+)?[smhd])+$/, 'a duration like 30m, 2h or 7d');
const Glob = z.string().min(1).max(256);
const InputName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a variable name: letters, digits and "_"')
  .max(128);
const Inputs = z
  .record(InputName, z.string().max(64 * 1024))
  .refine((r) => Object.keys(r).length <= 200, 'at most 200 inputs');

/** What a project does with pull requests and pushes; every field has a default. */
export const ProjectPolicy = z.strictObject({
  /** A push to the project's branch keeps an environment `<project>-<branch>` up to date. */
  branchEnvironment: z.boolean().default(false),
  /** Time to live of a preview, counted from its last update; null: until the PR closes. */
  ttl: Duration.nullable().default(null),
  /** Stop (`sleep`, woken by the next request) or `destroy` a preview nobody used for this long. */
  idle: z
    .strictObject({ after: Duration, action: z.enum(['sleep', 'destroy']).default('sleep') })
    .nullable()
    .default(null),
  /** Previews of this project at once; past it, the least recently used one is put to sleep. */
  maxEnvironments: z.number().int().min(1).max(1000).nullable().default(null),
  /** Who may open preview URLs: anyone, or holders of the project's preview token (link or header). */
  access: z.enum(['public', 'token']).default('public'),
  filters: z
    .strictObject({
      /** Base branches (PRs) and branches (pushes) that get environments; globs; empty: all. */
      branches: z.array(Glob).max(50).default([]),
      /** Only PRs that change a path matching one of these globs; empty: all. */
      paths: z.array(Glob).max(50).default([]),
      /** Draft PRs wait until they are ready for review. */
      skipDrafts: z.boolean().default(true),
      /** Only PRs with this label. */
      requireLabel: z.string().min(1).max(100).nullable().default(null),
    })
    .default({ branches: [], paths: [], skipDrafts: true, requireLabel: null }),
  /** A PR from a fork is built once someone with write access adds this label (or runs `mayfly approve`). */
  approvalLabel: z.string().min(1).max(100).nullable().default(null),
  /** Inputs (`${NAME}` in the template) given to every environment of the project. */
  inputs: Inputs.default({}),
});
export type ProjectPolicy = z.infer<typeof ProjectPolicy>;
export type ProjectPolicyInput = z.input<typeof ProjectPolicy>;

/** A project as the API shows it: secrets are never returned, only whether they are set. */
export const Project = z.object({
  name: z.string(),
  repo: z.string(),
  /** The template's path inside the repository; null: found as `mayfly up` finds it. */
  template: z.string().nullable(),
  branch: z.string(),
  forge: Forge,
  /** `owner/name` (GitHub) or the project path (GitLab) that webhooks name. */
  forgeRepo: z.string(),
  /** The forge's API base URL; null: the public one. */
  forgeApiUrl: z.string().nullable(),
  policy: ProjectPolicy,
  hasWebhookSecret: z.boolean(),
  hasForgeToken: z.boolean(),
  /** A preview token was made (`POST /v1/projects/{name}/preview-token`); it is never shown again. */
  hasPreviewToken: z.boolean(),
  /** Names of the secret inputs (their values are never shown). */
  secretInputs: z.array(z.string()),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Project = z.infer<typeof Project>;

/** Secrets of a project: write-only through the API. */
const ProjectSecrets = {
  webhookSecret: z.string().min(8).max(1024).optional(),
  forgeToken: z.string().min(1).max(4096).optional(),
  /** Inputs that forks never get and the API never shows. */
  secretInputs: Inputs.optional(),
};

const RepoUrl = z.string().min(1).max(2048);
const TemplatePath = z.string().min(1).max(1024);
const BranchName = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[^\s~^:?*[\\]+$/, 'a branch name')
  .refine((s) => !s.startsWith('-') && !s.includes('..'), 'a branch name');
const ForgeRepo = z
  .string()
  .min(3)
  .max(255)
  .regex(/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)+$/, 'owner/name');
const ApiUrl = z
  .string()
  .max(2048)
  .regex(/^https?:\/\/[^\s]+$/, 'an http(s) URL');

export const CreateProjectRequest = z.strictObject({
  name: GitProjectName,
  repo: RepoUrl,
  template: TemplatePath.optional(),
  branch: BranchName.default('main'),
  forge: Forge.default('github'),
  /** Default: the last two path segments of the repository URL (GitHub), or its path (GitLab). */
  forgeRepo: ForgeRepo.optional(),
  forgeApiUrl: ApiUrl.optional(),
  policy: ProjectPolicy.default(ProjectPolicy.parse({})),
  ...ProjectSecrets,
});
export type CreateProjectRequest = z.input<typeof CreateProjectRequest>;

/** Only the fields given change; `policy` fields merge into the current policy. */
export const UpdateProjectRequest = z.strictObject({
  repo: RepoUrl.optional(),
  template: TemplatePath.nullable().optional(),
  branch: BranchName.optional(),
  forge: Forge.optional(),
  forgeRepo: ForgeRepo.optional(),
  forgeApiUrl: ApiUrl.nullable().optional(),
  policy: z.record(z.string(), z.unknown()).optional(),
  webhookSecret: ProjectSecrets.webhookSecret.nullable(),
  forgeToken: ProjectSecrets.forgeToken.nullable(),
  secretInputs: ProjectSecrets.secretInputs.nullable(),
});
export type UpdateProjectRequest = z.input<typeof UpdateProjectRequest>;

export const PREVIEW_STATES = [
  /** Waiting for its environment to be built or updated. */
  'building',
  'ready',
  'failed',
  /** A PR from a fork, not built until approved. */
  'awaiting-approval',
  /** Left out by the project's filters (draft, label, branch, paths). */
  'skipped',
  'closed',
] as const;
export const PreviewState = z.enum(PREVIEW_STATES);
export type PreviewState = z.infer<typeof PreviewState>;

/** A pull request (or branch) of a project, and its environment. */
export const Preview = z.object({
  project: z.string(),
  /** PR (MR) number; null for a branch environment. */
  number: z.number().int().nullable(),
  branch: z.string().nullable(),
  environment: z.string(),
  headSha: z.string(),
  fromFork: z.boolean(),
  approved: z.boolean(),
  open: z.boolean(),
  state: PreviewState,
  /** Why it is skipped or failed, in words. */
  detail: z.string().nullable(),
  title: z.string().nullable(),
  url: z.string().nullable(),
  updatedAt: z.string(),
});
export type Preview = z.infer<typeof Preview>;

/** A webhook delivery a project's secret signed, and what Mayfly did with it. */
export const Delivery = z.object({
  /** The forge's delivery id (`redeliver-…` for one made by a redeliver). */
  id: z.string(),
  /** The forge's event name (`pull_request`, `push`, `Merge Request Hook`, …). */
  event: z.string(),
  /** What it said, in words (`pull request #5 synchronize at 1a2b3c4d5e6f`). */
  summary: z.string().nullable(),
  /** What Mayfly did with it, in words; null while it is being acted on. */
  outcome: z.string().nullable(),
  receivedAt: z.string(),
  /** The delivery this one repeats (its id), when made by a redeliver. */
  redeliveryOf: z.string().nullable(),
  /** Mayfly kept what it said, so it can be acted on again. */
  redeliverable: z.boolean(),
});
export type Delivery = z.infer<typeof Delivery>;

/** One preview made ready: from the webhook that set its head to its environment ready there. */
export const ReadinessSample = z.object({
  environment: z.string(),
  number: z.number().int().nullable(),
  branch: z.string().nullable(),
  headSha: z.string(),
  receivedAt: z.string(),
  readyAt: z.string(),
  readyMs: z.number().int(),
});
export type ReadinessSample = z.infer<typeof ReadinessSample>;

/** Time from webhook to ready over a period: every sample, the percentiles, and per day. */
export const ReadinessStats = z.object({
  days: z.number().int().describe('the period, in days up to now'),
  /** Null when there is no sample. */
  p50Ms: z.number().nullable(),
  p95Ms: z.number().nullable(),
  perDay: z.array(
    z.object({
      day: z.string().describe('YYYY-MM-DD (UTC)'),
      count: z.number().int(),
      p50Ms: z.number(),
      p95Ms: z.number(),
    }),
  ),
  /** Samples in the period. */
  count: z.number().int(),
  /** The newest samples (at most 100). */
  items: z.array(ReadinessSample),
});
export type ReadinessStats = z.infer<typeof ReadinessStats>;

/** The nearest-rank percentile `p` (0–100) of `values`; null when there are none. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}
