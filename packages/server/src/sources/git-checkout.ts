/**
 * Checking out one commit of a project's repository for previews from git, with the real `git`
 * binary (no shell, no git library).
 *
 * Everything that comes from the repository is hostile: a pull request can come from anyone, and
 * the remote itself may be run by an attacker. So git runs with an environment and a config made
 * here from nothing (no system, global or user config, no hooks, no remote helpers, no
 * submodules, no prompts), every run is bounded in time and output and can be cancelled, the
 * checked-out tree is measured and its symbolic links checked before anyone uses it, and every
 * failure removes what was written. A token for https is handed to git through its environment,
 * never through argv, the URL or an error message.
 */
import { spawn } from 'node:child_process';
import type { Stats } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { unsafeLinkTarget } from './link-target.js';

/** A repository, commit or checkout Mayfly refuses or could not get; the message says what, in words. */
export class GitSourceError extends Error {
  override readonly name = 'GitSourceError';
  /** @param message what was refused or failed, in words; never a secret */
  constructor(message: string) {
    super(message);
  }
}

/** What {@link checkoutCommit} checks out, where, and within which limits. */
export interface CheckoutOptions {
  /** `https://…`, `ssh://…`, `git@host:owner/repo(.git)` or `file:///abs/path`; see {@link checkRepoUrl}. */
  repoUrl: string;
  /** Full commit id: 40 hex digits (SHA-1) or 64 (SHA-256). Nothing shorter, no ref names. */
  commit: string;
  /**
   * A ref to fetch when the server refuses to send a commit by its id (e.g. `refs/pull/7/head`,
   * `refs/heads/main`); its tip must then be `commit`.
   */
  ref?: string;
  /** Folder for the tree: must not exist yet; created with mode 0700, removed again on any failure. */
  dir: string;
  /** Token for https remotes, sent as HTTP Basic auth (user `x-access-token`); never in argv, URL, logs or errors. */
  token?: string;
  /** Aborting kills git, removes `dir` and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** For the whole checkout; default 5 minutes. Over it, git is killed and `dir` removed. */
  timeoutMs?: number;
  /** Limit of the checked-out tree's total size in bytes (files and link targets); default 1 GiB. */
  maxBytes?: number;
}

