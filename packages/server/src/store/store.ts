/**
 * Repository interfaces of the store. Implementations: kysely over SQLite (default, one file under
 * the data dir) and over PostgreSQL (several replicas). Everything above `store/` sees only these.
 */
import type { EnvKind, EnvState, Failure, Forge, ProjectPolicy } from '@mayfly/contract';
import type { EnvPlan } from '../plan/plan.js';

export interface EnvironmentRecord {
  id: string;
  name: string;
  project: string;
  kind: EnvKind;
  state: EnvState;
  desired: 'present' | 'absent';
  templateFile: string;
  /** The template as submitted, kept so the environment can be re-planned. */
  templateContent: string;
  templateDir: string | null;
  inputs: Record<string, string>;
  plan: EnvPlan | null;
  failure: Failure | null;
  ttlMs: number | null;
  expiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  /** Replica that holds the work lease on this environment, until `leaseUntil`. */
  leaseOwner: string | null;
  leaseUntil: Date | null;
  /** Failed attempts at the current step (bring-up or teardown) since the last progress or change of mind. */
  attempts: number;
  /** Not worked on again before this time (backoff after a failed attempt); null: now. */
  retryAt: Date | null;
  /** Where the template comes from when it is a git repository (previews); null otherwise. */
  source: GitSource | null;
  /** Bumped by every update asked for; `plan` was made from `plannedRevision`. */
  revision: number;
  plannedRevision: number;
  /** The last revision whose update failed; it is not tried again, the next one is. */
  failedRevision: number;
  updateFailure: UpdateFailure | null;
  /** Asked to sleep: its containers stopped, its volumes kept, woken by the next request. */
  sleep: boolean;
  /** Kept: no time to live, never put to sleep or destroyed for idleness. */
  keep: boolean;
  /** When the gateway last routed a request to it; null: never. */
  lastActiveAt: Date | null;
  /** Who or what asked for it; null for environments made before Mayfly kept it. */
  origin: EnvOrigin | null;
}

/** Who or what asked for an environment, kept as it was then. */
export interface EnvOrigin {
  /** In words: `token ci-bot`, `preview of pull request #42`, `the server`. */
  createdBy: string;
  /** The pull request a preview is of (its web page, when the forge gave one). */
  pullRequest: { number: number; url: string | null } | null;
  /**
   * A preview of a pull request from a fork: its code gets none of the project's secret inputs,
   * nor the project's snapshots made by hand (a dump of production data, anonymised or not).
   */
  fromFork?: boolean;
}

/** A commit of a repository, checked out by the controller to plan the environment from. */
export interface GitSource {
  repoUrl: string;
  commit: string;
  /** Fetched instead when the server refuses fetching a commit by id (`refs/pull/7/head`). */
  ref: string | null;
  /** The template's path in the repository; null: found as `mayfly up` finds it. */
  templateFile: string | null;
}

/** Why an update in place failed; the previous version kept running. */
export interface UpdateFailure extends Failure {
  revision: number;
  commit: string | null;
  at: string;
}

export type NewEnvironment = Pick<
  EnvironmentRecord,
  | 'id'
  | 'name'
  | 'project'
  | 'kind'
  | 'templateFile'
  | 'templateContent'
  | 'templateDir'
  | 'inputs'
  | 'plan'
  | 'ttlMs'
  | 'expiresAt'
> &
  Partial<Pick<EnvironmentRecord, 'source' | 'revision' | 'origin'>>;

export type EnvironmentPatch = Partial<
  Pick<
    EnvironmentRecord,
    | 'state'
    | 'desired'
    | 'plan'
    | 'failure'
    | 'expiresAt'
    | 'name'
    | 'attempts'
    | 'retryAt'
    | 'source'
    | 'revision'
    | 'plannedRevision'
    | 'failedRevision'
    | 'updateFailure'
    | 'inputs'
    | 'templateContent'
    | 'templateFile'
    | 'sleep'
    | 'keep'
    | 'lastActiveAt'
    | 'ttlMs'
  >
