/** The server's work dir: staged bundles, claims, and bind sources no container can swap. */
import { execFileSync } from 'node:child_process';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { BundleError } from './bundle-unpack.js';
import { BindSourceError, BundleNotFoundError, Workspaces } from './workspaces.js';

const LIMITS = { maxBytes: 1024 * 1024, maxFiles: 100, maxPathLength: 256, maxDepth: 16 };
const TTL = 60_000;

async function bundle(files: Record<string, string>, links: Record<string, string> = {}): Promise<Readable> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, content);
  for (const [name, linkname] of Object.entries(links)) pack.entry({ name, type: 'symlink', linkname });
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Readable.from([gzipSync(Buffer.concat(chunks))]);
}

const mode = async (p: string) => (await stat(p)).mode & 0o7777;

describe('Workspaces', () => {
  let root: string;
  let workspaces: Workspaces;
  beforeEach(async () => {
    root = path.join(await mkdtemp(path.join(os.tmpdir(), 'mayfly-work-')), 'work');
    workspaces = new Workspaces({ root, limits: LIMITS, bundleTtlMs: TTL });
  });
  afterEach(async () => {
    await rm(path.dirname(root), { recursive: true, force: true });
  });

  it('stages a bundle, and one environment claims it, once; folders are 0700', async () => {
    const staged = await workspaces.stageBundle(
      await bundle({ 'mayfly.yaml': 'services: {}\n', 'web/index.html': 'hi' }),
    );
    expect(staged.id).toMatch(/^[0-9a-f]{32}$/);
    expect(staged.files).toBe(3);
    expect(staged.expiresAt.getTime()).toBeGreaterThan(Date.now() + TTL - 5_000);
    const src = await workspaces.claimBundle(staged.id, 'env1');
    expect(src).toBe(workspaces.sourceDir('env1'));
    expect(src).toBe(path.join(root, 'envs/env1/src'));
    expect(await readFile(path.join(src, 'web/index.html'), 'utf8')).toBe('hi');
    for (const dir of [root, path.join(root, 'bundles'), path.join(root, 'envs/env1'), src]) {
      expect(await mode(dir)).toBe(0o700);
    }
    expect(await readdir(path.join(root, 'bundles'))).toEqual([]);
    // A retry of the same claim (say after a crash) gets the same folder; anyone else gets nothing.
    expect(await workspaces.claimBundle(staged.id, 'env1')).toBe(src);
    await expect(workspaces.claimBundle(staged.id, 'env2')).rejects.toThrow(BundleNotFoundError);
  });

  it('refuses unknown, malformed and expired bundle ids', async () => {
    await expect(workspaces.claimBundle('0'.repeat(32), 'env1')).rejects.toThrow(BundleNotFoundError);
    for (const id of ['../../etc', '', 'A'.repeat(32), `${'0'.repeat(31)}/`, '.tmp-x']) {
      await expect(workspaces.claimBundle(id, 'env1')).rejects.toThrow(BundleNotFoundError);
    }
    const staged = await workspaces.stageBundle(await bundle({ a: 'a' }));
    const past = new Date(Date.now() - TTL - 1_000);
    await utimes(path.join(root, 'bundles', staged.id), past, past);
    await expect(workspaces.claimBundle(staged.id, 'env1')).rejects.toThrow(BundleNotFoundError);
    await expect(lstat(path.join(root, 'envs/env1/src'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses environment ids that are not ids', async () => {
    for (const id of ['..', '../x', 'a/b', '', 'A']) {
      expect(() => workspaces.sourceDir(id)).toThrow(/invalid environment id/);
      await expect(workspaces.remove(id)).rejects.toThrow(/invalid environment id/);
    }
  });

  it('leaves nothing behind when a hostile bundle is refused', async () => {
    await expect(workspaces.stageBundle(await bundle({}, { link: '/etc' }))).rejects.toThrow(BundleError);
    expect(await readdir(path.join(root, 'bundles'))).toEqual([]);
  });

  it('sweeps expired bundles and stale temp folders, not fresh ones', async () => {
    const old = await workspaces.stageBundle(await bundle({ a: 'a' }));
    const fresh = await workspaces.stageBundle(await bundle({ b: 'b' }));
    const past = new Date(Date.now() - TTL - 1_000);
    await utimes(path.join(root, 'bundles', old.id), past, past);
    await mkdir(path.join(root, 'bundles/.tmp-0123'));
    await utimes(path.join(root, 'bundles/.tmp-0123'), past, past);
    await mkdir(path.join(root, 'bundles/.tmp-4567'));
    expect(await workspaces.sweep()).toBe(2);
    expect((await readdir(path.join(root, 'bundles'))).sort()).toEqual(['.tmp-4567', fresh.id].sort());
    expect(await workspaces.sweep(new Date(Date.now() + 2 * TTL))).toBe(2);
    expect(await readdir(path.join(root, 'bundles'))).toEqual([]);
  });

  it('removes an environment entirely, and again without complaint', async () => {
    const staged = await workspaces.stageBundle(await bundle({ a: 'a' }));
    await workspaces.claimBundle(staged.id, 'env1');
    await workspaces.prepareBindSources('env1', [path.join(workspaces.sourceDir('env1'), 'a')]);
    await workspaces.remove('env1');
    await expect(lstat(path.join(root, 'envs/env1'))).rejects.toThrow(/ENOENT/);
    await workspaces.remove('env1');
  });

  describe('prepareBindSources', () => {
    let src: string;
    beforeEach(async () => {
      const staged = await workspaces.stageBundle(
        await bundle(
          { 'data/file': 'original', 'data/sub/nested': 'n', 'conf/app.env': 'A=1', 'web/index.html': 'hi' },
          { 'data/rel-link': '../conf/app.env', 'conf-link': 'conf' },
        ),
      );
      src = await workspaces.claimBundle(staged.id, 'env1');
    });

    it('copies files and folders; same source same copy, nested sources separate copies; idempotent', async () => {
      const sources = [
        path.join(src, 'data'),
        path.join(src, 'conf/app.env'),
        path.join(src, 'data'),
        path.join(src, 'data/sub'),
        src,
      ];
      const copies = await workspaces.prepareBindSources('env1', sources);
      expect(copies.size).toBe(4);
      const data = copies.get(path.join(src, 'data'))!;
      expect(path.dirname(data)).toBe(workspaces.mountsDir('env1'));
      expect(await readFile(path.join(data, 'file'), 'utf8')).toBe('original');
      // Links inside a copied folder stay links: the container resolves them in its own view.
      expect(await readlink(path.join(data, 'rel-link'))).toBe('../conf/app.env');
      expect(await readFile(copies.get(path.join(src, 'conf/app.env'))!, 'utf8')).toBe('A=1');
      expect(copies.get(path.join(src, 'data/sub'))).not.toBe(data);
      expect(await readFile(path.join(copies.get(path.join(src, 'data/sub'))!, 'nested'), 'utf8')).toBe('n');
      // The whole template folder: its copy is traversable by a non-root container user.
      expect(await mode(copies.get(src)!)).toBe(0o755);
      expect(await mode(workspaces.mountsDir('env1'))).toBe(0o700);

      // A complete copy is reused, not copied again: a change to the source does not show.
      await writeFile(path.join(src, 'data/file'), 'changed');
      const again = await workspaces.prepareBindSources('env1', sources);
      expect([...again]).toEqual([...copies]);
      expect(await readFile(path.join(data, 'file'), 'utf8')).toBe('original');
    });

    it('copies what a link inside the folder points at, and gives a missing source an empty folder', async () => {
      const copies = await workspaces.prepareBindSources('env1', [
        path.join(src, 'conf-link'),
        path.join(src, 'cache'),
      ]);
      const viaLink = copies.get(path.join(src, 'conf-link'))!;
      expect((await lstat(viaLink)).isDirectory()).toBe(true);
      expect(await readFile(path.join(viaLink, 'app.env'), 'utf8')).toBe('A=1');
      expect(await readdir(copies.get(path.join(src, 'cache'))!)).toEqual([]);
    });

    it('refuses sources outside, links that lead out or nowhere, and paths through them', async () => {
      await symlink('/etc', path.join(src, 'etc-link'));
      await symlink('/var/run/docker.sock', path.join(src, 'docker.sock'));
      await symlink('missing/deeper', path.join(src, 'dangling'));
      const refused = async (source: string, message: RegExp) => {
        const error = await workspaces.prepareBindSources('env1', [source]).catch((err: unknown) => err);
        expect(error).toBeInstanceOf(BindSourceError);
        expect((error as Error).message).toMatch(message);
      };
      await refused(path.join(src, '..'), /outside the environment's template folder/);
      await refused('/var/run/docker.sock', /outside the environment's template folder/);
      await refused('data', /must be an absolute path/);
      await refused(path.join(src, 'etc-link'), /resolves outside .*\(to \/etc\)/);
      await refused(path.join(src, 'etc-link/passwd'), /resolves outside/);
      await refused(
        path.join(src, 'etc-link/no-such-file'),
        /passes through .*etc-link", a link that leads outside/,
      );
      await refused(path.join(src, 'docker.sock'), /resolves outside|leads nowhere/);
      await refused(path.join(src, 'dangling/x'), /a link that leads nowhere/);
      expect(await readdir(workspaces.mountsDir('env1'))).toEqual([]);
    });

    it('keeps a copy unaffected when a folder of the source is swapped for a link to /', async () => {
      const copies = await workspaces.prepareBindSources('env1', [path.join(src, 'data')]);
      const data = copies.get(path.join(src, 'data'))!;
      await rm(path.join(src, 'data'), { recursive: true });
      await symlink('/', path.join(src, 'data'));
      expect((await lstat(data)).isDirectory()).toBe(true);
      expect(await realpath(data)).toBe(data);
      expect(await readFile(path.join(data, 'file'), 'utf8')).toBe('original');
      const again = await workspaces.prepareBindSources('env1', [path.join(src, 'data')]);
      expect(again.get(path.join(src, 'data'))).toBe(data);
      expect((await readdir(data)).sort()).toEqual(['file', 'rel-link', 'sub']);
    });

    it('defeats the swap from inside a container: a job rewrites its bind, the next container still sees the copy', async () => {
      const copies = await workspaces.prepareBindSources('env1', [src, path.join(src, 'data')]);
      const whole = copies.get(src)!;
      const data = copies.get(path.join(src, 'data'))!;
      const docker = (args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: 'pipe' });
      // The job binds `.` read-write and replaces `./data` by a link to the host's root.
      docker([
        'run',
        '--rm',
        '-v',
        `${whole}:/work`,
        TESTKIT_IMAGE,
        'sh',
        '-c',
        'rm -rf /work/data && ln -s / /work/data',
      ]);
      expect(await readlink(path.join(whole, 'data'))).toBe('/');
      // The service that binds `./data` starts after it, as a non-root user: it sees the data, not `/`.
      const seen = docker([
        'run',
        '--rm',
        '-u',
        '1000',
        '-v',
        `${data}:/mnt:ro`,
        TESTKIT_IMAGE,
        'sh',
        '-c',
        'cat /mnt/file; echo; ls /mnt',
      ]);
      expect(seen.trim().split('\n')).toEqual(['original', 'file', 'rel-link', 'sub']);
      // The template folder itself was never bound, so it is untouched too.
      expect((await lstat(path.join(src, 'data'))).isDirectory()).toBe(true);
    });
  });
});
