// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about literal ${VAR} references
/**
 * Hostile templates: whatever the content, `loadTemplate` returns a Template or throws a
 * TemplateError whose issues have positions inside the document; never another exception, never
 * a stack overflow, within a CPU-time budget per call and a bounded heap.
 *
 * Seeded: set FUZZ_SEED to replay a run (a failure prints the seed and the case). Budgets are CPU
 * time of this process, not wall time, so that other test files sharing the machine's two cores
 * do not make them flaky; they are generous (about five times what the slowest case measures on
 * this machine): 2 s for a template of about 1 MiB, 250 ms for small ones.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type LoadOptions,
  loadTemplate,
  plan,
  TEMPLATE_LIMITS,
  TEMPLATE_MAX_BYTES,
  type Template,
  TemplateError,
} from './index.js';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MiB = 1024 * 1024;
/**
 * CPU budget of one call on a large template (16 KiB to 1 MiB: dense YAML of that size reaches
 * the token or node limits, which take up to about half a second to reach), and on a small one.
 */
const BIG_BUDGET_MS = 2_000;
const SMALL_BUDGET_MS = 250;
/** How far the heap may grow above where it was when the run started. */
const HEAP_BUDGET_BYTES = 300 * MiB;

const here = dirname(fileURLToPath(import.meta.url));

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

// --- Structure-aware generation -------------------------------------------------------------

type Gen =
  | { kind: 'scalar'; text: string; anchor?: string }
  | { kind: 'alias'; name: string }
  | { kind: 'seq'; items: Gen[]; flow: boolean; anchor?: string }
  | { kind: 'map'; pairs: [string, Gen][]; flow: boolean; anchor?: string };

const SERVICE_KEYS = [
  'image',
  'build',
  'command',
  'entrypoint',
  'environment',
  'env',
  'env_file',
  'envFile',
  'ports',
  'expose',
  'depends_on',
  'dependsOn',
  'healthcheck',
  'volumes',
  'restart',
  'deploy',
  'cpus',
  'mem_limit',
  'pids_limit',
  'scale',
  'replicas',
  'working_dir',
  'workingDir',
  'user',
  'x-mayfly',
  'resources',
  'privileged',
  'networks',
  'labels',
  'imgae',
  '<<',
  'context',
  'dockerfile',
  'args',
  'target',
  'test',
  'interval',
  'condition',
  'source',
  'type',
  'read_only',
  'http',
  'job',
  'memory',
] as const;
const TOP_KEYS = [
  'services',
  'jobs',
  'volumes',
  'lifecycle',
  'isolation',
  'x-mayfly',
  'x-base',
  'name',
  'version',
];
const WORDS = [
  'nginx',
  'web',
  'api',
  'db',
  'postgres:16',
  '8080',
  '80',
  '"3000:3000"',
  '1-100',
  '"53/udp"',
  './web',
  './api',
  '.',
  '..',
  '../..',
  '/etc/passwd',
  '/var/run/docker.sock',
  '~/.ssh',
  'ok.env',
  'big.env',
  'fifo.env',
  'zero.env',
  'dir.env',
  'link',
  './link',
  'Dockerfile',
  'Dockerfile.dev',
  '2h',
  '30m',
  '10s',
  '500ms',
  '256Mi',
  '1g',
  '0.5',
  'true',
  'false',
  'null',
  '~',
  '-1',
  '0',
  'service_healthy',
  'service_completed_successfully',
  'healthy',
  'started',
  'always',
  'no',
  'on-failure:3',
  'gvisor',
  'pr-closed',
  '[]',
  '{}',
  '"a: b"',
  "'it''s'",
  '"\\x24{X}"',
  '"\\u0024{X}"',
  'data:/var/lib/data',
  './conf:/etc/app:ro',
  '/cache',
  'name:/x:rw,z',
];
const REFERENCES = [
  '${TAG}',
  '${TAG:-latest}',
  '$TAG',
  '$$',
  '${',
  '}',
  '${A:-${B:-${C}}}',
  '${A:?needed}',
  '${A-}',
  '${1BAD}',
  '${A B}',
  '${ENV_URL}',
  '${BIG}',
  '$',
  '${A:+x}',
  '${A:-',
  '$${A}',
];

/** A random scalar, as YAML text. */
function scalar(r: Random): string {
  const roll = r.int(10);
  if (roll < 4) return r.pick(WORDS);
  if (roll < 6)
    return `"${r.pick(WORDS).replace(/"/g, '')}${r.pick(REFERENCES)}${r.chance(0.3) ? '\\n\\t\\"' : ''}"`;
  if (roll < 7) return String(r.int(100_000) - 50);
  if (roll < 8) return `'${r.pick(REFERENCES)}''x'`;
  if (roll < 9) return `${r.pick(['web', 'x', 'a'])}${r.pick(REFERENCES)}`;
  return r.pick(['|', '>', '|-', '>+']);
}

