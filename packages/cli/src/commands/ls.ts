import type { Command } from 'commander';
import { connect } from '../connection.js';
import { formatDuration, table, until } from '../format.js';
import { printJson, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

interface LsOptions {
  all?: boolean;
  project?: string;
}

/** `mayfly ls`: a table of environments. */
export function registerLs(program: Command): void {
  program
    .command('ls')
    .alias('list')
    .description('list environments')
    .option('-a, --all', 'include destroyed environments')
    .option('-p, --project <project>', 'only this project')
    .action(async (options: LsOptions, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const envs = await client.environments.list({ project: options.project, all: options.all === true });
      if (globals.json) return printJson(envs);
      if (envs.length === 0) {
        printStdout(options.all ? 'no environments' : 'no environments (--all includes destroyed ones)');
        return;
      }
      const now = Date.now();
      const rows = envs.map((env) => [
        env.name,
        env.state,
        formatDuration(now - Date.parse(env.createdAt)),
        env.expiresAt && env.state !== 'destroyed' ? until(env.expiresAt, now) : '-',
        Object.values(env.urls).join(' ') || '-',
      ]);
      for (const line of table([['NAME', 'STATE', 'AGE', 'EXPIRES', 'URLS'], ...rows])) printStdout(line);
    });
}
