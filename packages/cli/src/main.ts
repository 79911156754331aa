/**
 * Entry point of the `mayfly` CLI (run through bin/mayfly.js). Parses the command line, runs the
 * verb, maps any error to a message on stderr and an exit code.
 */
import { CommanderError } from 'commander';
import { ExitCode, PassExitCode } from './cli-error.js';
import { flushOutput } from './output.js';
import { createProgram } from './program.js';

/** Runs the CLI with `argv` (as in `process.argv`) and returns the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  try {
    await (await createProgram({}, argv)).parseAsync(argv);
    return 0;
  } catch (err) {
    // Help, --version and usage errors: commander has printed them; nothing more to load.
    if (err instanceof CommanderError) return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    if (err instanceof PassExitCode) return err.exitCode;
    const { reportError } = await import('./report-error.js');
    return reportError(err, argv.includes('--json'));
  }
}

// `mayfly logs x | head`, `mayfly get x | head`: a reader that closes the pipe early is done, not
// an error, whichever verb is writing.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

// A request that never settles (Node 20's fetch could drop one whose connection was reset before
// it was written; the CLI's own requests on node:http report that, but the SDK may be given
// another fetch) would leave nothing keeping the process alive: it would exit with 13 and no
// word. The event loop running dry before the command is done is taken to mean that.
let done = false;
process.once('beforeExit', () => {
  if (done) return;
  void (async () => {
    const [{ reportError }, { ConnectionError }, { lastServerUrl }] = await Promise.all([
      import('./report-error.js'),
      import('@mayfly/sdk'),
      import('./connection.js'),
    ]);
    const url = lastServerUrl() ?? 'the server';
    const code = reportError(
      new ConnectionError(
        `cannot reach the Mayfly server at ${url} (the connection was reset before it answered)`,
      ),
      process.argv.includes('--json'),
    );
    await flushOutput();
    process.exit(code);
  })();
});

const code = await main(process.argv);
done = true;
await flushOutput();
// Explicit: idle keep-alive sockets of fetch must not hold the process open after the command is done.
process.exit(code);