>;

/** Options of {@link EnvironmentRepository.update}. */
export interface UpdateOptions {
  /**
   * Fencing: write only while this replica still holds the work lease. When another owner (or none)
   * holds it, nothing is written and {@link LeaseLostError} is thrown.
   */
  owner?: string;
}

export interface EnvironmentFilter {
  project?: string;
  states?: EnvState[];
  /** Leave out environments in state `destroyed` (the default for listings). */
  includeDestroyed?: boolean;
}

export interface EnvironmentRepository {
  /** Throws {@link NameTakenError} when a live (not destroyed) environment has the name. */
  create(env: NewEnvironment): Promise<EnvironmentRecord>;
  get(id: string): Promise<EnvironmentRecord | null>;
  /** The live environment with that name, or else the newest destroyed one. */
  getByName(name: string): Promise<EnvironmentRecord | null>;
  list(filter?: EnvironmentFilter): Promise<EnvironmentRecord[]>;
  /** @throws {EnvironmentNotFoundError} no such id; {@link LeaseLostError} when fenced by `options.owner`. */
  update(id: string, patch: EnvironmentPatch, options?: UpdateOptions): Promise<EnvironmentRecord>;
  /**
   * Environments whose state differs from what is desired, or whose TTL has run out:
   * desired present and state not ready/failed/sleeping, desired absent and state not
   * destroyed, `expiresAt <= now` and desired present, or ready with an update asked for
   * (`revision` past both `plannedRevision` and `failedRevision`), ready and asked to sleep,
   * sleeping and asked to wake — and, in every case, whose `retryAt` is null or not after `now`.
   */
  listNeedingWork(now: Date): Promise<EnvironmentRecord[]>;
  /**
   * Takes the work lease for `owner` if it is free, expired, or already `owner`'s; returns false
   * when another replica holds it. Lease times are the database's clock (PostgreSQL's `now()`),
   * never a replica's own, so replicas with skewed clocks agree on expiry. On PostgreSQL uses
   * `SELECT … FOR UPDATE SKIP LOCKED`.
   */
  claim(id: string, owner: string, leaseMs: number): Promise<boolean>;
  release(id: string, owner: string): Promise<void>;
  /** How many environments are in each state (destroyed ones included), without reading the rows. */
  countByState(): Promise<Partial<Record<EnvState, number>>>;
  /**
   * Deletes destroyed environments (state `destroyed`, desired `absent`) last updated before
   * `before`, with their events and kept logs; returns how many. One that is destroyed but desired
   * `present` again is about to be re-created, so it stays.
   */
  deleteDestroyed(before: Date): Promise<number>;
}

export interface EventRecord {
  id: number;
  envId: string;
  type: string;
  state: EnvState | null;
  message: string;
  at: Date;
}

export interface EventRepository {
  /**
   * Appends an event. Within one environment, ids increase in commit order, so a reader that
   * resumes after the last id it saw never skips an event (on PostgreSQL, appends of one
   * environment are serialised). NUL characters in the message are replaced (PostgreSQL text
   * cannot hold them; container output may contain them).
   */
  append(event: Omit<EventRecord, 'id' | 'at'> & { at?: Date }): Promise<EventRecord>;
  list(envId: string, options?: { afterId?: number }): Promise<EventRecord[]>;
  /**
   * Keeps the newest `maxPerEnv` events of every environment besides its state transitions, which
   * are always kept; returns how many were deleted.
   */
  prune(options: { maxPerEnv: number }): Promise<number>;
}

export interface TokenRecord {
  id: string;
  name: string;
  scopes: string[];
  /** A token bound to a project sees and changes only that project's environments. */
  project: string | null;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  /** The token a dashboard session or login link was made with; null for API tokens. */
  parentId: string | null;
}

