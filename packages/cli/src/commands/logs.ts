import type { Command } from 'commander';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { globalOptions } from './global-options.js';

interface LogsOptions {
  follow?: boolean;
  tail?: string;
}

/** `mayfly logs NAME [SERVICE]`: print, or follow, the logs of an environment. */
export function registerLogs(program: Command): void {
  program
    .command('logs')
    .description('print the logs of an environment (all services, each line prefixed "service | ", or one)')
    .argument('<name>', 'environment name or id')
    .argument('[service]', 'only this service')
    .option('-f, --follow', 'keep printing new lines until interrupted or the environment is destroyed')
    .option('--tail <n>', 'start with the last N lines')
    .action(async (name: string, service: string | undefined, options: LogsOptions, command: Command) => {
      const globals = globalOptions(command);
      const tail = options.tail === undefined ? undefined : Number(options.tail);
      if (tail !== undefined && !(Number.isInteger(tail) && tail >= 0)) {
        throw new UsageError(`invalid --tail "${options.tail}": expected a whole number`);
      }
      const client = await connect(globals);
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        const lines = client.environments.logs(name, {
          service,
          tail,
          follow: options.follow === true,
          signal: controller.signal,
        });
        for await (const line of lines) {
          if (controller.signal.aborted) break;
          const text = globals.json ? JSON.stringify(jsonLine(line, service)) : line;
          if (!process.stdout.write(`${text}\n`)) await waitForDrain(controller.signal);
        }
      } finally {
        process.removeListener('SIGINT', stop);
        process.removeListener('SIGTERM', stop);
      }
    });
}

/** Under --json a stream is NDJSON: one compact object per line, the service split from the `service | ` prefix. */
function jsonLine(line: string, service: string | undefined): { service: string | null; line: string } {
  if (service) return { service, line };
  const match = /^([^\s|]+) \| (.*)$/s.exec(line);
  return match ? { service: match[1] ?? null, line: match[2] ?? '' } : { service: null, line };
}

function waitForDrain(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.stdout.removeListener('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    process.stdout.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
