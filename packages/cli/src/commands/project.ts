import { readFileSync } from 'node:fs';
import {
  ApiPaths,
  CreateProjectRequest,
  FORGES,
  type Forge,
  type Preview,
  type Project,
  ProjectPolicy,
  UpdateProjectRequest,
} from '@mayfly/contract';
import { MayflyError } from '@mayfly/sdk';
import { type Command, Option } from 'commander';
import { CliError, ExitCode, UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { ago, printable, table } from '../format.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

/** Environment variables secrets are read from when no file is given. */
export const WEBHOOK_SECRET_ENV = 'MAYFLY_WEBHOOK_SECRET';
export const FORGE_TOKEN_ENV = 'MAYFLY_FORGE_TOKEN';
/** Read for a GitHub project's token on `create` only: CI jobs have it set whether meant or not. */
const GITHUB_TOKEN_ENV = 'GITHUB_TOKEN';

/** Largest secret file read: secrets are short, a mistaken path to a large file is not one. */
export const SECRET_MAX_BYTES = 64 * 1024;

/** What `create` and `update` take; on `update`, `false` is a `--no-…` (clear it). */
interface ProjectOptions {
  repo?: string;
  template?: string | false;
  branch?: string;
  forge?: Forge;
  github?: string;
  gitlab?: string;
  /** `--api-url` (alias `--github-api-url`). */
  githubApiUrl?: string;
  /** `--no-api-url` (update): false; true otherwise. */
  apiUrl?: boolean;
  webhookSecretFile?: string;
  /** `--remove-webhook-secret` (update). */
  removeWebhookSecret?: boolean;
  forgeTokenFile?: string;
  removeForgeToken?: boolean;
  secretInputFile?: Record<string, string>;
  secretInputEnv?: Record<string, string>;
  removeSecretInputs?: boolean;
  input?: Record<string, string>;
  inputs?: boolean;
  branchEnvironment?: boolean;
  ttl?: string | false;
  idle?: string | false;
  idleAction?: 'sleep' | 'destroy';
  access?: 'public' | 'token';
  maxEnvironments?: number | false;
  skipDrafts?: boolean;
  requireLabel?: string | false;
  approvalLabel?: string | false;
  branches?: string[] | false;
  paths?: string[] | false;
}

/** `mayfly project create|ls|get|update|delete|preview-token`: repositories whose pull requests get previews. */
export function registerProject(program: Command): void {
  const project = program
    .command('project')
    .description('manage projects: repositories whose pull requests (and a branch) get preview environments')
    .addHelpText(
      'after',
      `
Creating, changing and deleting (and preview tokens) need an admin token; ls and get a read token.
Secrets are never taken from the command line: the webhook secret from --webhook-secret-file or
$${WEBHOOK_SECRET_ENV}, the forge token from --github-token-file or $${FORGE_TOKEN_ENV} (create: else
$${GITHUB_TOKEN_ENV} for GitHub), secret inputs from --secret-input-file / --secret-input-env. A file
"-" is stdin. To declare projects in a file kept in git, see \`mayfly apply --help\`.

Examples:
  mayfly project create web --repo https://github.com/acme/web.git --webhook-secret-file hook.secret
  printf %s "$TOKEN" | mayfly project create api --repo https://gitlab.com/acme/api.git --forge-token-file -
  mayfly project ls
  mayfly project get web
  mayfly project update web --ttl 2h --require-label preview
  mayfly project preview-token web
  mayfly project delete web`,
    );

  addProjectOptions(
    project
      .command('create')
      .description('create a project; prints it and the webhook URL to configure on the forge')
      .argument('<name>', 'project name: lowercase letters, digits and hyphens, at most 24')
      .requiredOption(
        '--repo <url>',
        'repository URL: https://…, ssh://…, git@host:owner/repo or file:///path',
      ),
    'create',
  )
    .addHelpText(
      'after',
      `
--github defaults to the repository URL's last two path segments (owner/repo); --gitlab to its
path. The forge is gitlab for a gitlab.com URL, else github, unless --forge, --github or --gitlab
say otherwise.

Examples:
  mayfly project create web --repo https://github.com/acme/web.git --webhook-secret-file hook.secret
  MAYFLY_WEBHOOK_SECRET=$(openssl rand -hex 20) mayfly project create shop \\
    --repo git@github.com:acme/shop.git --template deploy/compose.yaml --ttl 2h --max-environments 5
  mayfly project create api --repo https://gitlab.example.com/platform/api.git --forge gitlab \\
    --api-url https://gitlab.example.com/api/v4 --forge-token-file ~/.secrets/gitlab-token`,
    )
    .action((name: string, options: ProjectOptions, command: Command) => create(name, options, command));

  project
    .command('ls')
    .alias('list')
    .description('list projects (never their secrets)')
    .action(async (_options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const projects = await client.projects.list();
      if (globals.json) return printJson(projects);
      if (projects.length === 0) {
        printStdout('no projects (create one with `mayfly project create` or `mayfly apply`)');
        return;
      }
      const rows = projects.map((p) => [
        p.name,
        printable(p.repo),
        `${p.forge}:${printable(p.forgeRepo)}`,
        printable(p.branch),
        p.policy.access,
        policySummary(p.policy),
      ]);
      for (const line of table([['NAME', 'REPO', 'FORGE REPO', 'BRANCH', 'ACCESS', 'PREVIEWS'], ...rows]))
        printStdout(line);
    });

  project
    .command('get')
    .description('show one project (secrets only as set or not set) and its previews')
    .argument('<name>', 'project name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const found = await client.projects.get(name);
      const previews = await client.projects.previews(found.name);
      if (globals.json) return printJson({ ...found, previews });
      for (const line of table(projectFields(found))) printStdout(line);
      printStdout('');
      printStdout('previews');
      if (previews.length === 0) {
        printStdout('  (none yet: they appear as the forge sends pull request webhooks)');
        return;
      }
      const rows = previews.map((p) => [
        p.number === null ? printable(p.branch ?? '-') : `#${p.number}`,
        p.state,
        p.environment,
        printable(p.detail ?? '-'),
      ]);
      for (const line of table([['PR', 'STATE', 'ENVIRONMENT', 'DETAIL'], ...rows])) printStdout(`  ${line}`);
    });

  addProjectOptions(
    project
      .command('update')
      .description('change a project: only the options given change')
      .argument('<name>', 'project name')
      .option('--repo <url>', 'repository URL'),
    'update',
  )
    .addHelpText(
      'after',
      `
Only what is given changes. --branches, --paths, --input and the secret inputs replace their
whole list when given; --no-… clears a setting (--no-template: found as \`mayfly up\` finds it).
$${WEBHOOK_SECRET_ENV} and $${FORGE_TOKEN_ENV} are read here too ($${GITHUB_TOKEN_ENV} is not).

Examples:
  mayfly project update web --ttl 2h --no-skip-drafts
  mayfly project update web --branches main --branches 'release/*' --require-label preview
  mayfly project update web --webhook-secret-file new-hook.secret
  mayfly project update web --no-template --no-ttl`,
    )
    .action((name: string, options: ProjectOptions, command: Command) => update(name, options, command));

  project
    .command('delete')
    .description('delete a project; its environments are destroyed and its previews forgotten')
    .argument('<name>', 'project name')
    .addHelpText(
      'after',
      `
Every environment of the project (its previews and any made with \`mayfly up -p NAME\`) is destroyed.

Example:
  mayfly project delete web`,
    )
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const envs = (await client.environments.list({ project: name })).filter((e) => e.desired === 'present');
      await client.projects.delete(name);
      if (globals.json) return printJson({ name, deleted: true, destroying: envs.map((e) => e.name) });
      printStdout(
        envs.length === 0
          ? `deleted project ${name} (it had no environments)`
          : `deleted project ${name}; destroying its ${envs.length === 1 ? 'environment' : `${envs.length} environments`}: ${envs.map((e) => e.name).join(', ')}`,
      );
    });

  project
    .command('preview-token')
    .description(
      "make a new preview token for the project's preview URLs; printed once, on stdout; the previous one stops working",
    )
    .argument('<name>', 'project name')
    .addHelpText(
      'after',
      `
With \`--access token\`, a preview URL opens only for holders of the project's preview token: as
a link, <url>?mayfly-token=<token> (the browser then keeps a cookie and the token leaves the
address bar), or from a script or CI job with the header X-Mayfly-Bypass: <token>. A preview
token is not an API token, and an API token is not a preview token. Each call makes a new one,
and links with the previous one stop working.

Examples:
  mayfly project update web --access token
  TOKEN=$(mayfly project preview-token web)
  curl -H "X-Mayfly-Bypass: $TOKEN" http://web--web-pr-42.localhost:7070/`,
    )
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const token = await client.projects.rotatePreviewToken(name);
      if (globals.json) return printJson({ project: name, token });
      // The token alone on stdout, so that `$(mayfly project preview-token …)` captures just it.
      printStdout(token);
      printStderr(`new preview token of project ${name}: links with the previous one stop working`);
      printStderr('  it is not shown again: store it now (the server keeps only a hash)');
      printStderr(
        '  use it as <preview URL>?mayfly-token=<token>, or send the header X-Mayfly-Bypass: <token>',
      );
      const { policy } = await client.projects.get(name);
      if (policy.access === 'public') {
        printStderr(
          `  ${name}'s previews are public: they need the token only after \`mayfly project update ${name} --access token\``,
        );
      }
    });
}

