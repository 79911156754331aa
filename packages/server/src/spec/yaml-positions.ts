/**
 * YAML parsing that remembers where every value came from, so each issue can name a line and a
 * column. The document is turned into plain JS by our own walk (not `toJS()`) so that each string
 * scalar can be interpolated where it stands, and each path gets the offsets of its key and value.
 */
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  type Pair,
  parseDocument,
  type Scalar,
} from 'yaml';

/** A location inside the template: map keys and sequence indices, outermost first. */
export type Path = readonly (string | number)[];

export interface Position {
  line: number;
  column: number;
}

/** `services.web.ports[0]`, `services.web.environment["A.B"]`; the root is the empty string. */
export function formatPath(path: Path): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z_][\w-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

const pathKey = (path: Path) => JSON.stringify(path);

/** Offsets of the key and value of every path of a parsed document, turned into line/column on demand. */
export class SourcePositions {
  private readonly entries = new Map<string, { key?: number; value: number }>();

  constructor(private readonly lineCounter: LineCounter) {}

  record(path: Path, value: number, key?: number): void {
    this.entries.set(pathKey(path), key === undefined ? { value } : { key, value });
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
    for (let n = path.length; n >= 0; n--) {
      const entry = this.entries.get(pathKey(path.slice(0, n)));
      if (!entry) continue;
      const offset = n === path.length && at === 'key' ? (entry.key ?? entry.value) : entry.value;
      return this.fromOffset(offset);
    }
    return { line: 1, column: 1 };
  }
}

/** A syntax problem reported by the YAML parser. */
export interface YamlProblem {
  message: string;
  position: Position;
}

export interface ParsedYaml {
  /** Plain JS: maps are objects, sequences arrays, scalars as YAML 1.2 core reads them. */
  value: unknown;
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

/** Parses one YAML document; `onString` sees every string value with its node and path. */
export function parseYaml(content: string, onString: StringHook): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(content, { lineCounter, merge: true, prettyErrors: true });
  const positions = new SourcePositions(lineCounter);
  const problem = (e: { message: string; linePos?: [{ line: number; col: number }, ...unknown[]] }) => ({
    // prettyErrors appends " at line L, column C:" and a code frame; the position is kept apart.
    message: e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''),
    position: e.linePos ? { line: e.linePos[0].line, column: e.linePos[0].col } : { line: 1, column: 1 },
  });
  const errors = doc.errors.map(problem);
  const warnings = doc.warnings.map(problem);
  if (errors.length > 0) return { value: undefined, positions, errors, warnings };

  const active = new Set<Node>();

  const walk = (node: unknown, path: Path): unknown => {
    if (isAlias(node)) {
      const target = node.resolve(doc);
      if (!target || active.has(target)) {
        errors.push({ message: `alias *${node.source} refers to itself`, position: positions.locate(path) });
        return null;
      }
      return walk(target, path);
    }
    if (isScalar(node)) {
      const v = node.value;
      if (typeof v === 'string') return onString(v, node, path, positions);
      if (typeof v === 'bigint') return Number(v);
      return typeof v === 'symbol' ? String(v.description) : v;
    }
    if (isSeq(node)) {
      active.add(node);
      const out = node.items.map((item, i) => {
        recordValue([...path, i], item, undefined);
        return walk(item, [...path, i]);
      });
      active.delete(node);
      return out;
    }
    if (isMap(node)) {
      active.add(node);
      const out: Record<string, unknown> = {};
      const explicit = new Set(node.items.filter((p) => !isMergePair(p)).map((p) => keyText(p)));
      const assign = (pair: Pair) => {
        const key = keyText(pair);
        if (isExtensionKey(key, path) || Object.hasOwn(out, key)) return;
        const childPath = [...path, key];
        recordValue(childPath, pair.value, pair.key);
        Object.defineProperty(out, key, {
          value: pair.value == null ? null : walk(pair.value, childPath),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      };
      for (const pair of node.items) {
        if (!isMergePair(pair)) {
          assign(pair);
          continue;
        }
        // `<<: *base` or `<<: [*a, *b]`: keys written in this map win, then earlier sources.
        const sources = isSeq(pair.value) ? pair.value.items : [pair.value];
        for (const source of sources) {
          const resolved = isAlias(source) ? source.resolve(doc) : source;
          if (!isMap(resolved)) continue;
          for (const inherited of resolved.items) {
            if (!explicit.has(keyText(inherited))) assign(inherited);
          }
        }
      }
      active.delete(node);
      return out;
    }
    return null;
  };

  const recordValue = (path: Path, value: unknown, key: unknown) => {
    const keyOffset = rangeStart(key);
    positions.record(path, rangeStart(value) ?? keyOffset ?? 0, keyOffset);
  };

  positions.record([], rangeStart(doc.contents) ?? 0);
  const value = doc.contents == null ? null : walk(doc.contents, []);
  return { value, positions, errors, warnings };
}

function isMergePair(pair: Pair): boolean {
  return isScalar(pair.key) && typeof pair.key.value === 'symbol';
}

function keyText(pair: Pair): string {
  const key = pair.key;
  if (isScalar(key)) return String(key.value ?? '');
  return key == null ? '' : String(key);
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range ? range[0] : undefined;
}
