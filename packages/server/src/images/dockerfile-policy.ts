/**
 * What a template's Dockerfile may not ask of the Docker daemon: fetching from the network itself.
 *
 * `ADD <url>` (and `ADD <git repo>` with BuildKit) is fetched by the daemon (or buildkitd), from
 * the server's own network namespace, not from a build container: a template could read a
 * service bound to the host's loopback, or another environment's container, into its image.
 * {@link checkDockerfile} refuses, in `ADD` and `ONBUILD ADD`:
 * - a source that is a URL (any `scheme://`) or a git repository (`git@…`, `user@host:path`,
 *   `*.git`);
 * - a source that holds a variable (`$X`, `${X}`): the daemon expands build args and ENV there, and
 *   a value may be a URL. COPY does the same for files of the build context, and a RUN step can
 *   download (RUN steps run in a container, on the environment's terms, not in the daemon).
 *
 * Formatting must not dodge the check, and the builders disagree on details, so the Dockerfile is
 * read the way each of them reads it, and refused when any of those readings has such an ADD:
 * - the escape character: `\`, and `` ` `` as well when a leading comment sets it (`# escape=`);
 * - line endings: one trailing CR dropped (the legacy builder) or all of them (BuildKit);
 * - continuations: `\` at the end of a line (after spaces and tabs) joins the next line, except,
 *   in newer parsers, when it is itself escaped (`\\`); comment lines and blank lines inside a
 *   continuation are skipped; the joined line may split a keyword or a URL anywhere;
 * - heredocs (BuildKit): content lines are not instructions, so a heredoc can end a continuation
 *   early; when the file has a `<`, every line is also read as the possible start of an
 *   instruction;
 * - the instruction: any case, leading whitespace as Go trims it (NBSP included), Go's lowercasing
 *   (`İ` is `i`); flags (`--chown=… --chmod=… --checksum=… --link --keep-git-dir`) split the way
 *   the daemon splits them, byte by byte (it takes the bytes 0x85 and 0xA0 of a UTF-8 character
 *   for spaces), with `\` and the file's escape character; arguments in shell form (split on
 *   spaces and tabs) and in JSON form (`["a", "b"]`, the first JSON value, escapes decoded);
 * - quotes and escape characters inside a source are removed before it is looked at, as the
 *   daemon's word expansion does (`h"ttp"://…` is a URL); and any `://` anywhere in an ADD
 *   instruction is refused, whatever the split.
 *
 * Not covered here (see the report of the change): images the daemon pulls for `FROM`,
 * `COPY --from` and a service's `image` (registries may be IP literals, and 127.0.0.0/8 is an
 * insecure registry by default), and ONBUILD triggers of a base image pulled from a registry
 * (checkable with {@link checkOnBuildTriggers} once the image is there).
 *
 * Use: read the Dockerfile's bytes (the same bytes that go to the builder) and call
 * {@link checkDockerfile} or {@link assertDockerfileAllowed} before each build.
 */

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { BuildPlan } from '../plan/plan.js';

/** The verdict on one Dockerfile: a refusal names the (1-based) line where the instruction starts. */
export type DockerfileCheck = { ok: true } | { ok: false; line: number; message: string };

/** A Dockerfile refused by {@link assertDockerfileAllowed}; `message` names the file and the line. */
export class DockerfilePolicyError extends Error {
  override name = 'DockerfilePolicyError';

  constructor(
    /** 1-based line of the refused instruction. */
    readonly line: number,
    /** Why, without the file and line. */
    readonly reason: string,
    file = 'Dockerfile',
  ) {
    super(`${file} line ${line}: ${reason}`);
  }
}

/** Larger Dockerfiles are refused: real ones are a few kilobytes, and the check runs on the event loop. */
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;

/**
 * Checks a Dockerfile before it is built (see the module's comment for what is refused and how it
 * is read). Pass the file's bytes when you have them: the check then sees exactly what the daemon
 * sees, invalid UTF-8 included. Linear in the size of the file; never throws.
 *
 * `buildArgs` are the build's args: a refused variable that is one of them is shown with its value.
 */