/** The options of `create` (`mode` create) or `update` (all optional, with `--no-…` to clear). */
function addProjectOptions(command: Command, mode: 'create' | 'update'): Command {
  const updating = mode === 'update';
  command
    .option(
      '--template <path>',
      "the template's path in the repository (default: found as `mayfly up` finds it)",
    )
    .option('--branch <branch>', 'the main branch: PRs into it, and the branch environment (default: main)')
    .addOption(
      new Option('--forge <forge>', 'where the repository lives (default: github)').choices([...FORGES]),
    )
    .option('--github <owner/repo>', 'the GitHub repository webhooks name (sets --forge github)')
    .option('--gitlab <group/project>', 'the GitLab project path webhooks name (sets --forge gitlab)')
    .option('--api-url, --github-api-url <url>', "the forge's API URL, for GitHub Enterprise or your GitLab")
    .option(
      '--webhook-secret-file <file>',
      `the webhook secret, from a file ("-": stdin; default: $${WEBHOOK_SECRET_ENV})`,
    )
    .option(
      '--github-token-file, --forge-token-file <file>',
      `the forge token for statuses, comments and private clones ("-": stdin; default: $${FORGE_TOKEN_ENV}${updating ? '' : `, else $${GITHUB_TOKEN_ENV} for GitHub`})`,
    )
    .addOption(
      new Option(
        '--secret-input-file <name=file>',
        'a secret input from a file, never given to forks (repeatable)',
      ).argParser(pairCollector('--secret-input-file', 'NAME=FILE')),
    )
    .addOption(
      new Option(
        '--secret-input-env <name=var>',
        'a secret input from an environment variable (repeatable)',
      ).argParser(pairCollector('--secret-input-env', 'NAME=VAR')),
    )
    .addOption(
      new Option(
        '-i, --input <key=value>',
        'an input given to every environment of the project (repeatable)',
      ).argParser(pairCollector('--input', 'KEY=VALUE')),
    )
    .option('--branch-environment', 'keep an environment of the main branch up to date with its pushes')
    .option(
      '--ttl <duration>',
      'destroy a preview this long after its last update, e.g. 2h, 7d (default: when the PR closes)',
    )
    .option('--idle <duration>', 'stop a preview nobody used for this long (woken by its next request)')
    .addOption(
      new Option('--idle-action <action>', 'what --idle does (default: sleep)').choices(['sleep', 'destroy']),
    )
    .addOption(
      new Option(
        '--access <access>',
        'who may open preview URLs: anyone, or holders of the preview token (see `mayfly project preview-token`) (default: public)',
      ).choices(['public', 'token']),
    )
    .addOption(
      new Option(
        '--max-environments <n>',
        'previews at once; past it the least recently used sleeps',
      ).argParser(wholeNumber),
    )
    .option('--skip-drafts', 'draft PRs wait until they are ready for review (the default)')
    .option('--no-skip-drafts', 'draft PRs get previews too')
    .option('--require-label <label>', 'only PRs with this label')
    .option(
      '--approval-label <label>',
      'a PR from a fork is built once someone adds this label (or `mayfly approve`)',
    )
    .addOption(
      new Option('--branches <glob>', 'only PRs into (pushes to) matching branches (repeatable)').argParser(
        collect,
      ),
    )
    .addOption(
      new Option('--paths <glob>', 'only PRs that change a matching path (repeatable)').argParser(collect),
    );
  if (updating) {
    command
      .option('--no-template', 'clear --template: find it as `mayfly up` does')
      .option('--no-api-url', "clear --api-url: the forge's public API")
      .option('--remove-webhook-secret', 'remove the webhook secret (webhooks are then refused)')
      .option('--remove-forge-token', 'remove the forge token')
      .option('--remove-secret-inputs', 'remove every secret input')
      .option('--no-inputs', 'remove every input')
      .option('--no-branch-environment', 'no branch environment')
      .option('--no-ttl', 'no time to live: until the PR closes')
      .option('--no-idle', 'never stop an idle preview')
      .option('--no-max-environments', 'no limit on previews at once')
      .option('--no-require-label', 'no label required')
      .option('--no-approval-label', 'no approval label')
      .option('--no-branches', 'every branch')
      .option('--no-paths', 'every path');
  }
  return command;
}

