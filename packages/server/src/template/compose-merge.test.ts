/**
 * Compose's `extends` and override files (`-f a.yaml -f b.yaml`), merged as `docker compose`
 * merges them (https://docs.docker.com/reference/compose-file/merge/), with every issue placed
 * in the file, line and column where its value was written.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose references are the subject
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { WorkloadSpec } from '../plan/plan.js';
import {
  type HostPathRef,
  type LoadOptions,
  loadTemplate,
  MERGE_LIMITS,
  type Template,
  TemplateError,
  type TemplateOverride,
} from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'mayfly-merge-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(path: string, content: string): void {
  mkdirSync(dirname(join(dir, path)), { recursive: true });
  writeFileSync(join(dir, path), content);
}

write('main.env', 'MAIN=1\n');
write('Dockerfile', 'FROM scratch\n');
write('app/Dockerfile', 'FROM scratch\n');
write('common/app/Dockerfile', 'FROM scratch\n');
write('common/base.env', 'BASE=1\n');
mkdirSync(join(dir, 'common/data'), { recursive: true });
write(
  'common/base.yaml',
  [
    'services:',
    '  base:',
    '    build: ./app',
    '    env_file: ./base.env',
    '    volumes: ["./data:/data", /cache]',
    '    environment: { FROM: base, LEVEL: "${LEVEL:-1}" }',
    '  mid:',
    '    extends: base',
    '    environment: [FROM=mid]',
    '  deep:',
    '    extends: { file: deeper/core.yaml, service: core }',
    '    command: [mid]',
    '  broken:',
    '    image: [not, a, string]',
    '',
  ].join('\n'),
);
write('common/deeper/core.env', 'CORE=1\n');
write('common/deeper/core.yaml', 'services:\n  core:\n    image: core\n    env_file: ./core.env\n');
write('common/loop.yaml', 'services:\n  a:\n    extends: { file: ../compose.yaml, service: b }\n');
write('compose.yaml', 'services:\n  b:\n    extends: { file: common/loop.yaml, service: a }\n');
const root = dir;

const load = (content: string, options: LoadOptions = {}, overrides?: TemplateOverride[]): Template =>
  loadTemplate(
    { filename: 'compose.yaml', content, dir, ...(overrides ? { overrides } : {}) },
    { root, ...options },
  );

/** Each issue as `file:line:column message`, or [] when the template loads. */
function issuesOf(content: string, overrides?: TemplateOverride[], options: LoadOptions = {}): string[] {
  try {
    load(content, options, overrides);
  } catch (err) {
    if (err instanceof TemplateError)
      return err.issues.map((i) => `${i.file}:${i.line}:${i.column} ${i.message}`);
    throw err;
  }
  return [];
}

const warningsOf = (template: Template) =>
  template.warnings.map((w) => `${w.file}:${w.line}:${w.column} ${w.message}`);

const service = (template: Template, name: string): WorkloadSpec => {
  const found = template.workloads.find((w) => w.name === name);
  if (!found) throw new Error(`no workload ${name}`);
  return found as WorkloadSpec;
};

/**
 * One service key as Compose merges it: `base` is what is extended (or the first file), `own`
 * what extends it (or the override), and `pick` the part of the result that shows the rule.
 */
interface RuleCase {
  rule: string;
  base: string;
  own: string;
  pick: (w: WorkloadSpec) => unknown;
  expected: unknown;
}

