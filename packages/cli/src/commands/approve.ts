import type { Command } from 'commander';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { printJson, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';
import { previewLine } from './project.js';

/** `mayfly approve PROJECT NUMBER`: build a pull request from a fork. */
export function registerApprove(program: Command): void {
  program
    .command('approve')
    .description("build a fork's pull request at its current head (needs a write token)")
    .argument('<project>', 'project name')
    .argument('<number>', 'pull (merge) request number')
    .option('--sha <commit>', 'the head commit you looked at: refused if the pull request has moved on since')
    .addHelpText(
      'after',
      `
Pull requests from forks are not built until approved: their code would be built and run on
your servers (without the project's secret inputs, which forks never get). An approval is for
the head commit it sees; a later push needs a new one (or the project's approval label, which
only people with write access can add).

Examples:
  mayfly approve web 42
  mayfly approve web 42 --sha 1a2b3c4d   # only if #42 is still at that commit`,
    )
    .action(async (project: string, number: string, options: { sha?: string }, command: Command) => {
      const globals = globalOptions(command);
      const pr = pullRequestNumber(number);
      const client = await connect(globals);
      if (options.sha !== undefined && !/^[0-9a-fA-F]{7,64}$/.test(options.sha)) {
        throw new UsageError(`--sha "${options.sha}": a commit id, 7 to 64 hex digits`);
      }
      const preview = await client.projects.approve(project, pr, options.sha);
      if (globals.json) return printJson(preview);
      // The controller acts on the approval right after: until then the state is the one before it.
      const queued = preview.approved && preview.state === 'awaiting-approval';
      printStdout(
        `approved ${queued ? previewLine({ ...preview, state: 'building', detail: 'queued' }) : previewLine(preview)}`,
      );
      printStdout(
        `  environment ${preview.environment}: follow it with \`mayfly project get ${preview.project}\``,
      );
    });
}

/** A pull request number as the API takes it: a whole number from 1 to 2^31. */
export function pullRequestNumber(text: string): number {
  const number = /^[1-9]\d{0,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!(number <= 2 ** 31))
    throw new UsageError(`invalid pull request number "${text}": a whole number from 1`);
  return number;
}
