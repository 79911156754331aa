/** Content-addressed tags: same inputs, same tag; any input that reaches the builder changes it. */
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildPlan } from '../plan/plan.js';
import { buildContentHash, contentTag } from './content-tag.js';
import { listContextFiles, packContext } from './context-files.js';

describe('build content hash', () => {
  let dir: string;
  let build: BuildPlan;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-ctx-'));
    await writeFile(path.join(dir, 'Dockerfile'), 'FROM base\nCOPY . /app\n');
    await mkdir(path.join(dir, 'src'));
    await writeFile(path.join(dir, 'src/app.py'), 'print("hi")\n');
    build = { context: dir, dockerfile: 'Dockerfile', args: {} };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is stable, and changes with file contents, names, args and target', async () => {
    const first = await buildContentHash(build);
    expect(await buildContentHash(build)).toBe(first);
    await writeFile(path.join(dir, 'src/app.py'), 'print("changed")\n');
    const changed = await buildContentHash(build);
    expect(changed).not.toBe(first);
    expect(await buildContentHash({ ...build, args: { A: '1' } })).not.toBe(changed);
    expect(await buildContentHash({ ...build, target: 'prod' })).not.toBe(changed);
    await writeFile(path.join(dir, 'src/new.py'), '');
    expect(await buildContentHash(build)).not.toBe(changed);
  });

  it('ignores what .dockerignore names; .git counts unless ignored, as the docker CLI sends it', async () => {
    const before = await buildContentHash(build);
    await mkdir(path.join(dir, '.git'));
    await writeFile(path.join(dir, '.git/HEAD'), 'ref: x\n');
    const withGit = await buildContentHash(build);
    expect(withGit).not.toBe(before);
    await writeFile(path.join(dir, '.dockerignore'), '.git\nnode_modules\n.env\n');
    const withIgnore = await buildContentHash(build);
    await mkdir(path.join(dir, 'node_modules/pkg'), { recursive: true });
    await writeFile(path.join(dir, 'node_modules/pkg/index.js'), 'x');
    await writeFile(path.join(dir, '.env'), 'SECRET=1');
    await writeFile(path.join(dir, '.git/HEAD'), 'ref: y\n');
    expect(await buildContentHash(build)).toBe(withIgnore);
  });

  it('changes exactly when the packed context does: not on times, yes on modes', async () => {
    const first = await buildContentHash(build);
    await utimes(path.join(dir, 'src/app.py'), new Date(), new Date(2005, 0, 1));
    expect(await buildContentHash(build)).toBe(first);
    await chmod(path.join(dir, 'src/app.py'), 0o755);
    expect(await buildContentHash(build)).not.toBe(first);
  });

  it('hashes a given listing, the one then packed for the build', async () => {
    const entries = await listContextFiles(dir, 'Dockerfile');
    const first = await buildContentHash(build, entries);
    expect(first).toBe(await buildContentHash(build));
    const packed = createHash('sha256');
    packed.update(JSON.stringify({ dockerfile: 'Dockerfile', args: {}, target: null }));
    for await (const chunk of packContext(dir, entries)) packed.update(chunk as Buffer);
    expect(packed.digest('hex')).toBe(first);
  });

  it('hashes symbolic links as links, dangling or pointing at folders', async () => {
    await symlink('src', path.join(dir, 'to-dir'));
    await symlink('does-not-exist', path.join(dir, 'dangling'));
    const withLinks = await buildContentHash(build);
    await rm(path.join(dir, 'dangling'));
    await symlink('elsewhere', path.join(dir, 'dangling'));
    expect(await buildContentHash(build)).not.toBe(withLinks);
  });

  it('makes one tag per project and content', () => {
    expect(contentTag('My Project', 'ab'.repeat(32))).toBe('mayfly-build/my-project:abababababababab');
  });
});
