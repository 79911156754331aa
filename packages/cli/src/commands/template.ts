/** `mayfly template …`: the templates sandboxes are made from. */
import { resolve } from 'node:path';
import { SandboxTemplates } from '@mayfly/sdk';
import type { Command } from 'commander';
import { packFolder, sendableFolder, uploadBundle } from '../bundle.js';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { table } from '../format.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';
import { collect, connection, pairs } from './sandbox.js';

interface BuildOptions {
  name: string;
  file?: string;
  image?: string;
  user?: string;
  workdir?: string;
  env: string[];
  cpu?: string;
  memory?: string;
  pids?: string;
  disk?: string;
  isolation?: string;
  pool?: string;
}

/** A size in MiB: `512`, `512m`, `2g`. */
function mebibytes(value: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(m|mi|mb|mib|g|gi|gb|gib)?$/i.exec(value.trim());
  if (!match) throw new UsageError(`invalid ${flag} "${value}"`, 'use a size such as 512m or 2g');
  const n = Number(match[1]) * (match[2]?.toLowerCase().startsWith('g') ? 1024 : 1);
  if (!Number.isInteger(n)) throw new UsageError(`invalid ${flag} "${value}": give whole MiB`);
  return n;
}

function whole(value: string, flag: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`invalid ${flag} "${value}": expected a whole number`);
  return Number(value);
}

export function registerTemplate(program: Command): void {
  const template = program
    .command('template')
    .description('sandbox templates: an image plus the defaults its sandboxes get');

  template
    .command('build')
    .description('make a sandbox template from a folder with a Dockerfile (built now), or name an image')
    .argument('[dir]', 'folder with the Dockerfile (its .dockerignore is honoured)')
    .requiredOption('--name <name>', 'template name (replaces a template of that name)')
    .option('-f, --file <path>', 'the Dockerfile, relative to the folder', 'Dockerfile')
    .option('--image <ref>', "an image the server's engine has, instead of a folder")
    .option('--user <uid:gid>', 'commands run as this user (never root; default 1000:1000)')
    .option('--workdir <path>', 'home and working directory: private and writable')
    .option('--env <KEY=VALUE>', 'a variable every sandbox of it gets (repeatable)', collect, [])
    .option('--cpu <n>', 'CPUs (default 1)')
    .option('--memory <size>', 'memory limit (default 512m)')
    .option('--pids <n>', 'processes at once (default 256)')
    .option('--disk <size>', 'size of the home and of /tmp, each; in memory (default 256m)')
    .option('--isolation <class>', 'runc (default) or gvisor where the server has it')
    .option('--pool <n>', 'sandboxes of it kept ready (default 0)')
    .addHelpText(
      'after',
      `
Examples:
  mayfly template build ./my-sandbox --name py --pool 2
  mayfly sandbox create --template py`,
    )
    .action(async (dir: string | undefined, options: BuildOptions, command: Command) => {
      if ((dir === undefined) === (options.image === undefined))
        throw new UsageError(
          'give a folder with a Dockerfile, or --image',
          'mayfly template build DIR --name N',
        );
      const settings = {
        name: options.name,
        ...(options.user !== undefined ? { user: options.user } : {}),
        ...(options.workdir !== undefined ? { workdir: options.workdir } : {}),
        env: pairs(options.env, '--env'),
        ...(options.cpu !== undefined ? { cpu: Number(options.cpu) } : {}),
        ...(options.memory !== undefined ? { memoryMb: mebibytes(options.memory, '--memory') } : {}),
        ...(options.pids !== undefined ? { pids: whole(options.pids, '--pids') } : {}),
        ...(options.disk !== undefined ? { diskMb: mebibytes(options.disk, '--disk') } : {}),
        ...(options.isolation !== undefined ? { isolation: options.isolation as 'runc' | 'gvisor' } : {}),
        ...(options.pool !== undefined ? { pool: whole(options.pool, '--pool') } : {}),
      };
      let source: { bundle: string; dockerfile: string } | { image: string };
      if (dir !== undefined) {
        // Packed before connecting: a folder that cannot be sent is a usage error, found without a server.
        const root = sendableFolder(dir, 'folder');
        const stream = await packFolder(root, [resolve(root, options.file ?? 'Dockerfile')]);
        try {
          const bundle = await uploadBundle(await connect(globalOptions(command)), { root, stream });
          source = { bundle: bundle.id, dockerfile: options.file ?? 'Dockerfile' };
        } finally {
          stream.destroy();
        }
        printStderr(`building ${options.name}…`);
      } else {
        source = { image: options.image! };
      }
      const made = await SandboxTemplates.put({ ...settings, ...source }, await connection(command));
      if (globalOptions(command).json) printJson(made);
      else printStdout(`${made.name} ready (${made.image})`);
    });

  template
    .command('ls')
    .description('list sandbox templates, with their warm pools')
    .action(async (_options: unknown, command: Command) => {
      const items = await SandboxTemplates.list(await connection(command));
      if (globalOptions(command).json) {
        printJson({ items });
        return;
      }
      const rows = items.map((t) => [
        t.name,
        t.source,
        t.image ?? '(not built yet)',
        `${t.cpu} cpu, ${t.memoryMb} MiB`,
        t.isolation,
        `${t.pool.ready}/${t.pool.size}`,
      ]);
      for (const line of table([['NAME', 'SOURCE', 'IMAGE', 'LIMITS', 'ISOLATION', 'POOL'], ...rows]))
        printStdout(line);
    });

  template
    .command('rm')
    .description('forget a sandbox template (its sandboxes keep running)')
    .argument('<name>', 'template name')
    .action(async (name: string, _options: unknown, command: Command) => {
      await SandboxTemplates.remove(name, await connection(command));
      printStdout(`removed ${name}`);
    });
}
