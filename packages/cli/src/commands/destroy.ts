import { parseDuration } from '@mayfly/contract';
import { NotFoundError, TimeoutError, UnexpectedStateError } from '@mayfly/sdk';
import type { Command } from 'commander';
import { CliError, UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { formatDuration, formatElapsed } from '../format.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { progressPrinter } from '../progress.js';
import { globalOptions } from './global-options.js';

interface DestroyOptions {
  wait: boolean;
  timeout: string;
}

/** `mayfly destroy NAME`: tear an environment down and wait until it is verified gone. */
export function registerDestroy(program: Command): void {
  program
    .command('destroy')
    .alias('down')
    .description('destroy an environment and wait until nothing of it is left')
    .argument('<name>', 'environment name or id')
    .option('--no-wait', 'return as soon as the server has accepted the request')
    .option('--timeout <duration>', 'how long to wait for it to be destroyed', '10m')
    .action(async (name: string, options: DestroyOptions, command: Command) => {
      const globals = globalOptions(command);
      const timeoutMs = parseDuration(options.timeout);
      if (timeoutMs === null) throw new UsageError(`invalid --timeout "${options.timeout}"`);
      const client = await connect(globals);
      const start = Date.now();
      // Only the teardown is shown: events from before the request are history.
      const before = await client.environments.events(name);
      const after = before.at(-1)?.id ?? 0;
      const accepted = await client.environments.destroy(name);
      if (!options.wait) {
        if (globals.json) return printJson(accepted);
        printStdout(`destroying ${accepted.name} (state: ${accepted.state})`);
        return;
      }

      if (accepted.state !== 'destroyed') printStderr(`destroying ${accepted.name}`);
      let env = accepted;
      try {
        env = await client.environments.waitFor(accepted.id, {
          states: ['destroyed'],
          after,
          timeoutMs,
          onEvent: progressPrinter(start),
        });
      } catch (err) {
        if (err instanceof TimeoutError) {
          throw new CliError(
            `${accepted.name} is not destroyed after ${formatDuration(timeoutMs)} (state: ${err.environment?.state ?? 'unknown'})`,
            1,
            {
              json: err.environment ?? accepted,
              hint: `the server keeps trying; see: mayfly get ${accepted.name}`,
            },
          );
        }
        if (err instanceof UnexpectedStateError)
          throw new CliError(err.message, 1, { json: err.environment });
        // A server may forget an environment once it is gone: that is success too.
        if (!(err instanceof NotFoundError)) throw err;
        env = { ...accepted, state: 'destroyed' };
      }
      if (globals.json) return printJson(env);
      printStdout(`${env.name} destroyed (${formatElapsed(Date.now() - start)})`);
    });
}
