/**
 * `mayfly validate`, run as users run it (the real bin, as a child process) on throwaway folders:
 * no server and no Docker involved, which the connection counter proves for one case.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose references are the subject
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { ValidateResult } from './validate.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));

const base = mkdtempSync(join(tmpdir(), 'mayfly-validate-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let folders = 0;
/** A new folder holding `files` (path → content). */
function folder(files: Record<string, string>): string {
  const dir = join(base, `t${folders++}`);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `mayfly validate args…` in `cwd`, with the outer MAYFLY_* and COMPOSE_* settings left out. */
function validate(cwd: string, args: string[] = [], env: Record<string, string> = {}): Promise<Run> {
  const outer = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_') && !key.startsWith('COMPOSE_')),
  );
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'validate', ...args],
      { cwd, env: { ...outer, MAYFLY_HOME: join(base, 'home'), NO_COLOR: '1', ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const json = (run: Run) => JSON.parse(run.stdout) as ValidateResult;

const APP = [
  'services:',
  '  web:',
  '    build: ./app',
  '    ports: ["8080"]',
  '    depends_on: [db]',
  '  db:',
  '    image: postgres:16',
  '  migrate:',
  '    image: postgres:16',
  '    x-mayfly: { job: true }',
  '',
].join('\n');

describe('mayfly validate', () => {
  it('finds the default template, says it is valid and exits 0, without a server', async () => {
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    let connections = 0;
    server.on('connection', () => connections++);
    const { port } = server.address() as { port: number };
    try {
      const dir = folder({ 'compose.yaml': APP, 'app/Dockerfile': 'FROM scratch\n' });
      const run = await validate(dir, [], { MAYFLY_URL: `http://127.0.0.1:${port}` });
      expect(run).toEqual({ code: 0, stdout: 'compose.yaml is valid: web, db, migrate (job)\n', stderr: '' });
      expect(connections).toBe(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('prints warnings with their positions and still exits 0', async () => {
    const dir = folder({
      'compose.yaml':
        'services:\n  web:\n    image: nginx\n    privileged: true\n    environment: ["A=${UNSET}"]\n',
    });
    const run = await validate(dir);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('compose.yaml is valid, 2 warnings: web\n');
    expect(run.stderr.split('\n')).toEqual([
      'compose.yaml:4:5: warning: services.web.privileged: not supported by Mayfly, ignored: containers never run privileged',
      'compose.yaml:5:22: warning: services.web.environment[0]: "UNSET" is not set, so it is empty: pass it with --input or in the environment, or give a default like ${UNSET:-value}',
      '',
    ]);
  });

  it('prints errors, then warnings, with their positions, and exits 2', async () => {
    const dir = folder({
      'compose.yaml':
        'services:\n  web:\n    image: nginx\n    ports: ["80000"]\n    links: [db]\n  db: { image: db, depends_on: [nope] }\n',
    });
    const run = await validate(dir);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.split('\n')).toEqual([
      'compose.yaml:4:13: services.web.ports[0]: invalid port "80000": expected "80", "8080:80" or "127.0.0.1:8080:80/udp"',
      'compose.yaml:6:33: services.db.depends_on[0]: unknown service "nope"',
      'compose.yaml:5:5: warning: services.web.links: ignored: services reach each other by service name',
      'mayfly: compose.yaml is not valid: 2 errors',
      '',
    ]);
  });

  it('--json prints exactly the result object, valid or not', async () => {
    const dir = folder({ 'compose.yaml': APP, 'app/Dockerfile': 'FROM scratch\n' });
    const run = await validate(dir, ['--json']);
    expect([run.code, run.stderr]).toEqual([0, '']);
    expect(json(run)).toEqual({
      valid: true,
      errors: [],
      warnings: [],
      services: [
        {
          name: 'web',
          kind: 'service',
          image: null,
          build: 'app',
          replicas: 1,
          ports: [{ container: 8080, protocol: 'tcp', http: true }],
        },
        { name: 'db', kind: 'service', image: 'postgres:16', build: null, replicas: 1, ports: [] },
        { name: 'migrate', kind: 'job', image: 'postgres:16', build: null, replicas: 1, ports: [] },
      ],
    });

    const bad = folder({ 'compose.yaml': 'services:\n  web:\n    imgae: nginx\n' });
    const invalid = await validate(bad, ['--json']);
    expect(invalid.code).toBe(2);
    expect(json(invalid)).toEqual({
      valid: false,
      errors: [
        {
          file: 'compose.yaml',
          line: 3,
          column: 5,
          path: 'services.web.imgae',
          message: 'unknown key (did you mean "image"?)',
        },
      ],
      warnings: [],
      services: [],
    });
  });

  it('merges several -f files as Compose does, and places issues in the file that has them', async () => {
    const dir = folder({
      'compose.yaml': APP,
      'app/Dockerfile': 'FROM scratch\n',
      'ci/compose.ci.yaml': [
        'services:',
        '  db: { image: postgres:17, environment: [POSTGRES_DB=ci] }',
        '  tests:',
        // Relative to the first file's folder, as every path of an override file.
        '    extends: { file: common.yaml, service: runner }',
        '',
      ].join('\n'),
      'common.yaml': 'services:\n  runner: { build: ./app, command: [npm, test] }\n',
    });
    const run = await validate(dir, ['-f', 'compose.yaml', '-f', 'ci/compose.ci.yaml', '--json']);
    expect([run.code, run.stderr]).toEqual([0, '']);
    expect(json(run).services.map((s) => [s.name, s.image, s.build])).toEqual([
      ['web', null, 'app'],
      ['db', 'postgres:17', null],
      ['migrate', 'postgres:16', null],
      ['tests', null, 'app'],
    ]);

    writeFileSync(join(dir, 'ci/bad.yaml'), 'services:\n  web:\n    replicas: 3\n');
    const bad = await validate(dir, ['-f', 'compose.yaml', '-f', 'ci/bad.yaml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(
      'ci/bad.yaml:3:5: services.web.replicas: unknown key\nmayfly: compose.yaml is not valid: 1 error\n',
    );
  });

  it('reads ${VAR} from -i, then the shell, then .env beside the first file', async () => {
    const dir = folder({
      'compose.yaml':
        'services:\n  web:\n    image: app:${TAG}\n    ports: ["${PORT}"]\n    user: "${USER_ID}"\n',
      '.env': 'TAG=from-dotenv\nPORT=1000\nUSER_ID=1\n',
    });
    const ports = (run: Run) => json(run).services[0]!.ports.map((p) => p.container);
    const fromDotEnv = await validate(dir, ['--json']);
    expect([json(fromDotEnv).services[0]!.image, ports(fromDotEnv)]).toEqual(['app:from-dotenv', [1000]]);
    const fromShell = await validate(dir, ['--json'], { PORT: '2000' });
    expect(ports(fromShell)).toEqual([2000]);
    const fromInput = await validate(dir, ['--json', '-i', 'PORT=3000', '-i', 'TAG=given'], { PORT: '2000' });
    expect([json(fromInput).services[0]!.image, ports(fromInput)]).toEqual(['app:given', [3000]]);
  });

  it('activates profiles with --profile, else COMPOSE_PROFILES', async () => {
    const dir = folder({
      'compose.yaml': 'services:\n  web: { image: nginx }\n  debug: { image: busybox, profiles: [debug] }\n',
    });
    const names = (run: Run) => json(run).services.map((s) => s.name);
    expect(names(await validate(dir, ['--json']))).toEqual(['web']);
    expect(names(await validate(dir, ['--json', '--profile', 'debug']))).toEqual(['web', 'debug']);
    expect(names(await validate(dir, ['--json'], { COMPOSE_PROFILES: 'debug' }))).toEqual(['web', 'debug']);
  });

  it('refuses host paths outside the folder up would send, and files it cannot read', async () => {
    const dir = folder({ 'app/compose.yaml': 'services:\n  web: { image: x, env_file: ../secret.env }\n' });
    writeFileSync(join(dir, 'secret.env'), 'A=1\n');
    const outside = await validate(join(dir, 'app'));
    expect(outside.code).toBe(2);
    expect(outside.stderr).toContain(
      'compose.yaml:2:30: services.web.env_file: path "../secret.env" is outside the directory templates may use',
    );
    expect((await validate(join(dir, 'app'), ['--root', '..'])).code).toBe(0);
    const missing = await validate(dir, ['-f', 'nope.yaml']);
    expect([missing.code, missing.stderr]).toEqual([2, 'mayfly: cannot read nope.yaml: ENOENT\n']);
  });
});