/** What a successful {@link checkoutCommit} produced. */
export interface CheckoutResult {
  /** The commit checked out, lower case. */
  commit: string;
  /** The folder holding its tree (without `.git`). */
  dir: string;
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000;
const DEFAULT_MAX_BYTES = 1024 ** 3;
/** Of git's stdout and stderr only the end is kept: that is where git says what went wrong. */
const OUTPUT_TAIL_BYTES = 8 * 1024;
const MAX_URL_LENGTH = 2048;
const MAX_REF_LENGTH = 1024;
const MAX_TOKEN_LENGTH = 8192;
/** A `git ls-tree`/`diff-tree` record longer than this is no path any file system would take. */
const MAX_RECORD_BYTES = 64 * 1024;
/** Bytes of paths {@link changedPaths} returns before it gives up (a hostile tree can be huge). */
const MAX_CHANGED_PATHS_BYTES = 64 * 1024 * 1024;

/**
 * Git's user name for a token sent as HTTP Basic auth: GitHub requires exactly this one for app
 * installation tokens and accepts it for every other token; GitLab and Gitea accept any user name
 * with a personal or project access token.
 */
const TOKEN_USER = 'x-access-token';

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6 = /^\[[0-9A-Fa-f:.]{2,45}\]$/;
/** User names in `ssh://user@host` and `user@host:path`: plain words, never an option. */
const SSH_USER = /^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$/;

/**
 * Throws GitSourceError with a clear message when the URL is not one Mayfly accepts. Returns it
 * normalised (trimmed).
 *
 * Accepted: `https://host[:port]/path`, `ssh://[user@]host[:port]/path`, the scp-like
 * `[user@]host:path`, and `file:///absolute/path`. Refused, each with the reason: remote helpers
 * (`ext::…` runs a command, `fd::…` talks to a descriptor), other schemes (plain `http://` and
 * `git://` are neither authenticated nor encrypted), credentials in the URL (they would end up in
 * logs and process lists: give a token instead), anything git could read as an option (a leading
 * `-`, a host or user starting with `-`), local paths that are not `file:///` URLs (relative to
 * whatever the server's working folder is), whitespace, control and non-ASCII characters.
 *
 * `file:///` reads any repository the server's user can read: only the operator (who configures
 * projects) should be able to name such a URL.
 */
export function checkRepoUrl(url: string): string {
  const trimmed = url.trim();
  const refuse = (why: string): never => {
    throw new GitSourceError(`repository URL "${maskUrl(trimmed)}" is refused: ${why}`);
  };
  if (trimmed === '') throw new GitSourceError('repository URL is refused: it is empty');
  if (trimmed.length > MAX_URL_LENGTH) refuse(`it is longer than ${MAX_URL_LENGTH} characters`);
  if (trimmed.startsWith('-')) refuse('it starts with "-", which git would read as an option');
  // `<transport>::<address>` makes git run the program git-remote-<transport>: `ext::` runs any
  // command line, `fd::` talks to file descriptors. None of them is a repository Mayfly should use.
  const helper = /^([A-Za-z0-9+.-]+)::/.exec(trimmed);
  if (helper) refuse(`it names the git remote helper "${helper[1]}::", which can run commands`);

  // Spaces, control characters and non-ASCII are percent-encoded in real URLs; raw ones only
  // make room for tricks (a newline in a config value or a log line, a look-alike host).
  if (!/^[\x21-\x7e]+$/.test(trimmed)) refuse('it contains whitespace, control or non-ASCII characters');

  const withScheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(trimmed);
  if (withScheme) {
    const scheme = withScheme[1]!.toLowerCase();
    const authority = withScheme[2]!;
    const rest = withScheme[3]!;
    if (scheme === 'file') {
      if (authority !== '') {
        refuse('a file:// URL must name an absolute path on this machine, as file:///path/to/repo');
      }
      if (rest.length < 2 || !rest.startsWith('/')) refuse('it names no repository path');
      return trimmed;
    }
    if (scheme === 'http' || scheme === 'git') {
      refuse(`${scheme}:// is neither authenticated nor encrypted; use https:// or ssh://`);
    }
    if (scheme !== 'https' && scheme !== 'ssh') {
      refuse(`the scheme "${scheme}" is not accepted; use https://, ssh://, user@host:path or file:///`);
    }
    const at = authority.lastIndexOf('@');
    const userinfo = at === -1 ? undefined : authority.slice(0, at);
    const hostPort = at === -1 ? authority : authority.slice(at + 1);
    if (userinfo !== undefined) {
      if (scheme === 'https') refuse('it carries credentials; give a token separately instead');
      if (userinfo.includes(':')) refuse('it carries a password; use a key (ssh) or a token (https) instead');
      if (!SSH_USER.test(userinfo)) refuse(`the user name "${userinfo}" is not a plain name`);
    }
    checkHostPort(hostPort, refuse);
    if (!rest.startsWith('/') || rest.length < 2) refuse('it names no repository path');
    return trimmed;
  }

  // Git reads `[user@]host:path` as ssh when a colon comes before any slash; anything else
  // without a scheme is a local path, which is refused: relative to what, and which files?
  const scpLike = /^(?:([^@/:]*)@)?([^@/:]*):(.*)$/.exec(trimmed);
  if (!scpLike) refuse('local paths are not accepted; use a file:///absolute/path URL');
  const [, user, host, repoPath] = scpLike!;
  if (user !== undefined && !SSH_USER.test(user)) refuse(`the user name "${user}" is not a plain name`);
  if (!HOSTNAME.test(host!)) refuse(`"${host}" is not a host name`);
  if (repoPath === '') refuse('it names no repository path');
  if (repoPath!.startsWith('-')) refuse('its path starts with "-", which could be read as an option');
  return trimmed;
}

/** Checks `host`, `host:port`, `[v6]` or `[v6]:port` from a URL's authority. */
function checkHostPort(hostPort: string, refuse: (why: string) => never): void {
  const match = /^(\[[^\]]*\]|[^:]*)(?::([0-9]{1,5}))?$/.exec(hostPort);
  if (!match) refuse(`"${hostPort}" is not a host with an optional port`);
  const [, host, port] = match!;
  if (!HOSTNAME.test(host!) && !IPV6.test(host!)) refuse(`"${host}" is not a host name`);
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
    refuse(`port ${port} is out of range`);
}

