/** Writes one line of result to stdout. */
export function printStdout(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Writes one line of progress, warning or error to stderr. */
export function printStderr(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Writes a value as indented JSON to stdout: the whole output of a command under `--json`. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Resolves once everything written to stdout and stderr has been handed to the OS. */
export async function flushOutput(): Promise<void> {
  await Promise.all(
    [process.stdout, process.stderr].map(
      (stream) =>
        new Promise<void>((resolve) => {
          if (stream.writableLength === 0) return resolve();
          stream.write('', () => resolve());
        }),
    ),
  );
}
