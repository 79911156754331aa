/** The bundle the CLI uploads: what is sent, what is always sent, and what is refused before sending. */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BundlePackError, packBundle } from './bundle-pack.js';
import { unpackBundle } from './bundle-unpack.js';

const MAX = 10 * 1024 * 1024;

async function namesIn(bundle: Readable): Promise<string[]> {
  const extract = tar.extract();
  const gunzip = createGunzip();
  // pipe() does not pass errors on: a failed bundle must fail the reader.
  bundle.on('error', (err) => extract.destroy(err));
  gunzip.on('error', (err) => extract.destroy(err));
  bundle.pipe(gunzip).pipe(extract);
  const names: string[] = [];
  for await (const entry of extract) {
    entry.resume();
    names.push(entry.header.name);
  }
  return names;
}

async function write(root: string, rel: string, content = rel): Promise<void> {
  await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
  await writeFile(path.join(root, rel), content);
}

describe('packBundle', () => {
  let base: string;
  let dir: string;
  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'mayfly-pack-'));
    dir = path.join(base, 'template');
    await write(dir, 'mayfly.yaml', 'services: {}\n');
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('honours .dockerignore, never sends .git, and always sends the root .dockerignore', async () => {
    await write(dir, '.dockerignore', '.dockerignore\n.env\nnode_modules\n*.log\n!keep.log\n');
    await write(dir, '.env', 'SECRET=1');
    await write(dir, 'node_modules/pkg/index.js');
    await write(dir, 'a.log');
    await write(dir, 'keep.log');
    await write(dir, '.git/HEAD', 'ref\n');
    await write(dir, 'vendor/sub/.git', 'gitdir: ../../.git/modules/sub\n');
    await write(dir, 'vendor/sub/code.c');
    expect(await namesIn(await packBundle(dir, { maxBytes: MAX }))).toEqual([
      '.dockerignore',
      'keep.log',
      'mayfly.yaml',
      'vendor/',
      'vendor/sub/',
      'vendor/sub/code.c',
    ]);
  });

  it('always sends forced paths: an ignored env file, a file in an ignored folder, a whole folder', async () => {
    await write(dir, '.dockerignore', '.env\nconfig\nfixtures\n');
    await write(dir, '.env', 'A=1');
    await write(dir, 'config/app.env', 'B=2');
    await write(dir, 'config/other', 'not named by the template');
    await write(dir, 'fixtures/a/b.sql');
    await write(dir, 'fixtures/c.sql');
    const forceInclude = [
      path.join(dir, '.env'),
      path.join(dir, 'config/app.env'),
      path.join(dir, 'fixtures'),
    ];
    expect(await namesIn(await packBundle(dir, { maxBytes: MAX, forceInclude }))).toEqual([
      '.dockerignore',
      '.env',
      'config/',
      'config/app.env',
      'fixtures/',
      'fixtures/a/',
      'fixtures/a/b.sql',
      'fixtures/c.sql',
      'mayfly.yaml',
    ]);
  });

  it('refuses forced paths outside the folder, missing ones, and ones inside .git', async () => {
    await write(base, 'outside.env');
    await expect(
      packBundle(dir, { maxBytes: MAX, forceInclude: [path.join(base, 'outside.env')] }),
    ).rejects.toThrow(/outside\.env is outside/);
    await expect(
      packBundle(dir, { maxBytes: MAX, forceInclude: [path.join(dir, 'missing.env')] }),
    ).rejects.toThrow(/missing\.env does not exist/);
    await write(dir, '.git/config');
    await expect(
      packBundle(dir, { maxBytes: MAX, forceInclude: [path.join(dir, '.git/config')] }),
    ).rejects.toThrow(/inside a \.git folder/);
  });

  it('refuses links that resolve outside, naming them; ignored ones are not looked at', async () => {
    await write(base, 'secret');
    await symlink('/etc/passwd', path.join(dir, 'abs'));
    await expect(packBundle(dir, { maxBytes: MAX })).rejects.toThrow(
      new RegExp(`${path.join(dir, 'abs')} is a symbolic link the server would refuse`),
    );
    await rm(path.join(dir, 'abs'));
    await symlink('../secret', path.join(dir, 'up'));
    await expect(packBundle(dir, { maxBytes: MAX })).rejects.toThrow(/up is a symbolic link .*leads outside/);
    await rm(path.join(dir, 'up'));
    // Lexically inside, but through a link of the host that leaves.
    await symlink(base, path.join(dir, 'b-host'));
    await symlink('b-host/secret', path.join(dir, 'a-chain'));
    await expect(packBundle(dir, { maxBytes: MAX })).rejects.toThrow(
      /a-chain is a symbolic link that resolves outside/,
    );
    await writeFile(path.join(dir, '.dockerignore'), 'a-chain\nb-host\n');
    await symlink('mayfly.yaml', path.join(dir, 'fine'));
    expect(await namesIn(await packBundle(dir, { maxBytes: MAX }))).toEqual([
      '.dockerignore',
      'fine',
      'mayfly.yaml',
    ]);
  });

  it('refuses fifos and sockets that would be sent', async () => {
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    await expect(packBundle(dir, { maxBytes: MAX })).rejects.toThrow(/pipe is a named pipe \(fifo\)/);
    await writeFile(path.join(dir, '.dockerignore'), 'pipe\n');
    expect(await namesIn(await packBundle(dir, { maxBytes: MAX }))).toEqual(['.dockerignore', 'mayfly.yaml']);
  });

  it('refuses a folder past the limit before sending, and stops a stream that passes it', async () => {
    await write(dir, 'big', 'x'.repeat(100_000));
    await expect(packBundle(dir, { maxBytes: 50_000 })).rejects.toThrow(BundlePackError);
    await expect(packBundle(dir, { maxBytes: 50_000 })).rejects.toThrow(/more than the limit of 50000/);
    await rm(path.join(dir, 'big'));
    // A name too long for a plain tar header needs an extra (pax) header the estimate leaves out.
    await write(dir, 'n'.repeat(150), 'x');
    const bundle = await packBundle(dir, { maxBytes: 3500 });
    await expect(namesIn(bundle)).rejects.toThrow(/past the bundle limit of 3500 bytes/);
  });

  it('unpacks on the server into the same files, modes and links', async () => {
    await write(dir, 'bin/run', '#!/bin/sh\n');
    await chmod(path.join(dir, 'bin/run'), 0o755);
    await symlink('../bin/run', path.join(dir, 'bin/alias'));
    await write(dir, 'data/seed.sql', 'insert');
    const dest = path.join(base, 'unpacked');
    const result = await unpackBundle(await packBundle(dir, { maxBytes: MAX }), dest, {
      maxBytes: MAX,
      maxFiles: 100,
      maxPathLength: 1024,
      maxDepth: 32,
    });
    expect(result.files).toBe(6);
    expect(await readFile(path.join(dest, 'data/seed.sql'), 'utf8')).toBe('insert');
    expect((await stat(path.join(dest, 'bin/run'))).mode & 0o777).toBe(0o755);
    expect(await readlink(path.join(dest, 'bin/alias'))).toBe('../bin/run');
  });
});
