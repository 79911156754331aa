import {
  CreateTokenRequest,
  ProjectName,
  parseDuration,
  TOKEN_SCOPES,
  type Token,
  type TokenScope,
} from '@mayfly/contract';
import { type Command, Option } from 'commander';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { printable, table, until } from '../format.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

interface CreateOptions {
  scope: TokenScope;
  project?: string;
  ttl?: string;
}

/** `mayfly token create|ls|revoke`: API tokens and their scopes (needs an admin token). */
export function registerToken(program: Command): void {
  const token = program
    .command('token')
    .description('manage API tokens: create (read, write or admin scope), list, revoke; needs an admin token')
    .addHelpText(
      'after',
      `
Scopes: read (ls, get, logs), write (also up, destroy), admin (also tokens).

Examples:
  export MAYFLY_TOKEN=$(mayfly token create ci --scope write --project shop --ttl 30d)
  mayfly token ls --all
  mayfly token revoke ci`,
    );

  token
    .command('create')
    .description('create a token; it is printed once, on stdout, and cannot be shown again')
    .argument('<name>', 'a name to recognise it by (revoke takes it too)')
    .addOption(
      new Option('--scope <scope>', 'what it may do').choices([...TOKEN_SCOPES]).makeOptionMandatory(),
    )
    .option('-p, --project <project>', 'only this project: other projects do not exist for it')
    .option('--ttl <duration>', 'expire after this long, e.g. 30d, 12h (default: until revoked)')
    .action(async (name: string, options: CreateOptions, command: Command) => {
      const globals = globalOptions(command);
      const request = { name, scope: options.scope, project: options.project, ttl: options.ttl };
      checkCreate(request);
      const client = await connect(globals);
      const created = await client.tokens.create(request);
      if (globals.json) return printJson(created);
      // The token alone on stdout, so that `$(mayfly token create …)` captures just it.
      printStdout(created.token);
      printStderr(
        `created token ${printable(created.name)} (${created.id}): scope ${created.scope}, ${created.project ? `project ${created.project}` : 'every project'}, expires ${until(created.expiresAt)}`,
      );
      printStderr('  it is not shown again: store it now (the server keeps only a hash)');
    });

  token
    .command('ls')
    .alias('list')
    .description('list tokens (never their secrets)')
    .option('-a, --all', 'include revoked tokens')
    .action(async (options: { all?: boolean }, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const tokens = await client.tokens.list({ all: options.all === true });
      if (globals.json) return printJson(tokens);
      if (tokens.length === 0) {
        printStdout(options.all ? 'no tokens' : 'no tokens (--all includes revoked ones)');
        return;
      }
      const rows = tokens.map((t) => tokenRow(t));
      for (const line of table([
        ['ID', 'NAME', 'SCOPE', 'PROJECT', 'CREATED', 'EXPIRES', 'REVOKED'],
        ...rows,
      ]))
        printStdout(line);
    });

  token
    .command('revoke')
    .description('revoke a token by id, or by name when one live token has it')
    .argument('<token>', 'token id (tok_…) or name')
    .action(async (idOrName: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const revoked = await client.tokens.revoke(idOrName);
      if (globals.json) return printJson(revoked);
      printStdout(`revoked token ${printable(revoked.name)} (${revoked.id})`);
    });
}

/** Refuses what the server would, before asking it: a usage error (exit 2) names the flag. */
function checkCreate(request: {
  name: string;
  project?: string | undefined;
  ttl?: string | undefined;
}): void {
  if (request.project !== undefined) {
    const project = ProjectName.safeParse(request.project);
    if (!project.success) {
      throw new UsageError(
        `invalid --project "${request.project}": ${project.error.issues[0]?.message ?? 'not allowed'}`,
      );
    }
  }
  if (request.ttl !== undefined && parseDuration(request.ttl) === null) {
    throw new UsageError(`invalid --ttl "${request.ttl}"`, 'use a duration such as 12h, 30d or 1d12h');
  }
  const check = CreateTokenRequest.shape.name.safeParse(request.name);
  if (!check.success || request.name.trim() === '' || /[\p{Cc}]/u.test(request.name)) {
    throw new UsageError(`invalid token name "${request.name}": 1 to 100 printable characters`);
  }
}

function tokenRow(t: Token): string[] {
  return [
    t.id,
    printable(t.name),
    t.scope,
    t.project ?? '-',
    t.createdAt.slice(0, 10),
    t.expiresAt === null ? 'never' : until(t.expiresAt),
    t.revokedAt === null ? '-' : t.revokedAt.slice(0, 10),
  ];
}
