/**
 * The unmodified `e2b` SDK from npm against a real Mayfly server and real Docker: its own calls,
 * its own error classes. What it does not do is in docs/e2b.md.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { CreatedToken } from '@mayfly/contract';
import {
  CommandExitError,
  FileNotFoundError,
  type FilesystemEvent,
  InvalidArgumentError,
  NotFoundError,
  Sandbox,
  SandboxError,
  SandboxNotFoundError,
  TimeoutError,
} from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { E2B_API_PATH, E2B_SANDBOX_PATH } from './e2b-api.js';
import { PolledWatchers } from './envd-watch.js';

/** Waits until `check` holds (a change in a sandbox is seen a moment later). */
async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`still not so after 5 s: ${check}`);
}

describe('the e2b SDK against Mayfly', () => {
  let t: TestServer;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;
  beforeAll(async () => {
    t = await startTestServer();
    const key = await t.api<CreatedToken>('POST', '/v1/tokens', {
      name: 'e2b',
      scope: 'write',
      format: 'e2b',
    });
    expect(key.body.token).toMatch(/^e2b_[0-9a-f]{64}$/);
    opts = {
      apiKey: key.body.token,
      apiUrl: `${t.server.url}${E2B_API_PATH}`,
      sandboxUrl: `${t.server.url}${E2B_SANDBOX_PATH}`,
    };
    sbx = await Sandbox.create('base', {
      ...opts,
      timeoutMs: 120_000,
      envs: { GREETING: 'hello' },
      metadata: { suite: 'e2b' },
    });
  }, 300_000);
  afterAll(async () => {
    await sbx?.kill().catch(() => {});
    await t.close();
  });
  /** A sandbox's data-plane key, as getInfo hands it to a key with write scope. */
  const keyOf = async (id: string) =>
    (
      (await (
        await fetch(`${opts.apiUrl}/sandboxes/${id}`, { headers: { 'x-api-key': opts.apiKey } })
      ).json()) as { envdAccessToken: string }
    ).envdAccessToken;
  /** A streaming Connect call, its request messages enveloped; the answer's messages. */
  const streamingCall = async (method: string, messages: unknown[], signal?: AbortSignal) => {
    const body = Buffer.concat(
      messages.map((m) => {
        const payload = Buffer.from(JSON.stringify(m));
        const head = Buffer.alloc(5);
        head.writeUInt32BE(payload.length, 1);
        return Buffer.concat([head, payload]);
      }),
    );
    return fetch(`${opts.sandboxUrl}/process.Process/${method}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/connect+json',
        'e2b-sandbox-id': sbx.sandboxId,
        'x-access-token': await keyOf(sbx.sandboxId),
      },
      body,
      ...(signal ? { signal } : {}),
    });
  };
  /** The JSON of each envelope of a Connect stream. */
  const envelopes = (bytes: Buffer) => {
    const out: { flags: number; message: Record<string, unknown> }[] = [];
    for (let at = 0; at + 5 <= bytes.length; at += 5 + bytes.readUInt32BE(at + 1))
      out.push({
        flags: bytes[at]!,
        message: JSON.parse(bytes.subarray(at + 5, at + 5 + bytes.readUInt32BE(at + 1)).toString()),
      });
    return out;
  };

  it('creates a sandbox whose id fits a host name, lists it by metadata, and gets its info', async () => {
    expect(sbx.sandboxId).toMatch(/^[a-z0-9]+$/);
    const info = await sbx.getInfo();
    expect(info).toMatchObject({ sandboxId: sbx.sandboxId, templateId: 'base', metadata: { suite: 'e2b' } });
    const page = Sandbox.list({ ...opts, query: { metadata: { suite: 'e2b' } } });
    const items = await page.nextItems();
    expect(items.map((s) => s.sandboxId)).toEqual([sbx.sandboxId]);
    expect(await Sandbox.list({ ...opts, query: { metadata: { suite: 'none' } } }).nextItems()).toEqual([]);
  });

  it('runs commands: output, exit codes, envs, cwd, streaming callbacks', async () => {
    const seen: string[] = [];
    const result = await sbx.commands.run('echo "$GREETING $WHO"; echo warn >&2', {
      envs: { WHO: 'there' },
      onStdout: (d) => void seen.push(`out:${d}`),
      onStderr: (d) => void seen.push(`err:${d}`),
    });
    expect(result).toMatchObject({ exitCode: 0, stdout: 'hello there\n', stderr: 'warn\n' });
    // (Two pipes: the order between them is the kernel's.)
    expect(seen.sort()).toEqual(['err:warn\n', 'out:hello there\n']);
    expect((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout).toBe('/tmp\n');
    const failed = await sbx.commands.run('echo out; exit 3').catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(CommandExitError);
    expect((failed as CommandExitError).exitCode).toBe(3);
    expect((failed as CommandExitError).stdout).toBe('out\n');
  });

  it('background commands: listed, stdin, killed', async () => {
    const handle = await sbx.commands.run('cat', { background: true, stdin: true });
    expect((await sbx.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    await sbx.commands.sendStdin(handle.pid, 'typed\n');
    await sbx.commands.closeStdin(handle.pid);
    const done = await handle.wait();
    expect(done.stdout).toBe('typed\n');
    const sleeper = await sbx.commands.run('sleep 1000', { background: true });
    expect(await sleeper.kill()).toBe(true);
    await expect(sleeper.wait()).rejects.toBeInstanceOf(CommandExitError);
    expect(await sbx.commands.kill(999_999)).toBe(false);
    await expect(sbx.commands.connect(999_999)).rejects.toBeInstanceOf(NotFoundError);
    await expect(sbx.commands.run('true', { cwd: '/no/such/dir' })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });

  it('getHost: a server started inside is reachable through the gateway at the host the SDK builds', async () => {
    const server = await sbx.commands.run(
      `perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { while (<$c>) { last if /^\\r?$/ } print $c "HTTP/1.0 200 OK\\r\\n\\r\\nhello via e2b\\n"; close $c }'`,
      { background: true, timeoutMs: 0 },
    );
    const host = sbx.getHost(8000);
    expect(host).toBe(`8000-${sbx.sandboxId}.localhost`);
    const gatewayPort = new URL(t.server.url).port;
    let answer = { status: 0, text: '' };
    for (let i = 0; i < 50 && answer.status !== 200; i++) {
      answer = await t.viaGateway(`${host}:${gatewayPort}`, '/');
      if (answer.status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(answer).toEqual({ status: 200, text: 'hello via e2b\n' });
    expect((await t.viaGateway(`8000-zz00zz00.localhost:${gatewayPort}`, '/')).status).toBe(404);
    await server.kill();
  });

  it('a command past its timeout is killed and reported as a timeout', async () => {
    await expect(sbx.commands.run('sleep 30', { timeoutMs: 1_000 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('files: binary round trip, list, exists, makeDir, rename, remove', async () => {
    const bytes = randomBytes(1024 * 1024);
    const written = await sbx.files.write(
      'data/blob.bin',
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer,
    );
    expect(written).toMatchObject({ path: '/home/user/data/blob.bin', name: 'blob.bin' });
    const read = await sbx.files.read('/home/user/data/blob.bin', { format: 'bytes' });
    expect(Buffer.from(read).equals(bytes)).toBe(true);
    await sbx.files.write('/home/user/data/note.txt', 'hi');
    expect(await sbx.files.read('data/note.txt')).toBe('hi');
    const listed = await sbx.files.list('/home/user/data');
    expect(listed.map((e) => [e.name, e.type]).sort()).toEqual([
      ['blob.bin', 'file'],
      ['note.txt', 'file'],
    ]);
    expect(await sbx.files.exists('/home/user/data/note.txt')).toBe(true);
    expect(await sbx.files.exists('/home/user/data/none')).toBe(false);
    expect(await sbx.files.makeDir('/home/user/made/deep')).toBe(true);
    expect(await sbx.files.makeDir('/home/user/made/deep')).toBe(false);
    const moved = await sbx.files.rename('/home/user/data/note.txt', '/home/user/made/note.txt');
    expect(moved).toMatchObject({ name: 'note.txt', path: '/home/user/made/note.txt', type: 'file' });
    await sbx.files.remove('/home/user/made');
    expect(await sbx.files.exists('/home/user/made')).toBe(false);
    await expect(sbx.files.read('/home/user/none.txt')).rejects.toBeInstanceOf(NotFoundError);
    // Compressed uploads (octet-stream, gzip) and reading as a stream.
    await sbx.files.write('/home/user/zipped.txt', 'compressed on the way', { gzip: true });
    const streamed = await sbx.files.read('/home/user/zipped.txt', { format: 'stream' });
    expect(await new Response(streamed).text()).toBe('compressed on the way');
    // Nothing runs as root in a Mayfly sandbox.
    await expect(sbx.commands.run('id', { user: 'root' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('StreamInput (client streaming, as the Python SDK may send): messages to a running command, in order', async () => {
    const cat = await sbx.commands.run('cat', { background: true, stdin: true });
    const b64 = (text: string) => Buffer.from(text).toString('base64');
    const res = await streamingCall('StreamInput', [
      { start: { process: { pid: cat.pid } } },
      { data: { input: { stdin: b64('hello ') } } },
      { keepalive: {} },
      { data: { input: { stdin: b64('world\n') } } },
    ]);
    expect(res.status).toBe(200);
    expect(envelopes(Buffer.from(await res.arrayBuffer()))).toEqual([
      { flags: 0, message: {} },
      { flags: 2, message: {} },
    ]);
    await sbx.commands.closeStdin(cat.pid);
    expect((await cat.wait()).stdout).toBe('hello world\n');
    // Out of order, or for no process: the stream's end says why.
    const early = await streamingCall('StreamInput', [{ data: { input: { stdin: b64('x') } } }]);
    expect(envelopes(Buffer.from(await early.arrayBuffer())).at(-1)).toMatchObject({
      flags: 2,
      message: { error: { code: 'invalid_argument', message: 'start comes first' } },
    });
    const none = await streamingCall('StreamInput', [{ start: { process: { pid: 999_999 } } }]);
    expect(envelopes(Buffer.from(await none.arrayBuffer())).at(-1)).toMatchObject({
      message: { error: { code: 'not_found' } },
    });
  });

  it('a client that stops reading holds the command, not the server: output waits in the sandbox', async () => {
    // 64 MiB of output; nothing is read after the first message. Were it buffered by the server,
    // the command would finish at once and write its mark.
    const stopped = new AbortController();
    const res = await streamingCall(
      'Start',
      [
        {
          process: {
            cmd: '/bin/sh',
            args: ['-c', 'head -c 67108864 /dev/zero; touch /tmp/all-written'],
          },
        },
      ],
      stopped.signal,
    );
    const reader = res.body!.getReader();
    await reader.read();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const written = async () =>
      (await sbx.commands.run('test -e /tmp/all-written && echo yes || echo no')).stdout === 'yes\n';
    expect(await written()).toBe(false);
    // Once the client goes away, what the command prints is dropped and it ends.
    stopped.abort();
    await until(written);
  });

  it('pty: an interactive shell in a terminal of its size, typed into, resized, exited', async () => {
    const chunks: Buffer[] = [];
    const screen = () => Buffer.concat(chunks).toString('utf8');
    const type = (pid: number, line: string) => sbx.pty.sendInput(pid, new TextEncoder().encode(line));
    const terminal = await sbx.pty.create({
      cols: 80,
      rows: 24,
      timeoutMs: 0,
      onData: (data) => void chunks.push(Buffer.from(data)),
    });
    await type(terminal.pid, 'tty; stty size; echo "term=$TERM"\n');
    await until(() => /term=xterm-256color/.test(screen()));
    expect(screen()).toMatch(/\/dev\/pts\/\d+/);
    expect(screen()).toMatch(/24 80/);
    await sbx.pty.resize(terminal.pid, { cols: 100, rows: 30 });
    await type(terminal.pid, 'stty size\n');
    await until(() => /30 100/.test(screen()));
    // ^C reaches the foreground program through the terminal, not the shell.
    await type(terminal.pid, 'sleep 4242\n');
    // (Typed once the sleep runs: a ^C before would reach the shell instead.)
    const sleeping = "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c '[s]leep 4242' || true";
    await until(async () => (await sbx.commands.run(sleeping)).stdout.trim() !== '0');
    await type(terminal.pid, '\x03');
    await type(terminal.pid, 'echo "after=$?"\n');
    await until(() => /after=130/.test(screen()));
    await type(terminal.pid, 'exit 7\n');
    const ended = await terminal.wait().catch((e: unknown) => e);
    expect(ended).toBeInstanceOf(CommandExitError);
    expect((ended as CommandExitError).exitCode).toBe(7);
    // A command without a terminal cannot be resized.
    const plain = await sbx.commands.run('sleep 100', { background: true });
    await expect(sbx.pty.resize(plain.pid, { cols: 10, rows: 10 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await plain.kill();
  });

  it('watchDir: every change as it happens, in new directories too, with entries; stop ends the watch inside', async () => {
    await sbx.commands.run('mkdir -p /home/user/watched/sub');
    const seen: FilesystemEvent[] = [];
    const exits: unknown[] = [];
    const has = (name: string, type: string) => seen.some((e) => e.name === name && e.type === type);
    const watches = async () =>
      Number(
        (await sbx.commands.run("find /proc/[0-9]*/fd -lname 'anon_inode:inotify' 2>/dev/null | wc -l"))
          .stdout,
      );
    const handle = await sbx.files.watchDir('/home/user/watched', (e) => void seen.push(e), {
      recursive: true,
      includeEntry: true,
      timeoutMs: 0,
      onExit: (err) => void exits.push(err),
    });
    expect(await watches()).toBe(1);
    await sbx.files.write('/home/user/watched/a.txt', 'one');
    // A directory and a file in it made at once: the file is seen although the directory's own
    // watch did not exist yet when it was made.
    await sbx.commands.run(
      'cd /home/user/watched && mkdir -p sub/new && echo deep > sub/new/b.txt && chmod 600 a.txt && mv a.txt c.txt && rm c.txt',
    );
    await until(() => has('c.txt', 'remove'));
    await until(() => has('sub/new/b.txt', 'create'));
    for (const [name, type] of [
      ['a.txt', 'create'],
      ['a.txt', 'write'],
      ['a.txt', 'chmod'],
      ['a.txt', 'rename'],
      ['c.txt', 'create'],
      ['sub/new', 'create'],
    ])
      expect(has(name!, type!), `${type} ${name}`).toBe(true);
    expect(seen.find((e) => e.name === 'sub/new')?.entry).toMatchObject({
      type: 'dir',
      path: '/home/user/watched/sub/new',
    });
    // A directory moved out of the tree is no longer watched.
    await sbx.commands.run(
      'mkdir /home/user/watched/sub/out && mv /home/user/watched/sub/out /home/user/out && touch /home/user/out/late /home/user/watched/marker',
    );
    await until(() => has('marker', 'create'));
    expect(has('sub/out', 'rename')).toBe(true);
    expect(seen.some((e) => e.name.includes('late'))).toBe(false);
    expect(exits).toEqual([]); // (the SDK's stop() itself then tells onExit it aborted)
    await handle.stop();
    await until(async () => (await watches()) === 0);
    const before = seen.length;
    await sbx.commands.run('touch /home/user/watched/after-stop');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(seen.length).toBe(before);

    await expect(sbx.files.watchDir('/home/user/none', () => {})).rejects.toBeInstanceOf(FileNotFoundError);
    // The directory asked for may be a link to one.
    await sbx.commands.run('ln -s /home/user/watched /home/user/watched-link');
    const linked: string[] = [];
    const viaLink = await sbx.files.watchDir('/home/user/watched-link', (e) => void linked.push(e.name));
    await sbx.commands.run('touch /home/user/watched/through-link');
    await until(() => linked.includes('through-link'));
    await viaLink.stop();
    await sbx.files.write('/home/user/plain.txt', 'x');
    await expect(sbx.files.watchDir('/home/user/plain.txt', () => {})).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    // A watch past its timeout ends and says so.
    const timed: unknown[] = [];
    await sbx.files.watchDir('/home/user/watched', () => {}, {
      timeoutMs: 500,
      onExit: (err) => void timed.push(err),
    });
    await until(() => timed.length > 0);
    expect(timed[0]).toBeInstanceOf(TimeoutError);
    // Removing the watched directory ends the watch with why.
    const removed: unknown[] = [];
    await sbx.files.watchDir('/home/user/watched', () => {}, {
      timeoutMs: 0,
      onExit: (err) => void removed.push(err),
    });
    await sbx.commands.run('rm -rf /home/user/watched');
    await until(() => removed.length > 0);
    expect(String(removed[0])).toMatch(/the watched directory was removed/);
    await until(async () => (await watches()) === 0);
  });

  it('polled watchers (what the Python SDK uses): create, read the changes since the last read, remove; bounded', async () => {
    const key = await keyOf(sbx.sandboxId);
    const unary = async (method: string, body: unknown) => {
      const res = await fetch(`${opts.sandboxUrl}/filesystem.Filesystem/${method}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'e2b-sandbox-id': sbx.sandboxId,
          'x-access-token': key,
        },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    await sbx.commands.run('mkdir -p /home/user/polled');
    const created = await unary('CreateWatcher', { path: '/home/user/polled', recursive: false });
    expect(created.status).toBe(200);
    const watcherId = created.body.watcherId as string;
    await sbx.commands.run('touch /home/user/polled/one');
    const events: { name: string; type: string }[] = [];
    await until(async () => {
      const got = await unary('GetWatcherEvents', { watcherId });
      expect(got.status).toBe(200);
      events.push(...(got.body.events as typeof events));
      return events.some((e) => e.name === 'one' && e.type === 'EVENT_TYPE_CREATE');
    });
    // What was read is not read again.
    expect((await unary('GetWatcherEvents', { watcherId })).body.events).toEqual([]);
    expect((await unary('RemoveWatcher', { watcherId })).status).toBe(200);
    expect(await unary('GetWatcherEvents', { watcherId })).toMatchObject({
      status: 404,
      body: { code: 'not_found' },
    });
    // A sandbox has a bounded number of watchers.
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) {
      const made = await unary('CreateWatcher', { path: '/home/user/polled' });
      expect(made.status).toBe(200);
      ids.push(made.body.watcherId as string);
    }
    expect(await unary('CreateWatcher', { path: '/home/user/polled' })).toMatchObject({
      status: 429,
      body: { code: 'resource_exhausted' },
    });
    for (const id of ids) expect((await unary('RemoveWatcher', { watcherId: id })).status).toBe(200);
    // A tree too big to watch is refused, with why.
    await sbx.commands.run('mkdir -p /tmp/many && cd /tmp/many && mkdir $(seq 1 10001)');
    expect(await unary('CreateWatcher', { path: '/tmp/many', recursive: true })).toMatchObject({
      body: { message: expect.stringMatching(/more than 10000 directories/) },
    });
    await sbx.commands.run('rm -rf /tmp/many /home/user/polled');
  });

  it('polled watchers share one budget of unread changes: past it, the watcher whose change would pass it ends, with why', async () => {
    const sandboxes = t.server.sandboxes!;
    const holder = { tokenId: null, scope: 'write', project: null } as const;
    const watchers = new PolledWatchers(sandboxes, {
      perSandbox: 4,
      maxEvents: 1000,
      maxBytes: 1024 * 1024,
      totalBytes: 4000,
      idleMs: 60_000,
    });
    await sbx.files.makeDir('/home/user/budget');
    const request = { path: '/home/user/budget', recursive: false };
    const ids = [
      await watchers.create(sbx.sandboxId, request, holder),
      await watchers.create(sbx.sandboxId, request, holder),
    ];
    // Each watcher sees about 3,000 bytes of changes (as JSON): one alone fits, the two do not.
    await sbx.commands.run('cd /home/user/budget && for i in $(seq 100 139); do echo x > f$i; done');
    const ended: string[] = [];
    await until(() => {
      for (const id of ids.filter((i) => !ended.includes(i))) {
        try {
          watchers.take(sbx.sandboxId, id);
        } catch (err) {
          expect(err).toMatchObject({ code: 'resource_exhausted' });
          expect(String((err as Error).message)).toMatch(
            /watchers together hold as many unread changes as it keeps/,
          );
          ended.push(id);
        }
      }
      return ended.length > 0;
    });
    // An ended watcher is gone; what was read or removed gives its share back: a new one works.
    expect(() => watchers.take(sbx.sandboxId, ended[0]!)).toThrow(/not found/);
    watchers.closeAll();
    const fresh = await watchers.create(sbx.sandboxId, request, holder);
    await sbx.commands.run('touch /home/user/budget/after');
    await until(() => watchers.take(sbx.sandboxId, fresh).some((e) => e.name === 'after'));
    watchers.closeAll();
    await sbx.commands.run('rm -rf /home/user/budget');
  });

  it('refuses what a hostile client sends: no or another sandbox’s key, forged links, unknown sandboxes, big bodies, weak keys', async () => {
    const rpc = (sandbox: string, headers: Record<string, string>, body: string) =>
      fetch(`${opts.sandboxUrl}/process.Process/List`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sandbox, ...headers },
        body,
      });
    const key = await keyOf(sbx.sandboxId);
    expect((await rpc(sbx.sandboxId, { 'x-access-token': key }, '{}')).status).toBe(200);
    expect((await rpc(sbx.sandboxId, {}, '{}')).status).toBe(401);
    expect((await rpc(sbx.sandboxId, { 'x-access-token': 'f'.repeat(64) }, '{}')).status).toBe(401);
    // A key of other characters (longer in bytes than in length) is refused, not a server error.
    expect((await rpc(sbx.sandboxId, { 'x-access-token': `\u00e9${'f'.repeat(63)}` }, '{}')).status).toBe(
      401,
    );
    // Another sandbox's key opens only that sandbox.
    const other = await Sandbox.create('base', { ...opts, timeoutMs: 60_000 });
    try {
      expect(
        (await rpc(sbx.sandboxId, { 'x-access-token': await keyOf(other.sandboxId) }, '{}')).status,
      ).toBe(401);
    } finally {
      await other.kill();
    }
    const gone = await rpc('zz00000000', { 'x-access-token': key }, '{}');
    expect(gone.status).toBe(502);
    expect(await gone.json()).toMatchObject({ code: 502, message: 'The sandbox was not found' });
    const big = await rpc(
      sbx.sandboxId,
      { 'x-access-token': key },
      JSON.stringify({ pad: 'x'.repeat(2 * 1024 * 1024) }),
    );
    expect(big.status).toBe(429);

    // Signed links, as the SDK builds them (at the origin's root, no sandbox id: the signature
    // tells which sandbox), work for what they were signed for; changed ones do not.
    await sbx.files.write('/home/user/signed.txt', 'signed content');
    const link = new URL(await sbx.downloadUrl('/home/user/signed.txt'));
    expect(link.pathname).toBe('/files');
    const ok = await fetch(link);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('signed content');
    const otherPath = new URL(link);
    otherPath.searchParams.set('path', '/etc/passwd');
    expect((await fetch(otherPath)).status).toBe(401);
    const upload = await sbx.uploadUrl('/home/user/uploaded.txt');
    expect((await fetch(upload)).status).toBe(401); // a write link does not read
    const form = new FormData();
    form.append('file', new Blob(['sent by link']), 'uploaded.txt');
    expect((await fetch(upload, { method: 'POST', body: form })).status).toBe(200);
    expect(await sbx.files.read('/home/user/uploaded.txt')).toBe('sent by link');
    // Under the data plane's path with the sandbox named, too.
    const named = (sandboxId: string) =>
      fetch(`${opts.sandboxUrl}/files${link.search}`, { headers: { 'e2b-sandbox-id': sandboxId } });
    expect((await named(sbx.sandboxId)).status).toBe(200);
    const expired = new URL(await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 1 }));
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    expect((await fetch(expired)).status).toBe(401);

    // Keys are Mayfly tokens with their scopes: a read key cannot create.
    const reader = await t.api<CreatedToken>('POST', '/v1/tokens', {
      name: 'e2b-read',
      scope: 'read',
      format: 'e2b',
    });
    await expect(Sandbox.create('base', { ...opts, apiKey: reader.body.token })).rejects.toThrow(/403/);
    // Nor can it get a sandbox's data-plane key (which runs commands) from its info.
    const asReader = await fetch(`${opts.apiUrl}/sandboxes/${sbx.sandboxId}`, {
      headers: { 'x-api-key': reader.body.token },
    });
    expect(asReader.status).toBe(200);
    expect(await asReader.json()).not.toHaveProperty('envdAccessToken');
    expect((await Sandbox.list({ ...opts, apiKey: reader.body.token }).nextItems()).length).toBeGreaterThan(
      0,
    );
  });

  it('`eval "$(mayfly e2b env)"` is all the set-up: the SDK then needs no options', async () => {
    const cli = fileURLToPath(new URL('../../../cli/bin/mayfly.js', import.meta.url));
    const script = `eval "$("${process.execPath}" "${cli}" --server "${t.server.url}" e2b env)" && "${process.execPath}" --input-type=module -e "
      import { Sandbox } from 'e2b';
      const sbx = await Sandbox.create('base');
      const { stdout } = await sbx.commands.run('echo from-env');
      await sbx.kill();
      process.stdout.write(stdout);
    "`;
    // (Not execFileSync: the server answering it runs in this process.)
    const { stdout: out } = await promisify(execFile)('sh', ['-c', script], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', MAYFLY_TOKEN: t.token },
      cwd: fileURLToPath(new URL('.', import.meta.url)),
      encoding: 'utf8',
    });
    expect(out).toBe('from-env\n');
  });

  it('lists page by page (limit, nextToken), and a sandbox whose time is shortened ends', async () => {
    const made = await Promise.all(
      [1, 2, 3].map(() =>
        Sandbox.create('base', { ...opts, timeoutMs: 60_000, metadata: { suite: 'paging' } }),
      ),
    );
    try {
      const pages = Sandbox.list({ ...opts, limit: 2, query: { metadata: { suite: 'paging' } } });
      const first = await pages.nextItems();
      expect(first).toHaveLength(2);
      expect(pages.hasNext).toBe(true);
      const second = await pages.nextItems();
      expect(second).toHaveLength(1);
      expect(pages.hasNext).toBe(false);
      expect([...first, ...second].map((s) => s.sandboxId).sort()).toEqual(
        made.map((s) => s.sandboxId).sort(),
      );

      await made[0]!.setTimeout(1_000);
      for (let i = 0; i < 100 && (await made[0]!.isRunning()); i++)
        await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await made[0]!.isRunning()).toBe(false);
      await expect(made[0]!.getInfo()).rejects.toBeInstanceOf(SandboxNotFoundError);
    } finally {
      await Promise.all(made.map((m) => m.kill().catch(() => false)));
    }
  });

  it('setTimeout, pause, connect (resume) and kill; a killed sandbox is gone; a bad key is refused', async () => {
    const other = await Sandbox.create('base', { ...opts, timeoutMs: 60_000 });
    await other.setTimeout(120_000);
    await other.commands.run('echo kept > /tmp/state');
    expect(await other.pause()).toBe(true);
    expect(await other.isRunning()).toBe(false);
    const again = await Sandbox.connect(other.sandboxId, opts);
    expect((await again.commands.run('cat /tmp/state')).stdout).toBe('kept\n');
    expect(await again.kill()).toBe(true);
    expect(await again.kill()).toBe(false);
    expect(await again.isRunning()).toBe(false);
    await expect(Sandbox.connect(other.sandboxId, opts)).rejects.toBeInstanceOf(SandboxError);
    await expect(Sandbox.create('base', { ...opts, apiKey: 'e2b_0000' })).rejects.toThrow(/Unauthorized/);
  });
});
