/**
 * Real git repositories for preview tests: a bare repository as the forge's copy, and a working
 * clone that commits and pushes — to branches, and to `refs/pull/<n>/head` as GitHub keeps every
 * pull request's head in the base repository.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface TestRepo {
  /** `file:///…/origin.git` */
  url: string;
  /** Writes `files` (path → content; null removes) on a fresh commit of `branch` and pushes it; returns the commit id. */
  commit(
    files: Record<string, string | null>,
    message: string,
    options?: { branch?: string; pullRequest?: number },
  ): Promise<string>;
  /** The commit a ref of the bare repository points at. */
  revParse(ref: string): string;
  remove(): Promise<void>;
}

const git = (cwd: string, ...args: string[]) =>
  execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: cwd,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_AUTHOR_NAME: 'Test',
      GIT_AUTHOR_EMAIL: 'test@example.com',
      GIT_COMMITTER_NAME: 'Test',
      GIT_COMMITTER_EMAIL: 'test@example.com',
    },
  }).trim();

export async function makeTestRepo(): Promise<TestRepo> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'mayfly-repo-'));
  const bare = path.join(root, 'origin.git');
  const work = path.join(root, 'work');
  git(root, 'init', '--quiet', '--bare', '--initial-branch=main', bare);
  git(root, 'init', '--quiet', '--initial-branch=main', work);
  git(work, 'remote', 'add', 'origin', bare);
  let current = 'main';
  return {
    url: `file://${bare}`,
    async commit(files, message, options = {}) {
      const branch = options.branch ?? 'main';
      if (branch !== current) {
        const exists = git(work, 'branch', '--list', branch) !== '';
        git(work, 'checkout', '--quiet', ...(exists ? [branch] : ['-b', branch, 'main']));
        current = branch;
      }
      for (const [name, content] of Object.entries(files)) {
        const file = path.join(work, name);
        if (content === null) await rm(file, { force: true });
        else {
          await mkdir(path.dirname(file), { recursive: true });
          await writeFile(file, content);
        }
      }
      git(work, 'add', '--all');
      git(work, 'commit', '--quiet', '--allow-empty', '-m', message);
      const sha = git(work, 'rev-parse', 'HEAD');
      git(work, 'push', '--quiet', '--force', 'origin', `HEAD:refs/heads/${branch}`);
      if (options.pullRequest !== undefined) {
        git(work, 'push', '--quiet', '--force', 'origin', `HEAD:refs/pull/${options.pullRequest}/head`);
      }
      return sha;
    },
    revParse: (ref) => git(bare, 'rev-parse', ref),
    remove: () => rm(root, { recursive: true, force: true }),
  };
}
