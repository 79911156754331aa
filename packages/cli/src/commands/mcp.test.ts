/** `mayfly mcp` driven by the MCP SDK's own client over stdio, against a real server and Docker. */
import { fileURLToPath } from 'node:url';
import type { SandboxInfo } from '@mayfly/contract';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../../server/src/test-support/global-setup.js';
import { startTestServer, type TestServer } from '../../../server/src/test-support/test-server.js';

const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));

describe('mayfly mcp', () => {
  let t: TestServer;
  let client: Client;
  const call = async (name: string, args: Record<string, unknown> = {}) => {
    const result = (await client.callTool({ name, arguments: args })) as {
      content: { type: string; text: string }[];
      isError?: boolean;
    };
    return { text: result.content[0]?.text ?? '', isError: result.isError === true };
  };

  beforeAll(async () => {
    t = await startTestServer();
    const env = Object.fromEntries(
      Object.entries(process.env).filter(
        (e): e is [string, string] => e[1] !== undefined && !e[0].startsWith('MAYFLY_'),
      ),
    );
    client = new Client({ name: 'mayfly-test', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [BIN, 'mcp'],
        env: { ...env, MAYFLY_URL: t.server.url, MAYFLY_TOKEN: t.token },
        stderr: 'pipe',
      }),
    );
  }, 120_000);
  afterAll(async () => {
    await client?.close();
    const { body } = await t.api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes');
    await Promise.all(body.items.map((s) => t.api('DELETE', `/v1/sandboxes/${s.id}`)));
    await t.close();
  });

  it('lists its tools', async () => {
    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name).sort()).toEqual([
      'environment_destroy',
      'environment_list',
      'environment_up',
      'sandbox_create',
      'sandbox_get_url',
      'sandbox_kill',
      'sandbox_list_files',
      'sandbox_read_file',
      'sandbox_run',
      'sandbox_write_file',
    ]);
  });

  it('a sandbox: create, run, write, read, list, URL, kill', async () => {
    const created = await call('sandbox_create', { timeoutMs: 120_000, envs: { WHO: 'agent' } });
    expect(created.isError).toBe(false);
    const { id } = JSON.parse(created.text) as { id: string };
    const ran = JSON.parse((await call('sandbox_run', { id, cmd: 'echo "hi $WHO"; exit 3' })).text);
    expect(ran).toEqual({ exitCode: 3, stdout: 'hi agent\n', stderr: '' });
    expect((await call('sandbox_write_file', { id, path: 'notes/a.txt', content: 'written' })).isError).toBe(
      false,
    );
    expect((await call('sandbox_read_file', { id, path: 'notes/a.txt' })).text).toBe('written');
    expect(JSON.parse((await call('sandbox_list_files', { id, path: 'notes' })).text)).toEqual([
      expect.objectContaining({ name: 'a.txt', type: 'file', size: 7 }),
    ]);
    expect((await call('sandbox_get_url', { id, port: 8000 })).text).toMatch(
      new RegExp(`^http://8000--${id}\\.localhost:\\d+/$`),
    );
    expect((await call('sandbox_kill', { id })).text).toBe(`killed ${id}`);
    // A failure is a result the model can read, not a broken session.
    const gone = await call('sandbox_run', { id, cmd: 'true' });
    expect(gone.isError).toBe(true);
    expect(gone.text).toMatch(/ended/);
  });

  it('environments: up (ready, with its URL), list, destroy; a bad template is an error result', async () => {
    const template = [
      'services:',
      '  web:',
      `    image: ${TESTKIT_IMAGE}`,
      '    command: ["testkit", "http", "--port", "8080", "--text", "hello"]',
      '    ports: ["8080"]',
    ].join('\n');
    const up = await call('environment_up', { template, name: 'mcp-env' });
    expect(up.isError).toBe(false);
    expect(JSON.parse(up.text)).toMatchObject({
      name: 'mcp-env',
      state: 'ready',
      urls: { web: expect.stringMatching(/^http:\/\/web--mcp-env\./) },
    });
    expect(JSON.parse((await call('environment_list')).text)).toEqual([
      expect.objectContaining({ name: 'mcp-env' }),
    ]);
    expect((await call('environment_destroy', { name: 'mcp-env' })).text).toBe('destroying mcp-env');
    await t.waitForState('mcp-env', ['destroyed']);
    const bad = await call('environment_up', { template: 'services: [' });
    expect(bad.isError).toBe(true);
    expect(bad.text.length).toBeGreaterThan(0);
  });
});
