/**
 * Projects: which repository, template and forge a project's previews come from, and its
 * policies. Secrets (webhook secret, forge token, secret inputs) are written here and never
 * returned; what a project-bound token sees is its own project only.
 */
import {
  type CreateProjectRequest as CreateInput,
  CreateProjectRequest,
  type Forge,
  type Project,
  ProjectPolicy,
  type UpdateProjectRequest as UpdateInput,
  UpdateProjectRequest,
} from '@mayfly/contract';
import type * as z from 'zod';
import { type Access, canSee, FULL_ACCESS } from '../access/access.js';
import { newPreviewToken } from '../access/preview-token.js';
import { checkRepoUrl, GitSourceError } from '../sources/git-checkout.js';
import { ProjectExistsError, type ProjectPatch, type ProjectRecord, type Store } from '../store/store.js';
import { ConflictError, ForbiddenError, InvalidRequestError, NotFoundError } from './errors.js';

export interface ProjectServiceDeps {
  store: Store;
  /** Destroys the project's environments when it is deleted. */
  destroyEnvironment: (idOrName: string) => Promise<unknown>;
  /** Called after a change that the preview controller should act on (an approval). */
  onChange: () => void;
}

/** What `apply` did with one project of the file. */
export interface AppliedProject {
  name: string;
  action: 'created' | 'updated' | 'unchanged';
}

export class ProjectService {
  constructor(private readonly deps: ProjectServiceDeps) {}

  async create(input: CreateInput, access: Access = FULL_ACCESS): Promise<ProjectRecord> {
    const req = CreateProjectRequest.parse(input);
    if (access.project !== null)
      throw new ForbiddenError('a token bound to a project cannot create projects');
    if (req.name === 'default') {
      throw new InvalidRequestError(
        '"default" is the project of environments created without one: pick another name',
      );
    }
    const repoUrl = repoUrlOf(req.repo);
    if (req.forgeApiUrl !== undefined) apiUrlOf(req.forgeApiUrl);
    try {
      return await this.deps.store.projects.create({
        name: req.name,
        repoUrl,
        templateFile: req.template === undefined ? null : templatePath(req.template),
        branch: req.branch,
        forge: req.forge,
        forgeRepo: req.forgeRepo ?? forgeRepoOf(repoUrl, req.forge),
        forgeApiUrl: req.forgeApiUrl ?? null,
        policy: req.policy,
        webhookSecret: req.webhookSecret ?? null,
        forgeToken: req.forgeToken ?? null,
        secretInputs: req.secretInputs ?? {},
      });
    } catch (err) {
      if (err instanceof ProjectExistsError) throw new ConflictError(err.message);
      throw err;
    }
  }

  async get(name: string, access: Access = FULL_ACCESS): Promise<ProjectRecord> {
    const project = canSee(access, name) ? await this.deps.store.projects.get(name) : null;
    if (!project) throw new NotFoundError(`no project "${name}"`);
    return project;
  }

  async list(access: Access = FULL_ACCESS): Promise<ProjectRecord[]> {
    const all = await this.deps.store.projects.list();
    return all.filter((p) => canSee(access, p.name));
  }

  /** Changes only what is given; `policy` merges into the current one (and `filters` into its filters). */
  async update(name: string, input: UpdateInput, access: Access = FULL_ACCESS): Promise<ProjectRecord> {
    const req = UpdateProjectRequest.parse(input);
    const current = await this.get(name, access);
    const patch = this.patchOf(current, req);
    // Where the project's code and secrets go is the operator's to say: a token bound to the
    // project may change its policies, not send its forge token or webhooks somewhere else.
    const guarded = (
      ['repoUrl', 'forge', 'forgeRepo', 'forgeApiUrl', 'webhookSecret', 'forgeToken'] as const
    ).filter((field) => patch[field] !== undefined);
    if (access.project !== null && guarded.length > 0) {
      throw new ForbiddenError(
        `a token bound to a project cannot change ${guarded.join(', ')}: ask for a token not bound to a project`,
      );
    }
    // The forge token goes only where it was given for: a new repository or API URL without it
    // in the same request drops it.
    if ((patch.repoUrl !== undefined || patch.forgeApiUrl !== undefined) && req.forgeToken === undefined) {
      patch.forgeToken = null;
    }
    const updated = await this.deps.store.projects.update(name, patch);
    if (!updated) throw new NotFoundError(`no project "${name}"`);
    this.deps.onChange();
    return updated;
  }

