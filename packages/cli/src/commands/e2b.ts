/**
 * `mayfly e2b env`: the three variables that point the e2b SDKs (npm and Python) at this server,
 * with a new key of E2B's form, so `eval "$(mayfly e2b env)"` is all the set-up (docs/e2b.md).
 */
import { E2bPaths } from '@mayfly/contract';
import type { Command } from 'commander';
import { connect, lastServerUrl } from '../connection.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

/** Quoted for a POSIX shell. */
const quote = (value: string) => `'${value.replace(/'/g, `'"'"'`)}'`;

export function registerE2b(program: Command): void {
  const e2b = program
    .command('e2b')
    .description('use the e2b SDKs with this server (needs an admin token to make the key)');
  e2b
    .command('env')
    .description('print E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY (a new key) as shell exports')
    .option('--name <name>', 'the key’s name, as `mayfly token ls` shows it', 'e2b')
    .option('--ttl <duration>', 'expire the key after this long, e.g. 30d (default: until revoked)')
    .addHelpText('after', '\nExample:\n  eval "$(mayfly e2b env)"\n  node agent.js   # uses the e2b package')
    .action(async (options: { name: string; ttl?: string }, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const key = await client.tokens.create({
        name: options.name,
        scope: 'write',
        format: 'e2b',
        ...(options.ttl ? { ttl: options.ttl } : {}),
      });
      const server = lastServerUrl()!;
      const vars = {
        E2B_API_URL: `${server}${E2bPaths.api}`,
        E2B_SANDBOX_URL: `${server}${E2bPaths.sandbox}`,
        E2B_API_KEY: key.token,
      };
      if (globals.json) return printJson(vars);
      printStdout(
        Object.entries(vars)
          .map(([k, v]) => `export ${k}=${quote(v)}`)
          .join('\n'),
      );
      printStderr(`made key ${key.id} (scope write; revoke with: mayfly token revoke ${key.id})`);
    });
}