const RULES: RuleCase[] = [
  {
    rule: 'environment: list then map, by name',
    base: 'environment: [A=1, B=2, C]',
    own: 'environment: { B: "3", D: "4" }',
    pick: (w) => w.env,
    expected: { A: '1', B: '3', D: '4' },
  },
  {
    rule: 'environment: map then list',
    base: 'environment: { A: "1", B: "2" }',
    own: 'environment: [B=3]',
    pick: (w) => w.env,
    expected: { A: '1', B: '3' },
  },
  {
    rule: 'labels: merged by name',
    base: 'labels: [team=a, tier=web]',
    own: 'labels: { tier: api }',
    pick: (w) => w.labels,
    expected: { team: 'a', tier: 'api' },
  },
  {
    rule: 'ports: appended',
    base: 'ports: ["8080", "9000"]',
    own: 'ports: ["8081", "9000"]',
    pick: (w) => w.ports.map((p) => p.container),
    expected: [8080, 9000, 8081],
  },
  {
    rule: 'expose: appended',
    base: 'expose: ["7000"]',
    own: 'expose: ["7001"]',
    pick: (w) => w.ports.map((p) => p.container),
    expected: [7000, 7001],
  },
  {
    rule: 'volumes: merged by target, the later one where the first was',
    base: 'volumes: ["one:/data", "two:/cache"]',
    own: 'volumes: [{ type: volume, source: three, target: /data }, "/tmp/x"]',
    pick: (w) => w.mounts.map((m) => `${m.type === 'tmpfs' ? '' : m.source}:${m.target}`),
    expected: ['three:/data', 'two:/cache', 'web-tmp-x:/tmp/x'],
  },
  {
    rule: 'command: replaced, not appended',
    base: 'command: [serve, --port, "80"]',
    own: 'command: run-once',
    pick: (w) => w.command,
    expected: ['run-once'],
  },
  {
    rule: 'entrypoint: replaced',
    base: 'entrypoint: [/bin/sh, -c]',
    own: 'entrypoint: [/init]',
    pick: (w) => w.entrypoint,
    expected: ['/init'],
  },
  {
    rule: 'healthcheck: test replaced, the rest merged',
    base: 'healthcheck: { test: [CMD, a, b], interval: 10s, retries: 7 }',
    own: 'healthcheck: { test: [CMD-SHELL, c], retries: 2 }',
    pick: (w) => w.healthcheck,
    expected: { command: { shell: 'c' }, intervalMs: 10_000, timeoutMs: 5_000, retries: 2, startPeriodMs: 0 },
  },
  {
    rule: 'depends_on: merged by name, a list entry is service_started',
    base: 'depends_on: { db: { condition: service_healthy }, cache: { condition: service_healthy } }',
    own: 'depends_on: [cache, queue]',
    pick: (w) => w.dependsOn,
    expected: [
      { name: 'cache', condition: 'service_started' },
      { name: 'db', condition: 'service_healthy' },
      { name: 'queue', condition: 'service_started' },
    ],
  },
  {
    rule: 'build: a string is the context; args merged by name whatever their form',
    base: 'build: { context: ./app, args: { A: "1", B: "2" } }',
    own: 'build: { args: [B=3, C=4] }',
    pick: (w) => w.image.build && { context: w.image.build.context, args: w.image.build.args },
    expected: { context: join(dir, 'app'), args: { A: '1', B: '3', C: '4' } },
  },
  {
    rule: 'build: a string onto a map keeps the rest',
    base: 'build: { context: ., dockerfile: Dockerfile, target: dev }',
    own: 'build: ./app',
    pick: (w) => w.image.build && { ...w.image.build, context: w.image.build.context.slice(dir.length) },
    expected: { context: '/app', dockerfile: 'Dockerfile', args: {}, target: 'dev' },
  },
  {
    rule: 'extra_hosts: list and map appended, repeats dropped',
    base: 'extra_hosts: ["a:10.0.0.1", "b=10.0.0.2"]',
    own: 'extra_hosts: { b: 10.0.0.2, c: 10.0.0.3 }',
    pick: (w) => w.extraHosts.map((h) => `${h.host}=${h.ip}`),
    expected: ['a=10.0.0.1', 'b=10.0.0.2', 'c=10.0.0.3'],
  },
  {
    rule: 'ulimits: merged by name, each one replaced',
    base: 'ulimits: { nofile: { soft: 10, hard: 20 }, nproc: 64 }',
    own: 'ulimits: { nofile: 30 }',
    pick: (w) => w.ulimits,
    expected: [
      { name: 'nofile', soft: 30, hard: 30 },
      { name: 'nproc', soft: 64, hard: 64 },
    ],
  },
  {
    rule: 'env_file: appended, a repeated path kept once',
    base: 'env_file: [main.env, common/base.env]',
    own: 'env_file: [{ path: main.env, required: false }]',
    pick: (w) => w.env,
    expected: { MAIN: '1', BASE: '1' },
  },
  {
    rule: 'secrets: merged by target',
    base: 'secrets: [token, { source: token, target: other }]',
    own: 'secrets: [{ source: key, target: /run/secrets/token }]',
    pick: (w) => w.files.map((f) => `${f.target}=${f.content}`),
    expected: ['/run/secrets/token=k', '/run/secrets/other=t'],
  },
  {
    rule: 'scalars: the later one',
    base: 'user: "1000"\n    working_dir: /srv',
    own: 'user: "2000"',
    pick: (w) => [w.user, w.workingDir],
    expected: ['2000', '/srv'],
  },
  {
    rule: 'x-mayfly: merged as a map',
    base: 'ports: ["80", "81"]\n    x-mayfly: { http: 81 }',
    own: 'x-mayfly: { public: false }',
    pick: (w) => w.ports.filter((p) => p.http).length,
    expected: 0,
  },
];

