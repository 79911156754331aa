import { type Environment, parseDuration } from '@mayfly/contract';
import { type MayflyClient, TimeoutError, UnexpectedStateError } from '@mayfly/sdk';
import type { Command } from 'commander';
import { CliError, UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { formatDuration, formatElapsed, until } from '../format.js';
import { printJson, printStderr } from '../output.js';
import { progressPrinter } from '../progress.js';
import { globalOptions } from './global-options.js';

/** `--wait` and `--timeout` of the commands that bring an environment back up. */
interface WakeOptions {
  wait?: boolean;
  timeout: string;
}

/**
 * `mayfly sleep|wake|keep|extend|redeploy NAME`: an environment's lifecycle by hand. Each prints one line on
 * stderr saying what is now true (with `--json` too: messages stay on stderr), and `--json` the
 * environment on stdout.
 */
export function registerLifecycle(program: Command): void {
  program
    .command('sleep')
    .description('put an environment to sleep: containers stopped, volumes kept; the next request wakes it')
    .argument('<name>', 'environment name or id')
    .addHelpText(
      'after',
      `
A sleeping environment holds no memory or CPU. The next request to one of its URLs wakes it (the
request is held until it is ready; a browser sees a page that reloads), as does \`mayfly wake\`.
Its time to live keeps running.

Example:
  mayfly sleep shop-pr-7`,
    )
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const env = await client.environments.sleep(name);
      printStderr(sleepLine(env));
      if (globals.json) printJson(env);
    });

  program
    .command('wake')
    .description('wake a sleeping environment: its services start again')
    .argument('<name>', 'environment name or id')
    .option('--wait', 'wait until it is ready, printing its progress')
    .option('--timeout <duration>', 'with --wait, how long to wait for it to be ready', '10m')
    .addHelpText(
      'after',
      `
Without --wait it returns once the server has taken the request; an environment that is awake
is left as it is.

Examples:
  mayfly wake shop-pr-7
  mayfly wake shop-pr-7 --wait && curl -sf http://web--shop-pr-7.localhost:7070/`,
    )
    .action((name: string, options: WakeOptions, command: Command) => wake(name, options, command));

  program
    .command('redeploy')
    .description('make every service of an environment anew: new containers, volumes and finished jobs kept')
    .argument('<name>', 'environment name or id')
    .option('--wait', 'wait until it is ready again, printing its progress')
    .option('--timeout <duration>', 'with --wait, how long to wait for it to be ready', '10m')
    .addHelpText(
      'after',
      `
Every service restarts in a new container from the image it has (built again only if it is gone);
volumes keep their data and run-once jobs that finished are not run again. A failed environment is
tried again from the start; a sleeping one wakes this way. Refused while it is coming up, going to
sleep or waking, being updated or destroyed.

Examples:
  mayfly redeploy shop-pr-7
  mayfly redeploy shop-pr-7 --wait`,
    )
    .action((name: string, options: WakeOptions, command: Command) => redeploy(name, options, command));

  program
    .command('keep')
    .description('keep an environment: no time to live, never put to sleep for being idle')
    .argument('<name>', 'environment name or id')
    .addHelpText(
      'after',
      `
A kept environment stays until it is destroyed by hand (\`mayfly destroy\`); \`mayfly extend\` gives
it a time to live again. A pull request's preview with the label mayfly:keep is kept too.

Example:
  mayfly keep shop-pr-7`,
    )
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const env = await client.environments.keep(name);
      printStderr(`${env.name} kept: no time to live, never put to sleep for being idle`);
      if (globals.json) printJson(env);
    });

  program
    .command('extend')
    .description("push the end of an environment's time to live back")
    .argument('<name>', 'environment name or id')
    .argument('<duration>', 'how much longer: 90s, 30m, 2h, 1d, 1h30m…')
    .addHelpText(
      'after',
      `
The time is added to what is left, or to now when it has no time to live (it is then no longer
kept); at most 365 days from now.

Examples:
  mayfly extend shop-pr-7 2h
  mayfly extend shop-pr-7 1d --json`,
    )
    .action(async (name: string, by: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      // The server checks the duration: one parser, one message.
      const env = await client.environments.extend(name, by);
      printStderr(`${env.name} extended: ${expiryWords(env)}`);
      if (globals.json) printJson(env);
    });
}