/** The URL for messages: whatever stands between `://` and `@` is masked, as it may be a secret. */
function maskUrl(url: string): string {
  const masked = url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@');
  return printable(masked.length > 200 ? `${masked.slice(0, 200)}…` : masked);
}

/** Full commit id, lower case: a prefix or a ref name would let the remote choose what we get. */
function checkCommit(commit: string, what: string): string {
  if (!/^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/.test(commit)) {
    throw new GitSourceError(
      `${what} "${printable(commit.slice(0, 80))}" is not a full commit id (40 or 64 hex digits)`,
    );
  }
  return commit.toLowerCase();
}

/**
 * The rules of `git check-ref-format --allow-onelevel`, plus no leading `-` (an option) or `+`
 * (a forced refspec): the ref is passed to `git fetch` as a refspec.
 */
function checkRef(ref: string): string {
  const refuse = (why: string): never => {
    throw new GitSourceError(`ref "${printable(ref.slice(0, 200))}" is refused: ${why}`);
  };
  if (ref === '' || ref.length > MAX_REF_LENGTH) refuse(`it must have 1 to ${MAX_REF_LENGTH} characters`);
  if (ref.startsWith('-') || ref.startsWith('+')) refuse('it starts with "-" or "+"');
  // Space, control characters and the characters git gives a meaning in refspecs and revisions.
  if (hasControlOrSpace(ref) || /[~^:?*[\\]/.test(ref)) {
    refuse('it contains a space, a control character or one of ~^:?*[\\');
  }
  if (ref.includes('..') || ref.includes('@{') || ref === '@') refuse('it contains "..", "@{" or is "@"');
  if (ref.startsWith('/') || ref.endsWith('/') || ref.includes('//'))
    refuse('it has an empty path component');
  if (ref.endsWith('.')) refuse('it ends with "."');
  for (const part of ref.split('/')) {
    if (part.startsWith('.') || part.endsWith('.lock'))
      refuse('a component starts with "." or ends with ".lock"');
  }
  return ref;
}

/**
 * A token goes into an HTTP header: it must not be able to add a header line (CR, LF) or
 * hide in whitespace.
 */
function checkToken(token: string): void {
  if (token.length > MAX_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
    throw new GitSourceError(
      `the token is refused: it must be 1 to ${MAX_TOKEN_LENGTH} printable ASCII characters without spaces`,
    );
  }
}

/**
 * Checks out exactly `commit` of `repoUrl` into `dir`, shallowly (depth 1), and returns it.
 *
 * Steps: `git init` in `dir`, `git fetch --depth 1 --no-tags <url> <commit>` (or, when the
 * server refuses to send a commit by id and `ref` is given, the ref, whose tip must be the commit),
 * the fetched commit's file sizes are added up before anything is written, `git checkout --detach`,
 * `HEAD` must be the commit, then `.git` is removed and the tree is walked (never following links):
 * its total size must be within `maxBytes` and no symbolic link may lead outside it.
 *
 * Submodules are never fetched or checked out (their folders are empty or absent): their URLs
 * come from the hostile `.gitmodules`. Git LFS files stay pointer files: no filter of any kind is
 * configured.
 *
 * On any failure (a {@link GitSourceError}, the caller's abort with the signal's reason, or
 * anything unexpected) `dir` is removed, unless it existed before, in which case nothing is touched.
 */
export async function checkoutCommit(options: CheckoutOptions): Promise<CheckoutResult> {
  const url = checkRepoUrl(options.repoUrl);
  const commit = checkCommit(options.commit, 'commit');
  const ref = options.ref === undefined ? undefined : checkRef(options.ref);
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0)
    throw new RangeError('maxBytes must be a whole number');
  const dir = path.resolve(options.dir);
  const what = `commit ${short(commit)} from ${url}`;
  const run = startRun(url, options, `checking out ${what}`);
  try {
    run.signal.throwIfAborted();
    await mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new GitSourceError(`cannot check out ${what} into ${dir}: it already exists`);
      }
      throw err;
    }
    try {
      await checkoutInto(run, url, commit, ref, dir, maxBytes, what);
      return { commit, dir };
    } catch (err) {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      throw err;
    }
  } finally {
    await run.dispose();
  }
}