const TOP = [
  'volumes: { one: {}, two: {}, three: {}, cache: {} }',
  'secrets:',
  '  token: { content: t }',
  '  key: { content: k }',
  'services:',
  '  db: { image: db, healthcheck: { test: [CMD, ok] } }',
  '  cache: { image: cache, healthcheck: { test: [CMD, ok] } }',
  '  queue: { image: queue }',
].join('\n');

describe('the merge rules, for extends and override files alike', () => {
  test.each(RULES)('extends: $rule', ({ base, own, pick, expected }) => {
    const content = `${TOP}\n  base:\n    image: img\n    ${base}\n  web:\n    extends: base\n    ${own}\n`;
    expect(pick(service(load(content), 'web'))).toEqual(expected);
  });

  test.each(RULES)('override file: $rule', ({ base, own, pick, expected }) => {
    const content = `${TOP}\n  web:\n    image: img\n    ${base}\n`;
    const template = load(content, {}, [
      { filename: 'override.yaml', content: `services:\n  web:\n    ${own}\n` },
    ]);
    expect(pick(service(template, 'web'))).toEqual(expected);
  });
});

describe('extends', () => {
  test('a service of the same file: both are part of the environment; extends is not an unknown key', () => {
    const template = load(
      'services:\n  base: { image: img, environment: { A: "1" } }\n  web: { extends: base, ports: ["80"] }\n',
    );
    expect(template.workloads.map((w) => [w.name, w.image, w.env])).toEqual([
      ['base', { ref: 'img' }, { A: '1' }],
      ['web', { ref: 'img' }, { A: '1' }],
    ]);
    expect(template.warnings).toEqual([]);
  });

  test("a service of another file: its relative paths resolve from that file's folder", () => {
    const refs: HostPathRef[] = [];
    const template = load(
      'services:\n  web:\n    extends: { file: common/base.yaml, service: base }\n    environment: { OWN: "1" }\n',
      { onHostPath: (ref) => refs.push(ref) },
    );
    const web = service(template, 'web');
    expect(web.image).toEqual({
      build: { context: join(dir, 'common/app'), dockerfile: 'Dockerfile', args: {} },
    });
    expect(web.env).toEqual({ BASE: '1', FROM: 'base', LEVEL: '1', OWN: '1' });
    expect(web.mounts).toEqual([
      { source: join(dir, 'common/data'), target: '/data', type: 'bind', readOnly: false },
      { source: 'web-cache', target: '/cache', type: 'volume', readOnly: false },
    ]);
    // The file itself is a host path: the CLI sends it with the template.
    expect(refs).toContainEqual({ kind: 'template', path: join(dir, 'common/base.yaml') });
    expect(template.workloads.map((w) => w.name)).toEqual(['web']);
    expect(template.variables).toEqual(['LEVEL']);
  });

  test('chains, within a file and across files', () => {
    const template = load(
      [
        'services:',
        '  a: { extends: { file: common/base.yaml, service: mid } }',
        '  b: { extends: { file: common/base.yaml, service: deep }, environment: [OWN=b] }',
        '  c: { extends: b, command: [c] }',
        '',
      ].join('\n'),
    );
    expect(service(template, 'a').env).toEqual({ BASE: '1', FROM: 'mid', LEVEL: '1' });
    const c = service(template, 'c');
    expect([c.image, c.env, c.command]).toEqual([{ ref: 'core' }, { CORE: '1', OWN: 'b' }, ['c']]);
  });

  test.each([
    [
      'a cycle in one file',
      'services:\n  a: { image: x, extends: b }\n  b: { image: x, extends: c }\n  c: { image: x, extends: a }\n',
      ['compose.yaml:4:27 extends cycle: a → b → c → a'],
    ],
    [
      'a service extending itself',
      'services:\n  a:\n    image: x\n    extends: a\n',
      ['compose.yaml:4:14 extends cycle: a → a'],
    ],
    [
      'a cycle across files',
      'services:\n  b:\n    image: x\n    extends: { file: common/loop.yaml, service: a }\n',
      ['compose.yaml:3:14 extends cycle: a (common/loop.yaml) → b (compose.yaml) → a (common/loop.yaml)'],
    ],
    [
      'a service that does not exist',
      'services:\n  a: { image: x, extends: nope }\n  b: { image: x, extends: { service: nope, file: common/base.yaml } }\n',
      [
        'compose.yaml:2:27 service "nope" not found',
        'compose.yaml:3:38 service "nope" not found in common/base.yaml',
      ],
    ],
    [
      'a file that does not exist, and one outside the folder',
      'services:\n  a: { image: x, extends: { service: s, file: nope.yaml } }\n  b: { image: x, extends: { service: s, file: ../x.yaml } }\n',
      [
        'compose.yaml:2:47 file "nope.yaml" not found',
        'compose.yaml:3:47 path "../x.yaml" is outside the directory templates may use',
      ],
    ],
    [
      'extends written wrong',
      'services:\n  a: { image: x, extends: [b] }\n  b: { image: x, extends: { file: common/base.yaml, servce: base } }\n',
      [
        'compose.yaml:2:27 expected the name of a service, or { service, file }; got a list',
        'compose.yaml:3:27 needs "service": the name of the service to extend',
        'compose.yaml:3:53 unknown key "servce": extends takes "service" and "file"',
      ],
    ],
  ])('%s is an error where it is written', (_name, content, expected) => {
    expect(issuesOf(content)).toEqual(expected);
  });

  test(`a chain is at most ${MERGE_LIMITS.maxExtendsDepth} services long`, () => {
    const length = MERGE_LIMITS.maxExtendsDepth;
    const chain = (n: number) =>
      `services:\n${Array.from({ length: n }, (_, i) => `  s${i}: { extends: s${i + 1} }\n`).join('')}  s${n}: { image: x }\n`;
    expect(load(chain(length)).workloads).toHaveLength(length + 1);
    // Every service of the chain then lacks the image it would have had.
    const issues = issuesOf(chain(length + 1)).filter((i) => !i.endsWith('needs "image" or "build"'));
    expect(issues).toEqual([
      `compose.yaml:12:19 more than ${length} services extend one another in a chain: s0 → s1 → s2 → s3 → s4 → s5 → s6 → s7 → s8 → s9 → s10`,
    ]);
  });

  test('issues in the extended file name that file, line and column', () => {
    expect(issuesOf('services:\n  web:\n    extends: { file: common/base.yaml, service: broken }\n')).toEqual(
      ['common/base.yaml:14:12 expected a string, got a list'],
    );
  });

  test('extended many times, a service is counted each time against the size limits', () => {
    const big = `services:\n  base:\n    image: x\n    environment:\n${Array.from({ length: 2000 }, (_, i) => `      V${i}: "${'v'.repeat(40)}"\n`).join('')}`;
    const many = `${big}${Array.from({ length: 60 }, (_, i) => `  s${i}: { extends: base }\n`).join('')}`;
    const issues = issuesOf(many);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^compose\.yaml:\d+:\d+ extends and override files make the template/);
  });
});

