// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about literal ${VAR} references
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TemplateIssue } from '@mayfly/contract';
import { describe, expect, test } from 'vitest';
import {
  isComposeFile,
  type LoadOptions,
  loadTemplate,
  plan,
  TEMPLATE_LIMITS,
  TEMPLATE_MAX_BYTES,
  TemplateError,
  type TemplateSource,
} from './index.js';
import { WORKLOAD_DEFAULTS } from './normalize.js';

const here = dirname(fileURLToPath(import.meta.url));
const shop = join(here, 'testdata', 'shop');
const bad = join(here, 'testdata', 'bad');
const source = (filename: string): TemplateSource => ({
  filename,
  content: readFileSync(join(shop, filename), 'utf8'),
  dir: shop,
});

/** The issues `loadTemplate` throws, or a failure when it does not throw. */
function issuesOf(src: TemplateSource, options?: LoadOptions): TemplateIssue[] {
  try {
    loadTemplate(src, options);
  } catch (error) {
    if (error instanceof TemplateError) return error.issues;
    throw error;
  }
  throw new Error('expected a TemplateError');
}

describe('a realistic mayfly.yaml', () => {
  const template = loadTemplate(source('mayfly.yaml'), {
    inputs: { COMMIT_SHA: 'abc123' },
    serviceUrl: (service) => `http://${service}--pr-42.localhost`,
  });

  test('loads into the expected template', () => {
    expect(template).toEqual({
      format: 'mayfly',
      file: 'mayfly.yaml',
      dir: shop,
      workloads: [
        {
          name: 'web',
          kind: 'service',
          image: { build: { context: join(shop, 'web'), dockerfile: 'Dockerfile', args: {} } },
          ...WORKLOAD_DEFAULTS,
          command: ['node', 'server.js', '--port', '8080'],
          env: { LOG_LEVEL: 'info', API_URL: 'http://api:8000', PUBLIC_URL: 'http://web--pr-42.localhost' },
          ports: [{ container: 8080, protocol: 'tcp', http: true }],
          healthcheck: {
            command: { shell: 'curl -fsS localhost:8080/health' },
            intervalMs: 2000,
            timeoutMs: 5000,
            retries: 3,
            startPeriodMs: 0,
          },
          dependsOn: [{ name: 'api', condition: 'service_started' }],
          mounts: [],
          resources: { cpus: 0.5, memoryBytes: 256 * 2 ** 20 },
          replicas: 1,
          restart: 'no',
        },
        {
          name: 'api',
          kind: 'service',
          image: {
            build: {
              context: join(shop, 'api'),
              dockerfile: 'Dockerfile.dev',
              args: { NODE_VERSION: '20', COMMIT: 'abc123' },
              target: 'runtime',
            },
          },
          ...WORKLOAD_DEFAULTS,
          env: {
            SECRET_KEY: 's3cr3t $NOT_EXPANDED',
            GREETING: 'hello world',
            PLAIN: 'value',
            DATABASE_URL: 'postgres://app:app@db:5432/app',
            LOG_LEVEL: 'info',
            BRANCH: 'main',
          },
          ports: [
            { container: 8000, protocol: 'tcp', http: true },
            { container: 9229, protocol: 'tcp', http: false },
          ],
          dependsOn: [
            { name: 'db', condition: 'service_healthy' },
            { name: 'migrate', condition: 'service_completed_successfully' },
          ],
          mounts: [],
          resources: {},
          replicas: 2,
          restart: 'on-failure',
        },
        {
          name: 'db',
          kind: 'service',
          image: { ref: 'postgres:16' },
          ...WORKLOAD_DEFAULTS,
          env: { POSTGRES_PASSWORD: 'app' },
          ports: [],
          healthcheck: {
            command: { exec: ['pg_isready', '-U', 'app'] },
            intervalMs: 1000,
            timeoutMs: 5000,
            retries: 10,
            startPeriodMs: 5000,
          },
          dependsOn: [],
          mounts: [
            { source: 'pgdata', target: '/var/lib/postgresql/data', type: 'volume', readOnly: false },
            { source: join(shop, 'db'), target: '/docker-entrypoint-initdb.d', type: 'bind', readOnly: true },
            { source: 'db-tmp-cache', target: '/tmp/cache', type: 'volume', readOnly: false },
          ],
          resources: { memoryBytes: 512 * 2 ** 20, pids: 200 },
          replicas: 1,
          restart: 'unless-stopped',
        },
        {
          name: 'migrate',
          kind: 'job',
          image: { build: { context: join(shop, 'api'), dockerfile: 'Dockerfile', args: {} } },
          ...WORKLOAD_DEFAULTS,
          entrypoint: ['/bin/sh', '-c'],
          command: ['npm run migrate'],
          env: {},
          ports: [],
          dependsOn: [{ name: 'db', condition: 'service_healthy' }],
          mounts: [],
          resources: {},
          replicas: 1,
          restart: 'no',
          workingDir: '/app',
          user: '1000',
        },
      ],
      volumes: [{ name: 'pgdata' }, { name: 'db-tmp-cache' }],
      isolation: 'gvisor',
      // idleTimeout and destroyOn are not built yet: warnings (below), and ignored.
      lifecycle: { ttlMs: 2 * 3_600_000, idleTimeoutMs: null, destroyOn: [] },
      warnings: [
        {
          file: 'mayfly.yaml',
          line: 52,
          column: 23,
          path: 'lifecycle.idleTimeout',
          message: 'not supported yet, ignored: an idle environment is neither slept nor destroyed (use ttl)',
        },
        {
          file: 'mayfly.yaml',
          line: 52,
          column: 41,
          path: 'lifecycle.destroyOn',
          message: 'not supported yet, ignored: an environment ends by its ttl or when it is destroyed',
        },
      ],
      variables: ['BRANCH', 'COMMIT_SHA', 'ENV_URL', 'USER_NAME'],
    });
  });

  test('plans dependencies first, then by name', () => {
    const envPlan = plan(template, { envId: 'env_1', envName: 'pr-42', project: 'shop' });
    expect(envPlan.workloads.map((w) => w.name)).toEqual(['db', 'migrate', 'api', 'web']);
    expect(envPlan).toMatchObject({
      envId: 'env_1',
      envName: 'pr-42',
      project: 'shop',
      isolation: 'gvisor',
      volumes: [{ name: 'db-tmp-cache' }, { name: 'pgdata' }],
    });
    for (const w of envPlan.workloads) expect(w.specHash).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('a realistic Compose file', () => {
  const template = loadTemplate(source('compose.yaml'), { inputs: { COMMIT_SHA: 'abc123' } });

  test('loads into the expected template', () => {
    expect(template.format).toBe('compose');
    expect(template.workloads).toEqual([
      {
        name: 'frontend',
        kind: 'service',
        image: {
          build: {
            context: join(shop, 'web'),
            dockerfile: 'Dockerfile',
            args: { API_BASE: '/api', COMMIT_SHA: 'abc123' },
          },
        },
        ...WORKLOAD_DEFAULTS,
        env: { NODE_ENV: 'production', API_URL: 'http://backend:8000' },
        // x-mayfly.http picks 3000 as the routed port; the debugger port stays unrouted.
        ports: [
          { container: 3000, protocol: 'tcp', http: true },
          { container: 9229, protocol: 'tcp', http: false },
        ],
        dependsOn: [{ name: 'backend', condition: 'service_started' }],
        mounts: [],
        resources: {},
        replicas: 1,
        restart: 'no',
      },
      {
        name: 'backend',
        kind: 'service',
        image: { ref: 'ghcr.io/acme/backend:latest' },
        ...WORKLOAD_DEFAULTS,
        command: ['uvicorn', 'app:main', '--host', '0.0.0.0', '--port', '8000'],
        env: {
          SECRET_KEY: 'from-file',
          DATABASE_URL: 'postgres://shop:shop@db/shop',
          DEBUG: 'false',
          WORKERS: '4',
        },
        ports: [{ container: 8000, protocol: 'tcp', http: true }],
        dependsOn: [
          { name: 'cache', condition: 'service_started' },
          { name: 'db', condition: 'service_healthy' },
          { name: 'migrate', condition: 'service_completed_successfully' },
        ],
        mounts: [],
        resources: { cpus: 0.5, memoryBytes: 512 * 2 ** 20, pids: 100 },
        replicas: 2,
        restart: 'unless-stopped',
      },
      {
        name: 'migrate',
        kind: 'job',
        image: { ref: 'ghcr.io/acme/backend:latest' },
        ...WORKLOAD_DEFAULTS,
        command: ['alembic', 'upgrade', 'head'],
        env: {},
        ports: [],
        dependsOn: [{ name: 'db', condition: 'service_healthy' }],
        mounts: [],
        resources: {},
        replicas: 1,
        restart: 'no',
      },
      {
        name: 'db',
        kind: 'service',
        image: { ref: 'postgres:16-alpine' },
        ...WORKLOAD_DEFAULTS,
        env: { POSTGRES_USER: 'shop', POSTGRES_PASSWORD: 'shop' },
        ports: [],
        healthcheck: {
          command: { shell: 'pg_isready -U shop' },
          intervalMs: 1000,
          timeoutMs: 3000,
          retries: 20,
          startPeriodMs: 90_000,
        },
        dependsOn: [],
        mounts: [
          { source: 'dbdata', target: '/var/lib/postgresql/data', type: 'volume', readOnly: false },
          {
            source: join(shop, 'db', 'init.sql'),
            target: '/docker-entrypoint-initdb.d/init.sql',
            type: 'bind',
            readOnly: true,
          },
        ],
        resources: { memoryBytes: 2 ** 30 },
        replicas: 1,
        restart: 'no',
      },
      {
        name: 'cache',
        kind: 'service',
        image: { ref: 'redis:7' },
        ...WORKLOAD_DEFAULTS,
        env: {},
        ports: [{ container: 6379, protocol: 'tcp', http: false }],
        healthcheck: {
          command: { shell: 'redis-cli ping' },
          intervalMs: 500,
          timeoutMs: 5000,
          retries: 3,
          startPeriodMs: 0,
        },
        dependsOn: [],
        mounts: [],
        resources: {},
        replicas: 1,
        restart: 'no',
      },
    ]);
    expect(template.volumes).toEqual([{ name: 'dbdata' }]);
    expect(template.isolation).toBe('runc');
    expect(template.lifecycle).toEqual({ ttlMs: 86_400_000, idleTimeoutMs: null, destroyOn: [] });
  });

  test('reports what it ignores, with positions', () => {
    expect(template.warnings).toEqual([
      { file: 'compose.yaml', line: 1, column: 1, path: 'version', message: 'obsolete, ignored' },
      {
        file: 'compose.yaml',
        line: 6,
        column: 3,
        path: 'x-mayfly.destroyOn',
        message: 'not supported yet, ignored: an environment ends by its ttl or when it is destroyed',
      },
      {
        file: 'compose.yaml',
        line: 46,
        column: 5,
        path: 'services.backend.logging',
        message: 'ignored: logs are collected by the runtime and read with `mayfly logs`',
      },
      {
        file: 'compose.yaml',
        line: 73,
        column: 5,
        path: 'services.cache.networks',
        message:
          'network options (aliases, addresses) are ignored: services reach each other by service name',
      },
      {
        file: 'compose.yaml',
        line: 80,
        column: 1,
        path: 'networks',
        message: "ignored: all services share the environment's network",
      },
    ]);
  });

  test('plans dependencies first, then by name', () => {
    const envPlan = plan(template, { envId: 'env_2', envName: 'ci-7', project: 'shop' });
    expect(envPlan.workloads.map((w) => w.name)).toEqual(['cache', 'db', 'migrate', 'backend', 'frontend']);
  });
});

interface BadCase {
  name: string;
  filename?: string;
  content: string;
  dir?: string;
  /** Issues as `[line, column, path, message]`, in the file of the case unless `file` is given. */
  issues: ([number, number, string, string] | TemplateIssue)[];
}

const unsetWarning = (name: string) =>
  `"${name}" is not set, so it is empty: pass it with --input or in the environment, or give a default like \${${name}:-value}`;

const BAD: BadCase[] = [
  {
    name: 'YAML syntax error: duplicate key',
    content: 'services:\n  web:\n    image: nginx\n    image: nginx:2\n',
    issues: [[4, 5, '', 'Map keys must be unique']],
  },
  {
    name: 'YAML syntax error: tab indentation',
    content: 'services:\n  web:\n\timage: nginx\n',
    issues: [[3, 1, '', 'Tabs are not allowed as indentation']],
  },
  {
    name: 'empty file',
    content: '# nothing yet\n',
    issues: [[1, 1, '', 'the template is empty: add services']],
  },
  {
    name: 'not a map',
    content: '- web\n- db\n',
    issues: [[1, 1, '', 'expected a map, got a list']],
  },
  {
    name: 'no services',
    content: 'lifecycle:\n  ttl: 2h\n',
    issues: [[1, 1, 'services', 'no services: add at least one under "services"']],
  },
  {
    name: 'no services (Compose, empty map)',
    filename: 'compose.yaml',
    content: 'services: {}\n',
    issues: [[1, 11, 'services', 'no services: add at least one under "services"']],
  },
  {
    name: 'service with neither image nor build',
    content: 'services:\n  web:\n    command: ["serve"]\n',
    issues: [[3, 5, 'services.web', 'needs "image" or "build"']],
  },
  {
    name: 'unknown key in mayfly.yaml, with a Compose spelling',
    content: 'services:\n  web:\n    image: nginx\n    environment: { A: "1" }\n    colour: blue\n',
    issues: [
      [4, 5, 'services.web.environment', 'unknown key (did you mean "env"?)'],
      [5, 5, 'services.web.colour', 'unknown key'],
    ],
  },
  {
    name: 'unknown key in mayfly.yaml, snake_case',
    content: 'services:\n  web:\n    image: nginx\n    depends_on: [db]\n  db:\n    image: postgres\n',
    issues: [[4, 5, 'services.web.depends_on', 'unknown key (did you mean "dependsOn"?)']],
  },
  {
    name: 'wrong type: ports: "abc"',
    content: 'services:\n  web:\n    image: nginx\n    ports: "abc"\n',
    issues: [[4, 12, 'services.web.ports', 'expected a list, got "abc"']],
  },
  {
    name: 'wrong type inside a list',
    content: 'services:\n  web:\n    image: nginx\n    ports: [80, http, { port: 70000 }]\n',
    issues: [
      [4, 17, 'services.web.ports[1]', 'invalid port "http": expected a number from 1 to 65535'],
      [4, 31, 'services.web.ports[2].port', 'invalid port 70000: expected a number from 1 to 65535'],
    ],
  },
  {
    name: 'bad duration',
    content: 'services:\n  web:\n    image: nginx\nlifecycle:\n  ttl: 2x\n',
    issues: [
      [5, 8, 'lifecycle.ttl', 'invalid duration "2x": expected a number with s, m, h or d, like 30m or 2h'],
    ],
  },
  {
    name: 'bad health check duration (Compose)',
    filename: 'compose.yaml',
    content:
      'services:\n  web:\n    image: nginx\n    healthcheck:\n      test: curl -f localhost\n      interval: 1 minute\n',
    issues: [
      [
        6,
        17,
        'services.web.healthcheck.interval',
        'invalid duration "1 minute": expected values like 500ms, 10s or 1m30s',
      ],
    ],
  },
  {
    name: 'dependsOn naming an unknown service',
    content: 'services:\n  web:\n    image: nginx\n    dependsOn: [api]\n',
    issues: [[4, 17, 'services.web.dependsOn[0]', 'unknown service or job "api"']],
  },
  {
    name: 'depends_on naming an unknown service (Compose map form: the key)',
    filename: 'compose.yaml',
    content:
      'services:\n  web:\n    image: nginx\n    depends_on:\n      db:\n        condition: service_healthy\n',
    issues: [[5, 7, 'services.web.depends_on.db', 'unknown service "db"']],
  },
  {
    name: 'dependency cycle',
    content:
      'services:\n  a:\n    image: x\n    dependsOn: [b]\n  b:\n    image: x\n    dependsOn: [c]\n  c:\n    image: x\n    dependsOn: { a: started }\n',
    issues: [[10, 18, 'services.c.dependsOn.a', 'dependency cycle: a → b → c → a']],
  },
  {
    name: 'a service depending on itself',
    filename: 'compose.yaml',
    content: 'services:\n  a:\n    image: x\n    depends_on: [a]\n',
    issues: [[4, 18, 'services.a.depends_on[0]', 'dependency cycle: a → a']],
  },
  {
    name: '${VAR:?message}',
    filename: 'compose.yaml',
    content:
      'services:\n  web:\n    image: nginx\n    environment:\n      TOKEN: ${API_TOKEN:?create a token first}\n',
    issues: [[5, 14, 'services.web.environment.TOKEN', '"API_TOKEN" is not set: create a token first']],
  },
  {
    name: 'bad memory size',
    content: 'services:\n  web:\n    image: nginx\n    resources: { memory: 12Q }\n',
    issues: [
      [
        4,
        26,
        'services.web.resources.memory',
        'invalid memory size "12Q": expected bytes or a number with a unit, like 256Mi, 512M or 1g',
      ],
    ],
  },
  {
    name: 'bad memory size (Compose mem_limit)',
    filename: 'compose.yaml',
    content: 'services:\n  web:\n    image: nginx\n    mem_limit: lots\n',
    issues: [
      [
        4,
        16,
        'services.web.mem_limit',
        'invalid memory size "lots": expected bytes or a number with a unit, like 256Mi, 512M or 1g',
      ],
    ],
  },
  {
    name: 'env_file missing',
    filename: 'compose.yaml',
    content: 'services:\n  web:\n    image: nginx\n    env_file: [ok.env, missing.env]\n',
    dir: bad,
    issues: [[4, 24, 'services.web.env_file[1]', 'env file "missing.env" not found']],
  },
  {
    name: 'problems inside an env file, positioned in that file',
    content: 'services:\n  web:\n    image: nginx\n    envFile: broken.env\n',
    dir: bad,
    issues: [
      { file: 'broken.env', line: 3, column: 6, path: '', message: 'expected "=" after the variable name' },
    ],
  },
  {
    name: 'relative paths without a template directory',
    content: 'services:\n  web:\n    build: ./web\n',
    issues: [
      [
        3,
        12,
        'services.web.build',
        `relative path "./web" needs the template's directory, and none was given`,
      ],
    ],
  },
  {
    name: 'build context that does not exist',
    content: 'services:\n  web:\n    build: { context: ./nope }\n',
    dir: bad,
    issues: [[3, 23, 'services.web.build.context', 'build context "./nope" is not a directory']],
  },
  {
    name: 'Compose key that does not exist (typo)',
    filename: 'compose.yaml',
    content: 'x-defaults: { whatever: 1 }\nservices:\n  web:\n    imgae: nginx\n    x-note: ignored\n',
    issues: [[4, 5, 'services.web.imgae', 'unknown key (did you mean "image"?)']],
  },
  {
    name: 'Compose top-level typo: every issue at once',
    filename: 'docker-compose.yml',
    content: 'service:\n  web:\n    image: nginx\n',
    issues: [
      [1, 1, 'service', 'unknown key (did you mean "services"?)'],
      [1, 1, 'services', 'no services: add at least one under "services"'],
    ],
  },
  {
    name: 'several problems in several services',
    filename: 'compose.yaml',
    content: [
      'services:',
      '  web:',
      '    build: { context: ., dockerfil: Dockerfile.dev }',
      '    ports: ["8080:80", { target: 99999 }]',
      '    command: ["serve", { port: 1 }]',
      '  My_Api:',
      '    image: api',
      '    environment: 5',
      '  db:',
      '    image: postgres',
      '    restart: sometimes',
      '',
    ].join('\n'),
    dir: bad,
    issues: [
      [3, 26, 'services.web.build.dockerfil', 'unknown key (did you mean "dockerfile"?)'],
      [4, 34, 'services.web.ports[1].target', 'invalid port 99999: expected a number from 1 to 65535'],
      [5, 24, 'services.web.command[1]', 'expected a string, got a map'],
      [
        6,
        3,
        'services.My_Api',
        'invalid name "My_Api": use lowercase letters, digits and single hyphens, not at either end (it becomes a DNS label)',
      ],
      [8, 18, 'services.My_Api.environment', 'expected a map or a list, got 5'],
      [
        11,
        14,
        'services.db.restart',
        'expected one of "no", "always", "on-failure", "unless-stopped"; got "sometimes"',
      ],
    ],
  },
  {
    name: 'Compose health check test without CMD',
    filename: 'compose.yaml',
    content: 'services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [curl, -f, localhost]\n',
    issues: [
      [
        5,
        13,
        'services.web.healthcheck.test',
        'a list must start with "CMD", "CMD-SHELL" or "NONE", followed by the command',
      ],
    ],
  },
  {
    name: 'x-mayfly with an unknown key',
    filename: 'compose.yaml',
    content: 'x-mayfly: { ttl: 1h, tll: 2h }\nservices:\n  web:\n    image: nginx\n',
    issues: [[1, 22, 'x-mayfly.tll', 'unknown key (did you mean "ttl"?)']],
  },
  {
    name: 'image and build together in mayfly.yaml',
    content: 'services:\n  web:\n    image: nginx\n    build: .\n',
    dir: join(shop, 'web'),
    issues: [
      [4, 5, 'services.web.build', 'set either "image" or "build", not both (Mayfly tags what it builds)'],
    ],
  },
  {
    name: 'waiting for a job to be healthy',
    content:
      'services:\n  api:\n    image: api\n    dependsOn: { migrate: healthy }\njobs:\n  migrate:\n    image: api\n',
    issues: [
      [
        4,
        18,
        'services.api.dependsOn.migrate',
        '"migrate" is a job and never becomes healthy: wait for it to complete',
      ],
    ],
  },
  {
    name: 'a job with the name of a service',
    content: 'services:\n  api:\n    image: api\njobs:\n  api:\n    image: api\n',
    issues: [[5, 3, 'jobs.api', 'a service is already named "api"']],
  },
  {
    name: 'a job cannot restart always (Compose)',
    filename: 'compose.yaml',
    content:
      'services:\n  api:\n    image: api\n    depends_on: { seed: { condition: service_completed_successfully } }\n  seed:\n    image: api\n    restart: always\n',
    issues: [
      [7, 14, 'services.seed.restart', 'a job runs once: restart must be "no" or "on-failure", not "always"'],
    ],
  },
  {
    name: 'undeclared named volume, relative mount target',
    content: 'services:\n  db:\n    image: postgres\n    volumes: ["data:/var/lib/data", "cache:tmp"]\n',
    issues: [
      [4, 15, 'services.db.volumes[0]', 'volume "data" is not declared under the top-level "volumes"'],
      [4, 37, 'services.db.volumes[1]', 'mount target "tmp" must be an absolute path'],
    ],
  },
  {
    name: 'x-mayfly.data: a volume that is not declared, a seed that must run once, two sources',
    filename: 'compose.yaml',
    content: [
      'services:',
      '  db: { image: postgres, volumes: ["pg:/var/lib/postgresql/data"], restart: always }',
      '  load: { image: postgres, x-mayfly: { job: true } }',
      'volumes: { pg: {}, other: {} }',
      'x-mayfly:',
      '  data:',
      '    nope: { seededBy: load }',
      '    pg: { seededBy: db }',
      '    other: { seededBy: load, snapshot: golden }',
      '',
    ].join('\n'),
    issues: [
      // Named as a seed, db is a job (as a service others wait to complete is): it must run once.
      [2, 77, 'services.db.restart', 'a job runs once: restart must be "no" or "on-failure", not "always"'],
      [
        7,
        5,
        'x-mayfly.data.nope',
        '"nope" is not a named volume of this template (declare it under volumes:)',
      ],
      [9, 12, 'x-mayfly.data.other', "give exactly one of seededBy (a job) or snapshot (a snapshot's name)"],
    ],
  },
  {
    name: 'data in mayfly.yaml: an unknown job, a service, a hostile snapshot name, no source',
    content: [
      'services:',
      '  db: { image: postgres, volumes: ["pg:/data"] }',
      'volumes: { pg: {}, cache: {}, logs: {}, more: {} }',
      'data:',
      '  more: { seededBy: db }',
      '  pg: { seededBy: migrate }',
      '  cache: { snapshot: ../../etc }',
      '  logs: {}',
      '',
    ].join('\n'),
    issues: [
      [5, 21, 'data.more.seededBy', '"db" is a service, not a job: only a run-once job can seed a volume'],
      [6, 19, 'data.pg.seededBy', 'there is no job "migrate" in this template'],
      [
        7,
        22,
        'data.cache.snapshot',
        'a snapshot name is 1 to 63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
      ],
      [8, 9, 'data.logs', "give exactly one of seededBy (a job) or snapshot (a snapshot's name)"],
    ],
  },
  {
    name: 'unterminated quote in a command string',
    content: "services:\n  web:\n    image: nginx\n    command: sh -c 'echo hi\n",
    issues: [[4, 14, 'services.web.command', 'cannot split into words: unterminated single quote']],
  },
];

describe('bad templates: every issue, with file, line, column and path', () => {
  test.each(BAD)('$name', ({ filename = 'mayfly.yaml', content, dir, issues }) => {
    const expected = issues.map((i) =>
      Array.isArray(i) ? { file: filename, line: i[0], column: i[1], path: i[2], message: i[3] } : i,
    );
    expect(issuesOf({ filename, content, dir })).toEqual(expected);
  });

  test('the error message lists every issue as file:line:col: path: message', () => {
    try {
      loadTemplate({
        filename: 'mayfly.yaml',
        content: 'services:\n  web:\n    image: nginx\n    ports: "abc"\n    tty: true\n',
      });
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toBe(
        [
          'invalid template (2 problems):',
          '  mayfly.yaml:4:12: services.web.ports: expected a list, got "abc"',
          '  mayfly.yaml:5:5: services.web.tty: unknown key',
        ].join('\n'),
      );
    }
  });
});

describe('unsupported Compose keys', () => {
  test('are warnings with positions, never errors, never silent', () => {
    const content = [
      'services:',
      '  web:',
      '    image: nginx',
      '    privileged: true',
      '    network_mode: host',
      '    container_name: my-web',
      '    links: [db]',
      '    labels: { team: web }',
      '    logging: { driver: none }',
      '    x-team: web',
      '  db:',
      '    image: postgres',
      '    deploy:',
      '      placement: { constraints: [node.role==manager] }',
      '      resources: { reservations: { memory: 1g }, limits: { memory: 1g } }',
      'x-anything: { ignored: true }',
      '',
    ].join('\n');
    const template = loadTemplate({ filename: 'compose.yaml', content });
    const warnings = template.warnings.map((w) => [w.line, w.column, w.path, w.message]);
    expect(warnings).toEqual([
      [4, 5, 'services.web.privileged', 'not supported by Mayfly, ignored: containers never run privileged'],
      [
        5,
        5,
        'services.web.network_mode',
        'ignored: every environment has its own network, shared by all of its services',
      ],
      [7, 5, 'services.web.links', 'ignored: services reach each other by service name'],
      [
        9,
        5,
        'services.web.logging',
        'ignored: logs are collected by the runtime and read with `mayfly logs`',
      ],
      [14, 7, 'services.db.deploy.placement', 'not supported by Mayfly, ignored'],
      [15, 20, 'services.db.deploy.resources.reservations', 'ignored: only limits are applied'],
    ]);
    expect(template.workloads.map((w) => w.name)).toEqual(['web', 'db']);
    expect(template.workloads[1]!.resources).toEqual({ memoryBytes: 2 ** 30 });
  });

  test('a service named like a key is still a service', () => {
    const template = loadTemplate({
      filename: 'compose.yaml',
      content: 'services:\n  environment:\n    image: nginx\n    x-note: ignored\n',
    });
    expect(template.workloads.map((w) => w.name)).toEqual(['environment']);
  });
});

describe('interpolation', () => {
  const load = (content: string, options?: LoadOptions, filename = 'compose.yaml') =>
    loadTemplate({ filename, content }, options);

  test('reads inputs only, never the server environment', () => {
    expect(process.env.PATH).toBeDefined();
    const template = load('services:\n  web:\n    image: "x:${PATH}"\n');
    expect(template.workloads[0]!.image).toEqual({ ref: 'x:' });
    expect(template.warnings).toEqual([
      {
        file: 'compose.yaml',
        line: 3,
        column: 15,
        path: 'services.web.image',
        message: unsetWarning('PATH'),
      },
    ]);
  });

  test.each([
    ['services:\n  web:\n    image: "nginx:${TAG}"\n', [3, 19, 'services.web.image', 'TAG'], 'nginx:'],
    [
      'services:\n  web:\n    image: nginx\n    environment:\n      - GREETING=hello $WHO\n',
      [5, 24, 'services.web.environment[0]', 'WHO'],
      'nginx',
    ],
  ])(
    'an unset variable is empty, with a warning where it is used (as Compose): %s',
    (content, [line, column, path, name], image) => {
      const template = load(content);
      expect(template.workloads[0]!.image).toEqual({ ref: image });
      expect(template.warnings).toEqual([
        { file: 'compose.yaml', line, column, path, message: unsetWarning(name as string) },
      ]);
    },
  );

  test('an unset variable in an env file is a warning positioned in that file', () => {
    const template = loadTemplate({
      filename: 'compose.yaml',
      content: 'services:\n  web:\n    image: nginx\n    env_file: unset.env\n',
      dir: bad,
    });
    expect(template.workloads[0]!.env).toEqual({ URL: 'http://:8080' });
    expect(template.warnings).toEqual([
      { file: 'unset.env', line: 1, column: 12, path: 'URL', message: unsetWarning('HOST') },
    ]);
  });

  test('applies to every scalar value, after parsing, keeping $$ as $', () => {
    const content = [
      'services:',
      '  web:',
      '    image: "registry/web:${TAG:-latest}"',
      '    command: ["serve", "--branch=${BRANCH}", "--price=$$5"]',
      '    environment:',
      '      PR: ${PR_NUMBER}',
      '      SHA: $COMMIT_SHA',
      '      EMPTY: ${UNSET-}',
      '    ports: ["${PORT}"]',
      '    deploy: { replicas: "${REPLICAS:-1}" }',
      '',
    ].join('\n');
    const [web] = load(content, {
      inputs: { BRANCH: 'feat/x', PR_NUMBER: '42', COMMIT_SHA: 'abc123', PORT: '8080', REPLICAS: '3' },
    }).workloads;
    expect(web).toMatchObject({
      image: { ref: 'registry/web:latest' },
      command: ['serve', '--branch=feat/x', '--price=$5'],
      env: { PR: '42', SHA: 'abc123', EMPTY: '' },
      ports: [{ container: 8080, protocol: 'tcp', http: true }],
      replicas: 3,
    });
  });

  test('does not apply to keys, nor to ignored extensions', () => {
    const content =
      'x-doc: ${NOT_CHECKED}\nservices:\n  web:\n    image: nginx\n    environment:\n      ${KEY}: v\n';
    expect(load(content).workloads[0]!.env).toEqual({ '${KEY}': 'v' });
  });

  test('an error points at the reference inside a block scalar', () => {
    const content =
      'services:\n  web:\n    image: nginx\n    command: |\n      echo start\n      echo ${MISSING:?}\n';
    expect(issuesOf({ filename: 'compose.yaml', content })).toMatchObject([
      { line: 6, column: 12, path: 'services.web.command' },
    ]);
  });

  test('a bare environment key takes its value from the inputs, or is left out', () => {
    const content = 'services:\n  web:\n    image: nginx\n    environment: [BRANCH, UNSET, A=1]\n';
    expect(load(content, { inputs: { BRANCH: 'main' } }).workloads[0]!.env).toEqual({
      BRANCH: 'main',
      A: '1',
    });
  });

  describe('${ENV_URL}', () => {
    const content = [
      'services:',
      '  worker:',
      '    image: worker',
      '    environment: { CALLBACK: "${ENV_URL}/hooks" }',
      '  api:',
      '    image: api',
      '    expose: [9000]',
      '  web:',
      '    image: web',
      '    ports: ["${WEB_PORT:-3000}"]',
      '  admin:',
      '    image: admin',
      '    ports: [8080]',
      '',
    ].join('\n');
    const serviceUrl = (service: string) => `http://${service}--pr-1.localhost`;

    test('is the URL of the first service with an HTTP port', () => {
      const worker = load(content, { serviceUrl }).workloads[0]!;
      expect(worker.env).toEqual({ CALLBACK: 'http://web--pr-1.localhost/hooks' });
    });

    test('an input wins', () => {
      const worker = load(content, { serviceUrl, inputs: { ENV_URL: 'https://pr-1.example.com' } })
        .workloads[0]!;
      expect(worker.env).toEqual({ CALLBACK: 'https://pr-1.example.com/hooks' });
    });

    test('without serviceUrl it is an unset variable', () => {
      expect(load(content).warnings).toMatchObject([
        { line: 4, column: 31, message: expect.stringContaining('"ENV_URL" is not set') },
      ]);
    });

    test('with no HTTP service at all it is an error where it is used', () => {
      const noHttp = 'services:\n  worker:\n    image: worker\n    environment: { CALLBACK: "${ENV_URL}" }\n';
      expect(issuesOf({ filename: 'compose.yaml', content: noHttp }, { serviceUrl })).toEqual([
        {
          file: 'compose.yaml',
          line: 4,
          column: 31,
          path: 'services.worker.environment.CALLBACK',
          message: '"ENV_URL" has no value: no service has an HTTP port',
        },
      ]);
    });
  });
});

describe('Compose specifics', () => {
  const load = (content: string) => loadTemplate({ filename: 'compose.yaml', content });

  test('port syntaxes', () => {
    const content = [
      'services:',
      '  web:',
      '    image: web',
      '    ports: [80, "8080:8081", "127.0.0.1:5000:5001/tcp", "[::1]:6000:6001", "53:53/udp", "7000-7002", { target: 9000, published: 19000 }]',
      '    expose: ["9100", 9200, "9300/udp"]',
      '',
    ].join('\n');
    expect(load(content).workloads[0]!.ports).toEqual([
      { container: 80, protocol: 'tcp', http: true },
      { container: 8081, protocol: 'tcp', http: true },
      { container: 5001, protocol: 'tcp', http: true },
      { container: 6001, protocol: 'tcp', http: true },
      { container: 53, protocol: 'udp', http: false },
      { container: 7000, protocol: 'tcp', http: true },
      { container: 7001, protocol: 'tcp', http: true },
      { container: 7002, protocol: 'tcp', http: true },
      { container: 9000, protocol: 'tcp', http: true },
      { container: 9100, protocol: 'tcp', http: false },
      { container: 9200, protocol: 'tcp', http: false },
      { container: 9300, protocol: 'udp', http: false },
    ]);
  });

  test('x-mayfly: job, http and public', () => {
    const content = [
      'services:',
      '  web:',
      '    image: web',
      '    ports: ["80", "3000"]',
      '    x-mayfly: { http: 3000 }',
      '  internal:',
      '    image: internal',
      '    ports: ["80"]',
      '    x-mayfly: { public: false }',
      '  seed:',
      '    image: seed',
      '    x-mayfly: { job: true }',
      '',
    ].join('\n');
    const [web, internal, seed] = load(content).workloads;
    expect(web!.ports).toEqual([
      { container: 80, protocol: 'tcp', http: false },
      { container: 3000, protocol: 'tcp', http: true },
    ]);
    expect(internal!.ports).toEqual([{ container: 80, protocol: 'tcp', http: false }]);
    expect(seed!.kind).toBe('job');
  });

  test('health checks: string, CMD list, NONE, disable, defaults', () => {
    const content = [
      'services:',
      '  a: { image: x, healthcheck: { test: "curl -f localhost" } }',
      '  b: { image: x, healthcheck: { test: [CMD, curl, -f, localhost], timeout: 2s, retries: 5 } }',
      '  c: { image: x, healthcheck: { test: [NONE] } }',
      '  d: { image: x, healthcheck: { test: "true", disable: true } }',
      '',
    ].join('\n');
    const [a, b, c, d] = load(content).workloads;
    expect(a!.healthcheck).toEqual({
      command: { shell: 'curl -f localhost' },
      intervalMs: 5000,
      timeoutMs: 5000,
      retries: 3,
      startPeriodMs: 0,
    });
    expect(b!.healthcheck).toEqual({
      command: { exec: ['curl', '-f', 'localhost'] },
      intervalMs: 5000,
      timeoutMs: 2000,
      retries: 5,
      startPeriodMs: 0,
    });
    // As Compose: NONE and disable turn off every check, the image's own too.
    expect(c!.healthcheck).toBe('disabled');
    expect(d!.healthcheck).toBe('disabled');
  });

  test('a service running the image another service builds gets the same build', () => {
    const content = [
      'services:',
      '  api:',
      '    build: ./api',
      '    image: acme/api:dev',
      '  worker:',
      '    image: acme/api:dev',
      '    command: work',
      '  db:',
      '    image: postgres',
      '',
    ].join('\n');
    const [api, worker, db] = loadTemplate({ filename: 'compose.yaml', content, dir: shop }).workloads;
    const build = { context: join(shop, 'api'), dockerfile: 'Dockerfile', args: {} };
    expect(api).toMatchObject({ image: { build } });
    expect(worker).toMatchObject({ image: { build }, command: ['work'] });
    expect(db!.image).toEqual({ ref: 'postgres' });
  });

  test('YAML anchors and merge keys', () => {
    const content = [
      'x-base: &base',
      '  image: app:1',
      '  environment: { LOG: info, MODE: base }',
      'services:',
      '  web:',
      '    <<: *base',
      '    environment: { MODE: web }',
      '  worker:',
      '    <<: *base',
      '    command: work',
      '',
    ].join('\n');
    const [web, worker] = load(content).workloads;
    expect(web).toMatchObject({ image: { ref: 'app:1' }, env: { MODE: 'web' } });
    expect(worker).toMatchObject({
      image: { ref: 'app:1' },
      env: { LOG: 'info', MODE: 'base' },
      command: ['work'],
    });
  });

  test('a merged map keeps its own keys over what it merges in turn', () => {
    const content = [
      'x-a: &a { image: a, command: from-a, user: a }',
      'x-b: &b { <<: *a, image: b }',
      'x-c: &c { <<: [*b, { user: c, working_dir: /c }] }',
      'services:',
      '  web: { <<: *c, command: own }',
      '',
    ].join('\n');
    expect(load(content).workloads[0]).toMatchObject({
      image: { ref: 'b' },
      command: ['own'],
      user: 'a',
      workingDir: '/c',
    });
  });
});

describe('LoadOptions.root', () => {
  const outside = 'is outside the directory templates may use';
  const load = (content: string, dir = shop) =>
    issuesOf({ filename: 'compose.yaml', content, dir }, { root: shop }).map((i) => [
      i.line,
      i.column,
      i.message,
    ]);

  test('keeps every host path inside it', () => {
    const content = [
      'services:',
      '  web:',
      '    build: { context: ../.., dockerfile: ../../etc/passwd }',
      '    env_file: /etc/hostname',
      '    volumes: ["/var/run/docker.sock:/var/run/docker.sock", "../../..:/host"]',
      '  api:',
      '    build: { context: ./api, dockerfile: ../../../outside }',
      '',
    ].join('\n');
    expect(load(content)).toEqual([
      [3, 23, `path "../.." ${outside}`],
      [4, 15, `path "/etc/hostname" ${outside}`],
      [5, 15, `path "/var/run/docker.sock" ${outside}`],
      [5, 60, `path "../../.." ${outside}`],
      [7, 42, `path "../../../outside" ${outside}`],
    ]);
  });

  test('follows symbolic links', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mayfly-spec-'));
    try {
      symlinkSync('/etc', join(dir, 'etc'));
      const content = 'services:\n  web:\n    image: nginx\n    env_file: etc/hostname\n';
      const issues = issuesOf({ filename: 'compose.yaml', content, dir }, { root: dir });
      expect(issues.map((i) => i.message)).toEqual([`path "etc/hostname" ${outside}`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('accepts a template whose paths stay inside', () => {
    const template = loadTemplate(source('compose.yaml'), { inputs: { COMMIT_SHA: 'x' }, root: shop });
    expect(template.workloads).toHaveLength(5);
  });

  test('without it, an absolute bind is only a warning', () => {
    const content = 'services:\n  web:\n    image: nginx\n    volumes: ["/srv/data:/data"]\n';
    expect(loadTemplate({ filename: 'compose.yaml', content }).warnings).toMatchObject([
      {
        line: 4,
        column: 15,
        message: `bind mount of host path "/srv/data": the environment depends on this machine's files`,
      },
    ]);
  });
});

describe('LoadOptions.allowedHostPaths', () => {
  test('host paths inside an allowed directory are accepted besides the root', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mayfly-allowed-'));
    try {
      const content = `services:\n  web:\n    image: x\n    volumes: ["${dir}:/a", "/etc:/b"]\n`;
      const issues = issuesOf(
        { filename: 'compose.yaml', content, dir: shop },
        { root: shop, allowedHostPaths: [dir] },
      );
      expect(issues.map((i) => [i.column, i.message])).toEqual([
        [
          content.split('\n')[3]!.indexOf('"/etc') + 1,
          'path "/etc" is outside the directory templates may use',
        ],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('LoadOptions.onHostPath', () => {
  const content = [
    'services:',
    '  web:',
    '    build: ./web',
    '    env_file: [.env, backend.env, .env]',
    '    volumes: ["./db:/db", "/etc/hostname:/h:ro", "data:/data", "/anonymous"]',
    '    environment: { TAG: "${UNSET}" }',
    '  api:',
    '    build: { context: ../shop/api, dockerfile: Dockerfile.dev }',
    '    volumes: [{ type: bind, source: ./db, target: /db }]',
    '  broken:',
    '    imgae: typo',
    '    build: ./not-reported',
    'volumes: { data: {} }',
    '',
  ].join('\n');

  test('hears of every host path the template names, once each, although the template has errors', () => {
    const refs: { kind: string; path: string }[] = [];
    const issues = issuesOf(
      { filename: 'compose.yaml', content, dir: shop },
      {
        root: shop,
        onHostPath: (ref) => refs.push(ref),
      },
    );
    expect(issues.map((i) => i.message)).toEqual([
      'path "/etc/hostname" is outside the directory templates may use',
      'unknown key (did you mean "image"?)',
    ]);
    expect(refs).toEqual([
      { kind: 'build-context', path: join(shop, 'web') },
      { kind: 'dockerfile', path: join(shop, 'web', 'Dockerfile') },
      { kind: 'env-file', path: join(shop, '.env') },
      { kind: 'env-file', path: join(shop, 'backend.env') },
      { kind: 'bind', path: join(shop, 'db') },
      { kind: 'bind', path: '/etc/hostname' },
      { kind: 'build-context', path: join(shop, 'api') },
      { kind: 'dockerfile', path: join(shop, 'api', 'Dockerfile.dev') },
    ]);
  });

  test('is called once per path when ${ENV_URL} makes the template load twice', () => {
    const refs: string[] = [];
    const twice =
      'services:\n  web:\n    build: ./web\n    ports: [80]\n    environment: { URL: "${ENV_URL}" }\n';
    loadTemplate(
      { filename: 'compose.yaml', content: twice, dir: shop },
      { serviceUrl: (s) => `http://${s}`, onHostPath: (ref) => refs.push(ref.path) },
    );
    expect(refs).toEqual([join(shop, 'web'), join(shop, 'web', 'Dockerfile')]);
  });
});

describe('isComposeFile', () => {
  test.each([
    ['compose.yaml', '', true],
    ['compose.yml', '', true],
    ['docker-compose.yml', '', true],
    ['docker-compose.override.yaml', '', true],
    ['compose.prod.yaml', '', true],
    ['preview.compose.yaml', '', true],
    ['deploy/compose.yaml', '', true],
    ['mayfly.yaml', '', false],
    ['mayfly.yml', '', false],
    ['preview.mayfly.yaml', '', false],
    ['env.yaml', 'services:\n  web:\n    image: nginx\n', true],
    ['env.yaml', 'services:\n  web:\n    image: nginx\n    environment: { A: 1 }\n', true],
    ['env.yaml', 'services:\n  web:\n    image: nginx\n    env: { A: 1 }\n', false],
    ['env.yaml', 'services:\n  web:\n    image: nginx\nlifecycle: { ttl: 1h }\n', false],
    ['env.yaml', 'jobs: {}\n', false],
    ['env.yaml', 'not: [valid\n', true],
    ['env.yaml', 'x-b: &b { env: { A: 1 } }\nservices:\n  web: { <<: *b, image: x }\n', false],
    [
      'env.yaml',
      `a: &a [${Array(10).fill('x').join(',')}]\n${'bcdefghij'
        .split('')
        .map((c, i) => `${c}: &${c} [${Array(10).fill(`*${'abcdefghij'[i]}`).join(',')}]`)
        .join('\n')}\n`,
      true,
    ],
  ])('%s %j → %s', (filename, content, expected) => {
    expect(isComposeFile(filename, content)).toBe(expected);
  });
});

describe('what one template may ask for', () => {
  const { maxReplicas, maxContainers, maxChars } = TEMPLATE_LIMITS;
  const KiB = 1024;

  test.each([
    [
      'deploy.replicas',
      'compose.yaml',
      '    deploy: { replicas: 200 }',
      'services.web.deploy.replicas',
      25,
      {},
    ],
    ['scale', 'compose.yaml', '    scale: 200', 'services.web.scale', 12, {}],
    ['mayfly.yaml replicas', 'mayfly.yaml', '    replicas: 200', 'services.web.replicas', 15, {}],
    [
      'interpolated',
      'compose.yaml',
      '    deploy: { replicas: "${N}" }',
      'services.web.deploy.replicas',
      25,
      { N: '200' },
    ],
  ])('replicas past the limit: %s', (_, filename, line, path, column, inputs) => {
    const content = `services:\n  web:\n    image: nginx\n${line}\n`;
    expect(issuesOf({ filename, content }, { inputs })).toEqual([
      {
        file: filename,
        line: 4,
        column,
        path,
        message: `200 replicas: a service may have at most ${maxReplicas}`,
      },
    ]);
  });

  test('replicas up to the limit load', () => {
    const content = `services:\n  web:\n    image: nginx\n    replicas: ${maxReplicas}\n`;
    expect(loadTemplate({ filename: 'mayfly.yaml', content }).workloads[0]!.replicas).toBe(maxReplicas);
  });

  test('the containers of a template add up: the replicas of every service, and one per job', () => {
    const full = maxContainers / maxReplicas;
    const services = Array.from(
      { length: full },
      (_, i) => `  s${i}: { image: x, replicas: ${maxReplicas} }`,
    );
    const atLimit = `services:\n${services.join('\n')}\n`;
    expect(loadTemplate({ filename: 'mayfly.yaml', content: atLimit }).workloads).toHaveLength(full);
    // One job more: the error is at the job, which has no replicas of its own.
    const withJob = `${atLimit}jobs:\n  migrate: { image: x }\n`;
    expect(issuesOf({ filename: 'mayfly.yaml', content: withJob })).toEqual([
      {
        file: 'mayfly.yaml',
        line: full + 3,
        column: 3,
        path: 'jobs.migrate',
        message: `${maxContainers + 1} containers in all (the replicas of every service, and one per job): a template may have at most ${maxContainers}`,
      },
    ]);
    // In Compose, at the replicas of the service that goes past the limit.
    const compose = `services:\n${services.map((s) => s.replace(/replicas: (\d+)/, 'deploy: { replicas: $1 }')).join('\n')}\n  extra: { image: x, scale: 2 }\n`;
    expect(issuesOf({ filename: 'compose.yaml', content: compose })).toMatchObject([
      {
        line: full + 2,
        path: 'services.extra.scale',
        message: expect.stringMatching(/^102 containers in all/),
      },
    ]);
  });

  test('a service past its own replica limit counts at that limit towards the total', () => {
    const content = 'services:\n  a: { image: x, replicas: 1000 }\n  b: { image: x, replicas: 5 }\n';
    expect(issuesOf({ filename: 'mayfly.yaml', content }).map((i) => i.message)).toEqual([
      `1000 replicas: a service may have at most ${maxReplicas}`,
    ]);
  });

  /** A template whose 100 KiB anchor is used in `uses` variables. */
  const anchored = (uses: number) => {
    const env = Array.from({ length: uses }, (_, i) => `      V${i}: *big`);
    return `x-big: &big "${'x'.repeat(100 * KiB)}"\nservices:\n  web:\n    image: nginx\n    environment:\n${env.join('\n')}\n`;
  };

  test('a 100 KiB anchor used in 78 variables is refused at the alias that goes past the limit', () => {
    const content = anchored(78);
    expect(content.length).toBeLessThan(102 * KiB);
    const issues = issuesOf({ filename: 'compose.yaml', content });
    expect(issues).toEqual([
      {
        file: 'compose.yaml',
        line: expect.any(Number),
        column: 12,
        path: '',
        message: `alias *big expands the document past ${maxChars} characters`,
      },
    ]);
    const uses = Math.floor(maxChars / (100 * KiB));
    expect(content.split('\n')[issues[0]!.line! - 1]).toBe(`      V${uses}: *big`);
  });

  test('what a template may grow to is proportionate: the plan of the largest accepted one', () => {
    const uses = Math.floor(maxChars / (100 * KiB)) - 1;
    const template = loadTemplate({ filename: 'compose.yaml', content: anchored(uses) });
    const stored = JSON.stringify(plan(template, { envId: 'e1', envName: 'pr-1', project: 'p' }));
    expect(stored.length).toBeGreaterThan(uses * 100 * KiB);
    expect(stored.length).toBeLessThan(maxChars + 64 * KiB);
    // Twice the largest template, where it was eight times.
    expect(maxChars).toBeLessThanOrEqual(2 * TEMPLATE_MAX_BYTES);
  });

  test('inputs interpolated into many values count towards the same limit', () => {
    const env = Array.from({ length: 30 }, (_, i) => `      V${i}: "\${BIG}"`).join('\n');
    const content = `services:\n  web:\n    image: nginx\n    environment:\n${env}\n`;
    const issues = issuesOf(
      { filename: 'compose.yaml', content },
      { inputs: { BIG: 'x'.repeat(100 * KiB) } },
    );
    expect(issues).toMatchObject([
      {
        line: 25,
        message: `the template's keys and values, once interpolated, are longer than ${maxChars} characters`,
      },
    ]);
  });

  test('env files copied into services count towards the same limit as the document', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mayfly-caps-'));
    try {
      writeFileSync(join(dir, 'big.env'), `A=${'x'.repeat(600 * KiB)}\n`);
      // 1.5 MiB of document, then 600 KiB of env file: past 2 MiB together, not apart.
      const env = Array.from({ length: 15 }, (_, i) => `      V${i}: *big`).join('\n');
      const content = `x-big: &big "${'x'.repeat(100 * KiB)}"\nservices:\n  web:\n    image: nginx\n    env_file: big.env\n    environment:\n${env}\n`;
      expect(issuesOf({ filename: 'compose.yaml', content, dir })).toEqual([
        {
          file: 'compose.yaml',
          line: 5,
          column: 15,
          path: 'services.web.env_file',
          message: `the template grows past ${maxChars} characters once env files, inputs, shared builds and port ranges are copied into each service that uses them`,
        },
      ]);
      const smaller = content.replace(/\n {6}V1[0-4]: \*big/g, '');
      expect(
        loadTemplate({ filename: 'compose.yaml', content: smaller, dir }).workloads[0]!.env.A,
      ).toHaveLength(600 * KiB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
