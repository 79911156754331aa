/**
 * Checking out commits of hostile repositories with the real git: local bare repositories made
 * here (file:// URLs), a `git` test double on PATH where a remote must misbehave (refuse fetching
 * by id, hang), and a local https server for the token. No network.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changedPaths, checkoutCommit, checkRepoUrl, GitSourceError } from './git-checkout.js';

let root: string;
let dirs = 0;
/** A path for a checkout that does not exist yet (its parent does). */
const freshDir = () => path.join(root, 'checkouts', `c${++dirs}`);

/** The test's own git: no config of this machine, fixed author. */
const TEST_GIT_ENV = {
  PATH: process.env.PATH,
  HOME: os.tmpdir(),
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.com',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.com',
};
const git = (cwd: string, args: string[], input?: string) =>
  execFileSync('git', args, { cwd, env: TEST_GIT_ENV, encoding: 'utf8', input, stdio: 'pipe' });
const REAL_GIT = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();

type Content = string | null | { link: string };

/** A bare repository (the remote) and a working clone that commits and pushes to it. */
function newRepo(name: string, objectFormat: 'sha1' | 'sha256' = 'sha1') {
  const bare = path.join(root, `${name}.git`);
  const work = path.join(root, `${name}-work`);
  git(root, ['init', '-q', '--bare', `--object-format=${objectFormat}`, bare]);
  git(root, ['init', '-q', '-b', 'main', `--object-format=${objectFormat}`, work]);
  return {
    bare,
    work,
    url: `file://${bare}`,
    /** Applies `files` (null removes, `{link}` makes a symbolic link), commits, pushes to `branch`. */
    commit(files: Record<string, Content>, branch = 'main'): string {
      for (const [name, content] of Object.entries(files)) {
        const file = path.join(work, name);
        rmSync(file, { force: true, recursive: true });
        if (content === null) continue;
        mkdirSync(path.dirname(file), { recursive: true });
        if (typeof content === 'string') writeFileSync(file, content);
        else symlinkSync(content.link, file);
      }
      git(work, ['add', '-A']);
      git(work, ['commit', '-q', '--allow-empty', '-m', `commit on ${branch}`]);
      return this.push(git(work, ['rev-parse', 'HEAD']).trim(), `refs/heads/${branch}`);
    },
    push(commit: string, ref: string): string {
      git(work, ['push', '-q', '--force', bare, `${commit}:${ref}`]);
      return commit;
    },
  };
}

/**
 * Runs `fn` with a `git` first on PATH that runs `script` (sh) and then the real git with
 * `extraArgs` in front of the caller's: a remote that misbehaves without a network.
 */
