/**
 * Compose semantics as `docker compose` has them: profiles, secrets and configs, and the service
 * keys Mayfly honours (labels, tmpfs, init, stop signal and grace period, hostname,
 * container_name, extra_hosts, cap_drop, read_only, shm_size, ulimits, health checks turned off).
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose references are the subject
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { WorkloadSpec } from '../plan/plan.js';
import { type LoadOptions, loadTemplate, TemplateError } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'mayfly-compose-'));
writeFileSync(join(dir, 'db-password.txt'), 'hunter2\n');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const load = (content: string, options: LoadOptions = {}) =>
  loadTemplate({ filename: 'compose.yaml', content, dir }, { root: dir, ...options });

const errorsOf = (content: string, options: LoadOptions = {}) => {
  try {
    load(content, options);
  } catch (err) {
    if (err instanceof TemplateError) return err.issues.map((i) => `${i.line}:${i.column} ${i.message}`);
    throw err;
  }
  return [];
};

const byName = (workloads: readonly WorkloadSpec[]) => new Map(workloads.map((w) => [w.name, w]));

describe('profiles', () => {
  const content = [
    'services:',
    '  web: { image: web }',
    '  db: { image: db }',
    '  debug: { image: tools, profiles: [debug], depends_on: [db] }',
    '  seed: { image: tools, profiles: [tools, debug] }',
    '',
  ].join('\n');

  test.each([
    [[], ['db', 'web']],
    [['debug'], ['db', 'debug', 'seed', 'web']],
    [['tools'], ['db', 'seed', 'web']],
    [['other'], ['db', 'web']],
    [['*'], ['db', 'debug', 'seed', 'web']],
  ])('active %j → %j', (profiles, expected) => {
    const names = load(content, { profiles }).workloads.map((w) => w.name);
    expect(names.sort()).toEqual(expected);
  });

  test('a service that needs an inactive one is an error naming the profiles; required: false drops it', () => {
    const needs =
      'services:\n  web: { image: web, depends_on: [mail] }\n  mail: { image: mail, profiles: [dev] }\n';
    expect(errorsOf(needs)).toEqual([
      '2:35 "mail" is not part of this environment: none of its profiles (dev) is active; activate one with --profile or COMPOSE_PROFILES',
    ]);
    expect(load(needs, { profiles: ['dev'] }).workloads).toHaveLength(2);
    const optional =
      'services:\n  web:\n    image: web\n    depends_on: { mail: { condition: service_started, required: false } }\n  mail: { image: mail, profiles: [dev] }\n';
    expect(load(optional).workloads.map((w) => [w.name, w.dependsOn])).toEqual([['web', []]]);
  });

  test('no active service at all is an error', () => {
    expect(errorsOf('services:\n  a: { image: a, profiles: [x] }\n')).toEqual([
      '2:3 no service is active: every one has profiles, and none of x is active; activate one with --profile or COMPOSE_PROFILES',
    ]);
  });
});

describe('secrets and configs', () => {
  const content = [
    'secrets:',
    '  db_password: { file: ./db-password.txt }',
    '  api_key: { environment: API_KEY }',
    'configs:',
    '  nginx: { content: "worker_processes ${WORKERS:-2};" }',
    '  app: { file: ./db-password.txt }',
    'services:',
    '  web:',
    '    image: nginx',
    '    secrets:',
    '      - db_password',
    '      - { source: api_key, target: key.txt, uid: "101", gid: "101", mode: 0400 }',
    '      - { source: api_key, target: key-yaml12.txt, mode: 0o440 }',
    '    configs:',
    '      - nginx',
    '      - { source: nginx, target: /etc/nginx/nginx.conf }',
    '      - { source: app, target: /srv/app.conf }',
    '',
  ].join('\n');

  test('mount read-only where Compose mounts them: files bound, content and environment written in', () => {
    const [web] = load(content, { inputs: { API_KEY: 'k-123' } }).workloads;
    expect(web!.mounts).toEqual([
      {
        source: join(dir, 'db-password.txt'),
        target: '/run/secrets/db_password',
        type: 'bind',
        readOnly: true,
      },
      { source: join(dir, 'db-password.txt'), target: '/srv/app.conf', type: 'bind', readOnly: true },
    ]);
    expect(web!.files).toEqual([
      { target: '/run/secrets/key.txt', content: 'k-123', mode: 0o400, uid: '101', gid: '101' },
      // YAML 1.2's 0o440 is the same mode as Compose's 0440.
      { target: '/run/secrets/key-yaml12.txt', content: 'k-123', mode: 0o440 },
      { target: '/nginx', content: 'worker_processes 2;', mode: 0o444 },
      { target: '/etc/nginx/nginx.conf', content: 'worker_processes 2;', mode: 0o444 },
    ]);
  });

  test('the variable of an environment source is one the template reads', () => {
    expect(load(content, { inputs: { API_KEY: 'k' } }).variables).toEqual(['API_KEY', 'WORKERS']);
  });

  test.each([
    [
      'undeclared',
      'services:\n  web: { image: x, secrets: [nope] }\n',
      ['2:30 secret "nope" is not declared under the top-level "secrets"'],
    ],
    [
      'unset environment source',
      'secrets:\n  k: { environment: NOT_SET }\nservices:\n  web: { image: x, secrets: [k] }\n',
      ['2:21 variable NOT_SET is not set: pass it with --input or in the environment'],
    ],
    [
      'external',
      'secrets:\n  k: { external: true }\nservices:\n  web: { image: x, secrets: [k] }\n',
      ['2:3 external secrets and configs are not supported: give a file, environment or content'],
    ],
    [
      'two sources',
      'configs:\n  c: { file: ./db-password.txt, content: x }\nservices:\n  web: { image: x, configs: [c] }\n',
      ['2:3 needs exactly one of "file", "environment" and "content"'],
    ],
    [
      'a file outside the template folder',
      'secrets:\n  k: { file: /etc/shadow }\nservices:\n  web: { image: x, secrets: [k] }\n',
      ['2:14 path "/etc/shadow" is outside the directory templates may use'],
    ],
    [
      'a file through ..',
      'secrets:\n  k: { file: ../../../etc/shadow }\nservices:\n  web: { image: x, secrets: [k] }\n',
      ['2:14 path "../../../etc/shadow" is outside the directory templates may use'],
    ],
    [
      'two at one target',
      'configs:\n  a: { content: x }\n  b: { content: y }\nservices:\n  web: { image: x, configs: [{ source: a, target: /c }, { source: b, target: /c }] }\n',
      ['5:57 two secrets or configs of web are mounted at /c'],
    ],
    [
      'a bad mode',
      'configs:\n  a: { content: x }\nservices:\n  web: { image: x, configs: [{ source: a, mode: 999, uid: root }] }\n',
      ['4:49 invalid file mode 999: expected octal digits, like 0440'],
    ],
    [
      'a setuid mode',
      'configs:\n  a: { content: x }\nservices:\n  web: { image: x, configs: [{ source: a, mode: 4755 }] }\n',
      ['4:49 invalid file mode 4755: only read, write and execute bits (at most 0777)'],
    ],
    [
      'a uid that is not a number',
      'configs:\n  a: { content: x }\nservices:\n  web: { image: x, configs: [{ source: a, uid: root }] }\n',
      ['4:48 invalid uid "root": expected a number'],
    ],
  ])('%s is an error', (_, content, expected) => {
    expect(errorsOf(content)).toEqual(expected);
  });
});

describe('service keys honoured', () => {
  const content = [
    'services:',
    '  web:',
    '    image: nginx',
    '    labels: { com.example.team: shop, tier: "front" }',
    '    tmpfs: ["/run", "/cache:size=64m,mode=1777"]',
    '    volumes: [{ type: tmpfs, target: /scratch, tmpfs: { size: 1m } }]',
    '    init: false',
    '    stop_signal: SIGQUIT',
    '    stop_grace_period: 1m30s',
    '    hostname: web-host',
    '    container_name: shop-web',
    '    extra_hosts: ["db.internal:10.1.2.3", "v6.internal=::1"]',
    '    cap_drop: [net_raw, ALL]',
    '    read_only: true',
    '    shm_size: 256m',
    '    ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 512 }',
    '    healthcheck: { disable: true }',
    '  worker:',
    '    image: worker',
    '    labels: [role=worker]',
    '    extra_hosts: { api.internal: 10.0.0.1 }',
    '    deploy: { replicas: 3 }',
    '    healthcheck: { test: [NONE] }',
    '',
  ].join('\n');

  test('are read into the plan', () => {
    const workloads = byName(load(content).workloads);
    expect(workloads.get('web')).toMatchObject({
      labels: { 'com.example.team': 'shop', tier: 'front' },
      mounts: [
        { type: 'tmpfs', target: '/scratch', readOnly: false, sizeBytes: 2 ** 20 },
        { type: 'tmpfs', target: '/run', readOnly: false },
        { type: 'tmpfs', target: '/cache', readOnly: false, sizeBytes: 64 * 2 ** 20 },
      ],
      init: false,
      stopSignal: 'SIGQUIT',
      stopGracePeriodMs: 90_000,
      hostname: 'web-host',
      aliases: ['shop-web'],
      extraHosts: [
        { host: 'db.internal', ip: '10.1.2.3' },
        { host: 'v6.internal', ip: '::1' },
      ],
      capDrop: ['NET_RAW', 'ALL'],
      readOnlyRootFilesystem: true,
      resources: { shmBytes: 256 * 2 ** 20 },
      ulimits: [
        { name: 'nofile', soft: 1024, hard: 2048 },
        { name: 'nproc', soft: 512, hard: 512 },
      ],
      healthcheck: 'disabled',
    });
    expect(workloads.get('worker')).toMatchObject({
      labels: { role: 'worker' },
      extraHosts: [{ host: 'api.internal', ip: '10.0.0.1' }],
      replicas: 3,
      healthcheck: 'disabled',
      readOnlyRootFilesystem: false,
    });
  });

  test('none of them is reported as ignored', () => {
    expect(load(content).warnings).toEqual([]);
  });

  test.each([
    ['labels: { mayfly.env: fake }', '4:27 label "mayfly.env" is reserved: Mayfly sets the mayfly.* labels'],
    [
      'extra_hosts: ["host.docker.internal:host-gateway"]',
      '4:19 "host-gateway" is not allowed: environments never reach the machine they run on',
    ],
    [
      'extra_hosts: ["db:not-an-ip"]',
      '4:19 invalid address "not-an-ip" for db: expected an IPv4 or IPv6 address',
    ],
    ['tmpfs: relative', '4:12 tmpfs target "relative" must be an absolute path'],
    ['tmpfs: ["/t:size=lots"]', '4:13 invalid tmpfs size "lots": expected a size like 64m'],
    [
      'ulimits: { nofiles: 10 }',
      '4:16 unknown ulimit "nofiles": expected one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nofile, nproc, rss, sigpending, stack',
    ],
    [
      'ulimits: { rtprio: 99 }',
      '4:16 ulimit "rtprio" is not allowed: it raises scheduling priority over other environments',
    ],
    [
      'ulimits: { nice: 40 }',
      '4:16 ulimit "nice" is not allowed: it raises scheduling priority over other environments',
    ],
    ['ulimits: { memlock: -1 }', '4:25 ulimit "memlock" may be at most 67108864 (and not unlimited)'],
    ['ulimits: { nofile: 99999999 }', '4:24 ulimit "nofile" may be at most 1048576 (and not unlimited)'],
    ['tmpfs: [/proc/x]', '4:13 a tmpfs cannot be mounted at /proc/x'],
    ['shm_size: 99999999999999999999', '4:15 shm_size may be at most 64g'],
    ['labels: { MAYFLY.env: fake }', '4:27 label "MAYFLY.env" is reserved: Mayfly sets the mayfly.* labels'],
    ['ulimits: { nofile: { soft: 20, hard: 10 } }', '4:24 soft limit 20 is above the hard limit 10'],
    ['cap_drop: ["NET RAW"]', '4:16 invalid capability "NET RAW": expected a name like NET_RAW or ALL'],
    ['stop_signal: "kill -9"', '4:18 invalid signal "kill -9": expected a name like SIGTERM or SIGQUIT'],
    [
      'hostname: "-bad-"',
      '4:15 invalid hostname "-bad-": use letters, digits, "-" and "." (labels of at most 63)',
    ],
    [
      'container_name: "a b"',
      '4:21 invalid container name "a b": use letters, digits, "_", "." and "-" (at most 63)',
    ],
    [
      'container_name: one\n    deploy: { replicas: 2 }',
      '4:21 a service with a container_name cannot have 2 replicas: the name must be unique',
    ],
  ])('%s is an error', (line, expected) => {
    expect(errorsOf(`services:\n  web:\n    image: x\n    ${line}\n`)).toEqual([expected]);
  });
});

describe('variables', () => {
  test('lists every variable read, set or not, defaults included, $$ excluded', () => {
    const content =
      'services:\n  web:\n    image: "x:${TAG:-latest}"\n    command: "echo $$HOME ${MISSING}"\n    environment: [FROM_INPUT]\n';
    expect(load(content).variables).toEqual(['FROM_INPUT', 'MISSING', 'TAG']);
  });
});

describe('what a pull request must not reach through service keys', () => {
  test('a container_name may not take the name of another service, or another container_name', () => {
    expect(
      errorsOf(
        'services:\n  a: { image: x }\n  b: { image: x, container_name: a }\n  c: { image: x, container_name: B2 }\n  d: { image: x, container_name: b2 }\n',
      ),
    ).toEqual([
      '3:34 container_name "a" is already the name of a',
      '5:34 container_name "b2" is already the name of c',
    ]);
  });

  test('labels read by tools on the host are dropped, with a warning', () => {
    const template = load(
      'services:\n  web:\n    image: x\n    labels: { traefik.http.routers.x.rule: "Host(`bank.example`)", com.docker.compose.project: other, team: shop }\n',
    );
    expect(template.workloads[0]!.labels).toEqual({ team: 'shop' });
    expect(template.warnings.map((w) => w.message)).toEqual([
      'label "traefik.http.routers.x.rule" is ignored: tools on the host read it',
      'label "com.docker.compose.project" is ignored: tools on the host read it',
    ]);
  });

  test('a secret or config may not be mounted over /, /proc, /sys or /dev', () => {
    const at = (target: string) =>
      errorsOf(
        `configs:\n  c: { content: x }\nservices:\n  web: { image: x, configs: [{ source: c, target: "${target}" }] }\n`,
      );
    for (const target of ['/', '/proc/sys/kernel/core_pattern', '/sys/x', '/dev/shm/x']) {
      expect(at(target)).toEqual([expect.stringMatching(/a config cannot be mounted at/)]);
    }
  });
});
