/** Turning any error into what the user sees and an exit code; loaded only when there is one. */
import {
  ConnectionError,
  ForbiddenError,
  InvalidTemplateError,
  MayflyError,
  UnauthorizedError,
} from '@mayfly/sdk';
import { CommanderError } from 'commander';
import { CliError, ExitCode } from './cli-error.js';
import { formatIssue } from './format.js';
import { printJson, printStderr } from './output.js';

/** Prints `err` the way the user should see it and returns the exit code to use. */
export function reportError(err: unknown, json: boolean): number {
  if (err instanceof CommanderError) {
    // Commander has already printed its message (or the help / version).
    return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  if (err instanceof CliError) {
    printStderr(`mayfly: ${err.message}`);
    if (err.extra.hint) printStderr(`  ${err.extra.hint}`);
    if (json) {
      const code = err.exitCode === ExitCode.usage ? 'invalid_usage' : 'failed';
      printJson(err.extra.json ?? { error: { code, message: err.message } });
    }
    return err.exitCode;
  }
  if (err instanceof MayflyError) {
    // With issues, the first line is the summary: the server may list the issues in the message too.
    const summary = err.issues.length > 0 ? err.message.split('\n')[0] : err.message;
    printStderr(`mayfly: ${err instanceof ForbiddenError ? `forbidden: ${summary}` : summary}`);
    for (const issue of err.issues) printStderr(formatIssue(issue));
    const hint = hintFor(err);
    if (hint) printStderr(`  ${hint}`);
    if (json) {
      const issues = err.issues.length > 0 ? { issues: err.issues } : {};
      printJson({ error: { code: err.code, message: err.message, ...issues } });
    }
    return err instanceof InvalidTemplateError || err.code === 'invalid_request'
      ? ExitCode.usage
      : ExitCode.failure;
  }
  const message = err instanceof Error ? err.message : String(err);
  printStderr(`mayfly: ${message}`);
  if (process.env.MAYFLY_DEBUG && err instanceof Error && err.stack) printStderr(err.stack);
  if (json) printJson({ error: { code: 'internal', message } });
  return ExitCode.failure;
}

function hintFor(err: MayflyError): string | undefined {
  if (err instanceof ConnectionError) {
    return 'is the server running? Start one with `mayfly serve`, or point --server / MAYFLY_URL at one';
  }
  if (err instanceof UnauthorizedError) {
    return 'set MAYFLY_TOKEN to a valid API token (the local server writes its admin token to <data dir>/admin-token)';
  }
  if (err instanceof ForbiddenError) {
    return 'the token in MAYFLY_TOKEN lacks the scope for this; an admin can create one with `mayfly token create NAME --scope write`';
  }
  return undefined;
}
