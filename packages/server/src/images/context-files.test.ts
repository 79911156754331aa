/** What is sent to the builder: Docker's `.dockerignore` rules, checked against the real docker CLI. */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FIXED_MTIME } from '../sources/file-tree.js';
import { listContextFiles, packContext } from './context-files.js';

interface TarItem {
  name: string;
  type: string | null | undefined;
  mode: number | undefined;
  uid: number | undefined;
  gid: number | undefined;
  mtime: Date | undefined;
  linkname: string | null | undefined;
  content: string;
}

async function readTar(stream: Readable): Promise<TarItem[]> {
  const extract = tar.extract();
  stream.pipe(extract);
  const items: TarItem[] = [];
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    const h = entry.header;
    items.push({
      name: h.name,
      type: h.type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      mtime: h.mtime,
      linkname: h.linkname,
      content: Buffer.concat(chunks).toString(),
    });
  }
  return items;
}

async function toBuffer(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function write(root: string, rel: string, content = rel): Promise<void> {
  await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
  await writeFile(path.join(root, rel), content);
}

const names = async (dir: string, dockerfile = 'Dockerfile') =>
  (await readTar(packContext(dir, await listContextFiles(dir, dockerfile)))).map((i) => i.name);

describe('build context files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-ctxfiles-'));
    await write(dir, 'Dockerfile', 'FROM scratch\nCOPY . /ctx/\n');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves out an ignored .env and node_modules, and keeps what is not ignored', async () => {
    await write(dir, '.dockerignore', '.env\nnode_modules\n');
    await write(dir, '.env', 'SECRET=1');
    await write(dir, 'node_modules/pkg/index.js');
    await write(dir, 'src/app.js');
    await write(dir, 'src/.env', 'only the root one is ignored');
    expect(await names(dir)).toEqual(['.dockerignore', 'Dockerfile', 'src/', 'src/.env', 'src/app.js']);
  });

  it('applies ! exceptions, ** and cleaned patterns, case-sensitively, and reaches into excluded folders only as Docker does', async () => {
    await write(
      dir,
      '.dockerignore',
      [
        '# .env is not ignored: this is a comment',
        '*.log',
        '!keep.log',
        'node_modules',
        '!node_modules/keep',
        '**/*.tmp',
        './secret/../secret.txt',
        '/build/',
        'README.md',
        'vendor',
        '!**/*.go',
      ].join('\n'),
    );
    for (const rel of [
      '.env',
      'a.log',
      'keep.log',
      'sub/b.log',
      'node_modules/keep/x.js',
      'node_modules/other/y.js',
      'deep/er/c.tmp',
      'c.tmp',
      'secret.txt',
      'build/out.bin',
      'readme.md',
      'vendor/lib.go',
    ]) {
      await write(dir, rel);
    }
    expect(await names(dir)).toEqual([
      '.dockerignore',
      '.env',
      'Dockerfile',
      'deep/',
      'deep/er/',
      'keep.log',
      // The folder itself is excluded; the exception brings back only what is below `keep`.
      'node_modules/keep/',
      'node_modules/keep/x.js',
      'readme.md',
      'sub/',
      // `*.log` is anchored at the root, as in Docker (unlike .gitignore).
      'sub/b.log',
      // `!**/*.go` does not start with `vendor/`: Docker does not walk into the excluded folder.
    ]);
  });

  it('sends .git unless .dockerignore names it, as the docker CLI does', async () => {
    await write(dir, '.git/HEAD', 'ref: refs/heads/main\n');
    expect(await names(dir)).toContain('.git/HEAD');
    await write(dir, '.dockerignore', '.git\n');
    expect(await names(dir)).not.toContain('.git/HEAD');
  });

  it('sends the Dockerfile and .dockerignore even when they are ignored', async () => {
    await write(dir, '.dockerignore', '*\n');
    await write(dir, 'other');
    expect(await names(dir)).toEqual(['.dockerignore', 'Dockerfile']);
    await rm(path.join(dir, 'other'));
    await write(dir, '.dockerignore', 'docker\n.dockerignore\n');
    await write(dir, 'docker/Dockerfile', 'FROM scratch\n');
    await write(dir, 'docker/other');
    expect(await names(dir, 'docker/Dockerfile')).toEqual([
      '.dockerignore',
      'Dockerfile',
      'docker/Dockerfile',
    ]);
    expect(await names(dir, './docker//Dockerfile')).toEqual([
      '.dockerignore',
      'Dockerfile',
      'docker/Dockerfile',
    ]);
  });

  it('refuses a Dockerfile outside the context, a missing one, and a .dockerignore linking out', async () => {
    await expect(listContextFiles(dir, '../Dockerfile')).rejects.toThrow(/inside the build context/);
    await expect(listContextFiles(dir, '/etc/passwd')).rejects.toThrow(/inside the build context/);
    await expect(listContextFiles(dir, 'Dockerfile.missing')).rejects.toThrow(/not found/);
    await symlink('/etc/hostname', path.join(dir, '.dockerignore'));
    await expect(listContextFiles(dir, 'Dockerfile')).rejects.toThrow(/leads outside/);
  });

  it('packs links as links, owner 0:0 and a fixed time, and the same bytes for the same content', async () => {
    await write(dir, 'src/app.js', 'x');
    await chmod(path.join(dir, 'src/app.js'), 0o755);
    await symlink('/etc/passwd', path.join(dir, 'abs-link'));
    await symlink('src', path.join(dir, 'dir-link'));
    const items = await readTar(packContext(dir, await listContextFiles(dir, 'Dockerfile')));
    expect(items.find((i) => i.name === 'abs-link')).toMatchObject({
      type: 'symlink',
      linkname: '/etc/passwd',
    });
    expect(items.find((i) => i.name === 'dir-link')).toMatchObject({ type: 'symlink', linkname: 'src' });
    expect(items.find((i) => i.name === 'src/app.js')).toMatchObject({
      type: 'file',
      mode: 0o755,
      content: 'x',
    });
    for (const item of items) expect(item).toMatchObject({ uid: 0, gid: 0, mtime: FIXED_MTIME });

    const first = await toBuffer(packContext(dir, await listContextFiles(dir, 'Dockerfile')));
    await utimes(path.join(dir, 'src/app.js'), new Date(), new Date(2001, 1, 1));
    expect(await toBuffer(packContext(dir, await listContextFiles(dir, 'Dockerfile')))).toEqual(first);
  });

  it('leaves out sockets and fifos instead of hanging on them', async () => {
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    expect(await names(dir)).toEqual(['Dockerfile']);
  });

  it('fails, instead of sending something else, when a listed file changes before it is packed', async () => {
    await write(dir, 'data', 'short');
    const entries = await listContextFiles(dir, 'Dockerfile');
    await rm(path.join(dir, 'data'));
    await symlink('/etc/passwd', path.join(dir, 'data'));
    await expect(toBuffer(packContext(dir, entries))).rejects.toThrow(/changed while it was packed/);

    await rm(path.join(dir, 'data'));
    await write(dir, 'data', 'short');
    const again = await listContextFiles(dir, 'Dockerfile');
    await write(dir, 'data', 'much longer now');
    await expect(toBuffer(packContext(dir, again))).rejects.toThrow(/changed while it was packed/);
  });

  it('stops cleanly when the reader goes away mid-file (a cancelled build)', async () => {
    await write(dir, 'big', 'x'.repeat(2 * 1024 * 1024));
    const stream = packContext(dir, await listContextFiles(dir, 'Dockerfile'));
    for await (const _chunk of stream) break;
    expect(stream.destroyed).toBe(true);
    // An unheard 'error' from the abandoned tar entry would surface here as an uncaught exception.
    await new Promise((resolve) => setImmediate(resolve));
  });

  it('sends what the docker CLI sends (checked against a real `docker build`)', async () => {
    await write(
      dir,
      '.dockerignore',
      [
        '*.log',
        '!keep.log',
        'node_modules',
        '!node_modules/keep',
        '**/*.tmp',
        '.env',
        'vendor',
        '!**/*.go',
      ].join('\n'),
    );
    for (const rel of [
      '.env',
      'a.log',
      'keep.log',
      'sub/b.log',
      'node_modules/keep/x.js',
      'node_modules/o/y.js',
      'd/c.tmp',
      'src/app.js',
      'vendor/lib.go',
      'main.go',
    ]) {
      await write(dir, rel);
    }
    await write(dir, '.git/HEAD', 'ref\n');
    await symlink('src/app.js', path.join(dir, 'link'));
    const image = `mayfly-test/ctx-oracle:${path.basename(dir).toLowerCase()}`;
    const quiet = {
      env: { ...process.env, DOCKER_BUILDKIT: '0' },
      stdio: 'pipe' as const,
      encoding: 'utf8' as const,
    };
    try {
      // The classic builder, as the Engine API the driver uses: `COPY . /ctx/` holds what the CLI sent.
      execFileSync('docker', ['build', '-q', '-t', image, dir], quiet);
      const id = execFileSync('docker', ['create', image, 'x'], quiet).trim();
      let listing: string;
      try {
        listing = execFileSync('sh', ['-c', `docker export ${id} | tar -t`], quiet);
      } finally {
        execFileSync('docker', ['rm', id], quiet);
      }
      // Folders are left out of the comparison: the daemon creates the parents of what it receives.
      const viaCli = listing
        .split('\n')
        .filter((l) => l.startsWith('ctx/') && !l.endsWith('/'))
        .map((l) => l.slice('ctx/'.length))
        .sort();
      const ours = (await listContextFiles(dir, 'Dockerfile'))
        .filter((e) => e.type !== 'dir')
        .map((e) => e.path)
        .sort();
      expect(viaCli).toContain('.git/HEAD');
      expect(viaCli).toContain('node_modules/keep/x.js');
      expect(viaCli).not.toContain('.env');
      expect(ours).toEqual(viaCli);
    } finally {
      execFileSync('docker', ['rmi', '-f', image], { stdio: 'ignore' });
    }
  });
});