async function checkoutInto(
  run: Run,
  url: string,
  commit: string,
  ref: string | undefined,
  dir: string,
  maxBytes: number,
  what: string,
): Promise<void> {
  const gitDir = path.join(dir, '.git');
  const gitDirArg = `--git-dir=${gitDir}`;
  // `--template=`: no sample hooks or other template files, whatever the machine's git ships.
  const format = commit.length === 64 ? ['--object-format=sha256'] : [];
  await mustSucceed(run, ['init', '--quiet', '--template=', ...format, dir], `could not prepare ${dir}`);

  // The remote is given as a URL on each fetch, not as a configured remote: nothing of it is
  // stored, and `--end-of-options` keeps the URL and commit from ever being read as options.
  const fetchArgs = [
    gitDirArg,
    'fetch',
    '--depth=1',
    '--no-tags',
    '--no-recurse-submodules',
    '--end-of-options',
  ];
  const byId = await git(run, [...fetchArgs, url, commit]);
  if (byId.code !== 0) {
    const reason = lastLine(run, byId);
    if (ref === undefined) throw new GitSourceError(`could not fetch ${what}: ${reason}`);
    const byRef = await git(run, [...fetchArgs, url, ref]);
    if (byRef.code !== 0) {
      throw new GitSourceError(
        `could not fetch ${what}: ${reason}; fetching ref ${ref} failed too: ${lastLine(run, byRef)}`,
      );
    }
  }
  const fetched = await revParse(run, gitDirArg, 'FETCH_HEAD^{commit}', what);
  if (fetched !== commit) {
    throw new GitSourceError(
      byId.code === 0
        ? `fetching ${what} gave commit ${short(fetched)} instead`
        : `could not fetch ${what} by its id, and the ref moved on: ${ref} now points at ${short(fetched)}`,
    );
  }

  // Adding up blob sizes before checkout refuses an oversized tree before it is written (a
  // repository of a few KiB can hold a highly compressible blob of many GiB). The walk after
  // checkout stays the authority: `.gitattributes` eol conversion can make files grow.
  const declared = await treeSize(run, gitDirArg, commit, what);
  if (declared > maxBytes) {
    throw new GitSourceError(`${what} holds ${declared} bytes of files, more than the limit of ${maxBytes}`);
  }

  await mustSucceed(
    run,
    [gitDirArg, `--work-tree=${dir}`, 'checkout', '--quiet', '--detach', '--no-recurse-submodules', commit],
    `could not check out ${what}`,
  );
  const head = await revParse(run, gitDirArg, 'HEAD', what);
  if (head !== commit) throw new GitSourceError(`checking out ${what} left HEAD at ${short(head)}`);

  // Only the tree is kept: whoever uses the folder later (a template reader, `docker build`) must
  // not find a repository there, and no later git command may run in it with its config or
  // objects. The tree itself cannot hold a `.git` (git refuses to check one out).
  await rm(gitDir, { recursive: true, force: true, maxRetries: 3 });
  await inspectTree(dir, maxBytes, run.signal, what);
}

/** `git rev-parse --verify` of a name we choose (never a hostile one), as a lower-case id. */
async function revParse(run: Run, gitDirArg: string, name: string, what: string): Promise<string> {
  const out = await mustSucceed(run, [gitDirArg, 'rev-parse', '--verify', name], `could not read ${what}`);
  return out.stdout.trim().toLowerCase();
}

