/**
 * Kysely table types of the store, shared by both dialects.
 *
 * Representation: timestamps are written as ISO-8601 UTC text (`Date#toISOString()`) on both
 * dialects; SQLite keeps that text (fixed width, so it compares correctly as text) and PostgreSQL
 * parses it into `timestamptz` (microsecond precision, so milliseconds round-trip exactly), which
 * `pg` returns as a `Date`. JSON values (inputs, plan, failure, scopes) are stored as text.
 */
import type { ColumnType, Generated } from 'kysely';

/** Read as ISO text (SQLite) or `Date` (PostgreSQL); always written as ISO text. */
export type Timestamp = ColumnType<Date | string, string, string>;

export interface EnvironmentsTable {
  id: string;
  name: string;
  project: string;
  kind: string;
  state: string;
  desired: string;
  template_file: string;
  template_content: string;
  template_dir: string | null;
  /** JSON object of strings. */
  inputs: string;
  /** JSON `EnvPlan` or null. */
  plan: string | null;
  /** JSON `Failure` or null. */
  failure: string | null;
  ttl_ms: number | null;
  expires_at: Timestamp | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  lease_owner: string | null;
  lease_until: Timestamp | null;
  /** Since migration 0003; rows from before it read 0. */
  attempts: number;
  retry_at: Timestamp | null;
  /** Since migration 0004. JSON `GitSource`: the commit the environment should run; null: not from git. */
  source: string | null;
  /** Bumped by every update asked for (a push); the plan is from `planned_revision`. */
  revision: number;
  planned_revision: number;
  /** The last revision whose update failed (not retried until the next one). */
  failed_revision: number;
  /** JSON `UpdateFailure` of that revision, or null. */
  update_failure: string | null;
  /** 1: asked to sleep (containers stopped, volumes kept); 0: awake. */
  sleep: number;
  /** 1: kept: no time to live, never put to sleep or destroyed for idleness. */
  keep: number;
  /** The last request the gateway routed to it (written at most every few seconds). */
  last_active_at: Timestamp | null;
  /** Since migration 0010. JSON `EnvOrigin`: who or what asked for it; null before. */
  origin: string | null;
}

export interface EventsTable {
  id: Generated<number>;
  env_id: string;
  type: string;
  state: string | null;
  message: string;
  at: Timestamp;
}

export interface TokensTable {
  id: string;
  name: string;
  /** JSON array of strings. */
  scopes: string;
  /** SHA-256 of the plain token, lowercase hex. */
  token_hash: string;
  created_at: Timestamp;
  project: string | null;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  /** `api`, `session` or `login` (see `TokenKind`). */
  kind: Generated<string>;
  parent_id: string | null;
}

/** The last output of a workload, one row per (environment, workload). */
export interface KeptLogsTable {
  env_id: string;
  workload: string;
  text: string;
  at: Timestamp;
}

/** Images Mayfly built, for garbage collection least recently used first. */
export interface BuiltImagesTable {
  ref: string;
  project: string;
  last_used_at: Timestamp;
}