export function checkDockerfile(
  text: string | Uint8Array,
  buildArgs: Readonly<Record<string, string>> = {},
): DockerfileCheck {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : Buffer.from(text);
  if (bytes.length > MAX_DOCKERFILE_BYTES) {
    return {
      ok: false,
      line: 1,
      message: `the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes (${bytes.length} bytes)`,
    };
  }
  // One character per byte: positions and whitespace are the Go parser's, byte for byte.
  const source = bytes.toString('latin1');
  const lines = source.split('\n');
  if (lines[0]!.startsWith(BOM)) lines[0] = lines[0]!.slice(BOM.length);

  const checker = new Checker(buildArgs);
  const readings = readingsOf(lines, escapeCharacters(lines));
  // Readings mostly agree: each distinct instruction is checked once.
  const verdicts = new Map<string, string | null>();
  let checked = 0;
  const check = (text: string, line: number, escapeChar: string): Problem | null => {
    const key = `${escapeChar}${text}`;
    let message = verdicts.get(key);
    if (message === undefined) {
      message = checker.instruction(text, escapeChar);
      verdicts.set(key, message);
      checked += text.length;
    }
    return message === null ? null : { line, message };
  };

  let found: Problem | null = null;
  const keep = (problem: Problem | null) => {
    if (problem && (!found || problem.line < found.line)) found = problem;
  };
  for (const reading of readings) {
    const parse = new LineReader(lines, reading);
    for (let i = 0; i < lines.length; ) {
      const instruction = parse.read(i, Number.POSITIVE_INFINITY);
      i = instruction.next;
      if (instruction.text === null) continue;
      const problem = check(instruction.text, instruction.line, reading.escapeChar);
      if (problem) {
        keep(problem);
        break;
      }
    }
  }
  // A heredoc (`RUN <<EOF`) makes its content lines not instructions, which can end a
  // continuation where the readings above go on: read every line as a possible start as well.
  // Most lines are told apart by their first few bytes; what this may cost in all is bounded.
  if (source.includes('<')) {
    for (const reading of readings) {
      const parse = new LineReader(lines, reading);
      let budget = HEREDOC_WORK_PER_BYTE * source.length + 64 * 1024;
      for (let i = 0; i < lines.length && budget >= 0; i++) {
        const head = parse.read(i, KEYWORD_BYTES);
        budget -= head.work;
        if (head.text === null || !CHECKED_KEYWORDS.has(keyword(head.text))) continue;
        const instruction = parse.read(i, Number.POSITIVE_INFINITY);
        const before = checked;
        const problem = instruction.text === null ? null : check(instruction.text, i + 1, reading.escapeChar);
        // Checking a byte costs several times reading it.
        budget -= instruction.work + CHECK_COST * (checked - before);
        if (problem) {
          keep(problem);
          break;
        }
      }
      if (budget < 0) {
        keep({
          line: 1,
          message: 'the Dockerfile has too many line continuations around heredocs to be checked',
        });
        break;
      }
    }
  }
  const problem = found as Problem | null;
  return problem ? { ok: false, line: problem.line, message: problem.message } : { ok: true };
}

/**
 * {@link checkDockerfile}, throwing a {@link DockerfilePolicyError} (whose message starts with
 * `<file> line <n>:`) on a refusal.
 */
export function assertDockerfileAllowed(
  text: string | Uint8Array,
  buildArgs: Readonly<Record<string, string>> = {},
  file = 'Dockerfile',
): void {
  const verdict = checkDockerfile(text, buildArgs);
  if (!verdict.ok) throw new DockerfilePolicyError(verdict.line, verdict.message, file);
}

/**
 * Checks the ONBUILD triggers of an image (`Config.OnBuild` of an image inspect), which run in a
 * build that starts `FROM` it: `ADD http://…` there is fetched by the daemon like one written in
 * the Dockerfile. A refusal's `line` is the 1-based index of the trigger.
 */
export function checkOnBuildTriggers(triggers: readonly string[]): DockerfileCheck {
  for (let i = 0; i < triggers.length; i++) {
    const verdict = checkDockerfile(triggers[i]!);
    if (!verdict.ok) return { ok: false, line: i + 1, message: `ONBUILD trigger: ${verdict.message}` };
  }
  return { ok: true };
}

