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
