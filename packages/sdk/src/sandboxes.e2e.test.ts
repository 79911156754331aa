/** The SDK's sandboxes against a real server and real Docker. */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';
import { CommandTimeoutError, NotFoundError, Sandbox } from './index.js';

describe('Sandbox (SDK) on a real server', () => {
  let t: TestServer;
  let sbx: Sandbox;
  const connection = () => ({ baseUrl: t.server.url, token: t.token });
  beforeAll(async () => {
    t = await startTestServer();
    sbx = await Sandbox.create({
      ...connection(),
      timeoutMs: 120_000,
      metadata: { suite: 'sdk' },
      envs: { MODE: 'test' },
    });
  }, 300_000);
  afterAll(async () => {
    for (const s of await Sandbox.list(connection()))
      await (await Sandbox.connect(s.id, connection())).kill();
    await t.close();
  });

  it('runs a command: exit code, output, the sandbox’s variables; a non-zero exit resolves', async () => {
    expect(await sbx.commands.run('echo "mode=$MODE"')).toEqual({
      exitCode: 0,
      stdout: 'mode=test\n',
      stderr: '',
    });
    const failed = await sbx.commands.run('echo no >&2; exit 42');
    expect(failed).toEqual({ exitCode: 42, stdout: '', stderr: 'no\n' });
  });

  it('streams output as it is produced, stdout and stderr in the order they were written', async () => {
    const seen: string[] = [];
    const started = Date.now();
    const times: number[] = [];
    await sbx.commands.run('for i in 1 2 3; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done', {
      onStdout: (d) => {
        seen.push(`stdout:${d.trim()}`);
        times.push(Date.now() - started);
      },
      onStderr: (d) => seen.push(`stderr:${d.trim()}`),
    });
    expect(seen).toEqual([
      'stdout:out1',
      'stderr:err1',
      'stdout:out2',
      'stderr:err2',
      'stdout:out3',
      'stderr:err3',
    ]);
    // The first line arrived long before the command ended (it takes 1.2 s).
    expect(times[0]).toBeLessThan(times[2]! - 500);
  });

  it('stdin, cwd and the command timeout', async () => {
    expect((await sbx.commands.run('tr a-z A-Z', { stdin: 'shout\n' })).stdout).toBe('SHOUT\n');
    expect((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout).toBe('/tmp\n');
    const error = await sbx.commands
      .run('echo before; sleep 30', { timeoutMs: 500 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandTimeoutError);
    expect((error as CommandTimeoutError).stdout).toBe('before\n');
  });

  it('a background command: pid, listed, stdin, kill, wait', async () => {
    const lines: string[] = [];
    const handle = await sbx.commands.run('while read line; do echo "got $line"; done', {
      background: true,
      stdin: true,
      onStdout: (d) => lines.push(d),
    });
    expect(handle.pid).toBeGreaterThan(0);
    expect((await sbx.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    await handle.sendStdin('one\n');
    for (let i = 0; i < 50 && lines.join('') !== 'got one\n'; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(lines.join('')).toBe('got one\n');
    await handle.kill();
    const result = await handle.wait();
    expect(result.signal).toBe('SIGKILL');
    expect(result.stdout).toBe('got one\n');
  });

  it('files: 1 MiB of random bytes round-trip, text, list, exists, makeDir, rename, remove', async () => {
    const data = randomBytes(1024 * 1024);
    await sbx.files.write('/home/user/blob.bin', new Uint8Array(data));
    expect(Buffer.from(await sbx.files.read('/home/user/blob.bin', { format: 'bytes' })).equals(data)).toBe(
      true,
    );
    await sbx.files.write('notes/a.txt', 'hello\n');
    expect(await sbx.files.read('notes/a.txt')).toBe('hello\n');
    expect((await sbx.files.list('notes')).map((e) => e.name)).toEqual(['a.txt']);
    expect(await sbx.files.makeDir('notes/sub')).toBe(true);
    expect(await sbx.files.makeDir('notes/sub')).toBe(false);
    await sbx.files.rename('notes/a.txt', 'notes/sub/b.txt');
    expect(await sbx.files.exists('notes/a.txt')).toBe(false);
    expect(await sbx.files.exists('notes/sub/b.txt')).toBe(true);
    await sbx.files.remove('notes');
    expect(await sbx.files.exists('notes')).toBe(false);
    await expect(sbx.files.read('nope.txt')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('pause keeps a process’s memory; resume goes on; list filters by metadata and state', async () => {
    const counter = await sbx.commands.run(
      'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; mv /tmp/n /tmp/count; sleep 0.05; done',
      {
        background: true,
        timeoutMs: 0,
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 400));
    await sbx.pause();
    expect((await Sandbox.list({ ...connection(), state: ['paused'] })).map((s) => s.id)).toEqual([sbx.id]);
    const resumed = await Sandbox.resume(sbx.id, connection());
    const count = Number((await resumed.files.read('/tmp/count')).trim());
    expect(count).toBeGreaterThan(3);
    await counter.kill();
    expect((await Sandbox.list({ ...connection(), metadata: { suite: 'sdk' } })).map((s) => s.id)).toEqual([
      sbx.id,
    ]);
    expect(await Sandbox.list({ ...connection(), metadata: { suite: 'other' } })).toEqual([]);
  });

  it('getHost: a server started inside is reachable through the gateway, with no network in the sandbox', async () => {
    const server = await sbx.commands.run(
      `perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { while (<$c>) { last if /^\\r?$/ } print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from the sandbox\\n"; close $c }'`,
      { background: true, timeoutMs: 0 },
    );
    const url = new URL(sbx.getHost(8000));
    expect(url.hostname).toBe(`8000--${sbx.id}.localhost`);
    let answer = { status: 0, text: '' };
    for (let i = 0; i < 50 && answer.status !== 200; i++) {
      answer = await t.viaGateway(url.host, '/');
      if (answer.status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(answer).toEqual({ status: 200, text: 'hello from the sandbox\n' });
    // A port nothing listens on is a 502 that says so; an unknown sandbox is not routed to one.
    const closed = await t.viaGateway(new URL(sbx.getHost(9)).host, '/');
    expect(closed.status).toBe(502);
    expect(closed.text).toMatch(/Nothing answers on port 9/);
    expect((await t.viaGateway(`8000--zz00zz00.localhost:${url.port}`, '/')).status).toBe(404);
    await server.kill();
  });

  it('setTimeout, kill, and connect to one that ended', async () => {
    const other = await Sandbox.create(connection());
    await other.setTimeout(600_000);
    expect(Date.parse((await other.getInfo()).expiresAt)).toBeGreaterThan(Date.now() + 500_000);
    await other.kill();
    expect((await other.getInfo()).endedReason).toBe('killed');
    await expect(Sandbox.connect(other.id, connection())).rejects.toBeInstanceOf(NotFoundError);
  });
});
