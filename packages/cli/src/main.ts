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

// `mayfly logs x | head`, `mayfly get x | head`: a reader that closes the pipe early is done, not
// an error, whichever verb is writing.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const code = await main(process.argv);
await flushOutput();
// Explicit: idle keep-alive sockets of fetch must not hold the process open after the command is done.
process.exit(code);
