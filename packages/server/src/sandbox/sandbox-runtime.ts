/**
 * The sandbox seam: what the control plane asks of a platform to run one sandbox — one container
 * with Mayfly's agent as its main process, hard limits and no network — beside `Runtime`, which
 * applies multi-service plans. Processes, files and ports go through the agent (agent-channel.ts),
 * not through the platform, so a driver only makes, connects, freezes, thaws, watches and removes.
 */

import type { AgentChannel } from './agent-channel.js';
import type { EgressRule } from './egress-policy.js';

/** Labels on every sandbox object (with the installation's `mayfly.instance`). */
export const SANDBOX_LABEL = 'mayfly.sandbox';

export interface SandboxSpec {
  /** `[a-z0-9]+`, unique: names the container and the agent's socket directory. */
  id: string;
  image: string;
  /** The user commands run as (the agent's user): a name or uid[:gid] the image knows. */
  user: string;
  /** Home and default working directory, a private writable file system of `diskBytes`. */
  home: string;
  env: Record<string, string>;
  cpus?: number;
  memoryBytes: number;
  pids: number;
  /** Size of each writable place: the home directory and /tmp. */
  diskBytes: number;
  /** The image's own files read-only (the default): only home and /tmp can be written. */
  readOnlyRoot: boolean;
  isolation: Isolation;
  /** Host directory holding the agent's socket (the one given to `openChannel`), where the agent dials in. */
  agentDir: string;
  /**
   * Without it the sandbox has no network at all (loopback only). With it, it may open connections
   * as `rules` say (in order; egress-policy.ts makes them) and nowhere else — never the host, other
   * sandboxes or environments, which the driver shuts first; `hosts` are names it resolves without
   * DNS (name → address).
   */
  egress?: { rules: EgressRule[]; hosts: Record<string, string> };
  labels: Record<string, string>;
}

/** An image a sandbox must not be made from, and why (volumes it would get, labels it would carry). */
export class SandboxImageRefusedError extends Error {}

export type SandboxPlatformState = 'running' | 'paused' | 'exited' | 'missing';

export interface ObservedSandbox {
  id: string;
  state: SandboxPlatformState;
  /** The kernel killed something in it for memory. */
  oomKilled: boolean;
  exitCode: number | null;
  labels: Record<string, string>;
}

export type Isolation = 'runc' | 'gvisor';

export interface IsolationSupport {
  available: Isolation[];
  /** Why each class this platform cannot run is missing, for the operator. */
  missing: Partial<Record<Isolation, string>>;
}

/** One reading of what a sandbox uses, as the platform counts it. */
export interface SandboxUsage {
  /** When the platform read it: a change of `cpuSeconds` is divided by the time between two. */
  sampledAt: Date;
  /** CPU time its processes have used since it started, all CPUs together (a counter). */
  cpuSeconds: number;
  /** Memory in use now, without the page cache the kernel may drop (as `docker stats` counts it). */
  memoryBytes: number;
  /** The most it has used (cgroup v1); where the platform keeps no peak (cgroup v2), the usage now. */
  memoryPeakBytes: number;
  pids: number;
}

export interface SandboxRuntime {
  readonly name: string;
  /**
   * Why no sandbox may be made on this platform at all (asked once, before the first is made), or
   * undefined: on Kubernetes, a cluster that does not enforce the NetworkPolicies that shut them in.
   * Rejects when it cannot tell yet (asked again later).
   */
  checkPlatform(): Promise<string | undefined>;
  /** Isolation classes this platform can run (`runc`; `gvisor` where it works), and why the others not. */
  isolations(): Promise<IsolationSupport>;
  /** It can give a sandbox an egress allow-list (see {@link SandboxSpec.egress}). */
  canFilterEgress(): Promise<boolean>;
  /**
   * Refuses ({@link SandboxImageRefusedError}) an image whose own settings would undo a sandbox's
   * limits: volumes (unbounded writable disk) or labels of Mayfly's (posing as its objects).
   */
  checkImage(image: string): Promise<void>;
  /**
   * The way to a sandbox's agent, opened before `create` (and again for a sandbox found running
   * after a restart): on Docker a socket in `agentDir` that the agent dials, on Kubernetes
   * connections the control plane opens through the API server's exec.
   */
  openChannel(id: string, agentDir: string): Promise<AgentChannel>;
  /** Makes and starts the sandbox (its image checked first); its agent is then reached by its channel. */
  create(spec: SandboxSpec): Promise<void>;
  /** Freezes every process (memory kept); `resume` thaws them. */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** Removes it and everything it had; resolves when it is gone. Idempotent. */
  remove(id: string): Promise<void>;
  observe(id: string): Promise<ObservedSandbox>;
  /** What it uses now; null where the platform does not count it, or the sandbox is gone. */
  usage(id: string): Promise<SandboxUsage | null>;
  /** Every sandbox of this installation the platform has. */
  list(): Promise<ObservedSandbox[]>;
  /**
   * Calls `onEnd` when a sandbox's main process dies, or the kernel kills something in it for
   * memory (`oom`), as the platform reports it; until the returned function is called.
   */
  watch(onEnd: (id: string, cause: 'oom' | 'exit') => void): () => void;
}
