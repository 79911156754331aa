/**
 * What a forge's webhook means to Mayfly, whichever forge sent it: a change request (a GitHub pull
 * request or a GitLab merge request) opened, updated or closed, a push, a ping, or something ignored.
 * The forge drivers (`github/webhook.ts`, `gitlab/webhook.ts`) turn untrusted payloads into these;
 * the helpers below are the forge-neutral parts of that parsing (bounds, patterns, error messages).
 */
import * as z from 'zod';

export type ForgeName = 'github' | 'gitlab';

export type ChangeRequestAction =
  | 'opened'
  | 'updated'
  | 'closed'
  | 'labeled'
  | 'ready'
  | 'converted_to_draft'
  | 'other';

/** A GitHub pull request or a GitLab merge request changed. */
export interface ChangeRequestEvent {
  kind: 'change_request';
  forge: ForgeName;
  /** The BASE repository's full path: GitHub `owner/name`, GitLab `group/sub/project`. */
  repo: string;
  /** Pull request number / merge request iid. */
  number: number;
  /**
   * opened and reopened → 'opened'; new commits → 'updated'; closed or merged → 'closed';
   * labels added or removed → 'labeled'; draft → ready → 'ready'; ready → draft → 'converted_to_draft'.
   */
  action: ChangeRequestAction;
  /** The forge's own action string (empty when the payload has none). */
  rawAction: string;
  headSha: string;
  headRef: string;
  /** The base branch's commit when the forge sends it (GitHub does, GitLab does not). */
  baseSha: string | null;
  baseRef: string;
  /** The head lives in another repository than the base (or its repository is gone). */
  fromFork: boolean;
  draft: boolean;
  merged: boolean;
  labels: string[];
  title: string;
  url: string | null;
  author: string | null;
  /** The HEAD repository's clone URL (for a fork, the fork's); http(s) only. */
  cloneUrl: string | null;
}

export interface PushEvent {
  kind: 'push';
  forge: ForgeName;
  repo: string;
  /** The branch pushed to; null for a tag. */
  branch: string | null;
  /** The ref's new commit (all zeros when `deleted`). */
  after: string;
  /** The ref's old commit; null when the ref is new. */
  before: string | null;
  deleted: boolean;
  /**
   * Files the pushed commits added, modified or removed, when the payload is known to list every
   * pushed commit and every path; null when it may not (a truncated list, a new ref, a forced push,
   * a deletion, more than {@link CHANGED_PATHS_MAX} paths): then treat everything as changed.
   */
  changedPaths: string[] | null;
}

export interface PingEvent {
  kind: 'ping';
  forge: ForgeName;
  repo: string | null;
}

export interface IgnoredEvent {
  kind: 'ignored';
  forge: ForgeName;
  /** The forge's event name, as its header said. */
  event: string;
  repo: string | null;
}

export type ForgeEvent = ChangeRequestEvent | PushEvent | PingEvent | IgnoredEvent;

/**
 * A payload that does not have the shape of the event it claims. The message names the event and
 * the field at fault (as a path such as `pull_request.head.sha`), never the payload's values.
 */
export class WebhookPayloadError extends Error {
  override readonly name = 'WebhookPayloadError';
}

/**
 * Largest webhook body worth reading: GitHub caps payloads at 25 MB (a larger event is not
 * delivered at all), so a bigger body is no forge's and can be refused before it is read whole.
 */
export const WEBHOOK_BODY_MAX_BYTES = 25 * 1024 * 1024;

/** Labels kept per change request (GitHub allows at most 100 on one); the rest are dropped. */
export const LABELS_MAX = 100;
/** Distinct changed paths reported per push; past it `changedPaths` is null. */
export const CHANGED_PATHS_MAX = 10_000;

// --- forge-neutral schema pieces, for the drivers ---------------------------------------------

/** A commit id: SHA-1 (40) or SHA-256 (64) hex digits; returned in lower case. */
export const CommitSha = z
  .string()
  .regex(/^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/, 'expected a commit id of 40 or 64 hex digits')
  .transform((s) => s.toLowerCase());

/** The all-zeros id forges send for "no commit" (a ref created or deleted). */
export const isNullSha = (sha: string): boolean => /^0+$/.test(sha);

