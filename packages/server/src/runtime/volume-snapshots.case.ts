/**
 * What every driver's volume snapshots must do (the `VolumeSnapshots` seam), run against the real
 * platform by each driver's test file: a snapshot taken while a service writes the volume holds
 * what it wrote (the service stopped for the copy and running again after), keeps owners, modes,
 * symlinks (as links: never what they name) and hard links, and clones into another environment
 * that shares nothing with the first; a clone cut short is made again; a removed snapshot is gone.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { EnvPlan, VolumePlan } from '../plan/plan.js';
import { envPlan, workload } from '../test-support/plans.js';
import { applyPlan } from './apply-plan.js';
import { type Runtime, SnapshotGoneError, type SnapshotRef } from './runtime.js';

export interface VolumeSnapshotsCaseOptions {
  /** The driver under test, with snapshots (its agent binary given). */
  make: () => Runtime;
  /** Checks what the driver made of a snapshot just taken, as the platform shows it. */
  taken?: (snapshotId: string) => Promise<void>;
  /** Checks that nothing of a removed (or never taken) snapshot is left on the platform. */
  gone?: (snapshotId: string) => Promise<void>;
}

const data = [{ type: 'volume' as const, source: 'data', target: '/data', readOnly: false }];

/**
 * A writer that takes a second to stop, as a database writing out what it holds does: a take
 * cannot be done before then, whatever the machine's speed.
 */
const SLOW_TO_STOP = ['busybox', 'sh', '-c', "trap 'sleep 1; exit 0' TERM; while true; do sleep 1; done"];

/** A service that writes the volume (a controller where the driver has them) and one more that mounts it. */
function writers(
  extra: Partial<EnvPlan> = {},
  volume: VolumePlan = { name: 'data' },
  dbCommand = ['testkit', 'sleep'],
): EnvPlan {
  return envPlan(
    [
      workload({
        name: 'db',
        command: dbCommand,
        restart: 'always',
        mounts: data,
        stopGracePeriodMs: 2000,
      }),
      workload({ name: 'side', command: ['testkit', 'sleep'], mounts: data, stopGracePeriodMs: 2000 }),
    ],
    { volumes: [volume], ...extra },
  );
}

