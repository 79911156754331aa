/**
 * What the server, not the template, decides about a plan before any driver sees it: default
 * limits for every workload, and which host paths may be bound — checked once at create and again
 * right before every apply, so a plan from the store never binds what the operator did not allow.
 */

import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { serviceUrlVariable } from '@mayfly/contract';
import type { EnvPlan, WorkloadPlan } from '../plan/plan.js';
import { RuntimeStepError } from '../runtime/runtime.js';
import type { Workspaces } from '../sources/workspaces.js';
import { workloadHash } from '../template/index.js';
import { InvalidRequestError } from './errors.js';

export interface HostPathPolicy {
  /**
   * Host directories (absolute) the operator allows templates to bind or read, besides their own
   * folder (`mayfly serve --allow-host-path DIR`). A socket file is only allowed when listed itself.
   */
  allowedHostPaths: string[];
  /**
   * Sockets that control the host (the Docker and containerd sockets): a bind of a folder that
   * holds one is refused unless the operator lists the socket itself.
   */
  protectedPaths?: string[];
}

export interface DefaultLimits {
  defaultMemoryBytes: number;
  defaultPids: number;
}

const rehash = (w: WorkloadPlan): WorkloadPlan => {
  const { specHash: _old, ...rest } = w;
  return { ...rest, specHash: workloadHash(rest) };
};

/** Every workload gets a memory and a pids limit unless its template sets one. */
export function withDefaultLimits(plan: EnvPlan, limits: DefaultLimits): EnvPlan {
  return {
    ...plan,
    workloads: plan.workloads.map((w) =>
      rehash({
        ...w,
        resources: {
          ...w.resources,
          memoryBytes: w.resources.memoryBytes ?? limits.defaultMemoryBytes,
          pids: w.resources.pids ?? limits.defaultPids,
        },
      }),
    ),
  };
}

/**
 * Every workload learns the URLs of its environment's HTTP services as `MAYFLY_URL_<SERVICE>`, so
 * a front end finds its own preview's API. A variable the template sets itself wins.
 */
export function withServiceUrls(plan: EnvPlan, urls: Record<string, string>): EnvPlan {
  const variables = Object.fromEntries(
    Object.entries(urls).map(([service, url]) => [serviceUrlVariable(service), url]),
  );
  if (Object.keys(variables).length === 0) return plan;
  return {
    ...plan,
    workloads: plan.workloads.map((w) => rehash({ ...w, env: { ...variables, ...w.env } })),
  };
}

/**
 * Binds of the template's own files are pointed at private copies the server makes
 * (`Workspaces.prepareBindSources`): Docker resolves a bind source at every container start, and a
 * container that can write along that path (a bind of the folder above it) could swap it for a
 * link to `/` in between. Binds of operator-allowed host paths are kept as they are.
 */
export async function withPrivateBindSources(
  plan: EnvPlan,
  envId: string,
  workspaces: Workspaces,
  policy: HostPathPolicy,
  /** The server's copy of the template's folder: the claimed bundle (default) or a checkout. */
  templateDir: string = workspaces.sourceDir(envId),
): Promise<EnvPlan> {
  const own = templateDir;
  const sources = new Set<string>();
  for (const w of plan.workloads) {
    for (const m of w.mounts) {
      if (m.type !== 'bind') continue;
      if (isInside(own, m.source)) sources.add(m.source);
      else if (!policy.allowedHostPaths.some((dir) => isInside(dir, m.source))) {
        throw new InvalidRequestError(`bind source "${m.source}" is outside the paths templates may bind`);
      }
    }
  }
  if (sources.size === 0) return plan;
  const copies = await workspaces.prepareBindSources(envId, [...sources], own);
  return {
    ...plan,
    workloads: plan.workloads.map((w) =>
      w.mounts.some((m) => m.type === 'bind' && copies.has(m.source))
        ? rehash({
            ...w,
            mounts: w.mounts.map((m) =>
              m.type === 'bind' && copies.has(m.source) ? { ...m, source: copies.get(m.source)! } : m,
            ),
          })
        : w,
    ),
  };
}

/**
 * Files the plan carries (secrets and configs given as content) become read-only binds of files
 * the server writes into the environment's mounts folder (`Workspaces.writeFiles`): copied into a
 * container instead, they would be missing under a tmpfs mounted above them, impossible with a
 * read-only root file system, and writable by root in the container.
 */
export async function withFilesAsMounts(
  plan: EnvPlan,
  envId: string,
  workspaces: Workspaces,
): Promise<EnvPlan> {
  if (!plan.workloads.some((w) => w.files.length > 0)) return plan;
  const files = plan.workloads.flatMap((w) => w.files.map((f) => ({ ...f, key: `${w.name}\0${f.target}` })));
  const written = await workspaces.writeFiles(envId, files);
  return {
    ...plan,
    workloads: plan.workloads.map((w) =>
      w.files.length === 0
        ? w
        : rehash({
            ...w,
            files: [],
            mounts: [
              ...w.mounts,
              ...w.files.map((f) => ({
                type: 'bind' as const,
                source: written.get(`${w.name}\0${f.target}`)!,
                target: f.target,
                readOnly: true,
              })),
            ],
          }),
    ),
  };
}

/**
 * At create and right before every apply: every bind source, links followed, is one of the
 * environment's private copies, or inside an allowed host path and bound read-only; a socket only
 * when its exact path is allowed, and never a folder that holds the Docker socket unless that is
 * listed itself. Throws the `mounts` step error otherwise.
 */
export async function checkBindSources(
  plan: EnvPlan,
  privateRoot: string,
  policy: HostPathPolicy,
): Promise<void> {
  for (const w of plan.workloads) {
    for (const m of w.mounts) {
      if (m.type !== 'bind') continue;
      const refuse = (why: string) =>
        new RuntimeStepError(`mounts:${w.name}`, `bind source "${m.source}" ${why}`);
      let real: string;
      try {
        real = await realpath(m.source);
      } catch {
        throw refuse('does not exist');
      }
      const ownCopy =
        isInside(await realpathOr(privateRoot), real) && real !== (await realpathOr(privateRoot));
      if (ownCopy) continue;
      const allowed = await Promise.all(policy.allowedHostPaths.map(realpathOr));
      if (!allowed.some((dir) => isInside(dir, real)))
        throw refuse('is outside the paths templates may bind');
      const isSocket = (await stat(real)).isSocket();
      const listedSocket = isSocket && allowed.includes(real);
      if (isSocket && !listedSocket) {
        throw refuse('is a socket; only a socket path the operator lists itself may be bound');
      }
      // Docker resolves a bind source anew at every start: if any container could write along a
      // shared host path, it could swap part of it for a link to / before another one starts.
      if (!listedSocket && !m.readOnly) {
        throw refuse('is a host path the operator shares: bind it read-only (add ":ro")');
      }
      for (const protectedPath of policy.protectedPaths ?? []) {
        const held = await realpathOr(protectedPath);
        if (held !== real && isInside(real, held) && !allowed.includes(held)) {
          throw refuse(
            `holds ${protectedPath}, which controls the host; the operator may list that socket itself`,
          );
        }
      }
    }
  }
}

async function realpathOr(p: string): Promise<string> {
  return realpath(p).catch(() => path.resolve(p));
}

/** True when `p` is `root` or below it (lexically; callers resolve links first where it matters). */
export function isInside(root: string, p: string): boolean {
  const rel = path.relative(path.resolve(root), path.resolve(p));
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}