describe('override files', () => {
  const main = [
    'x-mayfly: { ttl: 2h }',
    'volumes: { data: {} }',
    'services:',
    '  web:',
    '    image: web:1',
    '    environment: [A=1, B=2]',
    '    ports: ["8080"]',
    '    volumes: ["data:/data", "./app:/app"]',
    '    command: [serve]',
    '    depends_on: [db]',
    '  db: { image: db }',
    '',
  ].join('\n');
  const ci = [
    'x-mayfly: { destroyOn: [pr-closed] }',
    'volumes: { other: {} }',
    'services:',
    '  web:',
    '    image: web:ci',
    '    environment: { B: "3", C: "${CI_ONLY:-x}" }',
    '    ports: ["9090"]',
    '    volumes: ["other:/data"]',
    '    command: [test]',
    '  runner: { image: runner, env_file: main.env }',
    '',
  ].join('\n');

  test('two files: later keys win, lists by the rules, new services and volumes added', () => {
    const template = load(main, {}, [{ filename: 'compose.ci.yaml', content: ci }]);
    const web = service(template, 'web');
    expect(web.image).toEqual({ ref: 'web:ci' });
    expect(web.env).toEqual({ A: '1', B: '3', C: 'x' });
    expect(web.ports.map((p) => p.container)).toEqual([8080, 9090]);
    expect(web.mounts.map((m) => (m.type === 'tmpfs' ? m.target : `${m.source}:${m.target}`))).toEqual([
      'other:/data',
      `${join(dir, 'app')}:/app`,
    ]);
    expect(web.command).toEqual(['test']);
    expect(template.workloads.map((w) => w.name)).toEqual(['web', 'db', 'runner']);
    // Relative paths of an override are relative to the first file's folder.
    expect(service(template, 'runner').env).toEqual({ MAIN: '1' });
    expect(template.volumes.map((v) => v.name)).toEqual(['data', 'other']);
    expect(template.lifecycle).toEqual({ ttlMs: 7_200_000, idleTimeoutMs: null, destroyOn: [] });
    expect(template.variables).toEqual(['CI_ONLY']);
  });

  test('three files: each merged onto what the ones before made', () => {
    const last = 'services:\n  web:\n    environment: [C=last]\n    command: [final]\n    ports: ["9090"]\n';
    const template = load(main, {}, [
      { filename: 'compose.ci.yaml', content: ci },
      { filename: 'compose.last.yaml', content: last },
    ]);
    const web = service(template, 'web');
    expect(web.env).toEqual({ A: '1', B: '3', C: 'last' });
    expect(web.command).toEqual(['final']);
    expect(web.ports.map((p) => p.container)).toEqual([8080, 9090]);
  });

  test('an override may extend a service of its own file, and its files resolve from the first folder', () => {
    const override = [
      'services:',
      '  worker:',
      '    extends: { file: common/base.yaml, service: base }',
      '  tool: { extends: worker, command: [tool] }',
      '',
    ].join('\n');
    const template = load(main, {}, [{ filename: 'ci/override.yaml', content: override }]);
    expect(service(template, 'tool').image).toEqual({
      build: { context: join(dir, 'common/app'), dockerfile: 'Dockerfile', args: {} },
    });
    expect(
      issuesOf(main, [{ filename: 'o.yaml', content: 'services:\n  x: { image: x, extends: web }\n' }]),
    ).toEqual(['o.yaml:2:27 service "web" not found']);
  });

  test('issues name the file, line and column where each value was written', () => {
    const override = [
      'services:',
      '  web:',
      '    ports: ["not-a-port"]',
      '    privileged: true',
      '    environment: { D: "${NOT_SET}" }',
      '  new: { imgae: x }',
      '',
    ].join('\n');
    expect(issuesOf(main, [{ filename: 'ci.yaml', content: override }])).toEqual([
      'ci.yaml:3:13 invalid port "not-a-port": expected "80", "8080:80" or "127.0.0.1:8080:80/udp"',
      'ci.yaml:6:10 unknown key (did you mean "image"?)',
    ]);
    const template = load(main, {}, [
      {
        filename: 'ci.yaml',
        content: 'services:\n  web:\n    privileged: true\n    environment: { D: "${NOT_SET}" }\n',
      },
    ]);
    expect(warningsOf(template)).toEqual([
      'ci.yaml:3:5 not supported by Mayfly, ignored: containers never run privileged',
      'ci.yaml:4:24 "NOT_SET" is not set, so it is empty: pass it with --input or in the environment, or give a default like ${NOT_SET:-value}',
    ]);
    // A value merged from both files is where the later file wrote it; the rest stays where it was.
    expect(
      issuesOf(main, [
        {
          filename: 'ci.yaml',
          content:
            'services:\n  web:\n    healthcheck: { interval: 0s, test: [CMD, x] }\n  db: { cpus: lots }\n',
        },
      ]),
    ).toEqual([
      'ci.yaml:3:30 must be longer than 0',
      'ci.yaml:4:15 invalid CPU count "lots": expected a number above 0, like 0.5',
    ]);
  });

  test('a list where the first file has a map is an error in the override', () => {
    expect(
      issuesOf(main, [{ filename: 'ci.yaml', content: 'services:\n  web:\n    ports: { a: 1 }\n' }]),
    ).toEqual(['ci.yaml:3:12 cannot merge a map into a list']);
  });

  test('an override that is not a map is an error; an empty one a warning', () => {
    expect(issuesOf(main, [{ filename: 'ci.yaml', content: '- a\n' }])).toEqual([
      'ci.yaml:1:1 an override file must be a map of Compose keys, not a list',
    ]);
    expect(warningsOf(load(main, {}, [{ filename: 'ci.yaml', content: '# nothing\n' }]))).toEqual([
      'ci.yaml:1:1 the file is empty: nothing to merge',
    ]);
  });

  test(`at most ${MERGE_LIMITS.maxOverrides} override files, only for Compose templates`, () => {
    const overrides = Array.from({ length: MERGE_LIMITS.maxOverrides + 1 }, (_, i) => ({
      filename: `o${i}.yaml`,
      content: 'services: {}\n',
    }));
    expect(issuesOf(main, overrides)).toEqual([
      `compose.yaml:1:1 ${MERGE_LIMITS.maxOverrides + 1} override files: a template may have at most ${MERGE_LIMITS.maxOverrides}`,
    ]);
    expect(() =>
      loadTemplate(
        {
          filename: 'mayfly.yaml',
          content: 'services:\n  web: { image: x }\n',
          overrides: [{ filename: 'o.yaml', content: '{}' }],
        },
        {},
      ),
    ).toThrow('override files are merged onto Compose files only, and mayfly.yaml is a mayfly.yaml');
  });
});