async function create(name: string, options: ProjectOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const forge = forgeOf(options, options.repo);
  const secrets = new SecretReader();
  const request: Record<string, unknown> = { name, repo: options.repo };
  if (typeof options.template === 'string') request.template = options.template;
  if (options.branch !== undefined) request.branch = options.branch;
  if (forge !== undefined) request.forge = forge;
  const forgeRepo = options.github ?? options.gitlab;
  if (forgeRepo !== undefined) request.forgeRepo = forgeRepo;
  if (options.githubApiUrl !== undefined) request.forgeApiUrl = options.githubApiUrl;
  const policy = policyOf(options);
  if (Object.keys(policy).length > 0) request.policy = policy;

  const webhookSecret = secrets.read('webhook secret', options.webhookSecretFile, [WEBHOOK_SECRET_ENV]);
  if (webhookSecret) request.webhookSecret = webhookSecret.value;
  const forgeToken = secrets.read(
    'forge token',
    options.forgeTokenFile,
    (forge ?? 'github') === 'github' ? [FORGE_TOKEN_ENV, GITHUB_TOKEN_ENV] : [FORGE_TOKEN_ENV],
  );
  if (forgeToken) request.forgeToken = forgeToken.value;
  const secretInputs = secrets.inputs(options);
  if (secretInputs) request.secretInputs = secretInputs;

  const parsed = CreateProjectRequest.safeParse(request);
  if (!parsed.success) throw usageFor(parsed.error.issues, request, secrets.sources);

  const client = await connect(globals);
  const created = await withForgeRepoHint(client.projects.create(request as CreateProjectRequest));
  const webhookUrl = `${client.baseUrl}${created.forge === 'github' ? ApiPaths.githubWebhook : ApiPaths.gitlabWebhook}`;
  if (globals.json) {
    printJson(created);
    if (created.hasWebhookSecret) printStderr(`webhook URL: ${webhookUrl}`);
    return;
  }
  printStdout(`created project ${created.name}`);
  printSummary(created, secrets.sources);
  printWebhookSetup(created, webhookUrl);
}

