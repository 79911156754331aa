/**
 * Entry point of the `mayfly` CLI (run through bin/mayfly.js). Parses the command line, runs the
 * verb, maps any error to a message on stderr and an exit code.
 */
import { ConnectionError } from '@mayfly/sdk';
import { reportError } from './cli-error.js';
import { lastServerUrl } from './connection.js';
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

// Node 20's fetch (undici 6) drops a request whose connection is reset before the request is
// written: the promise never settles and nothing keeps the process alive, so it would exit with
// 13 (unsettled top-level await) and no word. The event loop running dry before the command is
// done is taken to mean that: say so, as for any other connection failure.
let done = false;
process.once('beforeExit', () => {
  if (done) return;
  const url = lastServerUrl() ?? 'the server';
  const code = reportError(
    new ConnectionError(
      `cannot reach the Mayfly server at ${url} (the connection was reset before it answered)`,
    ),
    process.argv.includes('--json'),
  );
  flushOutput().then(() => process.exit(code));
});

const code = await main(process.argv);
done = true;
await flushOutput();
// Explicit: idle keep-alive sockets of fetch must not hold the process open after the command is done.
process.exit(code);
