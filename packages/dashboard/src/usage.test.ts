import { describe, expect, it } from 'vitest';
import { baseName, shownName } from './api.js';
import { cpuPercent, formatBytes, formatPercent } from './usage.js';

const reading = (at: string, cpuSeconds: number) => ({
  sampledAt: at,
  cpuSeconds,
  memoryBytes: 0,
  memoryPeakBytes: 0,
  pids: 1,
});

describe('what the sandbox pages show', () => {
  it('CPU now: the change of CPU time over the time between two readings, in percent of one CPU', () => {
    expect(cpuPercent(reading('2026-01-01T00:00:00Z', 10), reading('2026-01-01T00:00:02Z', 11))).toBe(50);
    expect(cpuPercent(reading('2026-01-01T00:00:00Z', 10), reading('2026-01-01T00:00:01Z', 12))).toBe(200);
    // The same reading twice, readings out of order, a counter that went back (a restart): unknown.
    expect(cpuPercent(reading('2026-01-01T00:00:00Z', 10), reading('2026-01-01T00:00:00Z', 10))).toBeNull();
    expect(cpuPercent(reading('2026-01-01T00:00:02Z', 10), reading('2026-01-01T00:00:00Z', 11))).toBeNull();
    expect(cpuPercent(reading('2026-01-01T00:00:00Z', 10), reading('2026-01-01T00:00:02Z', 3))).toBeNull();
    expect(cpuPercent(reading('not a time', 1), reading('2026-01-01T00:00:02Z', 3))).toBeNull();
  });

  it('figures: percent with one decimal under 10, bytes in binary units', () => {
    expect(formatPercent(null)).toBe('…');
    expect(formatPercent(3.14)).toBe('3.1%');
    expect(formatPercent(57.6)).toBe('58%');
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(512 * 1024 * 1024)).toBe('512 MiB');
    expect(formatBytes(2 ** 60)).toBe('1048576 TiB');
  });

  it('a file is saved under its base name: never a folder, never . or .., no control characters', () => {
    expect(baseName('/home/user/report.csv')).toBe('report.csv');
    expect(baseName('C:\\\\Users\\\\x\\\\evil.exe')).toBe('evil.exe');
    expect(baseName('/home/user/..')).toBe('download');
    expect(baseName('/home/user/.')).toBe('download');
    expect(baseName('/home/user/')).toBe('download');
    expect(baseName('/tmp/a\nb\u0007c\u007f.txt')).toBe('abc.txt');
    expect(baseName('/tmp/\u202etxt.exe')).toBe('txt.exe');
    expect(shownName('\u202etxt.exe')).toBe('⟨U+202E⟩txt.exe');
    expect(shownName('a\nb\u200bc<i>')).toBe('a⟨U+000A⟩b⟨U+200B⟩c<i>');
    expect(shownName('plain ü name.txt')).toBe('plain ü name.txt');
  });
});
