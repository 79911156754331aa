import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { packTemplateFolder } from './bundle.js';
import { UsageError } from './cli-error.js';

let dir: string;

function write(path: string, text: string): string {
  const file = join(dir, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** The entries of the gzip'd tar, as GNU tar lists them. */
async function entries(stream: Readable): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return execFileSync('tar', ['-tz'], { input: Buffer.concat(chunks), encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((e) => e.replace(/^\.\//, '').replace(/\/$/, ''))
    .filter((e) => e !== '.' && e !== '')
    .sort();
}

function pack(file: string, content: string, root = dirname(file), inputs: Record<string, string> = {}) {
  return packTemplateFolder({ file, content, root, inputs });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mayfly-cli-bundle-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

describe('packTemplateFolder', () => {
  it('leaves out what .dockerignore lists, but the template, its env files, bind sources and Dockerfile', async () => {
    const template = `services:
  app:
    build: { context: ., dockerfile: Dockerfile }
    env_file: [secret.env, "\${STAGE}.env"]
    volumes: ["./data:/data", "./missing:/missing"]
`;
    const file = write('app/compose.yaml', template);
    write('app/Dockerfile', 'FROM scratch\n');
    write('app/.dockerignore', 'compose.yaml\nDockerfile\nsecret.env\nprod.env\ndata\nignored.txt\n.env\n');
    write('app/secret.env', 'A=1\n');
    write('app/prod.env', 'B=2\n');
    write('app/.env', 'PRIVATE=1\n');
    write('app/data/seed.sql', 'select 1;\n');
    write('app/ignored.txt', 'x\n');
    write('app/kept.txt', 'y\n');
    const packed = await pack(file, template, undefined, { STAGE: 'prod' });
    expect(packed.filename).toBe('compose.yaml');
    expect(await entries(packed.stream)).toEqual([
      '.dockerignore',
      'Dockerfile',
      'compose.yaml',
      'data',
      'data/seed.sql',
      'kept.txt',
      'prod.env',
      'secret.env',
    ]);
  });

  it('still packs when the template does not validate (the server reports it, with positions)', async () => {
    const template = 'services:\n  app:\n    image: [\n';
    const file = write('broken/compose.yaml', template);
    write('broken/.dockerignore', 'compose.yaml\n');
    const packed = await pack(file, template);
    expect(await entries(packed.stream)).toEqual(['.dockerignore', 'compose.yaml']);
  });

  it('with a root above the template: the filename is relative to it, paths above the template are sent', async () => {
    const template = 'services:\n  app:\n    image: x\n    env_file: ../shared.env\n';
    const file = write('mono/deploy/compose.yaml', template);
    write('mono/shared.env', 'A=1\n');
    write('mono/.dockerignore', '*.env\n');
    const packed = await pack(file, template, join(dir, 'mono'));
    expect(packed.filename).toBe('deploy/compose.yaml');
    expect(await entries(packed.stream)).toEqual([
      '.dockerignore',
      'deploy',
      'deploy/compose.yaml',
      'shared.env',
    ]);
  });

  it('notes a path outside the folder (it is not sent) and does not force it', async () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const template =
      'services:\n  app:\n    image: x\n    env_file: ../outside.env\n    volumes: ["/etc:/host-etc"]\n';
    const file = write('near/inner/compose.yaml', template);
    write('near/outside.env', 'A=1\n');
    const packed = await pack(file, template);
    expect(await entries(packed.stream)).toEqual(['compose.yaml']);
    const said = stderr.mock.calls.map((c) => String(c[0])).join('');
    expect(said).toMatch(/note: env-file \S*outside\.env is outside \S*inner and is not sent/);
    expect(said).toMatch(/note: bind \/etc is outside/);
  });

  it('refuses a template outside the root, a root that is not a folder, / and the home folder', async () => {
    const template = 'services: {}\n';
    const file = write('lone/compose.yaml', template);
    await expect(pack(file, template, join(dir, 'app'))).rejects.toThrow(/is not inside/);
    await expect(pack(file, template, join(dir, 'lone', 'compose.yaml'))).rejects.toThrow(/is not a folder/);
    await expect(pack(file, template, join(dir, 'nowhere'))).rejects.toBeInstanceOf(UsageError);
    await expect(pack(file, template, '/')).rejects.toThrow(/refusing to upload all of \//);
    await expect(pack(join(homedir(), 'compose.yaml'), template, homedir())).rejects.toThrow(
      /refusing to upload all of/,
    );
  });

  it('refuses a folder with a link that leads outside it, as a usage error', async () => {
    const template = 'services: {}\n';
    const file = write('linked/compose.yaml', template);
    symlinkSync('/etc/passwd', join(dir, 'linked', 'passwd'));
    const err = await pack(file, template).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toContain('passwd');
  });

  it('refuses a template that is itself a link to a file outside', async () => {
    mkdirSync(join(dir, 'sneaky'), { recursive: true });
    write('elsewhere/compose.yaml', 'services: {}\n');
    symlinkSync(join(dir, 'elsewhere', 'compose.yaml'), join(dir, 'sneaky', 'compose.yaml'));
    const err = await pack(join(dir, 'sneaky', 'compose.yaml'), 'services: {}\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
  });
});