  /**
   * Creates or updates each project as declared (`mayfly apply -f projects.yaml`): idempotent,
   * so a file kept in git can be applied on every change. All are validated before any is written.
   */
  async apply(inputs: CreateInput[], access: Access = FULL_ACCESS): Promise<AppliedProject[]> {
    if (access.project !== null) throw new ForbiddenError('a token bound to a project cannot apply projects');
    const parsed = inputs.map((input, i) => {
      const result = CreateProjectRequest.safeParse(input);
      if (!result.success) {
        const issue = result.error.issues[0];
        throw new InvalidRequestError(
          `project ${i + 1}${typeof (input as { name?: unknown }).name === 'string' ? ` ("${(input as { name: string }).name}")` : ''}: ${issue?.path.join('.') || 'value'}: ${issue?.message}`,
        );
      }
      repoUrlOf(result.data.repo);
      return { input, req: result.data };
    });
    const names = parsed.map((p) => p.req.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice) throw new InvalidRequestError(`project "${twice}" is declared twice`);
    const results: AppliedProject[] = [];
    for (const { input, req } of parsed) {
      const current = await this.deps.store.projects.get(req.name);
      if (!current) {
        await this.create(input, access);
        results.push({ name: req.name, action: 'created' });
        continue;
      }
      const repoUrl = repoUrlOf(req.repo);
      const patch = this.patchOf(
        current,
        {
          repo: repoUrl,
          template: req.template ?? null,
          branch: req.branch,
          forge: req.forge,
          forgeRepo: req.forgeRepo ?? forgeRepoOf(repoUrl, req.forge),
          forgeApiUrl: req.forgeApiUrl ?? null,
          // Declared in full: what the file leaves out goes back to its default.
          policy: req.policy,
          ...(req.webhookSecret !== undefined ? { webhookSecret: req.webhookSecret } : {}),
          ...(req.forgeToken !== undefined ? { forgeToken: req.forgeToken } : {}),
          ...(req.secretInputs !== undefined ? { secretInputs: req.secretInputs } : {}),
        },
        true,
      );
      if ((patch.repoUrl !== undefined || patch.forgeApiUrl !== undefined) && req.forgeToken === undefined) {
        patch.forgeToken = null; // the forge token goes only where it was given for
      }
      if (Object.keys(patch).length === 0) {
        results.push({ name: req.name, action: 'unchanged' });
        continue;
      }
      await this.deps.store.projects.update(req.name, patch);
      results.push({ name: req.name, action: 'updated' });
    }
    this.deps.onChange();
    return results;
  }

  /** Deletes the project, its previews' records, and (through the controller) their environments. */
  async delete(name: string, access: Access = FULL_ACCESS): Promise<void> {
    if (access.project !== null)
      throw new ForbiddenError('a token bound to a project cannot delete projects');
    await this.get(name, access);
    const envs = await this.deps.store.environments.list({ project: name });
    for (const env of envs) {
      if (env.desired === 'present') await this.deps.destroyEnvironment(env.id);
    }
    await this.deps.store.previews.deleteForProject(name);
    await this.deps.store.projects.delete(name);
  }

  /**
   * Makes a new preview token for the project's URLs (`policy.access: token`) and returns it: the
   * only time it is shown, since only its hash is kept. The previous one stops working (the
   * gateway notices within its cache's lifetime, 2 s by default).
   */
  async rotatePreviewToken(name: string, access: Access = FULL_ACCESS): Promise<string> {
    await this.get(name, access);
    const { token, hash } = newPreviewToken();
    const updated = await this.deps.store.projects.update(name, { previewTokenHash: hash });
    if (!updated) throw new NotFoundError(`no project "${name}"`);
    return token;
  }

  /** The API resource: never a secret, only whether one is set. */
  toResource(project: ProjectRecord): Project {
    return {
      name: project.name,
      repo: project.repoUrl,
      template: project.templateFile,
      branch: project.branch,
      forge: project.forge,
      forgeRepo: project.forgeRepo,
      forgeApiUrl: project.forgeApiUrl,
      policy: project.policy,
      hasWebhookSecret: project.webhookSecret !== null,
      hasForgeToken: project.forgeToken !== null,
      hasPreviewToken: project.previewTokenHash !== null,
      secretInputs: Object.keys(project.secretInputs).sort(),
      createdAt: project.createdAt.toISOString(),
      updatedAt: project.updatedAt.toISOString(),
    };
  }

