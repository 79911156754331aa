/**
 * Repository interfaces of the store. Implementations: kysely over SQLite (default, one file under
 * the data dir) and over PostgreSQL (several replicas). Everything above `store/` sees only these.
 */
import type { EnvKind, EnvState, Failure } from '@mayfly/contract';
import type { EnvPlan } from '../runtime/runtime.js';

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
>;

export type EnvironmentPatch = Partial<
  Pick<EnvironmentRecord, 'state' | 'desired' | 'plan' | 'failure' | 'expiresAt' | 'name'>
>;

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
  update(id: string, patch: EnvironmentPatch): Promise<EnvironmentRecord>;
  /**
   * Environments whose state differs from what is desired, or whose TTL has run out:
   * desired present and state not ready/failed/sleeping, desired absent and state not
   * destroyed, or `expiresAt <= now` and desired present.
   */
  listNeedingWork(now: Date): Promise<EnvironmentRecord[]>;
  /**
   * Takes the work lease for `owner` if it is free, expired, or already `owner`'s; returns false
   * when another replica holds it. On PostgreSQL uses `SELECT … FOR UPDATE SKIP LOCKED`.
   */
  claim(id: string, owner: string, leaseMs: number): Promise<boolean>;
  release(id: string, owner: string): Promise<void>;
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
  append(event: Omit<EventRecord, 'id' | 'at'> & { at?: Date }): Promise<EventRecord>;
  list(envId: string, options?: { afterId?: number }): Promise<EventRecord[]>;
}

export interface TokenRecord {
  id: string;
  name: string;
  scopes: string[];
  createdAt: Date;
}

export interface TokenRepository {
  /** Stores only a hash; the plain token is returned once, here. */
  create(name: string, scopes: string[]): Promise<{ token: string; record: TokenRecord }>;
  verify(token: string): Promise<TokenRecord | null>;
  count(): Promise<number>;
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
  close(): Promise<void>;
}

export class NameTakenError extends Error {
  constructor(readonly envName: string) {
    super(`an environment named "${envName}" already exists`);
    this.name = 'NameTakenError';
  }
}
