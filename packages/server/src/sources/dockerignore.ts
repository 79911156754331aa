/**
 * `.dockerignore` rules with Docker's semantics, matched in linear time.
 *
 * Docker (moby's fileutils / patternmatcher, and @balena/dockerignore which ports it) turns each
 * pattern into a regular expression: `*` → `[^/]*`, `?` → `[^/]`, `**` → `(.*\/)?` (or `.*` at
 * the end). Go's regexp engine is linear; JavaScript's backtracks, and a pattern such as
 * `**\/**\/**\/**\/**\/**\/**\/**\/x` then takes seconds on one path (twelve of them: minutes).
 * Templates come from pull requests, so this module compiles the same patterns into a small
 * automaton that it runs without backtracking (time: path length × pattern length), under a work
 * budget per path. The rules around the matching (line parsing, path cleaning, `!` exceptions,
 * parent folders) follow @balena/dockerignore exactly; the tests compare both on many patterns.
 *
 * Known differences, all in patterns no one writes: characters that Docker hands raw to its regexp
 * (`+ ( ) | { } ^`) are literals here, `\d`-style escapes are the letter itself, and `?`/`*`
 * count Unicode code points (as Go does), not UTF-16 units (as the JavaScript port does).
 */

import path from 'node:path';

/** A `.dockerignore` that cannot be used: a malformed pattern, or one too costly to evaluate. */
export class DockerignoreError extends Error {
  override readonly name = 'DockerignoreError';
}

/** `.dockerignore` rules with the questions a walk asks of them. */
export interface IgnoreRules {
  /** True when `rel` is excluded (it or a parent folder matches, and no later `!` rule re-includes it). */
  ignores(rel: string): boolean;
  /**
   * Whether an excluded folder must still be walked because a `!` rule may re-include something
   * below it. Docker's own test: some exception pattern starts with `<dir>/` (so `!**\/*.go` does
   * not reach into an excluded folder, exactly as with `docker build`).
   */
  mayReincludeBelow(dirRel: string): boolean;
  /** Adds `!<rel>`, as the docker CLI does for the Dockerfile and `.dockerignore`. */
  keep(rel: string): void;
}

/** Steps of the automaton allowed for one path (all rules together): far above any real file. */
const STEP_BUDGET_PER_PATH = 2_000_000;
/** Patterns longer than this are refused; real ones are a few dozen characters. */
const MAX_PATTERN_LENGTH = 4096;

type Token =
  | { kind: 'char'; ch: string }
  /** `?`: one character but `/`. */
  | { kind: 'one' }
  /** `[...]`: as in a regular expression (it may match `/`, as Docker's does). */
  | { kind: 'class'; negated: boolean; ranges: [number, number][] }
  /** `*`: any run of characters but `/`. */
  | { kind: 'star' }
  /** `**` before more pattern: `(.*\/)?`, any number of folders. */
  | { kind: 'dirs' }
  /** `**` at the end: `.*`, anything. */
  | { kind: 'rest' };

interface Rule {
  negative: boolean;
  /** The cleaned pattern (without `!`), as moby's `Pattern.String()`. */
  pattern: string;
  dirs: string[];
  glob: Glob;
}

/** Parses `.dockerignore` text (moby's `ignorefile.ReadAll` and pattern matcher, as balena ports them). */
export function parseDockerignore(text: string): IgnoreRules {
  const rules: Rule[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, index) => {
    const rule = parseRule(line, index + 1);
    if (rule) rules.push(rule);
  });
  return {
    ignores: (rel) => ignores(rules, rel),
    mayReincludeBelow: (dirRel) =>
      rules.some((rule) => rule.negative && `${rule.pattern}/`.startsWith(`${dirRel}/`)),
    keep: (rel) => {
      const rule = parseRule(`!${rel}`, 0);
      if (rule) rules.push(rule);
    },
  };
}

