import { describe, expect, it } from 'vitest';
import { usageOf } from './docker-sandbox-runtime.js';

const now = new Date('2026-12-04T10:00:00Z');

describe('usageOf: a sandbox use from the Engine stats', () => {
  it('cgroup v1: memory without the inactive page cache, the kernel peak, CPU in seconds, pids', () => {
    expect(
      usageOf(
        {
          read: '2026-12-04T09:59:59.5Z',
          cpu_stats: { cpu_usage: { total_usage: 2_500_000_000 } },
          memory_stats: { usage: 300, max_usage: 900, stats: { total_inactive_file: 100 } },
          pids_stats: { current: 7 },
        },
        now,
      ),
    ).toEqual({
      sampledAt: new Date('2026-12-04T09:59:59.5Z'),
      cpuSeconds: 2.5,
      memoryBytes: 200,
      memoryPeakBytes: 900,
      pids: 7,
    });
  });

  it('cgroup v2: inactive_file is taken off, and with no peak kept the usage now stands in for it', () => {
    const usage = usageOf(
      { read: now.toISOString(), memory_stats: { usage: 500, stats: { inactive_file: 120 } } },
      now,
    );
    expect(usage).toMatchObject({ memoryBytes: 380, memoryPeakBytes: 500, cpuSeconds: 0, pids: 0 });
  });

  it('an empty answer or a stopped container (time of year 1, cache above usage) reads as zero, now', () => {
    expect(usageOf({}, now)).toEqual({
      sampledAt: now,
      cpuSeconds: 0,
      memoryBytes: 0,
      memoryPeakBytes: 0,
      pids: 0,
    });
    const stopped = usageOf(
      { read: '0001-01-01T00:00:00Z', memory_stats: { usage: 10, stats: { total_inactive_file: 50 } } },
      now,
    );
    expect(stopped.sampledAt).toEqual(now);
    expect(stopped.memoryBytes).toBe(10);
  });
});
