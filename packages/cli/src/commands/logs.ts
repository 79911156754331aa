import type { Command } from 'commander';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { globalOptions } from './global-options.js';

interface LogsOptions {
  follow?: boolean;
  tail?: string;
  build?: boolean;
}

/** `mayfly logs NAME [SERVICE]`: print, or follow, the logs of an environment. */
export function registerLogs(program: Command): void {
  program
    .command('logs')
    .description('print the logs of an environment (all services, each line prefixed "service | ", or one)')
    .argument('<name>', 'environment name or id')
    .argument('[service]', 'only this service')
    .option('-f, --follow', 'keep printing new lines until interrupted or the environment is destroyed')
    .option(
      '--build',
      "the output of its image builds (the last 256 KiB of each), instead of the services' logs",
    )
    .option(
      '--tail <n>',
      'start with the last N lines, or "all"; 0 with -f: only lines written from now on (default: the server\'s, 1000)',
    )
    .addHelpText(
      'after',
      `
With --json, each line is an object on its own line: {"service": "web", "line": "..."}.

Examples:
  mayfly logs shop-k3v9                 # last 1000 lines of every service
  mayfly logs shop-k3v9 web -f          # follow one service until Ctrl-C or destroy
  mayfly logs shop-k3v9 --tail 0 -f     # only what comes next
  mayfly logs shop-k3v9 api --build     # how api's image was built (kept after a failed build too)`,
    )
    .action(async (name: string, service: string | undefined, options: LogsOptions, command: Command) => {
      const globals = globalOptions(command);
      const tail = parseTail(options.tail);
      if (options.build && options.follow) {
        throw new UsageError(
          '--build cannot be combined with --follow: build output is printed once it is kept',
        );
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
          build: options.build === true,
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

/** `--tail`: a whole number ≥ 0 (digits only: no `1e3`, `0x10`, ` 5`) or `all`. */
export function parseTail(text: string | undefined): number | 'all' | undefined {
  if (text === undefined || text === 'all') return text;
  if (!/^\d{1,9}$/.test(text)) {
    throw new UsageError(`invalid --tail "${text}": expected a whole number (0 or more) or "all"`);
  }
  return Number(text);
}

/**
 * Under --json a stream is NDJSON: one compact object per line, the service split from the
 * `service | ` prefix. The server pads names to the longest one (`api  | …`); service names are
 * DNS labels, so neither spaces nor `|` belong to them.
 */
export function jsonLine(
  line: string,
  service: string | undefined,
): { service: string | null; line: string } {
  if (service) return { service, line };
  const match = /^([^\s|]+) * \| (.*)$/s.exec(line);
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