async function withGitDouble<T>(script: string, fn: () => Promise<T>, extraArgs = ''): Promise<T> {
  const bin = mkdtempSync(path.join(root, 'bin-'));
  writeFileSync(path.join(bin, 'git'), `#!/bin/sh\n${script}\nexec '${REAL_GIT}' ${extraArgs} "$@"\n`, {
    mode: 0o755,
  });
  const saved = process.env.PATH;
  process.env.PATH = `${bin}:${saved}`;
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

/** A git double whose fetch hangs in a grandchild (sleep), whose pid goes to `pidFile`. */
const hangingFetch = (pidFile: string) =>
  `case " $* " in *" fetch "*) sleep 30 & echo $! > '${pidFile}.tmp'; mv '${pidFile}.tmp' '${pidFile}'; wait; exit 1;; esac`;

async function waitFor(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Gone, or a zombie nobody has reaped yet (it runs no more either way). */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Every path under `dir` (links not followed), sorted. */
async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map((e) => e.split(path.sep).join('/')).sort();
}

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'mayfly-git-checkout-test-'));
  mkdirSync(path.join(root, 'checkouts'));
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('checkRepoUrl', () => {
  it.each([
    ['https://github.com/owner/repo.git', 'https://github.com/owner/repo.git'],
    ['  https://github.com/owner/repo\n', 'https://github.com/owner/repo'],
    ['https://git.example.com:8443/group/sub/repo.git', 'https://git.example.com:8443/group/sub/repo.git'],
    ['https://[::1]:8443/repo.git', 'https://[::1]:8443/repo.git'],
    ['ssh://git@github.com:22/owner/repo.git', 'ssh://git@github.com:22/owner/repo.git'],
    ['ssh://github.com/owner/repo', 'ssh://github.com/owner/repo'],
    ['git@github.com:owner/repo.git', 'git@github.com:owner/repo.git'],
    ['github.com:owner/repo', 'github.com:owner/repo'],
    ['file:///srv/git/repo.git', 'file:///srv/git/repo.git'],
  ])('accepts %j', (url, normalised) => {
    expect(checkRepoUrl(url)).toBe(normalised);
  });

  it.each([
    ['ext::sh -c touch% /tmp/pwned', /remote helper "ext::"/],
    ['ext::sh', /remote helper "ext::"/],
    ['fd::17', /remote helper "fd::"/],
    ['-oProxyCommand=touch /tmp/pwned', /starts with "-"/],
    ['-oProxyCommand=true', /starts with "-"/],
    ['--upload-pack=touch', /starts with "-"/],
    ['ssh://-oProxyCommand=true/repo', /not a host name/],
    ['ssh://-oProxyCommand=true@host/repo', /not a plain name/],
    ['-oProxyCommand=x@host:repo', /starts with "-"/],
    ['git@-oProxyCommand=x:repo', /not a host name/],
    ['git@host:-repo', /path starts with "-"/],
    ['https://u:p@host/x', /credentials/],
    ['https://token@host/x', /credentials/],
    ['ssh://git:secret@host/x', /password/],
    ['ftp://host/repo.git', /scheme "ftp"/],
    ['http://host/repo.git', /neither authenticated nor encrypted/],
    ['git://host/repo.git', /neither authenticated nor encrypted/],
    ['repo.git', /local paths/],
    ['../repo.git', /local paths/],
    ['/srv/git/repo.git', /local paths/],
    ['file://relative', /absolute path/],
    ['file://host/srv/repo.git', /absolute path/],
    ['file:///', /no repository path/],
    ['https://host', /no repository path/],
    ['https://host:99999/x', /out of range/],
    ['https://ho_st/x', /not a host name/],
    ['https://exämple.com/x', /non-ASCII/],
    ['', /empty/],
  ])('refuses %j', (url, reason) => {
    let error: unknown;
    try {
      checkRepoUrl(url);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(GitSourceError);
    expect((error as Error).name).toBe('GitSourceError');
    expect((error as Error).message).toMatch(reason);
  });

  it('never repeats credentials it refuses', () => {
    expect(() => checkRepoUrl('https://alice:s3cr3t-pw@host/x')).toThrow(/https:\/\/\*\*\*@host\/x/);
    expect(() => checkRepoUrl('https://alice:s3cr3t-pw@host/x')).not.toThrow(/s3cr3t/);
  });
});

describe('checkoutCommit', () => {
  it('checks out exactly the commit asked for, not the tip the branch moved on to, without .git', async () => {
    const repo = newRepo('exact');
    const first = repo.commit({
      'README.md': 'one\n',
      'src/app.js': 'console.log(1);\n',
      a: { link: 'b/c' },
    });
    repo.commit({ 'README.md': 'two\n', 'src/new.js': 'new\n' });
    const dir = freshDir();

    const result = await checkoutCommit({ repoUrl: repo.url, commit: first.toUpperCase(), dir });

    expect(result).toEqual({ commit: first, dir });
    expect(await listTree(dir)).toEqual(['README.md', 'a', 'src', 'src/app.js']);
    expect(await readFile(path.join(dir, 'README.md'), 'utf8')).toBe('one\n');
    // An in-tree link (even a dangling one) is kept as it is.
    expect(await readlink(path.join(dir, 'a'))).toBe('b/c');
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });

  it('checks out a commit of a SHA-256 repository (64 hex digits)', async () => {
    const repo = newRepo('sha256', 'sha256');
    const commit = repo.commit({ 'a.txt': 'sha256\n' });
    expect(commit).toMatch(/^[0-9a-f]{64}$/);
    const dir = freshDir();
    expect(await checkoutCommit({ repoUrl: repo.url, commit, dir })).toEqual({ commit, dir });
    expect(await readFile(path.join(dir, 'a.txt'), 'utf8')).toBe('sha256\n');
  });

  it('keeps an in-tree link whose target exists, and links that climb no higher than their folder', async () => {
    const repo = newRepo('links-ok');
    const commit = repo.commit({
      'b/c': 'target\n',
      a: { link: 'b/c' },
      'b/up': { link: '../b/c' },
      'b/self': { link: '.' },
    });
    const dir = freshDir();
    await checkoutCommit({ repoUrl: repo.url, commit, dir });
    expect(await readFile(path.join(dir, 'a'), 'utf8')).toBe('target\n');
    expect((await lstat(path.join(dir, 'b/up'))).isSymbolicLink()).toBe(true);
  });

  it('refuses a commit the remote does not have, and removes the folder', async () => {
    const repo = newRepo('missing');
    repo.commit({ 'a.txt': 'a' });
    const dir = freshDir();
    const error = await rejection(checkoutCommit({ repoUrl: repo.url, commit: 'deadbeef'.repeat(5), dir }));
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(
      new RegExp(`^could not fetch commit deadbeefdead from ${repo.url}: (fatal|error): .*deadbeef`),
    );
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses a folder that already exists and leaves it alone', async () => {
    const repo = newRepo('exists');
    const commit = repo.commit({ 'a.txt': 'a' });
    const dir = freshDir();
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'mine'), 'keep');
    await expect(checkoutCommit({ repoUrl: repo.url, commit, dir })).rejects.toThrow(/already exists/);
    expect(readFileSync(path.join(dir, 'mine'), 'utf8')).toBe('keep');
  });

  it.each(['abc1234', 'main', 'HEAD', 'x'.repeat(40), `${'a'.repeat(40)}\n`, `-${'a'.repeat(39)}`])(
    'refuses the commit %j before running anything',
    async (commit) => {
      const dir = freshDir();
      const error = await rejection(checkoutCommit({ repoUrl: 'file:///nonexistent/repo.git', commit, dir }));
      expect(error).toBeInstanceOf(GitSourceError);
      expect(error.message).toMatch(/not a full commit id/);
      expect(existsSync(dir)).toBe(false);
    },
  );

  it.each([
    '-x',
    '+refs/heads/main',
    'refs/heads/a..b',
    'refs/heads/a:b',
    'refs/heads/x.lock',
    'a b',
    'refs/.x/y',
    '',
  ])('refuses the ref %j', async (ref) => {
    const dir = freshDir();
    const commit = 'a'.repeat(40);
    await expect(checkoutCommit({ repoUrl: 'file:///nonexistent/r.git', commit, ref, dir })).rejects.toThrow(
      GitSourceError,
    );
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses a bad URL without running git', async () => {
    const marker = path.join(root, 'pwned-by-url');
    for (const repoUrl of [
      `ext::sh -c touch% ${marker}`,
      `ext::touch%${marker}`,
      `-oProxyCommand=touch ${marker}`,
    ]) {
      const dir = freshDir();
      await expect(checkoutCommit({ repoUrl, commit: 'a'.repeat(40), dir })).rejects.toThrow(GitSourceError);
      expect(existsSync(dir)).toBe(false);
    }
    expect(existsSync(marker)).toBe(false);
  });

  it.each([
    ['an absolute path', { link: '/etc/passwd' }, 'passwd'],
    ['a path above the tree', { link: '../../x' }, 'sub/up'],
    ['a climb after a name', { link: 'b/../../x' }, 'sub/up'],
  ])('refuses a symbolic link to %s, naming it, and removes the folder', async (_, link, name) => {
    const repo = newRepo(`link-${name.replace('/', '-')}-${dirs}`);
    const commit = repo.commit({ 'ok.txt': 'fine', [name]: link });
    const dir = freshDir();
    const error = await rejection(checkoutCommit({ repoUrl: repo.url, commit, dir }));
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toContain(`symbolic link "${name}"`);
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses a tree over the size limit before writing it, and removes the folder', async () => {
    const repo = newRepo('big');
    const commit = repo.commit({ 'small.txt': 'x', 'big.bin': 'y'.repeat(4096) });
    const dir = freshDir();
    const error = await rejection(checkoutCommit({ repoUrl: repo.url, commit, dir, maxBytes: 1000 }));
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(/holds 4097 bytes of files, more than the limit of 1000/);
    expect(existsSync(dir)).toBe(false);
    // The same tree within the limit is fine.
    await checkoutCommit({ repoUrl: repo.url, commit, dir, maxBytes: 4097 });
  });

  it('measures the tree as written: files that grow at checkout (eol=crlf) count at their written size', async () => {
    const repo = newRepo('grows');
    const attributes = '*.txt text eol=crlf\n';
    const commit = repo.commit({ '.gitattributes': attributes, 'lines.txt': '\n'.repeat(600) });
    const dir = freshDir();
    const error = await rejection(checkoutCommit({ repoUrl: repo.url, commit, dir, maxBytes: 1000 }));
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(/the checkout of commit .* holds more than the limit of 1000 bytes/);
    expect(existsSync(dir)).toBe(false);
  });

  it('runs nothing the remote or the tree asks for: hooks, fsmonitor, filters, submodules', async () => {
    const markers = path.join(root, 'markers');
    mkdirSync(markers);
    const touch = (name: string) => `touch ${path.join(markers, name)}`;
    const repo = newRepo('hostile');
    // The tree: a filter driver by name, and a submodule whose URL runs a command.
    const inner = newRepo('hostile-inner').commit({ 'x.txt': 'x' });
    git(repo.work, ['update-index', '--add', '--cacheinfo', `160000,${inner},sub`]);
    const commit = repo.commit({
      '.gitattributes': '* filter=evil\n',
      '.gitmodules': `[submodule "sub"]\n\tpath = sub\n\turl = ext::sh -c ${touch('submodule').replace(/ /g, '% ')}\n\tupdate = !${touch('update')}\n`,
      'a.txt': 'a\n',
    });
    // The remote's own config and hooks (upload-pack runs in it for file:// remotes), set after the
    // test's own push, which would run them.
    const hooks = path.join(root, 'hostile-hooks');
    mkdirSync(hooks);
    for (const hook of [
      'post-checkout',
      'post-merge',
      'reference-transaction',
      'post-index-change',
      'pre-push',
    ]) {
      writeFileSync(path.join(hooks, hook), `#!/bin/sh\n${touch(hook)}\n`, { mode: 0o755 });
      writeFileSync(path.join(repo.bare, 'hooks', hook), `#!/bin/sh\n${touch(`bare-${hook}`)}\n`, {
        mode: 0o755,
      });
    }
    git(repo.bare, ['config', 'core.hooksPath', hooks]);
    git(repo.bare, ['config', 'core.fsmonitor', touch('fsmonitor')]);
    git(repo.bare, ['config', 'filter.evil.smudge', touch('smudge')]);
    git(repo.bare, ['config', 'filter.evil.process', touch('process')]);
    git(repo.bare, ['config', 'uploadpack.packObjectsHook', touch('pack-objects-hook')]);
    const dir = freshDir();

    await checkoutCommit({ repoUrl: repo.url, commit, dir });

    expect(await readFile(path.join(dir, 'a.txt'), 'utf8')).toBe('a\n');
    // The submodule's commit is not fetched: at most an empty folder stands for it.
    expect(existsSync(path.join(dir, 'sub', 'x.txt'))).toBe(false);
    expect(await readdir(markers)).toEqual([]);
  });

  it('refuses a tree that carries a .git folder (a hook that would run later), and removes the folder', async () => {
    const marker = path.join(root, 'pwned-by-dotgit');
    const repo = newRepo('dotgit');
    repo.commit({ 'a.txt': 'a' });
    // Plain git refuses to commit a `.git` path; an attacker builds the tree by hand.
    const hookBlob = git(repo.work, ['hash-object', '-w', '--stdin'], `#!/bin/sh\ntouch ${marker}\n`).trim();
    const hooksTree = git(repo.work, ['mktree'], `100755 blob ${hookBlob}\tpost-checkout\n`).trim();
    const dotGitTree = git(repo.work, ['mktree'], `040000 tree ${hooksTree}\thooks\n`).trim();
    const top = git(
      repo.work,
      ['mktree'],
      `040000 tree ${dotGitTree}\t.git\n100644 blob ${hookBlob}\tok\n`,
    ).trim();
    const commit = repo.push(git(repo.work, ['commit-tree', '-m', 'evil', top]).trim(), 'refs/heads/evil');
    const dir = freshDir();

    const error = await rejection(checkoutCommit({ repoUrl: repo.url, commit, dir }));

    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(/could not check out commit .*\.git/);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(marker)).toBe(false);
  });

  it('fetches the ref when the server refuses to send the commit by id, and checks its tip', async () => {
    const repo = newRepo('by-ref');
    const commit = repo.commit({ 'a.txt': 'pr head\n' }, 'feature');
    repo.push(commit, 'refs/pull/7/head');
    // A server that answers like GitHub Enterprise or Bitbucket may to a want by id.
    const refuse = `case " $* " in *" fetch "*" ${commit} ") echo "error: Server does not allow request for unadvertised object ${commit}" >&2; exit 128;; esac`;
    const dir = freshDir();

    await withGitDouble(refuse, () =>
      checkoutCommit({ repoUrl: repo.url, commit, ref: 'refs/pull/7/head', dir }),
    );
    expect(await readFile(path.join(dir, 'a.txt'), 'utf8')).toBe('pr head\n');

    const without = freshDir();
    const error = await withGitDouble(refuse, () =>
      rejection(checkoutCommit({ repoUrl: repo.url, commit, dir: without })),
    );
    expect(error.message).toMatch(/could not fetch commit .*: error: Server does not allow request/);
    expect(existsSync(without)).toBe(false);
  });

  it('refuses a ref that moved on to another commit', async () => {
    const repo = newRepo('moved');
    repo.push(repo.commit({ 'a.txt': 'new\n' }), 'refs/pull/8/head');
    const dir = freshDir();
    const error = await rejection(
      checkoutCommit({ repoUrl: repo.url, commit: 'feedface'.repeat(5), ref: 'refs/pull/8/head', dir }),
    );
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(/the ref moved on: refs\/pull\/8\/head now points at [0-9a-f]{12}/);
    expect(existsSync(dir)).toBe(false);
  });

  it('rejects with the reason of a signal aborted right away, and removes the folder', async () => {
    const repo = newRepo('abort-now');
    const commit = repo.commit({ 'a.txt': 'a' });
    const dir = freshDir();
    const controller = new AbortController();
    const checkout = checkoutCommit({ repoUrl: repo.url, commit, dir, signal: controller.signal });
    controller.abort();
    const error = await rejection(checkout);
    expect(error.name).toBe('AbortError');
    expect(existsSync(dir)).toBe(false);
  });

  it('kills git and all it started when aborted mid-fetch, and removes the folder', async () => {
    const repo = newRepo('abort-mid');
    const commit = repo.commit({ 'a.txt': 'a' });
    const pidFile = path.join(root, 'abort-mid.pid');
    const dir = freshDir();
    const controller = new AbortController();
    const reason = new Error('the pull request was closed');

    const error = await withGitDouble(hangingFetch(pidFile), async () => {
      const checkout = checkoutCommit({ repoUrl: repo.url, commit, dir, signal: controller.signal });
      await waitFor(() => existsSync(pidFile), 'the fetch to start');
      expect(existsSync(dir)).toBe(true);
      controller.abort(reason);
      return rejection(checkout);
    });

    expect(error).toBe(reason);
    expect(existsSync(dir)).toBe(false);
    const sleeper = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => processGone(sleeper), 'the fetch helper to be killed', 2000);
  });

  it('kills git at the timeout with a GitSourceError, and removes the folder', async () => {
    const repo = newRepo('timeout');
    const commit = repo.commit({ 'a.txt': 'a' });
    const pidFile = path.join(root, 'timeout.pid');
    const dir = freshDir();
    const started = Date.now();

    const error = await withGitDouble(hangingFetch(pidFile), () =>
      rejection(checkoutCommit({ repoUrl: repo.url, commit, dir, timeoutMs: 500 })),
    );

    expect(Date.now() - started).toBeLessThan(5000);
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).toMatch(/checking out commit .* took longer than 500 ms/);
    expect(existsSync(dir)).toBe(false);
    const sleeper = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => processGone(sleeper), 'the fetch helper to be killed', 2000);
  });

  describe('with a token over https', () => {
    let certFile: string;
    let tls: { key: Buffer; cert: Buffer };
    const requests: { server: string; url: string; authorization?: string }[] = [];
    const servers: https.Server[] = [];

    /** A local https server that records requests and has no repository; `/moved/…` redirects to `redirectTo`. */
    async function server(name: string, redirectTo?: string): Promise<string> {
      const srv = https.createServer(tls, (req, res) => {
        requests.push({ server: name, url: req.url ?? '', authorization: req.headers.authorization });
        if (redirectTo !== undefined && req.url?.startsWith('/moved/')) {
          res.writeHead(302, { location: `${redirectTo}${req.url.slice('/moved'.length)}` }).end();
        } else {
          res.writeHead(404).end('no such repository');
        }
      });
      servers.push(srv);
      await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
      return `https://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    }

    beforeAll(() => {
      const folder = path.join(root, 'tls');
      mkdirSync(folder);
      certFile = path.join(folder, 'cert.pem');
      const keyFile = path.join(folder, 'key.pem');
      // A throwaway self-signed certificate; only the git double trusts it (http.sslCAInfo).
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          keyFile,
          '-out',
          certFile,
        ],
        { stdio: 'ignore' },
      );
      tls = { key: readFileSync(keyFile), cert: readFileSync(certFile) };
    });

    afterAll(async () => {
      await Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(resolve))));
    });

    it('sends it only in a header: never in argv or a message, and not after a redirect', async () => {
      const token = `ghs_${randomBytes(16).toString('hex')}`;
      const basic = Buffer.from(`x-access-token:${token}`).toString('base64');
      const other = await server('other');
      const origin = await server('origin', other);
      const argvLog = path.join(root, 'argv.log');
      const logArgv = `printf '%s\\n' "$@" >> '${argvLog}'`;

      for (const repoPath of ['/owner/repo.git', '/moved/owner/repo.git']) {
        const dir = freshDir();
        const error = await withGitDouble(
          logArgv,
          () =>
            rejection(
              checkoutCommit({ repoUrl: `${origin}${repoPath}`, commit: 'c'.repeat(40), dir, token }),
            ),
          `-c http.sslCAInfo='${certFile}'`,
        );
        expect(error).toBeInstanceOf(GitSourceError);
        expect(error.message).toMatch(
          /^could not fetch commit cccccccccccc from https:\/\/127\.0\.0\.1:\d+\/.*: fatal: /,
        );
        expect(error.message).not.toContain(token);
        expect(error.message).not.toContain(basic);
        expect(existsSync(dir)).toBe(false);
      }

      const seen = requests.filter((r) => r.server === 'origin');
      expect(seen.map((r) => r.url)).toEqual([
        '/owner/repo.git/info/refs?service=git-upload-pack',
        '/moved/owner/repo.git/info/refs?service=git-upload-pack',
      ]);
      for (const request of seen) expect(request.authorization).toBe(`Basic ${basic}`);
      // The redirect was not followed, so the other host never saw the token.
      expect(requests.filter((r) => r.server === 'other')).toEqual([]);
      const argv = readFileSync(argvLog, 'utf8');
      expect(argv).toContain('fetch');
      expect(argv).not.toContain(token);
      expect(argv).not.toContain(basic);
    });
  });

  it('refuses a token that could add a header line, without repeating it', async () => {
    const dir = freshDir();
    const token = 'abc\r\nX-Evil: 1';
    const error = await rejection(
      checkoutCommit({ repoUrl: 'https://host/r.git', commit: 'a'.repeat(40), dir, token }),
    );
    expect(error).toBeInstanceOf(GitSourceError);
    expect(error.message).not.toContain('abc');
    expect(existsSync(dir)).toBe(false);
  });
});

describe('changedPaths', () => {
  it('lists added, modified, deleted and renamed paths between two commits', async () => {
    const repo = newRepo('changes');
    const base = repo.commit({
      'a.txt': 'a\n',
      'b.txt': 'b\n',
      'c.txt': 'c is long enough to be seen as a rename\n',
      'dir/d.txt': 'd\n',
      'same.txt': 'same\n',
    });
    const head = repo.commit({
      'a.txt': 'a changed\n',
      'b.txt': null,
      'c.txt': null,
      'e.txt': 'c is long enough to be seen as a rename\n',
      'dir/f.txt': 'f\n',
    });
    const tmpDir = path.join(root, 'diff-tmp');

    expect(await changedPaths({ repoUrl: repo.url, base, head, tmpDir })).toEqual([
      'a.txt',
      'b.txt',
      'c.txt',
      'dir/f.txt',
      'e.txt',
    ]);
    expect(await changedPaths({ repoUrl: repo.url, base: head, head: base, tmpDir })).toHaveLength(5);
    expect(await changedPaths({ repoUrl: repo.url, base: head, head, tmpDir })).toEqual([]);
    // The temporary repositories are gone.
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('refuses an unknown commit, a bad URL and a short id', async () => {
    const repo = newRepo('changes-bad');
    const head = repo.commit({ 'a.txt': 'a' });
    const tmpDir = path.join(root, 'diff-tmp-bad');
    await expect(changedPaths({ repoUrl: repo.url, base: 'ab'.repeat(20), head, tmpDir })).rejects.toThrow(
      /could not fetch the changes between commits abababababab and [0-9a-f]{12} from file:/,
    );
    await expect(changedPaths({ repoUrl: 'ext::sh', base: head, head, tmpDir })).rejects.toThrow(
      GitSourceError,
    );
    await expect(changedPaths({ repoUrl: repo.url, base: 'abc', head, tmpDir })).rejects.toThrow(
      /base commit "abc" is not a full commit id/,
    );
    expect(await readdir(tmpDir)).toEqual([]);
  });
});
