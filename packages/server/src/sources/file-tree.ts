/**
 * Listing a folder the way `docker build` does (`.dockerignore` with Docker's own rules) and
 * packing such a listing as a deterministic tar stream. Shared by build contexts (server) and
 * template bundles (CLI): it imports node and tar-stream only.
 */
import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, open, readdir, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { type IgnoreRules, parseDockerignore } from './dockerignore.js';

/** One entry of a tree, as it is (or will be) written to a tar. */
export interface TreeEntry {
  /** Relative POSIX path, no leading `./`, no trailing `/`. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits (`mode & 0o7777`). */
  mode: number;
  /** Bytes of content; 0 for folders and links. */
  size: number;
  /** Target of a symbolic link, as stored in the link (never followed). */
  linkTarget?: string;
}

/**
 * Every tar entry gets this modification time, so equal content gives an equal tar (and an equal
 * content hash). Not the epoch: zip-based tools (Python wheels, jar) refuse dates before 1980.
 */
export const FIXED_MTIME = new Date('2000-01-01T00:00:00Z');

/** A `.dockerignore` larger than this is refused rather than read into memory. */
const MAX_DOCKERIGNORE_BYTES = 256 * 1024;

/**
 * Reads `<root>/.dockerignore`. A link is followed only when it stays inside `root`: the rules
 * of a context must come from the context, never from a host file.
 */
export async function readDockerignore(root: string): Promise<IgnoreRules> {
  const file = path.join(root, '.dockerignore');
  let real: string;
  try {
    real = await realpath(file);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return parseDockerignore('');
    throw err;
  }
  if (!isInside(await realpath(root), real)) {
    throw new Error(`${file} is a symbolic link that leads outside ${root}`);
  }
  const handle = await open(real, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new Error(`${file} is not a regular file`);
    if (info.size > MAX_DOCKERIGNORE_BYTES) {
      throw new Error(`${file} is ${info.size} bytes, more than ${MAX_DOCKERIGNORE_BYTES}`);
    }
    return parseDockerignore(await handle.readFile('utf8'));
  } finally {
    await handle.close();
  }
}

/** What a walk does with one path: send it, leave it (and all below) out, or leave the folder itself out but look inside. */
export type WalkDecision = 'include' | 'skip' | 'descend';

/**
 * Walks `root` depth-first in byte order of names (the order of Go's `filepath.Walk`, which the
 * docker CLI uses), never following links, and returns the entries `decide` includes.
 * `decide` may throw to refuse a path.
 */
export async function walkTree(
  root: string,
  decide: (rel: string, info: Stats) => WalkDecision | Promise<WalkDecision>,
): Promise<TreeEntry[]> {
  const realRoot = await realpath(root);
  const entries: TreeEntry[] = [];
  const visit = async (dirRel: string): Promise<void> => {
    const dirAbs = dirRel ? path.join(root, dirRel) : root;
    const names = (await readdir(dirAbs)).sort(byteOrder);
    // readdir follows links: make sure the folder read is still the real one we decided to enter.
    const realDir = await realpath(dirAbs);
    if (realDir !== (dirRel ? path.join(realRoot, dirRel) : realRoot)) {
      throw new Error(`${dirAbs} changed into a symbolic link while it was read`);
    }
    for (const name of names) {
      const rel = dirRel ? `${dirRel}/${name}` : name;
      const abs = path.join(root, rel);
      const info = await lstat(abs);
      const decision = await decide(rel, info);
      if (decision === 'skip') continue;
      if (info.isDirectory()) {
        if (decision === 'include')
          entries.push({ path: rel, type: 'dir', mode: info.mode & 0o7777, size: 0 });
        await visit(rel);
      } else if (decision === 'descend') {
      } else if (info.isFile()) {
        entries.push({ path: rel, type: 'file', mode: info.mode & 0o7777, size: info.size });
      } else if (info.isSymbolicLink()) {
        entries.push({
          path: rel,
          type: 'symlink',
          mode: info.mode & 0o7777,
          size: 0,
          linkTarget: await readlink(abs),
        });
      } else {
        throw new Error(
          `${abs} is ${describeType(info)}: only files, folders and symbolic links can be sent`,
        );
      }
    }
  };
  await visit('');
  return entries;
}