// --- Reading lines into instructions ---------------------------------------------------------

interface Problem {
  line: number;
  message: string;
}

/** One way of reading a Dockerfile (see the module's comment). */
interface Reading {
  escapeChar: string;
  /** `one`: one trailing CR is dropped (Go's bufio.ScanLines); `all`: every trailing CR and LF. */
  cr: 'one' | 'all';
  /** `any`: an escape character at the end always continues; `unescaped`: not when preceded by another. */
  continuation: 'any' | 'unescaped';
}

const BOM = '\xef\xbb\xbf';
/** Enough of a joined line to tell its keyword (`onbuild` and a space), whitespace before it not counted. */
const KEYWORD_BYTES = 16;
/**
 * What reading every line as a possible start may cost, per byte of the file and reading, before
 * giving up: a real Dockerfile costs one to two (each line, and a few bytes of the next).
 */
const HEREDOC_WORK_PER_BYTE = 4;
/** What checking a byte of an instruction costs, in bytes read. */
const CHECK_COST = 8;
const CHECKED_KEYWORDS = new Set(['add', 'onbuild']);

/** The escape characters the file may have: `\`, and `` ` `` when a leading comment sets it. */
function escapeCharacters(lines: readonly string[]): string[] {
  const escapes = ['\\'];
  // Parser directives are leading comments; readers differ on which ones count (a `# syntax=`
  // line before, a blank line between), so every leading comment is looked at.
  for (const line of lines) {
    const trimmed = trimLeftGo(line);
    if (trimmed === '' || trimmed === '\r') continue;
    if (!trimmed.startsWith('#')) break;
    // Broader than any parser's directive syntax: an extra reading costs nothing but time.
    if (/escape/i.test(trimmed) && trimmed.includes('`') && !escapes.includes('`')) escapes.push('`');
  }
  return escapes;
}

/**
 * The readings to try: for each escape character, the line-ending and continuation variants that
 * can differ on this file (only a line ending in two CRs, or in an escaped escape, tells them apart).
 */
function readingsOf(lines: readonly string[], escapes: readonly string[]): Reading[] {
  const trimmed = lines.map((line) => {
    let end = line.length;
    while (end > 0 && line[end - 1] === '\r') end--;
    const crs = line.length - end;
    while (end > 0 && (line[end - 1] === ' ' || line[end - 1] === '\t')) end--;
    return { crs, last: line.slice(Math.max(0, end - 2), end) };
  });
  const manyCrs = trimmed.some((t) => t.crs >= 2);
  const out: Reading[] = [];
  for (const escapeChar of escapes) {
    const doubled = trimmed.some((t) => t.last === escapeChar + escapeChar);
    for (const cr of manyCrs ? (['one', 'all'] as const) : (['one'] as const))
      for (const continuation of doubled ? (['any', 'unescaped'] as const) : (['unescaped'] as const))
        out.push({ escapeChar, cr, continuation });
  }
  return out;
}

/** Reads instructions out of physical lines, the way one {@link Reading} does. */
class LineReader {
  constructor(
    private readonly lines: readonly string[],
    private readonly reading: Reading,
  ) {}