/** Total size of the blobs in `commit`'s tree (files and link targets), streamed from `git ls-tree`. */
async function treeSize(run: Run, gitDirArg: string, commit: string, what: string): Promise<number> {
  let total = 0;
  const records = new NulRecords((record) => {
    // `<mode> SP <type> SP <id> SP <size, padded> TAB <path>`; gitlinks (submodules) have size `-`.
    const meta = record.subarray(0, Math.max(record.indexOf(9), 0)).toString('latin1');
    const [, type, , size] = meta.trim().split(/ +/);
    if (type === 'blob') total += Number(size);
  });
  const result = await git(
    run,
    [gitDirArg, 'ls-tree', '-r', '-z', '--long', '--full-tree', commit],
    (chunk) => records.push(chunk),
  );
  if (result.code !== 0)
    throw new GitSourceError(`could not list the files of ${what}: ${lastLine(run, result)}`);
  records.end();
  return total;
}

/**
 * Walks the checked-out tree with `lstat` (links are never followed): adds up the size of files
 * and links, and refuses a symbolic link that could lead outside the tree (so nothing later, a
 * template reader or `docker build`, can be tricked into reading a host file) and anything that
 * is not a file, folder or link.
 */
async function inspectTree(root: string, maxBytes: number, signal: AbortSignal, what: string): Promise<void> {
  let total = 0;
  const folders = [''];
  while (folders.length > 0) {
    const folder = folders.pop()!;
    const names = (await readdir(folder === '' ? root : path.join(root, folder))).sort();
    for (const name of names) {
      signal.throwIfAborted();
      const rel = folder === '' ? name : `${folder}/${name}`;
      const abs = path.join(root, rel);
      const info: Stats = await lstat(abs);
      if (info.isDirectory()) {
        folders.push(rel);
        continue;
      }
      if (info.isSymbolicLink()) {
        const why = unsafeLinkTarget(rel, await readlink(abs));
        if (why !== undefined) {
          throw new GitSourceError(`${what} has a symbolic link "${printable(rel)}" that is refused: ${why}`);
        }
      } else if (!info.isFile()) {
        throw new GitSourceError(
          `${what} has "${printable(rel)}", which is not a file, folder or symbolic link`,
        );
      }
      total += info.size;
      if (total > maxBytes) {
        throw new GitSourceError(`the checkout of ${what} holds more than the limit of ${maxBytes} bytes`);
      }
    }
  }
  signal.throwIfAborted();
}

/**
 * Paths changed between two commits (for "only build when these paths changed" filters).
 * Shallow: fetches both commits with depth 1 into a temporary bare repo and diffs their trees.
 *
 * The temporary repository is made in a new folder inside `tmpDir` (created if missing) and
 * removed however this ends. Paths are relative POSIX paths, sorted, each once; a renamed file is
 * listed under both its old and its new name (a filter on either should match). The comparison is
 * tree against tree, not against a merge base: for a pull request pass the base branch's commit
 * the head was compared with. Same hardening, timeout (default 5 minutes) and cancellation as
 * {@link checkoutCommit}.
 */
