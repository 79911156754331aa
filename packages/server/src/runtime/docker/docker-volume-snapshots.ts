/**
 * Volume snapshots on the Docker Engine. A snapshot is a volume of its own (`mayfly-snap-<id>`),
 * labelled as a snapshot and never as an environment's, so nothing that cleans environments up
 * touches it. Copies are made by the agent (`mayfly-agent copy`) in a helper container that holds
 * nothing but the two volumes (no network, no capabilities but those a copy keeping owners needs):
 * each file is cloned where the Engine's file system can (XFS, btrfs: no data copied), and copied
 * by the kernel otherwise.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import type { EnvPlan } from '../../plan/plan.js';
import {
  LABELS,
  MANAGED_BY,
  SnapshotGoneError,
  type SnapshotObject,
  type SnapshotRef,
  type VolumeSnapshots,
} from '../runtime.js';
import { ensureAgentImage, maxBytesFlag } from './agent-image.js';
import { logTail } from './container-io.js';
import { ignore, imageId, statusCode } from './engine-api.js';
import { envLabels, labelFilter, volumeName } from './names.js';

/** On a snapshot's volume (its id) and on the helper containers that fill one. */
export const SNAPSHOT_LABEL = 'mayfly.snapshot';
/** On the empty volume that says an environment's volume was fully restored (see {@link restore}). */
const RESTORED_LABEL = 'mayfly.restored-from';
/** On helper containers: what they do (`snapshot`, `restore`). */
const HELPER_LABEL = 'mayfly.helper';
/** On a snapshot's helper: the ids of the containers stopped for the copy, to start again. */
const STOPPED_WRITERS_LABEL = 'mayfly.stopped-writers';
/** How long writers started again after a snapshot may take to be running (and healthy). */
const WRITER_RESTART_MS = 5 * 60_000;

export const snapshotVolumeName = (snapshotId: string) => `mayfly-snap-${snapshotId}`;
const restoredMarkerName = (envId: string, volume: string) => `mayfly-restored-${envId}-${volume}`;

export interface DockerVolumeSnapshotsOptions {
  docker: Docker;
  instance: string;
  /** The static agent binary, imported as the helper containers' image. */
  agentBinary: string;
}

export class DockerVolumeSnapshots implements VolumeSnapshots {
  private readonly docker: Docker;
  private readonly instance: string;
  private readonly agentBinary: string;
  private helperImage: Promise<string> | null = null;

  constructor(options: DockerVolumeSnapshotsOptions) {
    this.docker = options.docker;
    this.instance = options.instance;
    this.agentBinary = options.agentBinary;
  }

  async take(
    plan: EnvPlan,
    volume: string,
    snapshot: SnapshotRef,
    signal: AbortSignal,
    maxBytes?: number,
  ): Promise<{ sizeBytes: number; reflinked: boolean }> {
    signal.throwIfAborted();
    const target = snapshotVolumeName(snapshot.id);
    await this.docker.createVolume({ Name: target, Labels: this.snapshotLabels(snapshot) });
    // Whatever writes the volume is stopped for the copy, as its stop signal and grace period say:
    // a database shuts down cleanly and writes out what it held in memory (PostgreSQL's
    // asynchronous commits, Redis' data set), so the copy holds every write the seed made — which
    // a freeze would not — and needs no recovery when a clone starts.
    const found = await this.writersOf(plan, volume);
    const writers = found.map((c) => c.Id);
    // Made first, naming the writers: whatever happens to this process, the next apply of the
    // environment finds it and starts them again (see resumeWriters).
    const helper = await this.helper(
      volumeName(plan.envId, volume),
      target,
      {
        ...envLabels(this.instance, plan),
        [SNAPSHOT_LABEL]: snapshot.id,
        [HELPER_LABEL]: 'snapshot',
        [STOPPED_WRITERS_LABEL]: writers.join(','),
      },
      maxBytes,
    );
    let copied: { bytes: number; reflinked: number } | undefined;
    let failure: unknown;
    try {
      await Promise.all(writers.map((id) => this.docker.getContainer(id).stop().catch(ignore(304, 404))));
      copied = await this.run(helper, signal);
    } catch (err) {
      failure = err;
    }
    try {
      // The writers first: the helper is their record until they run again.
      await this.startWriters(
        writers,
        found.filter((c) => c.State === 'running').map((c) => c.Id),
        signal,
      );
    } finally {
      await helper.remove({ force: true }).catch(ignore(404, 409));
      if (!copied) await this.removeVolume(target);
    }
    if (!copied) throw failure;
    return { sizeBytes: copied.bytes, reflinked: copied.reflinked > 0 };
  }

