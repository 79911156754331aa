import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseDuration } from '@mayfly/contract';
import { Sandbox, type SandboxConnection } from '@mayfly/sdk';
import type { Command } from 'commander';
import { PassExitCode, UsageError } from '../cli-error.js';
import { connect, resolveToken } from '../connection.js';
import { ago, formatBytes, table, until } from '../format.js';
import { printJson, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

export const collect = (value: string, previous: string[]) => [...previous, value];

/** `K=V` pairs, refused with the offending one named. */
export function pairs(values: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf('=');
    if (at <= 0) throw new UsageError(`invalid ${flag} "${value}": expected KEY=VALUE`);
    out[value.slice(0, at)] = value.slice(at + 1);
  }
  return out;
}

/** Quotes a word for `/bin/sh` unless it needs none. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The server the global options point at, started if it is the local default, as the SDK takes it. */
export async function connection(command: Command): Promise<SandboxConnection> {
  const client = await connect(globalOptions(command));
  const token = resolveToken(client.baseUrl);
  return { baseUrl: client.baseUrl, ...(token ? { token } : {}) };
}

/** `mayfly sandbox …`: isolated machines for untrusted code and agents. */
export function registerSandbox(program: Command): void {
  const sandbox = program
    .command('sandbox')
    .description('sandboxes: isolated, limited machines for untrusted code and AI agents');

  sandbox
    .command('create')
    .description('create a sandbox and print its id')
    .option('--template <name>', 'sandbox template (base, code)', 'base')
    .option('--timeout <duration>', 'killed after this long unless extended', '5m')
    .option('--env <KEY=VALUE>', 'a variable every command in it gets (repeatable)', collect, [])
    .option('--metadata <KEY=VALUE>', 'a label to find it by (repeatable)', collect, [])
    .option(
      '--allow-out <CIDR|HOST>',
      'an address, CIDR or host name it may connect to (repeatable; default: no network at all)',
      collect,
      [],
    )
    .addHelpText(
      'after',
      `
Examples:
  id=$(mayfly sandbox create --timeout 10m)
  mayfly sandbox exec "$id" -- python3 -c 'print(6 * 7)'
  mayfly sandbox kill "$id"`,
    )
    .action(
      async (
        options: { template: string; timeout: string; env: string[]; metadata: string[]; allowOut: string[] },
        command: Command,
      ) => {
        const timeoutMs = parseDuration(options.timeout);
        if (timeoutMs === null)
          throw new UsageError(`invalid --timeout "${options.timeout}"`, 'use e.g. 30s, 10m or 2h');
        const sbx = await Sandbox.create({
          ...(await connection(command)),
          template: options.template,
          timeoutMs,
          envs: pairs(options.env, '--env'),
          metadata: pairs(options.metadata, '--metadata'),
          ...(options.allowOut.length > 0 ? { allowOut: options.allowOut } : {}),
        });
        if (globalOptions(command).json) printJson(await sbx.getInfo());
        else printStdout(sbx.id);
      },
    );

  sandbox
    .command('exec')
    .description("run a command in a sandbox; its output is passed through and its exit code is mayfly's")
    .argument('<id>', 'sandbox id')
    .argument('<command...>', 'the command and its arguments (after --)')
    .option('--cwd <dir>', 'working directory (default: the home)')
    .option('--env <KEY=VALUE>', 'a variable for this command (repeatable)', collect, [])
    .option('--timeout <duration>', 'kill it after this long (default: no limit)')
    .option('--no-stdin', 'do not forward standard input (it is, when it is not a terminal)')
    .addHelpText(
      'after',
      `
Standard input is forwarded when it is not a terminal:
  echo 'print(1 + 1)' | mayfly sandbox exec "$id" -- python3 -`,
    )
    .action(
      async (
        id: string,
        argv: string[],
        options: { cwd?: string; env: string[]; timeout?: string; stdin?: boolean },
        command: Command,
      ) => {
        const timeoutMs = options.timeout === undefined ? 0 : parseDuration(options.timeout);
        if (timeoutMs === null) throw new UsageError(`invalid --timeout "${options.timeout}"`);
        const sbx = await Sandbox.connect(id, await connection(command));
        const forwardStdin = options.stdin === true || (options.stdin === undefined && !process.stdin.isTTY);
        const handle = await sbx.commands.run(argv.map(shellQuote).join(' '), {
          background: true,
          envs: pairs(options.env, '--env'),
          ...(options.cwd ? { cwd: options.cwd } : {}),
          timeoutMs,
          ...(forwardStdin ? { stdin: true as const } : {}),
          onStdout: (data) => process.stdout.write(data),
          onStderr: (data) => process.stderr.write(data),
        });
        if (forwardStdin) {
          // Forwarded while it runs, given up when it ends (a pipe that stays open does not hold
          // mayfly), and a command that stops reading early (as head does) is not an error.
          void (async () => {
            for await (const chunk of process.stdin) await handle.sendStdin(chunk as Buffer);
            await handle.sendStdin('', { close: true });
          })().catch(() => {});
        }
        const result = await handle.wait();
        process.stdin.destroy();
        if (result.exitCode !== 0) throw new PassExitCode(result.exitCode);
      },
    );

  sandbox
    .command('cp')
    .description('copy a file into or out of a sandbox; the sandbox side is ID:/path')
    .argument('<src>', 'a local file, or ID:/path')
    .argument('<dst>', 'a local file, or ID:/path')
    .addHelpText(
      'after',
      '\nExamples:\n  mayfly sandbox cp data.csv "$id":/home/user/data.csv\n  mayfly sandbox cp "$id":/home/user/out.png out.png',
    )
    .action(async (src: string, dst: string, _options: unknown, command: Command) => {
      const remote = (side: string) => /^([a-z0-9]+):(.+)$/.exec(side);
      const from = remote(src);
      const to = remote(dst);
      if (!!from === !!to) throw new UsageError('exactly one side must be ID:/path');
      const conn = await connection(command);
      if (to) {
        if (!(await stat(src)).isFile()) throw new UsageError(`${src} is not a file`);
        const sbx = await Sandbox.connect(to[1]!, conn);
        const entry = await sbx.files.write(
          to[2]!,
          Readable.from(createReadStream(src)) as AsyncIterable<Uint8Array>,
        );
        printStdout(`${entry.path} (${entry.size} bytes)`);
      } else {
        const sbx = await Sandbox.connect(from![1]!, conn);
        const body = Readable.fromWeb((await sbx.files.read(from![2]!, { format: 'stream' })) as never);
        if (dst === '-') for await (const chunk of body) process.stdout.write(chunk as Buffer);
        else await pipeline(body, createWriteStream(dst));
      }
    });

  sandbox
    .command('ls')
    .description('list sandboxes (running and paused; --all: ended ones too, with why they ended)')
    .option('--all', 'include ended sandboxes still on record')
    .action(async (options: { all?: boolean }, command: Command) => {
      const items = await Sandbox.list({
        ...(await connection(command)),
        ...(options.all ? { state: ['running', 'paused', 'ended'] } : {}),
      });
      if (globalOptions(command).json) {
        printJson({ items });
        return;
      }
      const rows = items.map((s) => [
        s.id,
        s.template,
        s.state === 'ended' ? `ended (${s.endedReason})` : s.state,
        ago(s.startedAt),
        s.state === 'ended' ? '-' : until(s.expiresAt),
        // Recorded when it ends: the most memory it used.
        ...(options.all ? [s.peakMemoryBytes === null ? '-' : formatBytes(s.peakMemoryBytes)] : []),
      ]);
      const head = ['ID', 'TEMPLATE', 'STATE', 'AGE', 'TIME LEFT', ...(options.all ? ['MEMORY PEAK'] : [])];
      for (const line of table([head, ...rows])) printStdout(line);
    });

  sandbox
    .command('kill')
    .description('kill a sandbox: everything in it is gone')
    .argument('<id>', 'sandbox id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const sbx = await Sandbox.connect(id, await connection(command));
      await sbx.kill();
      printStdout(`killed ${id}`);
    });
}
