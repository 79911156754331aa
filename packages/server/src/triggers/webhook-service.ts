/**
 * Webhook intake: find the project the payload names, check that the forge signed it with the
 * project's secret, drop redeliveries, and record what it says about a pull request or a branch.
 * Nothing slow happens here (no git, no Docker): the forge gets its answer at once and the
 * preview controller does the work.
 */
import { randomUUID } from 'node:crypto';
import type { Delivery, Forge } from '@mayfly/contract';
import { type Access, canSee } from '../access/access.js';
import { ConflictError, NotFoundError } from '../controller/errors.js';
import type { PreviewService } from '../controller/preview-service.js';
import type { DeliveryRecord, ProjectRecord, Store } from '../store/store.js';
import { type ForgeEvent, WebhookPayloadError } from './forge-event.js';
import {
  repositoryOf as githubRepositoryOf,
  parseGitHubEvent,
  verifyGitHubSignature,
} from './github/webhook.js';
import { repositoryOf as gitlabRepositoryOf, parseGitLabEvent, verifyGitLabToken } from './gitlab/webhook.js';

/** The answer to a webhook: its HTTP status and a short message for the forge's delivery log. */
export interface WebhookAnswer {
  status: 200 | 202 | 400 | 401 | 404;
  message: string;
}

export interface WebhookServiceDeps {
  store: Store;
  previews: PreviewService;
}

type Headers = Record<string, string | string[] | undefined>;

const header = (headers: Headers, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? undefined : value; // a header sent twice is not trusted
};

export class WebhookService {
  constructor(private readonly deps: WebhookServiceDeps) {}

  async receive(forge: Forge, headers: Headers, body: Buffer): Promise<WebhookAnswer> {
    let payload: unknown;
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch {
      return {
        status: 400,
        message: 'the body is not JSON: set the webhook content type to application/json',
      };
    }
    const repo = forge === 'github' ? githubRepositoryOf(payload) : gitlabRepositoryOf(payload);
    if (!repo) return { status: 400, message: 'the payload names no repository' };
    const candidates = await this.deps.store.projects.findByForgeRepo(forge, repo);
    if (candidates.length === 0)
      return { status: 404, message: `no project for ${forge} repository ${repo}` };

    // Only a project whose secret signed this body may act on it; never one without a secret.
    const signed: ProjectRecord[] = [];
    for (const project of candidates) {
      if (!project.webhookSecret) continue;
      const ok =
        forge === 'github'
          ? await verifyGitHubSignature(project.webhookSecret, body, header(headers, 'x-hub-signature-256'))
          : verifyGitLabToken(project.webhookSecret, header(headers, 'x-gitlab-token'));
      if (ok) signed.push(project);
    }
    if (signed.length === 0) {
      return {
        status: 401,
        message:
          forge === 'github'
            ? 'X-Hub-Signature-256 is missing or does not match the project’s webhook secret'
            : 'X-Gitlab-Token is missing or does not match the project’s webhook secret',
      };
    }

    const eventName =
      forge === 'github' ? header(headers, 'x-github-event') : header(headers, 'x-gitlab-event');
    if (!eventName)
      return {
        status: 400,
        message: `the ${forge === 'github' ? 'X-GitHub-Event' : 'X-Gitlab-Event'} header is missing`,
      };
    const deliveryId =
      forge === 'github'
        ? header(headers, 'x-github-delivery')
        : (header(headers, 'x-gitlab-event-uuid') ?? header(headers, 'x-gitlab-webhook-uuid'));
    if (!deliveryId || deliveryId.length > 200) {
      return {
        status: 400,
        message: 'the delivery id header is missing (X-GitHub-Delivery / X-Gitlab-Event-UUID)',
      };
    }

    let event: ForgeEvent;
    try {
      event =
        forge === 'github' ? parseGitHubEvent(eventName, payload) : parseGitLabEvent(eventName, payload);
    } catch (err) {
      if (err instanceof WebhookPayloadError) return { status: 400, message: err.message };
      throw err;
    }
    if (event.kind === 'ignored')
      return { status: 202, message: `ignored: Mayfly does not act on ${event.event} events` };

    const messages: string[] = [];
    for (const project of signed) {
      // Recorded first: a redelivery (or a second replica given the same one) does nothing.
      const id = `${forge}:${project.name}:${deliveryId}`;
      const fresh = await this.deps.store.projects.recordDelivery({
        id,
        project: project.name,
        event: eventName.slice(0, 100),
        deliveryId,
        summary: describeEvent(event),
        // (A ping is listed, to show the webhook works, but there is nothing to act on again.)
        eventJson: event.kind === 'ping' ? null : keptEvent(event),
      });
      if (!fresh) {
        messages.push(`${project.name}: delivery ${deliveryId} was already received`);
        continue;
      }
      messages.push(`${project.name}: ${await this.act(id, project, event)}`);
    }
    if (event.kind === 'ping') return { status: 200, message: 'pong' };
    return { status: 202, message: messages.join('; ') };
  }

  /** A project's deliveries, newest first (at most `limit`). */
  async deliveries(projectName: string, access: Access, limit: number): Promise<Delivery[]> {
    const project = await this.visibleProject(projectName, access);
    const rows = await this.deps.store.projects.listDeliveries(project.name, limit);
    return rows.map(toDelivery);
  }

