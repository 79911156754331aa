import type { EnvEvent, TemplateIssue } from '@mayfly/contract';

import { formatDuration } from '@mayfly/contract/duration';

export { formatDuration };

/** Time since the start of a command, precise enough for progress lines: `0.4s`, `12.3s`, `2m05s`. */
export function formatElapsed(ms: number): string {
  if (ms < 60_000) return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
  const seconds = Math.floor(ms / 1000);
  return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}

/** `5m ago` for a past instant. */
export function ago(iso: string, now = Date.now()): string {
  return `${formatDuration(now - Date.parse(iso))} ago`;
}

/** `in 1h55m` for a future instant, `expired` for a past one, `never` for null. */
export function until(iso: string | null, now = Date.now()): string {
  if (iso === null) return 'never';
  const left = Date.parse(iso) - now;
  return left <= 0 ? 'expired' : `in ${formatDuration(left)}`;
}

/** Aligns columns with two spaces between them; the last column is not padded. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, index) => {
      widths[index] = Math.max(widths[index] ?? 0, cell.length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** `file:line:col  path  message`, leaving out what the server could not locate. */
export function formatIssue(issue: TemplateIssue): string {
  let where = issue.file;
  if (issue.line !== null) where += `:${issue.line}`;
  if (issue.line !== null && issue.column !== null) where += `:${issue.column}`;
  return [where, issue.path, issue.message].filter((part) => part !== '').join('  ');
}

const STATE_WIDTH = 'destroying'.length;

/** The state column of an event line: the new state for a transition, blank for a step. */
export function stateColumn(event: EnvEvent): string {
  return (event.state ?? '').padEnd(STATE_WIDTH);
}

/** Local wall-clock time of an instant, `HH:MM:SS`. */
export function clockTime(iso: string): string {
  const date = new Date(iso);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((n) => String(n).padStart(2, '0'))
    .join(':');
}

/** A size for humans, binary units: `512 B`, `34 KiB`, `1.5 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const shown = unit === 0 || value >= 10 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

/** A text as stored may hold anything (a PR title, another client's field): no terminal escapes reach the screen. */
export function printable(text: string): string {
  return text.replace(/[\p{Cc}]/gu, '?');
}
