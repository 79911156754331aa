/**
 * The CLI's own errors, light enough for every command to import (the SDK and its schemas are
 * loaded only when one is reported: see `report-error.ts`).
 */

/** Process exit codes of the CLI. */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const;

/** An error meant for the user: printed as `mayfly: <message>`, then the process exits with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.failure,
    /** `json`: printed on stdout instead of an error object under `--json`; `hint`: a second line. */
    readonly extra: { json?: unknown; hint?: string } = {},
  ) {
    super(message);
  }
}

/** Bad flags, arguments or input files: exit code 2. */
export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string, hint?: string) {
    super(message, ExitCode.usage, hint === undefined ? {} : { hint });
  }
}

/**
 * Exit with a command's own code and nothing said: `mayfly sandbox exec` passes the code of the
 * command it ran through, as `docker exec` does, without adding a line to the command's stderr.
 */
export class PassExitCode extends Error {
  override name = 'PassExitCode';
  constructor(readonly exitCode: number) {
    super(`exit code ${exitCode}`);
  }
}
