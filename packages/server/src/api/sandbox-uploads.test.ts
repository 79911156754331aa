/**
 * Uploads into a sandbox (`PUT …/files`): a body may stream for as long as its client takes, an
 * upload cut off leaves the file as it was, and the agent is still timed when it stops answering.
 * The agent's timeout is shortened here so that "longer than the timeout" takes seconds, not 30.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { SandboxFileEntry, SandboxInfo } from '@mayfly/contract';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AgentChannel, AgentUnavailableError, agentTimeouts } from '../sandbox/agent-channel.js';
import { runInSandbox as run } from '../test-support/sandboxes.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { until } from '../test-support/until.js';

const HEAD_MS = 2_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('uploads into a sandbox', () => {
  let t: TestServer;
  let id: string;
  const defaultHeadMs = agentTimeouts.headMs;
  beforeAll(async () => {
    agentTimeouts.headMs = HEAD_MS;
    t = await startTestServer();
    const created = await t.api<SandboxInfo>('POST', '/v1/sandboxes', {
      template: 'base',
      timeoutMs: 180_000,
    });
    expect(created.status).toBe(201);
    id = created.body.id;
  }, 300_000);
  afterAll(async () => {
    agentTimeouts.headMs = defaultHeadMs;
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
    await t.close();
  });

  const filesUrl = (filePath: string) =>
    `${t.server.url}/v1/sandboxes/${id}/files?${new URLSearchParams({ path: filePath })}`;
  const put = async (filePath: string, body: string) => {
    const res = await fetch(filesUrl(filePath), {
      method: 'PUT',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
      body,
    });
    return {
      status: res.status,
      body: (await res.json()) as SandboxFileEntry & { error?: { code: string; message: string } },
    };
  };
  const read = async (filePath: string) => {
    const res = await fetch(filesUrl(filePath), { headers: { authorization: `Bearer ${t.token}` } });
    return { status: res.status, text: await res.text() };
  };
  const names = async (dir: string) => {
    const listed = await t.api<{ entries: { name: string }[] }>(
      'GET',
      `/v1/sandboxes/${id}/files/list?${new URLSearchParams({ path: dir })}`,
    );
    expect(listed.status).toBe(200);
    return listed.body.entries.map((e) => e.name).sort();
  };
  /** An upload whose body the test writes piece by piece, as a slow client would. */
  const slowUpload = (filePath: string) => {
    const request = http.request(filesUrl(filePath), {
      method: 'PUT',
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
    });
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      request.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      });
      request.on('error', reject);
    });
    request.flushHeaders();
    return { request, answer };
  };

  it('a body streamed for longer than the agent’s timeout is written whole', async () => {
    const { request, answer } = slowUpload('slow/streamed.txt');
    const pieces: string[] = [];
    const started = Date.now();
    // Three times the timeout, a piece every quarter of it.
    for (let i = 0; Date.now() - started < 3 * HEAD_MS; i++) {
      const piece = `piece ${i}\n`;
      pieces.push(piece);
      request.write(piece);
      await sleep(HEAD_MS / 4);
    }
    request.end();
    const { status, text } = await answer;
    expect(status, text).toBe(200);
    expect(Date.now() - started).toBeGreaterThan(3 * HEAD_MS);
    const expected = pieces.join('');
    expect(JSON.parse(text)).toMatchObject({
      path: '/home/user/slow/streamed.txt',
      type: 'file',
      size: Buffer.byteLength(expected),
    });
    expect(await read('slow/streamed.txt')).toEqual({ status: 200, text: expected });
    expect(await names('slow')).toEqual(['streamed.txt']);
  });

  it('an upload cut off mid-body leaves the file as it was, and nothing else in its folder', async () => {
    const previous = 'the previous content\n';
    expect((await put('cut/kept.txt', previous)).status).toBe(200);
    const { request, answer } = slowUpload('cut/kept.txt');
    answer.catch(() => {}); // (its client goes away: there is no answer)
    request.write('half of a new ');
    // The upload has reached the agent once something in the folder changed: a temporary file
    // there (or, as uploads were once written, the file itself truncated).
    await until(
      'the upload under way',
      async () => {
        const now = await t.api<SandboxFileEntry>('GET', `/v1/sandboxes/${id}/files/stat?path=cut/kept.txt`);
        const there = await names('cut');
        return there.length > 1 || now.body.size !== previous.length ? true : undefined;
      },
      20_000,
    );
    request.write('content');
    await sleep(200);
    request.destroy();
    await until(
      'the temporary file removed',
      async () => ((await names('cut')).length === 1 ? true : undefined),
      20_000,
    );
    expect(await names('cut')).toEqual(['kept.txt']);
    expect(await read('cut/kept.txt')).toEqual({ status: 200, text: previous });
    // And the next upload goes through.
    expect((await put('cut/kept.txt', 'next\n')).status).toBe(200);
    expect(await read('cut/kept.txt')).toEqual({ status: 200, text: 'next\n' });
  });

  it('replaces a file (keeping its mode), makes new ones and their folders; a link is replaced, not followed', async () => {
    const made = await put('deep/er/new.txt', 'first');
    expect(made).toMatchObject({
      status: 200,
      body: { path: '/home/user/deep/er/new.txt', type: 'file', size: 5, mode: '644' },
    });
    await run(t, id, { cmd: 'chmod 600 deep/er/new.txt' });
    const replaced = await put('/home/user/deep/er/new.txt', 'second, longer');
    expect(replaced).toMatchObject({ status: 200, body: { type: 'file', size: 14, mode: '600' } });
    expect(await read('deep/er/new.txt')).toEqual({ status: 200, text: 'second, longer' });
    expect(await names('deep/er')).toEqual(['new.txt']);

    // A file the sandbox's user may not write is refused, as before.
    await run(t, id, { cmd: 'chmod 400 deep/er/new.txt' });
    expect((await put('deep/er/new.txt', 'refused')).status).toBe(403);
    expect(await read('deep/er/new.txt')).toEqual({ status: 200, text: 'second, longer' });

    // The upload lands at the path it names: a link there is replaced, its target left alone.
    await run(t, id, { cmd: 'echo target > deep/target.txt && ln -s target.txt deep/link' });
    expect(await put('deep/link', 'through the link?')).toMatchObject({
      status: 200,
      body: { path: '/home/user/deep/link', type: 'file', size: 17 },
    });
    expect(await read('deep/target.txt')).toEqual({ status: 200, text: 'target\n' });
    expect(await read('deep/link')).toEqual({ status: 200, text: 'through the link?' });
    // Links in the folders above are followed.
    await run(t, id, { cmd: 'ln -s er deep/er-link' });
    expect((await put('deep/er-link/via.txt', 'via')).status).toBe(200);
    expect(await read('deep/er/via.txt')).toEqual({ status: 200, text: 'via' });

    const onDir = await put('deep/er', 'x');
    expect(onDir.status).toBe(400);
    expect(onDir.body.error?.message).toMatch(/is a directory/);
    expect(await names('deep')).toEqual(['er', 'er-link', 'link', 'target.txt']);
  });
});