async function update(name: string, options: ProjectOptions, command: Command): Promise<void> {
  const globals = globalOptions(command);
  const secrets = new SecretReader();
  const request: Record<string, unknown> = {};
  if (options.repo !== undefined) request.repo = options.repo;
  if (options.template !== undefined) request.template = options.template === false ? null : options.template;
  if (options.branch !== undefined) request.branch = options.branch;
  const forge = forgeOf(options, undefined);
  if (forge !== undefined) request.forge = forge;
  const forgeRepo = options.github ?? options.gitlab;
  if (forgeRepo !== undefined) request.forgeRepo = forgeRepo;
  if (options.apiUrl === false) {
    if (options.githubApiUrl !== undefined)
      throw new UsageError('--api-url and --no-api-url contradict each other');
    request.forgeApiUrl = null;
  } else if (options.githubApiUrl !== undefined) request.forgeApiUrl = options.githubApiUrl;

  if (options.removeWebhookSecret) {
    if (options.webhookSecretFile !== undefined)
      throw new UsageError('--webhook-secret-file and --remove-webhook-secret contradict each other');
    request.webhookSecret = null;
  } else {
    const secret = secrets.read('webhook secret', options.webhookSecretFile, [WEBHOOK_SECRET_ENV]);
    if (secret) request.webhookSecret = secret.value;
  }
  if (options.removeForgeToken) {
    if (options.forgeTokenFile !== undefined)
      throw new UsageError('--forge-token-file and --remove-forge-token contradict each other');
    request.forgeToken = null;
  } else {
    const token = secrets.read('forge token', options.forgeTokenFile, [FORGE_TOKEN_ENV]);
    if (token) request.forgeToken = token.value;
  }
  if (options.removeSecretInputs) {
    if (options.secretInputFile || options.secretInputEnv)
      throw new UsageError(
        '--secret-input-file/--secret-input-env and --remove-secret-inputs contradict each other',
      );
    request.secretInputs = null;
  } else {
    const inputs = secrets.inputs(options);
    if (inputs) request.secretInputs = inputs;
  }

  const policy = policyOf(options);
  if (Object.keys(policy).length > 0) request.policy = policy;
  if (Object.keys(request).length === 0) {
    throw new UsageError(
      'nothing to change',
      'give the options to change: see `mayfly project update --help`',
    );
  }
  const { policy: _policy, ...fields } = request;
  const parsed = UpdateProjectRequest.safeParse(fields);
  if (!parsed.success) throw usageFor(parsed.error.issues, request, secrets.sources);
  // The server merges these fields into the current policy: checked on their own, defaults filling the rest.
  const checked = ProjectPolicy.safeParse(policy);
  if (!checked.success) throw usageFor(checked.error.issues, request, secrets.sources, ['policy']);

  const client = await connect(globals);
  const updated = await withForgeRepoHint(client.projects.update(name, request as UpdateProjectRequest));
  const webhookUrl = `${client.baseUrl}${updated.forge === 'github' ? ApiPaths.githubWebhook : ApiPaths.gitlabWebhook}`;
  if (globals.json) {
    printJson(updated);
    if (typeof request.webhookSecret === 'string') printStderr(`webhook URL: ${webhookUrl}`);
    return;
  }
  printStdout(`updated project ${updated.name}`);
  printSummary(updated, secrets.sources);
  if (typeof request.webhookSecret === 'string') printWebhookSetup(updated, webhookUrl);
}

