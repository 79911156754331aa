import {
  ApiPaths,
  type CreateProjectRequest,
  Preview,
  Project,
  type UpdateProjectRequest,
} from '@mayfly/contract';
import * as z from 'zod';
import type { HttpClient } from './http.js';

const ProjectList = z.object({ items: z.array(Project) });
const PreviewList = z.object({ items: z.array(Preview) });
const Deleted = z.object({ deleted: z.literal(true) });
const PreviewToken = z.object({ token: z.string() });

/** What {@link ProjectsApi.apply} did with one project. */
export const AppliedProject = z.object({
  name: z.string(),
  action: z.enum(['created', 'updated', 'unchanged']),
});
export type AppliedProject = z.infer<typeof AppliedProject>;
const AppliedList = z.object({ items: z.array(AppliedProject) });

/**
 * Projects: repositories whose pull requests (and, if asked, a branch) get preview environments,
 * and those previews. Secrets (webhook secret, forge token, secret inputs) are write-only: a
 * {@link Project} says only whether they are set. Creating, changing and deleting need an `admin`
 * token, approving a `write` one, reading a `read` one. Reached as `client.projects`.
 */
export class ProjectsApi {
  readonly #http: HttpClient;

  /** @internal Use `new MayflyClient(...).projects`. */
  constructor(http: HttpClient) {
    this.#http = http;
  }

  /**
   * Creates a project. Without `forgeRepo`, the server takes it from `repo` (a GitHub URL's last
   * two path segments, a GitLab URL's path).
   * @throws ConflictError when a project of that name exists.
   * @throws InvalidRequestError for a bad field; ForbiddenError without an `admin` token, or with
   * one bound to a project.
   */
  create(request: CreateProjectRequest): Promise<Project> {
    return this.#http.json('POST', ApiPaths.projects, Project, { body: request });
  }

  /** Lists the projects the token may see (a project-bound token: its own). */
  async list(): Promise<Project[]> {
    const { items } = await this.#http.json('GET', ApiPaths.projects, ProjectList);
    return items;
  }

  /** One project. @throws NotFoundError when there is none of that name. */
  get(name: string): Promise<Project> {
    return this.#http.json('GET', ApiPaths.project(name), Project);
  }

  /**
   * Changes only the fields given; `policy` fields merge into the current policy (and `filters`
   * into its filters), `null` clears a nullable field or secret. `secretInputs` replaces them all.
   * @throws NotFoundError when there is no such project; InvalidRequestError for a bad field.
   */
  update(name: string, request: UpdateProjectRequest): Promise<Project> {
    return this.#http.json('PATCH', ApiPaths.project(name), Project, { body: request });
  }

  /**
   * Creates or updates each project as declared, in one call (`mayfly apply`): each one is its
   * whole declaration (a policy field left out goes back to its default; a secret left out stays).
   * All are validated before any is written, and applying the same list again changes nothing.
   * Projects not in the list are left alone.
   * @returns what was done with each, in order.
   * @throws InvalidRequestError naming the project and field at fault (nothing is written).
   */
  async apply(projects: CreateProjectRequest[]): Promise<AppliedProject[]> {
    const { items } = await this.#http.json('PUT', ApiPaths.projects, AppliedList, {
      body: { items: projects },
    });
    return items;
  }

  /**
   * Deletes a project; its environments are destroyed (in the background) and its previews forgotten.
   * @throws NotFoundError when there is no such project.
   */
  async delete(name: string): Promise<void> {
    await this.#http.json('DELETE', ApiPaths.project(name), Deleted);
  }

  /**
   * Makes a new preview token for the project's preview URLs and returns it (`mfyp_…`): the server
   * keeps only a hash, so this is the one time it can be read, and the previous token (and every
   * link holding it) stops working. With the policy's `access: 'token'`, a preview opens for
   * `<url>?mayfly-token=<token>` (which sets a cookie) or the header `X-Mayfly-Bypass: <token>`.
   * A preview token is not an API token. Needs an `admin` token.
   * @throws NotFoundError when there is no such project; ForbiddenError without an `admin` token.
   */
  async rotatePreviewToken(name: string): Promise<string> {
    const { token } = await this.#http.json('POST', `${ApiPaths.project(name)}/preview-token`, PreviewToken);
    return token;
  }

  /** The project's pull requests and branch, each with its environment and state. */
  async previews(name: string): Promise<Preview[]> {
    const { items } = await this.#http.json('GET', ApiPaths.previews(name), PreviewList);
    return items;
  }

  /**
   * Approves a pull request from a fork at its current head: it is built (a later push needs a new
   * approval). Needs a `write` token. @returns the preview as it is now.
   * @throws NotFoundError when the project has no such pull request.
   */
  /** `sha`: the head commit looked at; refused (409) when the pull request has moved on since. */
  approve(project: string, number: number, sha?: string): Promise<Preview> {
    const query = sha ? `?sha=${encodeURIComponent(sha)}` : '';
    return this.#http.json('POST', `${ApiPaths.approve(project, number)}${query}`, Preview);
  }
}
