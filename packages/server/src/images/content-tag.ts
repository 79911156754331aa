/**
 * Content-addressed image tags: the tag is a hash of the build context, the Dockerfile, the args
 * and the target, so an unchanged service is never rebuilt, across updates and across environments.
 */
import { createHash } from 'node:crypto';
import type { BuildPlan } from '../plan/plan.js';
import { type ContextEntry, listContextFiles, packContext } from './context-files.js';

/**
 * Hash of what the builder receives: the Dockerfile path, args and target, and the very tar
 * {@link packContext} sends (deterministic by construction), so the hash changes exactly when the
 * sent content does. Pass `entries` to hash the same listing that is then packed for the build.
 */
export async function buildContentHash(build: BuildPlan, entries?: readonly ContextEntry[]): Promise<string> {
  const listed = entries ?? (await listContextFiles(build.context, build.dockerfile));
  const hash = createHash('sha256');
  hash.update(
    JSON.stringify({
      dockerfile: build.dockerfile,
      args: sortKeys(build.args),
      target: build.target ?? null,
    }),
  );
  for await (const chunk of packContext(build.context, listed)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Same context, Dockerfile and args give the same tag, so two services built alike share one image. */
export function contentTag(project: string, hash: string): string {
  const repo = project.toLowerCase().replace(/[^a-z0-9_.-]/g, '-');
  return `mayfly-build/${repo}:${hash.slice(0, 16)}`;
}

function sortKeys(obj: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
