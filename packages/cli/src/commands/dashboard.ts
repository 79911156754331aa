import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { connect } from '../connection.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

interface DashboardOptions {
  printUrl?: boolean;
}

/** `mayfly dashboard [--print-url]`: a one-time login link to the dashboard, opened where a desktop is. */
export function registerDashboard(program: Command): void {
  program
    .command('dashboard')
    .description(
      "print a one-time login link to the dashboard (works once, for 5 minutes) and open it in a browser where there is a desktop; the session has this token's scope",
    )
    .option('--print-url', 'only print the link')
    .action(async (options: DashboardOptions, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const link = await client.dashboardLoginLink();
      if (globals.json) return printJson(link);
      printStdout(link.url);
      printStderr('  a one-time link: it logs one browser in, within 5 minutes');
      if (!options.printUrl && hasDesktop()) openInBrowser(link.url);
    });
}

/** A graphical session to open a browser in (not over SSH, not on a headless server). */
function hasDesktop(): boolean {
  if (process.platform === 'darwin' || process.platform === 'win32') return true;
  return Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
}

function openInBrowser(url: string): void {
  const [cmd, args] =
    process.platform === 'darwin'
      ? ['open', [url]]
      : process.platform === 'win32'
        ? ['cmd', ['/c', 'start', '""', url]]
        : ['xdg-open', [url]];
  // Best effort: the link is printed either way.
  const child = spawn(cmd, args as string[], { stdio: 'ignore', detached: true });
  child.on('error', () => {});
  child.unref();
}
