/**
 * DockerSandboxRuntime: the sandbox seam over the Docker Engine. One container per sandbox, with
 * `mayfly-agent serve` as its main process (under Docker's init), no network interface but
 * loopback, every capability dropped, no-new-privileges, the image read-only but for a private
 * home and /tmp of a fixed size, and limits on memory (no swap), CPU and pids.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import { AgentChannel } from '../../sandbox/agent-channel.js';
import {
  type IsolationSupport,
  type ObservedSandbox,
  SANDBOX_LABEL,
  SandboxImageRefusedError,
  type SandboxRuntime,
  type SandboxSpec,
  type SandboxUsage,
} from '../../sandbox/sandbox-runtime.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import { bridgeName, EgressFirewall } from './egress-firewall.js';
import { engineClient, ignore, statusCode } from './engine-api.js';
import { gvisorProblem } from './gvisor-probe.js';
import { BUILT_BY_LABEL } from './names.js';
import { freeSubnets, type SubnetPool } from './subnets.js';

const AGENT_IN_CONTAINER = '/.mayfly/bin/mayfly-agent';
const AGENT_DIR_IN_CONTAINER = '/.mayfly/run';
const AGENT_SOCKET = 'agent.sock';

export interface DockerSandboxRuntimeOptions {
  socketPath?: string;
  docker?: Docker;
  instance: string;
  /** The static agent binary on the Docker host. */
  agentBinary: string;
  /** The Engine's runtime (daemon.json) for `gvisor` sandboxes; default `runsc`. */
  gvisorRuntime?: string;
  /** Subnets of the bridges of sandboxes with an egress allow-list; default /28s of 10.214.0.0/16. */
  subnetPool?: SubnetPool;
  /**
   * Ranges no sandbox reaches whatever its rules say (environments' networks, say); the
   * sandboxes' own pool is always added. (Link-local, loopback and the like: egress-policy.ts.)
   */
  blockedOut?: string[];
  firewall?: EgressFirewall;
}

export const sandboxContainerName = (id: string) => `mayfly-sbx-${id}`;
/** The bridge network of a sandbox with an egress allow-list. */
export const sandboxNetworkName = (id: string) => `mayfly-sbx-${id}`;
const DEFAULT_SUBNET_POOL: SubnetPool = { base: '10.214.0.0/16', size: 28 };

/**
 * The host's pids limit for a gVisor sandbox of `pids` processes. Its processes live in gVisor's
 * kernel, which on the ptrace platform (Debian's runsc) keeps about eight host threads for each
 * (measured: 51 processes, 457 host pids) besides its own; the host limit still bounds a fork bomb,
 * which then ends the sandbox instead of failing its `fork`.
 */
export const gvisorHostPids = (pids: number) => pids * 10 + 64;

/**
 * Pids of a runc sandbox's limit kept for its agent: the threads it makes at its start (see
 * `reserveThreads` in packages/agent/serve.go) and the runtime's own. A sandbox's `pids` are its
 * processes'; a fork bomb takes those and leaves the agent the threads it already has.
 */
export const AGENT_PIDS = 32;

