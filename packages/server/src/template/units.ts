/** Pure parsers for the scalar notations templates use: sizes, short durations, shell words. */

const SIZE_FACTORS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * Parses a memory size into bytes: plain bytes (`1048576`), or a number with `k`, `m`, `g`, `t`,
 * optionally followed by `i` and/or `b`, any case (`512M`, `1g`, `256Mi`, `1GiB`, `100kb`).
 * Every unit is binary (`1M` = `1Mi` = 2^20): that is what Docker and Compose mean by `512m`, and
 * having `M` and `Mi` differ by 5% would surprise more people than it helps.
 * Returns null when the text is not a size or is not a positive whole number of bytes.
 */
export function parseMemorySize(input: string | number): number | null {
  if (typeof input === 'number') return Number.isInteger(input) && input > 0 ? input : null;
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)$/i.exec(input.trim());
  if (!match) return null;
  const [, amount = '', unit = '', binary] = match;
  // `i` needs a unit (`Mi`), and a bare number of bytes must be whole.
  if (unit === '' && (binary || amount.includes('.'))) return null;
  const bytes = Math.round(Number(amount) * SIZE_FACTORS[unit.toLowerCase()]!);
  return bytes > 0 ? bytes : null;
}

const DURATION_UNITS_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a Go-style duration as Compose writes them (`500ms`, `10s`, `1m30s`, `1.5h`, `0`) into
 * whole milliseconds. Returns null when the text is not such a duration.
 */
export function parseShortDuration(input: string): number | null {
  const text = input.trim();
  if (text === '0') return 0;
  if (!/^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/.test(text)) return null;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(amount) * DURATION_UNITS_MS[unit as string]!;
  }
  return Math.round(total);
}

/**
 * Splits a command line into words the way a POSIX shell would for simple input: whitespace
 * separates words, single quotes are literal, double quotes allow `\"`, `\\`, `\$` and `` \` ``
 * escapes, a backslash outside quotes escapes the next character. No expansion of any kind.
 * Returns an error message for an unterminated quote or a trailing backslash.
 */
export function splitShellWords(input: string): { words: string[] } | { error: string } {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (c === "'") {
      const end = input.indexOf("'", i + 1);
      if (end < 0) return { error: 'unterminated single quote' };
      word += input.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= input.length) return { error: 'unterminated double quote' };
        const d = input[i]!;
        if (d === '"') break;
        if (d === '\\' && i + 1 < input.length && '"\\$`'.includes(input[i + 1]!)) {
          word += input[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      inWord = true;
      i++;
    } else if (c === '\\') {
      if (i + 1 >= input.length) return { error: 'trailing backslash' };
      // A backslash-newline is a line continuation, as in a shell.
      if (input[i + 1] !== '\n') word += input[i + 1];
      inWord = true;
      i += 2;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      i++;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return { words };
}