function generate(r: Random, depth: number, anchors: string[], keys: readonly string[]): Gen {
  const anchor = r.chance(0.15) ? `a${anchors.length}` : undefined;
  if (anchors.length > 0 && r.chance(0.1)) return { kind: 'alias', name: r.pick(anchors) };
  const roll = depth > 4 ? 0 : r.int(10);
  let node: Gen;
  if (roll < 4) {
    node = { kind: 'scalar', text: scalar(r) };
  } else if (roll < 6) {
    const items = Array.from({ length: r.int(5) }, () => generate(r, depth + 1, anchors, SERVICE_KEYS));
    node = { kind: 'seq', items, flow: r.chance(0.4) };
  } else {
    const pairs: [string, Gen][] = [];
    for (let i = r.int(6); i > 0; i--) {
      const key = r.chance(0.9) ? r.pick(keys) : r.pick([...WORDS, ...REFERENCES]);
      if (key === '<<' && anchors.length > 0) {
        const sources = Array.from(
          { length: 1 + r.int(3) },
          (): Gen => ({ kind: 'alias', name: r.pick(anchors) }),
        );
        pairs.push([key, sources.length === 1 ? sources[0]! : { kind: 'seq', items: sources, flow: true }]);
      } else {
        pairs.push([key, generate(r, depth + 1, anchors, SERVICE_KEYS)]);
      }
    }
    node = { kind: 'map', pairs, flow: r.chance(0.3) };
  }
  if (anchor) {
    node.anchor = anchor;
    anchors.push(anchor);
  }
  return node;
}

function emit(node: Gen, indent: number, flow: boolean): string {
  const anchor = node.kind !== 'alias' && node.anchor ? `&${node.anchor} ` : '';
  if (node.kind === 'alias') return `*${node.name}`;
  if (node.kind === 'scalar') return `${anchor}${node.text}`;
  const pad = ' '.repeat(indent);
  if (node.kind === 'seq') {
    if (flow || node.flow || node.items.length === 0)
      return `${anchor}[${node.items.map((item) => emit(item, 0, true)).join(', ')}]`;
    return `${anchor.trimEnd()}${node.items.map((item) => `\n${pad}- ${emit(item, indent + 2, false).trimStart()}`).join('')}`;
  }
  if (flow || node.flow || node.pairs.length === 0)
    return `${anchor}{${node.pairs.map(([k, v]) => `${k}: ${emit(v, 0, true)}`).join(', ')}}`;
  return `${anchor.trimEnd()}${node.pairs.map(([k, v]) => `\n${pad}${k}: ${emit(v, indent + 2, false)}`).join('')}`;
}

/** A document shaped like a template: mostly a map of services, with anchors, aliases and merges. */
function randomTemplate(r: Random): string {
  const anchors: string[] = [];
  const services: [string, Gen][] = Array.from({ length: 1 + r.int(4) }, (_, i) => [
    r.chance(0.9) ? `s${i}` : r.pick(['Web_1', 'a--b', 'x-skip', '<<', 'environment']),
    generate(r, 1, anchors, SERVICE_KEYS),
  ]);
  const top: [string, Gen][] = [['services', { kind: 'map', pairs: services, flow: false }]];
  for (let i = r.int(3); i > 0; i--) top.push([r.pick(TOP_KEYS), generate(r, 1, anchors, SERVICE_KEYS)]);
  if (r.chance(0.5)) top.reverse();
  return `${emit({ kind: 'map', pairs: top, flow: false }, 0, false).trimStart()}\n`;
}