/**
 * What a token is for: `api`, the API's bearer tokens; `session`, the dashboard's cookie (`mfs_`),
 * never taken as a bearer token; `login`, a one-time link that starts a session (`mfl_`). A
 * session or link belongs to the token that made it and dies with it.
 */
export type TokenKind = 'api' | 'session' | 'login';

export interface NewToken {
  name: string;
  scopes: string[];
  project?: string | null;
  expiresAt?: Date | null;
  /** `e2b`: an `e2b_<hex>` key for the e2b SDKs instead of an `mfy_` token (API tokens only). */
  format?: 'mayfly' | 'e2b';
  /** Default `api`. */
  kind?: TokenKind;
  /** The token a session or login link was made with. */
  parentId?: string | null;
}

export interface TokenRepository {
  /** Stores only a hash; the plain token is returned once, here. */
  create(token: NewToken): Promise<{ token: string; record: TokenRecord }>;
  /**
   * The token's record, or null when it is unknown, revoked or expired (at `now`, default: the
   * clock), not of `kind` (default `api`), or its parent is.
   */
  verify(token: string, now?: Date, kind?: TokenKind): Promise<TokenRecord | null>;
  /** A login link's record, revoked in the same step: only the first of any number of callers gets it. */
  consumeLogin(token: string, now?: Date): Promise<TokenRecord | null>;
  /** How many live tokens of `kind` `parentId` has (sessions or links of one API token). */
  countChildren(parentId: string, kind: Exclude<TokenKind, 'api'>, now?: Date): Promise<number>;
  /** Deletes sessions and links that expired or were revoked before `before`; returns how many. */
  forgetEndedChildren(before: Date): Promise<number>;
  get(id: string): Promise<TokenRecord | null>;
  /**
   * Stores `plain`, a token the operator made, unless a token with its hash was ever stored (a
   * revoked one stays revoked). Two replicas adopting one token at once store it once.
   * @returns true when it was stored now.
   */
  adopt(plain: string, token: NewToken): Promise<boolean>;
  /** Every API token, oldest first; revoked ones only with `includeRevoked` (expired ones always). */
  list(options?: { includeRevoked?: boolean }): Promise<TokenRecord[]>;
  /** Revokes; false when there is no such token or it was already revoked. */
  revoke(id: string): Promise<boolean>;
  /** How many tokens were ever created, revoked and expired ones included. */
  count(): Promise<number>;
}

/** The last lines of a workload's output, kept in the store so they outlive its containers. */
export interface KeptLog {
  envId: string;
  workload: string;
  text: string;
  at: Date;
}

export interface KeptLogRepository {
  /** Replaces what was kept for that workload. NUL characters are replaced, as in events. */
  save(envId: string, workload: string, text: string): Promise<void>;
  list(envId: string): Promise<KeptLog[]>;
}

/** An image Mayfly built, and when an environment last used it: the basis of image garbage collection. */
export interface BuiltImageRecord {
  ref: string;
  /** The project of the latest use (a content-addressed image can serve several). */
  project: string;
  lastUsedAt: Date;
}

export interface BuiltImageRepository {
  /** Records a use (a build, or an environment that reused it) at `at`; creates the row if needed. */
  touch(ref: string, project: string, at?: Date): Promise<void>;
  /** Least recently used first. */
  list(): Promise<BuiltImageRecord[]>;
  delete(ref: string): Promise<void>;
}

/** A snapshot of a volume: seeded data kept to be cloned into environments, or one made by hand. */
export interface SnapshotRecord {
  id: string;
  project: string;
  name: string;
  /** The seed's content key (see `snapshots/seed-key.ts`); null for one made by hand. */
  seedKey: string | null;
  /** The template's volume it was taken of. */
  volume: string;
  sourceEnv: { id: string; name: string };
  /** `creating`: the copy is under way (by the replica `owner`), nothing may use it yet. */
  state: 'creating' | 'ready';
  owner: string | null;
  sizeBytes: number | null;
  createdAt: Date;
  lastUsedAt: Date;
}