function parseRule(line: string, lineNumber: number): Rule | null {
  if (!line || line.startsWith('#') || line.trim() === '') return null;
  if (line.length > MAX_PATTERN_LENGTH) {
    throw new DockerignoreError(
      `.dockerignore line ${lineNumber} is longer than ${MAX_PATTERN_LENGTH} characters`,
    );
  }
  let pattern = line.trim();
  let negative = false;
  if (pattern.startsWith('!')) {
    negative = true;
    pattern = pattern.slice(1).trim();
  }
  if (pattern.length > 0) {
    pattern = cleanPath(pattern);
    if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
  }
  if (negative) pattern = `!${pattern}`;
  pattern = cleanPath(pattern.trim());
  if (pattern === '' || pattern === '!') return null;
  if (pattern.startsWith('!')) {
    negative = true;
    pattern = pattern.slice(1);
  } else {
    negative = false;
  }
  return { negative, pattern, dirs: pattern.split('/'), glob: new Glob(compile(pattern, lineNumber)) };
}

/** Go's `filepath.Clean` for our purposes: normalised, no trailing slash. */
function cleanPath(p: string): string {
  if (p === '') return '.';
  const normalised = path.posix.normalize(p);
  return normalised.length > 1 && normalised.endsWith('/') ? normalised.slice(0, -1) : normalised;
}

/** The rule evaluation of moby's `Matches` (balena's `_test`): the last matching rule wins. */
function ignores(rules: Rule[], file: string): boolean {
  if (!file) return false;
  const slash = file.lastIndexOf('/');
  const parentPath = slash === -1 ? '.' : cleanPath(file.slice(0, slash));
  const parentDirs = parentPath.split('/');
  const budget = { steps: STEP_BUDGET_PER_PATH };
  let matched = false;
  for (const rule of rules) {
    const result = rule.glob.run(file, budget);
    let match = result.full;
    if (!match && parentPath !== '.') {
      if (rule.dirs.includes('**')) {
        // `**` may stand for any number of folders: try each parent of at least the other parts' count.
        const from = rule.dirs.filter((d) => d !== '**').length;
        for (let i = from; i <= parentDirs.length && !match; i++) match = result.prefixes[i] === true;
      } else if (rule.dirs.length <= parentDirs.length) {
        match = result.prefixes[rule.dirs.length] === true;
      }
    }
    if (match) matched = !rule.negative;
  }
  return matched;
}

/** Turns a cleaned pattern into tokens, as moby's `compile` turns it into a regular expression. */
function compile(pattern: string, lineNumber: number): Token[] {
  const chars = Array.from(pattern);
  const tokens: Token[] = [];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (ch === '*') {
      if (chars[i + 1] === '*') {
        i++;
        if (chars[i + 1] === '/') i++;
        tokens.push(i + 1 >= chars.length ? { kind: 'rest' } : { kind: 'dirs' });
      } else {
        tokens.push({ kind: 'star' });
      }
    } else if (ch === '?') {
      tokens.push({ kind: 'one' });
    } else if (ch === '\\') {
      // Escapes the next character; a trailing one stands for itself.
      if (i + 1 < chars.length) tokens.push({ kind: 'char', ch: chars[++i] as string });
      else tokens.push({ kind: 'char', ch });
    } else if (ch === '[') {
      i = compileClass(chars, i, tokens, pattern, lineNumber);
    } else {
      tokens.push({ kind: 'char', ch });
    }
  }
  return tokens;
}

