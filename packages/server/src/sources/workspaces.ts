/**
 * The server's own work dir for templates. Layout under `root` (every folder 0700):
 *
 *   bundles/<id>/           an uploaded bundle, unpacked, waiting to be claimed (mtime: staged at)
 *   bundles/.tmp-<id>/      a bundle being unpacked
 *   envs/<envId>/src/       the environment's template folder (a claimed bundle)
 *   envs/<envId>/mounts/<k> private copies of its bind sources (see {@link Workspaces.prepareBindSources})
 *   envs/<envId>/claimed-bundle  which bundle became `src` (so a retried claim is answered)
 */

import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream, type Stats } from 'node:fs';
import {
  chmod,
  chown,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { type BundleLimits, unpackBundle } from './bundle-unpack.js';
import { byteOrder, describeType, errorCode, isInside } from './file-tree.js';

/** Options of {@link Workspaces}. */
export interface WorkspacesOptions {
  /** The work dir, `<dataDir>/work`. */
  root: string;
  limits: BundleLimits;
  /** A staged bundle not claimed within this time is gone. */
  bundleTtlMs: number;
}

/** A staged bundle. */
export interface StagedBundle {
  id: string;
  files: number;
  bytes: number;
  expiresAt: Date;
}

/** The bundle id is unknown, expired, already used, or not an id at all. */
export class BundleNotFoundError extends Error {
  override readonly name = 'BundleNotFoundError';
  constructor(readonly bundleId: string) {
    super(
      `bundle "${JSON.stringify(bundleId).slice(1, -1).slice(0, 80)}" not found (unknown, expired or already used)`,
    );
  }
}

/** A bind source the server will not copy; the message names it and says why. */
export class BindSourceError extends Error {
  override readonly name = 'BindSourceError';
}

/** Bundle ids are 32 lowercase hex digits (128 random bits). */
const BUNDLE_ID = /^[0-9a-f]{32}$/;
/** Environment ids as the store makes them; anything else never reaches the file system. */
const ENV_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const TMP_PREFIX = '.tmp-';
const TRASH_PREFIX = '.trash-';
const CHUNK_BYTES = 64 * 1024;

/** Template folders of environments, staged bundles, and private copies of bind sources. */
export class Workspaces {
  private readonly root: string;
  /** Bundles being unpacked by this process: {@link sweep} leaves their temp folders alone. */
  private readonly staging = new Set<string>();

  constructor(private readonly options: WorkspacesOptions) {
    this.root = path.resolve(options.root);
  }

  /** Unpacks an uploaded bundle (gzip'd or plain tar) to be claimed by one environment within the ttl. */
  async stageBundle(body: Readable): Promise<StagedBundle> {
    const id = randomBytes(16).toString('hex');
    const bundles = path.join(this.root, 'bundles');
    await mkdir(bundles, { recursive: true, mode: 0o700 });
    const temp = path.join(bundles, `${TMP_PREFIX}${id}`);
    this.staging.add(id);
    try {
      const { files, bytes } = await unpackBundle(body, temp, this.options.limits);
      // The folder's mtime is when it was staged: nothing writes to it until it is claimed.
      const now = new Date();
      await utimes(temp, now, now);
      await rename(temp, path.join(bundles, id));
      return { id, files, bytes, expiresAt: new Date(now.getTime() + this.options.bundleTtlMs) };
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    } finally {
      this.staging.delete(id);
    }
  }

  /**
   * Makes the staged bundle the template folder of `envId` (one atomic rename) and returns its
   * path. A bundle is used once; an unknown, expired or malformed id is a {@link BundleNotFoundError}.
   * Claiming again the bundle an environment already got (a retry after a crash) returns the same path.
   */
  async claimBundle(bundleId: string, envId: string): Promise<string> {
    if (typeof bundleId !== 'string' || !BUNDLE_ID.test(bundleId))
      throw new BundleNotFoundError(String(bundleId));
    const envDir = this.envDir(envId);
    const src = path.join(envDir, 'src');
    const marker = path.join(envDir, 'claimed-bundle');
    const alreadyClaimed = async () =>
      (await readFile(marker, 'utf8').catch(() => '')) === bundleId && (await exists(src));
    const staged = path.join(this.root, 'bundles', bundleId);
    let info: Stats;
    try {
      info = await lstat(staged);
    } catch (err) {
      if (errorCode(err) === 'ENOENT' && (await alreadyClaimed())) return src;
      throw new BundleNotFoundError(bundleId);
    }
    if (!info.isDirectory() || info.mtimeMs + this.options.bundleTtlMs <= Date.now()) {
      throw new BundleNotFoundError(bundleId);
    }
    await mkdir(envDir, { recursive: true, mode: 0o700 });
    if (await exists(src)) {
      if (await alreadyClaimed()) return src;
      throw new Error(`environment ${envId} already has a template folder`);
    }
    // Written before the rename, so that a crash right after it still lets a retry find its bundle.
    await writeFile(marker, bundleId, { mode: 0o600 });
    try {
      await rename(staged, src);
    } catch (err) {
      // Another claim (or the sweep) took it first.
      if (errorCode(err) === 'ENOENT') throw new BundleNotFoundError(bundleId);
      throw err;
    }
    return src;
  }

  /** `<root>/envs/<envId>/src`: the environment's template folder. */
  sourceDir(envId: string): string {
    return path.join(this.envDir(envId), 'src');
  }

  /** `<root>/envs/<envId>/mounts`: where the private copies of bind sources live. */
  mountsDir(envId: string): string {
    return path.join(this.envDir(envId), 'mounts');
  }

  /**
   * `<root>/envs/<envId>/checkout-<revision>`: a commit checked out to plan and build from, removed
   * once built. One per revision, so the bind sources copied from it (see
   * {@link prepareBindSources}) are copied anew for every update instead of reused.
   */
  checkoutDir(envId: string, revision: number): string {
    if (!Number.isSafeInteger(revision) || revision < 0) throw new Error(`invalid revision ${revision}`);
    return path.join(this.envDir(envId), `checkout-${revision}`);
  }

  /** Makes the environment's folder and removes what an earlier attempt left at the checkout's place. */
  async prepareCheckout(envId: string, revision: number): Promise<string> {
    await mkdir(this.envDir(envId), { recursive: true, mode: 0o700 });
    const dir = this.checkoutDir(envId, revision);
    await rm(dir, { recursive: true, force: true });
    return dir;
  }

  /**
   * Private copies of bind sources, so that no container ever binds the template folder's own
   * files. Docker resolves a bind source on the host at every container start, following links:
   * if a container could write along that path (say a job binding `.` read-write), it could swap
   * a folder for a link to `/` and the next start would mount the host's root. A copy lives in
   * `mounts/`, which no container can write, so its path cannot change under Docker.
   *
   * Each source must be an absolute path inside the template's folder (`templateDir`: the claimed
   * bundle, {@link sourceDir}, or a checkout in the environment's folder) that, links followed,
   * stays inside it; otherwise a {@link BindSourceError}. A missing source gets an empty folder (Docker
   * creates missing bind sources as folders). Links inside a copied folder are copied as links:
   * a container resolves those in its own view, never on the host.
   *
   * Returns source → copy. The same source always maps to the same copy (services sharing a bind
   * share it; nested sources get separate copies); a complete copy is reused, so calling again,
   * after a restart too, gives the same mapping without copying again. Not for concurrent calls
   * on one environment (the controller's lease ensures that).
   */
  async prepareBindSources(
    envId: string,
    sources: string[],
    templateDir: string = this.sourceDir(envId),
  ): Promise<Map<string, string>> {
    const srcDir = templateDir;
    // Copies of a checkout (a new folder per revision of a preview) are made anew per revision.
    const keyPrefix = srcDir === this.sourceDir(envId) ? '' : `${path.basename(srcDir)}/`;
    const realSrc = await realpath(srcDir);
    const mounts = this.mountsDir(envId);
    await mkdir(mounts, { recursive: true, mode: 0o700 });
    const copies = new Map<string, string>();
    const budget: CopyBudget = {
      bytesLeft: this.options.limits.maxBytes,
      limit: this.options.limits.maxBytes,
    };
    for (const source of sources) {
      if (copies.has(source)) continue;
      if (typeof source !== 'string' || source.includes('\0') || !path.isAbsolute(source)) {
        throw new BindSourceError(`bind source "${String(source)}" must be an absolute path`);
      }
      const abs = path.resolve(source);
      if (!isInside(srcDir, abs)) {
        throw new BindSourceError(`bind source "${source}" is outside the environment's template folder`);
      }
      const rel = path.relative(srcDir, abs) || '.';
      const keyOf = (extra: string) =>
        path.join(mounts, createHash('sha256').update(`${rel}${extra}`).digest('hex').slice(0, 24));
      // A bundle's copy is named by its path (made once); a checkout's by its path and content, so
      // an update whose bind sources did not change keeps the same copies (and its containers).
      let copy = keyPrefix === '' ? keyOf('') : null;
      if (copy !== null && (await exists(copy))) {
        copies.set(source, copy);
        continue;
      }
      const real = await resolveInside(srcDir, realSrc, abs, source);
      const temp = path.join(
        mounts,
        `${TMP_PREFIX}${createHash('sha256').update(`${keyPrefix}${rel}`).digest('hex').slice(0, 24)}`,
      );
      await rm(temp, { recursive: true, force: true });
      if (real === undefined) {
        await mkdir(temp, { mode: 0o755 });
        await chmod(temp, 0o755);
      } else {
        // The template folder itself is 0700; its copy must be traversable by a non-root container user.
        await copyTree(real, temp, budget, real === realSrc ? 0o755 : undefined);
      }
      copy ??= keyOf(`\0${await treeDigest(temp)}`);
      copies.set(source, copy);
      if (await exists(copy)) await rm(temp, { recursive: true, force: true });
      else await rename(temp, copy);
    }
    return copies;
  }

  /**
   * Writes files whose content the plan carries (Compose secrets and configs given as `content`
   * or `environment`) under the environment's mounts folder, each with its mode and owner, for a
   * read-only bind: unlike a copy into the container, such a file is there with a read-only root
   * or a tmpfs above it, and not even root in the container can change it. Returns the host path
   * of each file, by the key given. Idempotent: a file already written is written again.
   */
  async writeFiles(
    envId: string,
    files: { key: string; content: string; mode: number; uid?: string; gid?: string }[],
  ): Promise<Map<string, string>> {
    const dir = path.join(this.mountsDir(envId), 'files');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const written = new Map<string, string>();
    for (const file of files) {
      const target = path.join(dir, createHash('sha256').update(file.key).digest('hex').slice(0, 24));
      const temp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(temp, file.content, { mode: file.mode & 0o777, flag: 'wx' });
      // Permission bits only: never a setuid file, whatever the plan says.
      await chmod(temp, file.mode & 0o777);
      if (file.uid !== undefined || file.gid !== undefined) {
        // -1 keeps what the file has; the server runs as root where containers run as others.
        await chown(
          temp,
          file.uid === undefined ? -1 : Number(file.uid),
          file.gid === undefined ? -1 : Number(file.gid),
        ).catch((err: NodeJS.ErrnoException) => {
          // A server not running as root cannot give files away: they stay its own.
          if (err.code !== 'EPERM') throw err;
        });
      }
      await rename(temp, target);
      written.set(file.key, target);
    }
    return written;
  }

  /** How many uploaded bundles wait to be claimed (unpacked completely; not those being unpacked). */
  async stagedCount(): Promise<number> {
    const names = await readdir(path.join(this.root, 'bundles')).catch(() => [] as string[]);
    return names.filter((name) => BUNDLE_ID.test(name)).length;
  }

  /** Removes everything of `envId` (template folder, copies); idempotent. */
  async remove(envId: string): Promise<void> {
    await rm(this.envDir(envId), { recursive: true, force: true });
  }

  /**
   * Removes staged bundles past their ttl, and temp folders of unpacks that did not finish (a
   * crash) once they are as old as the ttl. Returns how many folders it removed.
   */
  async sweep(now: Date = new Date()): Promise<number> {
    const bundles = path.join(this.root, 'bundles');
    let names: string[];
    try {
      names = await readdir(bundles);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const full = path.join(bundles, name);
      const info = await lstat(full).catch(() => undefined);
      if (!info) continue;
      const expired = info.mtimeMs + this.options.bundleTtlMs <= now.getTime();
      if (BUNDLE_ID.test(name) && expired) {
        // Renamed first, so a claim never gets a half-deleted folder.
        const trash = path.join(bundles, `${TRASH_PREFIX}${name}`);
        try {
          await rename(full, trash);
        } catch {
          continue;
        }
        await rm(trash, { recursive: true, force: true });
        removed += 1;
      } else if (name.startsWith(TMP_PREFIX) && expired && !this.staging.has(name.slice(TMP_PREFIX.length))) {
        await rm(full, { recursive: true, force: true });
        removed += 1;
      } else if (name.startsWith(TRASH_PREFIX)) {
        await rm(full, { recursive: true, force: true });
        removed += 1;
      }
    }
    return removed;
  }

  private envDir(envId: string): string {
    if (typeof envId !== 'string' || !ENV_ID.test(envId))
      throw new Error(`invalid environment id "${String(envId).slice(0, 80)}"`);
    return path.join(this.root, 'envs', envId);
  }
}

/**
 * The real path of `abs` if it exists, `undefined` if it does not; a {@link BindSourceError} if
 * it, or a link on the way to it, leads outside the template folder or nowhere.
 */
async function resolveInside(
  srcDir: string,
  realSrc: string,
  abs: string,
  given: string,
): Promise<string | undefined> {
  try {
    const real = await realpath(abs);
    if (!isInside(realSrc, real)) {
      throw new BindSourceError(
        `bind source "${given}" resolves outside the environment's template folder (to ${real})`,
      );
    }
    return real;
  } catch (err) {
    if (err instanceof BindSourceError || errorCode(err) !== 'ENOENT') throw err;
  }
  // Missing: fine if nothing exists there, not if a link on the way dangles or leaves.
  const parts = path.relative(srcDir, abs).split(path.sep);
  for (let i = 1; i <= parts.length; i++) {
    const prefix = path.join(srcDir, ...parts.slice(0, i));
    const info = await lstat(prefix).catch(() => undefined);
    if (!info) return undefined;
    if (info.isSymbolicLink()) {
      const real = await realpath(prefix).catch(() => undefined);
      if (real === undefined) {
        throw new BindSourceError(
          `bind source "${given}" passes through "${prefix}", a link that leads nowhere`,
        );
      }
      if (!isInside(realSrc, real)) {
        throw new BindSourceError(
          `bind source "${given}" passes through "${prefix}", a link that leads outside`,
        );
      }
    }
  }
  return undefined;
}

/** Copies a file or folder without following any link; `rootMode` overrides the top folder's mode. */
/** What the copies of one environment's bind sources may take, all together. */
interface CopyBudget {
  bytesLeft: number;
  readonly limit: number;
}

function spend(budget: CopyBudget, bytes: number): void {
  budget.bytesLeft -= bytes;
  if (budget.bytesLeft < 0) {
    throw new BindSourceError(
      `copies of the template's bind sources would take more than ${Math.round(budget.limit / 1024 ** 2)} MiB (nested binds are copied separately): bind fewer or smaller folders`,
    );
  }
}

async function copyTree(from: string, to: string, budget: CopyBudget, rootMode?: number): Promise<void> {
  const info = await lstat(from);
  // Every entry costs something, so a million empty files cannot dodge the budget.
  spend(budget, 512);
  if (info.isDirectory()) {
    await mkdir(to, { mode: 0o700 });
    for (const name of (await readdir(from)).sort(byteOrder)) {
      await copyTree(path.join(from, name), path.join(to, name), budget);
    }
    // Last, so a read-only folder does not stop its own copy.
    await chmod(to, rootMode ?? (info.mode & 0o755) | 0o700);
  } else if (info.isSymbolicLink()) {
    await symlink(await readlink(from), to);
  } else if (info.isFile()) {
    spend(budget, info.size);
    await copyFile(from, to, (info.mode & 0o755) | 0o600);
  } else {
    throw new BindSourceError(`${from} is ${describeType(info)}; only files, folders and links are copied`);
  }
}

async function copyFile(from: string, to: string, mode: number): Promise<void> {
  let input: FileHandle | undefined;
  let output: FileHandle | undefined;
  try {
    input = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    if (!(await input.stat()).isFile()) throw new BindSourceError(`${from} changed while it was copied`);
    output = await open(
      to,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
    for (;;) {
      const { bytesRead } = await input.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      await output.write(buffer, 0, bytesRead);
    }
    await output.chmod(mode);
  } finally {
    await input?.close();
    await output?.close();
  }
}

/** SHA-256 of a tree we made (a copy): names, types, modes, link targets and contents, in order. */
async function treeDigest(root: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (dir: string, rel: string): Promise<void> => {
    const info = await lstat(dir);
    hash.update(`${rel}\0${info.mode}\0`);
    if (info.isSymbolicLink()) hash.update(`link\0${await readlink(dir)}\0`);
    else if (info.isFile()) {
      hash.update(`file\0${info.size}\0`);
      for await (const chunk of createReadStream(dir)) hash.update(chunk as Buffer);
    } else if (info.isDirectory()) {
      for (const name of (await readdir(dir)).sort(byteOrder))
        await walk(path.join(dir, name), `${rel}/${name}`);
    }
  };
  await walk(root, '.');
  return hash.digest('hex');
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}
