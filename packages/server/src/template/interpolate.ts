/**
 * Compose-style variable interpolation of one string, pure.
 *
 * | syntax             | result                                                     |
 * |--------------------|------------------------------------------------------------|
 * | `$VAR`, `${VAR}`   | the value; empty, with a warning, when VAR is not set      |
 * | `${VAR:-default}`  | `default` when VAR is unset or empty                       |
 * | `${VAR-default}`   | `default` when VAR is unset                                |
 * | `${VAR:?message}`  | an error with `message` when VAR is unset or empty         |
 * | `${VAR?message}`   | an error with `message` when VAR is unset                  |
 * | `${VAR:+other}`    | `other` when VAR is set and not empty, else empty          |
 * | `${VAR+other}`     | `other` when VAR is set, else empty                        |
 * | `$$`               | a literal `$`                                              |
 *
 * Defaults may themselves contain references (`${A:-${B}}`). A `$` followed by anything else is
 * kept as is. As in Compose, an unset variable without a default is an empty string and a
 * warning; `${VAR:?message}` is how a template makes one required.
 *
 * The text comes from templates, so the work is linear in its length whatever it holds: every
 * `${` is matched with its `}` in one pass before anything is expanded, each character is then
 * read once, nesting is limited, and so are the length of the result and the number of errors.
 */
import { excerpt, TEMPLATE_LIMITS } from './limits.js';

/** A problem found in the text; `index` and `length` delimit the offending reference. */
export interface InterpolationError {
  message: string;
  index: number;
  length: number;
  /** For an unset variable: its name. */
  name?: string;
}

/**
 * Returns the value of a variable, or undefined when it is not set. `index` is where the
 * reference (its `$`) starts in the text being interpolated.
 */
export type VariableLookup = (name: string, index: number) => string | undefined;

export interface InterpolateOptions {
  /** Longest result; past it interpolation stops with an error (default: `TEMPLATE_LIMITS.maxInterpolatedLength`). */
  maxLength?: number;
  /** Deepest nesting of references in defaults (default: `TEMPLATE_LIMITS.maxInterpolationDepth`). */
  maxDepth?: number;
}

/** Errors kept per string: one bad line of a template should not produce a million issues. */
const MAX_ERRORS = 20;

/** Stops the expansion; the error it carries has already been recorded. */
class Stop extends Error {}

const isNameStart = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
const isNameChar = (c: number) => isNameStart(c) || (c >= 48 && c <= 57);
const DOLLAR = 36;
const OPEN = 123;
const CLOSE = 125;

/** Expands every reference of `text`; `errors` is empty when all references resolved. */
export function interpolate(
  text: string,
  lookup: VariableLookup,
  options: InterpolateOptions = {},
): { value: string; errors: InterpolationError[]; warnings: InterpolationError[] } {
  if (!text.includes('$')) return { value: text, errors: [], warnings: [] };
  const run = new Interpolation(
    text,
    lookup,
    options.maxLength ?? TEMPLATE_LIMITS.maxInterpolatedLength,
    options.maxDepth ?? TEMPLATE_LIMITS.maxInterpolationDepth,
  );
  try {
    return { value: run.expand(0, text.length, 0, ''), errors: run.errors, warnings: run.warnings };
  } catch (error) {
    if (!(error instanceof Stop)) throw error;
    return { value: '', errors: run.errors, warnings: run.warnings };
  }
}

class Interpolation {
  readonly errors: InterpolationError[] = [];
  /** Unset variables (each once per string), read as empty. */
  readonly warnings: InterpolationError[] = [];
  /** Where each `${` is, in increasing order, and where its `}` is (-1 when it has none). */
  private readonly opens: number[] = [];
  private readonly ends: number[] = [];
  /** Expansion reads the `${` in increasing order: where the next lookup starts. */
  private cursor = 0;

  constructor(
    private readonly text: string,
    private readonly lookup: VariableLookup,
    private readonly maxLength: number,
    private readonly maxDepth: number,
  ) {
    this.matchBraces();
  }

  /**
   * Pairs each `${` with the `}` that closes it, counting nested `${` and skipping `$$`, in one
   * pass. This is what scanning forward from each `${` would find, without the rescans.
   */
  private matchBraces(): void {
    const { text, opens, ends } = this;
    /** Indices into `opens` of the `${` not closed yet. */
    const open: number[] = [];
    for (let i = text.indexOf('$'); i >= 0 && i < text.length; ) {
      const c = text.charCodeAt(i);
      if (c === DOLLAR) {
        const next = text.charCodeAt(i + 1);
        if (next === OPEN) {
          open.push(opens.length);
          opens.push(i);
          ends.push(-1);
        }
        i += next === DOLLAR || next === OPEN ? 2 : 1;
      } else if (c === CLOSE) {
        const start = open.pop();
        if (start !== undefined) ends[start] = i;
        i++;
      } else {
        i++;
      }
      // Outside any `${`, only the next `$` matters: skip the text in between.
      if (open.length === 0 && i < text.length && text.charCodeAt(i) !== DOLLAR) {
        i = text.indexOf('$', i);
      }
    }
  }

