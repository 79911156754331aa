/** Template issues: collecting them with positions, and the error that carries them all. */
import type { TemplateIssue } from '@mayfly/contract';
import { TEMPLATE_LIMITS } from './limits.js';
import { formatPath, type Path, type Position, type SourcePositions } from './yaml-positions.js';

/**
 * Issues of one kind an {@link IssueSink} keeps; the rest are only counted. Kept well above what
 * is shown ({@link limitIssues}) so that sorting still puts the first lines first.
 */
const KEPT_ISSUES = 10 * TEMPLATE_LIMITS.maxIssues;

/** `file:line:col: path: message`, leaving out the parts that are unknown or empty. */
export function formatIssue(issue: TemplateIssue): string {
  const where = [issue.file, issue.line, issue.column].filter((part) => part !== null).join(':');
  return [where, issue.path, issue.message].filter((part) => part !== '').join(': ');
}

/** A template that cannot be used; `issues` lists every problem found, not just the first. */
export class TemplateError extends Error {
  override name = 'TemplateError';

  constructor(
    readonly issues: TemplateIssue[],
    /** Warnings found along the way, for callers that want to show them with the errors. */
    readonly warnings: TemplateIssue[] = [],
  ) {
    const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
    super(`invalid template (${count}):\n${issues.map((i) => `  ${formatIssue(i)}`).join('\n')}`);
  }
}

/**
 * Collects errors and warnings for one template file, positioned through its {@link SourcePositions}.
 * A hostile template can cause an issue per node: past a few hundred, issues are only counted.
 */
export class IssueSink {
  readonly errors: TemplateIssue[] = [];
  readonly warnings: TemplateIssue[] = [];
  /** Issues found but not kept, because `errors` or `warnings` were full. */
  readonly dropped = { errors: 0, warnings: 0 };

  constructor(
    readonly file: string,
    readonly positions: SourcePositions,
  ) {}

  /** An error at `path`: its value, or its key with `at: 'key'`. */
  error(path: Path, message: string, at: 'key' | 'value' = 'value'): void {
    if (this.errors.length >= KEPT_ISSUES) this.dropped.errors++;
    else this.errors.push(this.issue(path, message, at));
  }

  warn(path: Path, message: string, at: 'key' | 'value' = 'value'): void {
    if (this.warnings.length >= KEPT_ISSUES) this.dropped.warnings++;
    else this.warnings.push(this.issue(path, message, at));
  }

  /** An error at an explicit position, possibly in another file (an env file). */
  errorAt(file: string, position: Position, path: Path, message: string): void {
    if (this.errors.length >= KEPT_ISSUES) this.dropped.errors++;
    else
      this.errors.push({
        file,
        line: position.line,
        column: position.column,
        path: formatPath(path),
        message,
      });
  }

  /** A warning at an explicit position. */
  warnAt(file: string, position: Position, path: Path, message: string): void {
    if (this.warnings.length >= KEPT_ISSUES) this.dropped.warnings++;
    else
      this.warnings.push({
        file,
        line: position.line,
        column: position.column,
        path: formatPath(path),
        message,
      });
  }

  private issue(path: Path, message: string, at: 'key' | 'value'): TemplateIssue {
    const { line, column } = this.positions.locate(path, at);
    return { file: this.file, line, column, path: formatPath(path), message };
  }
}

/** Issues in reading order (the template first, then other files), without duplicates. */
export function sortIssues(issues: TemplateIssue[], mainFile: string): TemplateIssue[] {
  const seen = new Set<string>();
  const unique = issues.filter((issue) => {
    const key = formatIssue(issue);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const rank = (i: TemplateIssue) => (i.file === mainFile ? 0 : 1);
  return unique.sort(
    (a, b) =>
      rank(a) - rank(b) ||
      (a.file < b.file ? -1 : a.file > b.file ? 1 : 0) ||
      (a.line ?? 0) - (b.line ?? 0) ||
      (a.column ?? 0) - (b.column ?? 0),
  );
}

/**
 * The first {@link TEMPLATE_LIMITS.maxIssues} of `sorted` (from {@link sortIssues}); when there are
 * more (`dropped` counts those never kept), a last issue without a position says how many.
 */
export function limitIssues(
  sorted: TemplateIssue[],
  file: string,
  dropped: number,
  noun: 'problems' | 'warnings',
): TemplateIssue[] {
  const max = TEMPLATE_LIMITS.maxIssues;
  const rest = Math.max(0, sorted.length - max) + dropped;
  if (rest === 0) return sorted;
  return [
    ...sorted.slice(0, max),
    {
      file,
      line: null,
      column: null,
      path: '',
      message: `${rest} more ${rest === 1 ? noun.slice(0, -1) : noun} not listed`,
    },
  ];
}