describe('the agent channel times the agent, not the body', () => {
  let dir: string;
  let channel: AgentChannel;
  const sockets: net.Socket[] = [];
  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-uploads-'));
    channel = await AgentChannel.listen(path.join(dir, 'agent.sock'));
  });
  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    await channel.close();
    rmSync(dir, { recursive: true, force: true });
  });
  /** Connects as an agent would, answering requests with `handler`. */
  const agent = async (handler: http.RequestListener) => {
    const socket = await new Promise<net.Socket>((resolve) => {
      const connected = net.connect(channel.socketPath!, () => resolve(connected));
      connected.on('error', () => {});
    });
    sockets.push(socket);
    http.createServer(handler).emit('connection', socket);
  };
  /** A body of `pieces` pieces of `size` bytes, one every `everyMs`. */
  const slowBody = (pieces: number, everyMs: number, size = 16) =>
    Readable.from(
      (async function* () {
        for (let i = 0; i < pieces; i++) {
          await sleep(everyMs);
          yield Buffer.alloc(size, 'x');
        }
      })(),
    );

  it('a slow body takes as long as it takes; the answer is then timed', async () => {
    await agent((req, res) => {
      let size = 0;
      req.on('data', (d: Buffer) => (size += d.length));
      req.on('end', () => res.end(JSON.stringify({ size })));
    });
    const response = await channel.open('PUT', '/v1/files?path=x', {
      body: slowBody(8, 100),
      headTimeoutMs: 300,
    });
    const text = await new Promise<string>((resolve) => {
      let all = '';
      response.on('data', (d: Buffer) => (all += d));
      response.on('end', () => resolve(all));
    });
    expect(JSON.parse(text)).toEqual({ size: 8 * 16 });

    // An agent that takes the whole body and never answers fails the call in bounded time.
    await agent((req) => req.resume());
    const started = Date.now();
    const silent = await channel
      .open('PUT', '/v1/files?path=x', { body: slowBody(6, 100), headTimeoutMs: 300 })
      .catch((e: unknown) => e);
    expect(silent).toBeInstanceOf(AgentUnavailableError);
    expect((silent as Error).message).toMatch(/no answer within 0\.3 s/);
    expect(Date.now() - started).toBeGreaterThan(800); // the body (600 ms), then the wait (300 ms)
  });

  it('an agent that stops taking the body fails the call in bounded time', async () => {
    let reached = false;
    await agent(() => {
      reached = true; // never reads the body: it backs up to the channel
    });
    const body = Readable.from(
      (function* () {
        for (let i = 0; i < 1024; i++) yield Buffer.alloc(64 * 1024, 'x');
      })(),
    );
    const error = await channel
      .open('PUT', '/v1/files?path=x', { body, headTimeoutMs: 300 })
      .catch((e: unknown) => e);
    expect(reached).toBe(true);
    expect(error).toBeInstanceOf(AgentUnavailableError);
    expect((error as Error).message).toMatch(/the agent took none of the body for 0\.3 s/);
    await until('the body stopped', () => body.destroyed || undefined, 2_000);
  });
});
