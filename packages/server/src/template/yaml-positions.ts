/**
 * YAML parsing that remembers where every value came from, so each issue can name a line and a
 * column. The document is turned into plain JS by our own walk (not `toJS()`) so that each string
 * scalar can be interpolated where it stands, and each path gets the offsets of its key and value.
 *
 * Both steps are bounded (see `limits.ts`), because templates are hostile input:
 * - parsing drives `yaml`'s lexer, parser and composer token by token, and stops past a number of
 *   tokens, of syntax errors, or of nesting levels: `yaml` itself takes time quadratic in the
 *   nesting depth and overflows the stack a few hundred levels deep;
 * - aliases are resolved once, in one pass over the document (`Alias.resolve` scans the whole
 *   document on each call), and duplicate keys are found with a set in the same pass;
 * - the walk expands aliases and merge keys, so it counts every node and character it produces
 *   and every level it descends: a billion-laughs document stops at the alias that goes over.
 */
import {
  type Alias,
  Composer,
  type CST,
  type Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  Lexer,
  LineCounter,
  type Node,
  type Pair,
  Parser,
  type Scalar,
  type YAMLMap,
} from 'yaml';
import { excerpt, TEMPLATE_LIMITS, TemplateLimitError } from './limits.js';

/** A location inside the template: map keys and sequence indices, outermost first. */
export type Path = readonly (string | number)[];

export interface Position {
  line: number;
  column: number;
}

/** How long one segment of a formatted path may be: a hostile 1 MiB key must not be copied into every issue. */
const MAX_SEGMENT_LENGTH = 100;