/** A template that is usually valid: real keys with real values, anchors and merge keys where they fit. */
function plausibleTemplate(r: Random): string {
  const mayfly = r.chance(0.4);
  const names = Array.from({ length: 1 + r.int(4) }, (_, i) => `s${i}`);
  const lines: string[] = [];
  const base = r.chance(0.5);
  if (base) {
    lines.push('x-base: &base', `  image: ${r.pick(['app:${TAG:-1}', 'nginx', 'postgres:16'])}`);
    lines.push(`  ${mayfly ? 'env' : 'environment'}: &vars { LOG: info, MODE: "\${MODE:-base}" }`);
  }
  lines.push(mayfly ? 'services:' : 'volumes:\n  data: {}\nservices:');
  const jobs: string[] = [];
  for (const name of names) {
    const isJob = mayfly && name !== 's0' && r.chance(0.3);
    const out = isJob ? jobs : lines;
    out.push(`  ${name}:`);
    if (base && r.chance(0.6)) out.push(r.pick(['    <<: *base', '    <<: [*base]']));
    else if (r.chance(0.7)) out.push(`    image: ${r.pick(['nginx', 'x:${TAG}', 'x:${TAG:-1}', '"a:b"'])}`);
    else
      out.push(
        `    build: ${r.pick(['.', './web', '{ context: ./api, dockerfile: Dockerfile.dev, args: { A: "1" } }', './link'])}`,
      );
    const other = names.filter((n) => n !== name);
    const options = mayfly
      ? [
          `    command: ${r.pick(['["node", "x"]', "sh -c 'echo ${TAG:-hi}'", '"a \\"b\\""'])}`,
          `    env: ${r.pick(['{ A: "1", B: ${B} }', '{ A: "${A:-x}", TAG: }', base ? '*vars' : '{}'])}`,
          `    envFile: ${r.pick(['ok.env', '[ok.env, ok.env]', 'missing.env'])}`,
          `    dependsOn: ${other.length > 0 ? r.pick([`[${r.pick(other)}]`, `{ ${r.pick(other)}: started }`]) : '[]'}`,
          `    resources: { cpu: ${r.pick(['0.5', '"1"', '2'])}, memory: ${r.pick(['256Mi', '1g', '12Q'])}, pids: 100 }`,
          `    volumes: [${r.pick(['"/cache"', '"./web:/w:ro"', '{ source: ./api, target: /a }'])}]`,
          ...(isJob
            ? []
            : [
                `    ports: [${r.pick(['8080', '{ port: 53, protocol: udp, http: false }', '"${PORT:-3000}"'])}]`,
              ]),
          `    healthcheck: { command: ${r.pick(['curl -f localhost', '[CMD, true]'])}, interval: ${r.pick(['2s', '500ms', '0s'])} }`,
        ]
      : [
          `    command: ${r.pick(['["node", "x"]', "sh -c 'echo ${TAG:-hi}'", 'null'])}`,
          `    environment: ${r.pick(['[A=1, TAG, "B=${B:-b}"]', '{ A: "1", B: }', base ? '*vars' : '{}'])}`,
          `    env_file: ${r.pick(['ok.env', '[ok.env, { path: missing.env, required: false }]', 'big.env'])}`,
          `    ports: [${r.pick(['"8080"', '"127.0.0.1:80:8080/tcp"', '"3000-3002"', '{ target: 80 }'])}]`,
          `    expose: [${r.pick(['"9000"', '"1-100/udp"'])}]`,
          `    depends_on: ${other.length > 0 ? r.pick([`[${r.pick(other)}]`, `{ ${r.pick(other)}: { condition: ${r.pick(['service_started', 'service_healthy', 'service_completed_successfully'])} } }`]) : '[]'}`,
          `    volumes: [${r.pick(['"data:/d"', '"./web:/w:ro"', '"/anon"', '{ type: bind, source: ./api, target: /a }'])}]`,
          `    healthcheck: { test: ${r.pick(['"curl -f x"', '[CMD, "true"]', '[NONE]'])}, interval: ${r.pick(['5s', '1m30s'])} }`,
          `    deploy: { resources: { limits: { cpus: "0.5", memory: 256M } }, replicas: ${r.pick(['1', '2'])} }`,
          `    x-mayfly: { http: ${r.pick(['8080', '80'])}, public: ${r.pick(['true', 'false'])} }`,
          `    restart: ${r.pick(['always', 'on-failure:3', '"no"'])}`,
        ];
    for (const option of options) if (r.chance(0.35)) out.push(option);
  }
  if (jobs.length > 0) lines.push('jobs:', ...jobs);
  if (r.chance(0.3))
    lines.push(
      mayfly ? 'lifecycle: { ttl: 2h, destroyOn: [pr-closed] }' : 'x-mayfly: { ttl: 1h, isolation: runc }',
    );
  return `${lines.join('\n')}\n`;
}

// --- Mutations of real templates --------------------------------------------------------------

/** Templates from `testdata/` and the string literals of `load.test.ts` that look like YAML. */
function corpus(): string[] {
  const files = ['shop/compose.yaml', 'shop/mayfly.yaml'].map((f) =>
    readFileSync(join(here, 'testdata', f), 'utf8'),
  );
  const source = readFileSync(join(here, 'load.test.ts'), 'utf8');
  const literals: string[] = [];
  for (const [, body = ''] of source.matchAll(/'((?:[^'\\\n]|\\.)*)'/g)) {
    if (!body.includes(':')) continue;
    try {
      literals.push(JSON.parse(`"${body.replace(/\\'/g, "'").replace(/"/g, '\\"')}"`) as string);
    } catch {
      // Not a plain string literal after all: skip it.
    }
  }
  // Templates written as arrays of lines: `['services:', '  web:', ...].join('\n')`.
  for (const [, lines = ''] of source.matchAll(/\[\s*((?:'(?:[^'\\\n]|\\.)*',?\s*)+)\]\.join\('\\n'\)/g)) {
    literals.push(
      [...lines.matchAll(/'((?:[^'\\\n]|\\.)*)'/g)].map((m) => m[1]!.replace(/\\'/g, "'")).join('\n'),
    );
  }
  return [...files, ...literals.filter((l) => l.length > 10 && /services|jobs/.test(l))];
}

