import type { Command } from 'commander';
import type { GlobalOptions } from '../connection.js';

/** The program-wide options (`--server`, `--json`) as seen from a subcommand's action. */
export function globalOptions(command: Command): GlobalOptions {
  const options = command.optsWithGlobals<{ server?: string; json?: boolean }>();
  return { server: options.server, json: options.json === true };
}