/**
 * An uncompressed tar of exactly `entries` (paths relative to `root`), streamed with backpressure.
 * Owner 0:0, no user names, {@link FIXED_MTIME}: equal entries and content give equal bytes.
 * A file is opened without following links and must still be the regular file of the listed
 * size, else the stream fails: what is sent is what was listed (and hashed).
 */
export function packTree(root: string, entries: readonly TreeEntry[]): Readable {
  const pack = tar.pack();
  const produce = async () => {
    const realRoot = await realpath(root);
    for (const entry of entries) {
      const base = {
        name: entry.path,
        mode: entry.mode,
        uid: 0,
        gid: 0,
        uname: '',
        gname: '',
        mtime: FIXED_MTIME,
      };
      if (entry.type === 'dir') {
        // Trailing slash on folders, as Go's tar writer (the docker CLI) and GNU tar write them.
        await addEntry(pack, { ...base, name: `${entry.path}/`, type: 'directory', size: 0 });
      } else if (entry.type === 'symlink') {
        await addEntry(pack, { ...base, type: 'symlink', size: 0, linkname: entry.linkTarget ?? '' });
      } else {
        await addFile(pack, path.join(root, entry.path), path.join(realRoot, entry.path), entry, base);
      }
    }
    pack.finalize();
  };
  // Errors reach the reader through the iterator below; this listener only keeps an unheard
  // 'error' event (after the reader went away) from crashing the process.
  pack.on('error', () => {});
  produce().catch((err: unknown) => pack.destroy(err as Error));
  // A Node Readable around tar-stream's streamx one: destroying it stops the producer too.
  return Readable.from(pack, { objectMode: false });
}

type Pack = ReturnType<typeof tar.pack>;
type Header = Parameters<Pack['entry']>[0];

function addEntry(pack: Pack, header: Header): Promise<void> {
  return new Promise((resolve, reject) => {
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    // The callback gets the error too; an unheard 'error' event would crash the process.
    sink.on('error', () => {});
  });
}

const CHUNK_BYTES = 64 * 1024;

async function addFile(pack: Pack, abs: string, expectedReal: string, entry: TreeEntry, base: Header) {
  // O_NOFOLLOW: a file swapped for a link after listing is refused, not followed.
  // O_NONBLOCK: a file swapped for a fifo cannot hang the open.
  let handle: FileHandle;
  try {
    handle = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw new Error(`${abs} changed while it was packed (${errorCode(err) ?? (err as Error).message})`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size !== entry.size) throw new Error(`${abs} changed while it was packed`);
    // A parent folder swapped for a link still passes O_NOFOLLOW; the kernel knows what was opened.
    const opened = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
    if (opened !== undefined && opened !== expectedReal) {
      throw new Error(`${abs} changed while it was packed (opened ${opened})`);
    }
    await new Promise<void>((resolve, reject) => {
      const sink = pack.entry({ ...base, type: 'file', size: entry.size }, (err) =>
        err ? reject(err) : resolve(),
      );
      // A reader that stops early destroys the entry: the callback reports it, the event must not crash.
      sink.on('error', () => {});
      const copy = async () => {
        let remaining = entry.size;
        while (remaining > 0) {
          const buffer = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, remaining));
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
          // A file that shrank ends short: tar-stream then fails the entry with a size mismatch.
          if (bytesRead === 0) break;
          remaining -= bytesRead;
          if (!sink.write(buffer.subarray(0, bytesRead))) await drained(sink);
        }
        // streamx types `end` with a required argument; undefined ends without writing more.
        sink.end(undefined);
      };
      copy().catch((err: unknown) => {
        sink.destroy(err as Error);
        reject(err);
      });
    });
  } finally {
    await handle.close();
  }
}

/** Waits for a tar-stream (streamx) writable to drain; fails if it is destroyed meanwhile. */
function drained(sink: {
  on(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('tar entry closed before it was written'));
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
}

/** True when `child` is `parent` or below it (both absolute and normalised). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (rel !== '..' && !rel.startsWith('../') && !path.isAbsolute(rel));
}

/** Human words for what a non-file, non-folder, non-link entry is, for error messages. */
export function describeType(info: Stats): string {
  if (info.isSocket()) return 'a socket';
  if (info.isFIFO()) return 'a named pipe (fifo)';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  return 'not a file, folder or symbolic link';
}

/** Compares names by code unit, not locale: the same order on every machine. */
export function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The `code` of a Node system error, if any. */
export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}
