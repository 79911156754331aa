/** `mayfly serve` and other commands run as a user runs them: the real bin in a child process. */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/mayfly.js', import.meta.url));
/** This process's environment without MAYFLY_* (a user's shell, not the test run's settings). */
export const cleanEnv = () =>
  Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MAYFLY_')));

/** `mayfly ARGS…` to its end (30 s at most). */
export function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: cleanEnv(), timeout: 30_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
      },
    );
  });
}

/** Starts `mayfly serve … --json` and resolves with the child and what it printed once it listens. */
export async function startServe(
  args: string[],
): Promise<{ child: ChildProcess; info: { url: string; adminTokenFile: string } }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--json', '--port', '0', ...args], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const info = await new Promise<{ url: string; adminTokenFile: string }>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      // `--json` prints one (pretty-printed) object on stdout once it listens.
      try {
        const parsed = JSON.parse(out) as { url?: string; adminTokenFile: string };
        if (parsed.url) resolve(parsed as { url: string; adminTokenFile: string });
      } catch {
        // not complete yet
      }
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
  });
  return { child, info };
}
