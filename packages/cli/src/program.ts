import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerDestroy } from './commands/destroy.js';
import { registerGet } from './commands/get.js';
import { registerLogs } from './commands/logs.js';
import { registerLs } from './commands/ls.js';
import { registerServe, type ServeDeps } from './commands/serve.js';
import { registerToken } from './commands/token.js';
import { registerUp } from './commands/up.js';
import { registerValidate } from './commands/validate.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** The `mayfly` command with all its verbs. It throws instead of exiting: see `main`. */
export function createProgram(deps: { serve?: ServeDeps } = {}): Command {
  const program = new Command('mayfly')
    .description('Mayfly: ephemeral environments, from a template to URLs and back to nothing')
    .version(version, '-V, --version')
    .option(
      '--server <url>',
      'Mayfly server URL (default: $MAYFLY_URL, else a local server on http://127.0.0.1:7070, started when needed)',
    )
    .option('--json', 'print machine-readable JSON on stdout (progress goes to stderr)')
    .showSuggestionAfterError()
    // Set before the verbs are added: commands created with .command() inherit these.
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`mayfly: ${text.replace(/^error: /, '')}`) });
  program.addHelpText(
    'after',
    `
Environment:
  MAYFLY_URL    server URL, when --server is not given
  MAYFLY_TOKEN  API token (the local default server's admin token is read from <data dir>/admin-token);
                its scope (read, write, admin) limits what it may do: see \`mayfly token --help\`
  MAYFLY_HOME   data directory of the local server (default: ~/.mayfly)

Exit codes: 0 ok, 1 failure, 2 invalid usage or input.`,
  );
  registerServe(program, deps.serve);
  registerUp(program);
  registerValidate(program);
  registerLs(program);
  registerGet(program);
  registerLogs(program);
  registerDestroy(program);
  registerToken(program);
  return program;
}
