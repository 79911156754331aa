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
import { ensureAgentImage } from './agent-image.js';
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
  ): Promise<{ sizeBytes: number; reflinked: boolean }> {
    signal.throwIfAborted();
    const target = snapshotVolumeName(snapshot.id);
    await this.docker.createVolume({ Name: target, Labels: this.snapshotLabels(snapshot) });
    // Whatever writes the volume is stopped for the copy, as its stop signal and grace period say:
    // a database shuts down cleanly and writes out what it held in memory (PostgreSQL's
    // asynchronous commits, Redis' data set), so the copy holds every write the seed made — which
    // a freeze would not — and needs no recovery when a clone starts.
    const writers = await this.writersOf(plan, volume);
    // Made first, naming the writers: whatever happens to this process, the next apply of the
    // environment finds it and starts them again (see resumeWriters).
    const helper = await this.helper(volumeName(plan.envId, volume), target, {
      ...envLabels(this.instance, plan),
      [SNAPSHOT_LABEL]: snapshot.id,
      [HELPER_LABEL]: 'snapshot',
      [STOPPED_WRITERS_LABEL]: writers.join(','),
    });
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
      await this.startWriters(writers, signal);
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
    for (const helper of left) {
      const writers = (helper.Labels[STOPPED_WRITERS_LABEL] ?? '').split(',').filter(Boolean);
      await this.docker.getContainer(helper.Id).remove({ force: true }).catch(ignore(404, 409));
      await Promise.all(writers.map((id) => this.docker.getContainer(id).start().catch(ignore(304, 404))));
    }
  }

  /** Starts the stopped writers and waits until they run again (and are healthy, if they have a check). */
  private async startWriters(writers: string[], signal: AbortSignal): Promise<void> {
    await Promise.all(writers.map((id) => this.docker.getContainer(id).start().catch(ignore(304, 404))));
    const deadline = Date.now() + WRITER_RESTART_MS;
    for (const id of writers) {
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
    if (!(await this.volumeExists(snapshotVolumeName(snapshotId)))) throw new SnapshotGoneError(snapshotId);
    await this.docker.createVolume({ Name: target, Labels: envLabels(this.instance, plan) });
    await this.copy(snapshotVolumeName(snapshotId), target, signal, {
      ...envLabels(this.instance, plan),
      [HELPER_LABEL]: 'restore',
    });
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
    return this.volumeExists(snapshotVolumeName(snapshotId));
  }

  imageId(ref: string): Promise<string | null> {
    return imageId(this.docker, ref);
  }

  /** The environment's running containers that mount `volume`. */
  private async writersOf(plan: EnvPlan, volume: string): Promise<string[]> {
    const name = volumeName(plan.envId, volume);
    const containers = await this.docker.listContainers({
      filters: { ...labelFilter(this.instance, plan.envId), volume: [name] },
    });
    return containers.filter((c) => c.State === 'running').map((c) => c.Id);
  }

  /** Copies the contents of volume `from` into volume `to` in a helper container, removed after. */
  private async copy(
    from: string,
    to: string,
    signal: AbortSignal,
    labels: Record<string, string>,
  ): Promise<{ bytes: number; reflinked: number }> {
    const helper = await this.helper(from, to, labels);
    try {
      return await this.run(helper, signal);
    } finally {
      await helper.remove({ force: true }).catch(ignore(404, 409));
    }
  }

  /** A helper container (not started) that copies volume `from` into volume `to`. */
  private async helper(from: string, to: string, labels: Record<string, string>): Promise<Docker.Container> {
    return this.docker.createContainer({
      Image: await this.image(),
      Cmd: ['/mayfly-agent', 'copy', '/from', '/to'],
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
        CapAdd: ['CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'MKNOD'],
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
