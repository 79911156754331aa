import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { SandboxInfo } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectTerminal,
  containerExists,
  openTerminal,
  runInSandbox as run,
  startInSandbox,
  type TerminalClient,
} from '../test-support/sandboxes.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';
import { attachment } from './sandbox-routes.js';

describe('sandboxes through the API', () => {
  let t: TestServer;
  let id: string;
  beforeAll(async () => {
    t = await startTestServer();
    // The first creation builds the template (cached by content afterwards).
    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', {
      template: 'base',
      timeoutMs: 120_000,
      envs: { GREETING: 'hi' },
      metadata: { suite: 'api' },
    });
    expect(created.status).toBe(201);
    id = created.body.id;
  }, 300_000);
  afterAll(async () => {
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
    await t.close();
  });

  it('creates a running sandbox with an id that fits a host name, and lists it by metadata', async () => {
    expect(id).toMatch(/^[a-z0-9]+$/);
    const { body } = await t.api<SandboxInfo>('GET', `/v1/sandboxes/${id}`);
    expect(body).toMatchObject({
      id,
      template: 'base',
      state: 'running',
      endedReason: null,
      metadata: { suite: 'api' },
    });
    const listed = await t.api<{ items: SandboxInfo[] }>(
      'GET',
      `/v1/sandboxes?metadata=${encodeURIComponent('suite=api')}`,
    );
    expect(listed.body.items.map((s) => s.id)).toEqual([id]);
    const none = await t.api<{ items: SandboxInfo[] }>(
      'GET',
      `/v1/sandboxes?metadata=${encodeURIComponent('suite=other')}`,
    );
    expect(none.body.items).toEqual([]);
  });

  it('runs commands: output, exit codes, the sandbox’s and the command’s variables, cwd, user', async () => {
    const echo = await run(t, id, {
      cmd: 'echo "$GREETING $WHO"; echo warn >&2; exit 7',
      envs: { WHO: 'there' },
    });
    expect(echo.stdout).toBe('hi there\n');
    expect(echo.stderr).toBe('warn\n');
    expect(echo.end).toMatchObject({ type: 'end', exitCode: 7 });
    const where = await run(t, id, { cmd: 'mkdir -p work && cd work && pwd && id -un' });
    expect(where.stdout).toBe('/home/user/work\nuser\n');
    const cwd = await run(t, id, { cmd: 'pwd', cwd: '/tmp' });
    expect(cwd.stdout).toBe('/tmp\n');
    const asRoot = await run(t, id, { cmd: 'id', user: 'root' });
    expect(asRoot.status).toBe(400);
    const timedOut = await run(t, id, { cmd: 'sleep 100', timeoutMs: 500 });
    expect(timedOut.end).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
  });

  it('a plain command line means what it means to sh (it may start without it)', async () => {
    // Started directly: a program with plain arguments, its variables and cwd as through sh.
    const plain = await run(t, id, { cmd: 'env', envs: { ONLY_HERE: 'x' }, cwd: '/tmp' });
    expect(plain.stdout).toMatch(/^ONLY_HERE=x$/m);
    expect(plain.stdout).toMatch(/^GREETING=hi$/m);
    expect(plain.stdout).toMatch(/^PWD=\/tmp$/m);
    expect((await run(t, id, { cmd: 'ls -d /tmp /home/user' })).stdout).toBe('/home/user\n/tmp\n');
    expect((await run(t, id, { cmd: 'sh -c exit=3' })).end?.exitCode).toBe(0);
    expect((await run(t, id, { cmd: 'false' })).end?.exitCode).toBe(1);
    // The shell's own answers: a missing program, builtins that differ from programs, assignments,
    // a script without #! (sh reads it), an executable that is not there.
    const missing = await run(t, id, { cmd: 'no-such-program --flag' });
    expect(missing.end?.exitCode).toBe(127);
    expect(missing.stderr).toMatch(/no-such-program: not found/);
    expect((await run(t, id, { cmd: 'echo -e a' })).stdout).toBe('-e a\n');
    expect((await run(t, id, { cmd: 'A=1 env' })).stdout).toMatch(/^A=1$/m);
    await run(t, id, { cmd: "printf 'echo from-script\\n' > s.sh && chmod +x s.sh" });
    const script = await run(t, id, { cmd: './s.sh' });
    expect(`${script.stderr}${script.stdout}`).toBe('from-script\n');
    expect((await run(t, id, { cmd: 'cd /tmp' })).end?.exitCode).toBe(0);
    expect((await run(t, id, { cmd: '/nonexistent/x' })).end?.exitCode).toBe(127);
  });

  it('a background command gets stdin, is listed, and ends on a signal', async () => {
    const started = await startInSandbox(t, id, { cmd: 'cat; sleep 100', stdin: true, tag: 'bg' });
    const processes = await t.api<{ items: { pid: number; tag?: string }[] }>(
      'GET',
      `/v1/sandboxes/${id}/processes`,
    );
    expect(processes.body.items).toContainEqual(expect.objectContaining({ pid: started.pid, tag: 'bg' }));
    expect((await started.type('line from stdin\n', { close: true })).status).toBe(200);
    const signalled = await t.api('POST', `/v1/sandboxes/${id}/processes/${started.pid}/signal`, {
      signal: 'SIGTERM',
    });
    expect(signalled.status).toBe(200);
    const { events, output } = await started.rest();
    expect(output('stdout')).toBe('line from stdin\n');
    expect(events.at(-1)).toMatchObject({ type: 'end', signal: 'SIGTERM' });
  });

  it('a command in a terminal: one stream as a terminal shows it, its size, resized while it runs', async () => {
    const shown = await run(t, id, {
      cmd: 'tty; stty size; echo out; echo err >&2',
      pty: { cols: 120, rows: 40 },
    });
    expect(shown.events.some((e) => e.type === 'stdout' || e.type === 'stderr')).toBe(false);
    expect(shown.pty).toMatch(/^\/dev\/pts\/\d+\r\n40 120\r\nout\r\nerr\r\n$/);
    expect(shown.end).toMatchObject({ exitCode: 0 });
    expect((await run(t, id, { cmd: 'tty' })).stdout).toBe('not a tty\n');
    expect((await run(t, id, { cmd: 'true', pty: { cols: 0, rows: 10 } })).status).toBe(400);

    const started = await startInSandbox(t, id, { cmd: 'read line; stty size', pty: { cols: 10, rows: 10 } });
    const resize = (size: unknown) =>
      t.api('POST', `/v1/sandboxes/${id}/processes/${started.pid}/resize`, size);
    expect((await resize({ cols: 50, rows: 20 })).status).toBe(200);
    expect((await resize({ cols: 5000, rows: 20 })).status).toBe(400);
    expect((await started.type('\n')).status).toBe(200);
    expect((await started.rest()).output('pty')).toMatch(/20 50\r\n$/);
    expect((await resize({ cols: 50, rows: 20 })).status).toBe(404);
  });

  it('a terminal over a WebSocket: a shell that echoes, resizes, exits with its code; closing hangs it up (and kills it when it ignores that)', async () => {
    const term = await openTerminal(t, id);
    if ('refused' in term) throw new Error(`refused ${term.refused}: ${term.body}`);
    term.type('echo "$((6 * 7))-ok"; tty\r');
    expect(await term.waitFor(/42-ok\r\n\/dev\/pts\/\d+/)).toContain('42-ok');
    term.ws.send(JSON.stringify({ type: 'resize', cols: 100, rows: 30 }));
    term.type('stty size\r');
    await term.waitFor(/30 100/);
    term.type('exit 3\r');
    expect(await term.closed).toEqual({ code: 1000, reason: 'the shell exited' });
    expect(term.messages).toEqual([{ type: 'exit', exitCode: 3 }]);

    // Closing the socket hangs the shell up: no process of it is left in the sandbox.
    const processes = async () =>
      (await t.api<{ items: unknown[] }>('GET', `/v1/sandboxes/${id}/processes`)).body.items.length;
    const before = await processes();
    const second = await openTerminal(t, id);
    if ('refused' in second) throw new Error(`refused ${second.refused}`);
    // (A shell that ignores the hang-up is killed a few seconds after it.)
    second.type("trap '' HUP; echo ready\r");
    await second.waitFor(/ready\r\n/);
    expect(await processes()).toBe(before + 1);
    second.ws.close();
    await until('the shell to hang up', async () => ((await processes()) === before ? true : undefined));
  });

  it("a terminal opens only with a fresh ticket of its own, from this server's pages, and refuses what it cannot take", async () => {
    const issue = () =>
      t.api<{ ticket: string; protocols: string[]; url: string }>('POST', `/v1/sandboxes/${id}/terminal`);
    const refusal = async (opened: Awaited<ReturnType<typeof connectTerminal>>) => {
      if (!('refused' in opened)) {
        opened.ws.close();
        throw new Error('the terminal opened');
      }
      return {
        status: opened.refused,
        message: (JSON.parse(opened.body) as { error: { message: string } }).error.message,
      };
    };
    const { body: ticket } = await issue();
    // No ticket, a made-up one, one offered without the terminal's protocol.
    expect(await refusal(await connectTerminal(t, ticket.url, ['mayfly.terminal.v1']))).toMatchObject({
      status: 401,
      message: expect.stringMatching(/needs a ticket/),
    });
    expect(
      (await refusal(await connectTerminal(t, ticket.url, ['mayfly.terminal.v1', 'mayfly-ticket.forged'])))
        .status,
    ).toBe(401);
    // Another site's page: refused, and the ticket is not spent on it... nor usable after a use.
    expect(
      await refusal(await connectTerminal(t, ticket.url, ticket.protocols, 'http://evil.example')),
    ).toMatchObject({
      status: 403,
      message: expect.stringMatching(/only from a page of this server/),
    });
    const used = await connectTerminal(t, ticket.url, ticket.protocols);
    if ('refused' in used) throw new Error(`refused ${used.refused}: ${used.body}`);
    used.ws.close();
    expect((await refusal(await connectTerminal(t, ticket.url, ticket.protocols))).status).toBe(401);
    // A ticket names its sandbox; sizes are checked; the protocol is required.
    const other = (await issue()).body;
    expect(
      await refusal(await connectTerminal(t, '/v1/sandboxes/zzzz0000/terminal', other.protocols)),
    ).toMatchObject({
      status: 401,
      message: expect.stringMatching(/another sandbox/),
    });
    const sized = (await issue()).body;
    expect(
      (await refusal(await connectTerminal(t, `${sized.url}?cols=0&rows=5`, sized.protocols))).status,
    ).toBe(400);
    const bare = (await issue()).body;
    expect((await refusal(await connectTerminal(t, bare.url, [bare.protocols[1]!]))).status).toBe(400);

    // Tokens that may not: read-only, bound to a project; a revoked token's ticket is dead.
    const reader = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'term-reader',
      scope: 'read',
    });
    expect(await openTerminal(t, id, { token: reader.body.token })).toMatchObject({ refused: 403 });
    const bound = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'term-bound',
      scope: 'write',
      project: 'shop',
    });
    expect(await openTerminal(t, id, { token: bound.body.token })).toMatchObject({ refused: 403 });
    expect(await openTerminal(t, 'zzzz0000')).toMatchObject({ refused: 404 });
    const writer = await t.api<{ id: string; token: string }>('POST', '/v1/tokens', {
      name: 'term-writer',
      scope: 'write',
    });
    const late = await t.api<{ protocols: string[]; url: string }>(
      'POST',
      `/v1/sandboxes/${id}/terminal`,
      undefined,
      writer.body.token,
    );
    expect(late.status).toBe(201);
    expect((await t.api('DELETE', `/v1/tokens/${writer.body.id}`)).status).toBe(200);
    expect(await refusal(await connectTerminal(t, late.body.url, late.body.protocols))).toMatchObject({
      status: 401,
      message: expect.stringMatching(/has ended/),
    });

    // A client resetting the connection while it is refused leaves the server up; a refused
    // handshake's socket is closed by the server, whatever the client does.
    const { hostname, port } = new URL(t.server.url);
    const handshake = (ticket: string) =>
      `GET /v1/sandboxes/${id}/terminal HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mayfly.terminal.v1, mayfly-ticket.${ticket}\r\n\r\n`;
    for (let i = 0; i < 5; i++) {
      const reset = net.connect(Number(port), hostname);
      reset.on('error', () => {});
      reset.write(handshake('bogus'));
      reset.resetAndDestroy();
    }
    const held = net.connect(Number(port), hostname);
    let answer = '';
    held.on('data', (chunk) => {
      answer += chunk.toString();
    });
    held.write(handshake('bogus'));
    await new Promise((resolve) => held.once('close', resolve));
    expect(answer).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n/);
    expect((await fetch(`${t.server.url}/healthz`)).status).toBe(200);

    // Keys a shell does not read pile up only so far: many tiny messages close the socket too.
    const flooded = await openTerminal(t, id);
    if ('refused' in flooded) throw new Error('refused');
    flooded.type('sleep 120\r');
    await flooded.waitFor(/sleep 120/);
    for (let i = 0; i < 20_000 && flooded.ws.readyState === flooded.ws.OPEN; i++) flooded.type('x');
    expect(await flooded.closed).toEqual({
      code: 1008,
      reason: 'keys come faster than the sandbox takes them',
    });

    // A message over 64 KiB, and a text message that is not a resize, close the socket.
    const big = await openTerminal(t, id);
    if ('refused' in big) throw new Error('refused');
    big.ws.send(Buffer.alloc(65 * 1024, 0x61), { binary: true });
    expect((await big.closed).code).toBe(1009);
    const wrong = await openTerminal(t, id);
    if ('refused' in wrong) throw new Error('refused');
    wrong.ws.send(JSON.stringify({ type: 'exec', cmd: 'id' }));
    expect((await wrong.closed).code).toBe(1003);
  });

  it('files: 1 MiB of random bytes round-trip; stat, list, mkdir, rename, remove', async () => {
    const bytes = randomBytes(1024 * 1024);
    const put = await fetch(`${t.server.url}/v1/sandboxes/${id}/files?path=data/blob.bin`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({
      path: '/home/user/data/blob.bin',
      size: bytes.length,
      type: 'file',
    });
    const got = await fetch(`${t.server.url}/v1/sandboxes/${id}/files?path=/home/user/data/blob.bin`, {
      headers: { authorization: `Bearer ${t.token}` },
    });
    expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
    expect((await t.api('POST', `/v1/sandboxes/${id}/files/mkdir?path=data/sub`)).body).toEqual({
      created: true,
    });
    await t.api('POST', `/v1/sandboxes/${id}/files/rename?path=data/blob.bin&to=data/sub/moved.bin`);
    const listed = await t.api<{ entries: { path: string }[] }>(
      'GET',
      `/v1/sandboxes/${id}/files/list?path=data&depth=2`,
    );
    expect(listed.body.entries.map((e) => e.path)).toEqual([
      '/home/user/data/sub',
      '/home/user/data/sub/moved.bin',
    ]);
    expect((await t.api('DELETE', `/v1/sandboxes/${id}/files?path=data`)).status).toBe(200);
    expect((await t.api('GET', `/v1/sandboxes/${id}/files/stat?path=data`)).status).toBe(404);
    // The file routes take bytes; JSON sent to them, or bytes sent to a JSON route, are refused.
    const wrong = await fetch(`${t.server.url}/v1/sandboxes/${id}/timeout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
      body: 'x',
    });
    expect(wrong.status).toBe(400);
  });

  it('a one-use download link: the file as an attachment without credentials, once, under a name that cannot break the header', async () => {
    const bytes = randomBytes(256 * 1024);
    const name = 'we"ird\\name ü;.bin';
    const put = await fetch(
      `${t.server.url}/v1/sandboxes/${id}/files?path=${encodeURIComponent(`dl/${name}`)}`,
      {
        method: 'PUT',
        headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
        body: bytes,
      },
    );
    expect(put.status).toBe(200);
    const reader = await t.api<{ token: string }>('POST', '/v1/tokens', { name: 'dl-reader', scope: 'read' });
    const link = await t.api<{ url: string }>(
      'POST',
      `/v1/sandboxes/${id}/downloads?path=${encodeURIComponent(`dl/${name}`)}`,
      undefined,
      reader.body.token,
    );
    expect(link.status).toBe(201);
    expect(link.body.url).toMatch(new RegExp(`^/v1/sandboxes/${id}/downloads/[A-Za-z0-9_-]{32}$`));
    const got = await fetch(`${t.server.url}${link.body.url}`);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-disposition')).toBe(
      `attachment; filename="we_ird_name___.bin"; filename*=UTF-8''${encodeURIComponent(name)}`,
    );
    expect(got.headers.get('content-security-policy')).toMatch(/^sandbox/);
    // What would reorder the name on the user's disk is dropped: "\u202etxt.exe" shows as "exe.txt".
    expect(attachment('/home/user/\u202etxt.exe')).toBe(
      `attachment; filename="txt.exe"; filename*=UTF-8''txt.exe`,
    );
    expect(attachment('/home/user/..')).toBe(`attachment; filename="download"; filename*=UTF-8''download`);
    expect(got.headers.get('content-length')).toBe(String(bytes.length));
    expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
    // Once only; a made-up link; another sandbox's path with a good ticket.
    expect((await fetch(`${t.server.url}${link.body.url}`)).status).toBe(401);
    expect((await fetch(`${t.server.url}/v1/sandboxes/${id}/downloads/${'a'.repeat(32)}`)).status).toBe(401);
    const other = await t.api<{ url: string }>(
      'POST',
      `/v1/sandboxes/${id}/downloads?path=${encodeURIComponent(`dl/${name}`)}`,
    );
    expect((await fetch(`${t.server.url}${other.body.url.replace(id, 'zzzz0000')}`)).status).toBe(401);
    // A folder, a file that is not there, a token bound to a project: refused when asked.
    expect((await t.api('POST', `/v1/sandboxes/${id}/downloads?path=dl`)).status).toBe(400);
    expect((await t.api('POST', `/v1/sandboxes/${id}/downloads?path=dl/nope`)).status).toBe(404);
    const bound = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'dl-bound',
      scope: 'read',
      project: 'shop',
    });
    expect(
      (await t.api('POST', `/v1/sandboxes/${id}/downloads?path=dl`, undefined, bound.body.token)).status,
    ).toBe(403);
    // A link of a token revoked since is dead.
    const late = await t.api<{ url: string }>(
      'POST',
      `/v1/sandboxes/${id}/downloads?path=${encodeURIComponent(`dl/${name}`)}`,
      undefined,
      reader.body.token,
    );
    const readerId = (
      await t.api<{ items: { id: string; name: string }[] }>('GET', '/v1/tokens')
    ).body.items.find((x) => x.name === 'dl-reader')!.id;
    expect((await t.api('DELETE', `/v1/tokens/${readerId}`)).status).toBe(200);
    expect((await fetch(`${t.server.url}${late.body.url}`)).status).toBe(401);
  });

  it('usage: CPU time grows under a busy loop, memory and processes counted; only unbound tokens see it', async () => {
    type Usage = { sampledAt: string; cpuSeconds: number; memoryBytes: number; pids: number };
    const read = async (asToken?: string) => {
      const res = await t.api<{ usage: Usage | null }>(
        'GET',
        `/v1/sandboxes/${id}/usage`,
        undefined,
        asToken,
      );
      expect(res.status).toBe(200);
      return res.body.usage!;
    };
    const busy = await startInSandbox(t, id, { cmd: 'while :; do :; done', timeoutMs: 60_000 });
    try {
      const first = await read();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const reader = await t.api<{ token: string }>('POST', '/v1/tokens', {
        name: 'usage-reader',
        scope: 'read',
      });
      const second = await read(reader.body.token);
      const seconds = (Date.parse(second.sampledAt) - Date.parse(first.sampledAt)) / 1000;
      expect(seconds).toBeGreaterThan(0);
      const percent = ((second.cpuSeconds - first.cpuSeconds) / seconds) * 100;
      // One CPU (the sandbox's limit) kept busy: about 100; well above 0 however loaded the machine.
      expect(percent).toBeGreaterThan(20);
      expect(percent).toBeLessThan(150);
      expect(second.memoryBytes).toBeGreaterThan(0);
      expect(second.pids).toBeGreaterThanOrEqual(2);
    } finally {
      await t.api('POST', `/v1/sandboxes/${id}/processes/${busy.pid}/signal`, { signal: 'SIGKILL' });
      await busy.rest();
    }
    // Sandboxes belong to no project: a token bound to one is refused, as for the sandbox itself.
    const bound = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'usage-bound',
      scope: 'read',
      project: 'shop',
    });
    const refused = await t.api('GET', `/v1/sandboxes/${id}/usage`, undefined, bound.body.token);
    expect(refused.status).toBe(403);
    expect((await t.api('GET', '/v1/sandboxes/zzzz0000/usage')).status).toBe(404);
  });

  it('pause freezes it (commands refused with why), resume thaws it', async () => {
    expect((await t.api<SandboxInfo>('POST', `/v1/sandboxes/${id}/pause`)).body.state).toBe('paused');
    const refused = await run(t, id, { cmd: 'true' });
    expect(refused.status).toBe(409);
    expect(refused.error?.error.message).toMatch(/paused/);
    expect((await t.api<SandboxInfo>('POST', `/v1/sandboxes/${id}/resume`)).body.state).toBe('running');
    expect((await run(t, id, { cmd: 'echo back' })).stdout).toBe('back\n');
  });

  it('ends by itself when its time is up, recorded as timeout, with nothing left', async () => {
    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', { timeoutMs: 60_000 });
    const short = created.body.id;
    await run(t, short, { cmd: 'sleep 1000 >/dev/null 2>&1 &' });
    const shortened = await t.api<SandboxInfo>('POST', `/v1/sandboxes/${short}/timeout`, {
      timeoutMs: 1_000,
    });
    expect(Date.parse(shortened.body.expiresAt)).toBeLessThan(Date.now() + 2_000);
    let info: SandboxInfo | undefined;
    for (let i = 0; i < 100; i++) {
      info = (await t.api<SandboxInfo>('GET', `/v1/sandboxes/${short}`)).body;
      if (info.state === 'ended') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(info).toMatchObject({ state: 'ended', endedReason: 'timeout' });
    expect(info!.peakMemoryBytes).toBeGreaterThan(0);
    expect(containerExists(short)).toBe(false);
    const listed = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes?state=ended');
    expect(listed.body.items.map((s) => s.id)).toContain(short);
    expect((await run(t, short, { cmd: 'true' })).status).toBe(409);
    expect((await t.api('GET', `/v1/sandboxes/${short}/usage`)).status).toBe(409);
  });

  it('kill ends it as killed; bad requests and foreign tokens are refused with why', async () => {
    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', {});
    const killed = await t.api<SandboxInfo>('DELETE', `/v1/sandboxes/${created.body.id}`);
    expect(killed.body).toMatchObject({ state: 'ended', endedReason: 'killed' });
    expect(containerExists(created.body.id)).toBe(false);

    const unknown = await t.api<{ error: { message: string } }>('POST', '/v1/sandboxes', {
      template: 'nope',
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toMatch(/no sandbox template "nope"/);
    expect((await t.api('POST', '/v1/sandboxes', { timeoutMs: 10 })).status).toBe(400);
    expect((await t.api('GET', '/v1/sandboxes/zzzz0000')).status).toBe(404);
    expect((await t.api('GET', '/v1/sandboxes/..%2F..%2Fetc')).status).toBe(404);
    const bound = await t.api<{ token: string }>('POST', '/v1/tokens', {
      name: 'bound',
      scope: 'write',
      project: 'shop',
    });
    expect(bound.status).toBe(201);
    expect((await t.api('GET', `/v1/sandboxes/${id}`, undefined, bound.body.token)).status).toBe(403);
    const reader = await t.api<{ token: string }>('POST', '/v1/tokens', { name: 'reader', scope: 'read' });
    expect((await t.api('POST', '/v1/sandboxes', {}, reader.body.token)).status).toBe(403);
  });
});

describe('the sandbox limit', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ maxSandboxes: 2, maxTerminals: 2 });
  });
  afterAll(async () => {
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
    await t.close();
  });

  it('holds for a burst of creates: creates under way count, the rest get 429 with why', async () => {
    const burst = await Promise.all(
      Array.from({ length: 6 }, () =>
        t.api<SandboxInfo & { error: { message: string } }>('POST', '/v1/sandboxes', { timeoutMs: 120_000 }),
      ),
    );
    expect(burst.map((r) => r.status).sort()).toEqual([201, 201, 429, 429, 429, 429]);
    for (const refused of burst.filter((r) => r.status === 429))
      expect(refused.body.error.message).toMatch(
        /at most 2 sandboxes at once and 2 are running, paused or being created/,
      );
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    expect(body.items).toHaveLength(2);
    // A place freed is a place to take.
    await t.api('DELETE', `/v1/sandboxes/${body.items[0]!.id}`);
    expect((await t.api('POST', '/v1/sandboxes', {})).status).toBe(201);
  });

  it('holds for terminals too: handshakes at once take their places before anything is awaited', async () => {
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    const id = body.items[0]!.id;
    const tickets = await Promise.all(
      Array.from({ length: 6 }, () =>
        t.api<{ protocols: string[]; url: string }>('POST', `/v1/sandboxes/${id}/terminal`),
      ),
    );
    expect(tickets.map((r) => r.status)).toEqual([201, 201, 201, 201, 201, 201]);
    const opened = await Promise.all(tickets.map((r) => connectTerminal(t, r.body.url, r.body.protocols)));
    const refused = opened.filter((o): o is { refused: number; body: string } => 'refused' in o);
    expect(refused.map((o) => o.refused)).toEqual([429, 429, 429, 429]);
    expect(refused[0]!.body).toMatch(/2 terminals are open on this server already/);
    // Full: no ticket either, until one closes.
    expect((await t.api('POST', `/v1/sandboxes/${id}/terminal`)).status).toBe(429);
    const open = opened.filter((o): o is TerminalClient => !('refused' in o));
    open[0]!.ws.close();
    await open[0]!.closed;
    await until('a place freed', async () =>
      (await t.api('POST', `/v1/sandboxes/${id}/terminal`)).status === 201 ? true : undefined,
    );
    open[1]!.ws.close();
  });
});
