/** What a sandbox uses, in the words and figures the pages show. */
import type { SandboxUsage } from '@mayfly/contract';

/** Percent of one CPU used between two readings (200: two CPUs busy); null when they cannot tell. */
export function cpuPercent(before: SandboxUsage, after: SandboxUsage): number | null {
  const seconds = (Date.parse(after.sampledAt) - Date.parse(before.sampledAt)) / 1000;
  const used = after.cpuSeconds - before.cpuSeconds;
  return seconds > 0 && used >= 0 ? (used / seconds) * 100 : null;
}

export const formatPercent = (p: number | null) =>
  p === null ? '…' : `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let n = bytes;
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return i === 0 ? `${n} B` : `${n.toFixed(n >= 10 ? 0 : 1)} ${units[i]}`;
}