  /**
   * The instruction that starts at line `start` (0-based), joined, or a null text when that line
   * is a comment or blank; `next` is the line after it. Stops joining once the text is longer than
   * `limit` (to tell the keyword). `work` is what was looked at: bytes, and a minimum per line.
   */
  read(start: number, limit: number): { text: string | null; line: number; next: number; work: number } {
    const { lines } = this;
    const first = lines[start]!;
    let work = lineCost(first);
    const firstEnd = this.contentEnd(first);
    const from = spaceEnd(first, 0, firstEnd);
    const none = { text: null, line: start + 1, next: start + 1, work };
    if (from < firstEnd && first[from] === '#') return none;
    const cut = this.continuation(first, from, firstEnd);
    let continues = cut >= 0;
    let text = first.slice(from, continues ? cut : firstEnd);
    if (!continues && text === '') return none;
    let i = start + 1;
    // Whitespace before the keyword (from continued lines) does not count towards `limit`.
    let lead = 0;
    let allSpace = text === '';
    while (continues && i < lines.length && text.length - lead <= limit) {
      const line = lines[i++]!;
      work += lineCost(line);
      const end = this.contentEnd(line);
      const left = spaceEnd(line, 0, end);
      if (left === end || line[left] === '#') continue;
      const partCut = this.continuation(line, 0, end);
      continues = partCut >= 0;
      const partEnd = continues ? partCut : end;
      text += line.slice(0, partEnd);
      if (allSpace) {
        const spaces = spaceEnd(line, 0, partEnd);
        lead += spaces;
        allSpace = spaces === partEnd;
      }
    }
    return { text, line: start + 1, next: i, work };
  }

  /** Where a line's content ends: before the CRs the reading drops. */
  private contentEnd(line: string): number {
    let end = line.length;
    if (this.reading.cr === 'one') return end > 0 && line[end - 1] === '\r' ? end - 1 : end;
    while (end > 0 && line[end - 1] === '\r') end--;
    return end;
  }

  /**
   * Where the text of `line[from, end)` ends when it ends in a continuation (an escape character,
   * then spaces and tabs), or -1.
   */
  private continuation(line: string, from: number, end: number): number {
    const { escapeChar, continuation } = this.reading;
    while (end > from && (line[end - 1] === ' ' || line[end - 1] === '\t')) end--;
    if (end === from || line[end - 1] !== escapeChar) return -1;
    if (continuation === 'unescaped' && end - 2 >= from && line[end - 2] === escapeChar) return -1;
    return end - 1;
  }
}

/** What looking at a line costs: its bytes, and at least as much as a short line. */
function lineCost(line: string): number {
  return Math.max(line.length, 16) + 1;
}

// --- Checking instructions ----------------------------------------------------------------------

/** Nesting of ONBUILD looked into (`ONBUILD ONBUILD` is refused by the daemon anyway). */
const MAX_ONBUILD_DEPTH = 2;

class Checker {
  constructor(private readonly buildArgs: Readonly<Record<string, string>>) {}

  /** Why one joined instruction (bytes as latin1) is refused, or null. */
  instruction(text: string, escapeChar: string, depth = 0): string | null {
    const { command, rest } = splitCommand(text);
    const name = keyword(command);
    if (name === 'onbuild' && depth < MAX_ONBUILD_DEPTH) {
      for (const flagEscape of flagEscapes(escapeChar)) {
        const inner = trimSpaceGo(extractBuilderFlags(rest, flagEscape));
        const problem = this.instruction(inner, escapeChar, depth + 1);
        if (problem) return `ONBUILD ${problem}`;
      }
      return null;
    }
    return name === 'add' ? this.add(rest, escapeChar) : null;
  }

  private add(rest: string, escapeChar: string): string | null {
    // Whatever the split into flags and arguments, a URL anywhere is refused.
    const url = urlIn(unquote(utf8(rest)));
    if (url !== null) return urlMessage(url);
    for (const flagEscape of flagEscapes(escapeChar)) {
      // Decoding commutes with the split: it is on ASCII bytes, which are never inside a character.
      const args = utf8(trimSpaceGo(extractBuilderFlags(rest, flagEscape)));
      const lists: string[][] = [];
      // In shell form, only a variable or a git repository is left to find, if anything can be.
      if (args.includes('$') || args.includes('@') || /\.git/i.test(args))
        lists.push(args.split(/[\t\v\f\r ]+/));
      if (args.startsWith('[')) {
        const json = firstJsonStrings(args);
        if (json) lists.push(json);
      }
      for (const list of lists) {
        // The last argument is the destination; with fewer than two the daemon refuses the ADD.
        for (let i = 0; i < list.length - 1; i++) {
          const problem = this.source(list[i]!);
          if (problem) return problem;
        }
      }
    }
    return null;
  }