/** `services.web.ports[0]`, `services.web.environment["A.B"]`; the root is the empty string. */
export function formatPath(path: Path): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (segment.length <= MAX_SEGMENT_LENGTH && /^[A-Za-z_][\w-]*$/.test(segment))
      out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(excerpt(segment, MAX_SEGMENT_LENGTH))}]`;
  }
  return out;
}

/** Offsets of one path's key (-1 for an index) and value, and of its children. */
interface PositionEntry {
  key: number;
  value: number;
  /** Children by index, for a sequence. */
  items?: PositionEntry[];
  /** Children by key, for a map. */
  fields?: Map<string, PositionEntry>;
}

/** Offsets of the key and value of every path of a parsed document, turned into line/column on demand. */
export class SourcePositions {
  private readonly root: PositionEntry = { key: -1, value: 0 };

  constructor(private readonly lineCounter: LineCounter) {}

  /** The entry of the root (the document's value), where {@link child} starts. */
  rootEntry(value: number): PositionEntry {
    this.root.value = value;
    return this.root;
  }

  /**
   * Records a child of an entry, in constant time: the walk records every node it produces, so
   * this is kept small (an array for indices, a map only for keys).
   */
  child(parent: PositionEntry, segment: string | number, value: number, key = -1): PositionEntry {
    const entry: PositionEntry = { key, value };
    if (typeof segment === 'number') {
      parent.items ??= [];
      parent.items[segment] = entry;
    } else {
      parent.fields ??= new Map();
      parent.fields.set(segment, entry);
    }
    return entry;
  }

  /** 1-based line and column of a source offset. */
  fromOffset(offset: number): Position {
    const { line, col } = this.lineCounter.linePos(offset);
    return { line, column: col };
  }

  /**
   * Where `path` is: its key (for `at: 'key'`) or its value. A path absent from the source (a
   * missing key) resolves to its nearest ancestor that exists, which is the map that lacks it.
   */
  locate(path: Path, at: 'key' | 'value' = 'value'): Position {
    let entry = this.root;
    let depth = 0;
    for (const segment of path) {
      const next = typeof segment === 'number' ? entry.items?.[segment] : entry.fields?.get(segment);
      if (!next) break;
      entry = next;
      depth++;
    }
    const offset = depth === path.length && at === 'key' && entry.key >= 0 ? entry.key : entry.value;
    return this.fromOffset(offset);
  }
}

/** A syntax problem reported by the YAML parser, or a limit the document went past. */
export interface YamlProblem {
  message: string;
  position: Position;
}

/** A YAML document parsed within the limits, ready for {@link walkYaml} (which may run more than once). */
export interface YamlDocument {
  /** Null when the text could not be parsed; `errors` then says why. */
  doc: Document.Parsed | null;
  lineCounter: LineCounter;
  errors: YamlProblem[];
  warnings: YamlProblem[];
  /** What each alias of `doc` refers to: the last node before it with that anchor. */
  aliases: Map<Alias, Node | undefined>;
}

export interface ParsedYaml {
  /** Plain JS: maps are objects, sequences arrays, scalars as YAML 1.2 core reads them. */
  value: unknown;
  /**
   * Characters of the keys and strings of `value`, aliases expanded, each string counted at the
   * larger of its length before and after `onString`: what `TEMPLATE_LIMITS.maxChars` bounds.
   */
  chars: number;
  positions: SourcePositions;
  errors: YamlProblem[];
  warnings: YamlProblem[];
}

/** Called for every string scalar that is a value (never a key); returns the string to keep. */
export type StringHook = (value: string, node: Scalar, path: Path, positions: SourcePositions) => string;

/**
 * Maps whose keys are user data (variable names, build args), where an `x-` key is kept. In every
 * other map an `x-` key is an extension field: ignored, as the Compose spec says, and therefore
 * neither walked nor interpolated. `x-mayfly` is ours and always kept. The second-to-last segment
 * check keeps a service *named* `environment` from counting as an environment map.
 */
const USER_DATA_MAPS = new Set([
  'environment',
  'env',
  'args',
  'labels',
  'annotations',
  'sysctls',
  'driver_opts',
]);
const NAME_MAPS = new Set(['services', 'jobs', 'volumes', 'networks']);

function isExtensionKey(key: string, mapPath: Path): boolean {
  if (!key.startsWith('x-') || key === 'x-mayfly') return false;
  const last = mapPath.at(-1);
  const userData =
    typeof last === 'string' && USER_DATA_MAPS.has(last) && !NAME_MAPS.has(String(mapPath.at(-2)));
  return !userData;
}

/**
 * Entries the `yaml` parser keeps on its stack besides one per nesting level: the document, a
 * scalar being read, a key waiting for its value. The walk checks the exact depth afterwards.
 */
const PARSER_STACK_SLACK = 4;

/** The first offset of what `yaml`'s composer reports an error about (an offset, a range or a token). */
function errorOffset(source: unknown): number {
  if (typeof source === 'number') return source;
  if (Array.isArray(source)) return Number(source[0]) || 0;
  return Number((source as { offset?: unknown } | null)?.offset) || 0;
}

type ComposerErrorHandler = (source: unknown, code: string, message: string, warning?: boolean) => void;

/**
 * Parses one YAML document within {@link TEMPLATE_LIMITS}: never throws for any input, never
 * takes more than time linear in the input.
 */
export function parseYamlDocument(content: string): YamlDocument {
  const limits = TEMPLATE_LIMITS;
  const lineCounter = new LineCounter();
  const positions = new SourcePositions(lineCounter);
  const errors: YamlProblem[] = [];
  const warnings: YamlProblem[] = [];
  const aliases = new Map<Alias, Node | undefined>();
  const done = (doc: Document.Parsed | null): YamlDocument => ({
    doc,
    lineCounter,
    errors,
    warnings,
    aliases,
  });
  const problem = (offset: number, message: string): YamlProblem => ({
    message,
    position: positions.fromOffset(offset),
  });
  const report = (offset: number, message: string, warning = false) => {
    if (warning) {
      // Warnings never stop parsing; past the limit they are only dropped.
      if (warnings.length < limits.maxIssues) warnings.push(problem(offset, message));
      return;
    }
    if (errors.length >= limits.maxYamlErrors) {
      throw new TemplateLimitError(
        `more than ${limits.maxYamlErrors} YAML syntax errors: fix the first ones`,
        [],
        positions.fromOffset(offset),
      );
    }
    errors.push(problem(offset, message));
  };

  const lexer = new Lexer();
  const parser = new Parser(lineCounter.addNewLine);
  // Duplicate keys are found below with a set: `yaml` compares each key with every earlier one.
  const composer = new Composer({ merge: true, uniqueKeys: false });
  // The composer reports through this internal callback; ours keeps the messages short and the
  // count bounded: `yaml` builds an Error, stack trace included, for each of possibly 300 000.
  // Should a later `yaml` lose it, errors are still reported, only not stopped early (the fuzz
  // test's "megabyte of syntax errors" case then fails).
  const internals = composer as unknown as { onError?: ComposerErrorHandler };
  if (typeof internals.onError === 'function') {
    internals.onError = (source, _code, message, warning) => report(errorOffset(source), message, warning);
  }

  let documents = 0;
  /** What to do with a token of the parser: pass it on, drop it (an error, now reported), or stop reading. */
  const accept = (token: CST.Token): 'pass' | 'drop' | 'stop' => {
    if (token.type === 'error') {
      const source = token.source ? `: ${JSON.stringify(excerpt(token.source))}` : '';
      report(token.offset, `${token.message}${source}`);
      return 'drop';
    }
    if (token.type === 'document' && ++documents > 1) {
      report(token.offset, 'more than one YAML document (a second "---"): a template is one document');
      return 'stop';
    }
    return 'pass';
  };
  // What `Parser.parse` does, one lexeme at a time so that limits are checked as it goes. Plain
  // loops, no generator per lexeme: this runs for every token of the template.
  function* tokens(): Generator<CST.Token> {
    lineCounter.addNewLine(0);
    let count = 0;
    for (const lexeme of lexer.lex(content)) {
      if (++count > limits.maxYamlTokens) {
        throw new TemplateLimitError(
          `the template has more than ${limits.maxYamlTokens} YAML tokens`,
          [],
          positions.fromOffset(parser.offset),
        );
      }
      for (const token of parser.next(lexeme)) {
        const verdict = accept(token);
        if (verdict === 'stop') return;
        if (verdict === 'pass') yield token;
      }
      if (parser.stack.length > limits.maxDepth + PARSER_STACK_SLACK) {
        throw new TemplateLimitError(
          `the template nests collections more than ${limits.maxDepth} levels deep`,
          [],
          positions.fromOffset(parser.offset),
        );
      }
    }
    for (const token of parser.end()) {
      const verdict = accept(token);
      if (verdict === 'stop') return;
      if (verdict === 'pass') yield token;
    }
  }

  let doc: Document.Parsed | null = null;
  const saved = Error.stackTraceLimit;
  try {
    // `yaml` creates Error objects for problems it then hands to us; their stacks are never read.
    Error.stackTraceLimit = 0;
    for (const composed of composer.compose(tokens(), true, content.length)) doc ??= composed;
  } catch (error) {
    if (error instanceof TemplateLimitError) {
      errors.push({ message: error.message, position: error.position ?? { line: 1, column: 1 } });
    } else if (error instanceof RangeError) {
      // A stack overflow the limits above did not foresee: still an answer, not a crash.
      errors.push({
        message: 'the template is too large or nests too deeply to be read',
        position: { line: 1, column: 1 },
      });
    } else {
      throw error;
    }
    return done(null);
  } finally {
    Error.stackTraceLimit = saved;
  }
  if (!doc) return done(null);
  try {
    for (const e of doc.errors) report(e.pos[0], e.message);
    for (const w of doc.warnings) report(w.pos[0], w.message, true);
    indexDocument(doc, aliases, report);
  } catch (error) {
    if (!(error instanceof TemplateLimitError)) throw error;
    errors.push({ message: error.message, position: error.position ?? { line: 1, column: 1 } });
  }
  return done(errors.length > 0 ? null : doc);
}

/**
 * One pass over every node of `doc`, in document order and without recursion: resolves each
 * alias to the last node before it with its anchor (what `Alias.resolve` does, in linear time
 * overall) and reports keys that appear twice in a map (what `yaml`'s `uniqueKeys` did).
 */
function indexDocument(
  doc: Document.Parsed,
  aliases: Map<Alias, Node | undefined>,
  report: (offset: number, message: string) => void,
): void {
  const anchored = new Map<string, Node>();
  const stack: unknown[] = [doc.contents];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isAlias(node)) {
      aliases.set(node, anchored.get(node.source));
      continue;
    }
    if (isPair(node)) {
      stack.push(node.value, node.key);
      continue;
    }
    if (!isScalar(node) && !isMap(node) && !isSeq(node)) continue;
    if (node.anchor) anchored.set(node.anchor, node);
    if (isSeq(node)) {
      for (let i = node.items.length - 1; i >= 0; i--) stack.push(node.items[i]);
    } else if (isMap(node)) {
      const seen = new Set<unknown>();
      for (const pair of node.items) {
        if (!isScalar(pair.key) || isMergePair(pair)) continue;
        if (seen.has(pair.key.value)) {
          report(pair.key.range?.[0] ?? 0, 'Map keys must be unique');
        }
        seen.add(pair.key.value);
      }
      for (let i = node.items.length - 1; i >= 0; i--) stack.push(node.items[i]);
    }
  }
}

/** Parses one YAML document; `onString` sees every string value with its node and path. */
export function parseYaml(content: string, onString: StringHook): ParsedYaml {
  return walkYaml(parseYamlDocument(content), onString);
}

/**
 * Turns a parsed document into plain JS, expanding aliases and merge keys, within
 * {@link TEMPLATE_LIMITS}; `onString` sees every string value with its node and path. Each call
 * records positions anew, so the same document can be walked again with another hook.
 */
/**
 * Nodes and characters of several walks that make one template (a Compose file, its override files
 * and the files its services extend): the limits hold for all of them together, not per file.
 */
export interface WalkTotals {
  nodes: number;
  chars: number;
}

export function walkYaml(
  parsed: YamlDocument,
  onString: StringHook,
  totals: WalkTotals = { nodes: 0, chars: 0 },
): ParsedYaml {
  const { doc } = parsed;
  const warnings = [...parsed.warnings];
  // Positions are recorded per walk: each walk produces its own values.
  const positions = new SourcePositions(parsed.lineCounter);
  if (!doc) return { value: undefined, chars: 0, positions, errors: [...parsed.errors], warnings };
  const walker = new Walker(parsed.aliases, positions, onString, totals);
  const root = positions.rootEntry(rangeStart(doc.contents) ?? 0);
  try {
    const value = doc.contents == null ? null : walker.walk(doc.contents, [], root, 0);
    return { value, chars: walker.chars, positions, errors: walker.errors, warnings };
  } catch (error) {
    if (error instanceof TemplateLimitError) {
      walker.errors.push({
        message: error.message,
        position: error.position ?? positions.locate(error.path),
      });
    } else if (error instanceof RangeError) {
      walker.errors.push({
        message: 'the template is too large or nests too deeply to be read',
        position: { line: 1, column: 1 },
      });
    } else {
      throw error;
    }
    return { value: undefined, chars: walker.chars, positions, errors: walker.errors, warnings };
  }
}

/** The state of one walk: what it has produced so far, and the aliases it is inside of. */
class Walker {
  readonly errors: YamlProblem[] = [];
  /** Characters this walk produced (see `TEMPLATE_LIMITS.maxChars`; {@link WalkTotals} holds all walks'). */
  chars = 0;
  /** Aliases being expanded, outermost first. */
  private readonly chain: Alias[] = [];
  /** Collections being walked, to catch an alias to one of its own ancestors. */
  private readonly active = new Set<Node>();

  constructor(
    private readonly aliases: Map<Alias, Node | undefined>,
    private readonly positions: SourcePositions,
    private readonly onString: StringHook,
    private readonly totals: WalkTotals,
  ) {}

  walk(node: unknown, path: Path, entry: PositionEntry, depth: number): unknown {
    this.count(1, 0, node);
    if (isAlias(node)) {
      const target = this.enter(node, path);
      if (target === null) return null;
      try {
        return this.walk(target, path, entry, depth);
      } finally {
        this.chain.pop();
      }
    }
    if (isScalar(node)) {
      const v = node.value;
      if (typeof v === 'string') {
        // The larger of the string before and after interpolation: the first bounds the work of
        // interpolating (an alias may repeat a long string), the second what is kept.
        this.count(0, v.length, node);
        const kept = this.onString(v, node, path, this.positions);
        if (kept.length > v.length) this.count(0, kept.length - v.length, node);
        return kept;
      }
      if (typeof v === 'bigint') return Number(v);
      // `0o440` stays octal in writing: a file mode read as the number 288 would be taken for the
      // octal digits "288" (Compose's `mode: 0440` is YAML 1.1 octal, which 1.2 reads as 440).
      if (typeof v === 'number' && node.format === 'OCT') return `0o${v.toString(8)}`;
      return typeof v === 'symbol' ? String(v.description) : v;
    }
    if (!isSeq(node) && !isMap(node)) return null;
    if (depth >= TEMPLATE_LIMITS.maxDepth) {
      this.fail(
        (outer) => `alias *${outer} nests the document more than ${TEMPLATE_LIMITS.maxDepth} levels deep`,
        `the template nests collections more than ${TEMPLATE_LIMITS.maxDepth} levels deep`,
        node,
      );
    }
    this.active.add(node);
    try {
      if (isSeq(node)) {
        const { items } = node;
        const out: unknown[] = new Array(items.length);
        for (let i = 0; i < items.length; i++) {
          const item = items[i];
          const child = this.positions.child(entry, i, rangeStart(item) ?? entry.value);
          out[i] = this.walk(item, [...path, i], child, depth + 1);
        }
        return out;
      }
      return this.walkMap(node, path, entry, depth);
    } finally {
      this.active.delete(node);
    }
  }

  private walkMap(node: YAMLMap, path: Path, entry: PositionEntry, depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const explicit = new Set<string>();
    for (const pair of node.items) if (!isMergePair(pair)) explicit.add(this.keyText(pair, path));
    const assign = (pair: Pair) => {
      const key = this.keyText(pair, path);
      this.count(1, key.length, pair.key ?? node);
      if (isExtensionKey(key, path) || Object.hasOwn(out, key)) return;
      const keyOffset = rangeStart(pair.key);
      const child = this.positions.child(entry, key, rangeStart(pair.value) ?? keyOffset ?? 0, keyOffset);
      Object.defineProperty(out, key, {
        value: pair.value == null ? null : this.walk(pair.value, [...path, key], child, depth + 1),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    };
    for (const pair of node.items) {
      if (isMergePair(pair)) this.merge(pair, path, (inherited) => !explicit.has(inherited), assign);
      else assign(pair);
    }
    return out;
  }

  /**
   * `<<: *base` or `<<: [*a, *b]`: the pairs of each source, earlier sources first, each source's
   * own keys before what it merges in turn. `keep` leaves out keys the merging map writes itself.
   */
  private merge(pair: Pair, path: Path, keep: (key: string) => boolean, assign: (pair: Pair) => void): void {
    const sources = isSeq(pair.value) ? pair.value.items : [pair.value];
    for (const source of sources) {
      this.count(1, 0, source);
      const resolved = isAlias(source) ? this.enter(source, path) : source;
      try {
        if (!isMap(resolved) || this.active.has(resolved)) continue;
        this.active.add(resolved);
        try {
          // The source's own keys win over what it merges itself: they come first.
          for (const inherited of resolved.items) {
            if (isMergePair(inherited)) continue;
            if (keep(this.keyText(inherited, path))) assign(inherited);
            else this.count(1, 0, inherited.key ?? resolved);
          }
          for (const inherited of resolved.items) {
            if (isMergePair(inherited)) this.merge(inherited, path, keep, assign);
          }
        } finally {
          this.active.delete(resolved);
        }
      } finally {
        if (isAlias(source) && resolved !== null) this.chain.pop();
      }
    }
  }

  /** Starts expanding `alias`: its target, or null (with an error) when it cannot be expanded. */
  private enter(alias: Alias, path: Path): Node | null {
    const target = this.aliases.get(alias);
    if (!target) {
      this.errors.push({
        message: `alias *${excerpt(alias.source)} has no anchor before it`,
        position: this.at(alias, path),
      });
      return null;
    }
    if (this.active.has(target)) {
      this.errors.push({
        message: `alias *${excerpt(alias.source)} refers to itself`,
        position: this.at(alias, path),
      });
      return null;
    }
    if (this.chain.length >= TEMPLATE_LIMITS.maxAliasDepth) {
      throw new TemplateLimitError(
        `alias *${excerpt(alias.source)} is nested inside more than ${TEMPLATE_LIMITS.maxAliasDepth} other aliases`,
        path,
        this.at(alias, path),
      );
    }
    this.chain.push(alias);
    return target;
  }

  /** Adds what a node produces to the totals; throws past a limit. */
  private count(nodes: number, chars: number, node: unknown): void {
    this.chars += chars;
    this.totals.nodes += nodes;
    this.totals.chars += chars;
    if (this.totals.nodes > TEMPLATE_LIMITS.maxNodes) {
      this.fail(
        (outer) => `alias *${outer} expands the document past ${TEMPLATE_LIMITS.maxNodes} nodes`,
        `the template has more than ${TEMPLATE_LIMITS.maxNodes} YAML nodes`,
        node,
      );
    }
    if (this.totals.chars > TEMPLATE_LIMITS.maxChars) {
      this.fail(
        (outer) => `alias *${outer} expands the document past ${TEMPLATE_LIMITS.maxChars} characters`,
        `the template's keys and values, once interpolated, are longer than ${TEMPLATE_LIMITS.maxChars} characters`,
        node,
      );
    }
  }

  /** Throws a limit error at the outermost alias being expanded (the one that was written where the document grew), or at `node`. */
  private fail(viaAlias: (source: string) => string, direct: string, node: unknown): never {
    const outer = this.chain[0];
    if (outer) throw new TemplateLimitError(viaAlias(excerpt(outer.source)), [], this.at(outer, []));
    throw new TemplateLimitError(direct, [], this.positions.fromOffset(rangeStart(node) ?? 0));
  }

  private at(node: Node, path: Path): Position {
    const offset = rangeStart(node);
    return offset === undefined ? this.positions.locate(path) : this.positions.fromOffset(offset);
  }

  /** A key as text; a key that is an alias is its anchor's value. Lists and maps are not keys. */
  private keyText(pair: Pair, path: Path): string {
    let key: unknown = pair.key;
    if (isAlias(key)) key = this.aliases.get(key);
    if (key == null) return '';
    if (isScalar(key)) {
      const v = key.value;
      return typeof v === 'symbol' ? String(v.description) : String(v ?? '');
    }
    throw new TemplateLimitError(
      'a key must be a plain value, not a list or a map',
      path,
      this.positions.fromOffset(rangeStart(pair.key) ?? 0),
    );
  }
}

function isMergePair(pair: Pair): boolean {
  return isScalar(pair.key) && typeof pair.key.value === 'symbol';
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range ? range[0] : undefined;
}