  /** The `}` of the `${` at `at`, or -1. */
  private closing(at: number): number {
    const { opens } = this;
    while (this.cursor < opens.length && opens[this.cursor]! < at) this.cursor++;
    return opens[this.cursor] === at ? this.ends[this.cursor]! : -1;
  }

  private unset(name: string, index: number, length: number): void {
    if (this.warnings.length >= MAX_ERRORS || this.warnings.some((w) => w.name === name)) return;
    this.warnings.push({ message: unsetMessage(name), index, length, name });
  }

  private error(message: string, index: number, length: number): void {
    if (this.errors.length < MAX_ERRORS) this.errors.push({ message, index, length });
    else if (this.errors.length === MAX_ERRORS)
      this.errors.push({ message: 'more problems in this value are not listed', index, length });
  }

  /** Expands `text[from, to)`, appending to `out`; `depth` is how many references enclose it. */
  expand(from: number, to: number, depth: number, out: string): string {
    const { text } = this;
    let i = from;
    while (i < to) {
      const dollar = text.indexOf('$', i);
      if (dollar < 0 || dollar >= to) {
        out = this.append(out, text.slice(i, to), i);
        break;
      }
      if (dollar > i) out = this.append(out, text.slice(i, dollar), i);
      i = dollar;
      const next = text.charCodeAt(i + 1);
      if (i + 1 < to && next === DOLLAR) {
        out = this.append(out, '$', i);
        i += 2;
      } else if (i + 1 < to && next === OPEN) {
        const end = this.closing(i);
        if (end < 0 || end >= to) {
          this.error(`unterminated "\${": add the closing "}"`, i, to - i);
          return this.append(out, text.slice(i, to), i);
        }
        out = this.append(out, this.braced(i, end, depth), i);
        i = end + 1;
      } else {
        let j = i + 1;
        if (j < to && isNameStart(text.charCodeAt(j))) {
          while (j < to && isNameChar(text.charCodeAt(j))) j++;
        }
        if (j === i + 1) {
          out = this.append(out, '$', i);
          i++;
          continue;
        }
        const name = text.slice(i + 1, j);
        const value = this.lookup(name, i);
        if (value === undefined) this.unset(name, i, j - i);
        out = this.append(out, value ?? '', i);
        i = j;
      }
    }
    return out;
  }

  /** `${...}` from `at` (its `$`) to `end` (its `}`). */
  private braced(at: number, end: number, depth: number): string {
    const { text } = this;
    const length = end + 1 - at;
    if (depth >= this.maxDepth) {
      this.error(`references nested more than ${this.maxDepth} deep in defaults`, at, length);
      throw new Stop();
    }
    let j = at + 2;
    if (j < end && isNameStart(text.charCodeAt(j))) {
      while (j < end && isNameChar(text.charCodeAt(j))) j++;
    }
    const name = text.slice(at + 2, j);
    const op = operatorAt(text, j, end);
    if (name === '' || (op === undefined && j !== end)) {
      this.error(`invalid variable reference "\${${excerpt(text.slice(at + 2, end))}}"`, at, length);
      return '';
    }
    const value = this.lookup(name, at);
    const isSet = value !== undefined;
    const nonEmpty = isSet && value !== '';
    const argFrom = j + (op?.length ?? 0);
    switch (op) {
      case undefined:
        if (!isSet) this.unset(name, at, length);
        return value ?? '';
      case ':-':
        return nonEmpty ? value : this.expand(argFrom, end, depth + 1, '');
      case '-':
        return isSet ? value : this.expand(argFrom, end, depth + 1, '');
      case ':?':
      case '?': {
        if (op === ':?' ? nonEmpty : isSet) return value!;
        const state = op === ':?' && isSet ? 'empty' : 'not set';
        const message =
          argFrom === end
            ? `"${name}" is required but ${state}`
            : `"${name}" is ${state}: ${excerpt(this.expand(argFrom, end, depth + 1, ''), 200)}`;
        this.error(message, at, length);
        return '';
      }
      case ':+':
        return nonEmpty ? this.expand(argFrom, end, depth + 1, '') : '';
      default:
        return isSet ? this.expand(argFrom, end, depth + 1, '') : '';
    }
  }

  private append(out: string, piece: string, at: number): string {
    if (out.length + piece.length > this.maxLength) {
      this.error(`the value is longer than ${this.maxLength} characters once interpolated`, at, 1);
      throw new Stop();
    }
    return out + piece;
  }
}

/** The operator after a name in `${NAME<op>...}`, if any. */
function operatorAt(text: string, j: number, end: number): string | undefined {
  const two = text.slice(j, Math.min(j + 2, end));
  if (two === ':-' || two === ':?' || two === ':+') return two;
  const one = two.slice(0, 1);
  return one === '-' || one === '?' || one === '+' ? one : undefined;
}

function unsetMessage(name: string): string {
  const shown = excerpt(name, 100);
  return `"${shown}" is not set, so it is empty: pass it with --input or in the environment, or give a default like \${${shown}:-value}`;
}