const INSERTS = [
  '[',
  ']',
  '{',
  '}',
  '*a0 ',
  '&a0 ',
  '<<: *a0\n',
  '${',
  '}',
  '- ',
  '\n  ',
  '"',
  "'",
  '|\n',
  '>-\n',
  '#',
  ': ',
  '\t',
  '\n---\n',
  '%YAML 1.2\n---\n',
  '!!str ',
  '!custom ',
  '? ',
  ',',
  '\\',
  '\u0000',
  '\uFEFF',
  '\r\n',
  '${A:-${B}}',
  '$$',
  '...\n',
  '&x [*x]',
  '\n\u00a0',
  '\uD800',
];

function mutate(text: string, r: Random): string {
  let out = text;
  for (let n = 1 + r.int(4); n > 0; n--) {
    const at = r.int(out.length + 1);
    const to = Math.min(out.length, at + r.int(40));
    switch (r.int(7)) {
      case 0:
        out = out.slice(0, at) + out.slice(to);
        break;
      case 1:
        out = out.slice(0, at) + out.slice(at, to).repeat(1 + r.int(20)) + out.slice(at);
        break;
      case 2:
        out = out.slice(0, at) + r.pick(INSERTS) + out.slice(at);
        break;
      case 3:
        out = out.slice(0, at);
        break;
      case 4:
        out = out.slice(0, at) + String.fromCharCode(r.int(128)) + out.slice(at + 1);
        break;
      case 5: {
        const lines = out.split('\n');
        const i = r.int(lines.length);
        lines.splice(i, 0, ...Array<string>(1 + r.int(5)).fill(lines[i] ?? ''));
        out = lines.join('\n');
        break;
      }
      default:
        out = out.replace(/^( *)/gm, (pad) => (r.chance(0.1) ? pad + ' '.repeat(r.int(3)) : pad));
    }
  }
  return out;
}

// --- The harness ----------------------------------------------------------------------------------

let workdir = '';
let baselineHeap = 0;

/** A folder with what templates name: a Dockerfile, env files good and hostile, links, a FIFO. */
function makeWorkdir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mayfly-fuzz-'));
  mkdirSync(join(dir, 'web'));
  mkdirSync(join(dir, 'api'));
  mkdirSync(join(dir, 'dir.env'));
  for (const d of ['.', 'web', 'api']) writeFileSync(join(dir, d, 'Dockerfile'), 'FROM scratch\n');
  writeFileSync(join(dir, 'api', 'Dockerfile.dev'), 'FROM scratch\n');
  writeFileSync(join(dir, 'ok.env'), 'A=1\nB="two ${TAG:-x}"\nexport C=3 # comment\nD\n');
  writeFileSync(join(dir, 'big.env'), `A=${'x'.repeat(TEMPLATE_LIMITS.maxEnvFileBytes)}\n`);
  symlinkSync('/', join(dir, 'link'));
  symlinkSync('/dev/zero', join(dir, 'zero.env'));
  execFileSync('mkfifo', [join(dir, 'fifo.env')]);
  return dir;
}

interface Outcome {
  template?: Template;
  error?: TemplateError;
  cpuMs: number;
}

/**
 * Loads `content` and checks the contract: a Template (which `plan` accepts) or a TemplateError
 * with positioned issues, within `budgetMs` of CPU time and the heap budget.
 */