export interface SnapshotRepository {
  /** Records a snapshot being made; {@link SnapshotNameTakenError} when its project has that name. */
  create(
    input: Pick<SnapshotRecord, 'id' | 'project' | 'name' | 'seedKey' | 'volume' | 'sourceEnv' | 'owner'>,
  ): Promise<SnapshotRecord>;
  /**
   * The copy is done: usable from now on. False when the row is no longer one being made (another
   * replica took it for abandoned and removed it meanwhile): the copy must not be kept.
   */
  markReady(id: string, sizeBytes: number): Promise<boolean>;
  get(id: string): Promise<SnapshotRecord | null>;
  findByName(project: string, name: string): Promise<SnapshotRecord | null>;
  /** Every snapshot, or a project's; by project, then name. */
  list(project?: string): Promise<SnapshotRecord[]>;
  /** Records a use (a clone made of it); never moves backward. */
  touch(id: string, at?: Date): Promise<void>;
  delete(id: string): Promise<void>;
}

export class SnapshotNameTakenError extends Error {
  constructor(
    readonly project: string,
    readonly snapshotName: string,
  ) {
    super(`project "${project}" already has a snapshot named "${snapshotName}"`);
    this.name = 'SnapshotNameTakenError';
  }
}

/** A project as stored; its secrets are read only by who needs them (webhooks, forge calls, plans). */
export interface ProjectRecord {
  name: string;
  repoUrl: string;
  templateFile: string | null;
  branch: string;
  forge: Forge;
  forgeRepo: string;
  forgeApiUrl: string | null;
  policy: ProjectPolicy;
  webhookSecret: string | null;
  forgeToken: string | null;
  secretInputs: Record<string, string>;
  /** SHA-256 (hex) of the preview token, for projects whose previews need one; null: none made. */
  previewTokenHash: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export type NewProject = Omit<ProjectRecord, 'createdAt' | 'updatedAt' | 'previewTokenHash'>;
export type ProjectPatch = Partial<Omit<NewProject, 'name'>> & { previewTokenHash?: string | null };

export interface ProjectRepository {
  /** Throws {@link ProjectExistsError} when the name is taken. */
  create(project: NewProject): Promise<ProjectRecord>;
  get(name: string): Promise<ProjectRecord | null>;
  list(): Promise<ProjectRecord[]>;
  /** Projects whose webhooks name this repository. */
  findByForgeRepo(forge: Forge, forgeRepo: string): Promise<ProjectRecord[]>;
  /** Null when there is no such project. */
  update(name: string, patch: ProjectPatch): Promise<ProjectRecord | null>;
  /** False when there was no such project. */
  delete(name: string): Promise<boolean>;
  /**
   * Records a webhook delivery; false when `id` was seen before (a redelivery: not acted on twice).
   */
  recordDelivery(delivery: NewDelivery): Promise<boolean>;
  /** Says what was done with a delivery. */
  setDeliveryOutcome(id: string, outcome: string): Promise<void>;
  getDelivery(id: string): Promise<DeliveryRecord | null>;
  /** A project's deliveries, newest first. */
  listDeliveries(project: string, limit: number): Promise<DeliveryRecord[]>;
  /** Forgets deliveries received before `before`; returns how many. */
  pruneDeliveries(before: Date): Promise<number>;
}

export interface NewDelivery {
  /** `<forge>:<project>:<delivery id>`. */
  id: string;
  project: string;
  event: string;
  deliveryId: string;
  summary: string | null;
  /** JSON of the event as understood, to redeliver it; null when not kept. */
  eventJson: string | null;
  redeliveryOf?: string | null;
}

export interface DeliveryRecord extends Required<NewDelivery> {
  outcome: string | null;
  receivedAt: Date;
}

/** A pull request (or a branch) of a project and what became of it. */
export interface PreviewRecord {
  id: string;
  project: string;
  number: number | null;
  branch: string | null;
  envName: string;
  headSha: string;
  baseSha: string | null;
  headRef: string;
  baseRef: string;
  cloneUrl: string | null;
  fromFork: boolean;
  approved: boolean;
  draft: boolean;
  labels: string[];
  title: string | null;
  url: string | null;
  open: boolean;
  receivedAt: Date;
  handled: string | null;
  decision: string | null;
  detail: string | null;
  envId: string | null;
  commentId: string | null;
  deploymentId: string | null;
  deploymentSha: string | null;
  reported: string | null;
  leaseOwner: string | null;
  leaseUntil: Date | null;
  attempts: number;
  retryAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

/** What a webhook says of a pull request or branch; the rest is the controller's. */
export type PreviewFacts = Pick<
  PreviewRecord,
  | 'id'
  | 'project'
  | 'number'
  | 'branch'
  | 'envName'
  | 'headSha'
  | 'baseSha'
  | 'headRef'
  | 'baseRef'
  | 'cloneUrl'
  | 'fromFork'
  | 'draft'
  | 'labels'
  | 'title'
  | 'url'
  | 'open'
>;

export type PreviewPatch = Partial<
  Pick<
    PreviewRecord,
    | 'approved'
    | 'handled'
    | 'decision'
    | 'detail'
    | 'envId'
    | 'commentId'
    | 'deploymentId'
    | 'deploymentSha'
    | 'reported'
    | 'attempts'
    | 'retryAt'
  >
>;

export interface PreviewRepository {
  /**
   * Records what the forge said: creates the preview, or updates its facts (a new head sets
   * `receivedAt`). `approved` is set only on creation (from `approvedOnCreate`) or by {@link update}.
   */
  upsert(facts: PreviewFacts, options?: { approved?: boolean }): Promise<PreviewRecord>;
  get(id: string): Promise<PreviewRecord | null>;
  list(filter?: { project?: string }): Promise<PreviewRecord[]>;
  /** Open previews, and closed ones with an environment or a report still to make. */
  listActive(): Promise<PreviewRecord[]>;
  update(id: string, patch: PreviewPatch, options?: UpdateOptions): Promise<PreviewRecord>;
  claim(id: string, owner: string, leaseMs: number): Promise<boolean>;
  release(id: string, owner: string): Promise<void>;
  deleteForProject(project: string): Promise<number>;
  /** Records how long a preview took to be ready at a head; once per preview and head. */
  recordReadiness(readiness: Readiness): Promise<void>;
  /** A project's readiness times since `since`, newest first, at most `limit`. */
  listReadiness(project: string, since: Date, limit: number): Promise<Readiness[]>;
  pruneReadiness(before: Date): Promise<number>;
}

/** A preview made ready: from the webhook that set its head to the environment ready at it. */
export interface Readiness {
  project: string;
  previewId: string;
  envName: string;
  number: number | null;
  branch: string | null;
  headSha: string;
  receivedAt: Date;
  readyAt: Date;
  readyMs: number;
}

/** A sandbox as the store keeps it; `ended` ones stay for a retention period, with why they ended. */
export interface SandboxRecord {
  id: string;
  template: string;
  state: 'running' | 'paused' | 'ended';
  endedReason: 'timeout' | 'killed' | 'oom' | 'error' | null;
  metadata: Record<string, string>;
  cpu: number | null;
  memoryMb: number;
  peakMemoryBytes: number | null;
  /** The token that created it. */
  createdBy: string | null;
  startedAt: Date;
  expiresAt: Date;
  endedAt: Date | null;
}

export interface SandboxRepository {
  insert(record: Omit<SandboxRecord, 'endedReason' | 'endedAt' | 'peakMemoryBytes'>): Promise<void>;
  get(id: string): Promise<SandboxRecord | null>;
  list(options: { states: SandboxRecord['state'][] }): Promise<SandboxRecord[]>;
  /** False when it has ended (or never was). */
  setState(id: string, state: 'running' | 'paused'): Promise<boolean>;
  setExpiry(id: string, expiresAt: Date): Promise<boolean>;
  /** Records the end once: false when it had ended already (whoever ended it first says why). */
  end(
    id: string,
    reason: NonNullable<SandboxRecord['endedReason']>,
    peakMemoryBytes: number | null,
  ): Promise<boolean>;
  /** Sandboxes not ended whose time is up at `at`. */
  expiredBefore(at: Date): Promise<string[]>;
  /** Drops the records of sandboxes that ended before `at`. */
  forgetEndedBefore(at: Date): Promise<number>;
}

/** A sandbox template made through the API (the built-in ones are not stored). */
export interface SandboxTemplateRecord {
  name: string;
  /** Built from a Dockerfile, or an image named. */
  source: 'dockerfile' | 'image';
  /** The image named; for a Dockerfile, the one built from it. */
  image: string | null;
  /** The workspace holding the Dockerfile's folder, kept so a collected image can be built again. */
  workspace: string | null;
  /** The Dockerfile's path in that folder. */
  dockerfile: string | null;
  settings: {
    user: string;
    workdir: string;
    env: Record<string, string>;
    cpu: number;
    memoryMb: number;
    pids: number;
    diskMb: number;
    isolation: 'runc' | 'gvisor';
    pool: number;
  };
  createdAt: Date;
  updatedAt: Date;
}

export interface SandboxTemplateRepository {
  /** Creates it, or replaces the one of that name (its `createdAt` kept); returns what was there. */
  put(
    record: Omit<SandboxTemplateRecord, 'createdAt' | 'updatedAt'>,
    at: Date,
  ): Promise<SandboxTemplateRecord | null>;
  get(name: string): Promise<SandboxTemplateRecord | null>;
  list(): Promise<SandboxTemplateRecord[]>;
  /** False when there was none. */
  remove(name: string): Promise<boolean>;
}

/**
 * Which control-plane processes are alive, each saying so again before its time runs out (the
 * database's clock). Objects a live replica made and has not recorded yet (its warm pool) are its
 * own; a gone replica's are anyone's to remove.
 */
export interface ReplicaRepository {
  /** `id` is alive for `ttlMs` more; rows silent for an hour are dropped. */
  beat(id: string, ttlMs: number): Promise<void>;
  /** The replicas whose time has not run out (or ran out less than `graceMs` ago). */
  alive(graceMs?: number): Promise<string[]>;
  /** `id` stopped. */
  leave(id: string): Promise<void>;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * Identifies the installation this store belongs to. Runtime objects carry it as a label, so
   * garbage collection never touches another installation's objects on a shared engine.
   */
  readonly instanceId: string;
  environments: EnvironmentRepository;
  events: EventRepository;
  tokens: TokenRepository;
  logs: KeptLogRepository;
  images: BuiltImageRepository;
  projects: ProjectRepository;
  previews: PreviewRepository;
  sandboxes: SandboxRepository;
  sandboxTemplates: SandboxTemplateRepository;
  replicas: ReplicaRepository;
  snapshots: SnapshotRepository;
  /**
   * A random secret of this installation for `purpose` (32 bytes), made on first use and the same
   * for every replica: keys derived from it verify wherever they are presented.
   */
  secret(purpose: string): Promise<Buffer>;
  close(): Promise<void>;
}

/** A fenced write found that this replica no longer holds the environment's work lease. */
export class LeaseLostError extends Error {
  constructor(
    readonly envId: string,
    readonly owner: string,
  ) {
    super(`${owner} no longer holds the work lease of ${envId}`);
    this.name = 'LeaseLostError';
  }
}

export class ProjectExistsError extends Error {
  constructor(readonly projectName: string) {
    super(`a project named "${projectName}" already exists`);
    this.name = 'ProjectExistsError';
  }
}

export class NameTakenError extends Error {
  constructor(readonly envName: string) {
    super(`an environment named "${envName}" already exists`);
    this.name = 'NameTakenError';
  }
}
