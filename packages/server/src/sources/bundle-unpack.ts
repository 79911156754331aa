/**
 * Unpacking an uploaded template bundle into a fresh folder. Every archive is hostile: anything
 * that could write outside the folder, follow a link, exhaust the disk or memory, or leave a
 * half-trusted tree is refused with a {@link BundleError}, and the folder is removed.
 */
import { constants } from 'node:fs';
import { chmod, type FileHandle, mkdir, open, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { finished, type Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { unsafeLinkTarget } from './link-target.js';

/** Limits for one bundle. */
export interface BundleLimits {
  /** Bytes of the uncompressed tar stream (headers included); a gzip bomb stops right after. */
  maxBytes: number;
  /** Entries of any kind (files, folders, links), folders implied by a path included. */
  maxFiles: number;
  /** Bytes (UTF-8) of an entry's relative path. */
  maxPathLength: number;
  /** Path components of an entry (`a/b/c` has 3). */
  maxDepth: number;
}

/** A bundle refused as invalid or hostile; the message says what and, where there is one, which entry. */
export class BundleError extends Error {
  override readonly name = 'BundleError';
  constructor(
    message: string,
    /** The archive entry at fault, as named in the archive. */
    readonly entry?: string,
  ) {
    super(entry === undefined ? message : `bundle entry "${printable(entry)}": ${message}`);
  }
}

/** What a successful unpack wrote. */
export interface UnpackResult {
  /** Entries written: files, links and folders (those the archive only implied included). */
  files: number;
  /** Bytes of the uncompressed tar stream. */
  bytes: number;
}

/** Permission bits kept: no setuid, setgid or sticky bit, nothing writable by group or others. */
const FILE_MODE_MASK = 0o755;
const IMPLIED_DIR_MODE = 0o755;

/**
 * Unpacks a gzip'd or plain tar (told apart by its first bytes) from `input` into `dest`, which
 * must not exist and is created with mode 0700. Entries keep their modes, masked to at most
 * 0755 (the owner can always read and write). Files are written with
 * `O_CREAT|O_EXCL|O_NOFOLLOW` and streamed with backpressure.
 *
 * On any failure `dest` is removed and the error is thrown (a {@link BundleError} for a bad
 * archive). `input` is never destroyed here, so an HTTP server can still answer the request; it
 * is left paused and unread past the failure.
 */
export async function unpackBundle(
  input: Readable,
  dest: string,
  limits: BundleLimits,
): Promise<UnpackResult> {
  const root = path.resolve(dest);
  // Not recursive: it fails if `dest` exists, so we only ever remove a folder we created.
  await mkdir(root, { mode: 0o700 });
  try {
    return await extractInto(input, root, limits);
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

async function extractInto(input: Readable, root: string, limits: BundleLimits): Promise<UnpackResult> {
  const head = await readHead(input, 2);
  const gzipped = head[0] === 0x1f && head[1] === 0x8b;
  const counter = new TarByteCounter(limits.maxBytes);
  const extract = tar.extract();
  // Chain by hand: stream.pipeline would destroy `input` (the request) on failure.
  const stages: (Readable | Writable)[] = gzipped ? [createGunzip(), counter] : [counter];
  let failure: Error | undefined;
  const fail = (err: Error) => {
    failure ??= err;
    extract.destroy(failure);
  };
  const first = stages[0] as Writable;
  input.pipe(first);
  const stopInput = finished(input, { writable: false }, (err) => {
    if (err) fail(new BundleError(`upload ended early (${err.message})`));
  });
  for (const [i, stage] of stages.entries()) {
    stage.on('error', (err: Error) => fail(err));
    const next = stages[i + 1];
    if (next) (stage as Readable).pipe(next as Writable);
  }
  counter.pipe(extract as unknown as Writable);

  const writer = new TreeWriter(root, limits);
  try {
    for await (const entry of extract) await writer.write(entry);
    if (failure) throw failure;
    if (!counter.sawEndOfArchive())
      throw new BundleError('the archive is truncated (no end-of-archive marker)');
    await writer.finish();
    return { files: writer.count, bytes: counter.bytes };
  } catch (err) {
    throw asBundleError(failure ?? err);
  } finally {
    stopInput();
    input.unpipe(first);
    for (const stage of stages) stage.destroy();
  }
}

/** tar-stream and zlib errors mean a malformed archive; our own and file system errors pass. */
function asBundleError(err: unknown): Error {
  if (err instanceof BundleError) return err;
  const e = err as Error & { code?: string; syscall?: string };
  if (typeof e.code === 'string' && e.code.startsWith('Z_'))
    return new BundleError(`not a valid gzip stream (${e.message})`);
  // A system call that failed (disk full, permissions): not the archive's fault.
  if (typeof e.syscall === 'string') return e;
  return new BundleError(`not a valid tar archive (${e.message})`);
}

/** Reads at least `n` bytes (unless the stream ends first) and puts them back. */
function readHead(input: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (input.readableEnded || input.destroyed) {
      reject(new BundleError('the upload has already ended'));
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    const cleanup = () => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
    };
    const onReadable = () => {
      let chunk: Buffer | null = input.read() as Buffer | null;
      while (chunk !== null) {
        chunks.push(chunk);
        length += chunk.length;
        if (length >= n) {
          cleanup();
          const head = Buffer.concat(chunks);
          input.unshift(head);
          resolve(head);
          return;
        }
        chunk = input.read() as Buffer | null;
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new BundleError('the archive is empty or truncated'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new BundleError(`upload failed (${err.message})`));
    };
    input.on('readable', onReadable);
    input.on('end', onEnd);
    input.on('error', onError);
  });
}

/**
 * Counts the uncompressed tar bytes, fails as soon as they pass the limit (so an inflating
 * gzip stops there), and remembers whether the stream ended with the two zero blocks that mark
 * the end of a tar: without them, a tar cut at an entry boundary would pass for a whole one.
 */
class TarByteCounter extends Transform {
  bytes = 0;
  private tail = Buffer.alloc(0);
  constructor(private readonly max: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.max) {
      callback(new BundleError(`the archive is larger than the limit of ${this.max} bytes uncompressed`));
      return;
    }
    const joined = Buffer.concat([this.tail, chunk]);
    this.tail = joined.subarray(Math.max(0, joined.length - 1024));
    callback(null, chunk);
  }

  sawEndOfArchive(): boolean {
    return this.tail.length === 1024 && this.tail.every((b) => b === 0);
  }
}

/** An entry of tar-stream's extract (a streamx readable, not a Node one). */
type TarEntry = AsyncIterable<unknown> & {
  header: tar.Header;
  resume(): unknown;
  destroy(err?: Error): unknown;
};

/** Writes validated entries under `root`, remembering what each path is. */
class TreeWriter {
  count = 0;
  /** Folders that exist, with the mode to give them once everything is written (undefined: implied). */
  private readonly dirs = new Map<string, number | undefined>([['', undefined]]);
  private readonly others = new Map<string, 'file' | 'symlink'>();

  constructor(
    private readonly root: string,
    private readonly limits: BundleLimits,
  ) {}

  async write(entry: TarEntry): Promise<void> {
    const { header } = entry;
    const name = header.name;
    try {
      const rel = this.check(name, header);
      if (rel === '') {
        // `./` itself: the root keeps its own mode (0700).
        entry.resume();
        return;
      }
      this.countOne(name);
      await this.ensureParents(rel, name);
      const abs = path.join(this.root, rel);
      const mode = (header.mode ?? 0o644) & FILE_MODE_MASK;
      if (header.type === 'directory') {
        entry.resume();
        if (this.dirs.get(rel) !== undefined || this.others.has(rel))
          throw new BundleError('duplicate entry', name);
        if (!this.dirs.has(rel)) await mkdir(abs, { mode: 0o700 });
        // Applied at the end: a read-only folder must stay writable until its content is in.
        this.dirs.set(rel, mode | 0o700);
      } else if (header.type === 'symlink') {
        entry.resume();
        this.refuseExisting(rel, name);
        const target = header.linkname ?? '';
        if (Buffer.byteLength(target) > this.limits.maxPathLength) {
          throw new BundleError(`the link target is longer than ${this.limits.maxPathLength} bytes`, name);
        }
        const unsafe = unsafeLinkTarget(rel, target);
        if (unsafe) throw new BundleError(`symbolic link refused: ${unsafe}`, name);
        await symlink(target, abs);
        this.others.set(rel, 'symlink');
      } else {
        this.refuseExisting(rel, name);
        this.others.set(rel, 'file');
        await writeFile(entry, abs, mode | 0o600);
      }
    } catch (err) {
      entry.destroy();
      throw err;
    }
  }

  /**
   * Sets the folders' own modes, deepest first (so a read-only parent does not block its
   * children). A folder the archive only implied gets 0755, as tar gives it.
   */
  async finish(): Promise<void> {
    const dirs = [...this.dirs].filter(([rel]) => rel !== '');
    dirs.sort(([a], [b]) => b.split('/').length - a.split('/').length);
    for (const [rel, mode] of dirs) await chmod(path.join(this.root, rel), mode ?? IMPLIED_DIR_MODE);
  }

  /** The entry's clean relative path, or a {@link BundleError} saying why it is refused. */
  private check(name: string, header: tar.Header): string {
    if (typeof name !== 'string' || name === '') throw new BundleError('empty entry name', '');
    if (name.includes('\0')) throw new BundleError('the name contains a NUL byte', name);
    if (name.startsWith('/')) throw new BundleError('absolute paths are refused', name);
    switch (header.type) {
      case 'file':
      case 'directory':
      case 'symlink':
        break;
      case 'link':
        throw new BundleError('hard links are refused', name);
      case 'character-device':
      case 'block-device':
        throw new BundleError('devices are refused', name);
      case 'fifo':
        throw new BundleError('named pipes (fifos) are refused', name);
      default:
        throw new BundleError(`entries of type "${String(header.type)}" are refused`, name);
    }
    // `./x` and `x/` (folders) are common spellings; anything else unusual is refused, not cleaned.
    let rel = name.startsWith('./') ? name.slice(2) : name;
    if (rel.endsWith('/')) rel = rel.slice(0, -1);
    if (rel === '' || rel === '.') {
      if (header.type !== 'directory') throw new BundleError('entry without a name', name);
      return '';
    }
    const parts = rel.split('/');
    if (parts.includes('..')) throw new BundleError('".." in a path is refused', name);
    if (parts.some((p) => p === '' || p === '.'))
      throw new BundleError('the path is not in canonical form', name);
    if (Buffer.byteLength(rel) > this.limits.maxPathLength) {
      throw new BundleError(`the path is longer than ${this.limits.maxPathLength} bytes`, name);
    }
    if (parts.length > this.limits.maxDepth) {
      throw new BundleError(`the path is deeper than ${this.limits.maxDepth} folders`, name);
    }
    return rel;
  }

  private countOne(name: string): void {
    this.count += 1;
    if (this.count > this.limits.maxFiles) {
      throw new BundleError(
        `the archive has more than ${this.limits.maxFiles} entries (folders included)`,
        name,
      );
    }
  }

  private refuseExisting(rel: string, name: string): void {
    if (this.dirs.has(rel) || this.others.has(rel)) throw new BundleError('duplicate entry', name);
  }

  /** Creates missing parent folders; a parent that is a file or a link is refused, never followed. */
  private async ensureParents(rel: string, name: string): Promise<void> {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const kind = this.others.get(parent);
      if (kind === 'symlink')
        throw new BundleError(`the path passes through the symbolic link "${parent}"`, name);
      if (kind === 'file') throw new BundleError(`the path passes through the file "${parent}"`, name);
      if (!this.dirs.has(parent)) {
        // Implied folders count too, or deep paths would make many folders from few entries.
        this.countOne(name);
        await mkdir(path.join(this.root, parent), { mode: 0o700 });
        this.dirs.set(parent, undefined);
      }
    }
  }
}

/** Streams one entry to a new file that nothing (not even a link) may already occupy. */
async function writeFile(entry: TarEntry, abs: string, mode: number): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(
      abs,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    for await (const chunk of entry) await handle.write(chunk as Buffer);
    // The umask may have narrowed the mode at creation; set it exactly.
    await handle.chmod(mode);
  } finally {
    await handle?.close();
  }
}

/** An entry name safe to print in a message (control characters escaped, length capped). */
function printable(name: string): string {
  const escaped = JSON.stringify(name).slice(1, -1);
  return escaped.length > 200 ? `${escaped.slice(0, 200)}…` : escaped;
}