export async function changedPaths(options: {
  repoUrl: string;
  base: string;
  head: string;
  token?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  tmpDir: string;
}): Promise<string[]> {
  const url = checkRepoUrl(options.repoUrl);
  const base = checkCommit(options.base, 'base commit');
  const head = checkCommit(options.head, 'head commit');
  if (base.length !== head.length) {
    throw new GitSourceError('the base and head commits use different hash functions (SHA-1 and SHA-256)');
  }
  const what = `the changes between commits ${short(base)} and ${short(head)} from ${url}`;
  const run = startRun(url, options, `listing ${what}`);
  let scratch: string | undefined;
  try {
    run.signal.throwIfAborted();
    await mkdir(options.tmpDir, { recursive: true, mode: 0o700 });
    scratch = await mkdtemp(path.join(path.resolve(options.tmpDir), 'mayfly-git-diff-'));
    const gitDir = path.join(scratch, 'repo.git');
    const gitDirArg = `--git-dir=${gitDir}`;
    const format = base.length === 64 ? ['--object-format=sha256'] : [];
    await mustSucceed(
      run,
      ['init', '--quiet', '--bare', '--template=', ...format, gitDir],
      'could not prepare a temporary repository',
    );
    const wanted = base === head ? [head] : [base, head];
    await mustSucceed(
      run,
      [
        gitDirArg,
        'fetch',
        '--depth=1',
        // Trees only: names are compared, never contents, so a huge commit costs little to list.
        '--filter=blob:none',
        '--no-tags',
        '--no-recurse-submodules',
        '--end-of-options',
        url,
        ...wanted,
      ],
      `could not fetch ${what}`,
    );
    if (base === head) return [];
    const paths = new Set<string>();
    let bytes = 0;
    const records = new NulRecords((record) => {
      bytes += record.length;
      if (bytes > MAX_CHANGED_PATHS_BYTES) {
        throw new GitSourceError(`${what} name more than ${MAX_CHANGED_PATHS_BYTES} bytes of paths`);
      }
      paths.add(record.toString('utf8'));
    });
    // Both commits were fetched with depth 1, so their trees (all a tree diff needs) are here.
    const diff = await git(
      run,
      [gitDirArg, 'diff-tree', '-r', '-z', '--no-renames', '--name-only', '--no-ext-diff', base, head],
      (chunk) => records.push(chunk),
    );
    if (diff.code !== 0) throw new GitSourceError(`could not compare ${what}: ${lastLine(run, diff)}`);
    records.end();
    return [...paths].sort();
  } finally {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true, maxRetries: 3 });
    await run.dispose();
  }
}

/** One operation's git runs: their environment, and the signal that ends them (timeout or caller). */
interface Run {
  env: NodeJS.ProcessEnv;
  /** Empty folder of this run: git's HOME and working folder. */
  home: Promise<string>;
  signal: AbortSignal;
  /** Removes secrets from text that may reach a message. */
  redact: (text: string) => string;
  dispose: () => Promise<void>;
}

/**
 * Settings on every git command line. `-c` wins over any config file, and the repository config
 * that could be read is only what `git init` wrote here: a remote's config never comes through a
 * fetch.
 */
const HARDENING = [
  // Only transports Mayfly accepts; no `ext::`/`fd::` helpers, no plain http or git://, also for
  // anything git would reach on its own (redirects, submodules, alternates).
  'protocol.allow=never',
  'protocol.https.allow=always',
  'protocol.ssh.allow=always',
  'protocol.file.allow=always',
  // No hook of any kind runs, wherever a repository or template would put one.
  'core.hooksPath=/dev/null',
  'core.fsmonitor=false',
  // Links are checked out as links so the walk can see and judge them (as files they would
  // silently change the tree a template's build sees).
  'core.symlinks=true',
  // Refuse paths that mean `.git` on other file systems too (`.GIT`, `git~1`, `.git<U+200C>`).
  'core.protectNTFS=true',
  'core.protectHFS=true',
  // Submodule URLs and update commands come from the hostile `.gitmodules`: never follow them.
  'submodule.recurse=false',
  'fetch.recurseSubmodules=false',
  // No credential helper can be asked (the token is given explicitly, see `startRun`).
  'credential.helper=',
  // No background or follow-up work in a folder that is about to be removed.
  'gc.auto=0',
  'maintenance.auto=false',
  'fetch.writeCommitGraph=false',
  'init.defaultBranch=main',
  'advice.detachedHead=false',
].flatMap((setting) => ['-c', setting]);

