/** `/v1/bundles`: a template's folder, uploaded as a tar (gzip'd or not) before the environment is created. */
import type { Server } from 'node:http';
import type { Readable } from 'node:stream';
import { ApiPaths } from '@mayfly/contract';
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError } from '../controller/errors.js';
import type { ApiDeps } from './app.js';
import { addRoute } from './route.js';

/** Media types a bundle may be sent as; the body is handed to the route as a stream, never buffered. */
export const BUNDLE_MEDIA_TYPES = ['application/x-tar', 'application/gzip', 'application/octet-stream'];

export function registerBundleRoutes(app: FastifyInstance<Server>, deps: ApiDeps): void {
  // Fastify's parsers are per instance: only routes that declare a raw body (the bundle upload,
  // sandbox files and stdin) take one, as a stream; any other route sent one refuses it before a
  // byte of it is read (its JSON body limit would not apply to a stream).
  app.addContentTypeParser(BUNDLE_MEDIA_TYPES, (req, payload, done) => {
    const declared = req.routeOptions.config.doc?.body;
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (!declared || !('mediaTypes' in declared) || !declared.mediaTypes.includes(type)) {
      done(
        new InvalidRequestError('this route takes a JSON body (content-type: application/json)'),
        undefined,
      );
      return;
    }
    done(null, payload);
  });
  addRoute(app, {
    method: 'POST',
    url: ApiPaths.bundles,
    scope: 'write',
    summary: "upload a template's folder (scope write); create an environment from it with template.bundle",
    body: { mediaTypes: BUNDLE_MEDIA_TYPES, description: "the folder as a tar, gzip'd or not" },
    response: { status: 201, description: 'unpacked and staged', json: 'Bundle' },
    errors: {
      400: 'not a tar, or an entry that is refused (a link out of the folder, a device), or over the limits',
      429: 'the most bundles this server keeps waiting to be used are staged',
    },
    handler: async ({ req }) => {
      const body = req.body as Readable | undefined;
      if (!body || typeof (body as Readable).pipe !== 'function') {
        throw new InvalidRequestError(`send the bundle as ${BUNDLE_MEDIA_TYPES.join(' or ')}`);
      }
      return deps.bundles.upload(body);
    },
  });
}