/** Pure: the Engine's create options for a sandbox. */
export function sandboxCreateOptions(
  instance: string,
  agentBinary: string,
  spec: SandboxSpec,
  gvisorRuntime = 'runsc',
): Docker.ContainerCreateOptions {
  const [uid = '', gid] = spec.user.split(':');
  const owner = /^\d+$/.test(uid) ? `,uid=${uid}${gid && /^\d+$/.test(gid) ? `,gid=${gid}` : ''}` : '';
  // `exec` said outright: Docker's default for a tmpfs is noexec, and a sandbox must be able to run
  // what it writes (scripts, installed tools) — its own code runs anyway, by an interpreter if not.
  const writable = (mode: string) => `rw,exec,nosuid,nodev,size=${spec.diskBytes},mode=${mode}${owner}`;
  return {
    name: sandboxContainerName(spec.id),
    Hostname: 'sandbox',
    Image: spec.image,
    User: spec.user,
    WorkingDir: spec.home,
    Entrypoint: [AGENT_IN_CONTAINER, 'serve', '--socket', `${AGENT_DIR_IN_CONTAINER}/${AGENT_SOCKET}`],
    Cmd: [],
    Env: [`HOME=${spec.home}`, ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`)],
    Labels: {
      ...spec.labels,
      [LABELS.managedBy]: MANAGED_BY,
      [LABELS.instance]: instance,
      [SANDBOX_LABEL]: spec.id,
    },
    NetworkDisabled: false,
    // The image's own health check would run its code in a sandbox nobody has claimed yet.
    Healthcheck: { Test: ['NONE'] },
    HostConfig: {
      // Loopback only: no route out, to the host, or to another sandbox. The agent's socket is a
      // file. With an allow-list: a bridge of its own, whose traffic the firewall filters.
      NetworkMode: spec.egress ? sandboxNetworkName(spec.id) : 'none',
      ...(spec.egress
        ? {
            ExtraHosts: Object.entries(spec.egress.hosts).map(([name, ip]) => `${name}:${ip}`),
            // Names it may use are in its hosts file. Docker's resolver forwards other queries to
            // this address (TEST-NET-1, never listed) from the sandbox's own namespace, where the
            // firewall drops them: no DNS through the host's resolver. And no IPv6 at all (the
            // firewall's rules are IPv4).
            Dns: ['192.0.2.1'],
            Sysctls: { 'net.ipv6.conf.all.disable_ipv6': '1', 'net.ipv6.conf.default.disable_ipv6': '1' },
          }
        : {}),
      Init: true,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: spec.readOnlyRoot,
      Tmpfs: {
        [spec.home]: writable('0700'),
        '/tmp': writable('1777'),
      },
      Mounts: [
        { Type: 'bind', Source: agentBinary, Target: AGENT_IN_CONTAINER, ReadOnly: true },
        { Type: 'bind', Source: spec.agentDir, Target: AGENT_DIR_IN_CONTAINER, ReadOnly: true },
      ],
      Memory: spec.memoryBytes,
      MemorySwap: spec.memoryBytes,
      NanoCpus: spec.cpus ? Math.round(spec.cpus * 1e9) : undefined,
      PidsLimit: spec.isolation === 'gvisor' ? gvisorHostPids(spec.pids) : spec.pids + AGENT_PIDS,
      Ulimits: [{ Name: 'nofile', Soft: 4096, Hard: 4096 }],
      RestartPolicy: { Name: '' },
      LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
      Runtime: spec.isolation === 'gvisor' ? gvisorRuntime : undefined,
    },
  };
}

/**
 * Refuses an image (from the Engine where Mayfly builds) whose own settings would undo a sandbox's
 * limits: volumes (unbounded writable disk) or Mayfly's labels (posing as its objects). Shared by
 * every sandbox driver whose images come from that Engine.
 */
export async function checkSandboxImage(docker: Docker, image: string): Promise<void> {
  const info = (await docker.getImage(image).inspect()) as {
    Config?: { Volumes?: Record<string, unknown> | null; Labels?: Record<string, string> | null };
  };
  const volumes = Object.keys(info.Config?.Volumes ?? {});
  if (volumes.length > 0)
    throw new SandboxImageRefusedError(
      `image ${image} declares volumes (${volumes.join(', ')}): a sandbox may write only its bounded home and /tmp`,
    );
  // The builder's own marks are fine (the container's labels replace the instance's anyway).
  const ours = Object.keys(info.Config?.Labels ?? {}).filter(
    (label) => label.startsWith('mayfly.') && label !== BUILT_BY_LABEL && label !== LABELS.instance,
  );
  if (ours.length > 0)
    throw new SandboxImageRefusedError(`image ${image} carries Mayfly's own labels (${ours.join(', ')})`);
}

export class DockerSandboxRuntime implements SandboxRuntime {
  readonly name = 'docker';
  private readonly docker: Docker;

  private readonly firewall: EgressFirewall;
  private readonly subnetPool: SubnetPool;
  private readonly blockedOut: string[];
  /** Bridges are made one at a time (each picks a free subnet). */
  private networkQueue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: DockerSandboxRuntimeOptions) {
    this.docker = engineClient(options);
    this.firewall = options.firewall ?? new EgressFirewall();
    this.subnetPool = options.subnetPool ?? DEFAULT_SUBNET_POOL;
    this.blockedOut = [...new Set([...(options.blockedOut ?? []), this.subnetPool.base])];
  }

  canFilterEgress(): Promise<boolean> {
    return this.firewall.available();
  }

  /** A bridge of its own, on a free subnet of the pool, and the firewall's rules for it. */
  private async openEgress(spec: SandboxSpec, egress: NonNullable<SandboxSpec['egress']>): Promise<void> {
    const make = async () => {
      const networks = await this.docker.listNetworks();
      const used = networks.flatMap((n) =>
        (n.IPAM?.Config ?? []).map((c) => c.Subnet).filter((x): x is string => !!x),
      );
      for (const subnet of freeSubnets(this.subnetPool, used)) {
        try {
          await this.docker.createNetwork({
            Name: sandboxNetworkName(spec.id),
            Driver: 'bridge',
            CheckDuplicate: true,
            EnableIPv6: false,
            Labels: {
              ...spec.labels,
              [LABELS.managedBy]: MANAGED_BY,
              [LABELS.instance]: this.options.instance,
              [SANDBOX_LABEL]: spec.id,
            },
            IPAM: { Driver: 'default', Config: [{ Subnet: subnet }] },
            Options: {
              'com.docker.network.bridge.name': bridgeName(spec.id),
              'com.docker.network.bridge.enable_icc': 'false',
            },
          });
          return;
        } catch (err) {
          if (!/overlap/i.test((err as Error).message)) throw err;
        }
      }
      throw new Error(`no free subnet left in ${this.subnetPool.base} for another sandbox network`);
    };
    const made = this.networkQueue.then(make);
    this.networkQueue = made.catch(() => {});
    await made;
    await this.firewall.open(spec.id, bridgeName(spec.id), egress.rules, this.blockedOut);
  }

  /** Its bridge and firewall rules, if it had them (idempotent). */
  private async closeEgress(id: string): Promise<void> {
    await this.firewall.close(id);
    await this.docker.getNetwork(sandboxNetworkName(id)).remove().catch(ignore(404));
  }

  async isolations(): Promise<IsolationSupport> {
    const problem = await gvisorProblem(this.docker, {
      instance: this.options.instance,
      agentBinary: this.options.agentBinary,
      runtime: this.options.gvisorRuntime ?? 'runsc',
    });
    return problem
      ? { available: ['runc'], missing: { gvisor: problem } }
      : { available: ['runc', 'gvisor'], missing: {} };
  }

  checkImage(image: string): Promise<void> {
    return checkSandboxImage(this.docker, image);
  }

  async create(spec: SandboxSpec): Promise<void> {
    await this.checkImage(spec.image);
    try {
      if (spec.egress) await this.openEgress(spec, spec.egress);
      const container = await this.docker.createContainer(
        sandboxCreateOptions(
          this.options.instance,
          this.options.agentBinary,
          spec,
          this.options.gvisorRuntime,
        ),
      );
      try {
        await container.start();
      } catch (err) {
        await container.remove({ force: true }).catch(() => {});
        throw err;
      }
    } catch (err) {
      if (spec.egress) await this.closeEgress(spec.id).catch(() => {});
      throw err;
    }
  }

  /** Nothing stops sandboxes on an Engine as such (isolation classes are asked separately). */
  async checkPlatform(): Promise<string | undefined> {
    return undefined;
  }

  /** A socket in `agentDir` (mounted read-only into the sandbox) that the agent dials. */
  async openChannel(_id: string, agentDir: string): Promise<AgentChannel> {
    await mkdir(agentDir, { recursive: true, mode: 0o755 });
    return AgentChannel.listen(path.join(agentDir, AGENT_SOCKET));
  }

  async pause(id: string): Promise<void> {
    await this.container(id).pause().catch(ignore(304, 409));
  }

  async resume(id: string): Promise<void> {
    await this.container(id).unpause().catch(ignore(304, 409));
  }

  async remove(id: string): Promise<void> {
    await this.container(id).remove({ force: true, v: true }).catch(ignore(404, 409));
    // A removal already under way (409) ends soon: resolve only once it is gone.
    for (let i = 0; i < 200 && (await this.observe(id)).state !== 'missing'; i++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    // Rules first, then the bridge: a crash between leaves the bridge, which `list` still finds.
    await this.closeEgress(id);
  }

  async observe(id: string): Promise<ObservedSandbox> {
    try {
      const info = await this.container(id).inspect();
      const state = info.State.Paused ? 'paused' : info.State.Running ? 'running' : 'exited';
      return {
        id,
        state,
        oomKilled: info.State.OOMKilled,
        exitCode: state === 'exited' ? info.State.ExitCode : null,
        labels: info.Config.Labels ?? {},
      };
    } catch (err) {
      if (statusCode(err) === 404)
        return { id, state: 'missing', oomKilled: false, exitCode: null, labels: {} };
      throw err;
    }
  }

  /**
   * One reading of the Engine's stats (`one-shot`: no second sample waited for). The CPU counter is
   * cumulative; a rate is the change between two readings over the change of `sampledAt`.
   */
  async usage(id: string): Promise<SandboxUsage | null> {
    try {
      const stats = (await this.container(id).stats({ stream: false, 'one-shot': true } as {
        stream: false;
      })) as EngineStats;
      return usageOf(stats, new Date());
    } catch (err) {
      if (statusCode(err) === 404) return null;
      throw err;
    }
  }

  async list(): Promise<ObservedSandbox[]> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: {
        label: [
          `${LABELS.managedBy}=${MANAGED_BY}`,
          `${LABELS.instance}=${this.options.instance}`,
          SANDBOX_LABEL,
        ],
      },
    });
    // An environment's container may carry the label's key with no value (blanked, from its
    // image's labels: see container-spec.ts): only one with a sandbox's id is a sandbox.
    const sandboxes = containers.filter((c) => (c.Labels[SANDBOX_LABEL] ?? '') !== '');
    // A bridge whose container is gone (a crash while making or removing it) is listed as exited.
    const networks = await this.docker.listNetworks({
      filters: { label: [`${LABELS.instance}=${this.options.instance}`, SANDBOX_LABEL] },
    });
    // While any sandbox has a bridge: the firewall's jumps and catch-alls are still first.
    if (networks.length > 0) await this.firewall.ensure();
    const withContainer = new Set(sandboxes.map((c) => c.Labels[SANDBOX_LABEL]));
    const bridgesOnly = networks
      .filter(
        (n) => (n.Labels?.[SANDBOX_LABEL] ?? '') !== '' && !withContainer.has(n.Labels?.[SANDBOX_LABEL]),
      )
      .map(
        (n): ObservedSandbox => ({
          id: n.Labels?.[SANDBOX_LABEL] ?? '',
          state: 'exited',
          oomKilled: false,
          exitCode: null,
          labels: n.Labels ?? {},
        }),
      );
    return [
      ...bridgesOnly,
      ...sandboxes.map(
        (c): ObservedSandbox => ({
          id: c.Labels[SANDBOX_LABEL] ?? '',
          state: c.State === 'paused' ? 'paused' : c.State === 'running' ? 'running' : 'exited',
          oomKilled: false,
          exitCode: null,
          labels: c.Labels,
        }),
      ),
    ];
  }

  watch(onEnd: (id: string, cause: 'oom' | 'exit') => void): () => void {
    let stopped = false;
    let current: { destroy(): void } | undefined;
    const follow = async () => {
      while (!stopped) {
        try {
          const stream = (await this.docker.getEvents({
            filters: {
              type: ['container'],
              event: ['oom', 'die'],
              label: [
                `${LABELS.managedBy}=${MANAGED_BY}`,
                `${LABELS.instance}=${this.options.instance}`,
                SANDBOX_LABEL,
              ],
            },
          })) as unknown as NodeJS.ReadableStream & { destroy(): void };
          current = stream;
          if (stopped) stream.destroy();
          let pending = '';
          for await (const chunk of stream) {
            pending += chunk.toString();
            let newline = pending.indexOf('\n');
            while (newline !== -1) {
              const line = pending.slice(0, newline);
              pending = pending.slice(newline + 1);
              newline = pending.indexOf('\n');
              const event = JSON.parse(line) as {
                Action?: string;
                Actor?: { Attributes?: Record<string, string> };
              };
              const id = event.Actor?.Attributes?.[SANDBOX_LABEL];
              if (id) onEnd(id, event.Action === 'oom' ? 'oom' : 'exit');
            }
            // Events are small; a line this long is not one.
            if (pending.length > 1024 * 1024) pending = '';
          }
        } catch {
          // The Engine went away or restarted: follow again shortly.
        }
        if (!stopped) await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    };
    void follow();
    return () => {
      stopped = true;
      current?.destroy();
    };
  }

  private container(id: string): Docker.Container {
    if (!/^[a-z0-9]+$/.test(id)) throw new Error(`bad sandbox id "${id}"`);
    return this.docker.getContainer(sandboxContainerName(id));
  }
}

