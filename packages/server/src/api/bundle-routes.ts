/** `/v1/bundles`: a template's folder, uploaded as a tar (gzip'd or not) before the environment is created. */
import type { Server } from 'node:http';
import type { Readable } from 'node:stream';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError } from '../controller/errors.js';
import type { ApiDeps } from './app.js';

/** Media types a bundle may be sent as; the body is handed to the route as a stream, never buffered. */
export const BUNDLE_MEDIA_TYPES = ['application/x-tar', 'application/gzip', 'application/octet-stream'];

export function registerBundleRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  app.addContentTypeParser(BUNDLE_MEDIA_TYPES, (_req, payload, done) => done(null, payload));
  app.post(ApiPaths.bundles, { config: { scope: 'write' } }, async (req, reply) => {
    const body = req.body as Readable | undefined;
    if (!body || typeof (body as Readable).pipe !== 'function') {
      throw new InvalidRequestError(`send the bundle as ${BUNDLE_MEDIA_TYPES.join(' or ')}`);
    }
    return reply.status(201).send(await deps.bundles.upload(body));
  });
}
