/**
 * `.env` files as Compose reads them, for `env_file` / `envFile`: one `KEY=VALUE` per line,
 * `# comments`, blank lines, an optional `export ` prefix. Values may be unquoted (trimmed, ` #`
 * starts a comment), `'single-quoted'` (literal) or `"double-quoted"` (`\n`, `\t`, `\"`, `\\`
 * escapes). A line with a key and no `=` takes the value from the inputs. Quoted values spanning
 * lines are not supported.
 */

export interface EnvFileEntry {
  key: string;
  /** null for a bare `KEY` line. */
  value: string | null;
  /** False for single-quoted values, which are taken literally. */
  interpolate: boolean;
  line: number;
  /** 1-based column where the value starts (after any opening quote). */
  column: number;
}

export interface EnvFileProblem {
  line: number;
  column: number;
  message: string;
}

const ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', '"': '"', '\\': '\\' };

/** Parses the text of an env file; pure. */
export function parseEnvFile(text: string): { entries: EnvFileEntry[]; problems: EnvFileProblem[] } {
  const entries: EnvFileEntry[] = [];
  const problems: EnvFileProblem[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const indent = raw.length - raw.trimStart().length;
    let rest = raw.trimStart();
    if (rest === '' || rest.startsWith('#')) return;
    let column = indent + 1;
    const exported = /^export\s+/.exec(rest);
    if (exported) {
      rest = rest.slice(exported[0].length);
      column += exported[0].length;
    }
    const key = /^[A-Za-z_][A-Za-z0-9_.-]*/.exec(rest)?.[0];
    if (!key) {
      problems.push({ line, column, message: 'expected KEY=VALUE' });
      return;
    }
    const afterKey = rest.slice(key.length);
    if (afterKey.trim() === '') {
      entries.push({ key, value: null, interpolate: false, line, column });
      return;
    }
    const eq = /^\s*=\s*/.exec(afterKey);
    if (!eq) {
      problems.push({ line, column: column + key.length, message: 'expected "=" after the variable name' });
      return;
    }
    const valueColumn = column + key.length + eq[0].length;
    const valueText = afterKey.slice(eq[0].length);
    const quote = valueText[0];
    if (quote === "'" || quote === '"') {
      const parsed = quoted(valueText, quote);
      if (parsed === null) {
        problems.push({
          line,
          column: valueColumn,
          message: 'unterminated quote (values spanning lines are not supported)',
        });
        return;
      }
      entries.push({ key, value: parsed, interpolate: quote === '"', line, column: valueColumn + 1 });
      return;
    }
    const value = withoutComment(valueText).trimEnd();
    entries.push({ key, value, interpolate: true, line, column: valueColumn });
  });
  return { entries, problems };
}

const isSpace = (c: string | undefined) => c !== undefined && /\s/.test(c);

/**
 * `text` without a trailing ` # comment`: what `text.replace(/\s+#.*$/, '')` gives, in linear
 * time (that regular expression backtracks quadratically over a long run of spaces).
 */
function withoutComment(text: string): string {
  // `.*$` cannot cross a line terminator: only a `#` after the last one can start the comment.
  let from = 0;
  for (const terminator of ['\n', '\r', '\u2028', '\u2029'])
    from = Math.max(from, text.lastIndexOf(terminator) + 1);
  for (let hash = text.indexOf('#', from); hash >= 0; hash = text.indexOf('#', hash + 1)) {
    if (!isSpace(text[hash - 1])) continue;
    let start = hash - 1;
    while (isSpace(text[start - 1])) start--;
    return text.slice(0, start);
  }
  return text;
}

/** The content of a quoted value, or null when the closing quote is missing. */
function quoted(text: string, quote: string): string | null {
  let out = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i]!;
    if (c === quote) return out;
    if (quote === '"' && c === '\\' && i + 1 < text.length) {
      const next = text[i + 1]!;
      out += ESCAPES[next] ?? `\\${next}`;
      i++;
    } else {
      out += c;
    }
  }
  return null;
}