/** The part of the Engine's stats answer a sandbox's usage is read from. */
export interface EngineStats {
  read?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { usage?: number; max_usage?: number; stats?: Record<string, number> };
  pids_stats?: { current?: number };
}

/**
 * Pure: a sandbox's usage from the Engine's stats. Memory in use is counted as `docker stats`
 * counts it, without the inactive page cache (cgroup v1's `total_inactive_file`, v2's
 * `inactive_file`), which the kernel drops before it runs out; files in the sandbox's tmpfs stay
 * counted (they are not page cache it may drop). A reading of a container that is not running has
 * no time (year 1): `now` stands in.
 */
export function usageOf(stats: EngineStats, now: Date): SandboxUsage {
  const memory = stats.memory_stats ?? {};
  const used = memory.usage ?? 0;
  const inactive = memory.stats?.total_inactive_file ?? memory.stats?.inactive_file ?? 0;
  const read = stats.read ? Date.parse(stats.read) : Number.NaN;
  return {
    sampledAt: Number.isFinite(read) && read > 0 ? new Date(read) : now,
    cpuSeconds: (stats.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e9,
    memoryBytes: inactive < used ? used - inactive : used,
    memoryPeakBytes: memory.max_usage ?? used,
    pids: stats.pids_stats?.current ?? 0,
  };
}
