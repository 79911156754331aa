/**
 * Webhook intake: find the project the payload names, check that the forge signed it with the
 * project's secret, drop redeliveries, and record what it says about a pull request or a branch.
 * Nothing slow happens here (no git, no Docker): the forge gets its answer at once and the
 * preview controller does the work.
 */
import type { Forge } from '@mayfly/contract';
import type { PreviewService } from '../controller/preview-service.js';
import type { ProjectRecord, Store } from '../store/store.js';
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
    if (event.kind === 'ping') return { status: 200, message: 'pong' };
    if (event.kind === 'ignored')
      return { status: 202, message: `ignored: Mayfly does not act on ${event.event} events` };

    const messages: string[] = [];
    for (const project of signed) {
      // Recorded first: a redelivery (or a second replica given the same one) does nothing.
      const fresh = await this.deps.store.projects.recordDelivery({
        id: `${forge}:${project.name}:${deliveryId}`,
        project: project.name,
        event: eventName.slice(0, 100),
      });
      if (!fresh) {
        messages.push(`${project.name}: delivery ${deliveryId} was already received`);
        continue;
      }
      messages.push(`${project.name}: ${await this.deps.previews.record(project, event)}`);
    }
    return { status: 202, message: messages.join('; ') };
  }
}
