import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, formatElapsed, formatIssue, table, until } from './format.js';

describe('format', () => {
  it('sizes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024)).toBe('1 KiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(34 * 1024 + 100)).toBe('34 KiB');
    expect(formatBytes(256 * 1024 * 1024)).toBe('256 MiB');
    expect(formatBytes(5 * 1024 ** 4)).toBe('5120 GiB');
  });

  it('durations', () => {
    expect(formatDuration(45_000)).toBe('45s');
    expect(formatDuration(12 * 60_000)).toBe('12m');
    expect(formatDuration(3 * 3_600_000 + 5 * 60_000)).toBe('3h5m');
    expect(formatDuration(2 * 3_600_000)).toBe('2h');
    expect(formatDuration(52 * 3_600_000)).toBe('2d4h');
    expect(formatElapsed(1234)).toBe('1.2s');
    expect(formatElapsed(125_000)).toBe('2m05s');
    expect(until(null)).toBe('never');
    expect(until(new Date(Date.now() - 1).toISOString())).toBe('expired');
  });

  it('issues', () => {
    const issue = { file: 'mayfly.yaml', line: 3, column: 5, path: 'services.web', message: 'bad' };
    expect(formatIssue(issue)).toBe('mayfly.yaml:3:5  services.web  bad');
    expect(formatIssue({ ...issue, column: null })).toBe('mayfly.yaml:3  services.web  bad');
    expect(formatIssue({ ...issue, line: null, column: null, path: '' })).toBe('mayfly.yaml  bad');
  });

  it('tables', () => {
    expect(
      table([
        ['NAME', 'STATE', 'URLS'],
        ['a-long-name', 'ready', 'http://x'],
      ]),
    ).toEqual(['NAME         STATE  URLS', 'a-long-name  ready  http://x']);
  });
});