function startRun(
  url: string,
  options: { token?: string; signal?: AbortSignal; timeoutMs?: number },
  doing: string,
): Run {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new RangeError('timeoutMs must be positive');
  const token = options.token === '' ? undefined : options.token;
  if (token !== undefined) checkToken(token);
  const https = url.toLowerCase().startsWith('https://');
  const header =
    token === undefined ? undefined : `Basic ${Buffer.from(`${TOKEN_USER}:${token}`).toString('base64')}`;
  const secrets = [token, header?.slice('Basic '.length)].filter((s): s is string => s !== undefined);

  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) onAbort();
  else options.signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(
    () => controller.abort(new GitSourceError(`${doing} took longer than ${formatMs(timeoutMs)}`)),
    timeoutMs,
  );

  // HOME is an empty folder of our own: git still reads `~/.config/git/attributes` and `ignore`
  // when GIT_CONFIG_GLOBAL points elsewhere. ssh reads the account's own ~/.ssh (keys, known
  // hosts) from the password database, not from HOME, so deploy keys keep working.
  const home = mkdtemp(path.join(os.tmpdir(), 'mayfly-git-home-'));
  home.catch(() => {}); // awaited by the first git run; an unheard rejection must not crash
  const env: NodeJS.ProcessEnv = {
    // Built from nothing: no GIT_DIR, GIT_CONFIG_PARAMETERS, GIT_EXEC_PATH, LD_PRELOAD… of the server.
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    LC_ALL: 'C', // messages in English, as the error messages quote them
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0', // fail instead of asking for a user name or password
    // Also the list git obeys over any protocol.* config, should a config file ever be read.
    GIT_ALLOW_PROTOCOL: 'https:ssh:file',
    // No prompt, no agent forwarding: a host key is recorded on first use, a changed one refused.
    GIT_SSH_COMMAND: 'ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30 -a -x',
    GIT_SSH_VARIANT: 'ssh',
  };
  // An agent holding the deploy key is the operator's; it is only of use for ssh URLs.
  if (!https && process.env.SSH_AUTH_SOCK) env.SSH_AUTH_SOCK = process.env.SSH_AUTH_SOCK;
  if (header !== undefined && https) {
    // Through the environment, so the token is never in argv (which every user of the machine can
    // read in /proc) nor in a URL git might print. Redirects are not followed with a token: git
    // would send this header on to wherever the redirect leads.
    env.GIT_CONFIG_COUNT = '2';
    env.GIT_CONFIG_KEY_0 = 'http.extraHeader';
    env.GIT_CONFIG_VALUE_0 = `Authorization: ${header}`;
    env.GIT_CONFIG_KEY_1 = 'http.followRedirects';
    env.GIT_CONFIG_VALUE_1 = 'false';
  }
  return {
    env,
    home,
    signal: controller.signal,
    redact: (text) => secrets.reduce((out, secret) => out.split(secret).join('***'), text),
    dispose: async () => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      const folder = await home.catch(() => undefined);
      if (folder !== undefined) await rm(folder, { recursive: true, force: true });
    },
  };
}

/** How one git command ended. Output is only the last {@link OUTPUT_TAIL_BYTES} of each stream. */
interface Outcome {
  code: number | null;
  killedBy: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs git (no shell) in its own process group with {@link HARDENING}, stdin closed and output
 * bounded. Resolves with the outcome whatever the exit code; rejects with the run signal's reason
 * once it aborts (after killing the whole group: git's helpers such as ssh or git-remote-https
 * included), or with the error `onStdout` threw.
 */
async function git(run: Run, args: string[], onStdout?: (chunk: Buffer) => void): Promise<Outcome> {
  const cwd = await run.home;
  run.signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...HARDENING, ...args], {
      cwd,
      env: run.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // a process group of its own, so a kill reaches everything git started
    });
    const stdout = new Tail(OUTPUT_TAIL_BYTES);
    const stderr = new Tail(OUTPUT_TAIL_BYTES);
    let failure: { error: unknown } | undefined;
    let closed = false;
    const killGroup = () => {
      // Until 'close', git or a helper of its group may still run, even when git itself has exited.
      if (child.pid === undefined || closed) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    run.signal.addEventListener('abort', killGroup, { once: true });
    child.stdout.on('data', (chunk: Buffer) => {
      if (failure !== undefined) return;
      if (onStdout === undefined) {
        stdout.push(chunk);
        return;
      }
      try {
        onStdout(chunk);
      } catch (error) {
        failure = { error };
        killGroup();
      }
    });
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (error: NodeJS.ErrnoException) => {
      failure ??= {
        error:
          error.code === 'ENOENT'
            ? new GitSourceError('git is not installed (not found on PATH)')
            : new GitSourceError(`could not run git: ${error.message}`),
      };
      // A git that never started may not report 'close'.
      if (child.pid === undefined) finish();
    });
    const finish = (code: number | null = null, killedBy: NodeJS.Signals | null = null) => {
      if (closed) return;
      closed = true;
      run.signal.removeEventListener('abort', killGroup);
      if (run.signal.aborted) reject(run.signal.reason);
      else if (failure !== undefined) reject(failure.error);
      else resolve({ code, killedBy, stdout: stdout.text(), stderr: stderr.text() });
    };
    child.on('close', finish);
  });
}