const REF_MAX = 1024;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
const REF_FORBIDDEN = /[\u0000-\u0020\u007f~^:?*[\\]|\.\.|@\{|\/\/|^[-/.]|\/\.|[/.]$|\.lock$|\.lock\//;

/**
 * A branch or tag name, or a full ref: what `git check-ref-format` accepts, and never something a
 * command line could take for an option (a leading `-`). At most 1 KiB.
 */
export const GitRefName = z
  .string()
  .min(1, 'expected a ref name')
  .max(REF_MAX, `expected a ref name of at most ${REF_MAX} characters`)
  .refine((s) => !REF_FORBIDDEN.test(s), 'expected a valid git ref name');

/** One segment of a repository path: letters, digits, `_`, `-`, `.`; not `.`/`..`, not a leading `-`. */
const REPO_SEGMENT = /^(?!\.{1,2}$)(?!-)[A-Za-z0-9_.-]{1,255}$/;

/**
 * Whether `path` is a sane repository path of `minSegments` to `maxSegments` `/`-separated segments
 * (GitHub `owner/name`: 2; GitLab `group/…/project`: 2 to 21), at most 1 KiB.
 */
export function isRepoPath(path: unknown, minSegments: number, maxSegments: number): path is string {
  if (typeof path !== 'string' || path.length > 1024) return false;
  const segments = path.split('/');
  return (
    segments.length >= minSegments &&
    segments.length <= maxSegments &&
    segments.every((s) => REPO_SEGMENT.test(s))
  );
}

/** An http(s) URL without credentials, at most 2 KiB (clone URLs, web links). */
export const HttpUrl = z
  .string()
  .max(2048, 'expected a URL of at most 2048 characters')
  .refine((s) => {
    if (!URL.canParse(s)) return false;
    const u = new URL(s);
    return (
      (u.protocol === 'https:' || u.protocol === 'http:') && u.hostname !== '' && !u.username && !u.password
    );
  }, 'expected an http(s) URL');

/** Free text shown to people (titles, names): bounded, any content. */
export const boundedText = (max: number) => z.string().max(max, `expected text of at most ${max} characters`);

/** A user's login: bounded, no whitespace or control characters. */
export const UserLogin = z
  .string()
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
  .regex(/^[^\s\u0000-\u001f\u007f]{1,255}$/, 'expected a user name of 1 to 255 printable characters');

/** A label name, at most 1 KiB. */
export const LabelName = boundedText(1024);

/** Arrays longer than `max` are cut to their first `max` items before their items are checked. */
export const capped = <T extends z.ZodType>(item: T, max: number) =>
  z.preprocess((v) => (Array.isArray(v) && v.length > max ? v.slice(0, max) : v), z.array(item));

/** A positive integer a JavaScript number holds exactly (PR numbers, MR iids, project ids). */
export const PositiveId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

/**
 * Parses `payload` with `schema`, turning any failure into a {@link WebhookPayloadError} naming the
 * event and the first field at fault (never a value from the payload). `at` prefixes the field path
 * when `payload` is a part of the whole.
 */
export function parsePayload<T extends z.ZodType>(
  schema: T,
  payload: unknown,
  what: string,
  at: readonly (string | number)[] = [],
): z.output<T> {
  let result: z.ZodSafeParseResult<z.output<T>>;
  try {
    result = schema.safeParse(payload);
  } catch (err) {
    throw new WebhookPayloadError(`${what} payload could not be read`, { cause: err });
  }
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = [...at, ...(issue?.path ?? [])].map(String).join('.') || '(root)';
  throw new WebhookPayloadError(`${what} payload: ${path}: ${issue?.message ?? 'invalid'}`);
}

/**
 * The paths lists of one pushed commit; each list is optional (some payloads leave them out), and
 * cut just past {@link CHANGED_PATHS_MAX} before its items are checked (the answer is null then).
 */
const PathList = capped(z.string().max(4096), CHANGED_PATHS_MAX + 1).optional();
const CommitPaths = z.object({ added: PathList, modified: PathList, removed: PathList });

/**
 * The distinct paths the listed commits touched, or null past {@link CHANGED_PATHS_MAX} paths or
 * when one list has `perListMax` entries or more (the forge may have cut it short). Stops reading
 * as soon as the answer is null, so a huge payload costs little.
 */
export function collectChangedPaths(
  commits: readonly unknown[],
  what: string,
  perListMax = Number.POSITIVE_INFINITY,
): string[] | null {
  const paths = new Set<string>();
  for (const [i, commit] of commits.entries()) {
    const lists = parsePayload(CommitPaths, commit, what, ['commits', i]);
    for (const list of [lists.added, lists.modified, lists.removed]) {
      if (!list) continue;
      if (list.length >= perListMax) return null;
      for (const p of list) {
        paths.add(p);
        if (paths.size > CHANGED_PATHS_MAX) return null;
      }
    }
  }
  return [...paths];
}

/** Runs a driver's parser so that nothing but a {@link WebhookPayloadError} escapes it. */
export function onlyPayloadErrors<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof WebhookPayloadError) throw err;
    throw new WebhookPayloadError(`${what} payload could not be read`, { cause: err });
  }
}