describe('limits hold for a template and all its files together', () => {
  // Each file alone stays under the node limit (anchors expanding tenfold per level, ~60 000
  // nodes); ten of them extended by one template would be ten times the limit.
  const bomb = [
    'x-a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]',
    'x-b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
    'x-c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
    'x-d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
    'services:',
    '  s: { image: x, command: [sh], labels: { a: "1" } }',
    '  junk: { image: x, command: [*d, *d, *d, *d, *d, *d] }',
    '',
  ].join('\n');
  for (let i = 0; i < 10; i++) write(`bombs/b${i}.yaml`, bomb);

  test('one of the files alone is under the limit', () => {
    expect(load('services:\n  e: { extends: { file: bombs/b0.yaml, service: s } }\n').workloads).toHaveLength(
      1,
    );
  });

  test('ten extended files each under the node limit are over it together', () => {
    const services = Array.from(
      { length: 10 },
      (_, i) => `  e${i}: { extends: { file: bombs/b${i}.yaml, service: s } }`,
    );
    const content = ['services:', ...services, ''].join('\n');
    const messages = (() => {
      try {
        load(content);
        return [];
      } catch (err) {
        if (!(err instanceof TemplateError)) throw err;
        return err.issues.map((i) => i.message);
      }
    })();
    expect(
      messages.some((m) => /past 100000 nodes|more than 100000 YAML nodes/.test(m)),
      messages.join('\n'),
    ).toBe(true);
  });
});