  /**
   * Starts again the writers a snapshot of the environment stopped and did not get to start (the
   * control plane died meanwhile), and removes what was left of that snapshot's copy.
   */
  async resumeWriters(envId: string): Promise<void> {
    const left = await this.docker.listContainers({
      all: true,
      filters: { label: [...labelFilter(this.instance, envId).label, `${HELPER_LABEL}=snapshot`] },
    });
    if (left.length === 0) return;
    // Only the environment's own workloads are ever started, whatever a helper's label says.
    const own = new Set(
      (await this.docker.listContainers({ all: true, filters: labelFilter(this.instance, envId) }))
        .filter((c) => !c.Labels[HELPER_LABEL])
        .map((c) => c.Id),
    );
    for (const helper of left) {
      const writers = (helper.Labels[STOPPED_WRITERS_LABEL] ?? '').split(',').filter((id) => own.has(id));
      await this.docker.getContainer(helper.Id).remove({ force: true }).catch(ignore(404, 409));
      await Promise.all(writers.map((id) => this.docker.getContainer(id).start().catch(ignore(304, 404))));
    }
  }

  /**
   * Starts the stopped writers and waits until those that were running run again (and are
   * healthy, if they have a check); one that was restarting (crashing) is left to its policy.
   */
  private async startWriters(writers: string[], wasRunning: string[], signal: AbortSignal): Promise<void> {
    await Promise.all(writers.map((id) => this.docker.getContainer(id).start().catch(ignore(304, 404))));
    const deadline = Date.now() + WRITER_RESTART_MS;
    for (const id of wasRunning) {
      for (;;) {
        const { State, Name } = await this.docker.getContainer(id).inspect();
        const health = State.Health?.Status;
        if (State.Running && (health === undefined || health === 'healthy' || health === 'none')) break;
        if (!State.Running && !State.Restarting)
          throw new Error(
            `${Name.replace(/^\//, '')} stopped for the snapshot and did not start again (exit ${State.ExitCode})`,
          );
        if (health === 'unhealthy' || Date.now() > deadline)
          throw new Error(`${Name.replace(/^\//, '')} is not healthy again after the snapshot`);
        signal.throwIfAborted();
        await sleep(100);
      }
    }
  }

  async restore(
    plan: EnvPlan,
    volume: string,
    snapshotId: string,
    signal: AbortSignal,
  ): Promise<'restored' | 'present'> {
    const marker = restoredMarkerName(plan.envId, volume);
    if (await this.volumeExists(marker)) return 'present';
    const target = volumeName(plan.envId, volume);
    // No marker: never restored, or cut short (a crash): whatever is there is half a copy.
    await this.removeVolume(target);
    await this.docker.createVolume({ Name: target, Labels: envLabels(this.instance, plan) });
    const source = snapshotVolumeName(snapshotId);
    const helper = await this.helper(source, target, {
      ...envLabels(this.instance, plan),
      [HELPER_LABEL]: 'restore',
    });
    let gone = false;
    try {
      // The helper holds the snapshot's volume now: removing it is refused until the copy is done.
      // Removed before, the Engine made the helper a new one of that name, empty and unlabelled.
      gone = !(await this.isSnapshotVolume(source, snapshotId));
      if (gone) throw new SnapshotGoneError(snapshotId);
      await this.run(helper, signal);
    } finally {
      await helper.remove({ force: true }).catch(ignore(404, 409));
      // Gone: nothing was copied, nothing is left — the volume is made anew if seeded instead. The
      // empty stand-in the Engine made may be another restore's helper's too (it removes it then).
      if (gone)
        await Promise.all([
          this.docker.getVolume(source).remove().catch(ignore(404, 409)),
          this.removeVolume(target),
        ]);
    }
    // Last: only a complete copy is ever taken for a restored volume.
    await this.docker.createVolume({
      Name: marker,
      Labels: { ...envLabels(this.instance, plan), [RESTORED_LABEL]: snapshotId },
    });
    return 'restored';
  }

  async remove(snapshotId: string): Promise<boolean> {
    // Helpers filling it (a take cut short by a crash) go first, so the volume is free.
    const helpers = await this.docker.listContainers({
      all: true,
      filters: { label: [...labelFilter(this.instance).label, `${SNAPSHOT_LABEL}=${snapshotId}`] },
    });
    await Promise.all(
      helpers.map((c) => this.docker.getContainer(c.Id).remove({ force: true }).catch(ignore(404, 409))),
    );
    try {
      await this.docker.getVolume(snapshotVolumeName(snapshotId)).remove();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return true;
      if (statusCode(err) === 409) return false; // a clone is being made of it right now
      throw err;
    }
  }

