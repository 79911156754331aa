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
      const made = await client.dashboardLoginLink();
      // The link to this server as the CLI reaches it (behind a proxy, the server may not know its
      // public address), with a code of the one form a login link has: nothing else is opened.
      const code = /^#(mfl_[A-Za-z0-9_-]{43})$/.exec(new URL(made.url).hash)?.[1];
      if (!code) throw new Error('the server answered with something that is not a login link');
      const link = { url: new URL(`/login#${code}`, client.baseUrl).href, expiresAt: made.expiresAt };
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
  // (No shell anywhere: on Windows the URL handler itself, not `cmd /c start`.)
  const [cmd, args] =
    process.platform === 'darwin'
      ? ['open', [url]]
      : process.platform === 'win32'
        ? ['rundll32', ['url.dll,FileProtocolHandler', url]]
        : ['xdg-open', [url]];
  // Best effort: the link is printed either way.
  const child = spawn(cmd, args as string[], { stdio: 'ignore', detached: true });
  child.on('error', () => {});
  child.unref();
}