  private source(source: string): string | null {
    const plain = unquote(source);
    if (plain.includes('://')) return urlMessage(source);
    if (/^git@/i.test(plain) || isScpLike(plain) || /\.git\/?(?:[#?][\s\S]*)?$/i.test(plain)) {
      return (
        `ADD of a git repository (${shown(source)}) is refused: the builder would clone it itself, ` +
        "from the server's own network. Clone it in a RUN step (RUN steps run in a container), " +
        'or COPY it from the build context'
      );
    }
    if (source.includes('$')) {
      const name = /\$\{?([A-Za-z_][A-Za-z0-9_]*)/.exec(source)?.[1];
      const value =
        name !== undefined && Object.hasOwn(this.buildArgs, name)
          ? ` (build arg ${name} is ${shown(this.buildArgs[name]!)})`
          : '';
      return (
        `ADD source ${shown(source)} uses a variable${value}, which is refused: the Docker daemon ` +
        'expands build args and ENV there, and fetches a value that is a URL itself, from the ' +
        "server's own network. Use COPY for files of the build context, or download in a RUN step " +
        '(RUN steps run in a container, not in the daemon)'
      );
    }
    return null;
  }
}

/** The whitespace-delimited word around the first `://` of `text`, or null (linear: no backtracking). */
function urlIn(text: string): string | null {
  const at = text.indexOf('://');
  if (at < 0) return null;
  let start = at;
  while (start > 0 && !/\s/.test(text[start - 1]!)) start--;
  let end = at + 3;
  while (end < text.length && !/\s/.test(text[end]!)) end++;
  return text.slice(start, end);
}

/** `user@host:path` (an scp-like git URL, which BuildKit clones over SSH): an `@`, then a `:`, before any `/`. */
function isScpLike(text: string): boolean {
  const slash = text.indexOf('/');
  const head = slash < 0 ? text : text.slice(0, slash);
  const at = head.indexOf('@');
  return at >= 0 && head.indexOf(':', at) > at;
}

function urlMessage(source: string): string {
  return (
    `ADD of a URL (${shown(source)}) is refused: the Docker daemon would fetch it itself, from the ` +
    "server's own network, which reaches what builds must not. Download it in a RUN step " +
    '(e.g. RUN curl -fsSLo /dest URL: RUN steps run in a container), or COPY it from the build context'
  );
}

/** A source as shown in a message: quoted, and shortened. */
function shown(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 99)}…` : text);
}

/** Quotes and escape characters removed, as the daemon's word expansion removes them (and more). */
function unquote(text: string): string {
  return text.replace(/["'`\\]/g, '');
}

/** The escape characters flags are split with: `\` (older parsers), and the file's (newer ones). */
function flagEscapes(escapeChar: string): string[] {
  return escapeChar === '\\' ? ['\\'] : ['\\', escapeChar];
}

