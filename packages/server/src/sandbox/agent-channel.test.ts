/**
 * The control plane's end of the agent channel against what code in a sandbox can do to its socket
 * (it is mounted into the sandbox, so anything there can connect): flood it, hold connections,
 * answer slowly or too much. Real Unix sockets; the "agent" here is the hostile side.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentChannel, AgentError, AgentUnavailableError, MAX_SPARE } from './agent-channel.js';

describe('agent channel under a hostile sandbox', () => {
  let dir: string;
  let channel: AgentChannel;
  const clients: net.Socket[] = [];
  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-channel-'));
    channel = await AgentChannel.listen(path.join(dir, 'agent.sock'));
  });
  afterEach(async () => {
    for (const socket of clients.splice(0)) socket.destroy();
    await channel.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const connect = () =>
    new Promise<net.Socket>((resolve) => {
      const socket = net.connect(channel.socketPath!);
      clients.push(socket);
      socket.on('error', () => {});
      socket.once('connect', () => resolve(socket));
      socket.once('close', () => resolve(socket));
    });
  /** Connects as an agent would, answering requests with `handler`. */
  const agent = async (handler: http.RequestListener) => {
    const server = http.createServer(handler);
    server.emit('connection', await connect());
  };
  const settled = () => new Promise((resolve) => setTimeout(resolve, 200));

  it('a connect flood keeps at most a few idle connections, and the channel works once a real agent connects', async () => {
    const flood = await Promise.all(Array.from({ length: 300 }, connect));
    await settled();
    const open = flood.filter((socket) => !socket.destroyed && socket.readyState === 'open');
    expect(open.length).toBeLessThanOrEqual(MAX_SPARE);
    for (const socket of flood) socket.destroy();
    await settled();
    await agent((_req, res) => res.end('{"ok":true}'));
    expect(await channel.json('GET', '/v1/health', undefined, 2_000)).toEqual({ ok: true });
  });

  it('an agent that never answers fails the call in bounded time, and its connection is dropped', async () => {
    let held: net.Socket | undefined;
    await agent((req) => {
      held = req.socket; // reads the request, never answers
    });
    const error = await channel.open('GET', '/v1/processes', { headTimeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentUnavailableError);
    expect((error as Error).message).toMatch(/no answer within 0\.3 s/);
    await settled();
    expect(held?.destroyed).toBe(true);
  });

  it('refuses an answer larger than it reads, and an agent error is passed on as one', async () => {
    await agent((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(`"${'x'.repeat(9 * 1024 * 1024)}"`);
    });
    await expect(channel.json('GET', '/v1/files/list', undefined, 2_000)).rejects.toMatchObject({
      code: 'too_large',
    });
    await agent((_req, res) => {
      res.statusCode = 404;
      res.end('{"code":"not_found","error":"no such file"}');
    });
    const error = await channel.json('GET', '/v1/files?path=x', undefined, 2_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentError);
    expect(error).toMatchObject({ status: 404, code: 'not_found', message: 'no such file' });
  });

  it('with no agent connected, a call fails saying so', async () => {
    await expect(channel.open('GET', '/v1/health', { timeoutMs: 200 })).rejects.toThrow(
      /did not connect within 200 ms/,
    );
  });
});
