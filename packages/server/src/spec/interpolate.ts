/**
 * Compose-style variable interpolation of one string, pure.
 *
 * | syntax             | result                                                     |
 * |--------------------|------------------------------------------------------------|
 * | `$VAR`, `${VAR}`   | the value; an error when VAR is not set                    |
 * | `${VAR:-default}`  | `default` when VAR is unset or empty                       |
 * | `${VAR-default}`   | `default` when VAR is unset                                |
 * | `${VAR:?message}`  | an error with `message` when VAR is unset or empty         |
 * | `${VAR?message}`   | an error with `message` when VAR is unset                  |
 * | `${VAR:+other}`    | `other` when VAR is set and not empty, else empty          |
 * | `${VAR+other}`     | `other` when VAR is set, else empty                        |
 * | `$$`               | a literal `$`                                              |
 *
 * Defaults may themselves contain references (`${A:-${B}}`). A `$` followed by anything else is
 * kept as is. Unlike Compose, an unset variable without a default is an error, not an empty
 * string: a preview that silently runs with `DATABASE_URL=` is worse than one that does not start.
 */

/** A problem found in the text; `index` and `length` delimit the offending reference. */
export interface InterpolationError {
  message: string;
  index: number;
  length: number;
}

/** Returns the value of a variable, or undefined when it is not set. */
export type VariableLookup = (name: string) => string | undefined;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;
const BRACED = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?|\?|:\+|\+)([\s\S]*))?$/;

/** Expands every reference of `text`; `errors` is empty when all references resolved. */
export function interpolate(
  text: string,
  lookup: VariableLookup,
): { value: string; errors: InterpolationError[] } {
  const errors: InterpolationError[] = [];
  const value = expand(text, 0, lookup, errors);
  return { value, errors };
}

function expand(text: string, base: number, lookup: VariableLookup, errors: InterpolationError[]): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const next = text[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
    } else if (next === '{') {
      const end = closingBrace(text, i + 2);
      if (end < 0) {
        errors.push({
          message: `unterminated "\${": add the closing "}"`,
          index: base + i,
          length: text.length - i,
        });
        return out + text.slice(i);
      }
      out += expandBraced(text.slice(i + 2, end), base + i, end + 1 - i, lookup, errors);
      i = end + 1;
    } else {
      const name = NAME.exec(text.slice(i + 1))?.[0];
      if (name === undefined) {
        out += '$';
        i++;
        continue;
      }
      const value = lookup(name);
      if (value === undefined)
        errors.push({ message: unsetMessage(name), index: base + i, length: name.length + 1 });
      out += value ?? '';
      i += name.length + 1;
    }
  }
  return out;
}

/** `inner` is the text between `${` and `}`; `at`/`length` delimit the whole reference. */
function expandBraced(
  inner: string,
  at: number,
  length: number,
  lookup: VariableLookup,
  errors: InterpolationError[],
): string {
  const match = BRACED.exec(inner);
  if (!match) {
    errors.push({ message: `invalid variable reference "\${${inner}}"`, index: at, length });
    return '';
  }
  const [, name = '', op, arg = ''] = match;
  const value = lookup(name);
  const isSet = value !== undefined;
  const nonEmpty = isSet && value !== '';
  const argBase = at + 2 + name.length + (op?.length ?? 0);
  const expandArg = () => expand(arg, argBase, lookup, errors);
  switch (op) {
    case undefined:
      if (!isSet) errors.push({ message: unsetMessage(name), index: at, length });
      return value ?? '';
    case ':-':
      return nonEmpty ? value : expandArg();
    case '-':
      return isSet ? value : expandArg();
    case ':?':
    case '?': {
      if (op === ':?' ? nonEmpty : isSet) return value!;
      const state = op === ':?' && isSet ? 'empty' : 'not set';
      const message =
        arg === '' ? `"${name}" is required but ${state}` : `"${name}" is ${state}: ${expandArg()}`;
      errors.push({ message, index: at, length });
      return '';
    }
    case ':+':
      return nonEmpty ? expandArg() : '';
    default:
      return isSet ? expandArg() : '';
  }
}

/** Index of the `}` closing a reference whose content starts at `from`, or -1. */
function closingBrace(text: string, from: number): number {
  let depth = 0;
  for (let j = from; j < text.length; j++) {
    const c = text[j];
    if (c === '$' && (text[j + 1] === '{' || text[j + 1] === '$')) {
      if (text[j + 1] === '{') depth++;
      j++;
    } else if (c === '}') {
      if (depth === 0) return j;
      depth--;
    }
  }
  return -1;
}

function unsetMessage(name: string): string {
  return `"${name}" is not set: pass it as an input, or give a default like \${${name}:-value}`;
}
