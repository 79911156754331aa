import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { ServeDeps } from './commands/serve.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

type Register = (program: Command, deps: { serve?: ServeDeps }) => void;

/**
 * Every verb, by its names, loaded only when needed: a command line with a verb loads that verb
 * alone (and with it the SDK and schemas only if it talks to a server), `--version` loads none,
 * help and unknown verbs all of them. Starting fast is most of what a CLI feels like.
 */
const VERBS: [names: string[], load: () => Promise<Register>][] = [
  [
    ['serve'],
    async () => {
      const { registerServe } = await import('./commands/serve.js');
      return (program, deps) => registerServe(program, deps.serve);
    },
  ],
  [['up'], async () => (await import('./commands/up.js')).registerUp],
  [['validate'], async () => (await import('./commands/validate.js')).registerValidate],
  [['run'], async () => (await import('./commands/run.js')).registerRun],
  [['ls', 'list'], async () => (await import('./commands/ls.js')).registerLs],
  [['get'], async () => (await import('./commands/get.js')).registerGet],
  [['logs'], async () => (await import('./commands/logs.js')).registerLogs],
  [
    ['sleep', 'wake', 'keep', 'extend', 'redeploy'],
    async () => (await import('./commands/lifecycle.js')).registerLifecycle,
  ],
  [['destroy', 'down'], async () => (await import('./commands/destroy.js')).registerDestroy],
  [['token'], async () => (await import('./commands/token.js')).registerToken],
  [['snapshot'], async () => (await import('./commands/snapshot.js')).registerSnapshot],
  [['dashboard'], async () => (await import('./commands/dashboard.js')).registerDashboard],
  [['project'], async () => (await import('./commands/project.js')).registerProject],
  [['apply'], async () => (await import('./commands/apply.js')).registerApply],
  [['approve'], async () => (await import('./commands/approve.js')).registerApprove],
  [['sandbox'], async () => (await import('./commands/sandbox.js')).registerSandbox],
  [['template'], async () => (await import('./commands/template.js')).registerTemplate],
  [['mcp'], async () => (await import('./commands/mcp.js')).registerMcp],
  [['e2b'], async () => (await import('./commands/e2b.js')).registerE2b],
];

/** Global options that take a value: the word after them is not the verb. */
const OPTIONS_WITH_VALUE = new Set(['--server']);

/** The verbs `argv` needs registered: its verb's, none for a bare `--version`, else all of them. */
function verbsFor(argv: readonly string[]): typeof VERBS {
  const args = argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') break;
    if (OPTIONS_WITH_VALUE.has(arg)) {
      i++;
      continue;
    }
    if (arg.startsWith('-')) continue;
    const known = VERBS.filter(([names]) => names.includes(arg));
    return known.length > 0 ? known : VERBS;
  }
  const versionOnly = args.length > 0 && args.every((a) => a === '-V' || a === '--version' || a === '--json');
  return versionOnly ? [] : VERBS;
}

/** The `mayfly` command with the verbs `argv` needs (all by default). It throws instead of exiting: see `main`. */
export async function createProgram(
  deps: { serve?: ServeDeps } = {},
  argv: readonly string[] = ['node', 'mayfly'],
): Promise<Command> {
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
  const registers = await Promise.all(verbsFor(argv).map(([, load]) => load()));
  for (const register of registers) register(program, deps);
  return program;
}
