/**
 * `mayfly validate`: a template checked here, without a server, by the server's own loader: the
 * same variables as `mayfly up` sends (--input, the shell, `.env`), the same profiles, override
 * files and `extends`, host paths confined to the folder `up` would send. Errors and warnings are
 * printed with their positions; the exit code says whether `mayfly up` would be refused for the
 * template (2) or not (0).
 *
 * What only the server knows is not checked: Dockerfiles' own contents (network fetches are
 * refused at create), host paths its operator allows (`serve --allow-host-path`), its quotas, and
 * the URL `${ENV_URL}` will really have.
 */
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import type { TemplateIssue } from '@mayfly/contract';
import type { Command } from 'commander';
import { CliError, ExitCode, UsageError } from '../cli-error.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { resolveTemplateInputs, templateSource } from '../template-inputs.js';
import { globalOptions } from './global-options.js';
import { collectFile, DEFAULT_TEMPLATES, inputOption, profileOption, readTemplateFiles } from './up.js';

/** What `${ENV_ID}` and `${ENV_NAME}` are while validating: the server sets them for each environment. */
const PLACEHOLDER_ENV = { id: 'validate00', name: 'validate' } as const;

interface ValidateOptions {
  file?: string[];
  root?: string;
  input?: Record<string, string>;
  profile?: string[];
}

/** One workload of a valid template, as `--json` lists it: enough to see what would run. */
export interface ValidatedService {
  name: string;
  kind: 'service' | 'job';
  /** The image it runs, or null when it is built. */
  image: string | null;
  /** Its build context relative to the first file's folder (`.` for that folder), or null. */
  build: string | null;
  replicas: number;
  /** Container ports; `http` for the one the gateway routes. */
  ports: { container: number; protocol: 'tcp' | 'udp'; http: boolean }[];
}

/** The whole output of `mayfly validate --json`. */
export interface ValidateResult {
  /** No errors (warnings allowed): `mayfly up` would accept the template. */
  valid: boolean;
  errors: TemplateIssue[];
  warnings: TemplateIssue[];
  /** In the template's order; empty when it is not valid. */
  services: ValidatedService[];
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check a template here, without a server: its errors and warnings, with their positions')
    .option(
      '-f, --file <file>',
      `template file (default: the first of ${DEFAULT_TEMPLATES.join(', ')}); repeat it for Compose override files`,
      collectFile,
    )
    .option('--root <dir>', "the folder `mayfly up --root` would send (default: the first file's folder)")
    .addOption(inputOption())
    .addOption(profileOption())
    .addHelpText(
      'after',
      `
Variables, profiles, override files and extends are read as \`mayfly up\` reads them; host
paths must stay inside the folder it would send. \${ENV_ID} and \${ENV_NAME} stand for the
values the server gives each environment.

Errors, then warnings, are printed on stderr as file:line:column: path: message (a warning
says "warning:" after its position). Exit code 0: valid, perhaps with warnings; 2: errors.

--json prints { "valid", "errors", "warnings", "services" } on stdout: issues as
{ file, line, column, path, message }; services as { name, kind, image (or null when built),
build (its context from the first file's folder, or null), replicas, ports }.

Examples:
  mayfly validate
  mayfly validate -f compose.yaml -f compose.ci.yaml --profile tools
  mayfly validate -i TAG=v2 --json`,
    )
    .action((options: ValidateOptions, command: Command) => validate(options, command));
}

async function validate(options: ValidateOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const [template, ...overrides] = readTemplateFiles(options.file);
  const { file, content } = template!;
  const dir = dirname(file);
  const root = options.root === undefined ? dir : resolve(options.root);
  for (const f of [template!, ...overrides]) {
    const rel = relative(root, f.file);
    if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
      throw new UsageError(
        `${f.file} is not inside ${root}`,
        '--root must be a folder that holds every -f file',
      );
    }
  }
  const { inputs, profiles } = await resolveTemplateInputs({
    file,
    content,
    overrides,
    given: options.input ?? {},
    profiles: options.profile ?? [],
    env: process.env,
  });

  const { loadTemplate, plan, TemplateError } = await import('@mayfly/server/template');
  const { id, name } = PLACEHOLDER_ENV;
  let result: ValidateResult;
  try {
    const loaded = loadTemplate(templateSource(template!, overrides), {
      inputs: { ...inputs, ENV_ID: id, ENV_NAME: name },
      root,
      profiles,
      serviceUrl: (service) => `http://${service}--${name}.localhost`,
    });
    // What the server does next with it: a template that loads must also plan.
    plan(loaded, { envId: id, envName: name, project: 'default' });
    result = {
      valid: true,
      errors: [],
      warnings: loaded.warnings,
      services: loaded.workloads.map((w) => ({
        name: w.name,
        kind: w.kind,
        image: w.image.build ? null : (w.image.ref ?? null),
        build: w.image.build ? relative(dir, w.image.build.context).split(sep).join('/') || '.' : null,
        replicas: w.replicas,
        ports: w.ports.map((p) => ({ container: p.container, protocol: p.protocol, http: p.http })),
      })),
    };
  } catch (err) {
    if (!(err instanceof TemplateError)) throw err;
    result = { valid: false, errors: err.issues, warnings: err.warnings, services: [] };
  }

  const shown = relative(process.cwd(), file) || file;
  const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;
  if (!globals.json) {
    for (const issue of result.errors) printStderr(issueLine(issue));
    for (const issue of result.warnings) printStderr(issueLine(issue, 'warning'));
  }
  if (!result.valid) {
    throw new CliError(`${shown} is not valid: ${count(result.errors.length, 'error')}`, ExitCode.usage, {
      json: result,
    });
  }
  if (globals.json) return printJson(result);
  const names = result.services.map((s) => (s.kind === 'job' ? `${s.name} (job)` : s.name));
  const warned = result.warnings.length > 0 ? `, ${count(result.warnings.length, 'warning')}` : '';
  printStdout(`${shown} is valid${warned}: ${names.join(', ')}`);
}

/** `file:line:column: path: message`, with `warning:` after the position for a warning. */
function issueLine(issue: TemplateIssue, severity?: 'warning'): string {
  const where = [issue.file, issue.line, issue.column].filter((part) => part !== null).join(':');
  return [where, severity ?? '', issue.path, issue.message].filter((part) => part !== '').join(': ');
}