export function describeVolumeSnapshots(name: string, options: VolumeSnapshotsCaseOptions): void {
  describe(`VolumeSnapshots conformance: ${name}`, () => {
    const runtime = options.make();
    const snapshots = runtime.snapshots!;
    const made: EnvPlan[] = [];
    const taken: string[] = [];
    const track = (plan: EnvPlan) => {
      made.push(plan);
      return plan;
    };
    afterAll(async () => {
      await Promise.all(made.map((plan) => runtime.destroy(plan.envId)));
      for (const id of taken) await snapshots.remove(id);
    });
    const sh = async (plan: EnvPlan, workloadName: string, script: string) => {
      const result = await runtime.exec(plan.envId, workloadName, ['busybox', 'sh', '-c', script]);
      expect(result.stderr).toBe('');
      expect(result.exitCode).toBe(0);
      return result.stdout;
    };
    const signal = () => AbortSignal.timeout(300_000);

    it('takes what a running service wrote, keeps owners, modes and links, and clones it into another environment', async () => {
      const source = track(writers());
      await applyPlan(runtime, source);
      await sh(
        source,
        'db',
        [
          'echo one > /data/a',
          'mkdir -p /data/deep/er',
          'echo two > /data/deep/er/b',
          'ln /data/a /data/hard',
          'ln -s /etc/hostname /data/link',
          'ln -s ../../a /data/deep/er/up',
          'chown 1234:5678 /data/a',
          'chmod 640 /data/a',
          'chmod 711 /data/deep',
          // Readable by no one but a process that overrides permissions, as the copy's does.
          'mkdir /data/locked',
          'echo locked > /data/locked/f',
          'chmod 000 /data/locked/f /data/locked',
          'busybox dd if=/dev/urandom of=/data/big bs=1048576 count=8 2>/dev/null',
        ].join(' && '),
      );
      const sum = await sh(source, 'db', 'md5sum /data/big');

      const snapshot: SnapshotRef = {
        id: `c${Date.now().toString(36)}`,
        project: source.project,
        name: 'conformance',
      };
      taken.push(snapshot.id);
      const { sizeBytes } = await snapshots.take(source, 'data', snapshot, signal());
      expect(sizeBytes).toBeGreaterThanOrEqual(8 * 1024 * 1024);
      expect(await snapshots.exists(snapshot.id)).toBe(true);
      expect((await snapshots.list()).map((o) => o.id)).toContain(snapshot.id);
      await options.taken?.(snapshot.id);
      // The writers run again, their data as it was.
      expect(await sh(source, 'db', 'cat /data/a')).toBe('one\n');
      expect(await sh(source, 'side', 'cat /data/deep/er/b')).toBe('two\n');

      const clone = track(
        writers(
          {},
          {
            name: 'data',
            origin: { restored: { snapshotId: snapshot.id, snapshotName: 'conformance' }, key: null },
          },
        ),
      );
      await applyPlan(runtime, clone);
      expect(await sh(clone, 'db', 'cat /data/a /data/deep/er/b /data/deep/er/up')).toBe('one\ntwo\none\n');
      expect(await sh(clone, 'db', 'md5sum /data/big')).toBe(sum);
      expect(
        await sh(clone, 'db', 'stat -c "%u:%g %a %h" /data/a; stat -c %a /data/deep; readlink /data/link'),
      ).toBe('1234:5678 640 2\n711\n/etc/hostname\n');
      expect(await sh(clone, 'db', 'stat -c %a /data/locked /data/locked/f; cat /data/locked/f')).toBe(
        '0\n0\nlocked\n',
      );
      // The link is a link: what it names in the clone is the clone's own file, not the source's host.
      expect(await sh(clone, 'db', 'test -L /data/link && echo link')).toBe('link\n');

      // Writes are the environment's own, both ways.
      await sh(clone, 'db', 'echo clone > /data/a');
      await sh(source, 'db', 'echo source > /data/deep/er/b');
      expect(await sh(source, 'db', 'cat /data/a')).toBe('one\n');
      expect(await sh(clone, 'db', 'cat /data/deep/er/b')).toBe('two\n');

      // Once cloned, the clone is kept (an apply again changes nothing in it).
      expect(await snapshots.restore(clone, 'data', snapshot.id, signal())).toBe('present');
      await applyPlan(runtime, clone);
      expect(await sh(clone, 'db', 'cat /data/a')).toBe('clone\n');

      // Removed: gone for good, and a clone of it is refused with why.
      expect(await snapshots.remove(snapshot.id)).toBe(true);
      expect(await snapshots.exists(snapshot.id)).toBe(false);
      expect((await snapshots.list()).map((o) => o.id)).not.toContain(snapshot.id);
      await options.gone?.(snapshot.id);
      const late = track(writers());
      await runtime.prepareEnvironment(late, signal());
      await expect(snapshots.restore(late, 'data', snapshot.id, signal())).rejects.toBeInstanceOf(
        SnapshotGoneError,
      );
    });

    it('a failed take leaves no snapshot and the writers running', async () => {
      const source = track(writers({}, { name: 'data' }, SLOW_TO_STOP));
      await applyPlan(runtime, source);
      await sh(source, 'db', 'echo kept > /data/a');
      const snapshot: SnapshotRef = {
        id: `f${Date.now().toString(36)}`,
        project: source.project,
        name: 'aborted',
      };
      taken.push(snapshot.id);
      const controller = new AbortController();
      const taking = snapshots.take(source, 'data', snapshot, controller.signal);
      // While its writer stops (a second at least): never after the take is done.
      setTimeout(() => controller.abort(new Error('given up')), 300);
      await expect(taking).rejects.toThrow();
      expect(await snapshots.exists(snapshot.id)).toBe(false);
      await options.gone?.(snapshot.id);

      // An apply (what follows an aborted one) has every writer running with its data.
      await applyPlan(runtime, source);
      expect(await sh(source, 'db', 'cat /data/a')).toBe('kept\n');
      expect(await sh(source, 'side', 'cat /data/a')).toBe('kept\n');

      // A volume over the most a snapshot may hold is refused with why, nothing is kept, and the
      // writers run again.
      await sh(source, 'db', 'busybox dd if=/dev/zero of=/data/fill bs=4096 count=1 2>/dev/null');
      await expect(snapshots.take(source, 'data', snapshot, signal(), 1024)).rejects.toThrow(
        // (A storage that snapshots itself counts what the volume may hold, not what it holds.)
        /the volume(?: holds 4\.0 KiB|'s snapshot is .+), over the 1\.0 KiB a snapshot may hold/,
      );
      expect(await snapshots.exists(snapshot.id)).toBe(false);
      expect(await sh(source, 'db', 'cat /data/a')).toBe('kept\n');
    });
  });
}
