/**
 * Signed GitHub webhook deliveries for tests, built from GitHub's own example payloads
 * (`@octokit/webhooks-examples`) with the fields a test cares about replaced.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as {
  name: string;
  examples: Record<string, unknown>[];
}[];

/** A payload being edited: GitHub's example shapes, too many to type here. */
// biome-ignore lint/suspicious/noExplicitAny: example payloads are edited field by field
type Editable = Record<string, any>;

function example(event: string, action?: string): Record<string, unknown> {
  const found = examples
    .find((e) => e.name === event)
    ?.examples.find((p) => action === undefined || p.action === action);
  if (!found) throw new Error(`no ${event} ${action ?? ''} example`);
  return structuredClone(found);
}

export interface PullRequestFacts {
  repo: string;
  number: number;
  action: 'opened' | 'synchronize' | 'closed' | 'reopened' | 'labeled' | 'ready_for_review';
  headSha: string;
  baseSha: string;
  headRef?: string;
  baseRef?: string;
  /** The head's repository when it is a fork. */
  forkRepo?: string;
  labels?: string[];
  draft?: boolean;
}

/** A `pull_request` payload with these facts. */
export function pullRequestPayload(facts: PullRequestFacts): Record<string, unknown> {
  const payload = example('pull_request', 'opened') as Editable;
  const [owner, name] = facts.repo.split('/') as [string, string];
  payload.action = facts.action;
  payload.number = facts.number;
  payload.repository.full_name = facts.repo;
  payload.repository.name = name;
  payload.repository.owner.login = owner;
  const pr = payload.pull_request;
  pr.number = facts.number;
  pr.draft = facts.draft ?? false;
  pr.state = facts.action === 'closed' ? 'closed' : 'open';
  pr.merged = false;
  pr.labels = (facts.labels ?? []).map((label, i) => ({ ...(pr.labels?.[0] ?? {}), id: i + 1, name: label }));
  pr.head.sha = facts.headSha;
  pr.head.ref = facts.headRef ?? 'feature';
  pr.head.repo = structuredClone(payload.repository);
  pr.head.repo.full_name = facts.forkRepo ?? facts.repo;
  pr.base.sha = facts.baseSha;
  pr.base.ref = facts.baseRef ?? 'main';
  pr.base.repo = structuredClone(payload.repository);
  return payload;
}

/** A `push` payload of `branch` moving from `before` to `after`. */
export function pushPayload(
  repo: string,
  branch: string,
  before: string,
  after: string,
): Record<string, unknown> {
  const payload = example('push') as Editable;
  payload.ref = `refs/heads/${branch}`;
  payload.before = before;
  payload.after = after;
  payload.created = false;
  payload.deleted = false;
  payload.forced = false;
  payload.repository.full_name = repo;
  payload.commits = [];
  payload.head_commit = null;
  return payload;
}

export interface Delivery {
  headers: Record<string, string>;
  body: string;
}

/** Headers and body as GitHub sends them, signed with `secret` (a wrong one makes a forged delivery). */
export function signedDelivery(
  event: string,
  payload: unknown,
  secret: string,
  deliveryId: string = randomUUID(),
): Delivery {
  const body = JSON.stringify(payload);
  return {
    body,
    headers: {
      'content-type': 'application/json',
      'x-github-event': event,
      'x-github-delivery': deliveryId,
      'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`,
      'user-agent': 'GitHub-Hookshot/test',
    },
  };
}

/** POSTs a delivery to a Mayfly server's `/webhooks/github`. */
export async function deliver(
  serverUrl: string,
  delivery: Delivery,
): Promise<{ status: number; body: string }> {
  const res = await fetch(`${serverUrl}/webhooks/github`, {
    method: 'POST',
    headers: delivery.headers,
    body: delivery.body,
  });
  return { status: res.status, body: await res.text() };
}
