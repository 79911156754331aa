import type { Command } from 'commander';
import * as z from 'zod';
import { connect, resolveToken } from '../connection.js';
import { globalOptions } from './global-options.js';

/**
 * `mayfly mcp`: a Model Context Protocol server over stdio (the official SDK), so an agent can make
 * sandboxes, run commands and move files in them, get a port's URL, and bring up, list and destroy
 * environments. Stdout carries the protocol only; anything else goes to stderr.
 */
export function registerMcp(program: Command): void {
  program
    .command('mcp')
    .description(
      'serve the Model Context Protocol on stdin/stdout: sandboxes and environments as tools for agents',
    )
    .addHelpText(
      'after',
      `
In an MCP client's configuration (Claude Desktop, Cursor, …):
  { "mcpServers": { "mayfly": { "command": "npx", "args": ["mayfly", "mcp"],
      "env": { "MAYFLY_URL": "http://127.0.0.1:7070", "MAYFLY_TOKEN": "…" } } } }`,
    )
    .action(async (_options: unknown, command: Command) => serveMcp(command));
}

type ToolResult = { content: { type: 'text'; text: string }[]; isError?: boolean };

const text = (value: unknown): ToolResult => ({
  content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value, null, 2) }],
});

/** A tool's failure as an error result the model can read, not a protocol error. */
async function tool(run: () => Promise<unknown>): Promise<ToolResult> {
  try {
    return text(await run());
  } catch (err) {
    return { content: [{ type: 'text', text: (err as Error).message }], isError: true };
  }
}

async function serveMcp(command: Command): Promise<void> {
  const [{ McpServer }, { StdioServerTransport }, { Sandbox }] = await Promise.all([
    import('@modelcontextprotocol/sdk/server/mcp.js'),
    import('@modelcontextprotocol/sdk/server/stdio.js'),
    import('@mayfly/sdk'),
  ]);
  const client = await connect(globalOptions(command));
  const token = resolveToken(client.baseUrl);
  const conn = { baseUrl: client.baseUrl, ...(token ? { token } : {}) };
  const server = new McpServer({ name: 'mayfly', version: '0.1.0' });

  server.registerTool(
    'sandbox_create',
    {
      description:
        'Create an isolated sandbox (Debian; template "code" adds Python 3 and Node.js; `mayfly template ls` lists others) with no network unless allowOut lists where it may connect, killed after timeoutMs. Returns its id.',
      inputSchema: {
        template: z
          .string()
          .optional()
          .describe('base (default), code, or a template built with mayfly template build'),
        timeoutMs: z.number().int().optional().describe('lifetime in ms (default 5 minutes)'),
        envs: z.record(z.string(), z.string()).optional().describe('variables every command gets'),
        allowOut: z
          .array(z.string())
          .optional()
          .describe('IPv4 addresses, CIDRs or host names it may connect to (default: no network at all)'),
      },
    },
    async ({ template, timeoutMs, envs, allowOut }) =>
      tool(async () => {
        const sbx = await Sandbox.create({
          ...conn,
          ...(template ? { template } : {}),
          ...(timeoutMs ? { timeoutMs } : {}),
          ...(envs ? { envs } : {}),
          ...(allowOut ? { allowOut } : {}),
        });
        return { id: sbx.id, info: await sbx.getInfo() };
      }),
  );
  server.registerTool(
    'sandbox_run',
    {
      description: 'Run a shell command in a sandbox; returns its exit code, stdout and stderr.',
      inputSchema: {
        id: z.string(),
        cmd: z.string().describe('run by /bin/sh -c'),
        cwd: z.string().optional(),
        timeoutMs: z.number().int().optional().describe('kill it after this long (default 60 s)'),
      },
    },
    async ({ id, cmd, cwd, timeoutMs }) =>
      tool(async () =>
        (await Sandbox.connect(id, conn)).commands.run(cmd, {
          ...(cwd ? { cwd } : {}),
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        }),
      ),
  );
  server.registerTool(
    'sandbox_write_file',
    {
      description: 'Write a text file in a sandbox (folders made).',
      inputSchema: { id: z.string(), path: z.string(), content: z.string() },
    },
    async ({ id, path, content }) =>
      tool(async () => (await Sandbox.connect(id, conn)).files.write(path, content)),
  );
  server.registerTool(
    'sandbox_read_file',
    { description: 'Read a text file of a sandbox.', inputSchema: { id: z.string(), path: z.string() } },
    async ({ id, path }) => tool(async () => (await Sandbox.connect(id, conn)).files.read(path)),
  );
  server.registerTool(
    'sandbox_list_files',
    { description: 'List a folder of a sandbox.', inputSchema: { id: z.string(), path: z.string() } },
    async ({ id, path }) => tool(async () => (await Sandbox.connect(id, conn)).files.list(path)),
  );
  server.registerTool(
    'sandbox_get_url',
    {
      description: 'The URL at which a port a server listens on inside the sandbox is reachable.',
      inputSchema: { id: z.string(), port: z.number().int().min(1).max(65535) },
    },
    async ({ id, port }) => tool(async () => (await Sandbox.connect(id, conn)).getHost(port)),
  );
  server.registerTool(
    'sandbox_kill',
    { description: 'Kill a sandbox; everything in it is gone.', inputSchema: { id: z.string() } },
    async ({ id }) =>
      tool(async () => {
        await (await Sandbox.connect(id, conn)).kill();
        return `killed ${id}`;
      }),
  );
  server.registerTool(
    'environment_up',
    {
      description:
        'Bring up an environment from a Docker Compose or mayfly.yaml template given as text; waits until it is ready and returns its URLs.',
      inputSchema: {
        template: z.string().describe('the template text'),
        filename: z.string().optional().describe('compose.yaml (default) or mayfly.yaml'),
        name: z.string().optional(),
      },
    },
    async ({ template, filename, name }) =>
      tool(async () => {
        const env = await client.environments.create({
          ...(name ? { name } : {}),
          template: { filename: filename ?? 'compose.yaml', content: template },
        });
        const ready = await client.environments.waitFor(env.id);
        return { name: ready.name, state: ready.state, urls: ready.urls };
      }),
  );
  server.registerTool(
    'environment_list',
    { description: 'List environments: name, state, URLs.', inputSchema: {} },
    async () =>
      tool(async () =>
        (await client.environments.list()).map((e) => ({ name: e.name, state: e.state, urls: e.urls })),
      ),
  );
  server.registerTool(
    'environment_destroy',
    { description: 'Destroy an environment.', inputSchema: { name: z.string() } },
    async ({ name }) =>
      tool(async () => {
        await client.environments.destroy(name);
        return `destroying ${name}`;
      }),
  );

  const transport = new StdioServerTransport();
  await server.connect(transport);
  // Served until the client closes stdin.
  await new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
  });
  await server.close();
}
