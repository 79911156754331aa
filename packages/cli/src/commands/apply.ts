import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { ApiPaths, CreateProjectRequest, type TemplateIssue } from '@mayfly/contract';
import type { Command } from 'commander';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import { CliError, ExitCode, UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';
import { SECRET_MAX_BYTES, schemaMessage, trimSecret } from './project.js';

/** Largest projects file read. */
const FILE_MAX_BYTES = 1024 * 1024;

/** Where each secret of a project is read from, in the file: never the secret itself. */
const SECRET_SOURCES = {
  webhookSecret: ['webhookSecretFile', 'webhookSecretEnv'],
  forgeToken: ['forgeTokenFile', 'forgeTokenEnv'],
} as const;

type DocPath = (string | number)[];

/** A problem with the file, where it is and which project it is in. */
interface ApplyIssue {
  path: DocPath;
  message: string;
  /** Point at the key itself (an unknown or refused field), not its value. */
  atKey?: boolean;
}

interface ApplyOptions {
  file: string;
  dryRun?: boolean;
}

/** `mayfly apply -f projects.yaml`: create or update the projects a file declares. */
export function registerApply(program: Command): void {
  program
    .command('apply')
    .description('create or update the projects a YAML file declares (idempotent; needs an admin token)')
    .requiredOption('-f, --file <file>', 'the projects file ("-": stdin)')
    .option('--dry-run', 'check the file and read its secrets, but send nothing')
    .addHelpText(
      'after',
      `
The file lists projects with the fields of \`mayfly project create\` (as in the API's
CreateProjectRequest); each one is its whole declaration: a policy field left out goes back to
its default. Projects not in the file are left alone. Applying an unchanged file changes nothing.

Secrets are never written in the file (it is meant for git): webhookSecret and forgeToken are
refused. Give them as webhookSecretFile / webhookSecretEnv, forgeTokenFile / forgeTokenEnv, and
secret inputs as { file: PATH } or { env: VARIABLE }. Relative paths are from the file's folder.
A secret left out stays as it is on the server.

  projects:
    - name: web
      repo: https://github.com/acme/web.git
      template: deploy/compose.yaml
      webhookSecretFile: secrets/web-webhook
      forgeTokenEnv: WEB_GITHUB_TOKEN
      secretInputs:
        STRIPE_KEY: { env: STRIPE_TEST_KEY }
      policy:
        ttl: 2d
        maxEnvironments: 5
        filters: { branches: [main], skipDrafts: true }

Prints one line per project: created, updated or unchanged, and its name.

Examples:
  mayfly apply -f projects.yaml
  mayfly apply -f projects.yaml --dry-run
  mayfly apply -f projects.yaml --json`,
    )
    .action((options: ApplyOptions, command: Command) => apply(options, command));
}

async function apply(options: ApplyOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const fromStdin = options.file === '-';
  const shown = fromStdin ? 'stdin' : relative(process.cwd(), options.file) || options.file;
  const text = readProjectsFile(options.file, shown);
  const base = fromStdin ? process.cwd() : dirname(resolve(options.file));
  const { requests, issues, names } = readProjects(text, shown, base);

  if (issues.length > 0) {
    if (!globals.json) for (const issue of issues) printStderr(issueLine(issue));
    const message = `${shown} is not valid: ${issues.length} error${issues.length === 1 ? '' : 's'}; nothing was sent`;
    throw new CliError(message, ExitCode.usage, {
      json: { error: { code: 'invalid_usage', message, issues } },
    });
  }
  if (options.dryRun) {
    if (globals.json) return printJson({ valid: true, projects: names });
    printStdout(
      requests.length === 0
        ? `${shown} is valid: no projects; nothing sent`
        : `${shown} is valid: ${names.join(', ')}; nothing sent (--dry-run)`,
    );
    return;
  }

  const client = await connect(globals);
  const results = await client.projects.apply(requests);
  if (globals.json) printJson(results);
  else for (const r of results) printStdout(`${r.action} ${r.name}`);
  for (const r of results) {
    const request = requests.find((p) => p.name === r.name);
    if (r.action === 'created' && request?.webhookSecret !== undefined) {
      const url = `${client.baseUrl}${request.forge === 'gitlab' ? ApiPaths.gitlabWebhook : ApiPaths.githubWebhook}`;
      printStderr(
        `${r.name}: point its ${request.forge === 'gitlab' ? 'GitLab' : 'GitHub'} webhook at ${url}`,
      );
    }
  }
}

function readProjectsFile(file: string, shown: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    throw new UsageError(
      `cannot read ${shown}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  if (bytes.length > FILE_MAX_BYTES)
    throw new UsageError(`${shown} is larger than ${FILE_MAX_BYTES / 1024} KiB`);
  return bytes.toString('utf8');
}

/**
 * The projects of the file as the API takes them, their secrets read from the files and variables
 * named; or every problem found, each with its line and column.
 */
export function readProjects(
  text: string,
  shown: string,
  base: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): { requests: CreateProjectRequest[]; names: string[]; issues: TemplateIssue[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return { line: null, column: null };
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  if (doc.errors.length > 0) {
    return {
      requests: [],
      names: [],
      issues: doc.errors.map((e) => ({
        file: shown,
        ...at(e.pos[0]),
        path: '',
        message: e.message.split('\n')[0]!,
      })),
    };
  }

  const found: ApplyIssue[] = [];
  const requests: CreateProjectRequest[] = [];
  const names: string[] = [];
  const labels = new Map<number, string>();
  const data = doc.toJS({ maxAliasCount: 100 }) as unknown;
  const top = isPlainObject(data) ? data : null;
  if (!top || !Array.isArray(top.projects)) {
    found.push({ path: top ? ['projects'] : [], message: 'expected `projects:` with a list of projects' });
  } else {
    for (const key of Object.keys(top)) {
      if (key !== 'projects')
        found.push({ path: [key], message: 'unknown key: only `projects:` is read', atKey: true });
    }
    const seen = new Set<string>();
    top.projects.forEach((entry: unknown, index: number) => {
      if (isPlainObject(entry) && typeof entry.name === 'string') {
        labels.set(index, entry.name);
        if (seen.has(entry.name)) {
          found.push({ path: ['projects', index, 'name'], message: `"${entry.name}" is declared twice` });
        }
        seen.add(entry.name);
      }
      const request = projectRequest(entry, index, base, env, found);
      if (!request) return;
      requests.push(request);
      names.push(request.name);
    });
  }

  const issues = found
    .map((issue): TemplateIssue => {
      const node = nodeAt(doc.contents, issue.path, issue.atKey === true);
      const index = issue.path[0] === 'projects' && typeof issue.path[1] === 'number' ? issue.path[1] : null;
      const field = index === null ? issue.path.slice(0) : issue.path.slice(2);
      const which =
        index === null ? '' : `project ${index + 1}${labels.has(index) ? ` "${labels.get(index)}"` : ''}: `;
      const fieldText = field.length > 0 ? `${formatPath(field)}: ` : '';
      return {
        file: shown,
        ...at(node?.range?.[0]),
        path: formatPath(issue.path),
        message: `${which}${fieldText}${issue.message}`,
      };
    })
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  return { requests: issues.length > 0 ? [] : requests, names, issues };
}

/** One project of the file as a request, its secrets read; null (with issues added) when it is not valid. */
function projectRequest(
  entry: unknown,
  index: number,
  base: string,
  env: Readonly<Record<string, string | undefined>>,
  issues: ApplyIssue[],
): CreateProjectRequest | null {
  const here = (...path: DocPath): DocPath => ['projects', index, ...path];
  if (!isPlainObject(entry)) {
    issues.push({ path: here(), message: 'expected a project: name, repo, …' });
    return null;
  }
  const before = issues.length;
  const request: Record<string, unknown> = {};
  /** Where each secret's value came from: the key that names it, for messages about the value. */
  const sourceKey: Record<string, string> = {};
  const secretKeys = new Set<string>(Object.values(SECRET_SOURCES).flat());

  for (const [key, value] of Object.entries(entry)) {
    if (key === 'webhookSecret' || key === 'forgeToken') {
      const [file, variable] = SECRET_SOURCES[key];
      issues.push({
        path: here(key),
        atKey: true,
        message: `a secret is not written in this file (files kept in git must not hold secrets): use ${file}: PATH or ${variable}: VARIABLE`,
      });
    } else if (key === 'secretInputs' || secretKeys.has(key)) {
      // Read below.
    } else request[key] = value;
  }

  for (const [field, [fileKey, envKey]] of Object.entries(SECRET_SOURCES)) {
    const file = entry[fileKey];
    const variable = entry[envKey];
    if (file !== undefined && variable !== undefined) {
      issues.push({ path: here(envKey), atKey: true, message: `give ${fileKey} or ${envKey}, not both` });
      continue;
    }
    const key = file !== undefined ? fileKey : envKey;
    const secret = readSecret(file ?? variable, file !== undefined ? 'file' : 'env', base, env);
    if (secret === undefined) continue;
    if ('error' in secret) issues.push({ path: here(key), message: secret.error });
    else {
      request[field] = secret.value;
      sourceKey[field] = key;
    }
  }

  if (entry.secretInputs !== undefined) {
    if (!isPlainObject(entry.secretInputs)) {
      issues.push({
        path: here('secretInputs'),
        message: 'expected NAME: { file: PATH } or NAME: { env: VARIABLE }',
      });
    } else {
      const inputs: Record<string, string> = {};
      for (const [name, source] of Object.entries(entry.secretInputs)) {
        const keys = isPlainObject(source) ? Object.keys(source) : [];
        if (!isPlainObject(source) || keys.length !== 1 || !(keys[0] === 'file' || keys[0] === 'env')) {
          issues.push({
            path: here('secretInputs', name),
            message:
              typeof source === 'string'
                ? 'a secret is not written in this file (files kept in git must not hold secrets): use { file: PATH } or { env: VARIABLE }'
                : 'expected { file: PATH } or { env: VARIABLE }',
          });
          continue;
        }
        const kind = keys[0] as 'file' | 'env';
        const secret = readSecret(source[kind], kind, base, env);
        if (secret === undefined) continue;
        if ('error' in secret) issues.push({ path: here('secretInputs', name, kind), message: secret.error });
        else inputs[name] = secret.value;
      }
      request.secretInputs = inputs;
    }
  }

  const parsed = CreateProjectRequest.safeParse(request);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
      const field = path[0];
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys)
          issues.push({ path: here(...path, key), atKey: true, message: 'unknown field' });
      } else if (typeof field === 'string' && field in sourceKey) {
        // About a secret's value: point at where it is read from, and never show it.
        issues.push({
          path: here(sourceKey[field]!),
          message: `the secret read from it: ${schemaMessage(issue)}`,
        });
      } else issues.push({ path: here(...path), message: schemaMessage(issue) });
    }
  }
  return issues.length > before ? null : (request as CreateProjectRequest);
}

type SecretRead = { value: string } | { error: string } | undefined;

/** A secret from a file (relative to the projects file's folder) or a variable; undefined when not given. */
function readSecret(
  source: unknown,
  kind: 'file' | 'env',
  base: string,
  env: Readonly<Record<string, string | undefined>>,
): SecretRead {
  if (source === undefined) return undefined;
  if (typeof source !== 'string' || source === '') {
    return {
      error: kind === 'file' ? 'expected a file path' : 'expected the name of an environment variable',
    };
  }
  if (kind === 'env') {
    const value = env[source];
    if (value === undefined) return { error: `$${source} is not set` };
    const trimmed = trimSecret(value);
    return trimmed === '' ? { error: `$${source} is empty` } : { value: trimmed };
  }
  const path = resolve(base, source);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    return {
      error: `cannot read "${source}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    };
  }
  if (bytes.length > SECRET_MAX_BYTES)
    return { error: `"${source}" is larger than ${SECRET_MAX_BYTES / 1024} KiB: is it the right file?` };
  const value = trimSecret(bytes.toString('utf8'));
  return value === '' ? { error: `"${source}" is empty` } : { value };
}

/** The node at `path` (its key with `atKey`), else the deepest one found on the way. */
function nodeAt(root: unknown, path: DocPath, atKey: boolean): Node | null {
  let node = (root ?? null) as Node | null;
  for (let i = 0; i < path.length; i++) {
    const segment = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) return node;
      if (last && atKey && isScalar(pair.key)) return pair.key;
      if (!pair.value) return isScalar(pair.key) ? pair.key : node;
      node = pair.value as Node;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item = node.items[segment];
      if (!item) return node;
      node = item as Node;
    } else return node;
  }
  return node;
}

/** `projects[1].policy.ttl` */
function formatPath(path: DocPath): string {
  return path
    .map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`))
    .join('')
    .replace(/^\./, '');
}

/** `file:line:column: message`, as `mayfly validate` prints an issue. */
function issueLine(issue: TemplateIssue): string {
  const where = [issue.file, issue.line, issue.column].filter((part) => part !== null).join(':');
  return `${where}: ${issue.message}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
