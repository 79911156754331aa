/**
 * The agent's `unpack` against hostile streams: on Kubernetes it reads what `pack` made of a volume
 * that code nobody vetted wrote, so a stream must never put anything outside its folder, follow a
 * link, or hard-link a file it did not make. Run here on the host, in a folder of the test's own,
 * with a file beside it that no stream may reach.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { requiredAgentBinary } from '../../test-support/global-setup.js';

type Entry = Partial<tar.Header> & { name: string; body?: string };

async function stream(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { body, ...header } of entries) pack.entry(header, body ?? '');
  pack.finalize();
  return buffer(pack);
}

describe('mayfly-agent unpack', () => {
  let root: string;
  let into: string;
  let outside: string;
  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'mayfly-unpack-'));
    into = path.join(root, 'into');
    outside = path.join(root, 'outside');
    mkdirSync(into);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'secret'), 'secret');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const unpack = (input: Buffer) =>
    spawnSync(requiredAgentBinary(), ['unpack', into], { input, encoding: 'utf8' });
  const outsideUntouched = () => {
    expect(readdirSync(outside)).toEqual(['secret']);
    expect(readFileSync(path.join(outside, 'secret'), 'utf8')).toBe('secret');
    expect(readdirSync(root).sort()).toEqual(['into', 'outside']);
  };

  // Each stream is made from the test's folder (known only once the test runs).
  const refusals: [string, (root: string) => Entry[], RegExp][] = [
    ['a name with ..', () => [{ name: '../outside/secret', body: 'pwned' }], /\.\./],
    [
      'a name inside with ..',
      () => [
        { name: 'a/', type: 'directory' },
        { name: 'a/../../x', body: 'pwned' },
      ],
      /\.\./,
    ],
    ['an absolute name', (root) => [{ name: `${root}/outside/new`, body: 'pwned' }], /not a relative name/],
    [
      'a file through a symlink the stream made',
      () => [
        { name: 'link', type: 'symlink', linkname: '../outside' },
        { name: 'link/secret', body: 'pwned' },
      ],
      /not one this stream made/,
    ],
    [
      'a hard link to a file outside',
      (root) => [{ name: 'hard', type: 'link', linkname: `${root}/outside/secret` }],
      /not a file of this stream/,
    ],
    [
      'a hard link through a symlink',
      () => [
        { name: 'link', type: 'symlink', linkname: '../outside' },
        { name: 'hard', type: 'link', linkname: 'link/secret' },
      ],
      /not a file of this stream/,
    ],
    [
      'a hard link to a symlink the stream made',
      () => [
        { name: 'link', type: 'symlink', linkname: '../outside/secret' },
        { name: 'hard', type: 'link', linkname: 'link' },
      ],
      /not a file of this stream/,
    ],
    [
      'the same name twice (a file where a symlink is)',
      () => [
        { name: 'x', type: 'symlink', linkname: '../outside/secret' },
        { name: 'x', body: 'pwned' },
      ],
      /exists/,
    ],
  ];
  for (const [what, entries, why] of refusals) {
    it(`refuses ${what}, and nothing outside its folder changes`, async () => {
      const result = unpack(await stream(entries(root)));
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(why);
      outsideUntouched();
    });
  }

  it('empties its folder first without following what is there', async () => {
    symlinkSync(outside, path.join(into, 'old'));
    writeFileSync(path.join(into, 'half'), 'half a copy');
    const result = unpack(
      await stream([
        { name: '.', type: 'directory', mode: 0o755 },
        { name: 'd/', type: 'directory', mode: 0o700, uid: 1234, gid: 5678 },
        { name: 'd/f', body: 'kept', mode: 0o4640, uid: 1234, gid: 5678 },
        { name: 'h', type: 'link', linkname: 'd/f' },
      ]),
    );
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ bytes: 4, files: 1 });
    expect(readdirSync(into).sort()).toEqual(['d', 'h']);
    const file = lstatSync(path.join(into, 'd/f'));
    expect([file.uid, file.gid, file.mode & 0o7777, file.nlink]).toEqual([1234, 5678, 0o4640, 2]);
    expect(lstatSync(path.join(into, 'd')).mode & 0o7777).toBe(0o700);
    outsideUntouched();
    expect(existsSync(path.join(outside, 'old'))).toBe(false);
  });
});