  async list(): Promise<SnapshotObject[]> {
    const { Volumes } = await this.docker.listVolumes({
      filters: { label: [...labelFilter(this.instance).label, SNAPSHOT_LABEL] },
    });
    return (Volumes ?? []).map((v) => ({
      id: v.Labels?.[SNAPSHOT_LABEL] ?? '',
      project: v.Labels?.[LABELS.project] ?? null,
    }));
  }

  exists(snapshotId: string): Promise<boolean> {
    return this.isSnapshotVolume(snapshotVolumeName(snapshotId), snapshotId);
  }

  imageId(ref: string): Promise<string | null> {
    return imageId(this.docker, ref);
  }

  /**
   * The environment's containers that mount `volume` and may write it during a copy: running,
   * paused, or restarting (between two runs of a crash loop — it would run again mid-copy).
   */
  private async writersOf(plan: EnvPlan, volume: string): Promise<Docker.ContainerInfo[]> {
    const name = volumeName(plan.envId, volume);
    const containers = await this.docker.listContainers({
      all: true,
      filters: { ...labelFilter(this.instance, plan.envId), volume: [name] },
    });
    return containers.filter(
      (c) => ['running', 'paused', 'restarting'].includes(c.State) && !c.Labels[HELPER_LABEL],
    );
  }

  /** A helper container (not started) that copies volume `from` into volume `to`, within `maxBytes`. */
  private async helper(
    from: string,
    to: string,
    labels: Record<string, string>,
    maxBytes?: number,
  ): Promise<Docker.Container> {
    return this.docker.createContainer({
      Image: await this.image(),
      Cmd: ['/mayfly-agent', 'copy', ...maxBytesFlag(maxBytes), '/from', '/to'],
      Labels: labels,
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        Mounts: [
          { Type: 'volume', Source: from, Target: '/from', ReadOnly: true, VolumeOptions: { NoCopy: true } },
          { Type: 'volume', Source: to, Target: '/to', VolumeOptions: { NoCopy: true } },
        ],
        // Root, to keep every file's owner; nothing more than keeping owners, modes and nodes needs.
        CapDrop: ['ALL'],
        // (Not DAC_READ_SEARCH: DAC_OVERRIDE reads everything already, and it grants open_by_handle_at.)
        CapAdd: ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'MKNOD'],
        SecurityOpt: ['no-new-privileges'],
        ReadonlyRootfs: true,
        PidsLimit: 64,
        Memory: 256 * 1024 * 1024,
      },
    } as Docker.ContainerCreateOptions);
  }

  /** Runs a helper to its end; an abort kills it. Resolves with what the agent copied. */
  private async run(
    container: Docker.Container,
    signal: AbortSignal,
  ): Promise<{ bytes: number; reflinked: number }> {
    const kill = () => void container.kill().catch(() => {});
    signal.addEventListener('abort', kill, { once: true });
    try {
      signal.throwIfAborted();
      await container.start();
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      signal.throwIfAborted();
      const output = await logTail(this.docker, container.id, 5);
      if (StatusCode !== 0) throw new Error(`the copy failed (exit ${StatusCode})${output}`);
      const last = output.trim().split('\n').at(-1) ?? '';
      const stats = JSON.parse(last) as { bytes?: unknown; reflinked?: unknown };
      return { bytes: Number(stats.bytes) || 0, reflinked: Number(stats.reflinked) || 0 };
    } finally {
      signal.removeEventListener('abort', kill);
    }
  }

  private image(): Promise<string> {
    this.helperImage ??= ensureAgentImage(this.docker, this.agentBinary).catch((err) => {
      this.helperImage = null;
      throw err;
    });
    return this.helperImage;
  }

  /** Whether volume `name` is snapshot `snapshotId`'s (labelled so), not one the Engine made up. */
  private async isSnapshotVolume(name: string, snapshotId: string): Promise<boolean> {
    try {
      const { Labels } = await this.docker.getVolume(name).inspect();
      return Labels?.[SNAPSHOT_LABEL] === snapshotId && Labels?.[LABELS.instance] === this.instance;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  }

  private async volumeExists(name: string): Promise<boolean> {
    try {
      await this.docker.getVolume(name).inspect();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  }

  private async removeVolume(name: string): Promise<void> {
    await this.docker.getVolume(name).remove().catch(ignore(404));
  }

  private labels(): Record<string, string> {
    return { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: this.instance };
  }

  private snapshotLabels(snapshot: SnapshotRef): Record<string, string> {
    return {
      ...this.labels(),
      [LABELS.project]: snapshot.project,
      [SNAPSHOT_LABEL]: snapshot.id,
      'mayfly.snapshot-name': snapshot.name,
    };
  }
}