function check(label: string, content: string, options: LoadOptions = {}, budgetMs?: number): Outcome {
  const budget = budgetMs ?? (content.length >= 16 * 1024 ? BIG_BUDGET_MS : SMALL_BUDGET_MS);
  const lines = content.split('\n').length;
  const where = () =>
    `FUZZ_SEED=${SEED}, case ${label}, ${content.length} chars: ${JSON.stringify(content.slice(0, 300))}`;
  const cpu = process.cpuUsage();
  const outcome: Outcome = { cpuMs: 0 };
  try {
    outcome.template = loadTemplate(
      { filename: options.root ? 'x.yml' : 'compose.yaml', content, dir: workdir },
      options,
    );
    plan(outcome.template, { envId: 'e1', envName: 'fuzz', project: 'p' });
  } catch (error) {
    if (!(error instanceof TemplateError)) {
      throw new Error(`${where()}\nthrew ${error instanceof Error ? error.stack : String(error)}`);
    }
    outcome.error = error;
    if (error.issues.length === 0) throw new Error(`${where()}\nTemplateError without issues`);
    for (const issue of error.issues) {
      const lineOk =
        issue.line === null || (Number.isInteger(issue.line) && issue.line >= 1 && issue.line <= lines + 1);
      const columnOk = issue.column === null || (Number.isInteger(issue.column) && issue.column >= 1);
      if (!lineOk || !columnOk || typeof issue.message !== 'string' || issue.message === '') {
        throw new Error(`${where()}\nbad issue ${JSON.stringify(issue)}`);
      }
    }
  }
  const used = process.cpuUsage(cpu);
  outcome.cpuMs = (used.user + used.system) / 1000;
  if (outcome.cpuMs > budget)
    throw new Error(`${where()}\ntook ${outcome.cpuMs.toFixed(0)} ms of CPU (budget ${budget} ms)`);
  const heap = process.memoryUsage().heapUsed - baselineHeap;
  if (heap > HEAP_BUDGET_BYTES) throw new Error(`${where()}\nheap grew by ${(heap / MiB).toFixed(0)} MiB`);
  return outcome;
}

const messagesOf = (outcome: Outcome) => outcome.error?.issues.map((i) => i.message) ?? [];

const services = (value: string) =>
  `services:\n  web:\n    image: nginx\n    environment:\n      BIG: ${value}\n`;

beforeAll(() => {
  workdir = makeWorkdir();
  // Warm up: the first call compiles the loader, which is not what the budgets are about.
  for (let i = 0; i < 20; i++)
    check('warm-up', readFileSync(join(here, 'testdata', 'shop', 'compose.yaml'), 'utf8'), {}, 5_000);
  baselineHeap = process.memoryUsage().heapUsed;
});

afterAll(() => {
  rmSync(workdir, { recursive: true, force: true });
});

describe(`fuzzing loadTemplate (FUZZ_SEED=${SEED})`, () => {
  test('random templates: generated with anchors, aliases and merge keys', () => {
    const r = new Random(SEED);
    const seen = { template: 0, error: 0 };
    for (let i = 0; i < 800; i++) {
      const roll = r.int(10);
      // Half plausible templates (which reach validation and normalization), some of them
      // mutated, and the rest any YAML made of template words.
      const content =
        roll < 5 ? plausibleTemplate(r) : roll < 7 ? mutate(plausibleTemplate(r), r) : randomTemplate(r);
      const inputs: Record<string, string> = r.chance(0.5)
        ? { TAG: 'v1', A: '', B: 'b', MODE: 'm', BIG: 'x'.repeat(r.int(100_000)) }
        : {};
      const options: LoadOptions = {
        inputs,
        ...(r.chance(0.3) ? { serviceUrl: (s: string) => `http://${s}.localhost` } : {}),
        ...(r.chance(0.5) ? { root: workdir } : {}),
        onHostPath: () => {},
      };
      const outcome = check(`generated #${i}`, content, options);
      seen[outcome.template ? 'template' : 'error']++;
    }
    // Generation that only ever produced errors would not test much of the loader.
    expect(seen.template).toBeGreaterThan(20);
    expect(seen.error).toBeGreaterThan(20);
  });

  test('mutated and truncated real templates', () => {
    const r = new Random(SEED ^ 0x5bd1e995);
    const templates = corpus();
    expect(templates.length).toBeGreaterThan(30);
    for (let i = 0; i < 1000; i++) {
      const content = mutate(r.pick(templates), r);
      check(`mutated #${i}`, content, {
        inputs: { TAG: 'v', COMMIT_SHA: 'abc' },
        root: r.chance(0.5) ? workdir : undefined,
      });
    }
  });
});

