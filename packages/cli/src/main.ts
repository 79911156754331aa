/**
 * Entry point of the `mayfly` CLI (run through bin/mayfly.js). Parses the command line, runs the
 * verb, maps any error to a message on stderr and an exit code.
 */
import { reportError } from './cli-error.js';
import { flushOutput } from './output.js';
import { createProgram } from './program.js';

/** Runs the CLI with `argv` (as in `process.argv`) and returns the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  try {
    await createProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    return reportError(err, argv.includes('--json'));
  }
}

const code = await main(process.argv);
await flushOutput();
// Explicit: idle keep-alive sockets of fetch must not hold the process open after the command is done.
process.exit(code);