/** Projects: repositories whose pull requests get previews. Secrets are never returned by the API. */
export interface ProjectsTable {
  name: string;
  repo_url: string;
  template_file: string | null;
  branch: string;
  forge: string;
  forge_repo: string;
  forge_api_url: string | null;
  /** JSON `ProjectPolicy`. */
  policy: string;
  webhook_secret: string | null;
  forge_token: string | null;
  /** JSON object of strings. */
  secret_inputs: string;
  preview_token_hash: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/**
 * Webhook deliveries seen (signed by a project's secret): so a redelivered one is not acted on
 * twice, and so the dashboard can show what each did and redeliver it.
 */
export interface WebhookDeliveriesTable {
  /** `<forge>:<project>:<delivery id>`. */
  id: string;
  project: string;
  /** The forge's event name (its header). */
  event: string;
  received_at: Timestamp;
  /** The forge's delivery id (null on rows from before 0009). */
  delivery_id: string | null;
  /** What the event was, in words (`pull request #5 synchronize at 1a2b3c…`). */
  summary: string | null;
  /** What Mayfly did with it, in words; null while it is being acted on. */
  outcome: string | null;
  /** The event as Mayfly understood it (JSON `ForgeEvent`), kept to redeliver it; null when not kept. */
  event_json: string | null;
  /** The delivery this one repeats, when made by a redeliver. */
  redelivery_of: string | null;
}

/** How long each preview took from the webhook that set its head to ready, kept for 30 days. */
export interface PreviewReadinessTable {
  /** `<preview id>@<head sha>`: once per head. */
  id: string;
  project: string;
  preview_id: string;
  env_name: string;
  number: number | null;
  branch: string | null;
  head_sha: string;
  received_at: Timestamp;
  ready_at: Timestamp;
  ready_ms: number;
}

/** A pull request or branch of a project: what the forge last said of it, and what was reported back. */
export interface PreviewsTable {
  /** `<project>/pr/<n>` or `<project>/branch/<branch>`. */
  id: string;
  project: string;
  number: number | null;
  branch: string | null;
  env_name: string;
  head_sha: string;
  base_sha: string | null;
  head_ref: string;
  base_ref: string;
  clone_url: string | null;
  from_fork: number;
  approved: number;
  draft: number;
  /** JSON array of strings. */
  labels: string;
  title: string | null;
  url: string | null;
  open: number;
  /** When the forge told us of the current head (the start of "webhook to ready"). */
  received_at: Timestamp;
  /** What the controller last acted on (a fingerprint), and what it decided. */
  handled: string | null;
  decision: string | null;
  detail: string | null;
  env_id: string | null;
  comment_id: string | null;
  deployment_id: string | null;
  deployment_sha: string | null;
  /** The fingerprint of the last status reported to the forge. */
  reported: string | null;
  lease_owner: string | null;
  lease_until: Timestamp | null;
  attempts: number;
  retry_at: Timestamp | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Key/value facts about the installation itself, such as its instance id. */
export interface SettingsTable {
  key: string;
  value: string;
}

/** The whole schema, as Kysely sees it. */
export interface SandboxesTable {
  id: string;
  template: string;
  state: 'running' | 'paused' | 'ended';
  ended_reason: string | null;
  /** JSON object of strings. */
  metadata: string;
  cpu: number | null;
  memory_mb: number;
  peak_memory_bytes: number | null;
  created_by: string | null;
  started_at: Timestamp;
  expires_at: Timestamp;
  ended_at: Timestamp | null;
}

export interface SandboxTemplatesTable {
  name: string;
  source: 'dockerfile' | 'image';
  image: string | null;
  workspace: string | null;
  dockerfile: string | null;
  /** JSON object: the template's defaults (`SandboxTemplateRecord['settings']`). */
  settings: string;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Snapshots of volumes (see `snapshots/`): seeded data kept to be cloned, or made by hand. */
export interface SnapshotsTable {
  id: string;
  project: string;
  /** Unique in the project. */
  name: string;
  /** The seed's content key; null for a snapshot made by hand. */
  seed_key: string | null;
  /** The volume of the template it was taken of. */
  volume: string;
  source_env_id: string;
  source_env_name: string;
  /** `creating` (the copy under way, by `owner`) or `ready`. */
  state: string;
  owner: string | null;
  size_bytes: number | null;
  created_at: Timestamp;
  last_used_at: Timestamp;
}

/** Control-plane processes that said they are alive (housekeeping leaves their objects alone). */
export interface ReplicasTable {
  id: string;
  alive_until: Timestamp;
}

export interface Database {
  environments: EnvironmentsTable;
  events: EventsTable;
  tokens: TokensTable;
  settings: SettingsTable;
  kept_logs: KeptLogsTable;
  built_images: BuiltImagesTable;
  projects: ProjectsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  previews: PreviewsTable;
  preview_readiness: PreviewReadinessTable;
  sandboxes: SandboxesTable;
  sandbox_templates: SandboxTemplatesTable;
  replicas: ReplicasTable;
  snapshots: SnapshotsTable;
}

/** Which SQL dialect a store runs on. */
export type StoreDialect = 'sqlite' | 'postgres';

/** Converts a `Date` to the value written to a timestamp column. */
export function toDbTime(date: Date): string {
  return date.toISOString();
}

/** Converts a timestamp column's value back to a `Date`. */
export function fromDbTime(value: Date | string): Date {
  return value instanceof Date ? new Date(value.getTime()) : new Date(value);
}

/**
 * Replaces NUL characters, which PostgreSQL text cannot hold (the insert fails) and container
 * output may contain, by U+FFFD; done on both dialects so a store behaves the same on either.
 */
export function withoutNul(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

/** Same as {@link fromDbTime}, passing null through. */
export function fromDbTimeOrNull(value: Date | string | null): Date | null {
  return value === null ? null : fromDbTime(value);
}