/** `--forge`, or the one `--github` / `--gitlab` name, or (create) gitlab for a gitlab.com URL. */
function forgeOf(options: ProjectOptions, repo: string | undefined): Forge | undefined {
  if (options.github !== undefined && options.gitlab !== undefined) {
    throw new UsageError('--github and --gitlab contradict each other: a project is on one forge');
  }
  const named = options.github !== undefined ? 'github' : options.gitlab !== undefined ? 'gitlab' : undefined;
  if (named && options.forge && options.forge !== named) {
    throw new UsageError(`--${named} and --forge ${options.forge} contradict each other`);
  }
  if (options.forge ?? named) return options.forge ?? named;
  if (repo !== undefined && hostOf(repo) === 'gitlab.com') return 'gitlab';
  return undefined;
}

function hostOf(repo: string): string | undefined {
  const scp = /^[^@/:]+@([^:/]+):/.exec(repo);
  if (scp) return scp[1]!.toLowerCase();
  try {
    return new URL(repo).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

/** The policy fields the options give (only those: the server fills in or keeps the rest). */
function policyOf(options: ProjectOptions): Record<string, unknown> {
  const policy: Record<string, unknown> = {};
  const filters: Record<string, unknown> = {};
  const orNull = <T>(value: T | false): T | null => (value === false ? null : value);
  if (options.branchEnvironment !== undefined) policy.branchEnvironment = options.branchEnvironment;
  if (options.ttl !== undefined) policy.ttl = orNull(options.ttl);
  if (options.idleAction !== undefined && (options.idle === undefined || options.idle === false)) {
    throw new UsageError('--idle-action needs --idle DURATION');
  }
  if (options.idle !== undefined) {
    policy.idle =
      options.idle === false ? null : { after: options.idle, action: options.idleAction ?? 'sleep' };
  }
  if (options.access !== undefined) policy.access = options.access;
  if (options.maxEnvironments !== undefined) policy.maxEnvironments = orNull(options.maxEnvironments);
  if (options.approvalLabel !== undefined) policy.approvalLabel = orNull(options.approvalLabel);
  if (options.inputs === false) {
    if (options.input) throw new UsageError('--input and --no-inputs contradict each other');
    policy.inputs = {};
  } else if (options.input !== undefined) policy.inputs = options.input;
  if (options.branches !== undefined) filters.branches = options.branches === false ? [] : options.branches;
  if (options.paths !== undefined) filters.paths = options.paths === false ? [] : options.paths;
  if (options.skipDrafts !== undefined) filters.skipDrafts = options.skipDrafts;
  if (options.requireLabel !== undefined) filters.requireLabel = orNull(options.requireLabel);
  if (Object.keys(filters).length > 0) policy.filters = filters;
  return policy;
}

/** Where a secret came from, for the summary: never the secret itself. */
type SecretSources = Record<string, string>;

/** Reads secrets from files (`-`: stdin, once) and environment variables, remembering where from. */
class SecretReader {
  readonly sources: SecretSources = {};
  #stdinUsedBy: string | undefined;

  /** The secret from `file` if given, else from the first variable of `envs` that is set. */
  read(what: string, file: string | undefined, envs: string[]): { value: string } | undefined {
    if (file !== undefined) {
      const value = this.file(what, file);
      this.sources[what] = file === '-' ? 'stdin' : `file ${file}`;
      return { value };
    }
    for (const name of envs) {
      const value = process.env[name];
      if (value === undefined) continue;
      // GITHUB_TOKEN is only a fallback (CI sets it, sometimes to nothing); an empty MAYFLY_* is a mistake.
      if (value === '' && name === GITHUB_TOKEN_ENV) continue;
      const trimmed = trimSecret(value);
      if (trimmed === '') throw new UsageError(`the ${what} in $${name} is empty`);
      this.sources[what] = `$${name}`;
      return { value: trimmed };
    }
    return undefined;
  }

  /** `--secret-input-file NAME=FILE` and `--secret-input-env NAME=VAR`, or undefined when neither. */
  inputs(options: ProjectOptions): Record<string, string> | undefined {
    const files = options.secretInputFile ?? {};
    const envs = options.secretInputEnv ?? {};
    if (Object.keys(files).length + Object.keys(envs).length === 0) return undefined;
    const inputs: Record<string, string> = {};
    for (const [name, file] of Object.entries(files)) {
      inputs[name] = this.file(`secret input ${name}`, file);
      this.sources[`secret input ${name}`] = file === '-' ? 'stdin' : `file ${file}`;
    }
    for (const [name, variable] of Object.entries(envs)) {
      if (Object.hasOwn(inputs, name)) throw new UsageError(`secret input ${name} is given twice`);
      const value = process.env[variable];
      if (value === undefined)
        throw new UsageError(`--secret-input-env ${name}=${variable}: $${variable} is not set`);
      if (trimSecret(value) === '') throw new UsageError(`secret input ${name}: $${variable} is empty`);
      inputs[name] = trimSecret(value);
      this.sources[`secret input ${name}`] = `$${variable}`;
    }
    return inputs;
  }

  file(what: string, file: string): string {
    if (file === '-') {
      if (this.#stdinUsedBy !== undefined) {
        throw new UsageError(
          `the ${this.#stdinUsedBy} already comes from stdin ("-"): give the ${what} in a file`,
        );
      }
      this.#stdinUsedBy = what;
    }
    return readSecretFile(file, what);
  }
}

/**
 * A secret from a file (`-`: stdin) with its trailing newline trimmed; a usage error when it cannot
 * be read, is too large or is empty. The message never holds the secret.
 */
export function readSecretFile(file: string, what: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      `cannot read the ${what} from ${file === '-' ? 'stdin' : `"${file}"`}: ${code ?? (err as Error).message}`,
    );
  }
  if (bytes.length > SECRET_MAX_BYTES) {
    throw new UsageError(
      `the ${what} in "${file}" is larger than ${SECRET_MAX_BYTES / 1024} KiB: is it the right file?`,
    );
  }
  const value = trimSecret(bytes.toString('utf8'));
  if (value === '') throw new UsageError(`the ${what} in ${file === '-' ? 'stdin' : `"${file}"`} is empty`);
  return value;
}