/** Runs git and throws a GitSourceError `<failing>: <git's last line>` unless it exits with 0. */
async function mustSucceed(run: Run, args: string[], failing: string): Promise<Outcome> {
  const outcome = await git(run, args);
  if (outcome.code !== 0) throw new GitSourceError(`${failing}: ${lastLine(run, outcome)}`);
  return outcome;
}

/** Lines git adds after any transport failure; the line before them says what failed. */
const GENERIC_GIT_LINES = [
  'Could not read from remote repository.',
  'Please make sure you have the correct access rights',
  'and the repository exists.',
];

/**
 * What git said last, for a message: its last `fatal:`/`error:` line, else its last line, made
 * printable (a hostile server's `remote:` lines may carry terminal escapes) and without secrets.
 */
function lastLine(run: Run, outcome: Outcome): string {
  const lines = run
    .redact(outcome.stderr)
    .split(/\r?\n|\r/)
    .map((line) => printable(line.trim()))
    .filter((line) => line !== '' && !GENERIC_GIT_LINES.some((generic) => line.includes(generic)));
  const line = lines.findLast((l) => /^(fatal|error):/.test(l)) ?? lines.at(-1);
  if (line === undefined) {
    return outcome.killedBy !== null
      ? `git was killed by ${outcome.killedBy}`
      : `git exited with ${outcome.code}`;
  }
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

/** The last `limit` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = [];
  private length = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    while (this.length - this.chunks[0]!.length >= this.limit) this.length -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
}

/** Splits a stream of NUL-terminated records (git's `-z` output) without holding more than one. */
class NulRecords {
  private partial: Buffer[] = [];
  private partialLength = 0;
  constructor(private readonly onRecord: (record: Buffer) => void) {}
  push(chunk: Buffer): void {
    let start = 0;
    for (let nul = chunk.indexOf(0, start); nul !== -1; nul = chunk.indexOf(0, start)) {
      const piece = chunk.subarray(start, nul);
      const record = this.partialLength === 0 ? piece : Buffer.concat([...this.partial, piece]);
      this.partial = [];
      this.partialLength = 0;
      this.onRecord(record);
      start = nul + 1;
    }
    if (start < chunk.length) {
      this.partial.push(chunk.subarray(start));
      this.partialLength += chunk.length - start;
      if (this.partialLength > MAX_RECORD_BYTES) {
        throw new GitSourceError(`git listed an entry longer than ${MAX_RECORD_BYTES} bytes`);
      }
    }
  }
  /** The output ended: a record without its NUL means git's output was cut. */
  end(): void {
    if (this.partialLength > 0) throw new GitSourceError('git output ended in the middle of an entry');
  }
}

function short(commit: string): string {
  return commit.slice(0, 12);
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

/** Control characters (terminal escapes from a hostile server or path) shown as `\xNN`. */
function printable(text: string): string {
  let out = '';
  for (const c of text) {
    const code = c.charCodeAt(0);
    out += code < 0x20 || (code >= 0x7f && code <= 0x9f) ? `\\x${code.toString(16).padStart(2, '0')}` : c;
  }
  return out;
}

/** Space or an ASCII control character (written without a regex: the linter rightly frowns on those). */
function hasControlOrSpace(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code <= 0x20 || code === 0x7f) return true;
  }
  return false;
}
