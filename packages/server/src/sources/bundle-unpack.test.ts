/** Unpacking hostile bundles: every attack is refused with a BundleError and leaves nothing behind. */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BundleError, type BundleLimits, unpackBundle } from './bundle-unpack.js';

type Item = { header: Parameters<ReturnType<typeof tar.pack>['entry']>[0]; content?: string | Buffer };

/** A tar made with tar-stream, as an attacker would (nothing stops odd headers). */
async function makeTar(items: Item[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const item of items) {
    await new Promise<void>((resolve, reject) => {
      const content = item.content ?? '';
      pack.entry({ size: Buffer.byteLength(content), ...item.header }, content, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const file = (name: string, content = name, mode?: number): Item => ({ header: { name, mode }, content });

/** Rewrites the type flag of the header at `offset` (and its checksum). */
function setTypeflag(archive: Buffer, offset: number, flag: string): Buffer {
  const out = Buffer.from(archive);
  out[offset + 156] = flag.charCodeAt(0);
  out.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = offset; i < offset + 512; i++) sum += out[i] as number;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, offset + 148, 'latin1');
  return out;
}

const LIMITS: BundleLimits = { maxBytes: 1024 * 1024, maxFiles: 50, maxPathLength: 200, maxDepth: 8 };

/** A stream that hands out `data` in small chunks and counts what was read. */
function chunked(data: Buffer, size = 1024): Readable & { consumed: () => number } {
  let offset = 0;
  const stream = new Readable({
    read() {
      if (offset >= data.length) this.push(null);
      else {
        this.push(data.subarray(offset, offset + size));
        offset += size;
      }
    },
  });
  return Object.assign(stream, { consumed: () => Math.min(offset, data.length) });
}

describe('unpackBundle', () => {
  let base: string;
  let dest: string;
  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'mayfly-unpack-'));
    dest = path.join(base, 'out');
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const refuse = async (archive: Buffer, message: RegExp, limits = LIMITS) => {
    const error = await unpackBundle(Readable.from([archive]), dest, limits).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BundleError);
    expect((error as Error).message).toMatch(message);
    await expect(lstat(dest)).rejects.toThrow(/ENOENT/);
  };

  it('unpacks gzip and plain tars, creates missing parents, and masks modes', async () => {
    const archive = await makeTar([
      { header: { name: './', type: 'directory', mode: 0o777 } },
      { header: { name: 'bin/', type: 'directory', mode: 0o1777 } },
      file('bin/run', '#!/bin/sh\n', 0o4777),
      file('deep/er/file.txt', 'x', 0o666),
      file('secret', 's', 0o400),
      { header: { name: 'ro/', type: 'directory', mode: 0o555 } },
      file('ro/inside', 'y'),
      { header: { name: 'deep/link', type: 'symlink', linkname: '../bin/run' } },
    ]);
    for (const [input, out] of [
      [archive, dest],
      [gzipSync(archive), `${dest}-gz`],
    ] as const) {
      const result = await unpackBundle(Readable.from([input]), out, LIMITS);
      expect(result).toEqual({ files: 9, bytes: archive.length });
      expect((await stat(out)).mode & 0o7777).toBe(0o700);
      expect((await stat(path.join(out, 'bin'))).mode & 0o7777).toBe(0o755);
      expect((await stat(path.join(out, 'bin/run'))).mode & 0o7777).toBe(0o755);
      expect((await stat(path.join(out, 'deep/er/file.txt'))).mode & 0o7777).toBe(0o644);
      // Folders the archive only implies get tar's usual 0755.
      expect((await stat(path.join(out, 'deep/er'))).mode & 0o7777).toBe(0o755);
      expect((await stat(path.join(out, 'secret'))).mode & 0o7777).toBe(0o600);
      expect((await stat(path.join(out, 'ro'))).mode & 0o7777).toBe(0o755);
      expect(await readFile(path.join(out, 'ro/inside'), 'utf8')).toBe('y');
      expect(await readlink(path.join(out, 'deep/link'))).toBe('../bin/run');
    }
  });

  it('refuses a destination that exists, and leaves it alone', async () => {
    await mkdir(dest);
    await writeFile(path.join(dest, 'mine'), 'keep');
    await expect(unpackBundle(Readable.from([await makeTar([file('a')])]), dest, LIMITS)).rejects.toThrow(
      /EEXIST/,
    );
    expect(await readFile(path.join(dest, 'mine'), 'utf8')).toBe('keep');
  });

  it('refuses absolute paths, .. anywhere, empty and NUL names', async () => {
    await refuse(
      await makeTar([file('ok'), file('/etc/cron.d/evil')]),
      /"\/etc\/cron.d\/evil": absolute paths/,
    );
    await refuse(await makeTar([file('../evil')]), /"\.\.\/evil": "\.\." in a path/);
    await refuse(await makeTar([file('a/../../evil')]), /"\.\." in a path/);
    await refuse(await makeTar([file('a/..')]), /"\.\." in a path/);
    await refuse(await makeTar([file('')]), /empty entry name/);
    // Only a pax header can carry a NUL (ustar fields end at the first one): a long name without `/` gets one.
    // tar-stream 3.3 refuses it while parsing ("pax path contains a null byte"); our own check says "NUL byte".
    await refuse(await makeTar([file(`${'x'.repeat(120)}\0${'y'.repeat(10)}`)]), /NUL byte|null byte/);
    await refuse(await makeTar([file('a//b')]), /canonical/);
  });

  it('refuses paths through links and links that lead outside', async () => {
    const link = (name: string, linkname: string): Item => ({ header: { name, type: 'symlink', linkname } });
    await refuse(
      await makeTar([link('link', '/etc'), file('link/passwd')]),
      /"link": symbolic link refused: .*absolute/,
    );
    await refuse(
      await makeTar([{ header: { name: 'sub/', type: 'directory' } }, link('link', 'sub'), file('link/x')]),
      /"link\/x": the path passes through the symbolic link "link"/,
    );
    await refuse(await makeTar([link('up', '..')]), /"up": .*leads outside/);
    await refuse(await makeTar([link('a/b/up', '../../../x')]), /leads outside/);
    // `b -> .` is harmless alone, but `a -> b/..` then climbs out of the folder through it.
    await refuse(await makeTar([link('b', '.'), link('a', 'b/..')]), /"a": .*after a name/);
    await refuse(await makeTar([link('empty', '')]), /target is empty/);
    await refuse(await makeTar([file('f'), file('f/x')]), /passes through the file "f"/);
  });

  it('refuses hard links, devices, fifos and unknown types', async () => {
    await refuse(
      await makeTar([file('a'), { header: { name: 'b', type: 'link', linkname: 'a' } }]),
      /"b": hard links/,
    );
    await refuse(
      await makeTar([{ header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 } }]),
      /devices/,
    );
    await refuse(
      await makeTar([{ header: { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 } }]),
      /devices/,
    );
    await refuse(await makeTar([{ header: { name: 'pipe', type: 'fifo' } }]), /fifos/);
    await refuse(
      await makeTar([{ header: { name: 'c', type: 'contiguous-file' }, content: 'x' }]),
      /type "contiguous-file"/,
    );
    await refuse(setTypeflag(await makeTar([file('odd', '')]), 0, 'Z'), /type "null"/);
  });

  it('refuses duplicate entries', async () => {
    await refuse(await makeTar([file('a', 'first'), file('a', 'second')]), /"a": duplicate entry/);
    await refuse(
      await makeTar([file('a'), { header: { name: 'a/', type: 'directory' } }]),
      /"a\/": duplicate entry/,
    );
    await refuse(
      await makeTar([
        { header: { name: 'd/', type: 'directory' } },
        { header: { name: 'd', type: 'directory' } },
      ]),
      /duplicate entry/,
    );
    await refuse(
      await makeTar([file('a'), { header: { name: 'a', type: 'symlink', linkname: 'b' } }]),
      /duplicate entry/,
    );
  });

  it('refuses archives past the limits on files, path length, depth and bytes', async () => {
    const many = Array.from({ length: 6 }, (_, i) => file(`f${i}`));
    await refuse(await makeTar(many), /more than 5 entries/, { ...LIMITS, maxFiles: 5 });
    // Few entries, many implied folders.
    await refuse(await makeTar([file('a/b/c/d/e/f')]), /more than 5 entries/, { ...LIMITS, maxFiles: 5 });
    await refuse(
      await makeTar([{ header: { name: 'l', type: 'symlink', linkname: 'x'.repeat(300) } }]),
      /link target is longer than 200 bytes/,
    );
    await refuse(await makeTar([file('x'.repeat(40))]), /longer than 30 bytes/, {
      ...LIMITS,
      maxPathLength: 30,
    });
    await refuse(await makeTar([file('a/b/c/d')]), /deeper than 3 folders/, { ...LIMITS, maxDepth: 3 });
    await refuse(await makeTar([file('big', 'x'.repeat(4000))]), /larger than the limit of 3000 bytes/, {
      ...LIMITS,
      maxBytes: 3000,
    });
  });

  it('stops a gzip bomb at the limit without inflating the rest', async () => {
    // The header of one 1 GiB file, then 1 GiB of zeros as 1024 concatenated gzip members of
    // 1 MiB each (gzip allows that): about 1 MiB compressed, made in milliseconds.
    const size = 1024 * 1024 * 1024;
    const header = setSize((await makeTar([file('bomb', '')])).subarray(0, 512), size);
    const member = gzipSync(Buffer.alloc(1024 * 1024), { level: 9 });
    const bomb = Buffer.concat([gzipSync(header), ...Array.from({ length: 1024 }, () => member)]);
    const input = chunked(bomb, 256);
    const error = await unpackBundle(input, dest, { ...LIMITS, maxBytes: 1024 * 1024 }).catch(
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(BundleError);
    expect((error as Error).message).toMatch(/larger than the limit of 1048576 bytes/);
    // Inflating the rest would mean reading it: only stream buffers' worth past the limit was read.
    expect(input.consumed()).toBeLessThan(bomb.length / 10);
    // The upload (an HTTP request in the server) is not destroyed: the route can still answer.
    expect(input.destroyed).toBe(false);
    await expect(lstat(dest)).rejects.toThrow(/ENOENT/);
  });

  it('refuses truncated archives: mid-file, at an entry boundary, and gzip cut short', async () => {
    const archive = await makeTar([file('a', 'x'.repeat(2000)), file('b', 'y')]);
    await refuse(archive.subarray(0, 1200), /not a valid tar|truncated/);
    // Cut right after the first entry (header + 4 blocks of content): no end-of-archive marker.
    await refuse(archive.subarray(0, 512 + 2048), /truncated/);
    const gz = gzipSync(archive);
    await refuse(gz.subarray(0, gz.length - 10), /gzip|truncated/);
    await refuse(Buffer.alloc(0), /empty or truncated/);
    await refuse(Buffer.from('this is not an archive at all, just some words'.repeat(20)), /not a valid tar/);
  });

  it('refuses an upload that fails midway', async () => {
    const archive = await makeTar([file('a', 'x'.repeat(5000))]);
    const input = new Readable({ read() {} });
    input.push(archive.subarray(0, 1024));
    const result = unpackBundle(input, dest, LIMITS).catch((err: unknown) => err);
    // Reset once the first bytes are being read (the unpack pipes the input once it started).
    await vi.waitFor(() => expect(input.readableFlowing).toBe(true));
    input.destroy(new Error('connection reset'));
    const error = await result;
    expect(error).toBeInstanceOf(BundleError);
    expect((error as Error).message).toMatch(/upload ended early|upload failed/);
    await expect(readdir(base)).resolves.toEqual([]);
  });
});

/** Rewrites the size field of a header block (octal, 11 digits) and its checksum. */
function setSize(header: Buffer, size: number): Buffer {
  const out = Buffer.from(header);
  out.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  out.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += out[i] as number;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return out;
}