/** A secret as written by `echo` or an editor: without its trailing line break(s). */
export function trimSecret(text: string): string {
  return text.replace(/[\r\n]+$/, '');
}

/** A request field's name as the user gave it: the flag. */
const FLAGS: [path: string, flag: string][] = [
  ['name', 'project name'],
  ['repo', '--repo'],
  ['template', '--template'],
  ['branch', '--branch'],
  ['forge', '--forge'],
  ['forgeRepo', '--github/--gitlab'],
  ['forgeApiUrl', '--api-url'],
  ['webhookSecret', 'webhook secret'],
  ['forgeToken', 'forge token'],
  ['secretInputs', 'secret input'],
  ['policy.branchEnvironment', '--branch-environment'],
  ['policy.ttl', '--ttl'],
  ['policy.idle', '--idle'],
  ['policy.access', '--access'],
  ['policy.maxEnvironments', '--max-environments'],
  ['policy.approvalLabel', '--approval-label'],
  ['policy.inputs', '--input'],
  ['policy.filters.branches', '--branches'],
  ['policy.filters.paths', '--paths'],
  ['policy.filters.skipDrafts', '--skip-drafts'],
  ['policy.filters.requireLabel', '--require-label'],
];
const SECRET_PATHS = new Set(['webhookSecret', 'forgeToken', 'secretInputs']);

