import { afterEach, describe, expect, it, vi } from 'vitest';
import { createProgram } from '../program.js';
import type { RunningServer, StartServerOptions } from './serve.js';

afterEach(() => {
  vi.restoreAllMocks();
});

function captureStdout(): string[] {
  const lines: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    lines.push(String(chunk));
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  return lines;
}

/** Runs `mayfly serve …` in-process with a stand-in `startServer`, then sends `signal`. */
async function serve(args: string[], created: boolean, signal: NodeJS.Signals = 'SIGINT') {
  const calls: StartServerOptions[] = [];
  const close = vi.fn(async () => {});
  const running: RunningServer = {
    url: 'http://127.0.0.1:7071',
    gatewayUrl: 'http://localhost:7071',
    adminTokenFile: created ? '/data/admin-token' : null,
    adminTokenCreated: created,
    close,
  };
  const program = createProgram({
    serve: {
      loadServer: async () => ({
        startServer: async (options) => {
          calls.push(options);
          return running;
        },
      }),
    },
  });
  const stdout = captureStdout();
  const done = program.parseAsync(['node', 'mayfly', ...args]);
  await vi.waitFor(() => expect(stdout.join('')).toMatch(/Press Ctrl-C|"url"/));
  process.emit(signal);
  await done;
  return { calls, close, stdout: stdout.join('') };
}

describe('mayfly serve', () => {
  it('passes its options to startServer, says where it listens, and closes on SIGINT', async () => {
    const { calls, close, stdout } = await serve(
      [
        'serve',
        '--port',
        '7071',
        '--data',
        '/data',
        '--db',
        'postgres://db/mayfly',
        '--host',
        '0.0.0.0',
        '--base-domain',
        'dev.test',
      ],
      true,
    );
    expect(calls).toEqual([
      {
        port: 7071,
        host: '0.0.0.0',
        dataDir: '/data',
        dbUrl: 'postgres://db/mayfly',
        baseDomain: 'dev.test',
      },
    ]);
    expect(stdout).toContain('Mayfly server listening on http://127.0.0.1:7071');
    expect(stdout).toContain('admin token written to /data/admin-token');
    expect(close).toHaveBeenCalledOnce();
  });

  it('uses the defaults, says nothing about a token that already existed, and closes on SIGTERM', async () => {
    const { calls, close, stdout } = await serve(['serve'], false, 'SIGTERM');
    expect(calls[0]).toMatchObject({ port: 7070, host: '127.0.0.1', baseDomain: 'localhost' });
    expect(calls[0]).not.toHaveProperty('dbUrl');
    expect(stdout).not.toContain('admin token');
    expect(close).toHaveBeenCalledOnce();
  });

  it('--json prints where it listens as JSON', async () => {
    const { stdout } = await serve(['serve', '--json', '--data', '/data'], true);
    expect(JSON.parse(stdout)).toEqual({
      url: 'http://127.0.0.1:7071',
      gatewayUrl: 'http://localhost:7071',
      adminTokenFile: '/data/admin-token',
      adminTokenCreated: true,
      dataDir: '/data',
    });
  });
});
