/**
 * Whether the Docker Engine can run sandboxes under gVisor: its `runsc` runtime registered with
 * what a sandbox needs, and a probe container that really starts under it. A registered runtime is
 * not enough: a runsc that cannot start here (a platform that hangs, a missing kernel feature)
 * would otherwise fail every sandbox of a `gvisor` template, long after the server said it had it.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { LABELS, MANAGED_BY } from '../runtime.js';
import { imageExists, jsonMessages } from './engine-api.js';

/** An image with nothing in it: the probe runs the agent binary, bind-mounted. Made here, not pulled. */
export const PROBE_IMAGE = 'mayfly/probe:empty';
const AGENT_IN_PROBE = '/mayfly-agent';
const PROBE_TIMEOUT_MS = 30_000;

interface RuntimeInfo {
  path?: string;
  runtimeArgs?: string[];
}

export interface GvisorProbe {
  instance: string;
  agentBinary: string;
  /** The Engine's runtime name for runsc (daemon.json). */
  runtime: string;
  /**
   * A probe container of this installation older than this belongs to no live probe (its process
   * died between create and start) and is removed; 60 s by default.
   */
  staleAfterMs?: number;
}

/** Null when sandboxes can run under gVisor; else why not, in words for an operator. */
export async function gvisorProblem(docker: Docker, o: GvisorProbe): Promise<string | null> {
  const info = (await docker.info()) as { Runtimes?: Record<string, RuntimeInfo> };
  const runsc = info.Runtimes?.[o.runtime];
  if (!runsc)
    return `the Docker Engine has no "${o.runtime}" runtime (docs/sandboxes.md#gvisor says how to add it)`;
  const args = runsc.runtimeArgs ?? [];
  // The agent dials the control plane's socket, a host Unix socket gVisor refuses by default.
  if (!args.some((a) => /^--host-uds=(open|all)$/.test(a)))
    return `the engine's "${o.runtime}" runtime lacks the runtime argument --host-uds=open (the sandbox agent connects to a socket on the host)`;
  // One deadline for all of it: a runsc that hangs may hang the Engine's start call itself.
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<string>((resolve) => {
    timer = setTimeout(
      () =>
        resolve(`a probe container under ${o.runtime} did not finish within ${PROBE_TIMEOUT_MS / 1000} s`),
      PROBE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([probe(docker, o), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Marks a probe container (and which probe it is): found again after a crash by this label. */
export const PROBE_LABEL = 'mayfly.probe';
/** Output of a failed probe kept to explain it. */
const OUTPUT_KEPT = 4096;

async function probe(
  docker: Docker,
  { instance, agentBinary, runtime, staleAfterMs = 2 * PROBE_TIMEOUT_MS }: GvisorProbe,
): Promise<string | null> {
  await removeStaleProbes(docker, instance, staleAfterMs);
  if (!(await imageExists(docker, PROBE_IMAGE))) {
    // An empty tar archive (two zero blocks) as the image's only layer.
    const stream = (await docker.importImage(Readable.from([Buffer.alloc(1024)]) as never, {
      repo: PROBE_IMAGE.split(':')[0],
      tag: PROBE_IMAGE.split(':')[1],
    })) as unknown as Readable;
    for await (const message of jsonMessages(stream))
      if (message.error) throw new Error(`making ${PROBE_IMAGE}: ${message.error}`);
  }
  // Never one of another replica's or installation's probes.
  const name = `mayfly-probe-${instance}-${randomBytes(4).toString('hex')}`;
  const container = await docker.createContainer({
    name,
    Image: PROBE_IMAGE,
    Entrypoint: [AGENT_IN_PROBE],
    Cmd: ['probe'],
    Labels: { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: instance, [PROBE_LABEL]: 'gvisor' },
    // Whatever an image of that name might declare: nothing of it runs but the agent binary.
    User: '65534:65534',
    Healthcheck: { Test: ['NONE'] },
    HostConfig: {
      Runtime: runtime,
      NetworkMode: 'none',
      Mounts: [{ Type: 'bind', Source: agentBinary, Target: AGENT_IN_PROBE, ReadOnly: true }],
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      Memory: 256 * 1024 * 1024,
      PidsLimit: 256,
      // The Engine removes it once it has run, even when this process is killed meanwhile.
      AutoRemove: true,
    },
  });
  let output = '';
  let timer: NodeJS.Timeout | undefined;
  try {
    // Its output is read as it runs: nothing is left to read once the Engine has removed it.
    const attached = (await container.attach({
      stream: true,
      stdout: true,
      stderr: true,
    })) as unknown as Readable;
    attached.on('data', (chunk: Buffer) => {
      output = (output + chunk.toString('latin1')).slice(-OUTPUT_KEPT);
    });
    attached.on('error', () => {});
    const removed = container.wait({ condition: 'removed' }) as Promise<{ StatusCode: number }>;
    removed.catch(() => {});
    await container.start();
    const exit = await Promise.race([
      removed,
      new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), PROBE_TIMEOUT_MS);
      }),
    ]);
    attached.destroy();
    if (exit === null)
      return `a probe container under ${runtime} did not finish within ${PROBE_TIMEOUT_MS / 1000} s`;
    // The agent answers an unknown verb with its usage and status 2: it ran.
    if (exit.StatusCode !== 2)
      return `a probe container under ${runtime} exited with status ${exit.StatusCode}: ${printable(output)}`;
    return null;
  } catch (err) {
    return `a probe container under ${runtime} did not start: ${(err as Error).message}`;
  } finally {
    clearTimeout(timer);
    // Gone already when it ran; not when its start failed or it hangs.
    await container.remove({ force: true, v: true }).catch(() => {});
  }
}

/**
 * Probe containers of this installation that no live probe can own: made by a process killed
 * between create and start (one killed later is removed by the Engine once it has run).
 */
async function removeStaleProbes(docker: Docker, instance: string, staleAfterMs: number): Promise<void> {
  const found = await docker.listContainers({
    all: true,
    // By value: a workload's container may carry the key blanked (from its image: container-spec.ts).
    filters: { label: [`${PROBE_LABEL}=gvisor`, `${LABELS.instance}=${instance}`] },
  });
  // The Engine counts in whole seconds.
  const before = (Date.now() - staleAfterMs) / 1000;
  for (const c of found)
    if (c.Created <= before)
      await docker
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => {});
}

/** Multiplexed frames' headers and control bytes dropped: the text an operator can read. */
function printable(output: string): string {
  return (
    output
      .replace(/[^\x20-\x7e\n]/g, '')
      .trim()
      .slice(-500) || '(no output)'
  );
}