/** The first schema issue as a usage error naming the flag (and the value, unless it is a secret). */
function usageFor(
  issues: readonly SchemaIssue[],
  request: Record<string, unknown>,
  sources: SecretSources,
  prefix: string[] = [],
): UsageError {
  const issue = issues[0];
  const path = [...prefix, ...(issue?.path ?? []).map(String)];
  const dotted = path.join('.');
  const match = FLAGS.filter(([p]) => dotted === p || dotted.startsWith(`${p}.`)).sort(
    (a, b) => b[0].length - a[0].length,
  )[0];
  const flag = match?.[1] ?? (dotted || 'request');
  const rest = match ? dotted.slice(match[0].length + 1) : '';
  const message = schemaMessage(issue);
  if (issue?.code === 'invalid_key') {
    // A bad name of an input or secret input: the name is shown, never the value.
    return new UsageError(`invalid ${flag} name "${path.at(-1)}": ${message}`);
  }
  if (SECRET_PATHS.has(path[0] ?? '')) {
    const what = rest ? `${flag} ${rest}` : flag;
    const from = sources[what] ? ` (from ${sources[what]})` : '';
    return new UsageError(`the ${what}${from}: ${message}`);
  }
  let value: unknown = request;
  for (const key of path) value = (value as Record<string, unknown> | undefined)?.[key];
  const shown = typeof value === 'string' || typeof value === 'number' ? ` "${value}"` : '';
  return new UsageError(`invalid ${flag}${rest ? ` ${rest}` : ''}${shown}: ${message}`);
}

/** What zod reports of one problem; the part of it these messages use. */
export interface SchemaIssue {
  code?: string;
  path: PropertyKey[];
  message: string;
  /** The issues of a record's key (`invalid_key`). */
  issues?: readonly { message: string }[];
}

/** An issue's message; for a bad record key, what is wrong with the key rather than "Invalid key in record". */
export function schemaMessage(issue: SchemaIssue | undefined): string {
  if (!issue) return 'not allowed';
  if (issue.code === 'invalid_key' && issue.issues?.[0]) return issue.issues[0].message;
  return issue.message;
}

/** The server cannot tell the forge's repository from the URL: say which option gives it. */
async function withForgeRepoHint(call: Promise<Project>): Promise<Project> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof MayflyError && err.code === 'invalid_request' && err.message.includes('forgeRepo')) {
      throw new CliError(err.message, ExitCode.usage, {
        hint: 'give it with --github OWNER/REPO or --gitlab GROUP/PROJECT',
      });
    }
    throw err;
  }
}

/** The lines under `created project …` / `updated project …`. */
function printSummary(p: Project, sources: SecretSources): void {
  const secret = (set: boolean, what: string) =>
    set ? `set${sources[what] ? ` (from ${sources[what]})` : ''}` : 'not set';
  const rows = [
    ['repo', printable(p.repo)],
    [
      'forge',
      `${p.forge} ${printable(p.forgeRepo)}${p.forgeApiUrl ? ` (API ${printable(p.forgeApiUrl)})` : ''}`,
    ],
    ['branch', printable(p.branch)],
    ['template', p.template === null ? '(found as `mayfly up` finds it)' : printable(p.template)],
    ['previews', `${policySummary(p.policy)}; access ${p.policy.access}`],
    ['webhook secret', secret(p.hasWebhookSecret, 'webhook secret')],
    ['forge token', secret(p.hasForgeToken, 'forge token')],
  ];
  const inputs = Object.keys(p.policy.inputs);
  if (inputs.length > 0) rows.push(['inputs', inputs.join(', ')]);
  if (p.secretInputs.length > 0) rows.push(['secret inputs', p.secretInputs.join(', ')]);
  for (const line of table(rows)) printStdout(`  ${line}`);
}

/** How to point the forge at this server, or why nothing will arrive yet. */
function printWebhookSetup(p: Project, url: string): void {
  printStdout('');
  if (!p.hasWebhookSecret) {
    printStdout('no webhook secret yet: webhooks are refused until one is set');
    printStdout(`  mayfly project update ${p.name} --webhook-secret-file FILE   (or $${WEBHOOK_SECRET_ENV})`);
    return;
  }
  const repo = printable(p.forgeRepo);
  if (p.forge === 'github') {
    printStdout(`webhook: in ${repo} → Settings → Webhooks → Add webhook`);
    printStdout(`  payload URL   ${url}`);
    printStdout('  content type  application/json');
    printStdout('  secret        the webhook secret given here');
    printStdout(`  events        Pull requests${p.policy.branchEnvironment ? ', Pushes' : ''}`);
  } else {
    printStdout(`webhook: in ${repo} → Settings → Webhooks → Add new webhook`);
    printStdout(`  URL           ${url}`);
    printStdout('  secret token  the webhook secret given here');
    printStdout(`  trigger       Merge request events${p.policy.branchEnvironment ? ', Push events' : ''}`);
  }
}