async function redeploy(name: string, options: WakeOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const timeoutMs = timeoutOf(options);
  const client = await connect(globals);
  const start = Date.now();
  const after = options.wait ? ((await client.environments.events(name)).at(-1)?.id ?? 0) : 0;
  const asked = await client.environments.redeploy(name);
  let env = asked;
  if (!options.wait) {
    printStderr(
      `${asked.name} redeploying: every service restarts in a new container; see: mayfly get ${asked.name}`,
    );
  } else {
    env = await waitUntilReady(client, asked, after, start, timeoutMs, 'redeploying');
    printStderr(`${env.name} redeployed: ready (${formatElapsed(Date.now() - start)})`);
  }
  if (globals.json) printJson(env);
}

function timeoutOf(options: WakeOptions): number {
  const timeoutMs = parseDuration(options.timeout);
  if (timeoutMs === null) throw new UsageError(`invalid --timeout "${options.timeout}"`);
  return timeoutMs;
}

async function wake(name: string, options: WakeOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const timeoutMs = timeoutOf(options);
  const client = await connect(globals);
  const start = Date.now();
  // With --wait, only the wake-up is shown: events from before the request are history.
  const after = options.wait ? ((await client.environments.events(name)).at(-1)?.id ?? 0) : 0;
  const woken = await client.environments.wake(name);
  let env = woken;
  if (woken.state === 'failed') throw failedError(woken);
  if (woken.state === 'ready') {
    printStderr(`${woken.name} awake: ready`);
  } else if (!options.wait) {
    printStderr(
      woken.state === 'sleeping'
        ? `${woken.name} waking: its services start again; see: mayfly get ${woken.name}`
        : `${woken.name} not asleep: it is coming up (state: ${woken.state}); see: mayfly get ${woken.name}`,
    );
  } else {
    env = await waitUntilReady(client, woken, after, start, timeoutMs, 'waking');
    printStderr(`${env.name} awake: ready (${formatElapsed(Date.now() - start)})`);
  }
  if (globals.json) printJson(env);
}

/** Waits until `woken` is ready again, as `up` waits; a failed or late one is a CliError naming why. */
async function waitUntilReady(
  client: MayflyClient,
  woken: Environment,
  after: number,
  start: number,
  timeoutMs: number,
  doing: 'waking' | 'redeploying',
): Promise<Environment> {
  printStderr(`${doing} ${woken.name}`);
  const stopOnInterrupt = () => {
    printStderr(`\ninterrupted: ${woken.name} keeps ${doing} on the server`);
    printStderr(`  see: mayfly get ${woken.name}`);
    process.exit(130);
  };
  process.once('SIGINT', stopOnInterrupt);
  let env: Environment;
  try {
    env = await client.environments.waitFor(woken.id, {
      states: ['ready', 'failed'],
      after,
      timeoutMs,
      onEvent: progressPrinter(start),
    });
  } catch (err) {
    if (err instanceof TimeoutError) {
      throw new CliError(
        `${woken.name} is not ready after ${formatDuration(timeoutMs)} (state: ${err.environment?.state ?? 'unknown'})`,
        1,
        { json: err.environment ?? woken, hint: `it keeps ${doing}; see: mayfly get ${woken.name}` },
      );
    }
    if (err instanceof UnexpectedStateError) throw new CliError(err.message, 1, { json: err.environment });
    throw err;
  } finally {
    process.removeListener('SIGINT', stopOnInterrupt);
  }
  if (env.state === 'failed') throw failedError(env);
  return env;
}

/** A failed environment, as `up` reports one: the step, and the end of the workload's output indented. */
function failedError(env: Environment): CliError {
  const why = env.failure
    ? ` at ${env.failure.step}: ${env.failure.reason.trimEnd().replace(/\n/g, '\n  ')}`
    : '';
  return new CliError(`${env.name} failed${why}`, 1, {
    json: env,
    hint: `see: mayfly get ${env.name}   mayfly logs ${env.name}`,
  });
}

/** What `sleep` made true: asleep already, or on its way there. */
function sleepLine(env: Environment): string {
  const wakes = `the next request (or \`mayfly wake ${env.name}\`) wakes it`;
  return env.state === 'sleeping'
    ? `${env.name} asleep: containers stopped, volumes kept; ${wakes}`
    : `${env.name} going to sleep: its containers stop, volumes are kept; ${wakes}`;
}

/** `expires in 3h (at 14:05:00, 1/2/2026)`, or `never expires` for one without a time to live. */
function expiryWords(env: Environment): string {
  if (env.expiresAt === null) return 'never expires';
  return `expires ${until(env.expiresAt)} (at ${new Date(env.expiresAt).toLocaleString()})`;
}