describe('alias bombs', () => {
  /** Levels of `count` aliases each to the level before; `wrap` writes one level. */
  const bomb = (levels: number, count: number, wrap: (name: string, prev: string) => string) => {
    const lines = [`a0: &a0 [${Array(count).fill('lol').join(',')}]`];
    for (let i = 1; i < levels; i++) lines.push(wrap(`a${i}`, `a${i - 1}`));
    return `${lines.join('\n')}\nservices: {web: {image: x, command: *a${levels - 1}}}\n`;
  };
  const aliasLine = /^alias \*a\d+ expands the document past (\d+) (nodes|characters)$/;

  test('billion laughs from the issue: 10 levels of 10, about 500 bytes, refused in well under a second', () => {
    const content = bomb(
      10,
      10,
      (name, prev) => `${name}: &${name} [${Array(10).fill(`*${prev}`).join(',')}]`,
    );
    expect(content.length).toBeLessThan(600);
    const start = performance.now();
    const outcome = check('billion laughs', content, {}, 500);
    expect(performance.now() - start).toBeLessThan(1_000);
    const issue = outcome.error!.issues[0]!;
    expect(issue.message).toMatch(aliasLine);
    expect(issue.message).toContain(String(TEMPLATE_LIMITS.maxNodes));
    // The line of an alias of the bomb, at the column of its `*`.
    expect(content.split('\n')[issue.line! - 1]!.slice(issue.column! - 1)).toMatch(/^\*a\d+/);
  });

  test.each([
    [
      'maps',
      (name: string, prev: string) =>
        `${name}: &${name} {${Array.from({ length: 10 }, (_, i) => `k${i}: *${prev}`).join(', ')}}`,
    ],
    [
      'merge keys',
      (name: string, prev: string) =>
        `${name}: &${name} {<<: [*${prev}, *${prev}], k${name}: [*${prev}, *${prev}, *${prev}]}`,
    ],
    [
      'mixed',
      (name: string, prev: string) =>
        `${name}: &${name} [{<<: *${prev}}, *${prev}, [*${prev}, *${prev}], {k: *${prev}, j: [*${prev}]}]`,
    ],
  ])('%s', (_, wrap) => {
    const prelude = 'm0: &m0 {k: v}\n';
    const content = prelude + bomb(20, 10, wrap).replace('a0: &a0 [', 'a0: &a0 [*m0,');
    const outcome = check('bomb', content, {}, 500);
    expect(messagesOf(outcome)[0]).toMatch(aliasLine);
  });

  test('a wide anchor referenced many times, and a long string referenced many times', () => {
    const wide = `x: &x [${Array(20_000).fill('1').join(',')}]\ny: [${Array(10).fill('*x').join(',')}]\nservices: {}\n`;
    expect(messagesOf(check('wide', wide))[0]).toBe(
      `alias *x expands the document past ${TEMPLATE_LIMITS.maxNodes} nodes`,
    );
    const long = `x: &x "${'y'.repeat(MiB - 1000)}"\ny: [${Array(10).fill('*x').join(',')}]\nservices: {}\n`;
    expect(messagesOf(check('long', long))[0]).toMatch(
      /^alias \*x expands the document past \d+ characters$/,
    );
  });

  test('an alias to its own collection, and one with no anchor', () => {
    expect(messagesOf(check('self', 'a: &a [*a]\nservices: {}\n'))).toContain('alias *a refers to itself');
    expect(messagesOf(check('merge self', 'a: &a {<<: *a}\nservices: {}\n'))).toContain(
      'alias *a refers to itself',
    );
    expect(messagesOf(check('unknown', 'a: *nope\n'))[0]).toMatch(/nope/);
  });

  test('aliases nested deeper than the limit', () => {
    const depth = TEMPLATE_LIMITS.maxAliasDepth + 5;
    const lines = [
      'a0: &a0 x',
      ...Array.from({ length: depth }, (_, i) => `a${i + 1}: &a${i + 1} {k: *a${i}}`),
    ];
    const outcome = check('alias depth', `${lines.join('\n')}\n`);
    expect(messagesOf(outcome)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^alias \\*a\\d+ is nested inside more than ${TEMPLATE_LIMITS.maxAliasDepth} other aliases$`,
        ),
      ),
    ]);
  });
});

describe('size, nesting and interpolation limits', () => {
  test.each([
    ['plain', (s: string) => s],
    ['double-quoted', (s: string) => `"${s}"`],
    ['single-quoted', (s: string) => `'${s}'`],
    ['block', (s: string) => `|\n        ${s}`],
  ])('a 5 MiB %s scalar is refused by size, before parsing', (_, quote) => {
    const content = services(quote('x'.repeat(5 * MiB)));
    const outcome = check('5 MiB', content, {}, 100);
    expect(outcome.error!.issues).toEqual([
      expect.objectContaining({
        line: 1,
        column: 1,
        message: expect.stringContaining(`larger than ${TEMPLATE_MAX_BYTES} bytes`),
      }),
    ]);
  });

  test('the size limit counts UTF-8 bytes, not characters', () => {
    const content = services(`"${'é'.repeat(TEMPLATE_MAX_BYTES / 2)}"`);
    expect(content.length).toBeLessThan(TEMPLATE_MAX_BYTES);
    expect(messagesOf(check('utf-8', content, {}, 100))[0]).toMatch(/larger than/);
  });

  test.each([
    ['plain', (s: string) => s, 'x y', 'x y'],
    ['double-quoted', (s: string) => `"${s}"`, 'x\ty', 'x\ty'],
    ['single-quoted', (s: string) => `'${s}'`, "x''y", "x'y"],
    ['block', (s: string) => `|-\n        ${s}`, 'x y', 'x y'],
    ['folded', (s: string) => `>-\n        ${s}`, 'x y', 'x y'],
    ['interpolated', (s: string) => `"${s}"`, '${TAG:-x}$$', 'x$'],
  ])('a %s scalar just under 1 MiB loads', (_, quote, unit, value) => {
    const count = Math.floor((TEMPLATE_MAX_BYTES - 200) / unit.length);
    const content = services(quote(unit.repeat(count)));
    expect(Buffer.byteLength(content)).toBeLessThanOrEqual(TEMPLATE_MAX_BYTES);
    expect(Buffer.byteLength(content)).toBeGreaterThan(TEMPLATE_MAX_BYTES - 250);
    const outcome = check('1 MiB', content, { inputs: {} });
    expect(outcome.error?.issues).toBeUndefined();
    expect(outcome.template!.workloads[0]!.env.BIG).toBe(value.repeat(count));
  });

  test.each([
    ['flow sequences', '['.repeat(100_000) + ']'.repeat(100_000)],
    ['flow maps', `${'{a: '.repeat(100_000)}1${'}'.repeat(100_000)}`],
    ['unclosed brackets', '['.repeat(TEMPLATE_MAX_BYTES - 10)],
    ['compact sequences', `${'- '.repeat(100_000)}x`],
    ['explicit keys', `${'? '.repeat(100_000)}x`],
    ['indented maps', Array.from({ length: 1400 }, (_, i) => `${' '.repeat(i)}k:`).join('\n')],
  ])('%s nested 100 000 deep', (_, content) => {
    const outcome = check('deep', content);
    expect(messagesOf(outcome)[0]).toMatch(new RegExp(`more than ${TEMPLATE_LIMITS.maxDepth} levels deep`));
  });

  test('nesting up to the limit loads, one more level does not', () => {
    const nested = (levels: number) =>
      `services: {web: {image: x, x-mayfly: {}, labels: {}}}\nx-deep: ${'['.repeat(levels - 1)}${']'.repeat(levels - 1)}\nisolation: ${'['.repeat(levels - 1)}1${']'.repeat(levels - 1)}\n`;
    // `isolation` is walked (and then wrong), `x-deep` is not: both are parsed.
    expect(messagesOf(check('at limit', nested(TEMPLATE_LIMITS.maxDepth)))).not.toContainEqual(
      expect.stringMatching(/deep/),
    );
    expect(messagesOf(check('past limit', nested(TEMPLATE_LIMITS.maxDepth + 1)))).toEqual([
      `the template nests collections more than ${TEMPLATE_LIMITS.maxDepth} levels deep`,
    ]);
  });

  test('aliases that each nest a little nest the document past the limit', () => {
    const lines = ['a0: &a0 x'];
    for (let i = 1; i <= 40; i++) lines.push(`a${i}: &a${i} [[[*a${i - 1}]]]`);
    expect(messagesOf(check('alias nesting', `${lines.join('\n')}\n`))).toEqual([
      expect.stringMatching(
        new RegExp(`^alias \\*a\\d+ nests the document more than ${TEMPLATE_LIMITS.maxDepth} levels deep$`),
      ),
    ]);
  });

  test.each([
    ['100 000 "${"', `"${'${'.repeat(100_000)}"`, /unterminated/],
    ['an unterminated reference', `"\${TAG${'x'.repeat(500_000)}"`, /unterminated/],
    [
      'defaults nested 100 000 deep',
      `"${'${A:-'.repeat(100_000)}x${'}'.repeat(100_000)}"`,
      /nested more than \d+ deep/,
    ],
    ['100 000 unset references', `"${'${NOPE}'.repeat(100_000)}"`, null],
    ['100 000 invalid references', `"${'${1X}'.repeat(100_000)}"`, /invalid variable reference/],
    ['100 000 references to a large input', `"${'${BIG}'.repeat(100_000)}"`, /longer than \d+ characters/],
    ['a million dollars', `"${'$'.repeat(TEMPLATE_MAX_BYTES - 200)}"`, null],
  ])('%s', (_, value, expected) => {
    const outcome = check('interpolation', services(value), { inputs: { A: '', BIG: 'x'.repeat(10_000) } });
    if (expected === null) expect(outcome.error).toBeUndefined();
    else expect(messagesOf(outcome)[0]).toMatch(expected);
  });

  test('every issue of a value full of references names its own column', () => {
    const content = services(`"${'ab ${1X} '.repeat(50_000)}"`);
    const issues = check('columns', content).error!.issues;
    const line = content.split('\n')[4]!;
    // The first 20 references, each at its own column, then one issue for the rest.
    expect(issues).toHaveLength(21);
    for (const issue of issues) expect(line.slice(issue.column! - 1).startsWith('${1X}')).toBe(true);
    expect(new Set(issues.map((i) => i.column)).size).toBe(21);
    expect(issues.at(-1)!.message).toBe('more problems in this value are not listed');
  });

  test('issues past the limit are counted, not listed', () => {
    const content = `services:\n  web:\n    image: x\n${Array.from({ length: 300 }, (_, i) => `    k${i}: 1`).join('\n')}\n`;
    const issues = check('many issues', content).error!.issues;
    expect(issues).toHaveLength(TEMPLATE_LIMITS.maxIssues + 1);
    expect(issues.at(-1)).toEqual({
      file: 'compose.yaml',
      line: null,
      column: null,
      path: '',
      message: `${300 - TEMPLATE_LIMITS.maxIssues} more problems not listed`,
    });
  });

  test('dense YAML stops at the token limit', () => {
    const content = '- a\n'.repeat(Math.floor((TEMPLATE_MAX_BYTES - 10) / 4));
    expect(messagesOf(check('tokens', content))[0]).toBe(
      `the template has more than ${TEMPLATE_LIMITS.maxYamlTokens} YAML tokens`,
    );
  });

  test('a megabyte of syntax errors stops at the first ones', () => {
    // Each `&a ` is an anchor on nothing: an error per three bytes, far below the token limit.
    const outcome = check('errors', '&a '.repeat(20_000));
    expect(messagesOf(outcome).at(-1)).toMatch(/^more than \d+ YAML syntax errors/);
  });

  test('more services than the limit are refused as a whole', () => {
    const content = `services:\n${Array.from({ length: TEMPLATE_LIMITS.maxWorkloads + 1 }, (_, i) => `  s${i}: {image: x}`).join('\n')}\n`;
    expect(messagesOf(check('workloads', content))).toEqual([
      `${TEMPLATE_LIMITS.maxWorkloads + 1} services and jobs: a template may have at most ${TEMPLATE_LIMITS.maxWorkloads}`,
    ]);
  });

  test('a long dependency chain, anonymous volumes and port ranges stay linear', () => {
    const n = TEMPLATE_LIMITS.maxWorkloads;
    const chain = `services:\n${Array.from({ length: n }, (_, i) => `  s${i}: {image: x, depends_on: [s${(i + 1) % n}], volumes: [/d, /d, /d], expose: ["1-50"]}`).join('\n')}\n`;
    const outcome = check('chain', chain);
    const shown = Array.from({ length: 10 }, (_, i) => `s${i}`).join(' → ');
    expect(messagesOf(outcome)).toEqual([`dependency cycle: ${shown} → … (${n - 10} more) → s0`]);
    // Without the cycle, the same template loads: 3000 anonymous volumes, 50 000 ports.
    const template = check('no cycle', chain.replace('depends_on: [s0]', 'depends_on: []')).template!;
    expect(template.volumes).toHaveLength(3 * n);
    expect(template.workloads.reduce((sum, w) => sum + w.ports.length, 0)).toBe(50 * n);
  });

  test('env files: one larger than the limit, a FIFO, a device and a folder are refused where they are named', () => {
    const content = `services:\n  web:\n    image: x\n    env_file: [big.env, fifo.env, zero.env, dir.env, ok.env]\n`;
    // No root: a link to /dev/zero would be outside it, and refused for that before being read.
    const outcome = check('env files', content, { inputs: { TAG: 't' } });
    expect(outcome.error!.issues.map((i) => [i.line, i.column, i.message])).toEqual([
      [4, 16, `env file "big.env" is larger than ${TEMPLATE_LIMITS.maxEnvFileBytes} bytes`],
      [4, 25, 'env file "fifo.env" is not a regular file'],
      [4, 35, 'env file "zero.env" is not a regular file'],
      [4, 45, 'env file "dir.env" is not a regular file'],
    ]);
  });

  test('an env file named by every service is read once and charged each time', () => {
    writeFileSync(
      join(workdir, 'wide.env'),
      Array.from({ length: 20_000 }, (_, i) => `K${i}=v${i}`).join('\n'),
    );
    const n = TEMPLATE_LIMITS.maxWorkloads;
    const content = `services:\n${Array.from({ length: n }, (_, i) => `  s${i}: {image: x, env_file: wide.env}`).join('\n')}\n`;
    // 100 services copying a 20 000-line env file: the file is parsed once, the copies counted
    // until the limit; more work than a small template's budget, far less than a big one's.
    expect(messagesOf(check('wide env', content, { root: workdir }, 1_000))[0]).toBe(
      `the template grows past ${TEMPLATE_LIMITS.maxChars} characters once env files, inputs, shared builds and port ranges are copied into each service that uses them`,
    );
  });
});
