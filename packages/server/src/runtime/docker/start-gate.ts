/**
 * Start gates: a container that waits for others (`depends_on`) is started at once, its own
 * command held at the door by `mayfly-agent gate` until the control plane releases it, and then
 * replaced by that command (same pid, same environment). Starting a container is the slow part of
 * bringing it up on Docker (network, mounts, the runtime: most of a second here), so it is paid
 * while the services it waits for are still coming up instead of after them. What `depends_on`
 * promises is kept: the workload's own process does not run before its dependencies are ready.
 *
 * The release is a file the control plane creates in a directory of its own, mounted read-only
 * into the container: it survives a control-plane restart and cannot be made by the container.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import type { EnvPlan, HealthcheckPlan, WorkloadPlan } from '../../plan/plan.js';

/** Where the agent binary and the release directory appear inside a gated container. */
const AGENT_IN_CONTAINER = '/.mayfly/bin/mayfly-agent';
const RELEASE_DIR_IN_CONTAINER = '/.mayfly/gate';
const RELEASE_FILE = 'released';
/** On a gated container, so a later look (after a restart, with other settings) still knows it. */
export const GATED_LABEL = 'mayfly.gated';
/** Docker keeps this many health-check results per container. */
const DOCKER_HEALTH_LOG_ENTRIES = 5;

export interface StartGateOptions {
  /** The static `mayfly-agent` binary on the Docker host. */
  agentBinary: string;
  /** A directory of the control plane's on the Docker host, for release files. */
  dir: string;
}

/** The image settings that decide what a container runs. */
export interface ImageCommand {
  Entrypoint?: string | string[] | null;
  Cmd?: string | string[] | null;
}

/** Image configs hold lists; a bare string (allowed by the Engine's types) is one word. */
const words = (value: string | string[] | null | undefined) =>
  value === null || value === undefined ? undefined : typeof value === 'string' ? [value] : value;

/**
 * What Docker would run for this workload: its entrypoint and command over the image's, by the
 * Engine's own rule (an entrypoint given drops the image's command; an empty one drops the image's
 * entrypoint but keeps its command).
 */
export function effectiveArgv(workload: Pick<WorkloadPlan, 'entrypoint' | 'command'>, image: ImageCommand) {
  const given = (list: string[] | undefined | null) => (list && list.length > 0 ? list : undefined);
  const command = given(workload.command);
  if (given(workload.entrypoint)) return [...workload.entrypoint!, ...(command ?? [])];
  const entrypoint = workload.entrypoint === undefined ? (words(image.Entrypoint) ?? []) : [];
  return [...entrypoint, ...(command ?? words(image.Cmd) ?? [])];
}

/** The create options of `base`, changed so the container holds its command until released. */
export function gatedCreateOptions(
  base: Docker.ContainerCreateOptions,
  argv: string[],
  gate: StartGateOptions,
  releaseDir: string,
): Docker.ContainerCreateOptions {
  return {
    ...base,
    Entrypoint: [AGENT_IN_CONTAINER, 'gate', `${RELEASE_DIR_IN_CONTAINER}/${RELEASE_FILE}`, '--'],
    Cmd: argv,
    Labels: { ...base.Labels, [GATED_LABEL]: 'true' },
    HostConfig: {
      ...base.HostConfig,
      Mounts: [
        ...(base.HostConfig?.Mounts ?? []),
        { Type: 'bind', Source: gate.agentBinary, Target: AGENT_IN_CONTAINER, ReadOnly: true },
        { Type: 'bind', Source: releaseDir, Target: RELEASE_DIR_IN_CONTAINER, ReadOnly: true },
      ],
    },
  };
}

/**
 * Whether a workload is worth gating: it waits for something, and its isolation sees the host's
 * file changes at once (gVisor's file cache may not).
 */
export function worthGating(plan: EnvPlan, workload: WorkloadPlan): boolean {
  return workload.dependsOn.length > 0 && plan.isolation !== 'gvisor';
}

/** The release files of one installation's environments, on the Docker host. */
export class ReleaseFiles {
  constructor(private readonly root: string) {}

  /** One directory per environment, one per workload inside (prefixed: `.` and `..` are service names too). */
  dirOf(envId: string, workload: string): string {
    if (!envId || /[/\\]/.test(envId) || /[/\\]/.test(workload))
      throw new Error(`cannot gate ${envId}/${workload}`);
    return path.join(this.root, envId, `w-${workload}`);
  }

  async prepare(envId: string, workload: string): Promise<string> {
    const dir = this.dirOf(envId, workload);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    return dir;
  }

  /** Held: containers started from now on wait. Returns the directory to mount. */
  async hold(envId: string, workload: string): Promise<string> {
    const dir = await this.prepare(envId, workload);
    await rm(path.join(dir, RELEASE_FILE), { force: true });
    return dir;
  }

  async release(envId: string, workload: string): Promise<void> {
    await writeFile(path.join(await this.prepare(envId, workload), RELEASE_FILE), '');
  }

  /** When the workload was released, or null while it is held. */
  async releasedAt(envId: string, workload: string): Promise<number | null> {
    const info = await stat(path.join(this.dirOf(envId, workload), RELEASE_FILE)).catch(() => null);
    return info ? info.mtimeMs : null;
  }

  async holdAll(envId: string, workloads: string[]): Promise<void> {
    await Promise.all(workloads.map((w) => this.hold(envId, w)));
  }

  async forget(envId: string): Promise<void> {
    await rm(path.join(this.root, envId), { recursive: true, force: true });
  }
}

/**
 * Whether Docker's `unhealthy` is about the workload's own process: a gated container's checks ran
 * while it was held (nothing listening yet), and those results must not fail it. Only checks that
 * began after the release and after the check's start period count, as Docker counts from a start.
 */
export function unhealthySinceRelease(
  log: { Start?: string; ExitCode?: number }[] | undefined,
  releasedAt: number,
  check: Pick<HealthcheckPlan, 'retries' | 'startPeriodMs'> | undefined,
): boolean {
  const from = releasedAt + (check?.startPeriodMs ?? 0);
  const counted = (log ?? []).filter((entry) => Date.parse(entry.Start ?? '') >= from);
  let failing = 0;
  for (const entry of counted.reverse()) {
    if (entry.ExitCode === 0) break;
    failing++;
  }
  const retries = check?.retries || 3; // Docker's default
  return failing >= Math.min(retries, DOCKER_HEALTH_LOG_ENTRIES);
}
