/**
 * The agent's copies (`copy` on Docker, `pack` | `unpack` on Kubernetes) against volumes that fill
 * the disk: a seed nobody vetted can leave a huge (even sparse) file, and a snapshot or a clone of
 * it must not fill the host's disk. Past `--max-bytes`, or past the room (bytes or inodes) the disk
 * written to has, each refuses with why and writes nothing more; and it looks again as it writes,
 * as copies beside it fill the same disk. Run here on the host, in folders of the test's (a small
 * tmpfs mounted where a disk must be small).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { requiredAgentBinary } from '../test-support/global-setup.js';
import { until } from '../test-support/until.js';

const PiB = 2 ** 50;
const MiB = 2 ** 20;

const agent = (args: string[], input?: Buffer) =>
  spawnSync(requiredAgentBinary(), args, { input, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });

/** A tar header (ustar, size in GNU base-256) for one regular file of `size` bytes, and no body. */
function hugeFileHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512);
  const octal = (value: number, offset: number, length: number) =>
    header.write(`${value.toString(8).padStart(length - 1, '0')}\0`, offset, 'latin1');
  header.write(name, 0, 'latin1');
  octal(0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  // The size field (12 bytes at 124): a first byte of 0x80, then the size big-endian.
  header[124] = 0x80;
  header.writeBigUInt64BE(BigInt(size), 128);
  octal(0, 136, 12);
  header.write('0', 156, 'latin1');
  header.write('ustar\u000000', 257, 'latin1');
  header.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return header;
}

describe('mayfly-agent copies within a budget', () => {
  let root: string;
  let from: string;
  let into: string;
  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'mayfly-budget-'));
    from = path.join(root, 'from');
    into = path.join(root, 'into');
    mkdirSync(from);
    mkdirSync(into);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const stderr = (result: ReturnType<typeof agent>) => result.stderr.toString();

  it('copy refuses a volume over --max-bytes before writing anything', () => {
    writeFileSync(path.join(from, 'a'), Buffer.alloc(1500));
    writeFileSync(path.join(from, 'b'), Buffer.alloc(1500));
    const result = agent(['copy', '--max-bytes=2000', from, into]);
    expect(stderr(result)).toMatch(/the volume holds 2\.9 KiB, over the 2\.0 KiB a snapshot may hold/);
    expect(result.status).toBe(1);
    expect(readdirSync(into)).toEqual([]);
    // Within it, the same copy goes through.
    const fits = agent(['copy', '--max-bytes=3000', from, into]);
    expect(stderr(fits)).toBe('');
    expect(JSON.parse(fits.stdout.toString())).toMatchObject({ bytes: 3000, files: 2 });
  });

  it('copy refuses a sparse file the disk has no room for, with no limit given', () => {
    writeFileSync(path.join(from, 'small'), 'x');
    // A petabyte of holes takes no room where it is, and all of it where a copy fills them.
    writeFileSync(path.join(from, 'sparse'), '');
    truncateSync(path.join(from, 'sparse'), 15 * 2 ** 40);
    const result = agent(['copy', from, into]);
    expect(stderr(result)).toMatch(/the copy needs 15\.0 TiB but the disk it goes to has .* to spare/);
    expect(result.status).toBe(1);
    expect(readdirSync(into)).toEqual([]);
  });

  it('pack refuses a folder over --max-bytes and writes no stream', () => {
    writeFileSync(path.join(from, 'a'), Buffer.alloc(5000));
    const result = agent(['pack', '--max-bytes=4096', from]);
    expect(stderr(result)).toMatch(/the volume holds 4\.9 KiB, over the 4\.0 KiB a snapshot may hold/);
    expect(result.status).toBe(1);
    expect(result.stdout.length).toBe(0);
  });

  it('unpack stops at the file that would go past --max-bytes', async () => {
    const pack = tar.pack();
    pack.entry({ name: 'a' }, Buffer.alloc(600));
    pack.entry({ name: 'b' }, Buffer.alloc(600));
    pack.finalize();
    const result = agent(['unpack', '--max-bytes=1000', into], await buffer(pack));
    expect(stderr(result)).toMatch(/"b": the volume holds 1\.2 KiB, over the 1000 bytes/);
    expect(result.status).toBe(1);
    expect(readdirSync(into)).toEqual(['a']);
  });

  it('unpack refuses a file the disk has no room for before making it', () => {
    const input = Buffer.concat([hugeFileHeader('huge', PiB), Buffer.alloc(1024)]);
    const result = agent(['unpack', into], input);
    expect(stderr(result)).toMatch(/"huge": the copy needs 1\.0 PiB but the disk it goes to has .* to spare/);
    expect(result.status).toBe(1);
    expect(readdirSync(into)).toEqual([]);
  });

  /** A small disk of its own (a tmpfs) mounted at `into`, with so many bytes and inodes. */
  const smallDisk = (sizeMiB: number, inodes: number) => {
    execFileSync('mount', [
      '-t',
      'tmpfs',
      '-o',
      `size=${sizeMiB}m,nr_inodes=${inodes}`,
      'mayfly-budget',
      into,
    ]);
    mounted = true;
  };
  let mounted = false;
  afterEach(() => {
    if (mounted) execFileSync('umount', [into]);
    mounted = false;
  });

  it('copy refuses a volume of more entries than the disk has inodes, before writing anything', () => {
    // Empty folders hold no bytes of content, but each takes an inode (and a block).
    for (let i = 0; i < 3000; i++) mkdirSync(path.join(from, `d${i}`));
    smallDisk(64, 2000);
    const result = agent(['copy', from, into]);
    expect(stderr(result)).toMatch(
      /the copy makes 3000 files and folders but the disk it goes to has room for 19\d\d more/,
    );
    expect(result.status).toBe(1);
    expect(readdirSync(into)).toEqual([]);
  });

  it('unpack looks again as it writes: a disk another copy filled meanwhile stops it, never full', async () => {
    smallDisk(256, 10_000);
    const size = 200 * MiB;
    const header = hugeFileHeader('big', size);
    const child = spawn(requiredAgentBinary(), ['unpack', into], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => {}); // it stops reading when it refuses: the rest is not taken
    const errors: Buffer[] = [];
    child.stderr.on('data', (chunk: Buffer) => errors.push(chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const write = (data: Buffer) =>
      new Promise<void>((resolve) => {
        if (child.stdin.write(data)) resolve();
        else child.stdin.once('drain', resolve);
      });
    // 200 MiB fit the disk at first: the first stretch of 64 MiB is being written.
    await write(header);
    for (let i = 0; i < 63; i++) await write(Buffer.alloc(MiB));
    const big = path.join(into, 'big');
    await until('the first stretch to be written', () =>
      existsSync(big) && statSync(big).size === 63 * MiB ? true : undefined,
    );
    // Another copy takes most of what is left; then the stream goes on.
    writeFileSync(path.join(into, 'other'), Buffer.alloc(150 * MiB));
    child.stdin.write(Buffer.alloc(2 * MiB));
    child.stdin.end();
    expect(await exited).toBe(1);
    expect(Buffer.concat(errors).toString()).toMatch(
      /"big": the copy needs 64\.0 MiB but the disk it goes to has 3\d\.\d MiB to spare/,
    );
    expect(statSync(big).size).toBe(64 * MiB);
  });
});