/** Reads `[...]` starting at `start`; returns the index of its `]`. */
function compileClass(
  chars: string[],
  start: number,
  tokens: Token[],
  pattern: string,
  lineNumber: number,
): number {
  const bad = (why: string) =>
    new DockerignoreError(`.dockerignore line ${lineNumber}: bad pattern "${pattern}" (${why})`);
  let i = start + 1;
  const negated = chars[i] === '^';
  if (negated) i++;
  // `[]` and `[^]` mean different things to Go and to JavaScript: refused rather than guessed.
  if (chars[i] === ']') throw bad('a character class cannot start with "]"');
  const ranges: [number, number][] = [];
  const read = (): number => {
    let ch = chars[i];
    if (ch === undefined) throw bad('unterminated character class');
    if (ch === '\\') {
      i++;
      ch = chars[i];
      if (ch === undefined) throw bad('unterminated character class');
    }
    i++;
    return ch.codePointAt(0) as number;
  };
  while (chars[i] !== ']') {
    if (chars[i] === undefined) throw bad('unterminated character class');
    const low = read();
    let high = low;
    if (chars[i] === '-' && chars[i + 1] !== ']' && chars[i + 1] !== undefined) {
      i++;
      high = read();
      if (high < low) throw bad('character range out of order');
    }
    ranges.push([low, high]);
  }
  tokens.push({ kind: 'class', negated, ranges });
  return i;
}

/**
 * A compiled pattern run as a set of states over the path's characters (Thompson's simulation):
 * no backtracking, so the time is bounded by path length × pattern length.
 * State `i` (0..n) is "before token i" (n: matched); state `n + 1 + i` is "inside the `**` of token i".
 */
class Glob {
  private readonly n: number;
  private readonly mark: Uint32Array;
  private generation = 0;

  constructor(private readonly tokens: Token[]) {
    this.n = tokens.length;
    this.mark = new Uint32Array(2 * this.n + 2);
  }

  /**
   * Runs over `path`; `full` says whether all of it matches, `prefixes[k]` whether its first k
   * components do (`prefixes[0]`: the empty string), which is what the parent-folder test needs.
   */
  run(path: string, budget: { steps: number }): { full: boolean; prefixes: boolean[] } {
    let current: number[] = [];
    this.nextGeneration();
    this.add(0, current);
    const prefixes: boolean[] = [this.accepts(current)];
    for (const c of path) {
      if (c === '/') prefixes.push(this.accepts(current));
      if (current.length === 0) break;
      budget.steps -= current.length;
      if (budget.steps < 0) throw new DockerignoreError('.dockerignore is too complex to evaluate');
      const next: number[] = [];
      this.nextGeneration();
      for (const state of current) this.step(state, c, next);
      current = next;
    }
    // Components past a dead end cannot match; their entries stay undefined (false).
    return { full: this.accepts(current), prefixes };
  }

  private accepts(states: number[]): boolean {
    return states.includes(this.n);
  }

  private nextGeneration(): void {
    this.generation += 1;
    if (this.generation === 0xffffffff) {
      this.mark.fill(0);
      this.generation = 1;
    }
  }

  /** Adds state `s` and everything reachable from it without reading a character. */
  private add(s: number, into: number[]): void {
    const stack = [s];
    while (stack.length > 0) {
      const state = stack.pop() as number;
      if (this.mark[state] === this.generation) continue;
      this.mark[state] = this.generation;
      into.push(state);
      if (state > this.n) continue;
      const token = this.tokens[state];
      if (!token) continue;
      if (token.kind === 'star' || token.kind === 'rest') stack.push(state + 1);
      else if (token.kind === 'dirs') stack.push(state + 1, this.n + 1 + state);
    }
  }

  private step(state: number, c: string, into: number[]): void {
    if (state > this.n) {
      // Inside `(.*/)?`: anything keeps us there; a `/` may also end it.
      const i = state - this.n - 1;
      this.add(state, into);
      if (c === '/') this.add(i + 1, into);
      return;
    }
    const token = this.tokens[state];
    if (!token) return;
    switch (token.kind) {
      case 'char':
        if (c === token.ch) this.add(state + 1, into);
        break;
      case 'one':
        if (c !== '/') this.add(state + 1, into);
        break;
      case 'class': {
        const code = c.codePointAt(0) as number;
        const inClass = token.ranges.some(([low, high]) => code >= low && code <= high);
        if (inClass !== token.negated) this.add(state + 1, into);
        break;
      }
      case 'star':
        if (c !== '/') this.add(state, into);
        break;
      case 'rest':
        this.add(state, into);
        break;
      case 'dirs':
        // Reads nothing itself: its loop state does.
        break;
    }
  }
}
