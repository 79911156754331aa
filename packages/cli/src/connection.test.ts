import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isServerUp, startLocalServer } from './auto-start.js';
import { CliError } from './cli-error.js';
import { defaultServerUrl, mayflyHome, resolveTarget, resolveToken } from './connection.js';

const DEFAULT_URL = defaultServerUrl({});

let dir: string;
const started: number[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mayfly-conn-'));
});
afterAll(() => {
  for (const pid of started) {
    try {
      process.kill(pid);
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('resolveTarget', () => {
  it('prefers --server, then MAYFLY_URL, then the implicit local default', () => {
    const env = { MAYFLY_URL: 'http://from-env:1234/' };
    expect(resolveTarget('https://flag.example/mayfly/', env)).toEqual({
      url: 'https://flag.example/mayfly',
      implicit: false,
    });
    expect(resolveTarget(undefined, env)).toEqual({ url: 'http://from-env:1234', implicit: false });
    expect(resolveTarget(undefined, { MAYFLY_URL: '' })).toEqual({ url: DEFAULT_URL, implicit: true });
    expect(DEFAULT_URL).toBe('http://127.0.0.1:7070');
    expect(resolveTarget(undefined, { MAYFLY_PORT: '7171' })).toEqual({
      url: 'http://127.0.0.1:7171',
      implicit: true,
    });
    expect(resolveTarget(undefined, {})).toEqual({ url: 'http://127.0.0.1:7070', implicit: true });
  });

  it('rejects what is not an http(s) URL', () => {
    expect(() => resolveTarget('nope', {})).toThrow(/invalid server URL/);
    expect(() => resolveTarget('ftp://x', {})).toThrow(/only http and https/);
  });
});

describe('resolveToken', () => {
  it('prefers MAYFLY_TOKEN, else reads the admin token, for the local default server only', () => {
    const home = join(dir, 'home');
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, 'admin-token'), 'admin-secret\n');
    expect(resolveToken(DEFAULT_URL, { MAYFLY_HOME: home, MAYFLY_TOKEN: 'env-token' })).toBe('env-token');
    expect(resolveToken(DEFAULT_URL, { MAYFLY_HOME: home })).toBe('admin-secret');
    expect(resolveToken('http://127.0.0.1:7070/', { MAYFLY_HOME: home })).toBe('admin-secret');
    expect(resolveToken('http://127.0.0.1:8080', { MAYFLY_HOME: home })).toBeUndefined();
    expect(resolveToken('https://mayfly.example', { MAYFLY_HOME: home })).toBeUndefined();
    expect(resolveToken(DEFAULT_URL, { MAYFLY_HOME: join(dir, 'empty') })).toBeUndefined();
  });

  it('the data directory is MAYFLY_HOME, else ~/.mayfly', () => {
    expect(mayflyHome({ MAYFLY_HOME: '/srv/mayfly' })).toBe('/srv/mayfly');
    expect(mayflyHome({})).toMatch(/\.mayfly$/);
  });
});

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A stand-in for the CLI's bin: logs its arguments, then behaves as told. */
function fakeBin(name: string, behaviour: 'serve' | 'crash' | 'hang'): string {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(
    file,
    `import { createServer } from 'node:http';
const args = process.argv.slice(2);
console.log('fake bin', JSON.stringify(args));
// Never outlive the test run, whatever happens to it.
setTimeout(() => process.exit(0), 20_000).unref();
if (${JSON.stringify(behaviour)} === 'crash') { console.error('boom'); process.exit(3); }
if (${JSON.stringify(behaviour)} === 'serve') {
  const port = Number(args[args.indexOf('--port') + 1]);
  createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ ok: true, version: 'fake' }));
  }).listen(port, '127.0.0.1');
}
if (${JSON.stringify(behaviour)} === 'hang') setInterval(() => {}, 1000);
`,
  );
  return file;
}

describe('startLocalServer', () => {
  it('starts `serve --port P --data DIR` in the background, logging to DIR/server.log, and waits for /healthz', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = join(dir, 'data-ok');
    expect(await isServerUp(url)).toBe(false);
    const result = await startLocalServer({ url, dataDir, bin: fakeBin('ok', 'serve') });
    started.push(result.pid);
    expect(result.logFile).toBe(join(dataDir, 'server.log'));
    expect(await isServerUp(url)).toBe(true);
    expect(readFileSync(result.logFile, 'utf8')).toContain(
      `fake bin ${JSON.stringify(['serve', '--port', String(port), '--data', dataDir])}`,
    );
  });

  it('fails pointing at the log when the server exits during startup', async () => {
    const dataDir = join(dir, 'data-crash');
    const url = `http://127.0.0.1:${await freePort()}`;
    const err = await startLocalServer({ url, dataDir, bin: fakeBin('crash', 'crash') }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toBe('the local Mayfly server exited during startup (exit code 3)');
    expect((err as CliError).extra.hint).toBe(`see ${join(dataDir, 'server.log')}`);
    expect(readFileSync(join(dataDir, 'server.log'), 'utf8')).toContain('boom');
  });

  it('fails pointing at the log when the server does not answer in time', async () => {
    const dataDir = join(dir, 'data-hang');
    const url = `http://127.0.0.1:${await freePort()}`;
    const err = await startLocalServer({ url, dataDir, bin: fakeBin('hang', 'hang'), timeoutMs: 800 }).catch(
      (e: unknown) => e,
    );
    expect((err as CliError).message).toBe(`the local Mayfly server did not answer on ${url} within 0.8s`);
    expect((err as CliError).extra.hint).toContain('server.log');
  });
});