  /**
   * The fields of `req` that differ from `current`. `replacePolicy`: the policy given is the
   * whole policy (apply); otherwise its fields merge into the current one (update).
   */
  private patchOf(
    current: ProjectRecord,
    req:
      | z.output<typeof UpdateProjectRequest>
      | (Omit<z.output<typeof UpdateProjectRequest>, 'policy'> & { policy?: ProjectPolicy }),
    replacePolicy = false,
  ): ProjectPatch {
    const patch: ProjectPatch = {};
    if (req.repo !== undefined) {
      const repoUrl = repoUrlOf(req.repo);
      if (repoUrl !== current.repoUrl) patch.repoUrl = repoUrl;
    }
    if (req.template !== undefined) {
      const template = req.template === null ? null : templatePath(req.template);
      if (template !== current.templateFile) patch.templateFile = template;
    }
    if (req.branch !== undefined && req.branch !== current.branch) patch.branch = req.branch;
    if (req.forge !== undefined && req.forge !== current.forge) patch.forge = req.forge;
    if (req.forgeRepo !== undefined && req.forgeRepo !== current.forgeRepo) patch.forgeRepo = req.forgeRepo;
    if (req.forgeApiUrl !== undefined && req.forgeApiUrl !== current.forgeApiUrl)
      patch.forgeApiUrl = req.forgeApiUrl === null ? null : apiUrlOf(req.forgeApiUrl);
    if (req.policy !== undefined) {
      const merged = replacePolicy
        ? req.policy
        : {
            ...current.policy,
            ...req.policy,
            filters: {
              ...current.policy.filters,
              ...((req.policy as { filters?: Record<string, unknown> }).filters ?? {}),
            },
          };
      const result = ProjectPolicy.safeParse(merged);
      if (!result.success) {
        const issue = result.error.issues[0];
        throw new InvalidRequestError(`policy.${issue?.path.join('.')}: ${issue?.message}`);
      }
      if (JSON.stringify(result.data) !== JSON.stringify(current.policy)) patch.policy = result.data;
    }
    if (req.webhookSecret !== undefined && req.webhookSecret !== current.webhookSecret)
      patch.webhookSecret = req.webhookSecret;
    if (req.forgeToken !== undefined && req.forgeToken !== current.forgeToken)
      patch.forgeToken = req.forgeToken;
    if (req.secretInputs !== undefined) {
      const next = req.secretInputs ?? {};
      if (JSON.stringify(next) !== JSON.stringify(current.secretInputs)) patch.secretInputs = next;
    }
    return patch;
  }
}

/** The repository URL as git will get it, or a 400 saying what is wrong with it. */
function repoUrlOf(url: string): string {
  try {
    return checkRepoUrl(url);
  } catch (err) {
    if (err instanceof GitSourceError) throw new InvalidRequestError(`repo: ${err.message}`);
    throw err;
  }
}

/**
 * The forge API URL a token is sent to: https, or plain http only to this machine (a test
 * server, a tunnel); never plain http across a network.
 */
function apiUrlOf(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidRequestError(`forgeApiUrl "${url}" is not a URL`);
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname);
  if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && loopback)) {
    throw new InvalidRequestError(
      `forgeApiUrl "${url}": the forge token is sent there, so it must be https (plain http only to this machine)`,
    );
  }
  if (parsed.username || parsed.password) {
    throw new InvalidRequestError('forgeApiUrl must not carry credentials: give the token with forgeToken');
  }
  return url;
}

/** A relative path inside the repository, without `..`. */
function templatePath(file: string): string {
  if (file.startsWith('/') || file.split(/[\\/]/).includes('..') || file.includes('\0')) {
    throw new InvalidRequestError(`template "${file}": a path inside the repository, without ".."`);
  }
  return file.replace(/^\.\//, '');
}

/**
 * The repository as the forge names it in webhooks: GitHub's `owner/name` is the URL's last two
 * path segments; GitLab's project path is the whole path (groups may nest).
 */
export function forgeRepoOf(repoUrl: string, forge: Forge): string {
  let pathPart: string;
  const scp = /^[^@/:]+@[^:/]+:(.+)$/.exec(repoUrl);
  if (scp) pathPart = scp[1]!;
  else {
    try {
      pathPart = new URL(repoUrl).pathname;
    } catch {
      pathPart = repoUrl;
    }
  }
  const segments = pathPart
    .replace(/\.git\/?$/, '')
    .split('/')
    .filter((s) => s !== '');
  const picked = forge === 'github' ? segments.slice(-2) : segments;
  const repo = picked.join('/');
  if (picked.length < 2 || !/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)+$/.test(repo)) {
    throw new InvalidRequestError(
      `cannot tell the ${forge} repository from "${repoUrl}": give it as forgeRepo (owner/name)`,
    );
  }
  return repo;
}
