/** One-file tar archives, the format of the Engine's container file API. */
import path from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';

export async function singleFileTar(filePath: string, content: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name: path.posix.basename(filePath), size: content.length, mode: 0o644 }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Files at absolute paths, as a tar to extract at `/`: each with its mode and owner, and every
 * directory above it (root-owned, 0755) so the Engine creates what the image lacks.
 */
export async function filesTar(
  files: readonly { target: string; content: string; mode: number; uid?: string; gid?: string }[],
): Promise<Buffer> {
  const pack = tar.pack();
  const dirs = new Set<string>();
  for (const file of files) {
    const parts = path.posix.normalize(file.target).split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      pack.entry({ name: `${dir}/`, type: 'directory', mode: 0o755 });
    }
    const content = Buffer.from(file.content);
    pack.entry(
      {
        name: parts.join('/'),
        size: content.length,
        mode: file.mode,
        uid: file.uid === undefined ? 0 : Number(file.uid),
        gid: file.gid === undefined ? 0 : Number(file.gid),
      },
      content,
    );
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Reads the first regular file out of a tar stream. */
export async function firstFileFromTar(stream: Readable): Promise<Buffer> {
  const extract = tar.extract();
  stream.pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    if (entry.header.type === 'file') return Buffer.concat(chunks);
  }
  throw new Error('archive holds no regular file');
}
