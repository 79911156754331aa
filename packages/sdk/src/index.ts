/**
 * TypeScript SDK of Mayfly: a typed client of the REST API, with errors mapped back from HTTP.
 * @packageDocumentation
 */
export type {
  Bundle,
  CreatedToken,
  CreateEnvironmentRequest,
  CreateProjectRequest,
  CreateTokenRequest,
  EnvEvent,
  Environment,
  EnvKind,
  EnvState,
  ErrorCode,
  Failure,
  Forge,
  Preview,
  PreviewState,
  Project,
  ProjectPolicy,
  SandboxFileEntry,
  SandboxInfo,
  SandboxProcess,
  SandboxState,
  ServiceStatus,
  TemplateIssue,
  Token,
  TokenScope,
  UpdateProjectRequest,
} from '@mayfly/contract';
export type { BundleBody, BundlesApi, UploadBundleOptions } from './bundles.js';
export { HealthResponse, MayflyClient, type MayflyClientOptions } from './client.js';
export type {
  EnvironmentsApi,
  EventsOptions,
  ListEnvironmentsOptions,
  LogsOptions,
  WaitForOptions,
} from './environments.js';
export {
  ConflictError,
  ConnectionError,
  ForbiddenError,
  InvalidRequestError,
  InvalidTemplateError,
  MayflyError,
  type MayflyErrorCode,
  type MayflyErrorInit,
  type MayflyErrorOptions,
  NotFoundError,
  QuotaExceededError,
  RuntimeUnavailableError,
  TimeoutError,
  UnauthorizedError,
  UnexpectedStateError,
} from './errors.js';
export type { FetchInit, FetchLike, FetchResponse } from './http.js';
export { AppliedProject, type ProjectsApi } from './projects.js';
export {
  CommandHandle,
  type CommandResult,
  Commands,
  CommandTimeoutError,
  Files,
  type RunOptions,
  Sandbox,
  type SandboxConnection,
  type SandboxCreateOptions,
  SandboxTemplates,
} from './sandboxes.js';
export type { SnapshotsApi } from './snapshots.js';
export type { ListTokensOptions, TokensApi } from './tokens.js';
