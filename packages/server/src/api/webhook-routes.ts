/**
 * `/webhooks/github` and `/webhooks/gitlab`: public routes, authenticated by the forge's signature
 * (or token) over the raw body. The body is kept as bytes (the signature is of those exact bytes)
 * and bounded; the answer comes at once, the work runs in the preview controller.
 */
import type { Server } from 'node:http';
import { ApiPaths, type Forge } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import * as z from 'zod';
import { InvalidRequestError, NotFoundError } from '../controller/errors.js';
import type { ApiDeps } from './app.js';
import { UnauthorizedError } from './errors.js';
import { addRoute } from './route.js';

/** Largest webhook body read. GitHub sends at most 25 MB, but pull request and push payloads are far smaller. */
export const WEBHOOK_BODY_LIMIT = 5 * 1024 * 1024;

const Accepted = z.object({ message: z.string() });

export function registerWebhookRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  // In a scope of their own: only here is a JSON body kept as raw bytes.
  void app.register(async (scope) => {
    const typed = scope as unknown as FastifyInstance<Server>;
    typed.removeAllContentTypeParsers();
    typed.addContentTypeParser(
      '*',
      { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT },
      (_req, body, done) => done(null, body),
    );
    for (const [forge, url] of [
      ['github', ApiPaths.githubWebhook],
      ['gitlab', ApiPaths.gitlabWebhook],
    ] as [Forge, string][]) {
      addRoute(typed, {
        method: 'POST',
        url,
        scope: 'public',
        summary: `${forge === 'github' ? 'GitHub' : 'GitLab'} webhook (pull/merge requests and pushes); authenticated by ${forge === 'github' ? 'X-Hub-Signature-256' : 'X-Gitlab-Token'}`,
        body: { mediaTypes: ['application/json'], description: "the forge's event payload, as it sent it" },
        bodyLimit: WEBHOOK_BODY_LIMIT,
        response: {
          status: 202,
          description: 'accepted (or ignored, or a redelivery): what will happen',
          json: Accepted,
        },
        errors: {
          400: 'not JSON, no repository, no delivery id, or a payload not shaped like its event',
          401: 'the signature (token) is missing or wrong; nothing was done',
          404: 'no project has this repository',
        },
        handler: async ({ req }) => {
          const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
          const answer = await deps.webhooks.receive(forge, req.headers, body);
          if (answer.status === 400) throw new InvalidRequestError(answer.message);
          if (answer.status === 401) throw new UnauthorizedError(answer.message);
          if (answer.status === 404) throw new NotFoundError(answer.message);
          return { message: answer.message };
        },
      });
    }
  });
}