/** Every field of a project for `project get`: secrets only as set or not set. */
function projectFields(p: Project): string[][] {
  const policy = p.policy;
  const list = (items: string[], none: string) =>
    items.length === 0 ? none : items.map(printable).join(', ');
  const when = (iso: string) => `${new Date(iso).toLocaleString()} (${ago(iso)})`;
  return [
    ['name', p.name],
    ['repo', printable(p.repo)],
    ['template', p.template === null ? '(found as `mayfly up` finds it)' : printable(p.template)],
    ['branch', printable(p.branch)],
    ['forge', p.forge],
    ['forge repo', printable(p.forgeRepo)],
    ['forge API', p.forgeApiUrl === null ? '(public)' : printable(p.forgeApiUrl)],
    ['webhook secret', p.hasWebhookSecret ? 'set' : 'not set'],
    ['forge token', p.hasForgeToken ? 'set' : 'not set'],
    ['secret inputs', list(p.secretInputs, 'none')],
    [
      'inputs',
      list(
        Object.entries(policy.inputs).map(([k, v]) => `${k}=${v}`),
        'none',
      ),
    ],
    ['access', policy.access],
    [
      'preview token',
      p.hasPreviewToken
        ? 'set'
        : policy.access === 'token'
          ? `not set: previews open for nobody until \`mayfly project preview-token ${p.name}\``
          : 'not set',
    ],
    ['branches', list(policy.filters.branches, 'all')],
    ['paths', list(policy.filters.paths, 'all')],
    ['skip drafts', policy.filters.skipDrafts ? 'yes' : 'no'],
    ['require label', policy.filters.requireLabel === null ? '-' : printable(policy.filters.requireLabel)],
    ['approval label', policy.approvalLabel === null ? '-' : printable(policy.approvalLabel)],
    ['ttl', policy.ttl ?? 'none (until the PR closes)'],
    ['idle', policy.idle === null ? 'never stopped' : `${policy.idle.action} after ${policy.idle.after}`],
    ['max environments', policy.maxEnvironments === null ? 'no limit' : String(policy.maxEnvironments)],
    ['branch environment', policy.branchEnvironment ? `yes (pushes to ${printable(p.branch)})` : 'no'],
    ['created', when(p.createdAt)],
    ['updated', when(p.updatedAt)],
  ];
}

/** The previews a policy gives, in a few words: `PRs into main, label "preview", ttl 2h, max 5`. */
export function policySummary(policy: ProjectPolicy): string {
  const { filters } = policy;
  const parts = [
    filters.branches.length > 0 ? `PRs into ${filters.branches.map(printable).join(' ')}` : 'every PR',
  ];
  if (filters.paths.length > 0) parts.push(`paths ${filters.paths.map(printable).join(' ')}`);
  parts.push(filters.skipDrafts ? 'no drafts' : 'drafts too');
  if (filters.requireLabel !== null) parts.push(`label "${printable(filters.requireLabel)}"`);
  if (policy.approvalLabel !== null) parts.push(`forks on "${printable(policy.approvalLabel)}"`);
  if (policy.ttl !== null) parts.push(`ttl ${policy.ttl}`);
  if (policy.idle !== null) parts.push(`${policy.idle.action} after ${policy.idle.after} idle`);
  if (policy.maxEnvironments !== null) parts.push(`max ${policy.maxEnvironments}`);
  if (policy.branchEnvironment) parts.push('+ branch environment');
  return parts.join(', ');
}

/** A preview's state in words for `approve`. */
export function previewLine(p: Preview): string {
  const what = p.number === null ? `branch ${printable(p.branch ?? '')}` : `pull request #${p.number}`;
  return `${what} of ${p.project} at ${p.headSha.slice(0, 12)}: ${p.state}${p.detail ? ` (${printable(p.detail)})` : ''}`;
}

/** Collects a repeatable `NAME=VALUE` option into a record. */
function pairCollector(flag: string, shape: string) {
  return (value: string, previous: Record<string, string> | undefined): Record<string, string> => {
    const equals = value.indexOf('=');
    if (equals <= 0) throw new UsageError(`invalid ${flag} "${value}": expected ${shape}`);
    const key = value.slice(0, equals);
    if (previous && Object.hasOwn(previous, key)) throw new UsageError(`${flag} ${key} is given twice`);
    return { ...previous, [key]: value.slice(equals + 1) };
  };
}

function collect(value: string, previous: string[] | false | undefined): string[] {
  return [...(Array.isArray(previous) ? previous : []), value];
}

function wholeNumber(value: string): number {
  if (!/^\d{1,7}$/.test(value)) throw new UsageError(`invalid --max-environments "${value}": a whole number`);
  return Number(value);
}