/** Latin1 (one char per byte) to the UTF-8 text it encodes. */
function utf8(bytes: string): string {
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/**
 * The instruction's name as the daemon compares it: Go's lowercasing, which maps `İ` (U+0130) to
 * `i` and the Kelvin sign to `k`, of the first word of a joined line.
 */
function keyword(command: string): string {
  const word = splitCommand(command).command;
  return utf8(word)
    .replace(/\u0130/g, 'i')
    .replace(/\u212a/g, 'k')
    .toLowerCase();
}

/** The first word of a line, and what follows the whitespace after it (Go: `reWhitespace.Split(TrimSpace(line), 2)`). */
function splitCommand(text: string): { command: string; rest: string } {
  const line = trimSpaceGo(text);
  const space = /[\t\v\f\r ]+/.exec(line);
  if (!space) return { command: line, rest: '' };
  return { command: line.slice(0, space.index), rest: line.slice(space.index + space[0].length) };
}

/**
 * The part of an instruction's arguments after its `--flags`, as the daemon's
 * `extractBuilderFlags` finds it: byte by byte, where the bytes 0x09-0x0D, 0x20, 0x85 and 0xA0 are
 * spaces; quotes group; the escape character takes the next byte; a word `--` ends the flags.
 */
function extractBuilderFlags(line: string, escapeChar: string): string {
  const isSpace = (c: string) => c === ' ' || (c >= '\t' && c <= '\r') || c === '\x85' || c === '\xa0';
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  for (let pos = 0; pos < line.length; pos++) {
    let ch = line[pos]!;
    if (phase === 'spaces') {
      if (isSpace(ch)) continue;
      if (ch !== '-' || line[pos + 1] !== '-') return line.slice(pos);
      phase = 'word';
      word = '';
    }
    if (phase === 'word') {
      if (isSpace(ch)) {
        phase = 'spaces';
        if (word === '--') return line.slice(pos);
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        phase = 'quote';
        continue;
      }
      if (ch === escapeChar) {
        if (pos + 1 === line.length) continue;
        ch = line[++pos]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === escapeChar) {
      if (pos + 1 === line.length) {
        phase = 'word';
        continue;
      }
      ch = line[++pos]!;
    }
    word += ch;
  }
  return '';
}

/**
 * The strings of the JSON array at the start of `text`, ignoring what follows it (as Go's
 * `json.Decoder` does), or null when it is not an array of strings.
 */
function firstJsonStrings(text: string): string[] | null {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') {
      depth--;
      if (depth === 0) {
        try {
          const value: unknown = JSON.parse(text.slice(0, i + 1));
          return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : null;
        } catch {
          return null;
        }
      }
    }
  }
  return null;
}

/** Length in bytes of the whitespace character (Go's `unicode.IsSpace`, UTF-8) at `i`, or 0. */
function spaceAt(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c === 0x20 || (c >= 0x09 && c <= 0x0d)) return 1;
  const d = s.charCodeAt(i + 1);
  const e = s.charCodeAt(i + 2);
  if (c === 0xc2) return d === 0x85 || d === 0xa0 ? 2 : 0;
  if (c === 0xe1) return d === 0x9a && e === 0x80 ? 3 : 0;
  if (c === 0xe2) {
    if (d === 0x80 && ((e >= 0x80 && e <= 0x8a) || e === 0xa8 || e === 0xa9 || e === 0xaf)) return 3;
    return d === 0x81 && e === 0x9f ? 3 : 0;
  }
  if (c === 0xe3) return d === 0x80 && e === 0x80 ? 3 : 0;
  return 0;
}

/** Where the whitespace (Go's `unicode.IsSpace`) at the start of `s[from, end)` ends. */
function spaceEnd(s: string, from: number, end: number): number {
  let i = from;
  for (let n = spaceAt(s, i); n > 0 && i + n <= end; n = spaceAt(s, i)) i += n;
  return i;
}

/** Go's `TrimLeftFunc(s, unicode.IsSpace)` on UTF-8 bytes held as latin1. */
function trimLeftGo(s: string): string {
  return s.slice(spaceEnd(s, 0, s.length));
}

/** Go's `TrimSpace` on UTF-8 bytes held as latin1. */
function trimSpaceGo(s: string): string {
  const left = trimLeftGo(s);
  let end = left.length;
  for (;;) {
    const space = [1, 2, 3].find((n) => end - n >= 0 && spaceAt(left, end - n) === n);
    if (space === undefined) break;
    end -= space;
  }
  return left.slice(0, end);
}

/**
 * Reads the Dockerfile of `build` (a regular file of at most {@link MAX_DOCKERFILE_BYTES}, links
 * not followed out of the context by the caller's own checks) and asserts it is allowed.
 * @throws {DockerfilePolicyError} for a refused instruction, or for a file that cannot be checked.
 */
export async function assertBuildAllowed(build: BuildPlan): Promise<void> {
  const file = path.join(build.context, build.dockerfile);
  const info = await stat(file).catch(() => null);
  if (!info?.isFile())
    throw new DockerfilePolicyError(1, 'not found, or not a regular file', build.dockerfile);
  if (info.size > MAX_DOCKERFILE_BYTES) {
    throw new DockerfilePolicyError(1, `larger than ${MAX_DOCKERFILE_BYTES} bytes`, build.dockerfile);
  }
  assertDockerfileAllowed(await readFile(file), build.args, build.dockerfile);
}
