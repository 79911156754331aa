/** Template folders for tests, written to a temporary directory (the caller removes it). */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TESTKIT_IMAGE } from './global-setup.js';

/** A folder holding `files` (relative path → content). */
export async function makeProject(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-project-'));
  for (const [name, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), content);
  }
  return dir;
}

/**
 * One service `app` built from the test image plus a nonce, so its image is new to this run and
 * the build really happens; `steps` are more Dockerfile lines.
 */
export function nonceBuildProject(steps = ''): Promise<string> {
  return makeProject({
    nonce: `${Date.now()} ${Math.random()}\n`,
    Dockerfile: `FROM ${TESTKIT_IMAGE}\nCOPY nonce /nonce\n${steps}`,
    'compose.yaml': 'services:\n  app:\n    build: .\n    command: ["testkit", "sleep"]\n',
  });
}