  /**
   * Acts again on what a delivery said, as a new delivery (`redeliver-…`): for a pull request or
   * branch still at the commit it named (a preview is never taken back to an older commit).
   */
  async redeliver(projectName: string, deliveryId: string, access: Access): Promise<Delivery> {
    const project = await this.visibleProject(projectName, access);
    const original = await this.deps.store.projects.getDelivery(
      `${project.forge}:${project.name}:${deliveryId}`,
    );
    if (!original) throw new NotFoundError(`project "${project.name}" has no delivery ${deliveryId}`);
    const event = original.eventJson === null ? null : (JSON.parse(original.eventJson) as ForgeEvent);
    if (event === null)
      throw new ConflictError(
        `delivery ${deliveryId} cannot be redelivered: what it said was not kept (redeliver it from the forge)`,
      );
    if (
      'repo' in event &&
      event.repo !== null &&
      event.repo.toLowerCase() !== project.forgeRepo.toLowerCase()
    )
      throw new ConflictError(
        `delivery ${deliveryId} is of ${event.repo}; the project now follows ${project.forgeRepo}`,
      );
    await this.refuseStale(project, event, deliveryId);
    const id = `${project.forge}:${project.name}:redeliver-${randomUUID()}`;
    await this.deps.store.projects.recordDelivery({
      id,
      project: project.name,
      event: original.event,
      deliveryId: id.slice(id.lastIndexOf(':') + 1),
      summary: original.summary,
      eventJson: original.eventJson,
      redeliveryOf: original.id,
    });
    await this.act(id, project, event);
    const made = await this.deps.store.projects.getDelivery(id);
    if (!made) throw new NotFoundError(`delivery ${id} is gone`);
    return toDelivery(made);
  }

  /** Does what an event says for one project; the outcome is kept with the delivery. */
  private async act(deliveryId: string, project: ProjectRecord, event: ForgeEvent): Promise<string> {
    let outcome: string;
    try {
      outcome =
        event.kind === 'ping'
          ? 'pong'
          : event.kind === 'ignored'
            ? `ignored: Mayfly does not act on ${event.event} events`
            : await this.deps.previews.record(project, event);
    } catch (err) {
      await this.deps.store.projects
        .setDeliveryOutcome(deliveryId, `failed: ${(err as Error).message}`.slice(0, 1000))
        .catch(() => {});
      throw err;
    }
    await this.deps.store.projects.setDeliveryOutcome(deliveryId, outcome);
    return outcome;
  }

  /**
   * Refuses a redelivery that would take a pull request or branch back: to another commit, or
   * open again once closed (closed again once reopened, deleted again once pushed).
   */
  private async refuseStale(project: ProjectRecord, event: ForgeEvent, deliveryId: string) {
    let previewId: string;
    let head: string;
    let open: boolean;
    if (event.kind === 'change_request') {
      previewId = `${project.name}/pr/${event.number}`;
      head = event.headSha;
      open = event.action !== 'closed';
    } else if (event.kind === 'push' && event.branch !== null) {
      previewId = `${project.name}/branch/${event.branch}`;
      head = event.after;
      open = !event.deleted;
    } else return;
    const preview = await this.deps.store.previews.get(previewId);
    if (!preview) return;
    const what = preview.number !== null ? `pull request #${preview.number}` : `branch ${preview.branch}`;
    const refuse = (why: string) =>
      new ConflictError(`delivery ${deliveryId} is out of date: ${what} ${why}; redeliver a newer delivery`);
    if (open && !preview.open) throw refuse('has been closed since');
    if (!open && preview.open) throw refuse('is open again since');
    if (open && preview.headSha !== head)
      throw refuse(
        `has moved on to ${preview.headSha.slice(0, 12)} (the delivery is of ${head.slice(0, 12)})`,
      );
  }

  private async visibleProject(name: string, access: Access): Promise<ProjectRecord> {
    const project = canSee(access, name) ? await this.deps.store.projects.get(name) : null;
    if (!project) throw new NotFoundError(`no project "${name}"`);
    return project;
  }
}

/** Largest event kept with its delivery, to redeliver it; larger ones (a push of very many paths) are not kept. */
export const KEPT_EVENT_MAX_CHARS = 64 * 1024;

/** The event as JSON to keep with its delivery, or null when it is too large to keep. */
function keptEvent(event: ForgeEvent): string | null {
  let json = JSON.stringify(event);
  if (json.length > KEPT_EVENT_MAX_CHARS && event.kind === 'push') {
    // Without the list of paths a push means "everything changed": the safe reading.
    json = JSON.stringify({ ...event, changedPaths: null });
  }
  return json.length > KEPT_EVENT_MAX_CHARS ? null : json;
}

/** What an event said, in words, for the list of deliveries. */
export function describeEvent(event: ForgeEvent): string {
  switch (event.kind) {
    case 'change_request':
      return `pull request #${event.number} ${event.rawAction || event.action} at ${event.headSha.slice(0, 12)}`;
    case 'push':
      return event.branch === null
        ? 'push to a tag'
        : event.deleted
          ? `branch ${event.branch} deleted`
          : `push to ${event.branch} at ${event.after.slice(0, 12)}`;
    case 'ping':
      return 'ping';
    default:
      return `${event.event} (not acted on)`;
  }
}

function toDelivery(d: DeliveryRecord): Delivery {
  const tail = (id: string) => id.split(':').slice(2).join(':');
  return {
    id: d.deliveryId,
    event: d.event,
    summary: d.summary,
    outcome: d.outcome,
    receivedAt: d.receivedAt.toISOString(),
    redeliveryOf: d.redeliveryOf === null ? null : tail(d.redeliveryOf),
    redeliverable: d.eventJson !== null,
  };
}
