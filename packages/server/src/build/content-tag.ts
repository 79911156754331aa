/**
 * Content-addressed image tags: the tag is a hash of the build context, the Dockerfile, the args
 * and the target, so an unchanged service is never rebuilt, across updates and across environments.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { BuildPlan } from '../runtime/runtime.js';

/** Names the Docker CLI would not send either; `.dockerignore` lines are honoured as simple prefixes. */
const ALWAYS_IGNORED = new Set(['.git']);

async function ignoredPrefixes(context: string): Promise<string[]> {
  try {
    const text = await readFile(path.join(context, '.dockerignore'), 'utf8');
    return text
      .split('\n')
      .map((l) => l.trim().replace(/^\.\//, '').replace(/\/$/, ''))
      .filter((l) => l && !l.startsWith('#') && !l.startsWith('!'));
  } catch {
    return [];
  }
}

async function listFiles(root: string, ignored: string[], dir = ''): Promise<string[]> {
  const entries = await readdir(path.join(root, dir), { withFileTypes: true });
  const files: string[] = [];
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = dir ? `${dir}/${entry.name}` : entry.name;
    if (ALWAYS_IGNORED.has(entry.name) || ignored.some((p) => rel === p || rel.startsWith(`${p}/`))) continue;
    if (entry.isDirectory()) files.push(...(await listFiles(root, ignored, rel)));
    else if (entry.isFile() || entry.isSymbolicLink()) files.push(rel);
  }
  return files;
}

export async function buildContentHash(build: BuildPlan): Promise<string> {
  const hash = createHash('sha256');
  hash.update(
    JSON.stringify({
      dockerfile: build.dockerfile,
      args: sortKeys(build.args),
      target: build.target ?? null,
    }),
  );
  for (const rel of await listFiles(build.context, await ignoredPrefixes(build.context))) {
    const full = path.join(build.context, rel);
    const info = await lstat(full);
    // A link is sent to the builder as a link: its target path is its content.
    const content = info.isSymbolicLink() ? Buffer.from(await readlink(full)) : await readFile(full);
    hash.update(`\0${rel}\0${info.isSymbolicLink() ? 'l' : info.mode & 0o111 ? 'x' : '-'}\0`);
    hash.update(content);
  }
  return hash.digest('hex');
}

/** Same context, Dockerfile and args give the same tag, so two services built alike share one image. */
export function contentTag(project: string, hash: string): string {
  const repo = project.toLowerCase().replace(/[^a-z0-9_.-]/g, '-');
  return `mayfly-build/${repo}:${hash.slice(0, 16)}`;
}

function sortKeys(obj: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => a.localeCompare(b)));
}
