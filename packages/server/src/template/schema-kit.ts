/**
 * Building blocks shared by the mayfly.yaml and Compose schemas: strict maps with "did you mean"
 * hints, scalars that accept what interpolation produces (`"8080"` where a number is expected),
 * readable messages for zod's issues, and the translation of zod issues into positioned ones.
 */

import { parseDuration } from '@mayfly/contract';
import * as z from 'zod';
import type { IssueSink } from './issues.js';
import { parseMemorySize, parseShortDuration } from './units.js';
import type { Path } from './yaml-positions.js';

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** How a value reads in a message: `"abc"`, `12`, `a list`, `a map`, `nothing`. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string')
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  return String(value);
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'a list',
  object: 'a map',
  record: 'a map',
  null: 'nothing',
};

/** Messages for zod's built-in issues. Passed to every `safeParse` of a template schema. */
export const errorMap: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${EXPECTED[issue.expected] ?? issue.expected}, got ${describeValue(issue.input)}`;
    case 'invalid_value':
      return issue.values.length === 1
        ? `expected ${JSON.stringify(issue.values[0])}, got ${describeValue(issue.input)}`
        : `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}; got ${describeValue(issue.input)}`;
    case 'too_small':
      if (issue.origin === 'string') return 'must not be empty';
      if (issue.origin === 'array')
        return `needs at least ${issue.minimum} item${issue.minimum === 1 ? '' : 's'}`;
      return issue.inclusive ? `must be at least ${issue.minimum}` : `must be greater than ${issue.minimum}`;
    case 'too_big':
      return issue.inclusive ? `must be at most ${issue.maximum}` : `must be less than ${issue.maximum}`;
    default:
      return undefined;
  }
};

/** Parse options for every template schema: our messages, and the input kept for them. */
export const PARSE_OPTIONS = { error: errorMap, reportInput: true } as const;

/**
 * A map with a fixed set of keys. Any other key is an "unknown key" error placed on the key itself,
 * with a suggestion when one is close (`imgae` → `image`, `depends_on` → `dependsOn`) or given in
 * `hints` (for names that differ between the two formats, like `environment` → `env`).
 * Keys starting with `x-` are extensions and are accepted (the YAML walk already dropped them).
 */
export function strictMap<S extends z.core.$ZodLooseShape>(shape: S, hints: Record<string, string> = {}) {
  const known: Candidate[] = Object.keys(shape).map((key) => ({
    key,
    lower: key.toLowerCase(),
    squashed: squash(key),
  }));
  return z.looseObject(shape).superRefine(
    (value, ctx) => {
      for (const key of Object.keys(value)) {
        if (Object.hasOwn(shape, key) || key.startsWith('x-')) continue;
        const suggestion = Object.hasOwn(hints, key) ? hints[key] : closest(key, known);
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: suggestion ? `unknown key (did you mean "${suggestion}"?)` : 'unknown key',
          params: { at: 'key' },
          input: value[key],
        });
      }
    },
    // Report unknown keys even when other keys of the map have issues, so all are seen at once.
    { when: (payload) => isPlainObject(payload.value) },
  );
}

/** A known key, prepared once for {@link closest}. */
interface Candidate {
  key: string;
  lower: string;
  squashed: string;
}

const squash = (s: string) => s.toLowerCase().replace(/[-_]/g, '');

/** Keys longer than this get no suggestion: known keys are short, and a hostile key may be a megabyte long. */
const MAX_SUGGESTED_KEY_LENGTH = 64;

/** The known key closest to `key`: same letters ignoring case, `-` and `_`, or one or two edits away. */
function closest(key: string, candidates: readonly Candidate[]): string | undefined {
  if (key.length > MAX_SUGGESTED_KEY_LENGTH) return undefined;
  const squashed = squash(key);
  const same = candidates.find((c) => c.squashed === squashed);
  if (same) return same.key;
  const lower = key.toLowerCase();
  const within = Math.min(2, Math.floor(key.length / 3));
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    // n edits change the length by at most n.
    if (Math.abs(candidate.lower.length - lower.length) > within) continue;
    const distance = editDistance(lower, candidate.lower);
    if (distance < bestDistance) [best, bestDistance] = [candidate.key, distance];
  }
  return bestDistance <= within ? best : undefined;
}

/**
 * Optimal string alignment distance: insertions, deletions, substitutions and transpositions.
 * Three rolling rows instead of a matrix: it runs for every unknown key of a template.
 */
function editDistance(a: string, b: string): number {
  let before = new Array<number>(b.length + 1).fill(0);
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  let current = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, before[j - 2]! + 1);
      current[j] = v;
    }
    [before, previous, current] = [previous, current, before];
  }
  return previous[b.length]!;
}

/** The reason a scalar's text was rejected; returned by the parse function of {@link scalar}. */
export class Invalid {
  constructor(readonly message: string) {}
}

type ScalarKind = 'string' | 'number' | 'boolean' | 'null';
type ScalarInput = string | number | boolean | null;

const kindOf = (value: unknown): string => (value === null ? 'null' : typeof value);

/**
 * A scalar accepted in some JS types and then parsed. A value of another type is reported as a
 * type mismatch (marked so that a union picks another branch's explanation); a value that does not
 * parse is reported with the message of its {@link Invalid}.
 */
export function scalar<T>(
  expected: string,
  kinds: readonly ScalarKind[],
  parse: (value: ScalarInput) => T | Invalid,
) {
  return z.unknown().transform((value, ctx): T => {
    if (value === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'required',
        params: { missing: true, expected },
        input: value,
      });
      return z.NEVER;
    }
    if (!kinds.includes(kindOf(value) as ScalarKind)) {
      ctx.addIssue({
        code: 'custom',
        message: `expected ${expected}, got ${describeValue(value)}`,
        params: { mismatch: true, expected },
        input: value,
      });
      return z.NEVER;
    }
    const result = parse(value as ScalarInput);
    if (result instanceof Invalid) {
      ctx.addIssue({ code: 'custom', message: result.message, input: value });
      return z.NEVER;
    }
    return result;
  });
}

/** A string, number or boolean, as text: environment values, build args, `user: 1000`. */
export const text = scalar('a string', ['string', 'number', 'boolean'], (v) => String(v));

/** Like {@link text}, or null (`KEY:` with no value: taken from the inputs, or left out). */
export const optionalText = scalar('a string', ['string', 'number', 'boolean', 'null'], (v) =>
  v === null ? null : String(v),
);

/** A whole number of at least `min`; a string of digits is accepted (it comes from `${VAR}`). */
export function integer(min: number) {
  return scalar('an integer', ['number', 'string'], (v) => {
    const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n))
      return new Invalid(`expected an integer, got ${describeValue(v)}`);
    return n < min ? new Invalid(`must be at least ${min}`) : n;
  });
}

export const port = scalar('a port number', ['number', 'string'], (v) => {
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    return new Invalid(`invalid port ${describeValue(v)}: expected a number from 1 to 65535`);
  }
  return n;
});

export const boolish = scalar('true or false', ['boolean', 'string'], (v) => {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  return new Invalid(`expected true or false, got ${describeValue(v)}`);
});

/** CPUs as a positive decimal (`0.5`, `"2"`). */
export const cpus = scalar('a number of CPUs', ['number', 'string'], (v) => {
  // Not `^\d*\.?\d+$`: its two runs of digits backtrack quadratically on a long string of them.
  const n = typeof v === 'string' && /^(?:\d+(?:\.\d+)?|\.\d+)$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !(n > 0))
    return new Invalid(`invalid CPU count ${describeValue(v)}: expected a number above 0, like 0.5`);
  return n;
});

export const memory = scalar('a memory size', ['number', 'string'], (v) => {
  const bytes = parseMemorySize(v as string | number);
  return (
    bytes ??
    new Invalid(
      `invalid memory size ${describeValue(v)}: expected bytes or a number with a unit, like 256Mi, 512M or 1g`,
    )
  );
});

/** `ttl`, `idleTimeout`: `30s`, `45m`, `2h`, `1d`, `1h30m`. */
export const lifetime = scalar('a duration', ['string'], (v) => {
  const ms = parseDuration(v as string);
  return (
    ms ??
    new Invalid(`invalid duration ${describeValue(v)}: expected a number with s, m, h or d, like 30m or 2h`)
  );
});

/** Health check timings: `500ms`, `10s`, `1m30s`. */
export const shortDuration = scalar('a duration', ['string'], (v) => {
  const ms = parseShortDuration(v as string);
  return ms ?? new Invalid(`invalid duration ${describeValue(v)}: expected values like 500ms, 10s or 1m30s`);
});

/** A string or a list of scalars (as text): `command`, `entrypoint`. */
export const stringOrList = z.union([z.string(), z.array(text)]);

const isMismatch = (issue: z.core.$ZodIssue) =>
  issue.path.length === 0 &&
  (issue.code === 'invalid_type' || (issue.code === 'custom' && issue.params?.mismatch === true));

/**
 * Reports zod issues into `sink`, with `prefix` prepended to their paths. For a failed union, the
 * branch that matches the value's shape explains the problem (a map given for `build` gets the map
 * branch's "unknown key"); when no branch does, the message lists the accepted shapes.
 */
export function reportZodIssues(issues: readonly z.core.$ZodIssue[], prefix: Path, sink: IssueSink): void {
  for (const issue of issues) {
    const path = [...prefix, ...(issue.path as (string | number)[])];
    if (issue.code === 'invalid_union') {
      const branch = issue.errors.find((errors) => !errors.every(isMismatch));
      if (branch) {
        reportZodIssues(branch, path, sink);
        continue;
      }
      if (issue.input === undefined) {
        sink.error(path, `required key "${String(path.at(-1))}" is missing`);
        continue;
      }
      const alternatives = issue.errors.flatMap((errors) =>
        errors.map((e) =>
          e.code === 'invalid_type'
            ? (EXPECTED[e.expected] ?? e.expected)
            : String(e.code === 'custom' && e.params?.expected),
        ),
      );
      // "or nothing" (a nullable key) only adds noise to a message about a value that is there.
      const named = [...new Set(alternatives)].filter((a) => a !== 'nothing');
      const expected = named.join(' or ');
      sink.error(path, `expected ${expected}, got ${describeValue(issue.input)}`);
    } else if (
      (issue.code === 'invalid_type' && issue.input === undefined) ||
      (issue.code === 'custom' && issue.params?.missing)
    ) {
      sink.error(path, `required key "${String(path.at(-1))}" is missing`);
    } else if (issue.code === 'custom' && issue.params?.at === 'key') {
      sink.error(path, issue.message, 'key');
    } else {
      sink.error(path, issue.message);
    }
  }
}

/** Where a volume's data comes from (`x-mayfly.data.<volume>`, `data.<volume>`): checked in `normalize.ts`. */
export const volumeData = strictMap({
  seededBy: z.string().min(1).optional(),
  snapshot: z.string().min(1).optional(),
});
