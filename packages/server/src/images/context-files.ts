/**
 * What is sent to the image builder for a build context: the one place that decides it, used
 * both to pack the context for the Engine and to hash it for the image's content tag.
 *
 * The rules are the docker CLI's (`docker build` with the classic builder): `.dockerignore` of the
 * context root with Docker's matching (anchored at the root, `**`, `!` exceptions, comments,
 * cleaned paths), the Dockerfile and `.dockerignore` sent even when ignored, `.git` sent unless
 * ignored (the CLI has no special case for it), links sent as links, sockets left out.
 */
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { errorCode, packTree, readDockerignore, type TreeEntry, walkTree } from '../sources/file-tree.js';

/** One entry of a build context: relative POSIX path, type, mode, size, link target. */
export type ContextEntry = TreeEntry;

/**
 * The entries the docker CLI would send for `contextDir` with `dockerfile` (relative to the
 * context), in a deterministic order (depth first, names in byte order).
 *
 * Differences from the CLI, on purpose: fifos and devices are left out as sockets are (reading a
 * fifo could hang the build; the builder cannot use either), and a `.dockerignore` that is a link
 * leading outside the context is refused instead of followed.
 */
export async function listContextFiles(contextDir: string, dockerfile: string): Promise<ContextEntry[]> {
  const dockerfileRel = contextRelative(dockerfile);
  try {
    await lstat(path.join(contextDir, dockerfileRel));
  } catch (err) {
    if (errorCode(err) === 'ENOENT')
      throw new Error(`Dockerfile "${dockerfile}" not found in the build context`);
    throw err;
  }
  const rules = await readDockerignore(contextDir);
  // The daemon needs both even when ignored (it drops them itself); the CLI re-includes them so.
  if (rules.ignores('.dockerignore')) rules.keep('.dockerignore');
  if (rules.ignores(dockerfileRel)) rules.keep(dockerfileRel);
  return walkTree(contextDir, (rel, info) => {
    if (!info.isFile() && !info.isDirectory() && !info.isSymbolicLink()) return 'skip';
    if (!rules.ignores(rel)) return 'include';
    // An excluded folder is not sent, but an exception may re-include something inside it.
    return info.isDirectory() && rules.mayReincludeBelow(rel) ? 'descend' : 'skip';
  });
}

/**
 * An uncompressed tar of exactly `entries` (from {@link listContextFiles}), streamed: owner 0:0
 * and a fixed modification time, so equal content gives an equal tar. Fails if a listed file
 * changed (size, type, or swapped for a link) before it was read.
 */
export function packContext(contextDir: string, entries: readonly ContextEntry[]): Readable {
  return packTree(contextDir, entries);
}

/** The Dockerfile path as the CLI canonicalises it; one that leaves the context is refused. */
function contextRelative(dockerfile: string): string {
  const cleaned = path.posix.normalize(dockerfile);
  if (
    !dockerfile ||
    dockerfile.includes('\0') ||
    path.posix.isAbsolute(cleaned) ||
    cleaned === '..' ||
    cleaned.startsWith('../') ||
    cleaned === '.'
  ) {
    throw new Error(`Dockerfile "${dockerfile}" must be a file path inside the build context`);
  }
  return cleaned.replace(/\/$/, '');
}
