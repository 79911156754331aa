/**
 * The template bundle the CLI uploads: a gzip'd tar of the template's folder. Imported by the
 * CLI, so it depends on node and tar-stream only (through file-tree.ts).
 */
import type { Stats } from 'node:fs';
import { lstat, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, type Readable, Transform, type TransformCallback } from 'node:stream';
import { createGzip } from 'node:zlib';
import { describeType, errorCode, isInside, packTree, readDockerignore, walkTree } from './file-tree.js';
import { unsafeLinkTarget } from './link-target.js';

/** Options of {@link packBundle}. */
export interface PackBundleOptions {
  /**
   * Absolute paths of files or folders inside the folder that are sent even when `.dockerignore`
   * leaves them out: the template file and what it names (env files, Dockerfiles, build
   * contexts' own `.dockerignore`…). A folder brings everything below it (but `.git`).
   */
  forceInclude?: string[];
  /** Limit on the uncompressed tar; the stream fails once it is passed. */
  maxBytes: number;
}

/** A folder that cannot be bundled as it is; the message names the path and why. */
export class BundlePackError extends Error {
  override readonly name = 'BundlePackError';
}

/** Tar blocks: one header per entry, content padded to whole blocks, two zero blocks at the end. */
const BLOCK_BYTES = 512;
const END_OF_ARCHIVE_BYTES = 1024;

/**
 * Packs `dir` as a gzip'd tar for upload: what `dir/.dockerignore` leaves out is not sent (Docker's
 * rules), `.git` folders never are, `.dockerignore` at the root always is (so the server knows
 * what the builder must not receive), and `forceInclude` paths always are.
 *
 * Refused before anything is sent (a {@link BundlePackError} naming the path): a link whose
 * target resolves outside `dir` (or that the server would refuse, see link-target.ts), sockets,
 * fifos and devices, forced paths outside `dir`, and a folder whose files alone pass `maxBytes`.
 * The returned stream fails if the tar still passes `maxBytes` (files that grew meanwhile).
 */
export async function packBundle(dir: string, options: PackBundleOptions): Promise<Readable> {
  const root = path.resolve(dir);
  const realRoot = await realpath(root);
  const forced = await forcedPaths(root, realRoot, options.forceInclude ?? []);
  const forcedAncestors = new Set<string>();
  for (const rel of forced) {
    for (let parent = path.posix.dirname(rel); parent !== '.'; parent = path.posix.dirname(parent)) {
      forcedAncestors.add(parent);
    }
  }
  const rules = await readDockerignore(root);
  const isForced = (rel: string) => {
    for (let p = rel; p !== '.'; p = path.posix.dirname(p)) if (forced.has(p)) return true;
    return false;
  };

  const entries = await walkTree(root, async (rel, info) => {
    if (path.posix.basename(rel) === '.git') return 'skip';
    let decision: 'include' | 'skip' | 'descend' = 'include';
    if (rel !== '.dockerignore' && !isForced(rel) && rules.ignores(rel)) {
      // Folders above a forced path are sent (so it unpacks in place), but not their other content.
      if (info.isDirectory() && forcedAncestors.has(rel)) decision = 'include';
      else decision = info.isDirectory() && rules.mayReincludeBelow(rel) ? 'descend' : 'skip';
    }
    if (decision !== 'skip') await checkEntry(root, realRoot, rel, info);
    return decision;
  });

  // The tar's size, long-name headers aside: refused here, before a byte is uploaded.
  let tarBytes = END_OF_ARCHIVE_BYTES;
  for (const entry of entries) tarBytes += BLOCK_BYTES + Math.ceil(entry.size / BLOCK_BYTES) * BLOCK_BYTES;
  if (tarBytes > options.maxBytes) {
    throw new BundlePackError(
      `${root} makes a bundle of ${tarBytes} bytes (after .dockerignore), more than the limit of ${options.maxBytes}`,
    );
  }

  const limit = new ByteLimit(options.maxBytes, root);
  const gzip = createGzip();
  // pipeline destroys every stage with the first error, so the reader of `gzip` sees it.
  return pipeline(packTree(root, entries), limit, gzip, () => {});
}

/** Checks one entry that will be sent; throws a {@link BundlePackError} naming it otherwise. */
async function checkEntry(root: string, realRoot: string, rel: string, info: Stats): Promise<void> {
  const abs = path.join(root, rel);
  if (info.isFile() || info.isDirectory()) return;
  if (!info.isSymbolicLink()) {
    throw new BundlePackError(
      `${abs} is ${describeType(info)}; a bundle holds only files, folders and links`,
    );
  }
  const target = await readlink(abs);
  const unsafe = unsafeLinkTarget(rel, target);
  if (unsafe) throw new BundlePackError(`${abs} is a symbolic link the server would refuse: ${unsafe}`);
  // The lexical rule holds for the link itself; the host's links along the way must agree too.
  try {
    const real = await realpath(abs);
    if (!isInside(realRoot, real)) {
      throw new BundlePackError(`${abs} is a symbolic link that resolves outside ${root} (to ${real})`);
    }
  } catch (err) {
    if (err instanceof BundlePackError) throw err;
    // A dangling link is sent as it is: its target stays inside by the rule above.
    if (errorCode(err) !== 'ENOENT') {
      throw new BundlePackError(`${abs} is a symbolic link that cannot be resolved (${errorCode(err)})`);
    }
  }
}

/** The forced paths as relative POSIX paths; each must exist inside `root`. */
async function forcedPaths(root: string, realRoot: string, paths: string[]): Promise<Set<string>> {
  const forced = new Set<string>();
  const add = (rel: string, given: string) => {
    const posix = rel.split(path.sep).join('/');
    if (posix.split('/').includes('.git')) {
      throw new BundlePackError(`${given} is inside a .git folder, which a bundle never holds`);
    }
    forced.add(posix);
  };
  for (const given of paths) {
    if (!path.isAbsolute(given)) throw new BundlePackError(`${given} must be an absolute path`);
    const abs = path.resolve(given);
    const rel = path.relative(root, abs);
    if (!isInside(root, abs)) throw new BundlePackError(`${given} is outside ${root} and cannot be sent`);
    if (rel === '') continue;
    let info: Stats;
    try {
      info = await lstat(abs);
    } catch {
      throw new BundlePackError(`${given} does not exist`);
    }
    add(rel, given);
    // A forced link brings what it points at, or the server would find it dangling.
    if (info.isSymbolicLink()) {
      const real = await realpath(abs).catch(() => undefined);
      if (real !== undefined && isInside(realRoot, real) && real !== realRoot) {
        add(path.relative(realRoot, real), given);
      }
    }
  }
  return forced;
}

/** Passes bytes through and fails once more than `max` went by. */
class ByteLimit extends Transform {
  private seen = 0;
  constructor(
    private readonly max: number,
    private readonly root: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) {
      callback(
        new BundlePackError(
          `${this.root} grew past the bundle limit of ${this.max} bytes while it was packed`,
        ),
      );
      return;
    }
    callback(null, chunk);
  }
}
